package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/internal/seed"
)

// coffer is a running all-in-one process (the real binary, `coffer run`),
// with everything under its own data directory, its own ports and its own
// loopback /16 for instances.
type coffer struct {
	cmd     *exec.Cmd
	env     []string
	dataDir string
	url     string
	creds   seed.Credentials
	log     *syncBuffer
}

var binary string // built once by TestMain

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "coffer-bin")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "coffer")
	build := exec.Command("go", "build", "-o", binary, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build coffer:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func requirePostgres(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("pg_ctl"); err == nil {
		return
	}
	if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/initdb"); len(m) > 0 {
		return
	}
	if os.Getenv("CI") != "" {
		t.Fatal("PostgreSQL server programs not installed (CI must install them: go tool task deps:test)")
	}
	t.Skip("SKIPPING: PostgreSQL server programs not installed; run `go tool task deps:test`")
}

func freeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startCoffer starts an all-in-one; extraEnv (KEY=VALUE) is added to (and
// overrides) its environment. Trove's rate limits are off unless extraEnv
// sets COFFER_RATE_LIMITS: tests poll far faster than 200 GETs a minute.
func startCoffer(t testing.TB, extraEnv ...string) *coffer {
	t.Helper()
	requirePostgres(t)
	dir, err := os.MkdirTemp("", "cfe")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	listen := freeAddr(t)
	c := &coffer{dataDir: dir, log: &syncBuffer{}, url: "http://" + listen}
	c.env = append(os.Environ(),
		"COFFER_DATA_DIR="+dir,
		"COFFER_LISTEN="+listen,
		"COFFER_AGENT_LISTEN="+freeAddr(t),
		// A /16 of its own so parallel test processes never share addresses.
		fmt.Sprintf("COFFER_LOCAL_ADDRESS_PREFIX=127.%d", 100+rand.IntN(100)),
		"COFFER_LOG_LEVEL=debug",
		"COFFER_RATE_LIMITS=off",
	)
	c.env = append(c.env, extraEnv...)
	t.Cleanup(func() {
		c.stop(t)
		if t.Failed() {
			t.Logf("coffer log:\n%s", tail(c.log.String(), 12000))
		}
		// Instances left by a failed test: remove their processes too.
		_ = exec.Command("pkill", "-f", c.dataDir).Run()
		time.Sleep(200 * time.Millisecond)
		_ = os.RemoveAll(c.dataDir)
	})
	c.start(t)
	b, err := os.ReadFile(filepath.Join(dir, "credentials.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &c.creds); err != nil {
		t.Fatal(err)
	}
	return c
}

// start runs `coffer run` and waits until it serves.
func (c *coffer) start(t testing.TB) {
	t.Helper()
	c.cmd = exec.Command(binary, "run")
	c.cmd.Env = c.env
	stdout, _ := c.cmd.StdoutPipe()
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan struct{})
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "Coffer is running") {
				close(ready)
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(90 * time.Second):
		t.Fatalf("coffer did not start:\n%s", c.log.String())
	}
}

// stop ends the process with SIGTERM, as an operator or systemd would.
func (c *coffer) stop(t testing.TB) {
	t.Helper()
	if c.cmd == nil || c.cmd.ProcessState != nil {
		return
	}
	_ = c.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error, 1)
	go func() { done <- c.cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("coffer exited with %v", err)
		}
	case <-time.After(60 * time.Second):
		_ = c.cmd.Process.Kill()
		t.Errorf("coffer did not stop on SIGTERM")
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

func (c *coffer) api(t testing.TB, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, c.url+"/v1.0/"+c.creds.ProjectID+path, strings.NewReader(body))
	req.Header.Set("X-Auth-Token", token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d %q", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, out
}

