// Package pgctl runs a PostgreSQL cluster with the server programs installed
// on this machine (initdb, pg_ctl, postgres): it initialises a data
// directory, writes the settings Coffer manages, and starts, stops and
// reloads the server. The control plane uses it for its embedded throwaway
// database (and internal/testdb for tests); the guest agent's postgresql
// driver uses it to run the instance's datastore.
//
// When the caller is root the server runs as another OS user (PostgreSQL
// refuses root): programs are started with that user's credentials and the
// files the server writes are handed to it.
package pgctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

// DefaultPort is the port used when Cluster.Port is 0.
const DefaultPort = 5432

// maxSocketPath is the longest Unix socket path Linux accepts: sun_path is
// 108 bytes including the terminating NUL.
const maxSocketPath = 107

// defaultTimeout bounds pg_ctl's waits when the context has no deadline.
const defaultTimeout = 60 * time.Second

// confFile is the file WriteConfig owns; postgresql.conf includes it last,
// so its settings win over initdb's defaults.
const confFile = "coffer.conf"

// Cluster is one PostgreSQL cluster: a data directory and the server that
// runs on it. The zero value of each optional field picks a default. A
// Cluster holds no state between calls, so a new value with the same fields
// controls the same server (after an agent restart, for instance), and its
// methods may be called from several goroutines.
type Cluster struct {
	BinDir          string // "" → FindBinDir()
	DataDir         string // PGDATA; created mode 0700 owned by RunAs
	SocketDir       string // unix_socket_directories; created 0755 owned by RunAs
	ListenAddresses string // "" → no TCP listener (listen_addresses='')
	Port            int    // also names the socket file; 0 → 5432
	SuperUser       string // bootstrap superuser (initdb --username)
	SuperPassword   string // its password; auth is scram-sha-256 for local and host connections
	RunAs           string // OS user running initdb/postgres; "" → "postgres" when root, else the current user
	LogFile         string // server log; "" → <DataDir>/../postgres.log
	// SessionOptions are run-time settings for ConnString's sessions
	// (libpq's options, e.g. "-c log_statement=none"); superuser-only
	// settings need SuperUser to be a superuser.
	SessionOptions string
}

// resolved is a Cluster with its defaults applied and paths made absolute.
type resolved struct {
	binDir, dataDir, socketDir, logFile string
	port                                int
	acct                                *account
}

func (c *Cluster) resolve() (*resolved, error) {
	if c.DataDir == "" {
		return nil, errors.New("pgctl: Cluster.DataDir is required")
	}
	if c.SocketDir == "" {
		return nil, errors.New("pgctl: Cluster.SocketDir is required")
	}
	r := &resolved{binDir: c.BinDir, port: c.Port}
	if r.port == 0 {
		r.port = DefaultPort
	}
	if r.port < 1 || r.port > 65535 {
		return nil, fmt.Errorf("pgctl: port %d out of range", r.port)
	}
	var err error
	if r.dataDir, err = filepath.Abs(c.DataDir); err != nil {
		return nil, fmt.Errorf("pgctl: data directory %s: %w", c.DataDir, err)
	}
	if r.socketDir, err = filepath.Abs(c.SocketDir); err != nil {
		return nil, fmt.Errorf("pgctl: socket directory %s: %w", c.SocketDir, err)
	}
	if sock := socketPath(r.socketDir, r.port); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("pgctl: socket path %s is %d bytes, over the %d-byte limit of Unix sockets; use a shorter SocketDir",
			sock, len(sock), maxSocketPath)
	}
	r.logFile = c.LogFile
	if r.logFile == "" {
		r.logFile = filepath.Join(filepath.Dir(r.dataDir), "postgres.log")
	}
	if r.logFile, err = filepath.Abs(r.logFile); err != nil {
		return nil, fmt.Errorf("pgctl: log file %s: %w", c.LogFile, err)
	}
	// pg_ctl starts the server through the shell with these paths in
	// double quotes; characters the shell still interprets there are out.
	for _, p := range []string{r.dataDir, r.logFile} {
		if strings.ContainsAny(p, "\"$`\\\n") {
			return nil, fmt.Errorf("pgctl: path %q contains a character pg_ctl cannot pass through its shell (\", $, `, \\ or newline)", p)
		}
	}
	if r.binDir == "" {
		if r.binDir, err = FindBinDir(); err != nil {
			return nil, err
		}
	}
	if r.acct, err = resolveAccount(c.RunAs); err != nil {
		return nil, err
	}
	return r, nil
}

