package jobs

// The backup scheduler, without Mistral:
//
//   - ScheduleTick, a periodic job (every ScheduleTickInterval, on River's
//     leader), ends the schedules of deleted instances, settles running
//     executions from their backups (SUCCESS queues the schedule's
//     retention, schedule_retention.go), then takes the due schedules:
//     for each, in one transaction, the
//     tick's schedule_execution row, a RunSchedule job unique by
//     (schedule, tick), and next_run_at moved to the pattern's next time
//     after now. A tick missed while no worker ran is run once, late; the
//     ones before it are skipped.
//   - RunSchedule starts the tick's backup (StartBackup). A refusal (the
//     instance is busy or gone, the project over its backup quota, ...)
//     ends the execution in ERROR with the reason, and nothing is retried.
//
// Exactly once per tick, however many workers run: due schedules are
// locked (SKIP LOCKED: another pass skips them and finds them advanced),
// UNIQUE (schedule_id, scheduled_at) refuses a second execution of a tick,
// the job is unique by its tick, and RunSchedule starts a backup only for
// a RUNNING execution without one, under the execution's row lock, in the
// transaction that records the backup on it.

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/backupschedule"
	"github.com/coffer-dbaas/coffer/openapi"
)

// ScheduleTickInterval is how often due schedules are looked for: a tick
// starts at most this late.
const ScheduleTickInterval = 15 * time.Second

// scheduleBatch is how many due schedules one transaction takes.
const scheduleBatch = 100

// Execution states (Mistral's).
const (
	ExecutionRunning = "RUNNING"
	ExecutionSuccess = "SUCCESS"
	ExecutionError   = "ERROR"
)

func registerScheduleWorkers(workers *river.Workers, deps *Deps) {
	river.AddWorker(workers, &ScheduleTickWorker{deps: deps})
	river.AddWorker(workers, &RunScheduleWorker{deps: deps})
	river.AddWorker(workers, &ApplyRetentionWorker{deps: deps})
}

// schedulePeriodicJob is the scheduler's entry in Config's PeriodicJobs.
func schedulePeriodicJob() *river.PeriodicJob {
	return river.NewPeriodicJob(river.PeriodicInterval(ScheduleTickInterval),
		func() (river.JobArgs, *river.InsertOpts) { return ScheduleTick{}, nil },
		&river.PeriodicJobOpts{RunOnStart: true, ID: "schedule_tick"})
}

// ScheduleTick is the scheduler's pass.
type ScheduleTick struct{}

func (ScheduleTick) Kind() string { return "schedule_tick" }

func (ScheduleTick) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 1,
		UniqueOpts: river.UniqueOpts{ByPeriod: ScheduleTickInterval}}
}

type ScheduleTickWorker struct {
	river.WorkerDefaults[ScheduleTick]
	deps *Deps
}

func (w *ScheduleTickWorker) Timeout(*river.Job[ScheduleTick]) time.Duration { return time.Minute }

func (w *ScheduleTickWorker) Work(ctx context.Context, job *river.Job[ScheduleTick]) error {
	if _, err := store.New(w.deps.Pool).EndOrphanSchedules(ctx); err != nil {
		return fmt.Errorf("end the schedules of deleted instances: %w", err)
	}
	if _, err := w.deps.SettleExecutions(ctx); err != nil {
		return err
	}
	_, err := w.deps.DispatchSchedules(ctx)
	return err
}

// SettleExecutions ends the running executions whose backup has ended, and
// queues retention for each schedule whose backup completed. It returns
// how many executions it ended.
func (d *Deps) SettleExecutions(ctx context.Context) (int, error) {
	var n int
	err := d.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		rows, err := q.SettleScheduleExecutions(ctx)
		if err != nil {
			return err
		}
		n = len(rows)
		for _, r := range rows {
			if r.State != ExecutionSuccess {
				continue
			}
			if err := d.enqueue(ctx, tx, ApplyRetention{ScheduleID: r.ScheduleID, BackupID: r.BackupID}, nil); err != nil {
				return fmt.Errorf("enqueue retention of schedule %s: %w", r.ScheduleID, err)
			}
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("settle schedule executions: %w", err)
	}
	return n, nil
}

