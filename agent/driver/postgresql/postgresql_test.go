package postgresql

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// newDriver returns a driver on a fresh short temp directory listening on
// 127.0.0.1 at a free port; its server is stopped when the test ends.
func newDriver(t testing.TB) *Driver {
	t.Helper()
	if _, err := pgctl.FindBinDir(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("PostgreSQL server programs are required in CI: %v", err)
		}
		t.Skipf("SKIPPING: no PostgreSQL server programs on this machine: %v", err)
	}
	dir, err := os.MkdirTemp("", "pgd")
	if err != nil {
		t.Fatal(err)
	}
	// The server runs as postgres when the tests run as root.
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := New(protocol.AgentConfig{
		Datastore:     "postgresql",
		DataDir:       dir,
		ListenAddress: "127.0.0.1",
		Port:          freePort(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		os.RemoveAll(dir)
	})
	return d
}

func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// connectTCP connects over TCP, as a client of the instance would.
func connectTCP(ctx context.Context, d *Driver, user, password, db string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig("sslmode=disable")
	if err != nil {
		return nil, err
	}
	cfg.Host, cfg.Port = d.cfg.ListenAddress, uint16(d.port)
	cfg.User, cfg.Password, cfg.Database = user, password, db
	return pgx.ConnectConfig(ctx, cfg)
}

func postmasterPID(t *testing.T, d *Driver) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dataDir, pgdataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(b), "\n")
	pid, err := strconv.Atoi(first)
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

const alicePassword = `s3cr'et \ "pw" with spaces`

func prepareRequest(password string) protocol.PrepareRequest {
	return protocol.PrepareRequest{
		Datastore:    "postgresql",
		Version:      "15",
		FlavorRAMMB:  512,
		VolumeSizeGB: 2,
		Databases: []protocol.Database{
			{Name: "app", CharacterSet: "UTF8", Collate: "C"},
			{Name: "other-db"},
		},
		Users: []protocol.User{{Name: "alice", Password: password, Databases: []string{"app", "other-db"}}},
	}
}

