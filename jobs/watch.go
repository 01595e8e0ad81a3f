package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
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
		limit := timeout
		if s.RestoreBackupID.Valid {
			extra, err := restoreAllowance(ctx, q, s.RestoreBackupID.UUID)
			if err != nil {
				return fmt.Errorf("watch instances: %s: %w", s.ID, err)
			}
			if limit += extra; now.Sub(s.CreatedAt) < limit {
				continue
			}
		}
		err := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
			inst, err := q.LockInstance(ctx, s.ID)
			if err != nil || inst.Task != status.TaskBuilding || inst.DeletedAt != nil {
				return err
			}
			if err := q.SetInstanceFault(ctx, store.SetInstanceFaultParams{
				ID: s.ID, Task: status.TaskErrorGuestTimeout,
				FaultMessage: fmt.Sprintf("The guest agent did not finish preparing the instance within %s.", limit.Round(time.Second)),
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

// restoreFloorRate is the slowest restore the build watchdog waits for, in
// bytes of the backups' plain streams per second: a restore is download,
// decryption, decompression and WAL replay, measured at 250 MB/s and more
// (BenchmarkBackupPipelines), so a tenth of a guest's disk speed is a
// generous floor that still catches a guest that stopped.
const restoreFloorRate = 10 << 20

// restoreAllowance is the time a build restoring backup id gets beyond the
// build timeout: its chain's plain size at restoreFloorRate.
func restoreAllowance(ctx context.Context, q *store.Queries, id uuid.UUID) (time.Duration, error) {
	chain, err := q.BackupChain(ctx, id)
	if err != nil {
		return 0, fmt.Errorf("restore chain of %s: %w", id, err)
	}
	var bytes int64
	for _, b := range chain {
		bytes += max(b.Backup.BytesDone, b.Backup.EstimatedBytes, b.Backup.StoredBytes)
	}
	return time.Duration(bytes/restoreFloorRate) * time.Second, nil
}