func socketPath(dir string, port int) string {
	return filepath.Join(dir, ".s.PGSQL."+strconv.Itoa(port))
}

// dirLocks serialises Init, Start and Stop on one data directory within
// this process, so two goroutines starting the same cluster do not race
// two pg_ctl runs into each other.
var dirLocks sync.Map // data directory → *sync.Mutex

func lockDir(dir string) func() {
	mu, _ := dirLocks.LoadOrStore(dir, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}

// Init creates the cluster with initdb unless DataDir already holds one
// (PG_VERSION exists), in which case it does nothing.
//
// initdb runs in a staging directory next to DataDir which is renamed into
// place once the cluster and Coffer's pg_hba.conf and include are written,
// so a crash at any point leaves either no cluster or a complete one, and
// the next Init starts over cleanly.
func (c *Cluster) Init(ctx context.Context) error {
	r, err := c.resolve()
	if err != nil {
		return err
	}
	if c.SuperUser == "" || c.SuperPassword == "" {
		return fmt.Errorf("init postgres %s: SuperUser and SuperPassword are required (password authentication)", r.dataDir)
	}
	if strings.ContainsAny(c.SuperPassword, "\r\n\x00") {
		return fmt.Errorf("init postgres %s: the superuser password must not contain line breaks or NUL", r.dataDir)
	}
	defer lockDir(r.dataDir)()

	if _, err := os.Stat(filepath.Join(r.dataDir, "PG_VERSION")); err == nil {
		return nil
	}
	if entries, err := os.ReadDir(r.dataDir); err == nil && len(entries) > 0 {
		// Never initdb over, or rename onto, files we did not put there.
		return fmt.Errorf("init postgres %s: directory is not empty but holds no cluster (no PG_VERSION); refusing to touch it", r.dataDir)
	}

	parent := filepath.Dir(r.dataDir)
	if _, err := mkdirAll(parent); err != nil {
		return fmt.Errorf("init postgres %s: create parent directory: %w", r.dataDir, err)
	}
	if err := r.acct.checkReach(parent); err != nil {
		return fmt.Errorf("init postgres %s: %w", r.dataDir, err)
	}

	// Fixed names next to DataDir, so that whatever an interrupted Init
	// left behind (including the password file) is removed by the next.
	staging, pwfile := r.dataDir+".initdb", r.dataDir+".initdb-pw"
	for _, stale := range []string{staging, pwfile} {
		if err := os.RemoveAll(stale); err != nil {
			return fmt.Errorf("init postgres %s: remove stale %s: %w", r.dataDir, stale, err)
		}
	}
	if err := os.Mkdir(staging, 0o700); err != nil {
		return fmt.Errorf("init postgres %s: %w", r.dataDir, err)
	}
	if err := r.acct.chown(staging); err != nil {
		return fmt.Errorf("init postgres %s: %w", r.dataDir, err)
	}

	// The password goes to initdb in a file only the account can read,
	// never on the command line where any user's ps would show it.
	if err := writePasswordFile(pwfile, c.SuperPassword, r.acct); err != nil {
		return fmt.Errorf("init postgres %s: %w", r.dataDir, err)
	}
	defer os.Remove(pwfile)

	_, err = r.run(ctx, "initdb",
		"--pgdata="+staging,
		"--encoding=UTF8",
		"--locale="+initLocale(),
		"--auth=scram-sha-256",
		"--username="+c.SuperUser,
		"--pwfile="+pwfile,
		"--no-instructions",
	)
	if err != nil {
		return fmt.Errorf("init postgres %s: %w", r.dataDir, err)
	}
	if err := os.Remove(pwfile); err != nil {
		return fmt.Errorf("init postgres %s: remove password file: %w", r.dataDir, err)
	}

	if err := r.writeFile(filepath.Join(staging, "pg_hba.conf"), []byte(hbaConf)); err != nil {
		return fmt.Errorf("init postgres %s: %w", r.dataDir, err)
	}
	if err := appendFile(filepath.Join(staging, "postgresql.conf"),
		"\n# Settings managed by Coffer (internal/pgctl); they override the above.\ninclude_if_exists = '"+confFile+"'\n"); err != nil {
		return fmt.Errorf("init postgres %s: %w", r.dataDir, err)
	}

	// rename(2) replaces an empty directory, so an empty DataDir the
	// caller made is fine. (os.Rename refuses any existing directory.)
	if err := syscall.Rename(staging, r.dataDir); err != nil {
		return fmt.Errorf("init postgres %s: move initialised cluster into place: %w", r.dataDir, err)
	}
	if err := syncDir(parent); err != nil {
		return fmt.Errorf("init postgres %s: %w", r.dataDir, err)
	}
	return nil
}

// hbaConf replaces initdb's pg_hba.conf: password (SCRAM) authentication
// for everyone, over the socket and from any address. Which addresses reach
// the server at all is decided by listen_addresses and the network around it.
const hbaConf = `# Written by Coffer (internal/pgctl).
# TYPE  DATABASE     USER  ADDRESS    METHOD
local   all          all              scram-sha-256
host    all          all   0.0.0.0/0  scram-sha-256
host    all          all   ::/0       scram-sha-256
local   replication  all              scram-sha-256
host    replication  all   0.0.0.0/0  scram-sha-256
host    replication  all   ::/0       scram-sha-256
`

// initLocale prefers C.UTF-8 (byte-order collation like C, but UTF-8 aware
// character classes) where the C library has it, else C.
var initLocale = sync.OnceValue(func() string {
	out, err := exec.Command("locale", "-a").Output()
	if err == nil {
		for _, l := range strings.Fields(string(out)) {
			switch strings.ToLower(l) {
			case "c.utf8", "c.utf-8":
				return "C.UTF-8"
			}
		}
	}
	return "C"
})

func writePasswordFile(path, password string, acct *account) error {
	// Created 0600 before anything is written; O_EXCL: not through a link.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create password file: %w", err)
	}
	_, err = io.WriteString(f, password+"\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = acct.chown(path)
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("write password file: %w", err)
	}
	return nil
}

