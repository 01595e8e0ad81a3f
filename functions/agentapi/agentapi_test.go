package agentapi_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/functions/agentapi"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/seed"
	"github.com/coffer-dbaas/coffer/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type fixture struct {
	pool *pgxpool.Pool
	srv  *httptest.Server
}

// agentClient is one instance's credential against the fixture's server.
type agentClient struct {
	f     *fixture
	id    uuid.UUID
	token string
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	pool := testdb.New(t)
	if err := seed.Catalog(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := store.New(pool).UpsertProject(ctx, store.UpsertProjectParams{ID: "p1", Name: "p1"}); err != nil {
		t.Fatal(err)
	}
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	hub := agentapi.NewHub(pool.Config().ConnConfig, logger)
	done := make(chan struct{})
	go func() { defer close(done); _ = hub.Run(ctx) }()
	<-hub.Ready()
	srv := httptest.NewTLSServer((&agentapi.Server{Pool: pool, River: rc, Hub: hub, Logger: logger}).Handler())
	t.Cleanup(func() { srv.Close(); cancel(); <-done })
	return &fixture{pool: pool, srv: srv}
}

// newInstance writes a BUILDING instance with an agent credential.
func (f *fixture) newInstance(t testing.TB) *agentClient {
	t.Helper()
	id := uuid.New()
	token := id.String() + "." + auth.NewToken()
	_, err := f.pool.Exec(context.Background(), `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id, agent_token_hash)
		SELECT $1, 'p1', 'i', '1', 1, id, $2 FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, id, auth.Hash(token))
	if err != nil {
		t.Fatal(err)
	}
	return &agentClient{f: f, id: id, token: token}
}

func (f *fixture) insertCommand(t testing.TB, instance uuid.UUID, name string, leaseSeconds int32) uuid.UUID {
	t.Helper()
	id := uuid.New()
	if _, err := store.New(f.pool).InsertAgentCommand(context.Background(), store.InsertAgentCommandParams{
		ID: id, InstanceID: instance, Name: name, Payload: []byte(`{"secret":"x"}`), LeaseSeconds: leaseSeconds,
	}); err != nil {
		t.Fatal(err)
	}
	return id
}

func (a *agentClient) request(t testing.TB, method, path string, body any) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		r = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, a.f.srv.URL+path, r)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (a *agentClient) poll(t testing.TB, wait int) (int, protocol.Command) {
	t.Helper()
	code, b := a.request(t, "GET", protocol.PathCommands+"?wait="+strconv.Itoa(wait), nil)
	var c protocol.Command
	if code == 200 {
		if err := json.Unmarshal(b, &c); err != nil {
			t.Fatal(err)
		}
	}
	return code, c
}

func TestPollWaitsAndWakesOnInsert(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.newInstance(t)
	start := time.Now()
	if code, _ := a.poll(t, 1); code != http.StatusNoContent {
		t.Fatalf("empty poll = %d", code)
	}
	if time.Since(start) < 900*time.Millisecond {
		t.Errorf("empty poll returned after %s, before its wait", time.Since(start))
	}
	got := make(chan protocol.Command, 1)
	go func() { _, c := a.poll(t, 9); got <- c }()
	time.Sleep(200 * time.Millisecond) // let the poll park
	id := f.insertCommand(t, a.id, protocol.CommandPrepare, 60)
	select {
	case c := <-got:
		if c.ID != id.String() || c.Name != protocol.CommandPrepare || c.Attempt != 1 || c.LeaseSeconds != 60 {
			t.Errorf("command = %+v", c)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("parked poll was not woken by the insert")
	}
}

func TestCredentialIsPerInstance(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a, b := f.newInstance(t), f.newInstance(t)
	f.insertCommand(t, a.id, "prepare", 60)
	if code, _ := b.poll(t, 0); code != http.StatusNoContent {
		t.Errorf("other instance's agent got a command: %d", code)
	}
	for _, tok := range []string{"", "garbage", a.id.String() + ".wrong", b.token[:len(b.token)-1] + "x"} {
		c := &agentClient{f: f, id: a.id, token: tok}
		if code, _ := c.poll(t, 0); code != http.StatusUnauthorized {
			t.Errorf("token %q: %d, want 401", tok, code)
		}
	}
	// Revoking the credential (delete does this) locks the agent out.
	if _, err := f.pool.Exec(context.Background(), "UPDATE instance SET agent_token_hash = NULL WHERE id = $1", a.id); err != nil {
		t.Fatal(err)
	}
	if code, _ := a.poll(t, 0); code != http.StatusUnauthorized {
		t.Errorf("revoked credential: %d", code)
	}
}

func TestResultCompletesOnceAndEnqueuesContinuation(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a := f.newInstance(t)
	cmdID := f.insertCommand(t, a.id, protocol.CommandPrepare, 60)
	if code, c := a.poll(t, 0); code != 200 || c.ID != cmdID.String() {
		t.Fatalf("poll = %d %+v", code, c)
	}
	// Leased: not delivered again while the lease holds.
	if code, _ := a.poll(t, 0); code != http.StatusNoContent {
		t.Fatalf("leased command delivered twice: %d", code)
	}
	for range 2 { // the agent may retry its post
		if code, b := a.request(t, "POST", strings.Replace(protocol.PathResult, "{id}", cmdID.String(), 1),
			protocol.Result{OK: true, ServiceStatus: "healthy"}); code != http.StatusNoContent {
			t.Fatalf("result = %d %s", code, b)
		}
	}
	var state string
	var payload []byte
	if err := f.pool.QueryRow(ctx, "SELECT state, payload FROM agent_command WHERE id = $1", cmdID).Scan(&state, &payload); err != nil {
		t.Fatal(err)
	}
	if state != "succeeded" || string(payload) != "{}" {
		t.Errorf("command state %s payload %s (payload must be cleared)", state, payload)
	}
	var jobs int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE kind = 'complete_prepare'").Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if jobs != 1 {
		t.Errorf("continuation jobs = %d, want exactly 1", jobs)
	}
	// Another instance cannot complete this instance's command.
	b := f.newInstance(t)
	other := f.insertCommand(t, a.id, "prepare", 60)
	if code, _ := b.request(t, "POST", strings.Replace(protocol.PathResult, "{id}", other.String(), 1), protocol.Result{OK: true}); code != http.StatusNoContent {
		t.Fatalf("foreign result = %d", code)
	}
	if err := f.pool.QueryRow(ctx, "SELECT state FROM agent_command WHERE id = $1", other).Scan(&state); err != nil {
		t.Fatal(err)
	}
	if state != "pending" {
		t.Errorf("foreign agent changed the command to %s", state)
	}
}

func TestExpiredLeaseRedelivers(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.newInstance(t)
	id := f.insertCommand(t, a.id, "prepare", 1)
	if _, c := a.poll(t, 0); c.ID != id.String() {
		t.Fatalf("first delivery: %+v", c)
	}
	time.Sleep(1100 * time.Millisecond) // the agent died holding it
	code, c := a.poll(t, 0)
	if code != 200 || c.ID != id.String() || c.Attempt != 2 {
		t.Fatalf("redelivery = %d %+v", code, c)
	}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.newInstance(t)
	if code, b := a.request(t, "POST", protocol.PathHeartbeat, protocol.Heartbeat{ServiceStatus: "healthy", VolumeUsedBytes: 12345}); code != http.StatusNoContent {
		t.Fatalf("heartbeat = %d %s", code, b)
	}
	var service string
	var used int64
	var at *time.Time
	if err := f.pool.QueryRow(context.Background(), "SELECT service_status, volume_used_bytes, heartbeat_at FROM instance WHERE id = $1", a.id).Scan(&service, &used, &at); err != nil {
		t.Fatal(err)
	}
	if service != "healthy" || used != 12345 || at == nil || time.Since(*at) > time.Minute {
		t.Errorf("after heartbeat: %s %d %v", service, used, at)
	}
	if code, _ := a.request(t, "POST", protocol.PathHeartbeat, "not an object"); code != http.StatusBadRequest {
		t.Errorf("bad heartbeat = %d", code)
	}
}

// Notifications sent while the LISTEN connection is down are lost; the hub
// must reconnect and wake parked polls so they look again.
func TestHubSurvivesListenerLoss(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	a := f.newInstance(t)
	got := make(chan protocol.Command, 1)
	go func() { _, c := a.poll(t, 9); got <- c }()
	time.Sleep(200 * time.Millisecond)
	if _, err := f.pool.Exec(context.Background(),
		"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'LISTEN coffer_agent_command' AND datname = current_database()"); err != nil {
		t.Fatal(err)
	}
	id := f.insertCommand(t, a.id, "prepare", 60)
	select {
	case c := <-got:
		if c.ID != id.String() {
			t.Errorf("got %+v", c)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("poll not served after the listener was killed")
	}
}

// BenchmarkCommandDispatch measures the time from the commit of a command
// to the agent having it, with the agent parked in a long-poll over TLS, as
// p50/p99 over 300 sequential commands. Run with -benchtime 1x.
func BenchmarkCommandDispatch(b *testing.B) {
	f := newFixture(b)
	a := f.newInstance(b)
	const n = 300
	for range b.N {
		received := make(chan time.Time)
		go func() {
			for range n {
				for {
					code, _ := a.request(b, "GET", protocol.PathCommands+"?wait=30", nil)
					if code == 200 {
						received <- time.Now()
						break
					}
				}
			}
		}()
		lat := make([]time.Duration, n)
		for i := range n {
			time.Sleep(2 * time.Millisecond) // let the poll park again
			// Measured from before the insert: includes the insert and its
			// commit, so it bounds commit→delivery from above.
			committed := time.Now()
			f.insertCommand(b, a.id, "noop", 600)
			lat[i] = (<-received).Sub(committed)
		}
		slices.Sort(lat)
		b.ReportMetric(float64(lat[n/2].Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(lat[n*99/100].Microseconds())/1000, "p99-ms")
	}
}

// Commands queued in one transaction share created_at; they must still
// reach the agent in the order they were queued.
func TestCommandsDeliveredInQueueOrder(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	a := f.newInstance(t)
	tx, err := f.pool.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, name := range []string{"create_databases", "create_users", "grant_access", "revoke_access", "delete_user"} {
		id := uuid.New()
		if _, err := store.New(tx).InsertAgentCommand(ctx, store.InsertAgentCommandParams{
			ID: id, InstanceID: a.id, Name: name, Payload: []byte(`{}`), LeaseSeconds: 60}); err != nil {
			t.Fatal(err)
		}
		want = append(want, id.String())
	}
	if err := tx.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for i, id := range want {
		code, c := a.poll(t, 0)
		if code != 200 || c.ID != id {
			t.Fatalf("delivery %d: got %d %s, want %s", i, code, c.ID, id)
		}
		if code, _ := a.request(t, "POST", strings.Replace(protocol.PathResult, "{id}", c.ID, 1), protocol.Result{OK: true}); code != http.StatusNoContent {
			t.Fatalf("result: %d", code)
		}
	}
}
