// Package objectstoretest gives tests real object stores: a MinIO (S3,
// scripts/minio-up.sh) and a single-node OpenStack Swift
// (scripts/swift-up.sh), each in a temporary directory on free ports of
// 127.0.0.1, stopped and removed when the tests are done.
//
// MinIO and Swift return the test process's shared server of that kind,
// started on first use (Swift takes ~5-20 s and ~650 MB, MinIO ~1 s);
// tests isolate themselves by using containers of their own (NewContainer).
// StartMinIO and StartSwift start a server that one test owns and may stop
// and restart (fault tests: the store going away mid-backup);
// StartSwiftKeystone one with a second proxy that takes Keystone tokens.
// Server.Config configures objectstore.Open, Server.EnvList a Coffer
// process (COFFER_BACKUP_STORE and the COFFER_S3_* or COFFER_SWIFT_*
// variables).
//
// Every server has a watchdog process that stops it and removes its files
// once the test process is gone, however it ends; Main (for TestMain) or
// Shutdown stop them earlier. Without the MinIO binary
// (/opt/coffer-test/minio/bin/minio: `scripts/minio-up.sh --install-only`
// builds it) or the Swift packages (`scripts/swift-up.sh --install-only`),
// tests are skipped loudly, or fail when the environment variable CI is
// set. The helpers never install or build anything themselves.
package objectstoretest

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
)

// Kinds of servers.
const (
	KindMinIO = "minio"
	KindSwift = "swift"
)

// MinIOBinary is where minio-up.sh looks for (and builds) MinIO.
const MinIOBinary = "/opt/coffer-test/minio/bin/minio"

// Server is a running MinIO or Swift.
type Server struct {
	Kind string // KindMinIO or KindSwift
	Dir  string // its data directory
	// Env is what the up script exported: COFFER_BACKUP_STORE and the
	// COFFER_S3_* or COFFER_SWIFT_* variables (plus ST_* for Swift), to
	// configure a Coffer process; Config is the same as an
	// objectstore.Config (container: DefaultContainer).
	Env    map[string]string
	Config objectstore.Config

	private  bool
	env      []string // extra environment of the up script
	mu       sync.Mutex
	watchdog *os.File // closing it (or exiting) makes the watchdog stop the server
	stopped  bool
}

// DefaultContainer is the container of Server.Config: a name valid as an
// S3 bucket and as a Swift container.
const DefaultContainer = "coffer-test"

var (
	mu        sync.Mutex // guards shared (held while a shared server starts)
	shared    = map[string]*Server{}
	sharedErr = map[string]error{}
	closed    bool

	allMu sync.Mutex
	all   []*Server // every server this process started, for Shutdown
)

// MinIO returns this test process's shared MinIO, starting it on first use.
func MinIO(t testing.TB) *Server { t.Helper(); return sharedServer(t, KindMinIO) }

// Swift returns this test process's shared Swift, starting it on first use.
func Swift(t testing.TB) *Server { t.Helper(); return sharedServer(t, KindSwift) }

// StartMinIO starts a MinIO the calling test owns (it may Stop and
// Restart it), removed in t.Cleanup.
func StartMinIO(t testing.TB) *Server { t.Helper(); return privateServer(t, KindMinIO) }

// StartSwift starts a Swift the calling test owns (it may Stop and Restart
// it), removed in t.Cleanup.
func StartSwift(t testing.TB) *Server { t.Helper(); return privateServer(t, KindSwift) }

// KeystoneAuth is the service user a Swift proxy validates Keystone tokens
// with (it needs a role that may validate tokens, e.g. service or admin).
type KeystoneAuth struct {
	URL      string // http://host:port/v3
	User     string
	Password string
	Project  string
	Domain   string // of the user and the project; default Default
}

// StartSwiftKeystone starts a Swift the calling test owns with a second
// proxy that authenticates with Keystone (authtoken + keystoneauth: the
// roles admin and member own the account AUTH_<project id>). Its storage
// URL for a project is Env["SWIFT_KEYSTONE_STORAGE_URL"] + project id: put
// it in the catalog (object-store) for the Keystone clients to find. The
// tempauth proxy (Config) serves the same cluster.
func StartSwiftKeystone(t testing.TB, k KeystoneAuth) *Server {
	t.Helper()
	if err := Available(KindSwift); err == nil {
		if _, err := os.Stat("/usr/lib/python3/dist-packages/keystonemiddleware"); err != nil {
			fail(t, fmt.Errorf("%w: python3-keystonemiddleware is not installed", ErrUnavailable))
		}
	}
	domain := k.Domain
	if domain == "" {
		domain = "Default"
	}
	return privateServer(t, KindSwift, "SWIFT_KEYSTONE_URL="+k.URL, "SWIFT_KEYSTONE_USER="+k.User,
		"SWIFT_KEYSTONE_PASSWORD="+k.Password, "SWIFT_KEYSTONE_PROJECT="+k.Project, "SWIFT_KEYSTONE_DOMAIN="+domain)
}