// Start starts the server and waits until it accepts connections (pg_ctl
// start -w, bounded by ctx's deadline or 60s). It does nothing if the
// server is running. If coffer.conf does not exist yet it is written from
// the fields alone, so the server listens where ConnString points.
func (c *Cluster) Start(ctx context.Context) error {
	r, err := c.resolve()
	if err != nil {
		return err
	}
	defer lockDir(r.dataDir)()
	if running(r.dataDir) {
		return nil
	}
	if err := r.start(ctx, c); err != nil {
		return fmt.Errorf("start postgres %s: %w", r.dataDir, err)
	}
	return nil
}

func (r *resolved) start(ctx context.Context, c *Cluster) error {
	if _, err := os.Stat(filepath.Join(r.dataDir, "PG_VERSION")); err != nil {
		return fmt.Errorf("no cluster (run Init first): %w", err)
	}
	if err := r.prepareSocketDir(); err != nil {
		return err
	}
	if err := r.prepareLogFile(); err != nil {
		return err
	}
	for _, dir := range []string{r.dataDir, r.socketDir, filepath.Dir(r.logFile)} {
		if err := r.acct.checkReach(dir); err != nil {
			return err
		}
	}
	// postgres refuses a data directory it does not own, with a message
	// about "wrong ownership"; say which user was expected instead.
	if dfi, err := os.Stat(r.dataDir); err == nil {
		if st, ok := dfi.Sys().(*syscall.Stat_t); ok && st.Uid != r.acct.uid {
			return fmt.Errorf("data directory is owned by uid %d, not by %s (uid %d) which runs the server", st.Uid, r.acct.name, r.acct.uid)
		}
	}
	if _, err := os.Stat(filepath.Join(r.dataDir, confFile)); errors.Is(err, fs.ErrNotExist) {
		if err := r.writeConfig(c, nil); err != nil {
			return err
		}
	}

	// Remember where the log ends, to show what this attempt wrote if it fails.
	var logStart int64
	if lfi, err := os.Stat(r.logFile); err == nil {
		logStart = lfi.Size()
	}
	_, err := r.run(ctx, "pg_ctl", "start",
		"--pgdata="+r.dataDir,
		"--log="+r.logFile,
		"--wait", "--timeout="+timeoutSeconds(ctx),
		"--silent",
	)
	if err != nil {
		if tail := logTail(r.logFile, logStart); tail != "" {
			return fmt.Errorf("%w\nserver log %s:\n%s", err, r.logFile, tail)
		}
		return err
	}
	return nil
}

