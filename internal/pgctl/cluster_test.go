package pgctl

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// newCluster returns an uninitialised cluster in a fresh temp directory,
// stopped and removed when the test ends. Paths stay short (socket limit)
// and the directory is opened to 0755 so the postgres user can reach it
// when the tests run as root.
func newCluster(t *testing.T) *Cluster {
	t.Helper()
	if _, err := FindBinDir(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL server programs are required in CI: %v", err)
		}
		t.Skipf("SKIPPING: no PostgreSQL server programs on this machine: %v", err)
	}
	dir, err := os.MkdirTemp("", "pgc")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{
		DataDir:   filepath.Join(dir, "data"),
		SocketDir: filepath.Join(dir, "s"),
		Port:      freePort(t),
		SuperUser: "coffer",
		// Quotes, a backslash and a space exercise initdb's pwfile and
		// ConnString's quoting.
		SuperPassword: `pa ss'wo\rd`,
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := c.Stop(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		os.RemoveAll(dir)
	})
	return c
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func connect(t *testing.T, ctx context.Context, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func show(t *testing.T, ctx context.Context, c *Cluster, setting string) string {
	t.Helper()
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SHOW "+setting).Scan(&v); err != nil {
		t.Fatalf("SHOW %s: %v", setting, err)
	}
	return v
}

