// Package testdb gives each test its own PostgreSQL database at Coffer's
// current schema, so tests run in parallel against a real server without
// seeing each other's rows.
//
// The server is $COFFER_TEST_DATABASE_URL if set (its user must be allowed
// to CREATE DATABASE), else a throwaway cluster this test process starts
// with internal/pgctl on first use, tuned for speed over durability. The
// schema is migrated once per process into a template database, which each
// test's database is cloned from (CREATE DATABASE ... TEMPLATE), far faster
// than migrating every database.
//
// Use Main in TestMain so the throwaway cluster stops when the tests end.
// (Should the process die first — a panic, a -timeout, a kill — a watchdog
// process stops the cluster and removes its files anyway.)
package testdb

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coffer-dbaas/coffer/db/migrate"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// EnvURL names the environment variable holding the connection string of
// an existing server to use instead of starting one.
const EnvURL = "COFFER_TEST_DATABASE_URL"

// setupTimeout bounds starting the server and migrating the template.
const setupTimeout = 3 * time.Minute

// serverSettings trade durability for speed: a crash loses a throwaway
// cluster, nothing else. Many packages' tests run in parallel, each test
// with its own pool, hence the connection limit.
var serverSettings = map[string]string{
	"fsync":              "off",
	"synchronous_commit": "off",
	"full_page_writes":   "off",
	"max_connections":    "300",
}

// server is the PostgreSQL server of this test process.
type server struct {
	admin    *pgxpool.Pool            // to the maintenance database, for CREATE/DROP DATABASE
	dbURL    func(name string) string // connection string for one database
	template string                   // database the test databases are cloned from

	// Set only when this process started the server.
	cluster  *pgctl.Cluster
	dir      string
	watchdog *os.File // write end of the watchdog's stdin: closing it (or dying) triggers cleanup
}

var (
	setupMu  sync.Mutex
	srv      *server
	setupErr error // cached: a failed setup fails (or skips) every test the same way

	// createMu serialises CREATE DATABASE ... TEMPLATE: while one clone
	// reads the template, a concurrent clone of it fails with "source
	// database is being accessed by other users".
	createMu sync.Mutex
)

// errNoPostgres marks a setup failure caused by PostgreSQL not being
// installed, which skips tests outside CI rather than failing them.
var errNoPostgres = errors.New("no PostgreSQL server programs")

// Main is for TestMain: it runs m and stops the cluster this process
// started (if any), then exits with m's code.
func Main(m *testing.M) {
	code := m.Run()
	if err := shutdown(); err != nil {
		fmt.Fprintf(os.Stderr, "testdb: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// New returns a pool on a fresh database at the current schema, dropped
// (WITH (FORCE)) in t.Cleanup after the pool is closed.
func New(t testing.TB) *pgxpool.Pool {
	t.Helper()
	dsn := NewURL(t)
	pool, err := pgxpool.New(context.Background(), dsn)
	if err != nil {
		t.Fatalf("testdb: open pool: %v", err)
	}
	// Cleanups run last-registered first: the pool closes before the drop
	// NewURL registered.
	t.Cleanup(pool.Close)
	return pool
}

// NewURL is New returning the connection string instead of a pool (the
// caller opens and closes its own pools; connections still open at cleanup
// are terminated by the drop).
func NewURL(t testing.TB) string {
	t.Helper()
	s := get(t)
	name := "coffer_test_" + randomHex(8)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	createMu.Lock()
	_, err := s.admin.Exec(ctx, "CREATE DATABASE "+ident(name)+" TEMPLATE "+ident(s.template))
	createMu.Unlock()
	if err != nil {
		t.Fatalf("testdb: create database %s from %s: %v", name, s.template, err)
	}
	t.Cleanup(func() {
		// Not t.Context(): it is already cancelled when cleanups run.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			t.Errorf("testdb: drop database %s: %v", name, err)
		}
	})
	return s.dbURL(name)
}

// get returns the process's server, setting it up on first use.
func get(t testing.TB) *server {
	t.Helper()
	setupMu.Lock()
	defer setupMu.Unlock()
	if srv == nil && setupErr == nil {
		srv, setupErr = setup()
	}
	if setupErr != nil {
		if errors.Is(setupErr, errNoPostgres) {
			if os.Getenv("CI") != "" {
				t.Fatalf("testdb: PostgreSQL is required in CI: %v", setupErr)
			}
			t.Skipf("SKIPPING: testdb: %v (install the PostgreSQL server, set $%s, or $%s to a server's URL)",
				setupErr, pgctl.EnvBinDir, EnvURL)
		}
		t.Fatalf("testdb: %v", setupErr)
	}
	return srv
}

func setup() (*server, error) {
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()

	var s *server
	var err error
	if u := os.Getenv(EnvURL); u != "" {
		s, err = useExternal(ctx, u)
	} else {
		s, err = startCluster(ctx)
	}
	if err != nil {
		return nil, err
	}
	if err := s.migrateTemplate(ctx); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

// useExternal uses the server at dsn. Several test processes (go test
// ./... runs one per package) may share it, so the template gets a name
// of its own per process: each process migrates and clones only its own,
// with the schema of the code it was built from.
func useExternal(ctx context.Context, dsn string) (*server, error) {
	dbURL, err := urlWithDatabase(dsn)
	if err != nil {
		return nil, fmt.Errorf("$%s: %w", EnvURL, err)
	}
	admin, err := pgxpool.New(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("$%s: %w", EnvURL, err)
	}
	if err := admin.Ping(ctx); err != nil {
		admin.Close()
		return nil, fmt.Errorf("connect to $%s: %w", EnvURL, err)
	}
	return &server{
		admin:    admin,
		dbURL:    dbURL,
		template: "coffer_template_" + randomHex(6),
	}, nil
}

// urlWithDatabase returns a function substituting the database of a
// connection string in either of its forms.
func urlWithDatabase(dsn string) (func(string) string, error) {
	if _, err := pgx.ParseConfig(dsn); err != nil {
		return nil, err
	}
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		u, err := url.Parse(dsn)
		if err != nil {
			return nil, err
		}
		return func(name string) string {
			v := *u
			v.Path, v.RawPath = "/"+name, ""
			return v.String()
		}, nil
	}
	// Keyword/value: a later keyword overrides an earlier one.
	return func(name string) string { return dsn + " dbname='" + name + "'" }, nil
}

// startCluster initialises and starts a cluster in a fresh temp directory.
func startCluster(ctx context.Context) (_ *server, err error) {
	bin, err := pgctl.FindBinDir()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoPostgres, err)
	}
	// A short path: the socket path must fit in 107 bytes.
	dir, err := os.MkdirTemp("", "cftdb")
	if err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	s := &server{dir: dir}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	// The server runs as postgres when we are root: it must reach its files.
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create cluster directory: %w", err)
	}
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	c := &pgctl.Cluster{
		BinDir:        bin,
		DataDir:       filepath.Join(dir, "d"),
		SocketDir:     filepath.Join(dir, "s"),
		Port:          port,
		SuperUser:     "coffer",
		SuperPassword: randomHex(16),
	}
	if err := c.Init(ctx); err != nil {
		return nil, err
	}
	if err := c.WriteConfig(serverSettings); err != nil {
		return nil, err
	}
	// The watchdog first: from here on a dying process leaves nothing behind.
	if s.watchdog, err = startWatchdog(c.DataDir, dir); err != nil {
		return nil, err
	}
	s.cluster = c
	if err := c.Start(ctx); err != nil {
		return nil, err
	}
	s.admin, err = pgxpool.New(ctx, c.ConnString("postgres"))
	if err != nil {
		return nil, fmt.Errorf("connect to test cluster: %w", err)
	}
	s.dbURL = c.ConnString
	s.template = "coffer_template"
	return s, nil
}