// prepareSocketDir creates the socket directory for the account, or checks
// the account can create its socket in an existing one. An existing
// directory is not chowned: it may be shared (/tmp, /run/postgresql).
func (r *resolved) prepareSocketDir() error {
	created, err := mkdirAll(r.socketDir)
	if err != nil {
		return fmt.Errorf("create socket directory: %w", err)
	}
	if created {
		return r.acct.chown(r.socketDir)
	}
	fi, err := os.Stat(r.socketDir)
	if err != nil {
		return err
	}
	if r.acct.switchTo && !r.acct.canWrite(fi) {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid == 0 && isEmptyDir(r.socketDir) {
			// An empty directory root made for this cluster: hand it over.
			return r.acct.chown(r.socketDir)
		}
		return fmt.Errorf("user %s cannot create its socket in %s (mode %04o)", r.acct.name, r.socketDir, fi.Mode().Perm())
	}
	return nil
}

// prepareLogFile creates the log file for the account, since pg_ctl opens
// it as the account and may not be able to create it in a root-owned
// directory.
func (r *resolved) prepareLogFile() error {
	if _, err := mkdirAll(filepath.Dir(r.logFile)); err != nil {
		return fmt.Errorf("create log directory: %w", err)
	}
	f, err := os.OpenFile(r.logFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("create log file: %w", err)
	}
	fi, err := f.Stat()
	f.Close()
	if err != nil {
		return fmt.Errorf("create log file: %w", err)
	}
	// Only a regular file: a LogFile of /dev/null must not be chowned.
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && fi.Mode().IsRegular() && st.Uid != r.acct.uid {
		return r.acct.chown(r.logFile)
	}
	return nil
}

// Stop shuts the server down in fast mode (clients are disconnected,
// transactions rolled back) and waits for it to exit. Stopping a server
// that is not running succeeds.
func (c *Cluster) Stop(ctx context.Context) error {
	r, err := c.resolve()
	if err != nil {
		return err
	}
	defer lockDir(r.dataDir)()
	return r.stop(ctx)
}

func (r *resolved) stop(ctx context.Context) error {
	if !running(r.dataDir) {
		return nil
	}
	_, err := r.run(ctx, "pg_ctl", "stop",
		"--pgdata="+r.dataDir,
		"--mode=fast",
		"--wait", "--timeout="+timeoutSeconds(ctx),
		"--silent",
	)
	if err != nil && running(r.dataDir) {
		return fmt.Errorf("stop postgres %s: %w", r.dataDir, err)
	}
	return nil
}

// Restart stops the server if it is running and starts it again, for
// settings that only take effect at server start.
func (c *Cluster) Restart(ctx context.Context) error {
	r, err := c.resolve()
	if err != nil {
		return err
	}
	defer lockDir(r.dataDir)()
	if err := r.stop(ctx); err != nil {
		return err
	}
	if err := r.start(ctx, c); err != nil {
		return fmt.Errorf("restart postgres %s: %w", r.dataDir, err)
	}
	return nil
}

// Reload signals the server to re-read its configuration files (pg_ctl
// reload). It returns once the signal is sent: the postmaster applies the
// change within moments, sessions at their next command.
func (c *Cluster) Reload(ctx context.Context) error {
	r, err := c.resolve()
	if err != nil {
		return err
	}
	if !running(r.dataDir) {
		return fmt.Errorf("reload postgres %s: server is not running", r.dataDir)
	}
	if _, err := r.run(ctx, "pg_ctl", "reload", "--pgdata="+r.dataDir, "--silent"); err != nil {
		return fmt.Errorf("reload postgres %s: %w", r.dataDir, err)
	}
	return nil
}

// Running reports whether the server is running: postmaster.pid is present
// and names a live process.
func (c *Cluster) Running() bool {
	if c.DataDir == "" {
		return false
	}
	dir, err := filepath.Abs(c.DataDir)
	if err != nil {
		return false
	}
	return running(dir)
}