// DispatchSchedules creates the executions and RunSchedule jobs of every
// due schedule and moves each to its next tick. Safe to run in any number
// of workers at once. It returns how many ticks it dispatched.
func (d *Deps) DispatchSchedules(ctx context.Context) (int, error) {
	total := 0
	for {
		var taken, dispatched int
		err := d.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
			now, err := q.DatabaseNow(ctx)
			if err != nil {
				return err
			}
			due, err := q.LockDueSchedules(ctx, store.LockDueSchedulesParams{Now: now, MaxRows: scheduleBatch})
			if err != nil {
				return err
			}
			taken = len(due)
			for _, row := range due {
				ok, err := d.dispatch(ctx, tx, q, row.BackupSchedule, row.InstanceDeleted, now)
				if err != nil {
					return err
				}
				if ok {
					dispatched++
				}
			}
			return nil
		})
		if err != nil {
			return total, fmt.Errorf("dispatch schedules: %w", err)
		}
		total += dispatched
		if taken < scheduleBatch {
			return total, nil
		}
	}
}

// dispatch runs one due schedule's tick (the one at next_run_at), in tx.
func (d *Deps) dispatch(ctx context.Context, tx pgx.Tx, q *store.Queries, s store.BackupSchedule, instanceDeleted bool, now time.Time) (bool, error) {
	if instanceDeleted {
		// Schedules end with their instance (their backups stay).
		if err := q.EndSchedule(ctx, s.ID); err != nil {
			return false, fmt.Errorf("end schedule %s: %w", s.ID, err)
		}
		return false, nil
	}
	sched, err := backupschedule.Parse(s.Pattern)
	if err != nil {
		// Only a time zone gone from the system's database can do this;
		// try again in an hour rather than on every pass.
		d.Logger.ErrorContext(ctx, "schedule pattern no longer parses", "schedule", s.ID, "pattern", s.Pattern, "err", err)
		return false, q.SetScheduleNextRun(ctx, store.SetScheduleNextRunParams{ID: s.ID, NextRunAt: now.Add(time.Hour)})
	}
	// In UTC: the job is unique by its JSON, which must not depend on a
	// replica's time zone.
	tick := s.NextRunAt.UTC()
	created := true
	e, err := q.InsertScheduleExecution(ctx, store.InsertScheduleExecutionParams{
		ID: uuid.New(), ScheduleID: s.ID, ProjectID: s.ProjectID, ScheduledAt: tick})
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		// This tick has its execution already: only a schedule set back
		// (by hand) gets here, as the execution and the move of
		// next_run_at commit together.
		created = false
	case err != nil:
		return false, fmt.Errorf("schedule %s tick %s: %w", s.ID, tick, err)
	default:
		if err := d.enqueue(ctx, tx, RunSchedule{ScheduleID: s.ID, ScheduledAt: tick, ExecutionID: e.ID}, nil); err != nil {
			return false, fmt.Errorf("schedule %s tick %s: enqueue: %w", s.ID, tick, err)
		}
	}
	next := backupschedule.Next(sched, now)
	if next.IsZero() {
		next = now.Add(24 * time.Hour) // a pattern that stopped firing: look again tomorrow
	}
	if err := q.SetScheduleNextRun(ctx, store.SetScheduleNextRunParams{ID: s.ID, NextRunAt: next}); err != nil {
		return false, fmt.Errorf("schedule %s: next run: %w", s.ID, err)
	}
	return created, nil
}

// RunSchedule takes one tick's backup. Unique by its tick (the execution
// rides along).
type RunSchedule struct {
	ScheduleID  uuid.UUID `json:"schedule_id" river:"unique"`
	ScheduledAt time.Time `json:"scheduled_at" river:"unique"`
	ExecutionID uuid.UUID `json:"execution_id"`
}

func (RunSchedule) Kind() string { return "run_schedule" }

func (RunSchedule) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 5, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type RunScheduleWorker struct {
	river.WorkerDefaults[RunSchedule]
	deps *Deps
}

