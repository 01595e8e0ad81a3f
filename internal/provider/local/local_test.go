package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/provider"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

// noRaceExitSleep spares the fake processes the second a race-enabled
// binary otherwise sleeps before exiting.
const noRaceExitSleep = "GORACE=atexit_sleep_ms=0"

// testPrefix hands each test its own loopback /16 out of 127.200–127.249,
// in random order: probing ports in one test never sees another's
// listeners, nor, most likely, those of a concurrent run of this package.
// (They come round again only after 50 tests, as with -count.) Other
// packages keep out of this range: the all-in-one e2e tests use
// 127.100–199, the jobs tests 127.99, the OpenStack e2e 127.250–254.
func testPrefix() string {
	testPrefixes.Lock()
	defer testPrefixes.Unlock()
	o := testPrefixes.octets[testPrefixes.next%len(testPrefixes.octets)] + 200
	testPrefixes.next++
	return "127." + strconv.Itoa(o)
}

var testPrefixes = struct {
	sync.Mutex
	octets []int
	next   int
}{octets: rand.Perm(50)}

func newProvider(t *testing.T, env ...string) *Provider {
	t.Helper()
	prefix := testPrefix()
	p, err := New(Config{
		Root:          filepath.Join(t.TempDir(), "instances"),
		AgentCommand:  []string{os.Args[0]},
		Env:           append([]string{"COFFER_FAKE_AGENT=1", noRaceExitSleep}, env...),
		AddressPrefix: prefix,
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// create creates a server and deletes it when the test ends, whatever
// happens in between, so that no test leaves processes behind.
func create(t *testing.T, p *Provider, spec provider.ServerSpec) provider.Server {
	t.Helper()
	t.Cleanup(func() {
		if err := p.DeleteServer(context.Background(), spec.InstanceID); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	srv, err := p.CreateServer(t.Context(), spec)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}

// alive reports whether pid is a running process (a zombie is not).
func alive(pid int) bool {
	_, state, _, err := stat(pid)
	return err == nil && state != 'Z'
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func readPIDFile(t *testing.T, path string) int {
	t.Helper()
	var pid int
	eventually(t, path, func() bool { pid = readPID(path); return pid != 0 })
	return pid
}

func starts(t *testing.T, dir string) int {
	t.Helper()
	var n int
	eventually(t, "agent start", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "starts"))
		n = strings.Count(string(b), "\n")
		return n > 0
	})
	return n
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := newProvider(t)
	first := p.candidate(2)
	const id = "4e6f1a0c-0000-4000-8000-000000000001"

	srv := create(t, p, testSpec(id, "postgresql", "one"))
	want := provider.Server{ID: id, Status: provider.StatusActive, Address: first, Port: 5432}
	if srv != want {
		t.Fatalf("CreateServer = %+v, want %+v", srv, want)
	}

	dir := filepath.Join(p.root, id)
	var cfg protocol.AgentConfig
	if err := json.Unmarshal([]byte(readFile(t, filepath.Join(dir, "agent.json"))), &cfg); err != nil {
		t.Fatal(err)
	}
	wantCfg := protocol.AgentConfig{
		APIURL: "https://127.0.0.1:8780", InstanceID: id, Token: id + ".one", Datastore: "postgresql",
		DataDir: filepath.Join(dir, "volume"), ListenAddress: first, Port: 5432,
		PIDFile: filepath.Join(dir, "agent.pid"),
	}
	if cfg != wantCfg {
		t.Errorf("agent.json = %+v, want %+v", cfg, wantCfg)
	}
	for path, want := range map[string]fs.FileMode{
		p.root: 0o755, dir: 0o755, filepath.Join(dir, "volume"): 0o755,
		filepath.Join(dir, "agent.json"): 0o600,
	} {
		if got := mode(t, path); got != want {
			t.Errorf("mode of %s = %v, want %v", path, got, want)
		}
	}
	if got := readFile(t, filepath.Join(dir, "address")); got != first {
		t.Errorf("address file = %q", got)
	}
	if got := readFile(t, p.claimPath(first)); got != id {
		t.Errorf("address claim = %q, want %q", got, id)
	}

	got, err := p.GetServer(ctx, id)
	if err != nil || got != want {
		t.Fatalf("GetServer = %+v, %v; want %+v", got, err, want)
	}

	agent := readPIDFile(t, filepath.Join(dir, "agent.pid"))
	datastore := readPIDFile(t, filepath.Join(dir, "volume", "datastore0.pid"))
	if !alive(agent) || !alive(datastore) {
		t.Fatalf("agent %d or datastore %d not running", agent, datastore)
	}

	start := time.Now()
	if err := p.DeleteServer(ctx, id); err != nil {
		t.Fatal(err)
	}
	t.Logf("DeleteServer took %v", time.Since(start))
	if alive(agent) {
		t.Errorf("agent %d survived DeleteServer", agent)
	}
	if alive(datastore) {
		t.Errorf("datastore %d survived DeleteServer", datastore)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("directory left behind: %v", err)
	}
	if _, err := os.Stat(p.claimPath(first)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("address claim left behind: %v", err)
	}
	if _, err := p.GetServer(ctx, id); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetServer after delete: %v, want ErrNotFound", err)
	}
	if err := p.DeleteServer(ctx, id); err != nil {
		t.Errorf("second DeleteServer: %v", err)
	}
}

func TestCreateIsIdempotent(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := newProvider(t)
	const id = "inst-idempotent"
	dir := filepath.Join(p.root, id)

	// Concurrent calls, as from two workers running the same job.
	var wg sync.WaitGroup
	servers := make([]provider.Server, 4)
	errs := make([]error, len(servers))
	t.Cleanup(func() { p.DeleteServer(context.Background(), id) })
	for i := range servers {
		wg.Go(func() { servers[i], errs[i] = p.CreateServer(ctx, testSpec(id, "mariadb", "one")) })
	}
	wg.Wait()
	for i := range servers {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if servers[i] != servers[0] || servers[i].Status != provider.StatusActive || servers[i].Port != 3306 {
			t.Errorf("CreateServer #%d = %+v, #0 = %+v", i, servers[i], servers[0])
		}
	}
	agent := readPIDFile(t, filepath.Join(dir, "agent.pid"))
	if n := starts(t, dir); n != 1 {
		t.Fatalf("agent started %d times, want 1", n)
	}

	// A retried job with a rotated credential: the running agent reloads.
	srv, err := p.CreateServer(ctx, testSpec(id, "mariadb", "two"))
	if err != nil {
		t.Fatal(err)
	}
	if srv != servers[0] {
		t.Errorf("CreateServer after rotation = %+v, want %+v", srv, servers[0])
	}
	eventually(t, "agent to reload the new token", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "hup"))
		return string(b) == id+".two"
	})
	if n := starts(t, dir); n != 1 {
		t.Errorf("agent started %d times, want 1", n)
	}
	if pid := readPID(filepath.Join(dir, "agent.pid")); pid != agent || !alive(agent) {
		t.Errorf("agent pid %d (alive %v), want %d", pid, alive(agent), agent)
	}
}