func sharedServer(t testing.TB, kind string) *Server {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if closed {
		t.Fatal("objectstoretest: used after Shutdown")
	}
	if shared[kind] == nil && sharedErr[kind] == nil {
		shared[kind], sharedErr[kind] = start(kind)
	}
	if err := sharedErr[kind]; err != nil {
		fail(t, err)
	}
	return shared[kind]
}

func privateServer(t testing.TB, kind string, env ...string) *Server {
	t.Helper()
	s, err := start(kind, env...)
	if err != nil {
		fail(t, err)
	}
	s.private = true
	t.Cleanup(s.shutdown)
	return s
}

// Main is for TestMain: it runs m, stops every server this process
// started, and exits with m's code.
func Main(m *testing.M) {
	code := m.Run()
	Shutdown()
	os.Exit(code)
}

// Shutdown stops every server this process started (for a TestMain that
// composes several helpers; the watchdogs would do it at exit anyway).
func Shutdown() {
	mu.Lock()
	closed = true
	mu.Unlock()
	allMu.Lock()
	servers := all
	all = nil
	allMu.Unlock()
	for _, s := range servers {
		s.shutdown()
	}
}

// ErrUnavailable marks "this machine cannot run the server": the MinIO
// binary or the Swift packages are missing.
var ErrUnavailable = errors.New("object store server unavailable")

// Available reports whether servers of kind can run here (nil) or why not
// (wrapping ErrUnavailable).
func Available(kind string) error {
	switch kind {
	case KindMinIO:
		if _, err := os.Stat(MinIOBinary); err != nil {
			return fmt.Errorf("%w: %s is missing; build it with `bash scripts/minio-up.sh --install-only` (go install, 4-5 min)", ErrUnavailable, MinIOBinary)
		}
	case KindSwift:
		for _, prog := range []string{"swift-proxy-server", "swift-object-server", "swift-container-server", "swift-account-server", "memcached", "curl"} {
			if _, err := exec.LookPath(prog); err != nil {
				return fmt.Errorf("%w: %s is not installed; install the Swift packages with `bash scripts/swift-up.sh --install-only` (apt-get, needs root)", ErrUnavailable, prog)
			}
		}
	default:
		return fmt.Errorf("unknown object store server kind %q", kind)
	}
	return nil
}

// Skip skips (or, with CI set, fails) t when servers of kind cannot run
// here.
func Skip(t testing.TB, kind string) {
	t.Helper()
	if err := Available(kind); err != nil {
		fail(t, err)
	}
}

// fail reports a server that could not be started: a failure in CI, a
// loud skip (with the reason) elsewhere when it is not installed, a
// failure otherwise.
func fail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" || !errors.Is(err, ErrUnavailable) {
		t.Fatalf("objectstoretest: %v", err)
	}
	t.Skipf("SKIPPING: objectstoretest: %v", err)
}

// scriptsDir is the repository's scripts/ directory.
func scriptsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts")
}

func scripts(kind string) (up, down string) {
	name := map[string]string{KindMinIO: "minio", KindSwift: "swift"}[kind]
	return filepath.Join(scriptsDir(), name+"-up.sh"), filepath.Join(scriptsDir(), name+"-down.sh")
}

// start starts a server of kind in a new temporary directory; env is
// passed to the up script.
func start(kind string, env ...string) (*Server, error) {
	if err := Available(kind); err != nil {
		return nil, err
	}
	up, _ := scripts(kind)
	var lastErr error
	// The up scripts pick free ports, which another process may take
	// before the server binds them: try again in a fresh directory.
	for attempt := 0; attempt < 3; attempt++ {
		dir, err := os.MkdirTemp("", "coffer-"+kind+"-")
		if err != nil {
			return nil, fmt.Errorf("create %s directory: %w", kind, err)
		}
		s := &Server{Kind: kind, Dir: dir, env: env}
		// The watchdog first: from here on a dying process leaves nothing
		// behind.
		if s.watchdog, err = startWatchdog(kind, dir); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		out, err := runScript(up, env, dir)
		if err == nil {
			err = s.load(out)
		}
		if err == nil {
			allMu.Lock()
			all = append(all, s)
			allMu.Unlock()
			return s, nil
		}
		s.shutdown()
		lastErr = err
	}
	return nil, lastErr
}