func TestPrepareAndLifecycle(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := newDriver(t)

	if got := d.Status(ctx); got != protocol.ServiceNew {
		t.Errorf("Status before Prepare = %q, want new", got)
	}
	if err := d.Prepare(ctx, prepareRequest(alicePassword)); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if got := d.Status(ctx); got != protocol.ServiceHealthy {
		t.Errorf("Status after Prepare = %q, want healthy", got)
	}

	// The user works over TCP, can create tables in its database (schema
	// public grant), and the database has the requested locale.
	conn, err := connectTCP(ctx, d, "alice", alicePassword, "app")
	if err != nil {
		t.Fatalf("connect as alice: %v", err)
	}
	for _, sql := range []string{
		"CREATE TABLE notes (id int PRIMARY KEY, body text)",
		"INSERT INTO notes VALUES (1, 'hello')",
	} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	var body, collate string
	if err := conn.QueryRow(ctx, "SELECT body, datcollate FROM notes, pg_database WHERE id = 1 AND datname = current_database()").Scan(&body, &collate); err != nil {
		t.Fatal(err)
	}
	if body != "hello" || collate != "C" {
		t.Errorf("got %q, collation %q", body, collate)
	}
	var super bool
	if err := conn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil || super {
		t.Errorf("alice is superuser: %v %v", super, err)
	}
	conn.Close(ctx)
	if conn, err := connectTCP(ctx, d, "alice", alicePassword, "other-db"); err != nil {
		t.Errorf("connect as alice to other-db: %v", err)
	} else {
		if _, err := conn.Exec(ctx, "CREATE TABLE t (id int)"); err != nil {
			t.Errorf("create table in other-db: %v", err)
		}
		conn.Close(ctx)
	}

	// Settings from the flavor: 512 MB.
	conn, err = connectTCP(ctx, d, AdminUser, mustState(t, d).SuperPassword, "postgres")
	if err != nil {
		t.Fatalf("connect as %s: %v", AdminUser, err)
	}
	for setting, want := range map[string]string{"shared_buffers": "128MB", "max_connections": "50", "work_mem": "2621kB", "maintenance_work_mem": "32MB"} {
		var got string
		if err := conn.QueryRow(ctx, "SHOW "+setting).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("%s = %s, want %s", setting, got, want)
		}
	}
	conn.Close(ctx)

	// Prepare again with the same request: success, same server process.
	pid := postmasterPID(t, d)
	if err := d.Prepare(ctx, prepareRequest(alicePassword)); err != nil {
		t.Fatalf("second Prepare: %v", err)
	}
	if got := postmasterPID(t, d); got != pid {
		t.Errorf("second Prepare restarted the server (pid %d → %d)", pid, got)
	}
	conn, err = connectTCP(ctx, d, "alice", alicePassword, "app")
	if err != nil {
		t.Fatalf("connect as alice after second Prepare: %v", err)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n); err != nil || n != 1 {
		t.Errorf("after second Prepare: %d rows, %v", n, err)
	}
	conn.Close(ctx)

	// An operator logging every statement must still not see passwords:
	// turn it on (postgresql.auto.conf wins over coffer.conf) and prove it
	// is on before Prepare sets a new password.
	admin, err := connectTCP(ctx, d, AdminUser, mustState(t, d).SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "ALTER SYSTEM SET log_statement = 'all'"); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		t.Fatal(err)
	}
	admin.Close(ctx)
	for deadline := time.Now().Add(10 * time.Second); ; {
		conn, err := connectTCP(ctx, d, "alice", alicePassword, "app")
		if err != nil {
			t.Fatal(err)
		}
		var v string
		err = conn.QueryRow(ctx, "SELECT current_setting('log_statement') || ' statement-logging-on'").Scan(&v)
		conn.Close(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(v, "all") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("log_statement did not become all")
		}
		time.Sleep(20 * time.Millisecond)
	}

	// Prepare with a new password resets it.
	if err := d.Prepare(ctx, prepareRequest("new password")); err != nil {
		t.Fatalf("Prepare with a new password: %v", err)
	}
	if conn, err := connectTCP(ctx, d, "alice", alicePassword, "app"); err == nil {
		conn.Close(ctx)
		t.Error("old password still accepted")
	}
	if conn, err := connectTCP(ctx, d, "alice", "new password", "app"); err != nil {
		t.Errorf("new password: %v", err)
	} else {
		conn.Close(ctx)
	}

	// Neither password, nor os_admin's, reached the server log.
	logText, err := os.ReadFile(filepath.Join(d.dataDir, logName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logText), "statement-logging-on") {
		t.Error("statement logging was not on: the check below proves nothing")
	}
	for _, secret := range []string{alicePassword, "new password", mustState(t, d).SuperPassword} {
		if strings.Contains(string(logText), secret) {
			t.Errorf("server log contains a password")
		}
	}

	// State: 0600, prepared, volume size.
	fi, err := os.Stat(filepath.Join(d.dataDir, stateName))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("state.json mode %04o, want 0600", fi.Mode().Perm())
	}
	if st := mustState(t, d); !st.Prepared || st.VolumeSizeGB != 2 || len(st.SuperPassword) < 32 {
		t.Errorf("state %+v", st)
	}

	used, total, err := d.VolumeUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if used < 1<<20 || total != 2<<30 {
		t.Errorf("VolumeUsage = %d, %d; want > 1 MiB, 2 GiB", used, total)
	}

	if err := d.Stop(ctx); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got := d.Status(ctx); got != protocol.ServiceShutdown {
		t.Errorf("Status after Stop = %q, want shutdown", got)
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatalf("second Stop: %v", err)
	}
	if err := d.EnsureRunning(ctx); err != nil {
		t.Fatalf("EnsureRunning: %v", err)
	}
	if got := d.Status(ctx); got != protocol.ServiceHealthy {
		t.Errorf("Status after EnsureRunning = %q, want healthy", got)
	}
	if err := d.EnsureRunning(ctx); err != nil {
		t.Fatalf("second EnsureRunning: %v", err)
	}

	// A server that died without removing its pid file: crashed, until
	// EnsureRunning (the agent's start-up) brings it back.
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	writeStalePID(t, d)
	if got := d.Status(ctx); got != protocol.ServiceCrashed {
		t.Errorf("Status with a stale pid file = %q, want crashed", got)
	}
	if err := d.EnsureRunning(ctx); err != nil {
		t.Fatalf("EnsureRunning after crash: %v", err)
	}
	if got := d.Status(ctx); got != protocol.ServiceHealthy {
		t.Errorf("Status after recovery = %q, want healthy", got)
	}
}

