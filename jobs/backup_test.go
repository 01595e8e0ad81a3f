package jobs

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/seed"
	"github.com/coffer-dbaas/coffer/internal/testdb"
	"github.com/coffer-dbaas/coffer/openapi"
)

// backupFixture is a database with project p1, the backup keyring and a
// file object store; the "agent" is the test, writing what a real one
// would through the store and the queries the agent API uses.
type backupFixture struct {
	pool  *pgxpool.Pool
	deps  *Deps
	rc    *river.Client[pgx.Tx]
	files *objectstore.File
}

func newBackupFixture(t *testing.T) *backupFixture {
	t.Helper()
	ctx := context.Background()
	pool := testdb.New(t)
	if err := seed.Catalog(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := store.New(pool).UpsertProject(ctx, store.UpsertProjectParams{ID: "p1", Name: "p1"}); err != nil {
		t.Fatal(err)
	}
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	keys, err := backupkey.New(master)
	if err != nil {
		t.Fatal(err)
	}
	files, err := objectstore.NewFile(t.TempDir(), "https://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	return &backupFixture{pool: pool, rc: rc, files: files,
		deps: &Deps{Pool: pool, Store: files, Keys: keys, Logger: slog.New(slog.DiscardHandler)}}
}

// activeInstance is an ACTIVE, healthy instance of p1 with a fresh heartbeat.
func (f *backupFixture) activeInstance(t *testing.T) uuid.UUID {
	t.Helper()
	id := uuid.New()
	f.exec(t, `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id, task, compute_status, service_status, heartbeat_at)
		SELECT $1, 'p1', 'i', '1', 1, id, 'NONE', 'ACTIVE', 'healthy', now() FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, id)
	return id
}

func (f *backupFixture) exec(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (f *backupFixture) start(t *testing.T, in NewBackup) (store.Backup, error) {
	t.Helper()
	var b store.Backup
	err := pgx.BeginFunc(context.Background(), f.pool, func(tx pgx.Tx) error {
		var err error
		b, err = StartBackup(context.Background(), tx, f.rc, f.deps.Keys, in)
		return err
	})
	return b, err
}

func (f *backupFixture) backup(t *testing.T, id uuid.UUID) store.Backup {
	t.Helper()
	b, err := store.New(f.pool).GetBackupAnyProject(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *backupFixture) command(t *testing.T, b store.Backup) (store.AgentCommand, protocol.BackupRequest) {
	t.Helper()
	cmd, err := store.New(f.pool).GetAgentCommand(context.Background(), store.GetAgentCommandParams{ID: b.CommandID.UUID, InstanceID: b.InstanceID.UUID})
	if err != nil {
		t.Fatal(err)
	}
	var req protocol.BackupRequest
	_ = json.Unmarshal(cmd.Payload, &req)
	return cmd, req
}

// upload plays the agent taking backup b: it leases the command, stores
// segments of the given sizes (random bytes) and reports each.
func (f *backupFixture) upload(t *testing.T, b store.Backup, sizes ...int) (raw int64, stored int64) {
	t.Helper()
	ctx := context.Background()
	q := store.New(f.pool)
	if _, err := q.LeaseAgentCommand(ctx, b.InstanceID.UUID); err != nil {
		t.Fatal(err)
	}
	if err := f.files.EnsureContainer(ctx, b.Container); err != nil { // the agent API's first grant does this
		t.Fatal(err)
	}
	for i, n := range sizes {
		data := make([]byte, n)
		_, _ = rand.Read(data)
		if err := f.files.Put(ctx, b.Container, SegmentKey(b.Prefix, i), bytes.NewReader(data), int64(n)); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(data)
		if err := q.UpsertBackupSegment(ctx, store.UpsertBackupSegmentParams{BackupID: b.ID, Index: int32(i), Size: int64(n), Sha256: hex.EncodeToString(sum[:])}); err != nil {
			t.Fatal(err)
		}
		if err := q.StartBackupProgress(ctx, b.ID); err != nil {
			t.Fatal(err)
		}
		stored += int64(n)
	}
	return stored * 3, stored
}

// result records the agent's result as the agent API does and runs the
// continuation.
func (f *backupFixture) result(t *testing.T, b store.Backup, res protocol.Result) {
	t.Helper()
	ctx := context.Background()
	raw, _ := json.Marshal(res)
	state := "succeeded"
	if !res.OK {
		state = "failed"
	}
	if _, err := store.New(f.pool).CompleteAgentCommand(ctx, store.CompleteAgentCommandParams{
		ID: b.CommandID.UUID, InstanceID: b.InstanceID.UUID, State: state, Result: raw, Error: res.Error,
	}); err != nil {
		t.Fatal(err)
	}
	w := &CompleteCommandWorker{deps: f.deps}
	if err := w.Work(ctx, job(CompleteCommand{InstanceID: b.InstanceID.UUID, CommandID: b.CommandID.UUID}, 1)); err != nil {
		t.Fatal(err)
	}
}

func okResult(t *testing.T, segments int, stored, raw int64) protocol.Result {
	t.Helper()
	out, _ := json.Marshal(protocol.BackupResult{Point: protocol.BackupPoint{StartLSN: "0/2000028", EndLSN: "0/2000100", Timeline: 1,
		StartWAL: "000000010000000000000002", EndWAL: "000000010000000000000002"}, Segments: segments, StoredBytes: stored, RawBytes: raw})
	return protocol.Result{OK: true, Output: out, ServiceStatus: protocol.ServiceHealthy}
}

func (f *backupFixture) finalize(t *testing.T, id uuid.UUID, attempt int) error {
	t.Helper()
	w := &FinalizeBackupWorker{deps: f.deps}
	return w.Work(context.Background(), job(FinalizeBackup{BackupID: id}, attempt))
}

func (f *backupFixture) running(t *testing.T, inst uuid.UUID) uuid.NullUUID {
	t.Helper()
	var id uuid.NullUUID
	if err := f.pool.QueryRow(context.Background(), "SELECT running_backup_id FROM instance WHERE id = $1", inst).Scan(&id); err != nil {
		t.Fatal(err)
	}
	return id
}

func (f *backupFixture) events(t *testing.T, id uuid.UUID) string {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT kind FROM event WHERE resource_id = $1 ORDER BY id", id)
	if err != nil {
		t.Fatal(err)
	}
	kinds, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return strings.Join(kinds, ",")
}

func (f *backupFixture) objects(t *testing.T, b store.Backup) []string {
	t.Helper()
	objs, err := f.files.List(context.Background(), b.Container, b.Prefix+"/")
	if err != nil && !errors.Is(err, objectstore.ErrNotFound) {
		t.Fatal(err)
	}
	var keys []string
	for _, o := range objs {
		keys = append(keys, o.Key)
	}
	return keys
}

func TestBackupCompletesWithManifest(t *testing.T) {
	t.Parallel()
	f := newBackupFixture(t)
	ctx := context.Background()
	inst := f.activeInstance(t)
	b, err := f.start(t, NewBackup{ProjectID: "p1", InstanceID: inst, Name: "full"})
	if err != nil {
		t.Fatal(err)
	}
	if b.Status != BackupNew || f.running(t, inst).UUID != b.ID || b.Container != DefaultBackupSettings.Container {
		t.Fatalf("started: %+v", b)
	}
	_, req := f.command(t, b)
	if len(req.DataKey) != 32 || req.Kind != protocol.BackupFull {
		t.Fatalf("command payload: %+v", req)
	}
	// A second backup of the busy instance is refused (422).
	var fault *openapi.Fault
	if _, err := f.start(t, NewBackup{ProjectID: "p1", InstanceID: inst, Name: "x"}); !errors.As(err, &fault) || fault.Status != 422 {
		t.Errorf("second backup: %v", err)
	}
	raw, stored := f.upload(t, b, 1000, 1000, 10)
	if s := f.backup(t, b.ID).Status; s != BackupBuilding {
		t.Errorf("after the first segment: %s", s)
	}
	f.result(t, b, okResult(t, 3, stored, raw))
	b = f.backup(t, b.ID)
	if b.Status != BackupSaving || b.SegmentCount != 3 {
		t.Fatalf("after the result: %s, %d segments", b.Status, b.SegmentCount)
	}
	if f.running(t, inst).UUID != b.ID {
		t.Error("the instance stopped showing BACKUP before the manifest was written")
	}
	cmd, _ := f.command(t, b)
	if string(cmd.Payload) != "{}" {
		t.Errorf("the completed command still holds its payload: %s", cmd.Payload)
	}
	if err := f.finalize(t, b.ID, 1); err != nil {
		t.Fatal(err)
	}
	b = f.backup(t, b.ID)
	if b.Status != BackupCompleted || b.CompletedAt == nil || f.running(t, inst).Valid {
		t.Fatalf("after finalize: %s, running %v", b.Status, f.running(t, inst))
	}
	rd, err := f.files.Get(ctx, b.Container, ManifestKey(b.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(rd)
	rd.Close()
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		t.Fatal(err)
	}
	if m.BackupID != b.ID.String() || m.Kind != protocol.BackupFull || len(m.Segments) != 3 || m.Segments[2].Size != 10 ||
		m.KeyID != b.KeyID.String() || m.Point.EndLSN != "0/2000100" || m.Datastore.Type != "postgresql" || m.StoredBytes != stored {
		t.Errorf("manifest: %s", body)
	}
	segs, _ := store.New(f.pool).ListBackupSegments(ctx, b.ID)
	for i, s := range segs {
		if m.Segments[i].SHA256 != s.Sha256 || m.Segments[i].Key != SegmentKey(b.Prefix, i) {
			t.Errorf("manifest segment %d: %+v", i, m.Segments[i])
		}
	}
	if bytes.Contains(body, []byte(base64.StdEncoding.EncodeToString(req.DataKey))) || bytes.Contains(body, b.WrappedKey) {
		t.Error("the manifest holds the key")
	}
	if ev := f.events(t, b.ID); ev != EventBackupCreated+","+EventBackupCompleted {
		t.Errorf("events: %s", ev)
	}
	// Finalize again: nothing changes.
	if err := f.finalize(t, b.ID, 2); err != nil {
		t.Fatal(err)
	}

	// Incremental over it: the last COMPLETED backup is the parent.
	inc, err := f.start(t, NewBackup{ProjectID: "p1", InstanceID: inst, Name: "inc", Incremental: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, req := f.command(t, inc); !inc.ParentID.Valid || inc.ParentID.UUID != b.ID || req.Kind != protocol.BackupIncremental || req.Parent.EndLSN != "0/2000100" {
		t.Errorf("incremental: parent %v, payload %+v", inc.ParentID, req)
	}
}

func TestBackupFailures(t *testing.T) {
	t.Parallel()
	f := newBackupFixture(t)
	ctx := context.Background()

	// The agent fails: FAILED with its error, the instance free again,
	// the uploaded segments purged.
	inst := f.activeInstance(t)
	b, err := f.start(t, NewBackup{ProjectID: "p1", InstanceID: inst, Name: "x"})
	if err != nil {
		t.Fatal(err)
	}
	f.upload(t, b, 100)
	f.result(t, b, protocol.Result{OK: false, Error: "pg_basebackup: could not connect to server"})
	b = f.backup(t, b.ID)
	if b.Status != BackupFailed || !strings.Contains(b.FailReason, "could not connect") || f.running(t, inst).Valid {
		t.Fatalf("failed on the guest: %s %q, running %v", b.Status, b.FailReason, f.running(t, inst))
	}
	var purges int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE kind = 'purge_backup_objects' AND args->>'backup_id' = $1", b.ID.String()).Scan(&purges); err != nil || purges != 2 {
		t.Errorf("purge jobs: %d %v", purges, err)
	}
	purge := &PurgeBackupObjectsWorker{deps: f.deps}
	if err := purge.Work(ctx, job(PurgeBackupObjects{BackupID: b.ID, Pass: 1}, 1)); err != nil {
		t.Fatal(err)
	}
	if objs := f.objects(t, b); len(objs) != 0 {
		t.Errorf("objects left after the purge: %v", objs)
	}

	// The agent reports a segment the store does not hold (the store lost
	// it, or the upload never landed): FAILED, never COMPLETED.
	b, err = f.start(t, NewBackup{ProjectID: "p1", InstanceID: inst, Name: "y"})
	if err != nil {
		t.Fatal(err)
	}
	raw, stored := f.upload(t, b, 100, 100)
	if err := f.files.Delete(ctx, b.Container, SegmentKey(b.Prefix, 1)); err != nil {
		t.Fatal(err)
	}
	f.result(t, b, okResult(t, 2, stored, raw))
	if err := f.finalize(t, b.ID, 1); err != nil {
		t.Fatal(err)
	}
	b = f.backup(t, b.ID)
	if b.Status != BackupFailed || !strings.Contains(b.FailReason, "segment 1") || f.running(t, inst).Valid {
		t.Fatalf("missing segment: %s %q", b.Status, b.FailReason)
	}
	if _, err := f.files.Stat(ctx, b.Container, ManifestKey(b.Prefix)); !errors.Is(err, objectstore.ErrNotFound) {
		t.Errorf("a failed backup has a manifest: %v", err)
	}

	// Fewer segments recorded than the agent claims.
	b, err = f.start(t, NewBackup{ProjectID: "p1", InstanceID: inst, Name: "z"})
	if err != nil {
		t.Fatal(err)
	}
	raw, stored = f.upload(t, b, 100)
	f.result(t, b, okResult(t, 2, stored, raw))
	if err := f.finalize(t, b.ID, 1); err != nil {
		t.Fatal(err)
	}
	if b = f.backup(t, b.ID); b.Status != BackupFailed || !strings.Contains(b.FailReason, "2 segments") {
		t.Errorf("segment count mismatch: %s %q", b.Status, b.FailReason)
	}
}

func TestBackupWatchdog(t *testing.T) {
	t.Parallel()
	f := newBackupFixture(t)
	ctx := context.Background()
	w := &WatchBackupWorker{deps: f.deps}
	watch := func(id uuid.UUID) error { return w.Work(ctx, job(WatchBackup{BackupID: id}, 1)) }
	started := func(inst uuid.UUID) store.Backup {
		t.Helper()
		b, err := f.start(t, NewBackup{ProjectID: "p1", InstanceID: inst, Name: "w"})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}

	// Alive and uploading: the watchdog looks again later.
	inst := f.activeInstance(t)
	b := started(inst)
	f.upload(t, b, 10)
	var snooze *river.JobSnoozeError
	if err := watch(b.ID); !errors.As(err, &snooze) {
		t.Fatalf("healthy backup: %v, want a snooze", err)
	}

	// The agent killed: no heartbeat for longer than the expiry.
	f.exec(t, "UPDATE instance SET heartbeat_at = now() - interval '3 minutes' WHERE id = $1", inst)
	if err := watch(b.ID); err != nil {
		t.Fatal(err)
	}
	b = f.backup(t, b.ID)
	cmd, _ := f.command(t, b)
	if b.Status != BackupFailed || !strings.Contains(b.FailReason, "stopped responding") || f.running(t, inst).Valid ||
		cmd.State != "cancelled" || string(cmd.Payload) != "{}" {
		t.Fatalf("agent gone: %s %q, command %s %s", b.Status, b.FailReason, cmd.State, cmd.Payload)
	}
	// Its result, should it come after all, changes nothing.
	if _, err := store.New(f.pool).CompleteAgentCommand(ctx, store.CompleteAgentCommandParams{ID: b.CommandID.UUID, InstanceID: inst, State: "succeeded"}); !errors.Is(err, pgx.ErrNoRows) {
		t.Errorf("a result for the cancelled command was recorded: %v", err)
	}

	// The agent alive but no longer working on it (restarted): no progress.
	inst = f.activeInstance(t)
	b = started(inst)
	f.upload(t, b, 10)
	f.exec(t, "UPDATE backup SET progress_at = now() - interval '11 minutes', created_at = now() - interval '12 minutes' WHERE id = $1", b.ID)
	f.exec(t, "UPDATE agent_command SET leased_until = now() - interval '11 minutes' + make_interval(secs => lease_seconds) WHERE id = $1", b.CommandID.UUID)
	if err := watch(b.ID); err != nil {
		t.Fatal(err)
	}
	if b = f.backup(t, b.ID); b.Status != BackupFailed || !strings.Contains(b.FailReason, "no progress") {
		t.Errorf("stalled: %s %q", b.Status, b.FailReason)
	}

	// Never picked up.
	inst = f.activeInstance(t)
	b = started(inst)
	f.exec(t, "UPDATE backup SET created_at = now() - interval '11 minutes' WHERE id = $1", b.ID)
	if err := watch(b.ID); err != nil {
		t.Fatal(err)
	}
	if b = f.backup(t, b.ID); b.Status != BackupFailed || !strings.Contains(b.FailReason, "did not start") {
		t.Errorf("never started: %s %q", b.Status, b.FailReason)
	}

	// The instance deleted meanwhile (its commands cancelled).
	inst = f.activeInstance(t)
	b = started(inst)
	f.exec(t, "UPDATE instance SET task = 'DELETING' WHERE id = $1", inst)
	f.exec(t, "UPDATE agent_command SET state = 'cancelled' WHERE instance_id = $1", inst)
	if err := watch(b.ID); err != nil {
		t.Fatal(err)
	}
	if b = f.backup(t, b.ID); b.Status != BackupFailed || !strings.Contains(b.FailReason, "deleted") {
		t.Errorf("instance deleted: %s %q", b.Status, b.FailReason)
	}
	// A finished backup's watchdog ends.
	if err := watch(b.ID); err != nil {
		t.Errorf("watch of a failed backup: %v", err)
	}
}

func TestStartBackupRefusals(t *testing.T) {
	t.Parallel()
	f := newBackupFixture(t)
	inst := f.activeInstance(t)
	var fault *openapi.Fault
	check := func(what string, in NewBackup, status int) {
		t.Helper()
		_, err := f.start(t, in)
		if !errors.As(err, &fault) || fault.Status != status {
			t.Errorf("%s: %v, want %d", what, err, status)
		}
	}
	check("unknown instance", NewBackup{ProjectID: "p1", InstanceID: uuid.New(), Name: "x"}, 404)
	if _, err := store.New(f.pool).UpsertProject(context.Background(), store.UpsertProjectParams{ID: "p2", Name: "p2"}); err != nil {
		t.Fatal(err)
	}
	check("another project's instance", NewBackup{ProjectID: "p2", InstanceID: inst, Name: "x"}, 404)
	unknown := uuid.New()
	check("unknown parent", NewBackup{ProjectID: "p1", InstanceID: inst, Name: "x", ParentID: &unknown}, 404)
	f.exec(t, "UPDATE instance SET service_status = 'failed to spawn' WHERE id = $1", inst)
	check("datastore failed", NewBackup{ProjectID: "p1", InstanceID: inst, Name: "x"}, 422)
	f.exec(t, "UPDATE instance SET service_status = 'healthy' WHERE id = $1", inst)
	f.exec(t, "INSERT INTO quota (project_id, resource, hard_limit) VALUES ('p1', 'backups', 0)")
	check("quota", NewBackup{ProjectID: "p1", InstanceID: inst, Name: "x"}, 413)
	var n int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM backup").Scan(&n); err != nil || n != 0 {
		t.Errorf("refusals wrote %d backups (%v)", n, err)
	}

	// Concurrent starts on one instance: exactly one wins.
	f.exec(t, "DELETE FROM quota")
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.start(t, NewBackup{ProjectID: "p1", InstanceID: inst, Name: "race"})
		}()
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		if err == nil {
			won++
		} else if !errors.As(err, &fault) || fault.Status != 422 {
			t.Errorf("a losing start: %v", err)
		}
	}
	if won != 1 {
		t.Errorf("%d concurrent backups started, want 1", won)
	}
}

func TestDeleteBackupTree(t *testing.T) {
	t.Parallel()
	f := newBackupFixture(t)
	ctx := context.Background()
	inst := f.activeInstance(t)
	complete := func(in NewBackup) store.Backup {
		t.Helper()
		b, err := f.start(t, in)
		if err != nil {
			t.Fatal(err)
		}
		raw, stored := f.upload(t, b, 50, 20)
		f.result(t, b, okResult(t, 2, stored, raw))
		if err := f.finalize(t, b.ID, 1); err != nil {
			t.Fatal(err)
		}
		return f.backup(t, b.ID)
	}
	full := complete(NewBackup{ProjectID: "p1", InstanceID: inst, Name: "full"})
	inc1 := complete(NewBackup{ProjectID: "p1", InstanceID: inst, Name: "inc1", Incremental: true})
	inc2 := complete(NewBackup{ProjectID: "p1", InstanceID: inst, Name: "inc2", Incremental: true})
	other := complete(NewBackup{ProjectID: "p1", InstanceID: inst, Name: "full2"})
	if inc2.ParentID.UUID != inc1.ID || inc1.ParentID.UUID != full.ID {
		t.Fatalf("chain: %v %v", inc1.ParentID, inc2.ParentID)
	}
	f.exec(t, "UPDATE backup SET delete_requested_at = now() WHERE id = ANY($1)", []uuid.UUID{full.ID, inc1.ID, inc2.ID})
	w := &DeleteBackupWorker{deps: f.deps}
	for attempt := 1; attempt <= 2; attempt++ { // idempotent
		if err := w.Work(ctx, job(DeleteBackup{BackupID: full.ID}, attempt)); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []store.Backup{full, inc1, inc2} {
		if got := f.backup(t, b.ID); got.DeletedAt == nil {
			t.Errorf("%s not deleted", b.Name)
		}
		if objs := f.objects(t, b); len(objs) != 0 {
			t.Errorf("%s: objects left %v", b.Name, objs)
		}
	}
	if got := f.backup(t, other.ID); got.DeletedAt != nil || len(f.objects(t, other)) != 3 {
		t.Errorf("an unrelated backup was touched: %v, %v", got.DeletedAt, f.objects(t, other))
	}
	var deletedFirst uuid.UUID
	if err := f.pool.QueryRow(ctx, "SELECT resource_id FROM event WHERE kind = $1 ORDER BY id LIMIT 1", EventBackupDeleted).Scan(&deletedFirst); err != nil || deletedFirst != inc2.ID {
		t.Errorf("first deleted: %v (%v), want the deepest, %s", deletedFirst, err, inc2.ID)
	}
	_ = time.Second
}
