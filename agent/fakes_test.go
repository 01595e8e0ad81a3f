package agent

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

const testInstanceID = "6f1c2f4e-8a3b-4d0e-9c1a-2b7e5d4c3a10"

// fakeAPI implements the three endpoints of the agent API in memory.
type fakeAPI struct {
	t   *testing.T
	srv *httptest.Server

	mu    sync.Mutex
	token string // the only credential accepted
	queue []protocol.Command
	// hold is how long a poll waits for a command before answering 204
	// (bounded by the wait the agent asked for).
	hold time.Duration
	// failPolls and failResults answer that many requests with 503.
	failPolls   int
	failResults int

	polls       int
	pollWaits   []int
	authFails   int
	tokensSeen  map[string]int
	userAgents  map[string]int
	heartbeats  []protocol.Heartbeat
	resultPosts map[string][]protocol.Result
	resultToken map[string]string          // credential of the last accepted post per id
	recorded    map[string]protocol.Result // first result per id, as the real server keeps
	wake        chan struct{}              // closed and replaced when the queue grows
	closed      chan struct{}
}

func newFakeAPI(t *testing.T) *fakeAPI {
	t.Helper()
	f := &fakeAPI{
		t:           t,
		token:       testInstanceID + ".secret",
		hold:        20 * time.Millisecond,
		tokensSeen:  map[string]int{},
		userAgents:  map[string]int{},
		resultPosts: map[string][]protocol.Result{},
		resultToken: map[string]string{},
		recorded:    map[string]protocol.Result{},
		wake:        make(chan struct{}),
		closed:      make(chan struct{}),
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+protocol.PathCommands, f.handlePoll)
	mux.HandleFunc("POST "+protocol.PathResult, f.handleResult)
	mux.HandleFunc("POST "+protocol.PathHeartbeat, f.handleHeartbeat)
	f.srv = httptest.NewUnstartedServer(f.authenticate(mux))
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS handshake noise
	f.srv.StartTLS()
	t.Cleanup(func() {
		close(f.closed)
		f.srv.Close()
	})
	return f
}

// caPEM is the PEM of the certificate the server presents (httptest's is
// self-signed, so it is its own CA).
func (f *fakeAPI) caPEM() string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}))
}

func (f *fakeAPI) config() protocol.AgentConfig {
	f.mu.Lock()
	defer f.mu.Unlock()
	return protocol.AgentConfig{
		APIURL:     f.srv.URL,
		CACert:     f.caPEM(),
		InstanceID: testInstanceID,
		Token:      f.token,
		Datastore:  "postgresql",
		DataDir:    "/nonexistent",
	}
}

func (f *fakeAPI) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		f.mu.Lock()
		f.tokensSeen[tok]++
		f.userAgents[r.UserAgent()]++
		ok := tok == f.token
		if !ok {
			f.authFails++
		}
		f.mu.Unlock()
		if !ok {
			http.Error(w, "bad credential", http.StatusUnauthorized)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (f *fakeAPI) enqueue(cmds ...protocol.Command) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.queue = append(f.queue, cmds...)
	close(f.wake)
	f.wake = make(chan struct{})
}

func (f *fakeAPI) handlePoll(w http.ResponseWriter, r *http.Request) {
	wait, err := strconv.Atoi(r.URL.Query().Get("wait"))
	if err != nil {
		http.Error(w, "bad wait", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.polls++
	f.pollWaits = append(f.pollWaits, wait)
	if f.failPolls > 0 {
		f.failPolls--
		f.mu.Unlock()
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return
	}
	hold := min(f.hold, time.Duration(wait)*time.Second)
	f.mu.Unlock()

	timer := time.NewTimer(hold)
	defer timer.Stop()
	for {
		f.mu.Lock()
		if len(f.queue) > 0 {
			cmd := f.queue[0]
			f.queue = f.queue[1:]
			f.mu.Unlock()
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(cmd)
			return
		}
		wake := f.wake
		f.mu.Unlock()
		select {
		case <-wake:
		case <-timer.C:
			w.WriteHeader(http.StatusNoContent)
			return
		case <-r.Context().Done():
			return
		case <-f.closed:
			return
		}
	}
}

func (f *fakeAPI) handleResult(w http.ResponseWriter, r *http.Request) {
	var res protocol.Result
	if err := json.NewDecoder(r.Body).Decode(&res); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	id := r.PathValue("id")
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.failResults > 0 {
		f.failResults--
		http.Error(w, "overloaded", http.StatusServiceUnavailable)
		return
	}
	f.resultPosts[id] = append(f.resultPosts[id], res)
	f.resultToken[id] = strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	if _, ok := f.recorded[id]; !ok {
		f.recorded[id] = res
	}
	w.WriteHeader(http.StatusNoContent)
}

func (f *fakeAPI) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	var hb protocol.Heartbeat
	if err := json.NewDecoder(r.Body).Decode(&hb); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.heartbeats = append(f.heartbeats, hb)
	f.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

// locked runs fn with the server's state locked.
func (f *fakeAPI) locked(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// fakeDriver is a driver.Driver that records what it is asked to do.
type fakeDriver struct {
	mu          sync.Mutex
	status      string
	used, total int64
	usageErr    error
	prepareErr  error
	prepares    []protocol.PrepareRequest
	deadlines   []time.Duration // time left on each Prepare's context
	ensureCalls int
	// block, if set, makes Prepare wait for it or for its context.
	block chan struct{}
}

func newFakeDriver() *fakeDriver {
	return &fakeDriver{status: protocol.ServiceHealthy, used: 123 << 20, total: 10 << 30}
}

func (d *fakeDriver) Prepare(ctx context.Context, req protocol.PrepareRequest) error {
	d.mu.Lock()
	d.prepares = append(d.prepares, req)
	if dl, ok := ctx.Deadline(); ok {
		d.deadlines = append(d.deadlines, time.Until(dl))
	}
	block, err := d.block, d.prepareErr
	d.mu.Unlock()
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return err
}

func (d *fakeDriver) EnsureRunning(context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ensureCalls++
	return nil
}

func (d *fakeDriver) Status(context.Context) string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.status
}

func (d *fakeDriver) Stop(context.Context) error {
	return errors.New("the agent must never stop the datastore")
}

func (d *fakeDriver) VolumeUsage(context.Context) (int64, int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.used, d.total, d.usageErr
}

func (d *fakeDriver) locked(fn func()) {
	d.mu.Lock()
	defer d.mu.Unlock()
	fn()
}

// testLogger logs through t, so a failing test shows what the agent did.
func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// newTestAgent returns an agent for api with every wait shrunk.
func newTestAgent(t *testing.T, cfg protocol.AgentConfig, drv *fakeDriver, opts ...Option) *Agent {
	t.Helper()
	a, err := New(cfg, drv, testLogger(t), opts...)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.pollWaitMin = 1 * time.Second
	a.pollWaitMax = 3 * time.Second
	a.pollTimeoutMargin = 2 * time.Second
	a.backoffMin = 2 * time.Millisecond
	a.backoffMax = 20 * time.Millisecond
	a.heartbeatInterval = 50 * time.Millisecond
	a.requestTimeout = 2 * time.Second
	a.probeTimeout = time.Second
	return a
}

// start runs a until the test ends and checks that it stops promptly.
func start(t *testing.T, a *Agent) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Run: %v", err)
				}
			case <-time.After(2 * time.Second):
				t.Errorf("Run did not return within 2s of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// waitFor polls cond until it holds or 5 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}
