package main_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
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
	parallelUnlessSet(4 * runtime.GOMAXPROCS(0))
	code := m.Run()
	keystonetest.Shutdown()
	os.RemoveAll(dir)
	os.Exit(code)
}

// parallelUnlessSet raises -parallel to n unless the command line set it.
// These tests mostly wait — for instances to boot, agents to report,
// servers to restart — so running only GOMAXPROCS of them at once (the
// default) leaves the machine idle; the CPU-bound part, the CLI processes,
// is capped on its own (cliSlots). Measured on 2 CPUs: ~240 s for the
// package with the default, 160-190 s with 8.
func parallelUnlessSet(n int) {
	flag.Parse()
	set := false
	flag.Visit(func(f *flag.Flag) { set = set || f.Name == "test.parallel" })
	if !set {
		if err := flag.Set("test.parallel", strconv.Itoa(n)); err != nil {
			panic(err)
		}
	}
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

// takenPrefixes are the loopback /16s this process's all-in-ones use: the
// tests run in parallel, and two all-in-ones on one /16 would hand out the
// same instance addresses.
var takenPrefixes sync.Map

// addressPrefix picks a loopback /16 (127.100-149) no other all-in-one of
// this process has; other processes pick at random. 127.150-199 are the
// ranges of the tests that pick their own (backups 150-164, copies
// 165-169, schedules, legacy CLIs, modules).
func addressPrefix() string {
	for {
		n := 100 + rand.IntN(50)
		if _, taken := takenPrefixes.LoadOrStore(n, true); !taken {
			return fmt.Sprintf("127.%d", n)
		}
	}
}

// freeAddr is a loopback address with a port nobody listens on, chosen
// below the kernel's ephemeral range: a port from that range (":0") can be
// taken as the local port of any outgoing connection on this machine
// between this check and the all-in-one binding it (CI saw "bind: address
// already in use"), one below it only by another listener.
func freeAddr(t testing.TB) string {
	t.Helper()
	low := 32768 // Linux's default ip_local_port_range start
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				low = n
			}
		}
	}
	// 16000 and up: clear of the test OpenStack's 15200-15999.
	for range 1000 {
		if low <= 16000 {
			break
		}
		port := 16000 + rand.IntN(low-16000)
		if _, taken := takenPorts.LoadOrStore(port, true); taken {
			continue
		}
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			continue
		}
		ln.Close()
		return ln.Addr().String()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// takenPorts are the ports freeAddr gave out in this process.
var takenPorts sync.Map

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
	c := &coffer{dataDir: dir, log: &syncBuffer{}}
	prefix := addressPrefix()
	setAddrs := func() {
		listen := freeAddr(t)
		c.url = "http://" + listen
		c.env = append(os.Environ(),
			"COFFER_DATA_DIR="+dir,
			"COFFER_LISTEN="+listen,
			"COFFER_AGENT_LISTEN="+freeAddr(t),
			// A /16 of its own so parallel test processes never share addresses.
			"COFFER_LOCAL_ADDRESS_PREFIX="+prefix,
			"COFFER_LOG_LEVEL=debug",
			"COFFER_RATE_LIMITS=off",
		)
		c.env = append(c.env, extraEnv...)
	}
	setAddrs()
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
	// Another program can still bind a port between freeAddr's check and
	// the all-in-one's listen: new ports, and again.
	for attempt := 1; ; attempt++ {
		err := c.tryStart()
		if err == nil {
			break
		}
		if attempt < 3 && strings.Contains(c.log.String(), "address already in use") {
			t.Logf("coffer did not start (%v), again on other ports:\n%s", err, tail(c.log.String(), 2000))
			setAddrs()
			continue
		}
		t.Fatalf("coffer did not start: %v\n%s", err, c.log.String())
	}
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
	if err := c.tryStart(); err != nil {
		t.Fatalf("coffer did not start: %v\n%s", err, c.log.String())
	}
}

