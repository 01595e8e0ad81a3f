package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

func prepareCommand(t *testing.T, id string, lease int) protocol.Command {
	t.Helper()
	payload, err := json.Marshal(protocol.PrepareRequest{
		Datastore: "postgresql",
		Version:   "17",
		Databases: []protocol.Database{{Name: "app"}},
		Users:     []protocol.User{{Name: "app", Password: "hunter2", Databases: []string{"app"}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	return protocol.Command{ID: id, Name: protocol.CommandPrepare, Payload: payload, LeaseSeconds: lease, Attempt: 1}
}

func TestCommandExecutedOnceWhenDeliveredTwice(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	drv := newFakeDriver()
	a := newTestAgent(t, api.config(), drv)

	// The server hands the command out twice, as after a lease expiry.
	cmd := prepareCommand(t, "cmd-1", 60)
	api.enqueue(cmd, cmd)
	start(t, a)

	waitFor(t, "both deliveries answered", func() (done bool) {
		api.locked(func() { done = len(api.resultPosts["cmd-1"]) == 2 })
		return done
	})

	drv.locked(func() {
		if len(drv.prepares) != 1 {
			t.Errorf("Prepare ran %d times, want 1", len(drv.prepares))
		}
		if len(drv.prepares) > 0 && drv.prepares[0].Users[0].Password != "hunter2" {
			t.Errorf("Prepare got %+v, want the payload's request", drv.prepares[0])
		}
	})
	api.locked(func() {
		posts := api.resultPosts["cmd-1"]
		want := protocol.Result{OK: true, ServiceStatus: protocol.ServiceHealthy}
		if !reflect.DeepEqual(api.recorded["cmd-1"], want) {
			t.Errorf("recorded result %+v, want %+v", api.recorded["cmd-1"], want)
		}
		// The second delivery is answered with the stored result, which
		// the server ignores as a repeat.
		if !reflect.DeepEqual(posts[0], posts[1]) {
			t.Errorf("re-posted result %+v differs from the first %+v", posts[1], posts[0])
		}
		if len(api.recorded) != 1 {
			t.Errorf("server recorded %d results, want 1", len(api.recorded))
		}
	})
	drv.locked(func() {
		if drv.ensureCalls != 1 {
			t.Errorf("EnsureRunning ran %d times at start, want 1", drv.ensureCalls)
		}
	})
}

func TestUnknownCommandFails(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	drv := newFakeDriver()
	drv.status = protocol.ServiceRunning
	a := newTestAgent(t, api.config(), drv)
	api.enqueue(protocol.Command{ID: "cmd-x", Name: "frobnicate", Payload: json.RawMessage(`{"secret":"s3cr3t"}`), LeaseSeconds: 30})
	start(t, a)

	waitFor(t, "result", func() (done bool) {
		api.locked(func() { _, done = api.recorded["cmd-x"] })
		return done
	})
	api.locked(func() {
		got := api.recorded["cmd-x"]
		want := protocol.Result{OK: false, Error: "unknown command frobnicate", ServiceStatus: protocol.ServiceRunning}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("result %+v, want %+v", got, want)
		}
	})
}

func TestPrepareFailureAndDeadline(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	drv := newFakeDriver()
	drv.prepareErr = errors.New("initdb: exit status 1")
	drv.status = protocol.ServiceFailedToSpawn
	a := newTestAgent(t, api.config(), drv)
	api.enqueue(prepareCommand(t, "cmd-p", 20), protocol.Command{ID: "cmd-bad", Name: protocol.CommandPrepare, Payload: json.RawMessage(`{"users": 7}`), LeaseSeconds: 20})
	start(t, a)

	waitFor(t, "results", func() (done bool) {
		api.locked(func() { done = len(api.recorded) == 2 })
		return done
	})
	api.locked(func() {
		want := protocol.Result{OK: false, Error: "initdb: exit status 1", ServiceStatus: protocol.ServiceFailedToSpawn}
		if got := api.recorded["cmd-p"]; !reflect.DeepEqual(got, want) {
			t.Errorf("result %+v, want %+v", got, want)
		}
		if got := api.recorded["cmd-bad"]; got.OK || !strings.HasPrefix(got.Error, "decode payload:") {
			t.Errorf("result of an undecodable payload %+v, want a decode error", got)
		}
	})
	drv.locked(func() {
		// Lease 20 s, margin 2 s: the handler gets at most 18 s.
		if len(drv.deadlines) != 1 || drv.deadlines[0] > 18*time.Second || drv.deadlines[0] < 17*time.Second {
			t.Errorf("Prepare deadlines %v, want one of about 18s", drv.deadlines)
		}
	})
}

func TestCommandTimeout(t *testing.T) {
	t.Parallel()
	for lease, want := range map[int]time.Duration{
		0:    defaultCommandTimeout,
		-1:   defaultCommandTimeout,
		1:    900 * time.Millisecond,
		30:   27 * time.Second,
		600:  590 * time.Second,
		3600: 3590 * time.Second,
	} {
		if got := commandTimeout(lease); got != want {
			t.Errorf("commandTimeout(%d) = %s, want %s", lease, got, want)
		}
	}
}

func TestLeaseExpiryFailsCommand(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	drv := newFakeDriver()
	drv.block = make(chan struct{}) // never released: Prepare runs into its deadline
	a := newTestAgent(t, api.config(), drv)
	api.enqueue(prepareCommand(t, "cmd-slow", 1))
	start(t, a)

	waitFor(t, "result", func() (done bool) {
		api.locked(func() { _, done = api.recorded["cmd-slow"] })
		return done
	})
	api.locked(func() {
		got := api.recorded["cmd-slow"]
		if got.OK || !strings.Contains(got.Error, "did not finish within 900ms") {
			t.Errorf("result %+v, want a timeout failure", got)
		}
	})
}

func TestLongPollNoContentLoops(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	a := newTestAgent(t, api.config(), newFakeDriver())
	start(t, a)

	waitFor(t, "several empty polls", func() (done bool) {
		api.locked(func() { done = api.polls >= 5 })
		return done
	})
	api.enqueue(protocol.Command{ID: "after-idle", Name: "nope"})
	waitFor(t, "the command queued after idle polls", func() (done bool) {
		api.locked(func() { _, done = api.recorded["after-idle"] })
		return done
	})
	api.locked(func() {
		for _, w := range api.pollWaits {
			if w < 1 || w > 3 {
				t.Errorf("poll asked for wait=%d, want within [1, 3]", w)
			}
		}
	})
}

func TestPollWaitJitter(t *testing.T) {
	t.Parallel()
	a := &Agent{pollWaitMin: defaultPollWaitMin, pollWaitMax: defaultPollWaitMax}
	seen := map[time.Duration]bool{}
	for range 500 {
		w := a.pollWait()
		if w < 25*time.Second || w > 55*time.Second || w%time.Second != 0 {
			t.Fatalf("pollWait() = %s, want whole seconds in [25s, 55s]", w)
		}
		seen[w] = true
	}
	if len(seen) < 10 {
		t.Errorf("pollWait produced only %d distinct waits in 500 draws", len(seen))
	}
}

func TestRecoversAfterServerErrors(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	api.failPolls = 4
	api.failResults = 3
	drv := newFakeDriver()
	a := newTestAgent(t, api.config(), drv)
	api.enqueue(prepareCommand(t, "cmd-r", 60))
	started := time.Now()
	start(t, a)

	waitFor(t, "result after outages", func() (done bool) {
		api.locked(func() { _, done = api.recorded["cmd-r"] })
		return done
	})
	t.Logf("recovered in %s", time.Since(started).Round(time.Millisecond))
	api.locked(func() {
		if api.polls < 5 {
			t.Errorf("%d polls, want at least 5 (4 failures, then success)", api.polls)
		}
		if n := len(api.resultPosts["cmd-r"]); n != 1 {
			t.Errorf("%d results accepted, want 1", n)
		}
	})
	drv.locked(func() {
		if len(drv.prepares) != 1 {
			t.Errorf("Prepare ran %d times, want 1: a result retry must not re-execute", len(drv.prepares))
		}
	})
}

func TestBackoff(t *testing.T) {
	t.Parallel()
	b := &backoff{min: 250 * time.Millisecond, max: 30 * time.Second}
	var last time.Duration
	for i := range 20 {
		d := b.next()
		step := min(250*time.Millisecond<<i, 30*time.Second)
		if d < step/2 || d > step {
			t.Fatalf("attempt %d: backoff %s, want within [%s, %s]", i, d, step/2, step)
		}
		last = d
	}
	if last < 15*time.Second {
		t.Errorf("backoff did not reach its cap: last %s", last)
	}
	b.reset()
	if d := b.next(); d > 250*time.Millisecond {
		t.Errorf("after reset: %s, want at most 250ms", d)
	}
}

func TestUnauthorizedReloadsRotatedToken(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	cfg := api.config()
	stale := cfg
	stale.Token = testInstanceID + ".old"

	// The provider rotated the credential: the file already holds the new
	// token, the running agent still has the old one.
	dir := t.TempDir()
	path := filepath.Join(dir, "agent.json")
	writeJSON(t, path, cfg)
	var loads atomic.Int32
	source := func() (protocol.AgentConfig, error) {
		loads.Add(1)
		return loadConfig(path, noEnv)
	}

	a := newTestAgent(t, stale, newFakeDriver(), WithConfigSource(source))
	api.enqueue(protocol.Command{ID: "cmd-a", Name: "nope"})
	start(t, a)

	waitFor(t, "result with the rotated token", func() (done bool) {
		api.locked(func() { _, done = api.recorded["cmd-a"] })
		return done
	})
	api.locked(func() {
		if api.authFails == 0 {
			t.Error("the stale token was never rejected")
		}
		if api.tokensSeen[cfg.Token] == 0 {
			t.Error("the rotated token was never used")
		}
	})
	if loads.Load() == 0 {
		t.Error("config source never called")
	}
}

func TestUnauthorizedWithoutNewTokenBacksOff(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	cfg := api.config()
	cfg.Token = testInstanceID + ".revoked"
	loads := make(chan struct{}, 100)
	source := func() (protocol.AgentConfig, error) {
		loads <- struct{}{}
		return cfg, nil // the file still holds the rejected token
	}
	a := newTestAgent(t, cfg, newFakeDriver(), WithConfigSource(source))
	a.heartbeatInterval = time.Hour
	a.backoffMin, a.backoffMax = 20*time.Millisecond, 40*time.Millisecond
	stop := start(t, a)
	time.Sleep(300 * time.Millisecond)
	stop()

	var fails int
	api.locked(func() { fails = api.authFails })
	// 300 ms of 20–40 ms backoffs, plus the heartbeat: a few dozen at
	// most, not a tight loop.
	if fails < 3 || fails > 30 {
		t.Errorf("%d rejected requests in 300ms, want a backed-off handful", fails)
	}
	if len(loads) == 0 {
		t.Error("config source never called")
	}
}

func TestReload(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	cfg := api.config()
	a := newTestAgent(t, cfg, newFakeDriver())

	other := cfg
	other.InstanceID = "someone-else"
	if err := a.Reload(other); err == nil || !strings.Contains(err.Error(), "someone-else") {
		t.Errorf("Reload for another instance: %v, want a refusal", err)
	}
	bad := cfg
	bad.APIURL = "http://127.0.0.1:1"
	if err := a.Reload(bad); err == nil || !strings.Contains(err.Error(), "https") {
		t.Errorf("Reload with http URL: %v, want a refusal", err)
	}
	if got := a.conn.Load().cfg; got.APIURL != cfg.APIURL {
		t.Errorf("a refused reload changed the API URL to %q", got.APIURL)
	}

	before := a.conn.Load()
	if changed, err := a.reload(cfg); err != nil || changed {
		t.Errorf("reload of the same config: changed %v, err %v; want no change", changed, err)
	}
	rotated := cfg
	rotated.Token = testInstanceID + ".new"
	rotated.HeartbeatSeconds = 7
	a.heartbeatInterval = 0
	if changed, err := a.reload(rotated); err != nil || !changed {
		t.Errorf("reload with a new token: changed %v, err %v; want a change", changed, err)
	}
	select {
	case <-before.changed:
	default:
		t.Error("reload did not signal the change")
	}
	if got := a.heartbeatEvery(); got != 7*time.Second {
		t.Errorf("heartbeat interval after reload %s, want 7s", got)
	}
}

func TestHeartbeats(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	drv := newFakeDriver()
	a := newTestAgent(t, api.config(), drv)
	start(t, a)

	waitFor(t, "three heartbeats", func() (done bool) {
		api.locked(func() { done = len(api.heartbeats) >= 3 })
		return done
	})
	drv.locked(func() {
		drv.status = protocol.ServiceCrashed
		drv.usageErr = errors.New("statfs: no such file")
	})
	var seen int
	api.locked(func() { seen = len(api.heartbeats) })
	waitFor(t, "a heartbeat after the crash", func() (done bool) {
		api.locked(func() {
			done = len(api.heartbeats) > seen && api.heartbeats[len(api.heartbeats)-1].ServiceStatus == protocol.ServiceCrashed
		})
		return done
	})

	api.locked(func() {
		first := api.heartbeats[0]
		want := protocol.Heartbeat{ServiceStatus: protocol.ServiceHealthy, VolumeUsedBytes: 123 << 20, VolumeTotalBytes: 10 << 30, AgentVersion: agentVersion()}
		if first != want {
			t.Errorf("heartbeat %+v, want %+v", first, want)
		}
		if first.AgentVersion == "" {
			t.Error("heartbeat without agent version")
		}
		last := api.heartbeats[len(api.heartbeats)-1]
		if last.VolumeUsedBytes != 0 || last.VolumeTotalBytes != 0 {
			t.Errorf("heartbeat with failed usage %+v, want zero usage", last)
		}
		for ua := range api.userAgents {
			if !strings.HasPrefix(ua, "coffer-agent/") {
				t.Errorf("User-Agent %q, want coffer-agent/<version>", ua)
			}
		}
	})
}

func TestHeartbeatIsImmediate(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	a := newTestAgent(t, api.config(), newFakeDriver())
	a.heartbeatInterval = time.Hour
	start(t, a)
	waitFor(t, "the first heartbeat", func() (done bool) {
		api.locked(func() { done = len(api.heartbeats) == 1 })
		return done
	})
}

func TestRejectsServerNotSignedByConfiguredCA(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	cfg := api.config()
	cfg.CACert = selfSignedCA(t)
	a := newTestAgent(t, cfg, newFakeDriver())

	_, err := a.poll(context.Background(), a.conn.Load())
	var unknown x509.UnknownAuthorityError
	if !errors.As(err, &unknown) {
		t.Fatalf("poll against a server of another CA: %v, want x509.UnknownAuthorityError", err)
	}
	if err := a.sendHeartbeat(context.Background()); !errors.As(err, &unknown) {
		t.Fatalf("heartbeat against a server of another CA: %v, want x509.UnknownAuthorityError", err)
	}
	api.locked(func() {
		if len(api.tokensSeen) != 0 {
			t.Error("the server received a request (and the token) despite an untrusted certificate")
		}
	})
}

func TestTLSClientConfig(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	a := newTestAgent(t, api.config(), newFakeDriver())
	tr, ok := a.conn.Load().client.Transport.(*http.Transport)
	if !ok {
		t.Fatalf("transport %T, want *http.Transport", a.conn.Load().client.Transport)
	}
	if v := tr.TLSClientConfig.MinVersion; v != tls.VersionTLS12 {
		t.Errorf("MinVersion %x, want TLS 1.2", v)
	}
	if tr.TLSClientConfig.InsecureSkipVerify {
		t.Error("certificate verification is off")
	}
	want, _ := certPool(api.caPEM())
	if !tr.TLSClientConfig.RootCAs.Equal(want) {
		t.Error("RootCAs is not exactly the configured CA")
	}
}

func TestRunStopsPromptlyAndKeepsDatastore(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	api.hold = time.Minute // park the long-poll
	cfg := api.config()
	cfg.PIDFile = filepath.Join(t.TempDir(), "agent.pid")
	drv := newFakeDriver()
	a := newTestAgent(t, cfg, drv)
	a.pollWaitMin, a.pollWaitMax = 30*time.Second, 30*time.Second
	a.pollTimeoutMargin = 15 * time.Second

	stop := start(t, a)
	waitFor(t, "a parked poll", func() (done bool) {
		api.locked(func() { done = api.polls == 1 })
		return done
	})
	b, err := os.ReadFile(cfg.PIDFile)
	if err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(os.Getpid()) {
		t.Errorf("PID file: %q, %v; want this process's id", b, err)
	}

	began := time.Now()
	stop()
	if took := time.Since(began); took > 500*time.Millisecond {
		t.Errorf("Run took %s to stop", took)
	}
	if _, err := os.Stat(cfg.PIDFile); !os.IsNotExist(err) {
		t.Errorf("PID file still there after exit: %v", err)
	}
	if err := a.Run(context.Background()); err == nil {
		t.Error("second Run succeeded, want an error")
	}
}

func TestShutdownDuringCommandPostsNothing(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	drv := newFakeDriver()
	drv.block = make(chan struct{})
	a := newTestAgent(t, api.config(), drv)
	api.enqueue(prepareCommand(t, "cmd-int", 600))
	stop := start(t, a)
	waitFor(t, "prepare running", func() (done bool) {
		drv.locked(func() { done = len(drv.prepares) == 1 })
		return done
	})
	stop()
	api.locked(func() {
		if len(api.resultPosts) != 0 {
			t.Errorf("results posted for an interrupted command: %+v", api.resultPosts)
		}
	})
}

func TestResultCacheIsBounded(t *testing.T) {
	t.Parallel()
	c := newResultCache(3)
	for i := range 5 {
		c.put(strconv.Itoa(i), protocol.Result{OK: true, Error: strconv.Itoa(i)})
	}
	c.put("4", protocol.Result{Error: "again"}) // a repeat does not evict
	for i := range 5 {
		_, ok := c.get(strconv.Itoa(i))
		if want := i >= 2; ok != want {
			t.Errorf("id %d cached = %v, want %v", i, ok, want)
		}
	}
	if len(c.byID) != 3 || len(c.order) != 3 {
		t.Errorf("cache holds %d/%d entries, want 3", len(c.byID), len(c.order))
	}
}

func TestHandlerPanicFailsCommand(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	a := newTestAgent(t, api.config(), newFakeDriver())
	a.handlers["boom"] = func(context.Context, json.RawMessage) (json.RawMessage, error) { panic("driver bug") }
	api.enqueue(protocol.Command{ID: "cmd-boom", Name: "boom"})
	start(t, a)
	waitFor(t, "result", func() (done bool) {
		api.locked(func() { _, done = api.recorded["cmd-boom"] })
		return done
	})
	api.locked(func() {
		if got := api.recorded["cmd-boom"]; got.OK || got.Error != "internal error: boom handler panicked" {
			t.Errorf("result %+v, want a panic failure", got)
		}
	})
}

// selfSignedCA returns the PEM of a fresh CA that signed nothing the test
// server presents.
func selfSignedCA(t *testing.T) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "not the coffer CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}