// writeStalePID leaves a postmaster.pid naming a process that has exited.
func writeStalePID(t *testing.T, d *Driver) {
	t.Helper()
	cmd := exec.Command("true")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d.dataDir, pgdataDir, "postmaster.pid")
	content := strconv.Itoa(cmd.Process.Pid) + "\n" + filepath.Join(d.dataDir, pgdataDir) + "\n"
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	// Owned like the data directory, as the server's own would be.
	fi, err := os.Stat(filepath.Join(d.dataDir, pgdataDir))
	if err != nil {
		t.Fatal(err)
	}
	owner := fi.Sys().(*syscall.Stat_t)
	if err := os.Lchown(path, int(owner.Uid), int(owner.Gid)); err != nil {
		t.Fatal(err)
	}
}

// A Prepare interrupted after initdb (state written, cluster initialised,
// server stopped, prepared not yet set) completes when run again.
func TestPrepareResumes(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	d := newDriver(t)

	// Reproduce the state of a crash right after initdb.
	if err := mkdirVolume(d.dataDir); err != nil {
		t.Fatal(err)
	}
	st := state{SuperPassword: randomPassword()}
	if err := d.saveState(st); err != nil {
		t.Fatal(err)
	}
	if err := d.cluster(st.SuperPassword).Init(ctx); err != nil {
		t.Fatal(err)
	}
	if got := d.Status(ctx); got != protocol.ServiceBuilding {
		t.Errorf("Status of a half-prepared volume = %q, want building", got)
	}
	// EnsureRunning leaves an unprepared volume alone.
	if err := d.EnsureRunning(ctx); err != nil {
		t.Fatal(err)
	}
	if d.cluster(st.SuperPassword).Running() {
		t.Fatal("EnsureRunning started an unprepared server")
	}

	req := protocol.PrepareRequest{FlavorRAMMB: 2048, VolumeSizeGB: 1, Users: []protocol.User{{Name: "bob", Password: "pw"}}}
	if err := d.Prepare(ctx, req); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	if got := mustState(t, d).SuperPassword; got != st.SuperPassword {
		t.Error("Prepare replaced the superuser password of an initialised cluster")
	}
	if got := d.Status(ctx); got != protocol.ServiceHealthy {
		t.Errorf("Status = %q, want healthy", got)
	}
	conn, err := connectTCP(ctx, d, "bob", "pw", "postgres")
	if err != nil {
		t.Fatalf("connect as bob: %v", err)
	}
	var sb string
	if err := conn.QueryRow(ctx, "SHOW shared_buffers").Scan(&sb); err != nil || sb != "512MB" {
		t.Errorf("shared_buffers = %q, %v; want 512MB", sb, err)
	}
	conn.Close(ctx)

	// A different flavor: the settings change and the server restarts.
	req.FlavorRAMMB = 1024
	if err := d.Prepare(ctx, req); err != nil {
		t.Fatalf("Prepare with 1 GiB: %v", err)
	}
	conn, err = connectTCP(ctx, d, "bob", "pw", "postgres")
	if err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SHOW shared_buffers").Scan(&sb); err != nil || sb != "256MB" {
		t.Errorf("shared_buffers = %q, %v; want 256MB", sb, err)
	}
	conn.Close(ctx)
}

