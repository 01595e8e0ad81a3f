// Package keystonetest gives tests a real Keystone (Debian's keystone 22,
// started by scripts/keystone-up.sh on a free port of 127.0.0.1) with
// projects demo and alt (a member user each), the admin user, and Coffer's
// service user — plus helpers to create projects, users and catalog entries
// and to get tokens through gophercloud.
//
// Bootstrapping a Keystone (db_sync on sqlite, fernet keys, bootstrap,
// provisioning) takes 30-70 s, so it is done once per machine and script
// version into a template directory under os.TempDir (serialised between
// test processes with a file lock); every instance is a copy of the
// template started on its own port, which takes a few seconds. Start
// returns the test process's shared instance; StartPrivate one that a test
// owns (and may stop: e.g. to see the API answer 503). The users, projects
// and fernet keys of all copies are the same, so ids are stable.
//
// Each instance has a watchdog process that stops it and removes its files
// once the test process is gone, however it ends; Main (for TestMain) or
// Shutdown stop them earlier. Without Keystone (not installed and not
// installable: no root, no apt), tests are skipped loudly, or fail when the
// environment variable CI is set.
package keystonetest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

// User is a Keystone user with a password and a project it has a role on.
type User struct {
	Name        string `json:"username"`
	Password    string `json:"password"`
	ProjectName string `json:"project_name"`
	ProjectID   string `json:"project_id"`
	UserID      string `json:"user_id"`
}

// Keystone is a running Keystone.
type Keystone struct {
	AuthURL string // http://127.0.0.1:PORT/v3
	Region  string // RegionOne
	DataDir string
	Port    int
	// Admin has role admin on project admin; Demo and Alt role member on
	// their own projects; Service (user coffer) role service on project
	// service: the credentials Coffer validates tokens with.
	Admin, Demo, Alt, Service User

	mu       sync.Mutex
	watchdog *os.File // closing it (or exiting) makes the watchdog stop this Keystone
	stopped  bool
}

// state is what keystone-up.sh writes to DATA_DIR/keystone.json.
type state struct {
	AuthURL string `json:"auth_url"`
	Region  string `json:"region"`
	Admin   User   `json:"admin"`
	Demo    User   `json:"demo"`
	Alt     User   `json:"alt"`
	Service User   `json:"service"`
}

var (
	mu        sync.Mutex // guards shared and sharedErr (held while the shared instance starts)
	shared    *Keystone
	sharedErr error

	instancesMu sync.Mutex
	instances   []*Keystone // every instance this process started, for Shutdown
)

// Start returns this test process's shared Keystone, starting it on first
// use. Tests must not stop it (use StartPrivate for that) and should
// create their own projects (NewProject) when they need isolation.
func Start(t testing.TB) *Keystone {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if shared == nil && sharedErr == nil {
		shared, sharedErr = start()
	}
	if sharedErr != nil {
		fail(t, sharedErr)
	}
	return shared
}

// StartPrivate starts a Keystone the calling test owns, stopped (and its
// files removed) in t.Cleanup.
func StartPrivate(t testing.TB) *Keystone {
	t.Helper()
	k, err := start()
	if err != nil {
		fail(t, err)
	}
	t.Cleanup(func() { k.shutdown() })
	return k
}

// Main is for TestMain: it runs m, stops every Keystone this process
// started, and exits with m's code.
func Main(m *testing.M) {
	code := m.Run()
	Shutdown()
	os.Exit(code)
}

// Shutdown stops every Keystone this process started (for a TestMain that
// composes several helpers; the watchdogs would do it at exit anyway).
func Shutdown() {
	mu.Lock()
	shared, sharedErr = nil, errors.New("keystonetest: used after Shutdown")
	mu.Unlock()
	instancesMu.Lock()
	all := instances
	instances = nil
	instancesMu.Unlock()
	for _, k := range all {
		k.shutdown()
	}
}

// errUnavailable marks setup failures that mean "no Keystone on this
// machine" (not installed, and not installable).
var errUnavailable = errors.New("keystone unavailable")

// fail reports a Keystone that could not be installed or started: a
// failure in CI, a loud skip (with the reason) elsewhere.
func fail(t testing.TB, err error) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf("keystonetest: Keystone is required in CI: %v", err)
	}
	hint := "see the error above"
	if errors.Is(err, errUnavailable) {
		hint = "install Debian's keystone package, or run the tests as root so scripts/keystone-up.sh can"
	}
	t.Skipf("SKIPPING: keystonetest: no Keystone: %v (%s)", err, hint)
}