// waitStatus polls the instance until its status is want (or fails).
func (c *coffer) waitStatus(t testing.TB, id, want string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		code, body := c.api(t, "GET", "/instances/"+id, c.creds.MemberToken, "")
		if code == 404 && want == "" {
			return nil
		}
		if code == 200 {
			last = body["instance"].(map[string]any)
			if last["status"] == want {
				return last
			}
			if last["status"] == "ERROR" {
				t.Fatalf("instance %s went to ERROR: %v", id, last)
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("instance %s not %q within %s; last: %v", id, want, timeout, last)
	return nil
}

// controlDB connects to the all-in-one's embedded control-plane database.
func (c *coffer) controlDB(t testing.TB) *pgx.Conn {
	t.Helper()
	pw, err := os.ReadFile(filepath.Join(c.dataDir, "controlplane", "superuser-password"))
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(context.Background(), fmt.Sprintf("host=%s port=5439 user=coffer password=%s dbname=postgres",
		filepath.Join(c.dataDir, "controlplane", "run"), strings.TrimSpace(string(pw))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// processesUnder lists processes whose cwd or command line is inside dir.
func processesUnder(dir string) []string {
	var found []string
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cwd, _ := os.Readlink(filepath.Join("/proc", e.Name(), "cwd"))
		cmdline, _ := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if strings.HasPrefix(cwd, dir) || bytes.Contains(cmdline, []byte(dir)) {
			found = append(found, fmt.Sprintf("%d %s", pid, bytes.ReplaceAll(cmdline, []byte{0}, []byte{' '})))
		}
	}
	return found
}

func TestEndToEndPostgreSQLInstance(t *testing.T) {
	c := startCoffer(t)
	ctx := context.Background()
	code, body := c.api(t, "POST", "/instances", c.creds.MemberToken, `{"instance": {
		"name": "shop", "flavorRef": "1", "volume": {"size": 1},
		"datastore": {"type": "postgresql"},
		"databases": [{"name": "orders"}],
		"users": [{"name": "app", "password": "s3cret-pass", "databases": [{"name": "orders"}]}]}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	inst := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	if inst["operating_status"] != "HEALTHY" {
		t.Errorf("operating_status = %v", inst["operating_status"])
	}
	ip := inst["ip"].([]any)[0].(string)
	if !strings.HasPrefix(ip, "127.") {
		t.Fatalf("ip = %v", ip)
	}
	// The agent reports right after a command, not only on its interval.
	deadline := time.Now().Add(5 * time.Second)
	for {
		_, body := c.api(t, "GET", "/instances/"+id, c.creds.MemberToken, "")
		if used, _ := body["instance"].(map[string]any)["volume"].(map[string]any)["used"].(float64); used > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("volume.used not reported after prepare: %v", body)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The created user reaches the created database on the instance's own
	// address and standard port, and can run SQL there.
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=app password=s3cret-pass dbname=orders sslmode=disable", ip))
	if err != nil {
		t.Fatalf("connect as app: %v", err)
	}
	var got string
	if _, err := conn.Exec(ctx, "CREATE TABLE t (x text); INSERT INTO t VALUES ('hello')"); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SELECT x FROM t").Scan(&got); err != nil || got != "hello" {
		t.Fatalf("select: %q %v", got, err)
	}
	conn.Close(ctx)
	queryAsApp := func(ctx context.Context, ip string) error {
		conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=app password=s3cret-pass dbname=orders sslmode=disable", ip))
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		return conn.QueryRow(ctx, "SELECT x FROM t").Scan(&got)
	}
	if _, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=app password=wrong dbname=orders sslmode=disable", ip)); err == nil {
		t.Error("wrong password accepted")
	}

	// Instances outlive the control plane: stop it, the database still
	// serves; start it again, the agent reconnects and reports.
	c.stop(t)
	if err := queryAsApp(ctx, ip); err != nil {
		t.Fatalf("instance unreachable while the control plane is down: %v", err)
	}
	var before time.Time
	if err := json.Unmarshal([]byte(`"`+inst["service_status_updated"].(string)+`Z"`), &before); err != nil {
		t.Fatal(err)
	}
	c.start(t)
	deadline = time.Now().Add(60 * time.Second)
	for {
		_, body := c.api(t, "GET", "/instances/"+id, c.creds.MemberToken, "")
		i := body["instance"].(map[string]any)
		var after time.Time
		_ = json.Unmarshal([]byte(`"`+i["service_status_updated"].(string)+`Z"`), &after)
		if i["status"] == "ACTIVE" && i["operating_status"] == "HEALTHY" && after.After(before) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agent did not report after the control plane restarted: %v", i)
		}
		time.Sleep(200 * time.Millisecond)
	}

	// The prepare command's secrets are gone from the control plane.
	db := c.controlDB(t)
	var secretRows int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM agent_command WHERE payload::text LIKE '%s3cret-pass%'").Scan(&secretRows); err != nil {
		t.Fatal(err)
	}
	if secretRows != 0 {
		t.Errorf("%d commands still hold the user's password", secretRows)
	}
	if err := db.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE args::text LIKE '%s3cret-pass%'").Scan(&secretRows); err != nil {
		t.Fatal(err)
	}
	if secretRows != 0 {
		t.Errorf("%d jobs hold the user's password", secretRows)
	}

	// Delete leaves no process, directory or live row behind.
	instDir := filepath.Join(c.dataDir, "instances", id)
	if _, err := os.Stat(instDir); err != nil {
		t.Fatalf("instance directory: %v", err)
	}
	if code, _ := c.api(t, "DELETE", "/instances/"+id, c.creds.MemberToken, ""); code != 202 {
		t.Fatalf("delete: %d", code)
	}
	c.waitStatus(t, id, "", time.Minute)
	if _, err := os.Stat(instDir); !os.IsNotExist(err) {
		t.Errorf("instance directory still there: %v", err)
	}
	if procs := processesUnder(instDir); len(procs) > 0 {
		t.Errorf("processes left behind: %v", procs)
	}
	var task string
	var deleted *time.Time
	var tokenHash []byte
	if err := db.QueryRow(ctx, "SELECT task, deleted_at, agent_token_hash FROM instance WHERE id = $1", id).Scan(&task, &deleted, &tokenHash); err != nil {
		t.Fatal(err)
	}
	if deleted == nil || task != "NONE" || tokenHash != nil {
		t.Errorf("row after delete: task %s deleted_at %v credential %v", task, deleted, tokenHash != nil)
	}
	var open int
	if err := db.QueryRow(ctx, "SELECT count(*) FROM agent_command WHERE instance_id = $1 AND state IN ('pending','leased')", id).Scan(&open); err != nil {
		t.Fatal(err)
	}
	if open != 0 {
		t.Errorf("%d commands still open", open)
	}
	var kinds []string
	rows, _ := db.Query(ctx, "SELECT kind FROM event WHERE resource_id = $1 ORDER BY id", id)
	kinds, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(kinds, ",") != "instance.created,instance.active,instance.deleting,instance.deleted" {
		t.Errorf("events = %v", kinds)
	}
}

// The real OpenStack client (Debian's python3-openstackclient with the
// troveclient plugin) drives the all-in-one with a static token.
func TestOpenStackCLI(t *testing.T) {
	if _, err := exec.LookPath("openstack"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openstack CLI not installed (CI must install python3-openstackclient python3-troveclient)")
		}
		t.Skip("SKIPPING: openstack CLI not installed; run `go tool task deps:test`")
	}
	c := startCoffer(t)
	osc := func(args ...string) (string, error) {
		cmd := exec.Command("openstack", append([]string{"database"}, args...)...)
		env := []string{}
		for _, e := range os.Environ() {
			if !strings.HasPrefix(e, "OS_") {
				env = append(env, e)
			}
		}
		cmd.Env = append(env, "OS_AUTH_TYPE=admin_token", "OS_ENDPOINT="+c.url+"/v1.0/"+c.creds.ProjectID, "OS_TOKEN="+c.creds.MemberToken)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	jsonOut := func(args ...string) map[string]any {
		out, err := osc(append(args, "-f", "json")...)
		if err != nil {
			t.Fatalf("openstack database %v: %v\n%s", args, err, out)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("openstack database %v: not JSON: %s", args, out)
		}
		return m
	}
	created := jsonOut("instance", "create", "cli-db", "--flavor", "1", "--size", "1",
		"--datastore", "postgresql", "--databases", "inventory", "--users", "clerk:clerk-pass")
	id, _ := created["id"].(string)
	if id == "" || created["name"] != "cli-db" {
		t.Fatalf("instance create = %v", created)
	}
	inst := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)

	out, err := osc("instance", "list", "-f", "json")
	if err != nil {
		t.Fatalf("instance list: %v\n%s", err, out)
	}
	var list []map[string]any
	if err := json.Unmarshal([]byte(out), &list); err != nil || len(list) != 1 || list[0]["ID"] != id || list[0]["Status"] != "ACTIVE" {
		t.Fatalf("instance list = %s (%v)", out, err)
	}
	shown := jsonOut("instance", "show", "cli-db") // by name: the CLI resolves it
	if shown["id"] != id || shown["status"] != "ACTIVE" || shown["flavor"] != "1" || shown["datastore"] != "postgresql" {
		t.Errorf("instance show = %v", shown)
	}
	if ip, _ := shown["ip"].(string); !strings.Contains(ip, inst["ip"].([]any)[0].(string)) {
		t.Errorf("show ip %v, API says %v", shown["ip"], inst["ip"])
	}
	// The user the CLI asked for exists: it can log in to the instance.
	conn, err := pgx.Connect(context.Background(), fmt.Sprintf("host=%s port=5432 user=clerk password=clerk-pass dbname=inventory sslmode=disable", inst["ip"].([]any)[0]))
	if err != nil {
		t.Errorf("connect as the CLI's user: %v", err)
	} else {
		conn.Close(context.Background())
	}
	if out, err := osc("instance", "show", "no-such-instance"); err == nil {
		t.Errorf("show of a missing instance succeeded: %s", out)
	}
	if out, err := osc("instance", "delete", id); err != nil {
		t.Fatalf("instance delete: %v\n%s", err, out)
	}
	c.waitStatus(t, id, "", time.Minute)
	out, err = osc("instance", "list", "-f", "json")
	if err != nil || strings.TrimSpace(out) != "[]" {
		t.Errorf("list after delete = %s %v", out, err)
	}
}

// syncBuffer is the process log, written by exec and read by the test.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// BenchmarkCreateToActive measures, on the all-in-one, the time from POST
// /instances to the instance reading ACTIVE (server created, agent started,
// PostgreSQL initialised, configured, started, database and user created),
// over 6 sequential creates. Run with -benchtime 1x; reports p50 and max.
func BenchmarkCreateToActive(b *testing.B) {
	c := startCoffer(b)
	const n = 6
	for range b.N {
		var times []time.Duration
		var ids []string
		for i := range n {
			start := time.Now()
			code, body := c.api(b, "POST", "/instances", c.creds.MemberToken, fmt.Sprintf(`{"instance": {
				"name": "bench-%d", "flavorRef": "1", "volume": {"size": 1},
				"databases": [{"name": "d"}], "users": [{"name": "u", "password": "p-%d", "databases": [{"name": "d"}]}]}}`, i, i))
			if code != 200 {
				b.Fatalf("create: %d %v", code, body)
			}
			id := body["instance"].(map[string]any)["id"].(string)
			for {
				_, body := c.api(b, "GET", "/instances/"+id, c.creds.MemberToken, "")
				if s := body["instance"].(map[string]any)["status"]; s == "ACTIVE" {
					break
				} else if s == "ERROR" {
					b.Fatalf("instance failed: %v", body)
				}
				time.Sleep(20 * time.Millisecond)
			}
			times = append(times, time.Since(start))
			ids = append(ids, id)
		}
		for _, id := range ids {
			c.api(b, "DELETE", "/instances/"+id, c.creds.MemberToken, "")
		}
		for _, id := range ids {
			c.waitStatus(b, id, "", time.Minute)
		}
		slices.Sort(times)
		b.ReportMetric(times[n/2].Seconds(), "p50-s")
		b.ReportMetric(times[n-1].Seconds(), "max-s")
		b.Logf("POST→ACTIVE: %v", times)
	}
}