func TestAddresses(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := newProvider(t)
	addr := p.candidate

	// Something outside Coffer listens on the first address.
	l, err := net.Listen("tcp", addr(2)+":6379")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	a := create(t, p, testSpec("inst-a", "redis", "x"))
	b := create(t, p, testSpec("inst-b", "redis", "x"))
	if a.Address != addr(3) || b.Address != addr(4) {
		t.Fatalf("addresses %s, %s; want %s, %s", a.Address, b.Address, addr(3), addr(4))
	}
	if again, err := p.CreateServer(ctx, testSpec("inst-b", "redis", "x")); err != nil || again.Address != b.Address {
		t.Fatalf("CreateServer again = %+v, %v; want address %s", again, err, b.Address)
	}

	// A released address is handed out again.
	if err := p.DeleteServer(ctx, "inst-a"); err != nil {
		t.Fatal(err)
	}
	c := create(t, p, testSpec("inst-c", "redis", "x"))
	if c.Address != addr(3) {
		t.Errorf("address after release = %s, want %s", c.Address, addr(3))
	}

	// A claim left by an attempt that crashed before recording the
	// address is picked up again rather than leaked.
	if ok, err := p.claim(addr(9), "inst-d"); !ok || err != nil {
		t.Fatalf("claim = %v, %v", ok, err)
	}
	if d := create(t, p, testSpec("inst-d", "redis", "x")); d.Address != addr(9) {
		t.Errorf("address with an earlier claim = %s, want %s", d.Address, addr(9))
	}
}