func TestClusterLifecycle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := newCluster(t)

	// A staging directory left by an Init that crashed is cleared.
	if err := os.MkdirAll(c.DataDir+".initdb/base", 0o700); err != nil {
		t.Fatal(err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatalf("Init: %v", err)
	}
	if _, err := os.Stat(c.DataDir + ".initdb"); !os.IsNotExist(err) {
		t.Errorf("staging directory still there: %v", err)
	}
	fi, err := os.Stat(c.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("data directory mode %04o, want 0700", fi.Mode().Perm())
	}

	// Init again: nothing happens (a file of ours survives).
	marker := filepath.Join(c.DataDir, "marker")
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatalf("second Init: %v", err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("second Init re-initialised the cluster: %v", err)
	}

	if c.Running() {
		t.Fatal("Running before Start")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !c.Running() {
		t.Fatal("not Running after Start")
	}
	if err := c.Start(ctx); err != nil {
		t.Fatalf("second Start: %v", err)
	}
	sock := filepath.Join(c.SocketDir, ".s.PGSQL."+strconv.Itoa(c.Port))
	if _, err := os.Stat(sock); err != nil {
		t.Fatalf("socket: %v", err)
	}

	conn := connect(t, ctx, c.ConnString("postgres"))
	if _, err := conn.Exec(ctx, "CREATE TABLE t (id int PRIMARY KEY, v text)"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "INSERT INTO t VALUES (1, 'one')"); err != nil {
		t.Fatal(err)
	}
	var v, enc string
	if err := conn.QueryRow(ctx, "SELECT v, pg_encoding_to_char(encoding) FROM t, pg_database WHERE id = 1 AND datname = current_database()").Scan(&v, &enc); err != nil {
		t.Fatal(err)
	}
	if v != "one" || enc != "UTF8" {
		t.Errorf("got %q %q, want one UTF8", v, enc)
	}
	conn.Close(ctx)

	// Password authentication is enforced over the socket.
	wrong := *c
	wrong.SuperPassword = "wrong"
	if conn, err := pgx.Connect(ctx, wrong.ConnString("postgres")); err == nil {
		conn.Close(ctx)
		t.Error("connected with a wrong password")
	} else if !strings.Contains(err.Error(), "password authentication failed") {
		t.Errorf("wrong password: %v", err)
	}

	// No TCP listener by default.
	if d, err := net.DialTimeout("tcp", "127.0.0.1:"+strconv.Itoa(c.Port), time.Second); err == nil {
		d.Close()
		t.Error("TCP listener without ListenAddresses")
	}

	// A reloadable setting: WriteConfig + Reload. The postmaster applies a
	// reload asynchronously, so poll.
	if err := c.WriteConfig(map[string]string{"work_mem": "12MB", "application_name": `it's a \ test`}); err != nil {
		t.Fatalf("WriteConfig: %v", err)
	}
	if err := c.Reload(ctx); err != nil {
		t.Fatalf("Reload: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for show(t, ctx, c, "work_mem") != "12MB" {
		if time.Now().After(deadline) {
			t.Fatal("work_mem did not change after Reload")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := show(t, ctx, c, "application_name"); got != `it's a \ test` {
		t.Errorf("application_name = %q", got)
	}

	// A restart-only setting: WriteConfig + Restart.
	if err := c.WriteConfig(map[string]string{"work_mem": "12MB", "shared_buffers": "24MB"}); err != nil {
		t.Fatalf("WriteConfig: %v", err)
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if got := show(t, ctx, c, "shared_buffers"); got != "24MB" {
		t.Errorf("shared_buffers after Restart = %q, want 24MB", got)
	}

	if err := c.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if c.Running() {
		t.Fatal("Running after Stop")
	}
	if err := c.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := c.Reload(ctx); err == nil {
		t.Error("Reload of a stopped server succeeded")
	}
	// Restart of a stopped server starts it.
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("Restart stopped: %v", err)
	}
	if !c.Running() {
		t.Fatal("not Running after Restart")
	}
}

// Two clusters side by side, each with its own socket directory and port.
func TestClustersInParallel(t *testing.T) {
	t.Parallel()
	ids := make(chan uint64, 2)
	t.Run("group", func(t *testing.T) {
		for _, name := range []string{"a", "b"} {
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
				defer cancel()
				c := newCluster(t)
				if err := c.Init(ctx); err != nil {
					t.Fatal(err)
				}
				if err := c.Start(ctx); err != nil {
					t.Fatal(err)
				}
				conn := connect(t, ctx, c.ConnString("postgres"))
				var id uint64
				if err := conn.QueryRow(ctx, "SELECT system_identifier FROM pg_control_system()").Scan(&id); err != nil {
					t.Fatal(err)
				}
				ids <- id
			})
		}
	})
	close(ids)
	a, b := <-ids, <-ids
	if a == 0 || a == b {
		t.Errorf("system identifiers %d and %d: want two distinct clusters", a, b)
	}
}

func TestTCPListener(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newCluster(t)
	c.ListenAddresses = "127.0.0.1"
	// An empty data directory made by the caller is fine.
	if err := os.MkdirAll(c.DataDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Start(ctx); err != nil { // writes coffer.conf from the fields
		t.Fatal(err)
	}
	cfg, err := pgx.ParseConfig(c.ConnString("postgres"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Host = "127.0.0.1"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect over TCP: %v", err)
	}
	defer conn.Close(ctx)
	var addr string
	if err := conn.QueryRow(ctx, "SELECT host(inet_client_addr())").Scan(&addr); err != nil {
		t.Fatal(err)
	}
	if addr != "127.0.0.1" {
		t.Errorf("client address %q, want 127.0.0.1", addr)
	}
}

func TestStartFailureShowsLog(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	c := newCluster(t)
	if err := c.Init(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteConfig(map[string]string{"shared_buffers": "lots"}); err != nil {
		t.Fatal(err)
	}
	err := c.Start(ctx)
	if err == nil {
		t.Fatal("Start succeeded with an invalid setting")
	}
	if !strings.Contains(err.Error(), `invalid value for parameter "shared_buffers"`) {
		t.Errorf("error lacks the server log: %v", err)
	}
	if strings.Contains(err.Error(), c.SuperPassword) {
		t.Error("error contains the password")
	}
	if c.Running() {
		t.Error("Running after a failed Start")
	}
}

func TestInitRefusesForeignFiles(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.DataDir, "precious"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	err := c.Init(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Fatalf("Init over a non-empty directory: %v", err)
	}
}

func TestUnreachableDirectory(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("needs root to run the server as another user")
	}
	c := newCluster(t)
	parent := filepath.Dir(c.DataDir)
	locked := filepath.Join(parent, "locked")
	if err := os.Mkdir(locked, 0o700); err != nil {
		t.Fatal(err)
	}
	c.DataDir = filepath.Join(locked, "data")
	err := c.Init(context.Background())
	if err == nil || !strings.Contains(err.Error(), "directory "+locked+" ") {
		t.Fatalf("Init under a 0700 root directory: %v", err)
	}
	if fi, err := os.Stat(locked); err != nil || fi.Mode().Perm() != 0o700 {
		t.Errorf("pgctl changed the mode of %s", locked)
	}
}

func TestSocketPathLimit(t *testing.T) {
	t.Parallel()
	c := &Cluster{DataDir: "/tmp/d", SocketDir: "/tmp/" + strings.Repeat("s", 100), SuperUser: "u", SuperPassword: "p"}
	err := c.Init(context.Background())
	if err == nil || !strings.Contains(err.Error(), "socket path") {
		t.Fatalf("Init with a long socket path: %v", err)
	}
}

func TestWriteConfigRejects(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("15\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{DataDir: dir, SocketDir: dir}
	for _, settings := range []map[string]string{
		{"port": "1"},
		{"Listen_Addresses": "*"},
		{"bad name": "x"},
		{"work_mem": "1MB\nfsync = off"},
	} {
		if err := c.WriteConfig(settings); err == nil {
			t.Errorf("WriteConfig(%q) succeeded", settings)
		}
	}
	if err := c.WriteConfig(map[string]string{"Work_Mem": "1MB", "auto_explain.log_min_duration": "1s"}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "coffer.conf"))
	if err != nil {
		t.Fatal(err)
	}
	want := "# Written by Coffer (internal/pgctl); rewritten on every change, do not edit.\n" +
		"auto_explain.log_min_duration = '1s'\n" +
		"listen_addresses = ''\n" +
		"port = '5432'\n" +
		"unix_socket_directories = '" + dir + "'\n" +
		"work_mem = '1MB'\n"
	if string(got) != want {
		t.Errorf("coffer.conf:\n%s\nwant:\n%s", got, want)
	}
}

func TestConnString(t *testing.T) {
	t.Parallel()
	c := &Cluster{SocketDir: "/run/pg x", Port: 6000, SuperUser: "admin", SuperPassword: `a'b\c d`}
	cfg, err := pgx.ParseConfig(c.ConnString("my db"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Host != "/run/pg x" || cfg.Port != 6000 || cfg.User != "admin" || cfg.Password != `a'b\c d` || cfg.Database != "my db" || cfg.TLSConfig != nil {
		t.Errorf("parsed %+v", cfg.Config)
	}
}

func TestFindBinDir(t *testing.T) {
	dir, err := FindBinDir()
	if err != nil {
		t.Skipf("no PostgreSQL: %v", err)
	}
	t.Setenv(EnvBinDir, dir)
	if got, err := FindBinDir(); err != nil || got != dir {
		t.Errorf("with $%s=%s: %q, %v", EnvBinDir, dir, got, err)
	}
	t.Setenv(EnvBinDir, t.TempDir())
	if _, err := FindBinDir(); err == nil {
		t.Errorf("$%s pointing at an empty directory accepted", EnvBinDir)
	}
}

func TestVersionLess(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		a, b string
		less bool
	}{{"9.6", "15", true}, {"15", "9.6", false}, {"15", "16", true}, {"16", "16", false}, {"10", "9.6", false}} {
		if got := versionLess(c.a, c.b); got != c.less {
			t.Errorf("versionLess(%q, %q) = %v", c.a, c.b, got)
		}
	}
}