// load parses the up script's `export K=V ...` lines.
func (s *Server) load(out string) error {
	s.Env = map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "export ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				s.Env[k] = v
			}
		}
	}
	c := objectstore.Config{Container: DefaultContainer}
	switch s.Kind {
	case KindMinIO:
		c.Kind = "s3"
		c.S3 = objectstore.S3Config{
			Endpoint:  strings.TrimPrefix(s.Env["COFFER_S3_ENDPOINT"], "http://"),
			AccessKey: s.Env["COFFER_S3_ACCESS_KEY"],
			SecretKey: objectstore.Secret(s.Env["COFFER_S3_SECRET_KEY"]),
			Region:    s.Env["COFFER_S3_REGION"],
		}
	case KindSwift:
		c.Kind = "swift"
		c.Swift = objectstore.SwiftConfig{
			Auth:    "tempauth",
			AuthURL: s.Env["COFFER_SWIFT_AUTH_URL"],
			User:    s.Env["COFFER_SWIFT_USER"],
			Key:     objectstore.Secret(s.Env["COFFER_SWIFT_KEY"]),
		}
	}
	c.Name = c.Kind
	if err := c.Validate(); err != nil {
		return fmt.Errorf("%s-up.sh printed an incomplete configuration: %w", s.Kind, err)
	}
	s.Config = c
	return nil
}

// NewContainer returns s.Config with a container of its own (prefix-<random>;
// not created: objectstore.Open creates it).
func (s *Server) NewContainer(prefix string) objectstore.Config {
	b := make([]byte, 4)
	rand.Read(b)
	c := s.Config
	c.Container = prefix + "-" + hex.EncodeToString(b)
	return c
}

// EnvList is Env as KEY=VALUE strings (for exec.Cmd.Env), with
// COFFER_BACKUP_CONTAINER set to container when it is not empty.
func (s *Server) EnvList(container string) []string {
	var env []string
	for k, v := range s.Env {
		env = append(env, k+"="+v)
	}
	if container != "" {
		env = append(env, "COFFER_BACKUP_CONTAINER="+container)
	}
	return env
}

// Stop stops the server; its data stays and Restart brings it back on the
// same ports. Only for servers from StartMinIO/StartSwift.
func (s *Server) Stop(t testing.TB) {
	t.Helper()
	s.mustBePrivate(t)
	_, down := scripts(s.Kind)
	if _, err := runScript(down, nil, s.Dir); err != nil {
		t.Fatal(err)
	}
}

// Restart starts a stopped server again.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.mustBePrivate(t)
	up, _ := scripts(s.Kind)
	if _, err := runScript(up, s.env, s.Dir); err != nil {
		t.Fatal(err)
	}
}

func (s *Server) mustBePrivate(t testing.TB) {
	t.Helper()
	if !s.private {
		t.Fatal("objectstoretest: a shared server must not be stopped; use StartMinIO/StartSwift")
	}
}

// shutdown stops the server and removes its files.
func (s *Server) shutdown() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return
	}
	s.stopped = true
	_, down := scripts(s.Kind)
	if _, err := runScript(down, nil, s.Dir, "--purge"); err != nil {
		fmt.Fprintf(os.Stderr, "objectstoretest: %v\n", err)
	}
	if s.watchdog != nil {
		s.watchdog.Close() // nothing left for it to do: it exits
	}
}

// runScript runs a script with args, env added to the environment and the
// installers switched off; stdout is returned, stderr (the script's
// progress) goes into the error.
func runScript(script string, env []string, args ...string) (string, error) {
	cmd := exec.Command("/bin/bash", append([]string{script}, args...)...)
	cmd.Env = append(append(os.Environ(), "MINIO_SKIP_INSTALL=1", "SWIFT_SKIP_INSTALL=1"), env...)
	// An up script outliving a killed test process would go on starting
	// servers while the watchdog stops them; the down scripts wait for it
	// to be gone (its lock), then stop everything it recorded.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s", filepath.Base(script), strings.Join(args, " "), err, tail(stderr.String(), 4000))
	}
	return string(out), nil
}

// watchdogScript waits for EOF on stdin, which comes when the test process
// closes the pipe or exits however it exits, then runs the down script $1
// on directory $2 and removes the directory.
const watchdogScript = `
read -r _
/bin/bash "$1" "$2" --purge >/dev/null 2>&1
rm -rf "$2"
`

// startWatchdog starts a shell in its own session (a Ctrl-C to go test does
// not kill it before it has cleaned up) that cleans up dir once this
// process is gone. Nothing else holds the pipe's write end (close-on-exec),
// so the shell sees EOF exactly when we close it or exit.
func startWatchdog(kind, dir string) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start %s watchdog: %w", kind, err)
	}
	defer r.Close()
	_, down := scripts(kind)
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "objectstoretest-watchdog", down, dir)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start %s watchdog: %w", kind, err)
	}
	go cmd.Wait() // reap it if it finishes while we still run
	return w, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