func (w *RunScheduleWorker) Timeout(*river.Job[RunSchedule]) time.Duration { return time.Minute }

func (w *RunScheduleWorker) Work(ctx context.Context, job *river.Job[RunSchedule]) error {
	a := job.Args
	err := w.deps.runSchedule(ctx, a)
	if err != nil && job.Attempt >= job.MaxAttempts {
		// The last attempt: the tick ends in ERROR rather than RUNNING
		// for ever.
		w.deps.failExecution(ctx, a.ExecutionID, "The backup could not be started: "+err.Error())
	}
	return err
}

func (d *Deps) runSchedule(ctx context.Context, a RunSchedule) error {
	rc, err := d.riverClient(ctx)
	if err != nil {
		return fmt.Errorf("run schedule %s: %w", a.ScheduleID, err)
	}
	return d.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		e, err := q.LockScheduleExecution(ctx, a.ExecutionID)
		if errors.Is(err, pgx.ErrNoRows) {
			return river.JobCancel(fmt.Errorf("run schedule %s: execution %s does not exist", a.ScheduleID, a.ExecutionID))
		}
		if err != nil {
			return fmt.Errorf("run schedule %s: %w", a.ScheduleID, err)
		}
		if e.State != ExecutionRunning || e.BackupID.Valid {
			return nil // this tick's backup is started (or refused) already
		}
		s, err := q.LockSchedule(ctx, e.ScheduleID)
		if err != nil {
			return fmt.Errorf("run schedule %s: %w", a.ScheduleID, err)
		}
		if s.DeletedAt != nil || !s.Enabled {
			_, err := q.FailScheduleExecution(ctx, store.FailScheduleExecutionParams{ID: e.ID,
				StateInfo: "The schedule was deleted or disabled before this tick ran."})
			return err
		}
		// A savepoint: a refused backup leaves nothing behind but the
		// execution's reason.
		sp, err := tx.Begin(ctx)
		if err != nil {
			return err
		}
		b, err := StartBackup(ctx, sp, rc, d.Keys, NewBackup{
			ProjectID: s.ProjectID, InstanceID: s.InstanceID, Name: s.Name, Description: s.Description,
			Incremental: s.Incremental, ScheduleID: &s.ID,
		})
		var refused *openapi.Fault
		if errors.As(err, &refused) {
			if err := sp.Rollback(ctx); err != nil {
				return err
			}
			d.Logger.InfoContext(ctx, "scheduled backup refused", "schedule", s.ID, "tick", e.ScheduledAt, "reason", refused.Message)
			_, err := q.FailScheduleExecution(ctx, store.FailScheduleExecutionParams{ID: e.ID, StateInfo: refused.Message})
			return err
		}
		if err != nil {
			return fmt.Errorf("run schedule %s: %w", a.ScheduleID, err)
		}
		if err := sp.Commit(ctx); err != nil {
			return err
		}
		return q.SetScheduleExecutionBackup(ctx, store.SetScheduleExecutionBackupParams{ID: e.ID,
			BackupID: uuid.NullUUID{UUID: b.ID, Valid: true}})
	})
}

// failExecution ends a running execution in ERROR (best effort: logged).
func (d *Deps) failExecution(ctx context.Context, id uuid.UUID, reason string) {
	if _, err := store.New(d.Pool).FailScheduleExecution(ctx, store.FailScheduleExecutionParams{ID: id, StateInfo: reason}); err != nil {
		d.Logger.ErrorContext(ctx, "fail schedule execution", "execution", id, "err", err)
	}
}

// riverClient is the River client running the job, or (when a job is
// called directly) the insert-only client enqueue also uses.
func (d *Deps) riverClient(ctx context.Context) (*river.Client[pgx.Tx], error) {
	if c, err := river.ClientFromContextSafely[pgx.Tx](ctx); err == nil {
		return c, nil
	}
	d.inserter.once.Do(func() {
		d.inserter.client, d.inserter.err = river.NewClient(riverpgxv5.New(d.Pool), &river.Config{Logger: d.Logger})
	})
	return d.inserter.client, d.inserter.err
}