// scriptsDir is the repository's scripts/ directory.
func scriptsDir() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "scripts")
}

// start copies the template (creating it if needed) and starts a Keystone
// on it.
func start() (*Keystone, error) {
	tmpl, err := template()
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "cfks")
	if err != nil {
		return nil, fmt.Errorf("create keystone directory: %w", err)
	}
	if out, err := exec.Command("cp", "-a", tmpl+"/.", dir).CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("copy keystone template: %v: %s", err, out)
	}
	k := &Keystone{DataDir: dir}
	// The watchdog first: from here on a dying process leaves nothing behind.
	if k.watchdog, err = startWatchdog(dir); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	// Another process may take the free port before the script binds it.
	for attempt := 0; ; attempt++ {
		if k.Port, err = freePort(); err == nil {
			_, err = runScript("keystone-up.sh", dir, fmt.Sprint(k.Port))
		}
		if err == nil || attempt == 2 || !strings.Contains(err.Error(), "already in use") {
			break
		}
	}
	if err == nil {
		err = k.load()
	}
	if err != nil {
		k.shutdown()
		return nil, err
	}
	instancesMu.Lock()
	instances = append(instances, k)
	instancesMu.Unlock()
	return k, nil
}

// load reads the users and URLs keystone-up.sh recorded.
func (k *Keystone) load() error {
	b, err := os.ReadFile(filepath.Join(k.DataDir, "keystone.json"))
	if err != nil {
		return fmt.Errorf("read keystone state: %w", err)
	}
	var s state
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("parse %s: %w", filepath.Join(k.DataDir, "keystone.json"), err)
	}
	k.AuthURL, k.Region = s.AuthURL, s.Region
	k.Admin, k.Demo, k.Alt, k.Service = s.Admin, s.Demo, s.Alt, s.Service
	return nil
}

// template returns a directory holding a bootstrapped, provisioned and
// stopped Keystone, creating it under a lock if this machine has none for
// the current keystone-up.sh and keystone package.
func template() (string, error) {
	script, err := os.ReadFile(filepath.Join(scriptsDir(), "keystone-up.sh"))
	if err != nil {
		return "", fmt.Errorf("read keystone-up.sh: %w", err)
	}
	version, _ := exec.Command("dpkg-query", "-W", "-f=${Version}", "keystone").Output()
	sum := sha256.Sum256(append(script, version...))
	dir := filepath.Join(os.TempDir(), "coffer-keystone-template-"+hex.EncodeToString(sum[:6]))

	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("keystone template lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("keystone template lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(filepath.Join(dir, ".template-complete")); err == nil {
		return dir, nil
	}
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("remove incomplete keystone template: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return "", err
	}
	_, upErr := runScript("keystone-up.sh", dir, fmt.Sprint(port))
	// Stopped either way; a failed template is removed and retried next time.
	_, downErr := runScript("keystone-down.sh", dir)
	if upErr != nil || downErr != nil {
		os.RemoveAll(dir)
		if _, err := exec.LookPath("keystone-manage"); err != nil {
			return "", fmt.Errorf("%w: keystone is not installed and scripts/keystone-up.sh could not install it: %v", errUnavailable, upErr)
		}
		return "", errors.Join(upErr, downErr)
	}
	// Fold the WAL into the database and drop what is specific to this run.
	checkpoint := exec.Command("/usr/bin/python3", "-c",
		`import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); c.execute("PRAGMA wal_checkpoint(TRUNCATE)"); c.close()`,
		filepath.Join(dir, "keystone.db"))
	if out, err := checkpoint.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("checkpoint keystone template database: %v: %s", err, out)
	}
	for _, name := range []string{"keystone.log", "server.log", "provision.log", "keystone.pid"} {
		os.Remove(filepath.Join(dir, name))
	}
	if err := os.WriteFile(filepath.Join(dir, ".template-complete"), nil, 0o600); err != nil {
		return "", err
	}
	return dir, nil
}

// runScript runs scripts/NAME with args; stdout is returned, stderr (the
// script's progress) goes into the error.
func runScript(name string, args ...string) (string, error) {
	cmd := exec.Command("/bin/bash", append([]string{filepath.Join(scriptsDir(), name)}, args...)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, tail(stderr.String(), 4000))
	}
	return string(out), nil
}

// Stop stops this Keystone (its data stays: Restart brings it back on the
// same port). Only for instances from StartPrivate.
func (k *Keystone) Stop(t testing.TB) {
	t.Helper()
	k.mustBePrivate(t)
	if _, err := runScript("keystone-down.sh", k.DataDir); err != nil {
		t.Fatal(err)
	}
}