func TestGetServerShutdown(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := newProvider(t)
	const id = "inst-shutdown"
	dir := filepath.Join(p.root, id)
	create(t, p, testSpec(id, "postgresql", "x"))
	agent := readPIDFile(t, filepath.Join(dir, "agent.pid"))
	// Killed once it is up: killed while starting the datastore, its
	// child would briefly show its arguments and pass for the agent.
	readPIDFile(t, filepath.Join(dir, "volume", "datastore0.pid"))

	if err := syscall.Kill(agent, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	eventually(t, "agent to die", func() bool { return !alive(agent) })

	// The pid is reused by an unrelated process: neither taken for the
	// agent nor killed by DeleteServer.
	other := exec.Command("sleep", "3600")
	if err := other.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Process.Kill(); other.Wait() })
	if err := atomicfile.Write(filepath.Join(dir, "agent.pid"), []byte(strconv.Itoa(other.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}

	srv, err := p.GetServer(ctx, id)
	if err != nil || srv.Status != provider.StatusShutdown || srv.Address != p.candidate(2) {
		t.Fatalf("GetServer = %+v, %v; want SHUTDOWN at %s", srv, err, p.candidate(2))
	}
	// CreateServer again brings the agent back.
	if srv, err := p.CreateServer(ctx, testSpec(id, "postgresql", "x")); err != nil || srv.Status != provider.StatusActive {
		t.Fatalf("CreateServer = %+v, %v", srv, err)
	}
	eventually(t, "second agent start", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "starts"))
		return strings.Count(string(b), "\n") == 2
	})
	if err := p.DeleteServer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if !alive(other.Process.Pid) {
		t.Error("DeleteServer killed an unrelated process")
	}
}

// TestAgentOutlivesWorker creates the server from another process that
// exits at once: the agent must keep running and be found by a new
// provider.
func TestAgentOutlivesWorker(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	root := filepath.Join(t.TempDir(), "instances")
	prefix := testPrefix()
	const id = "inst-outlives"
	worker := exec.Command(os.Args[0])
	worker.Env = append(os.Environ(), noRaceExitSleep, "COFFER_FAKE_WORKER=1", "COFFER_FAKE_WORKER_ROOT="+root,
		"COFFER_FAKE_WORKER_ID="+id, "COFFER_FAKE_WORKER_PREFIX="+prefix)
	if out, err := worker.CombinedOutput(); err != nil {
		t.Fatalf("worker: %v\n%s", err, out)
	}

	p, err := New(Config{Root: root, AgentCommand: []string{os.Args[0]}, Env: []string{"COFFER_FAKE_AGENT=1", noRaceExitSleep}, AddressPrefix: prefix, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.DeleteServer(context.Background(), id) })
	dir := filepath.Join(p.root, id)
	agent := readPIDFile(t, filepath.Join(dir, "agent.pid"))
	if !isAgent(agent, filepath.Join(dir, "agent.json")) {
		t.Fatalf("agent %d is not running after its worker exited", agent)
	}
	if srv, err := p.GetServer(ctx, id); err != nil || srv.Status != provider.StatusActive {
		t.Fatalf("GetServer = %+v, %v", srv, err)
	}
	if _, err := p.CreateServer(ctx, testSpec(id, "redis", "token-1")); err != nil {
		t.Fatal(err)
	}
	if n := starts(t, dir); n != 1 {
		t.Errorf("agent started %d times, want 1", n)
	}
	if err := p.DeleteServer(ctx, id); err != nil {
		t.Fatal(err)
	}
	if alive(agent) {
		t.Errorf("agent %d survived DeleteServer", agent)
	}
}