func TestBeforePrepare(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t)
	if err := d.EnsureRunning(ctx); err != nil {
		t.Fatal(err)
	}
	if got := d.Status(ctx); got != protocol.ServiceNew {
		t.Errorf("Status = %q, want new", got)
	}
	if _, total, err := d.VolumeUsage(ctx); err != nil || total != 0 {
		t.Errorf("VolumeUsage: total %d, %v", total, err)
	}
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestPrepareRejects(t *testing.T) {
	t.Parallel()
	d := newDriver(t)
	const secret = "hunter2-secret"
	user := func(name string, dbs ...string) []protocol.User {
		return []protocol.User{{Name: name, Password: secret, Databases: dbs}}
	}
	for name, req := range map[string]protocol.PrepareRequest{
		"user postgres":     {Users: user("postgres")},
		"user os_admin":     {Users: user("os_admin")},
		"user OS_ADMIN":     {Users: user("OS_ADMIN")},
		"user pg_":          {Users: user("pg_monitor2")},
		"user public":       {Users: user("public")},
		"user quote":        {Users: user(`a"b`)},
		"user semicolon":    {Users: user("a;drop")},
		"user space":        {Users: user("a b")},
		"user empty":        {Users: user("")},
		"user too long":     {Users: user(strings.Repeat("u", 64))},
		"user twice":        {Users: append(user("dup"), user("dup")...)},
		"user no password":  {Users: []protocol.User{{Name: "nopw"}}},
		"user bad db":       {Users: user("ok", "x'y")},
		"user reserved db":  {Users: user("ok", "template1")},
		"db quote":          {Databases: []protocol.Database{{Name: `x"y`}}},
		"db leading digit":  {Databases: []protocol.Database{{Name: "1x"}}},
		"db postgres":       {Databases: []protocol.Database{{Name: "postgres"}}},
		"db template0":      {Databases: []protocol.Database{{Name: "template0"}}},
		"db bad charset":    {Databases: []protocol.Database{{Name: "x", CharacterSet: "UTF8'; DROP"}}},
		"db bad collate":    {Databases: []protocol.Database{{Name: "x", Collate: "en US"}}},
		"other datastore":   {Datastore: "mariadb"},
		"unicode user name": {Users: user("ünï")},
	} {
		err := d.Prepare(context.Background(), req)
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error contains the password: %v", name, err)
		}
	}
	// Rejected before touching the volume.
	if _, err := os.Stat(filepath.Join(d.dataDir, stateName)); !os.IsNotExist(err) {
		t.Errorf("a rejected Prepare wrote state: %v", err)
	}
}

func TestNewRejects(t *testing.T) {
	t.Parallel()
	for name, cfg := range map[string]protocol.AgentConfig{
		"no data dir":      {},
		"other datastore":  {Datastore: "redis", DataDir: "/tmp/x"},
		"long socket path": {DataDir: "/tmp/" + strings.Repeat("d", 100)},
		"bad port":         {DataDir: "/tmp/x", Port: 70000},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestServerSettings(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		ram  int
		want map[string]string
	}{
		{0, map[string]string{"max_connections": "100", "password_encryption": "scram-sha-256"}},
		{512, map[string]string{"max_connections": "50", "shared_buffers": "128MB", "effective_cache_size": "384MB", "maintenance_work_mem": "32MB", "work_mem": "2621kB"}},
		{4096, map[string]string{"max_connections": "100", "shared_buffers": "1024MB", "effective_cache_size": "3072MB", "maintenance_work_mem": "256MB", "work_mem": "10485kB"}},
		{65536, map[string]string{"maintenance_work_mem": "2048MB"}},
		{128, map[string]string{"work_mem": "1024kB"}},
	} {
		got := serverSettings(c.ram)
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("RAM %d MB: %s = %q, want %q", c.ram, k, got[k], v)
			}
		}
	}
}

func mustState(t testing.TB, d *Driver) state {
	t.Helper()
	st, err := d.loadState()
	if err != nil {
		t.Fatal(err)
	}
	return st
}