// tryStart runs `coffer run` and waits until it serves, or has exited.
func (c *coffer) tryStart() error {
	c.cmd = exec.Command(binary, "run")
	c.cmd.Env = c.env
	stdout, _ := c.cmd.StdoutPipe()
	c.cmd.Stderr = c.log
	if err := c.cmd.Start(); err != nil {
		return err
	}
	ready, exited := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(exited)
		sc := bufio.NewScanner(stdout)
		serving := false
		for sc.Scan() {
			if strings.HasPrefix(sc.Text(), "Coffer is running") && !serving {
				close(ready)
				serving = true
			}
		}
	}()
	select {
	case <-ready:
		return nil
	case <-exited:
		return fmt.Errorf("coffer exited: %v", c.cmd.Wait())
	case <-time.After(90 * time.Second):
		return errors.New("not serving after 90 s")
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
	t.Parallel()
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

// The real CLIs drive the all-in-one through Keystone's catalog (cli_test.go):
// instance create, list, show and delete with `openstack database`, and —
// while the instance builds, all at once — the catalog reads every user
// makes, with both CLIs: flavors, datastores and their versions, limits.
func TestOpenStackCLI(t *testing.T) {
	t.Parallel()
	c := startKeystoneCoffer(t)
	demo, admin := c.demo, c.admin
	var created map[string]any
	c.oscJSON(t, demo, &created, "database", "instance", "create", "cli-db", "--flavor", "1", "--size", "1",
		"--datastore", "postgresql", "--databases", "inventory", "--users", "clerk:clerk-pass")
	id, _ := created["id"].(string)
	if id == "" || created["name"] != "cli-db" {
		t.Fatalf("instance create = %v", created)
	}

	// The datastore version the catalog reads are checked against.
	code, body := c.api(t, "GET", "/datastores/postgresql/versions", c.creds.MemberToken, "")
	versions, _ := body["versions"].([]any)
	if code != 200 || len(versions) != 1 {
		t.Fatalf("GET versions: %d %v", code, body)
	}
	verID, verName := versions[0].(map[string]any)["id"].(string), versions[0].(map[string]any)["name"].(string)
	datastoreNames := func(rows []map[string]any, key string) []string {
		names := column(rows, key)
		slices.Sort(names)
		return names
	}
	together(t, "catalog reads",
		check{"openstack database flavor list", func(t testing.TB) {
			var rows []map[string]any
			c.oscJSON(t, demo, &rows, "database", "flavor", "list")
			var want, got []string
			for _, f := range seed.Flavors {
				want = append(want, fmt.Sprintf("%s %s %d %d", f.ID, f.Name, f.RAMMB, f.VCPUs))
			}
			for _, r := range rows {
				got = append(got, fmt.Sprintf("%v %v %v %v", r["ID"], r["Name"], r["RAM"], r["vCPUs"]))
			}
			if !slices.Equal(got, want) {
				t.Errorf("flavor list = %v, want %v", got, want)
			}
		}},
		check{"openstack database flavor show", func(t testing.TB) {
			var f map[string]any
			c.oscJSON(t, demo, &f, "database", "flavor", "show", "m1.small") // by name: the CLI resolves it
			if f["id"] != 2.0 || f["name"] != "m1.small" || f["ram"] != 1024.0 || f["vcpus"] != 1.0 {
				t.Errorf("flavor show m1.small = %v", f)
			}
			c.oscFails(t, demo, "No flavor with a name or ID of 'm9.huge' exists", "database", "flavor", "show", "m9.huge")
		}},
		check{"openstack datastore list", func(t testing.TB) {
			// Members see the datastores with an active version; the
			// admin sees every one (MariaDB and Redis have no driver yet).
			var rows []map[string]any
			c.oscJSON(t, demo, &rows, "datastore", "list")
			if got := datastoreNames(rows, "Name"); !slices.Equal(got, []string{"postgresql"}) {
				t.Errorf("datastore list as a member = %v", rows)
			}
			c.oscJSON(t, admin, &rows, "datastore", "list")
			if got := datastoreNames(rows, "Name"); !slices.Equal(got, []string{"mariadb", "postgresql", "redis"}) {
				t.Errorf("datastore list as admin = %v", rows)
			}
		}},
		check{"openstack datastore show", func(t testing.TB) {
			var ds map[string]any
			c.oscJSON(t, demo, &ds, "datastore", "show", "postgresql")
			if ds["name"] != "postgresql" || ds["default_version"] != verName || ds["versions (id)"] != verName+" ("+verID+")" {
				t.Errorf("datastore show postgresql = %v", ds)
			}
		}},
		check{"trove flavor-list, flavor-show", func(t testing.TB) {
			var rows []map[string]any
			c.troveJSON(t, demo, &rows, "flavor-list")
			if got := column(rows, "str_id"); !slices.Equal(got, []string{"1", "2", "3", "4"}) {
				t.Errorf("trove flavor-list = %v", rows)
			}
			var f map[string]any
			c.troveJSON(t, demo, &f, "flavor-show", "3")
			if f["name"] != "m1.medium" || f["ram"] != 2048.0 || f["vcpus"] != 2.0 {
				t.Errorf("trove flavor-show 3 = %v", f)
			}
		}},
		check{"trove datastore-list, datastore-version-show", func(t testing.TB) {
			var rows []map[string]any
			c.troveJSON(t, demo, &rows, "datastore-list")
			if got := column(rows, "name"); !slices.Equal(got, []string{"postgresql"}) {
				t.Errorf("trove datastore-list = %v", rows)
			}
			var v map[string]any
			c.troveJSON(t, demo, &v, "datastore-version-show", verName, "--datastore", "postgresql")
			if v["id"] != verID || v["name"] != verName {
				t.Errorf("trove datastore-version-show = %v", v)
			}
		}},
		check{"trove limit-list", func(t testing.TB) {
			// Two JSON documents: the absolute limits (the API's first
			// element), then the rate limits (none: they are off here).
			out := c.run(t, demo, "trove", "--json", "limit-list")
			dec := json.NewDecoder(strings.NewReader(out))
			var absolute map[string]any
			var rates []any
			if err := dec.Decode(&absolute); err != nil {
				t.Fatalf("trove limit-list: %v\n%s", err, out)
			}
			if err := dec.Decode(&rates); err != nil {
				t.Fatalf("trove limit-list: %v\n%s", err, out)
			}
			if absolute["verb"] != "ABSOLUTE" || absolute["max_instances"] != 10.0 || len(rates) != 0 {
				t.Errorf("trove limit-list = %v %v", absolute, rates)
			}
		}},
	)

	inst := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	var list []map[string]any
	c.oscJSON(t, demo, &list, "database", "instance", "list")
	if len(list) != 1 || list[0]["ID"] != id || list[0]["Status"] != "ACTIVE" {
		t.Fatalf("instance list = %v", list)
	}
	var shown map[string]any
	c.oscJSON(t, demo, &shown, "database", "instance", "show", "cli-db") // by name: the CLI resolves it
	if shown["id"] != id || shown["status"] != "ACTIVE" || shown["flavor"] != "1" || shown["datastore"] != "postgresql" {
		t.Errorf("instance show = %v", shown)
	}
	// The region the CLI found the endpoint in is the one the API reports.
	if shown["region"] != c.region {
		t.Errorf("instance show region %v, catalog region %s", shown["region"], c.region)
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
	if out, err := c.try(demo, "openstack", "database", "instance", "show", "no-such-instance"); err == nil {
		t.Errorf("show of a missing instance succeeded: %s", out)
	}
	c.osc(t, demo, "database", "instance", "delete", id)
	c.waitStatus(t, id, "", time.Minute)
	c.oscJSON(t, demo, &list, "database", "instance", "list")
	if len(list) != 0 {
		t.Errorf("list after delete = %v", list)
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