// TestDeleteStubbornDatastore: a datastore found only by its arguments and
// ignoring SIGINT is still stopped (SIGTERM after datastoreEscalateAfter).
func TestDeleteStubbornDatastore(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := newProvider(t, "COFFER_FAKE_STUBBORN=1")
	const id = "inst-stubborn"
	dir := filepath.Join(p.root, id)
	create(t, p, testSpec(id, "mariadb", "x"))
	pids := []int{
		readPIDFile(t, filepath.Join(dir, "volume", "datastore0.pid")),
		readPIDFile(t, filepath.Join(dir, "volume", "datastore1.pid")),
	}
	start := time.Now()
	if err := p.DeleteServer(ctx, id); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	t.Logf("DeleteServer took %v", took)
	if took < datastoreEscalateAfter {
		t.Errorf("DeleteServer took %v: the datastore ignoring SIGINT cannot have been stopped by SIGTERM", took)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d survived DeleteServer", pid)
		}
	}
}

func TestDeleteUnknownAndInvalid(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := newProvider(t)
	if err := p.DeleteServer(ctx, "never-created"); err != nil {
		t.Errorf("DeleteServer unknown: %v", err)
	}
	if _, err := p.GetServer(ctx, "never-created"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("GetServer unknown: %v, want ErrNotFound", err)
	}
	for _, id := range []string{"", "..", ".addresses", "a/b", "../../etc"} {
		if _, err := p.CreateServer(ctx, testSpec(id, "redis", "x")); err == nil {
			t.Errorf("CreateServer(%q) succeeded", id)
		}
		if err := p.DeleteServer(ctx, id); err == nil {
			t.Errorf("DeleteServer(%q) succeeded", id)
		}
	}
	if _, err := p.CreateServer(ctx, testSpec("inst-x", "oracle", "x")); err == nil {
		t.Error("CreateServer with a datastore without a standard port succeeded")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	for name, cfg := range map[string]Config{
		"no root":        {AgentCommand: []string{"agent"}},
		"no command":     {Root: root},
		"not loopback":   {Root: root, AgentCommand: []string{"agent"}, AddressPrefix: "10.1"},
		"not a /16":      {Root: root, AgentCommand: []string{"agent"}, AddressPrefix: "127.10.1"},
		"not an address": {Root: root, AgentCommand: []string{"agent"}, AddressPrefix: "loopback"},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	p, err := New(Config{Root: root, AgentCommand: []string{"agent"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := p.candidate(2); got != "127.10.0.2" {
		t.Errorf("first default address = %s", got)
	}
	if got := p.candidate(65534); got != "127.10.255.254" {
		t.Errorf("last default address = %s", got)
	}
}

// TestConcurrentAllocation: providers that share nothing but Root (as
// workers in separate processes do) never hand out one address twice.
func TestConcurrentAllocation(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	first := newProvider(t)
	second, err := New(Config{Root: first.root, AgentCommand: first.command, Env: first.env,
		AddressPrefix: fmt.Sprintf("%d.%d", first.prefix[0], first.prefix[1]), Logger: first.logger})
	if err != nil {
		t.Fatal(err)
	}
	const n = 6
	addrs := make([]string, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		p := first
		if i%2 == 1 {
			p = second
		}
		id := "inst-" + strconv.Itoa(i)
		t.Cleanup(func() { p.DeleteServer(context.Background(), id) })
		wg.Go(func() {
			var srv provider.Server
			srv, errs[i] = p.CreateServer(ctx, testSpec(id, "postgresql", "x"))
			addrs[i] = srv.Address
		})
	}
	wg.Wait()
	seen := map[string]bool{}
	for i := range n {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if seen[addrs[i]] {
			t.Errorf("address %s handed out twice: %q", addrs[i], addrs)
		}
		seen[addrs[i]] = true
	}
}