// Restart starts a stopped Keystone again on the same port.
func (k *Keystone) Restart(t testing.TB) {
	t.Helper()
	k.mustBePrivate(t)
	if _, err := runScript("keystone-up.sh", k.DataDir, fmt.Sprint(k.Port)); err != nil {
		t.Fatal(err)
	}
}

func (k *Keystone) mustBePrivate(t testing.TB) {
	t.Helper()
	mu.Lock()
	defer mu.Unlock()
	if k == shared {
		t.Fatal("keystonetest: the shared Keystone must not be stopped; use StartPrivate")
	}
}

// shutdown stops the Keystone and removes its files.
func (k *Keystone) shutdown() {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.stopped {
		return
	}
	k.stopped = true
	if _, err := runScript("keystone-down.sh", k.DataDir, "--purge"); err != nil {
		fmt.Fprintf(os.Stderr, "keystonetest: %v\n", err)
	}
	if k.watchdog != nil {
		k.watchdog.Close() // nothing left for it to do: it exits
	}
}

// watchdogScript waits for EOF on stdin, which comes when the test process
// closes the pipe or exits however it exits, then stops the Keystone of
// directory $2 with $1 (keystone-down.sh) and removes the directory.
const watchdogScript = `
read -r _
/bin/bash "$1" "$2" --purge >/dev/null 2>&1
rm -rf "$2"
`

// startWatchdog starts a shell in its own session (a Ctrl-C to go test does
// not kill it before it has cleaned up) that cleans up dir once this
// process is gone. Nothing else holds the pipe's write end (close-on-exec),
// so the shell sees EOF exactly when we close it or exit.
func startWatchdog(dir string) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start keystone watchdog: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "keystonetest-watchdog",
		filepath.Join(scriptsDir(), "keystone-down.sh"), dir)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start keystone watchdog: %w", err)
	}
	go cmd.Wait() // reap it if it finishes while we still run
	return w, nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func randomSuffix() string {
	b := make([]byte, 4)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Token returns a project-scoped token of u (password authentication).
func (k *Keystone) Token(t testing.TB, u User) string {
	t.Helper()
	tok, err := k.token(u)
	if err != nil {
		t.Fatalf("keystonetest: token for %s: %v", u.Name, err)
	}
	return tok
}

func (k *Keystone) token(u User) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	provider, err := openstack.NewClient(k.AuthURL)
	if err != nil {
		return "", err
	}
	client, err := openstack.NewIdentityV3(provider, gophercloud.EndpointOpts{})
	if err != nil {
		return "", err
	}
	return tokens.Create(ctx, client, &tokens.AuthOptions{
		Username: u.Name, Password: u.Password, DomainName: "Default",
		Scope: tokens.Scope{ProjectID: u.ProjectID},
	}).ExtractTokenID()
}

// CLIEnv is the environment for the openstack and trove CLIs acting as u
// (password auth through this Keystone's catalog), with the caller's other
// OS_* variables removed.
func (k *Keystone) CLIEnv(u User) []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OS_") {
			env = append(env, e)
		}
	}
	return append(env,
		"OS_AUTH_URL="+k.AuthURL, "OS_IDENTITY_API_VERSION=3", "OS_AUTH_TYPE=password",
		"OS_USERNAME="+u.Name, "OS_PASSWORD="+u.Password, "OS_PROJECT_NAME="+u.ProjectName,
		"OS_USER_DOMAIN_NAME=Default", "OS_PROJECT_DOMAIN_NAME=Default",
		"OS_REGION_NAME="+k.Region, "OS_INTERFACE=public")
}

// CofferEnv is the environment that makes Coffer validate tokens with this
// Keystone (COFFER_AUTH=keystone and the service user's credentials).
func (k *Keystone) CofferEnv() []string {
	return []string{
		"COFFER_AUTH=keystone",
		"COFFER_KEYSTONE_URL=" + k.AuthURL,
		"COFFER_KEYSTONE_USERNAME=" + k.Service.Name,
		"COFFER_KEYSTONE_PASSWORD=" + k.Service.Password,
		"COFFER_KEYSTONE_PROJECT_NAME=" + k.Service.ProjectName,
		"COFFER_KEYSTONE_USER_DOMAIN_NAME=Default",
		"COFFER_KEYSTONE_PROJECT_DOMAIN_NAME=Default",
	}
}
