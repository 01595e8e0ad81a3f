package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/rivertype"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/internal/provider/local"
	"github.com/coffer-dbaas/coffer/internal/seed"
	"github.com/coffer-dbaas/coffer/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

type fixture struct {
	pool *pgxpool.Pool
	deps *Deps
	root string
}

// newFixture uses the real local provider; the "agent" it starts is a
// shell that sleeps and, like the real agent, survives SIGHUP: these tests
// exercise the jobs, not the guest.
func newFixture(t *testing.T) *fixture {
	t.Helper()
	pool := testdb.New(t)
	if err := seed.Catalog(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	if _, err := store.New(pool).UpsertProject(context.Background(), store.UpsertProjectParams{ID: "p1", Name: "p1"}); err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	_ = os.Chmod(root, 0o755)
	prov, err := local.New(local.Config{
		Root:          root,
		AgentCommand:  []string{"/bin/sh", "-c", "trap : HUP; while :; do sleep 600 & wait; done", "fake-agent"},
		AddressPrefix: "127.99",
		Logger:        slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{pool: pool, root: root, deps: &Deps{Pool: pool, Provider: prov, AgentAPIURL: "https://127.0.0.1:1",
		AgentCACert: "-", BuildTimeout: time.Minute, Logger: slog.New(slog.DiscardHandler)}}
	t.Cleanup(func() {
		entries, _ := os.ReadDir(root)
		for _, e := range entries {
			_ = prov.DeleteServer(context.Background(), e.Name())
		}
	})
	return f
}

func (f *fixture) newInstance(t *testing.T, task string) uuid.UUID {
	t.Helper()
	id := uuid.New()
	if _, err := f.pool.Exec(context.Background(), `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id, task)
		SELECT $1, 'p1', 'i', '1', 1, id, $2 FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, id, task); err != nil {
		t.Fatal(err)
	}
	return id
}

type argsWithOpts interface {
	river.JobArgs
	InsertOpts() river.InsertOpts
}

func job[T argsWithOpts](args T, attempt int) *river.Job[T] {
	return &river.Job[T]{JobRow: &rivertype.JobRow{Attempt: attempt, MaxAttempts: args.InsertOpts().MaxAttempts}, Args: args}
}

func (f *fixture) instance(t *testing.T, id uuid.UUID) store.Instance {
	t.Helper()
	row, err := store.New(f.pool).GetInstanceAnyProject(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return row.Instance
}

func (f *fixture) events(t *testing.T, id uuid.UUID) string {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT kind FROM event WHERE resource_id = $1 ORDER BY id", id)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		kinds = append(kinds, k)
	}
	return strings.Join(kinds, ",")
}

func agentPID(t *testing.T, root string, id uuid.UUID) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, id.String(), "agent.pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return pid
}

func alive(pid int) bool { return pid > 0 && syscall.Kill(pid, 0) == nil }

func TestProvisionIsIdempotentAndRotatesCredential(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id := f.newInstance(t, "BUILDING")
	w := &ProvisionInstanceWorker{deps: f.deps}
	if err := w.Work(ctx, job(ProvisionInstance{InstanceID: id}, 1)); err != nil {
		t.Fatal(err)
	}
	first := f.instance(t, id)
	if first.ComputeStatus != provider.StatusActive || !strings.HasPrefix(first.Address, "127.99.") || first.Port != 5432 || first.AgentTokenHash == nil {
		t.Fatalf("after provision: %+v", first)
	}
	pid := agentPID(t, f.root, id)
	var cfg protocol.AgentConfig
	b, _ := os.ReadFile(filepath.Join(f.root, id.String(), "agent.json"))
	if err := json.Unmarshal(b, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.InstanceID != id.String() || cfg.Datastore != "postgresql" || string(auth.Hash(cfg.Token)) != string(first.AgentTokenHash) {
		t.Errorf("agent config does not carry the stored credential: %+v", cfg)
	}
	// A retry (the worker died after creating the server) reuses the
	// server and rotates the credential; still one agent.
	if err := w.Work(ctx, job(ProvisionInstance{InstanceID: id}, 2)); err != nil {
		t.Fatal(err)
	}
	second := f.instance(t, id)
	if second.Address != first.Address || string(second.AgentTokenHash) == string(first.AgentTokenHash) {
		t.Errorf("retry: address %s→%s, credential rotated: %v", first.Address, second.Address, string(second.AgentTokenHash) != string(first.AgentTokenHash))
	}
	if got := agentPID(t, f.root, id); got != pid || !alive(pid) {
		t.Errorf("retry started another agent: %d → %d", pid, got)
	}
	// Nothing to do for an instance that is no longer building.
	other := f.newInstance(t, "NONE")
	if err := w.Work(ctx, job(ProvisionInstance{InstanceID: other}, 1)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(f.root, other.String())); !os.IsNotExist(err) {
		t.Errorf("provisioned an instance that is not building")
	}
}

func TestProvisionFailureIsRecordedOnLastAttempt(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	// A datastore without a standard port cannot be placed by the local provider.
	var dsID uuid.UUID
	if err := f.pool.QueryRow(ctx, "SELECT id FROM datastore WHERE name = 'redis'").Scan(&dsID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "INSERT INTO datastore_version (id, datastore_id, name, version, manager, active) VALUES ($1, $2, 'x', 'x', 'oracle', true)", uuid.New(), dsID); err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	if _, err := f.pool.Exec(ctx, `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id)
		SELECT $1, 'p1', 'i', '1', 1, id FROM datastore_version WHERE manager = 'oracle'`, id); err != nil {
		t.Fatal(err)
	}
	w := &ProvisionInstanceWorker{deps: f.deps}
	err := w.Work(ctx, job(ProvisionInstance{InstanceID: id}, 1))
	if err == nil {
		t.Fatal("provision of an unplaceable datastore succeeded")
	}
	if inst := f.instance(t, id); inst.Task != "BUILDING" {
		t.Errorf("an attempt with retries left changed the task to %s", inst.Task)
	}
	err = w.Work(ctx, job(ProvisionInstance{InstanceID: id}, 8))
	var cancel *rivertype.JobCancelError
	if !errors.As(err, &cancel) {
		t.Fatalf("last attempt: %v, want the job cancelled", err)
	}
	inst := f.instance(t, id)
	if inst.Task != "ERROR_BUILDING_SERVER" || inst.FaultMessage == "" || inst.FaultDetails == "" || inst.FaultAt == nil {
		t.Errorf("after final failure: %+v", inst)
	}
	if ev := f.events(t, id); ev != "instance.error" {
		t.Errorf("events = %q", ev)
	}
}

func (f *fixture) completedPrepare(t *testing.T, id uuid.UUID, res protocol.Result) uuid.UUID {
	t.Helper()
	cmdID := uuid.New()
	state := "succeeded"
	if !res.OK {
		state = "failed"
	}
	b, _ := json.Marshal(res)
	if _, err := f.pool.Exec(context.Background(), `INSERT INTO agent_command (id, instance_id, name, state, result, error)
		VALUES ($1, $2, 'prepare', $3, $4, $5)`, cmdID, id, state, b, res.Error); err != nil {
		t.Fatal(err)
	}
	return cmdID
}

func TestCompletePrepare(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	w := &CompletePrepareWorker{deps: f.deps}

	ok := f.newInstance(t, "BUILDING")
	cmd := f.completedPrepare(t, ok, protocol.Result{OK: true, ServiceStatus: "healthy"})
	for range 2 { // a duplicate continuation changes nothing
		if err := w.Work(ctx, job(CompletePrepare{InstanceID: ok, CommandID: cmd}, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if inst := f.instance(t, ok); inst.Task != "NONE" || inst.ServiceStatus != "healthy" {
		t.Errorf("after successful prepare: task %s service %s", inst.Task, inst.ServiceStatus)
	}
	if ev := f.events(t, ok); ev != "instance.active" {
		t.Errorf("events = %q, want one instance.active", ev)
	}

	bad := f.newInstance(t, "BUILDING")
	cmd = f.completedPrepare(t, bad, protocol.Result{OK: false, Error: "initdb: disk full"})
	if err := w.Work(ctx, job(CompletePrepare{InstanceID: bad, CommandID: cmd}, 1)); err != nil {
		t.Fatal(err)
	}
	inst := f.instance(t, bad)
	if inst.Task != "ERROR_BUILDING_GUEST" || inst.FaultDetails != "initdb: disk full" {
		t.Errorf("after failed prepare: %+v", inst)
	}
	if ev := f.events(t, bad); ev != "instance.error" {
		t.Errorf("events = %q", ev)
	}
}

func TestDeleteRemovesServerAndIsIdempotent(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id := f.newInstance(t, "BUILDING")
	if err := (&ProvisionInstanceWorker{deps: f.deps}).Work(ctx, job(ProvisionInstance{InstanceID: id}, 1)); err != nil {
		t.Fatal(err)
	}
	pid := agentPID(t, f.root, id)
	if _, err := f.pool.Exec(ctx, "INSERT INTO agent_command (id, instance_id, name) VALUES ($1, $2, 'prepare')", uuid.New(), id); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE instance SET task = 'DELETING' WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	w := &DeleteInstanceWorker{deps: f.deps}
	for range 2 {
		if err := w.Work(ctx, job(DeleteInstance{InstanceID: id}, 1)); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for alive(pid) && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	if alive(pid) {
		t.Errorf("agent %d still running", pid)
	}
	if _, err := os.Stat(filepath.Join(f.root, id.String())); !os.IsNotExist(err) {
		t.Errorf("instance directory left: %v", err)
	}
	inst := f.instance(t, id)
	if inst.DeletedAt == nil || inst.AgentTokenHash != nil {
		t.Errorf("row after delete: %+v", inst)
	}
	var open int
	_ = f.pool.QueryRow(ctx, "SELECT count(*) FROM agent_command WHERE instance_id = $1 AND state = 'pending'", id).Scan(&open)
	if open != 0 {
		t.Errorf("%d commands left pending", open)
	}
	if ev := f.events(t, id); ev != "instance.deleted" {
		t.Errorf("events = %q, want one instance.deleted", ev)
	}
}

func TestWatchInstances(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	stuck := f.newInstance(t, "BUILDING")
	young := f.newInstance(t, "BUILDING")
	quiet := f.newInstance(t, "NONE")
	fresh := f.newInstance(t, "NONE")
	if _, err := f.pool.Exec(ctx, "UPDATE instance SET created_at = now() - interval '2 minutes' WHERE id = $1", stuck); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE instance SET service_status = 'healthy', heartbeat_at = now() - interval '5 minutes' WHERE id = $1", quiet); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE instance SET service_status = 'healthy', heartbeat_at = now() WHERE id = $1", fresh); err != nil {
		t.Fatal(err)
	}
	// Restoring builds get the build timeout (a minute here) plus their
	// chain's plain size at restoreFloorRate: 1 GiB and its 512 MiB child
	// allow 153 s more, so 2 minutes is not late, 5 minutes is.
	full, inc := uuid.New(), uuid.New()
	for _, b := range []struct {
		id     uuid.UUID
		parent any
		bytes  int64
	}{{full, nil, 1 << 30}, {inc, full, 512 << 20}} {
		if _, err := f.pool.Exec(ctx, `INSERT INTO backup (id, project_id, datastore_version_id, parent_id, name, status, location, prefix,
			key_id, wrapped_key, segment_size, bytes_done)
			SELECT $1, 'p1', id, $2, 'b', 'COMPLETED', 'file', 'x', gen_random_uuid(), '\x00', 1, $3 FROM datastore_version LIMIT 1`, b.id, b.parent, b.bytes); err != nil {
			t.Fatal(err)
		}
	}
	restoring := f.newInstance(t, "BUILDING")
	lateRestore := f.newInstance(t, "BUILDING")
	for id, age := range map[uuid.UUID]string{restoring: "2 minutes", lateRestore: "5 minutes"} {
		if _, err := f.pool.Exec(ctx, "UPDATE instance SET created_at = now() - $2::interval, restore_backup_id = $3 WHERE id = $1", id, age, inc); err != nil {
			t.Fatal(err)
		}
	}
	w := &WatchInstancesWorker{deps: f.deps}
	for range 2 { // the second tick finds nothing new
		if err := w.Work(ctx, job(WatchInstances{}, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if inst := f.instance(t, stuck); inst.Task != "ERROR_GUEST_TIMEOUT" || inst.FaultMessage == "" {
		t.Errorf("stuck build: %+v", inst)
	}
	if inst := f.instance(t, young); inst.Task != "BUILDING" {
		t.Errorf("young build: %s", inst.Task)
	}
	if inst := f.instance(t, restoring); inst.Task != "BUILDING" {
		t.Errorf("restoring build within its allowance: %s %s", inst.Task, inst.FaultMessage)
	}
	if inst := f.instance(t, lateRestore); inst.Task != "ERROR_GUEST_TIMEOUT" || !strings.Contains(inst.FaultMessage, "within 3m33s") {
		t.Errorf("late restoring build: %s %q, want the timeout with its allowance (3m33s)", inst.Task, inst.FaultMessage)
	}
	if inst := f.instance(t, quiet); inst.ServiceStatus != "guestagent error" {
		t.Errorf("quiet instance: %s", inst.ServiceStatus)
	}
	if inst := f.instance(t, fresh); inst.ServiceStatus != "healthy" {
		t.Errorf("fresh instance: %s", inst.ServiceStatus)
	}
	if ev := f.events(t, stuck) + "|" + f.events(t, quiet) + "|" + f.events(t, fresh); ev != "instance.error|instance.heartbeat_lost|" {
		t.Errorf("events = %q", ev)
	}
}