func running(dataDir string) bool {
	pid, err := readPID(dataDir)
	if err != nil || pid <= 0 {
		return false
	}
	// EPERM means the process exists but is another user's: alive.
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	proc := "/proc/" + strconv.Itoa(pid)
	// A postmaster that died but is not yet reaped still answers signals.
	if stat, err := os.ReadFile(proc + "/stat"); err == nil {
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && i+2 < len(stat) {
			if state := stat[i+2]; state == 'Z' || state == 'X' {
				return false
			}
		}
	}
	// After a host crash the pid in a stale postmaster.pid may have been
	// reused by an unrelated process. The postmaster's working directory is
	// its data directory; where we may look (root, or the same user), a
	// different one means the pid is not our server.
	cwd, err := os.Readlink(proc + "/cwd")
	if err != nil {
		return true // no /proc, or not allowed to look: trust the signal check
	}
	want := dataDir
	if real, err := filepath.EvalSymlinks(dataDir); err == nil {
		want = real
	}
	return cwd == want
}

// readPID returns the process id recorded in dataDir's postmaster.pid.
func readPID(dataDir string) (int, error) {
	b, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		return 0, err
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(strings.TrimSpace(first))
	if err != nil {
		return 0, fmt.Errorf("parse %s: %w", filepath.Join(dataDir, "postmaster.pid"), err)
	}
	return pid, nil
}

// ConnString returns a keyword/value connection string for database over
// the Unix socket, as the superuser. It contains the password: do not log it.
func (c *Cluster) ConnString(database string) string {
	host := c.SocketDir
	if abs, err := filepath.Abs(host); err == nil {
		host = abs
	}
	port := c.Port
	if port == 0 {
		port = DefaultPort
	}
	s := fmt.Sprintf("host=%s port=%d user=%s password=%s dbname=%s sslmode=disable",
		quoteDSN(host), port, quoteDSN(c.SuperUser), quoteDSN(c.SuperPassword), quoteDSN(database))
	if c.SessionOptions != "" {
		s += " options=" + quoteDSN(c.SessionOptions)
	}
	return s
}

// quoteDSN quotes a keyword/value connection string value: single quotes,
// with backslash escaping quotes and backslashes (libpq's and pgx's rule).
func quoteDSN(v string) string {
	v = strings.ReplaceAll(v, `\`, `\\`)
	return "'" + strings.ReplaceAll(v, "'", `\'`) + "'"
}

// run executes one of the server programs as the account and returns its
// output; a failure's error carries the output, which for these programs
// never contains the password (it travels in files).
func (r *resolved) run(ctx context.Context, prog string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(r.binDir, prog), args...)
	cmd.Dir = "/" // the account may not be able to enter our working directory
	cmd.Env = r.acct.env()
	cmd.SysProcAttr = r.acct.credential()
	// pg_ctl start leaves the server running in the background; should it
	// ever hold our output pipe open, do not wait for it forever.
	cmd.WaitDelay = 5 * time.Second
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if msg == "" {
			return nil, fmt.Errorf("%s %s: %w", prog, firstArg(args), err)
		}
		return nil, fmt.Errorf("%s %s: %w: %s", prog, firstArg(args), err, msg)
	}
	return out.Bytes(), nil
}

func firstArg(args []string) string {
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		return args[0]
	}
	return ""
}

// writeFile atomically replaces path with data, mode 0600, owned by the
// account: temp file in the same directory, fsync, rename, fsync directory.
func (r *resolved) writeFile(path string, data []byte) error {
	return atomicfile.WriteWith(path, data, 0o600, r.acct.chown)
}

func appendFile(path, text string) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	_, err = f.WriteString(text)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func isEmptyDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err == nil && len(entries) == 0
}

// logTail returns the end (at most 4 KiB, whole lines) of what was written
// to the log after offset.
func logTail(path string, offset int64) string {
	const maxTail = 4 << 10
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil || fi.Size() <= offset {
		return ""
	}
	start := max(offset, fi.Size()-maxTail)
	b := make([]byte, fi.Size()-start)
	if _, err := f.ReadAt(b, start); err != nil && !errors.Is(err, io.EOF) {
		return ""
	}
	if start > offset {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return strings.TrimRight(string(b), "\n")
}

// timeoutSeconds is pg_ctl's --timeout: what is left of ctx's deadline,
// rounded up, or the default.
func timeoutSeconds(ctx context.Context) string {
	d := defaultTimeout
	if dl, ok := ctx.Deadline(); ok {
		d = time.Until(dl)
	}
	return strconv.Itoa(max(1, int(math.Ceil(d.Seconds()))))
}
