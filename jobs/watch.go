package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/status"
)

// WatchInstances is the periodic watchdog: it fails builds whose guest never
// reported within the build timeout, and records (once) that an idle
// instance's agent stopped sending heartbeats. Reads already show a stale
// heartbeat as operating_status ERROR; the watchdog makes it an event.
type WatchInstances struct{}

func (WatchInstances) Kind() string { return "watch_instances" }

func (WatchInstances) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 1,
		UniqueOpts: river.UniqueOpts{ByPeriod: 15 * time.Second}}
}

type WatchInstancesWorker struct {
	river.WorkerDefaults[WatchInstances]
	deps *Deps
}

func (w *WatchInstancesWorker) Timeout(*river.Job[WatchInstances]) time.Duration {
	return 30 * time.Second
}

func (w *WatchInstancesWorker) Work(ctx context.Context, job *river.Job[WatchInstances]) error {
	now := time.Now()
	q := store.New(w.deps.Pool)
	timeout := w.deps.BuildTimeout
	if timeout <= 0 {
		timeout = 10 * time.Minute
	}
	stuck, err := q.ListStuckBuilds(ctx, now.Add(-timeout))
	if err != nil {
		return fmt.Errorf("watch instances: list stuck builds: %w", err)
	}
	for _, s := range stuck {
		err := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
			inst, err := q.LockInstance(ctx, s.ID)
			if err != nil || inst.Task != status.TaskBuilding || inst.DeletedAt != nil {
				return err
			}
			if err := q.SetInstanceFault(ctx, store.SetInstanceFaultParams{
				ID: s.ID, Task: status.TaskErrorGuestTimeout,
				FaultMessage: fmt.Sprintf("The guest agent did not finish preparing the instance within %s.", timeout),
			}); err != nil {
				return err
			}
			return InsertEvent(ctx, q, s.ProjectID, EventInstanceError, s.ID, map[string]string{"reason": "guest timeout"})
		})
		if err != nil {
			return fmt.Errorf("watch instances: fail build %s: %w", s.ID, err)
		}
	}
	stale, err := q.ListStaleHeartbeats(ctx, now.Add(-status.HeartbeatExpiry))
	if err != nil {
		return fmt.Errorf("watch instances: list stale heartbeats: %w", err)
	}
	for _, s := range stale {
		err := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
			if err := q.MarkGuestAgentError(ctx, s.ID); err != nil {
				return err
			}
			return InsertEvent(ctx, q, s.ProjectID, EventInstanceHeartbeatLost, s.ID, nil)
		})
		if err != nil {
			return fmt.Errorf("watch instances: mark %s: %w", s.ID, err)
		}
	}
	return nil
}
