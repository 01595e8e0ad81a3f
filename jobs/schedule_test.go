package jobs

import (
	"context"
	"crypto/rand"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/seed"
	"github.com/coffer-dbaas/coffer/internal/testdb"
)

// schedFixture is a database with project p1 and the deps a worker
// replica has for schedules (no provider, no object store: the scheduler
// and retention need neither).
type schedFixture struct {
	pool  *pgxpool.Pool
	keys  *backupkey.Keyring
	store objectstore.Store
}

func newSchedFixture(t *testing.T) *schedFixture {
	t.Helper()
	pool := testdb.New(t)
	ctx := context.Background()
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
	fs, err := objectstore.NewFile(t.TempDir(), "https://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	return &schedFixture{pool: pool, keys: keys, store: fs}
}

// replica is one worker process's Deps: the backup jobs StartBackup and
// retention queue need the object store (a file store here).
func (f *schedFixture) replica() *Deps {
	return &Deps{Pool: f.pool, Keys: f.keys, Store: f.store, Logger: slog.New(slog.DiscardHandler)}
}

func (f *schedFixture) exec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func (f *schedFixture) count(t testing.TB, sql string, args ...any) int {
	t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// instance adds an ACTIVE, healthy PostgreSQL instance of p1.
func (f *schedFixture) instance(t testing.TB) uuid.UUID {
	t.Helper()
	id := uuid.New()
	f.exec(t, `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id, task,
			compute_status, service_status, heartbeat_at)
		SELECT $1, 'p1', 'i', '1', 1, id, 'NONE', 'ACTIVE', 'healthy', now() FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, id)
	return id
}

// schedule adds a schedule of instance due at once.
func (f *schedFixture) schedule(t testing.TB, instance uuid.UUID, pattern string, incremental bool, keepLast int) uuid.UUID {
	t.Helper()
	id := uuid.New()
	f.exec(t, `INSERT INTO backup_schedule (id, project_id, instance_id, name, pattern, incremental, keep_last, next_run_at)
		VALUES ($1, 'p1', $2, 'sched', $3, $4, $5, now())`, id, instance, pattern, incremental, keepLast)
	return id
}

// client starts a River client: one worker replica, with the scheduler's
// periodic pass every 200ms (it runs on the elected leader only).
func (f *schedFixture) client(t *testing.T, id string, deps *Deps) *river.Client[pgx.Tx] {
	t.Helper()
	workers := river.NewWorkers()
	registerScheduleWorkers(workers, deps)
	registerBackupWorkers(workers, deps) // StartBackup queues WatchBackup, retention DeleteBackup
	rc, err := river.NewClient(riverpgxv5.New(f.pool), &river.Config{
		ID:      id,
		Queues:  map[string]river.QueueConfig{Queue: {MaxWorkers: 4}},
		Workers: workers,
		PeriodicJobs: []*river.PeriodicJob{river.NewPeriodicJob(river.PeriodicInterval(200*time.Millisecond),
			func() (river.JobArgs, *river.InsertOpts) {
				return ScheduleTick{}, &river.InsertOpts{UniqueOpts: river.UniqueOpts{ByPeriod: 100 * time.Millisecond}}
			}, &river.PeriodicJobOpts{RunOnStart: true})},
		FetchPollInterval: 100 * time.Millisecond,
		Logger:            slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := rc.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = rc.Stop(ctx)
	})
	return rc
}

// completeBackups plays the agent and FinalizeBackup: every NEW backup
// becomes COMPLETED, and its instance is free for the next one.
func (f *schedFixture) completeBackups(t testing.TB) {
	t.Helper()
	f.exec(t, `WITH done AS (
			UPDATE backup SET status = 'COMPLETED', completed_at = clock_timestamp(), updated_at = now()
			WHERE status = 'NEW' RETURNING id, instance_id)
		UPDATE instance i SET running_backup_id = NULL FROM done WHERE i.id = done.instance_id AND i.running_backup_id = done.id`)
}

// TestTwoReplicasOneBackupPerTick: two worker replicas (two River clients,
// each with its own Deps) on one database, schedules ticking every second,
// and on top of River's leader-only periodic pass both replicas running
// the scheduler's pass in a loop as fast as they can: every tick has
// exactly one execution and at most one backup, every backup belongs to
// exactly one execution, both replicas ran ticks (the busier one stops
// halfway), and retention keeps what
// it promises (the full schedule down to its last 2, the incremental
// chain whole: every backup in it is a parent of the next).
func TestTwoReplicasOneBackupPerTick(t *testing.T) {
	t.Parallel()
	f := newSchedFixture(t)
	full, incr, plain := f.instance(t), f.instance(t), f.instance(t)
	sFull := f.schedule(t, full, "@every 1s", false, 2)
	sIncr := f.schedule(t, incr, "@every 1s", true, 2)
	sPlain := f.schedule(t, plain, "@every 1s", false, 0)
	a, b := f.replica(), f.replica()
	clients := map[string]*river.Client[pgx.Tx]{
		"replica-a": f.client(t, "replica-a", a),
		"replica-b": f.client(t, "replica-b", b),
	}

	ctx, cancel := context.WithTimeout(t.Context(), 7*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	// Halfway, the replica that has run the most ticks stops (as a
	// replica scaled down would), so that the other one runs the rest:
	// which of two clients fetches a job first is otherwise luck, and one
	// of them often takes them all.
	wg.Go(func() {
		select {
		case <-ctx.Done():
			return
		case <-time.After(3500 * time.Millisecond):
		}
		busiest := "replica-a"
		_ = f.pool.QueryRow(ctx, `SELECT r FROM river_job, unnest(attempted_by) r
			WHERE kind = 'run_schedule' GROUP BY r ORDER BY count(*) DESC, r LIMIT 1`).Scan(&busiest)
		stopCtx, stop := context.WithTimeout(context.Background(), 10*time.Second)
		defer stop()
		if err := clients[busiest].Stop(stopCtx); err != nil {
			t.Errorf("stop %s: %v", busiest, err)
		}
		t.Logf("stopped %s halfway", busiest)
	})
	var passes sync.Map
	for i, d := range []*Deps{a, b, a, b} {
		wg.Go(func() {
			n := 0
			for ctx.Err() == nil {
				if _, err := d.SettleExecutions(ctx); err != nil && ctx.Err() == nil {
					t.Errorf("settle: %v", err)
				}
				if _, err := d.DispatchSchedules(ctx); err != nil && ctx.Err() == nil {
					t.Errorf("dispatch: %v", err)
				}
				n++
			}
			passes.Store(i, n)
		})
	}
	wg.Go(func() {
		for ctx.Err() == nil {
			f.completeBackups(t)
			time.Sleep(100 * time.Millisecond)
		}
	})
	wg.Wait()
	// Stop ticking, let the last jobs run, settle, and retain.
	f.exec(t, `UPDATE backup_schedule SET enabled = false`)
	waitFor(t, 10*time.Second, "run_schedule jobs to finish", func() bool {
		n := f.count(t, `SELECT count(*) FROM river_job WHERE kind = 'run_schedule' AND state NOT IN ('completed', 'discarded', 'cancelled')`)
		if n > 0 {
			var state, errs string
			_ = f.pool.QueryRow(t.Context(), `SELECT state, errors::text FROM river_job WHERE kind = 'run_schedule' AND state NOT IN ('completed', 'discarded', 'cancelled') LIMIT 1`).Scan(&state, &errs)
			t.Logf("%d run_schedule jobs left, e.g. %s %.500s", n, state, errs)
		}
		return n == 0
	})
	f.completeBackups(t)
	if _, err := a.SettleExecutions(t.Context()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "apply_retention jobs to finish", func() bool {
		return f.count(t, `SELECT count(*) FROM river_job WHERE kind = 'apply_retention' AND state NOT IN ('completed', 'discarded', 'cancelled')`) == 0
	})

	var loops []string
	passes.Range(func(k, v any) bool { loops = append(loops, fmt.Sprint(v)); return true })
	for _, s := range []uuid.UUID{sFull, sIncr, sPlain} {
		execs := f.count(t, `SELECT count(*) FROM schedule_execution WHERE schedule_id = $1`, s)
		ticks := f.count(t, `SELECT count(DISTINCT scheduled_at) FROM schedule_execution WHERE schedule_id = $1`, s)
		withBackup := f.count(t, `SELECT count(*) FROM schedule_execution WHERE schedule_id = $1 AND backup_id IS NOT NULL`, s)
		backups := f.count(t, `SELECT count(*) FROM backup WHERE schedule_id = $1`, s)
		distinct := f.count(t, `SELECT count(DISTINCT backup_id) FROM schedule_execution WHERE schedule_id = $1`, s)
		orphans := f.count(t, `SELECT count(*) FROM backup b WHERE schedule_id = $1
			AND NOT EXISTS (SELECT 1 FROM schedule_execution e WHERE e.backup_id = b.id)`, s)
		refused := f.count(t, `SELECT count(*) FROM schedule_execution WHERE schedule_id = $1 AND state = 'ERROR'`, s)
		running := f.count(t, `SELECT count(*) FROM schedule_execution WHERE schedule_id = $1 AND state = 'RUNNING'`, s)
		t.Logf("schedule %s: %d ticks, %d executions, %d backups (%d refused: instance busy), %d still running",
			s, ticks, execs, backups, refused, running)
		switch {
		case execs < 4:
			t.Errorf("schedule %s: only %d executions in 7 s of a 1 s schedule", s, execs)
		case execs != ticks:
			t.Errorf("schedule %s: %d executions for %d ticks", s, execs, ticks)
		case backups != withBackup || distinct != withBackup || orphans != 0:
			t.Errorf("schedule %s: %d backups, %d executions with one (%d distinct), %d backups of no execution",
				s, backups, withBackup, distinct, orphans)
		case withBackup == 0:
			t.Errorf("schedule %s: no backup was taken", s)
		case running != 0:
			t.Errorf("schedule %s: %d executions still RUNNING after their backups completed", s, running)
		}
		if n := f.count(t, `SELECT count(*) FROM schedule_execution WHERE schedule_id = $1 AND state = 'ERROR'
			AND state_info NOT LIKE '%not currently available%'`, s); n > 0 {
			t.Errorf("schedule %s: %d executions failed for another reason than a busy instance", s, n)
		}
	}
	// Both replicas ran ticks.
	var by []string
	rows, err := f.pool.Query(t.Context(), `SELECT DISTINCT unnest(attempted_by) FROM river_job WHERE kind = 'run_schedule' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	if by, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	t.Logf("run_schedule jobs run by %v; scheduler passes per goroutine: %v", by, loops)
	if !slices.Contains(by, "replica-a") || !slices.Contains(by, "replica-b") {
		t.Errorf("ticks run by %v, want both replicas", by)
	}
	// Retention: the full schedule keeps its last 2 completed backups; the
	// incremental chain keeps everything (each is the parent of the next);
	// the schedule without rules keeps everything.
	live := func(s uuid.UUID) int {
		return f.count(t, `SELECT count(*) FROM backup WHERE schedule_id = $1 AND status = 'COMPLETED' AND delete_requested_at IS NULL`, s)
	}
	all := func(s uuid.UUID) int {
		return f.count(t, `SELECT count(*) FROM backup WHERE schedule_id = $1 AND status = 'COMPLETED'`, s)
	}
	if n := live(sFull); n != 2 || all(sFull) < 3 {
		t.Errorf("full schedule with keep_last 2: %d of %d completed backups kept", n, all(sFull))
	}
	if f.count(t, `SELECT count(*) FROM river_job WHERE kind = 'delete_backup'`) != all(sFull)-2 {
		t.Errorf("delete_backup jobs: %d, want %d", f.count(t, `SELECT count(*) FROM river_job WHERE kind = 'delete_backup'`), all(sFull)-2)
	}
	if n := live(sIncr); n != all(sIncr) || n < 3 {
		t.Errorf("incremental schedule: %d of %d kept, want all (a chain)", n, all(sIncr))
	}
	if n := f.count(t, `SELECT count(*) FROM backup WHERE schedule_id = $1 AND parent_id IS NULL`, sIncr); n != 1 {
		t.Errorf("incremental schedule: %d full backups, want 1 (then incrementals)", n)
	}
	if n := live(sPlain); n != all(sPlain) {
		t.Errorf("schedule without retention: %d of %d kept", n, all(sPlain))
	}
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestMissedTicksRunOnce: a schedule whose tick passed an hour ago (no
// worker ran) runs that tick once, late, and then waits for its next tick
// after now: the ticks missed in between are not replayed.
func TestMissedTicksRunOnce(t *testing.T) {
	t.Parallel()
	f := newSchedFixture(t)
	inst := f.instance(t)
	s := f.schedule(t, inst, "* * * * *", false, 0)
	f.exec(t, `UPDATE backup_schedule SET next_run_at = date_trunc('minute', now()) - interval '1 hour' WHERE id = $1`, s)
	d := f.replica()
	for range 3 {
		if _, err := d.DispatchSchedules(t.Context()); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count(t, `SELECT count(*) FROM schedule_execution WHERE schedule_id = $1`, s); n != 1 {
		t.Fatalf("%d executions, want 1", n)
	}
	if n := f.count(t, `SELECT count(*) FROM schedule_execution WHERE schedule_id = $1 AND scheduled_at = date_trunc('minute', now()) - interval '1 hour'`, s); n != 1 {
		t.Error("the execution is not the missed tick's")
	}
	if n := f.count(t, `SELECT count(*) FROM backup_schedule WHERE id = $1 AND next_run_at > now() AND next_run_at <= now() + interval '1 minute'
		AND extract(second FROM next_run_at) = 0`, s); n != 1 {
		t.Error("next_run_at is not the next minute after now")
	}
	if n := f.count(t, `SELECT count(*) FROM river_job WHERE kind = 'run_schedule'`); n != 1 {
		t.Errorf("%d run_schedule jobs, want 1", n)
	}
	// The tick's job is unique by (schedule, tick), whatever execution id
	// another pass would have given it.
	rc, err := d.riverClient(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var tick time.Time
	if err := f.pool.QueryRow(t.Context(), `SELECT scheduled_at FROM schedule_execution WHERE schedule_id = $1`, s).Scan(&tick); err != nil {
		t.Fatal(err)
	}
	res, err := rc.Insert(t.Context(), RunSchedule{ScheduleID: s, ScheduledAt: tick.UTC(), ExecutionID: uuid.New()}, nil)
	if err != nil || !res.UniqueSkippedAsDuplicate {
		t.Errorf("a second job for the same tick: skipped %v (%v)", res != nil && res.UniqueSkippedAsDuplicate, err)
	}
	// A deleted instance ends its schedules: at the scheduler's next pass
	// (not due for a day), or when one is due.
	other := f.schedule(t, inst, "@daily", false, 0)
	f.exec(t, `UPDATE backup_schedule SET next_run_at = now() + interval '1 day' WHERE id = $1`, other)
	f.exec(t, `UPDATE instance SET deleted_at = now() WHERE id = $1`, inst)
	f.exec(t, `UPDATE backup_schedule SET next_run_at = now() - interval '1 minute' WHERE id = $1`, s)
	if _, err := d.DispatchSchedules(t.Context()); err != nil {
		t.Fatal(err)
	}
	if n := f.count(t, `SELECT count(*) FROM backup_schedule WHERE id = $1 AND deleted_at IS NOT NULL`, s); n != 1 {
		t.Error("the due schedule of a deleted instance lives on")
	}
	if err := (&ScheduleTickWorker{deps: d}).Work(t.Context(), job(ScheduleTick{}, 1)); err != nil {
		t.Fatal(err)
	}
	if n := f.count(t, `SELECT count(*) FROM backup_schedule WHERE id = $1 AND deleted_at IS NOT NULL`, other); n != 1 {
		t.Error("the schedule of a deleted instance lives on")
	}
	if n := f.count(t, `SELECT count(*) FROM schedule_execution WHERE schedule_id = $1`, s); n != 1 {
		t.Errorf("%d executions after the instance went, want 1", n)
	}
}

// runTick dispatches the due schedules and runs the RunSchedule jobs that
// queued, directly.
func (f *schedFixture) runTick(t *testing.T, d *Deps) {
	t.Helper()
	if _, err := d.DispatchSchedules(t.Context()); err != nil {
		t.Fatal(err)
	}
	rows, err := f.pool.Query(t.Context(), `SELECT id, args FROM river_job WHERE kind = 'run_schedule' AND state = 'available'`)
	if err != nil {
		t.Fatal(err)
	}
	type queued struct {
		ID   int64
		Args RunSchedule
	}
	jobs, err := pgx.CollectRows(rows, pgx.RowToStructByPos[queued])
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		a := j.Args
		w := &RunScheduleWorker{deps: d}
		if err := w.Work(t.Context(), job(a, 1)); err != nil {
			t.Fatalf("run schedule: %v", err)
		}
		f.exec(t, `UPDATE river_job SET state = 'completed', finalized_at = now() WHERE id = $1`, j.ID)
	}
}

// TestRefusedTickIsAnError: a tick whose backup the instance refuses (not
// action-able, over the backup quota, datastore without backups) ends its
// execution in ERROR with the reason; the job succeeds (no retries), and
// nothing else is written.
func TestRefusedTickIsAnError(t *testing.T) {
	t.Parallel()
	f := newSchedFixture(t)
	d := f.replica()
	cases := []struct {
		what, setup, reason string
	}{
		{"instance rebooting", `UPDATE instance SET task = 'REBOOTING' WHERE id = $1`, "not currently available for an action"},
		{"guest down", `UPDATE instance SET service_status = 'failed' WHERE id = $1`, "not currently available for an action"},
		{"over quota", `INSERT INTO quota (project_id, resource, hard_limit) VALUES ('p1', 'backups', 0)
			ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = 0`, "Quota exceeded"},
	}
	for _, c := range cases {
		inst := f.instance(t)
		s := f.schedule(t, inst, "@every 1m", false, 0)
		if strings.Contains(c.setup, "$1") {
			f.exec(t, c.setup, inst)
		} else {
			f.exec(t, c.setup)
		}
		f.runTick(t, d)
		var state, info string
		if err := f.pool.QueryRow(t.Context(), `SELECT state, state_info FROM schedule_execution WHERE schedule_id = $1`, s).Scan(&state, &info); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if state != "ERROR" || !strings.Contains(info, c.reason) {
			t.Errorf("%s: execution %s %q, want ERROR with %q", c.what, state, info, c.reason)
		}
		if n := f.count(t, `SELECT count(*) FROM backup WHERE schedule_id = $1`, s); n != 0 {
			t.Errorf("%s: %d backups", c.what, n)
		}
		if n := f.count(t, `SELECT count(*) FROM agent_command WHERE instance_id = $1`, inst); n != 0 {
			t.Errorf("%s: %d agent commands", c.what, n)
		}
		f.exec(t, `DELETE FROM quota`)
		f.exec(t, `UPDATE backup_schedule SET enabled = false WHERE id = $1`, s)
	}
	// Running the same tick's job again changes nothing.
	inst := f.instance(t)
	s := f.schedule(t, inst, "@every 1m", false, 0)
	f.runTick(t, d)
	var e RunSchedule
	if err := f.pool.QueryRow(t.Context(), `SELECT schedule_id, scheduled_at, id FROM schedule_execution WHERE schedule_id = $1`, s).
		Scan(&e.ScheduleID, &e.ScheduledAt, &e.ExecutionID); err != nil {
		t.Fatal(err)
	}
	w := &RunScheduleWorker{deps: d}
	for range 2 {
		if err := w.Work(t.Context(), job(e, 2)); err != nil {
			t.Fatal(err)
		}
	}
	if n := f.count(t, `SELECT count(*) FROM backup WHERE schedule_id = $1`, s); n != 1 {
		t.Errorf("%d backups after the tick's job ran three times, want 1", n)
	}
	if n := f.count(t, `SELECT count(*) FROM schedule_execution WHERE schedule_id = $1 AND state = 'RUNNING' AND backup_id IS NOT NULL`, s); n != 1 {
		t.Error("the execution does not hold its running backup")
	}
}

// TestSettleExecutions: an execution ends with its backup: SUCCESS (and
// retention queued) when it completes, ERROR with the backup's reason when
// it fails.
func TestSettleExecutions(t *testing.T) {
	t.Parallel()
	f := newSchedFixture(t)
	d := f.replica()
	ok, bad := f.instance(t), f.instance(t)
	sOK, sBad := f.schedule(t, ok, "@every 1m", false, 3), f.schedule(t, bad, "@every 1m", false, 0)
	f.runTick(t, d)
	if n, err := d.SettleExecutions(t.Context()); err != nil || n != 0 {
		t.Fatalf("settle with nothing ended: %d %v", n, err)
	}
	f.exec(t, `UPDATE backup SET status = 'COMPLETED', completed_at = now() WHERE schedule_id = $1`, sOK)
	f.exec(t, `UPDATE backup SET status = 'FAILED', fail_reason = 'Backup failed on the guest: disk full' WHERE schedule_id = $1`, sBad)
	if n, err := d.SettleExecutions(t.Context()); err != nil || n != 2 {
		t.Fatalf("settle: %d %v", n, err)
	}
	if n, err := d.SettleExecutions(t.Context()); err != nil || n != 0 {
		t.Fatalf("second settle: %d %v", n, err)
	}
	var state, info string
	_ = f.pool.QueryRow(t.Context(), `SELECT state, state_info FROM schedule_execution WHERE schedule_id = $1`, sOK).Scan(&state, &info)
	if state != "SUCCESS" || info != "" {
		t.Errorf("completed backup: %s %q", state, info)
	}
	_ = f.pool.QueryRow(t.Context(), `SELECT state, state_info FROM schedule_execution WHERE schedule_id = $1`, sBad).Scan(&state, &info)
	if state != "ERROR" || info != "Backup failed on the guest: disk full" {
		t.Errorf("failed backup: %s %q", state, info)
	}
	if n := f.count(t, `SELECT count(*) FROM river_job WHERE kind = 'apply_retention' AND args->>'schedule_id' = $1`, sOK.String()); n != 1 {
		t.Errorf("%d retention jobs for the completed backup, want 1", n)
	}
	if n := f.count(t, `SELECT count(*) FROM river_job WHERE kind = 'apply_retention'`); n != 1 {
		t.Errorf("%d retention jobs in all, want 1", n)
	}
}

// backupRow adds a backup of p1 directly: status, schedule (uuid.Nil: a
// manual one), parent (uuid.Nil: full), created days ago.
func (f *schedFixture) backupRow(t testing.TB, inst, schedule, parent uuid.UUID, status string, daysAgo float64) uuid.UUID {
	t.Helper()
	id := uuid.New()
	null := func(u uuid.UUID) uuid.NullUUID { return uuid.NullUUID{UUID: u, Valid: u != uuid.Nil} }
	f.exec(t, `INSERT INTO backup (id, project_id, instance_id, datastore_version_id, parent_id, schedule_id, name, incremental, status,
			location, prefix, key_id, wrapped_key, segment_size, created_at, completed_at)
		SELECT $1, 'p1', $2, datastore_version_id, $3, $4, 'b', $3::uuid IS NOT NULL, $5, 'file', $7, gen_random_uuid(), '\x00', 1,
		       now() - $6 * interval '1 day', CASE WHEN $5 = 'COMPLETED' THEN now() - $6 * interval '1 day' + interval '1 hour' END
		FROM instance WHERE id = $2`, id, inst, null(parent), null(schedule), status, daysAgo, id.String())
	return id
}

// TestRetentionKeepsWhatItPromises: keep_last and max_age choose the
// backups to keep, and no backup is deleted that something staying needs:
// the parents of kept incrementals, of manual ones, of running ones, of an
// instance being restored.
func TestRetentionKeepsWhatItPromises(t *testing.T) {
	t.Parallel()
	f := newSchedFixture(t)
	d := f.replica()
	inst := f.instance(t)
	s := f.schedule(t, inst, "@daily", true, 2)
	other := f.schedule(t, inst, "@weekly", false, 0)
	const done = "COMPLETED"
	names := map[uuid.UUID]string{}
	add := func(name string, sched, parent uuid.UUID, status string, days float64) uuid.UUID {
		id := f.backupRow(t, inst, sched, parent, status, days)
		names[id] = name
		return id
	}
	f0 := add("F0 (old, nothing needs it)", s, uuid.Nil, done, 12)
	f00 := add("F00 (parent of a running one)", s, uuid.Nil, done, 11.5)
	add("R (running over F00)", s, f00, "BUILDING", 0.01)
	f1 := add("F1", s, uuid.Nil, done, 10)
	i1 := add("I1 (parent of a manual one)", s, f1, done, 9)
	i2 := add("I2 (over I1, nothing needs it)", s, i1, done, 8)
	add("M (manual over I1)", uuid.Nil, i1, done, 4)
	f2 := add("F2 (parent of kept I3)", s, uuid.Nil, done, 7)
	i3 := add("I3 (kept: last 2)", s, f2, done, 6)
	i4 := add("I4 (kept: last 2)", s, i3, done, 5)
	f3 := add("F3 (parent of another schedule's)", s, uuid.Nil, done, 6.5)
	add("O (other schedule over F3)", other, f3, done, 6.4)
	f4 := add("F4 (instance restoring from it)", s, uuid.Nil, done, 13)
	failed := add("X (failed: not retention's)", s, uuid.Nil, "FAILED", 20)
	f.exec(t, `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id, task, restore_backup_id)
		SELECT gen_random_uuid(), 'p1', 'restoring', '1', 1, datastore_version_id, 'BUILDING', $1 FROM instance WHERE id = $2`, f4, inst)
	requested := add("D (delete already requested)", s, uuid.Nil, done, 14)
	f.exec(t, `UPDATE backup SET delete_requested_at = now() WHERE id = $1`, requested)

	deleted, err := d.ApplyRetention(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, id := range deleted {
		got = append(got, names[id])
	}
	slices.Sort(got)
	want := []string{names[f0], names[i2]}
	slices.Sort(want)
	if !slices.Equal(got, want) {
		t.Fatalf("retention deleted %q, want %q", got, want)
	}
	for id, name := range names {
		requestedNow := f.count(t, `SELECT count(*) FROM backup WHERE id = $1 AND delete_requested_at IS NOT NULL`, id) == 1
		if wantGone := id == f0 || id == i2 || id == requested; requestedNow != wantGone {
			t.Errorf("%s: delete requested %v, want %v", name, requestedNow, wantGone)
		}
	}
	if n := f.count(t, `SELECT count(*) FROM river_job WHERE kind = 'delete_backup'`); n != 2 {
		t.Errorf("%d delete_backup jobs, want 2", n)
	}
	_ = i4
	_ = failed
	// Again: nothing more to do.
	if deleted, err := d.ApplyRetention(t.Context(), s); err != nil || len(deleted) != 0 {
		t.Errorf("second pass deleted %v (%v)", deleted, err)
	}

	// max_age: only the backups younger than 6 days stay (and what they
	// need); keep_last 0.
	f.exec(t, `UPDATE backup_schedule SET keep_last = 0, max_age = interval '5 days 12 hours' WHERE id = $1`, s)
	deleted, err = d.ApplyRetention(t.Context(), s)
	if err != nil {
		t.Fatal(err)
	}
	got = got[:0]
	for _, id := range deleted {
		got = append(got, names[id])
	}
	slices.Sort(got)
	// I4 (5 days) is young enough and keeps I3 and F2; I1 and F1 stay for
	// M; F00 for R; F3 for O; F4 for the restore. Nothing to delete.
	if len(got) != 0 {
		t.Errorf("max_age 5.5 days deleted %q, want nothing (everything left is needed)", got)
	}
	// The last completed backup is kept even when older than max_age.
	f.exec(t, `UPDATE backup_schedule SET max_age = interval '1 hour' WHERE id = $1`, s)
	if deleted, err = d.ApplyRetention(t.Context(), s); err != nil {
		t.Fatal(err)
	}
	if n := f.count(t, `SELECT count(*) FROM backup WHERE id = $1 AND delete_requested_at IS NULL`, i4); n != 1 {
		t.Errorf("the last completed backup (I4) was deleted by max_age; deleted %d", len(deleted))
	}
	// A deleted schedule's backups stay.
	f.exec(t, `UPDATE backup_schedule SET deleted_at = now(), keep_last = 1 WHERE id = $1`, other)
	if deleted, err := d.ApplyRetention(t.Context(), other); err != nil || len(deleted) != 0 {
		t.Errorf("deleted schedule: %v %v", deleted, err)
	}
}