// watchdogScript waits for EOF on stdin, which comes when the test process
// closes the pipe or exits however it exits, then fast-stops the
// postmaster ($1 is its data directory) and removes the cluster ($2).
const watchdogScript = `
read -r _
pid=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) && kill -INT "$pid" 2>/dev/null
n=0
while [ -e "$1/postmaster.pid" ] && [ "$n" -lt 300 ]; do sleep 0.1; n=$((n+1)); done
rm -rf "$2"
`

// startWatchdog starts a shell that cleans up the cluster once this process
// is gone. Nothing else holds the pipe's write end (it is close-on-exec), so
// the shell sees EOF exactly when we close it or exit. It runs in its own
// session so a Ctrl-C to go test does not kill it before it has cleaned up.
func startWatchdog(dataDir, dir string) (*os.File, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	defer r.Close()
	cmd := exec.Command("/bin/sh", "-c", watchdogScript, "testdb-watchdog", dataDir, dir)
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil, fmt.Errorf("start watchdog: %w", err)
	}
	go cmd.Wait() // reap it if it finishes while we still run
	return w, nil
}

// migrateTemplate creates the template database and migrates it. Its pool
// is closed before returning: a template being cloned must have no other
// connections.
func (s *server) migrateTemplate(ctx context.Context) error {
	if _, err := s.admin.Exec(ctx, "CREATE DATABASE "+ident(s.template)); err != nil {
		return fmt.Errorf("create template database %s: %w", s.template, err)
	}
	pool, err := pgxpool.New(ctx, s.dbURL(s.template))
	if err != nil {
		return fmt.Errorf("connect to template database %s: %w", s.template, err)
	}
	defer pool.Close()
	if err := migrate.Up(ctx, pool); err != nil {
		return fmt.Errorf("migrate template database %s: %w", s.template, err)
	}
	return nil
}

// shutdown releases what setup acquired.
func shutdown() error {
	setupMu.Lock()
	defer setupMu.Unlock()
	if srv == nil {
		return nil
	}
	err := srv.close()
	srv = nil
	setupErr = errors.New("testdb: used after Main returned from the tests")
	return err
}

func (s *server) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var errs []error
	if s.admin != nil {
		if s.cluster == nil && s.template != "" {
			// On a shared server the per-process template would pile up.
			if _, err := s.admin.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(s.template)+" WITH (FORCE)"); err != nil {
				errs = append(errs, fmt.Errorf("drop template database %s: %w", s.template, err))
			}
		}
		s.admin.Close()
	}
	if s.cluster != nil {
		if err := s.cluster.Stop(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if s.dir != "" {
		if err := os.RemoveAll(s.dir); err != nil {
			errs = append(errs, fmt.Errorf("remove test cluster: %w", err))
		}
	}
	if s.watchdog != nil {
		s.watchdog.Close() // nothing left for it to do: it exits
	}
	return errors.Join(errs...)
}

// freePort returns a TCP port free right now. The cluster listens only on
// its own socket directory, so the port just needs to be plausible; a free
// one keeps the way open to listening on 127.0.0.1 too.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return hex.EncodeToString(b)
}
