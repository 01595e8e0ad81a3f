package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/status"
)

// PruneWALArchives is the periodic trim of every PostgreSQL instance's WAL
// archive (protocol.CommandPruneWAL). The archive is what incremental
// backups are cut from, so it must reach back to the oldest backup that
// may still be restored or named as a parent: the earliest point of the
// instance's COMPLETED backups. Without any backup, what was archived
// before now is not needed (the next chain starts with a full backup).
// Without this, an instance's volume fills with WAL.
//
// The point is read and the command queued in one transaction holding the
// instance's row, which StartBackup takes too: a backup started after the
// read queues its command after the prune's, and the agent runs commands
// one at a time in order; a backup running at the read skips the instance
// until the next round.
type PruneWALArchives struct{}

func (PruneWALArchives) Kind() string { return "prune_wal_archives" }

func (PruneWALArchives) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 1,
		UniqueOpts: river.UniqueOpts{ByPeriod: Backups().WALPruneEvery / 2}}
}

// walPruneLease bounds one prune on the guest (deleting files).
const walPruneLease = 300

type PruneWALArchivesWorker struct {
	river.WorkerDefaults[PruneWALArchives]
	deps *Deps
}

func (w *PruneWALArchivesWorker) Timeout(*river.Job[PruneWALArchives]) time.Duration {
	return 2 * time.Minute
}

func (w *PruneWALArchivesWorker) Work(ctx context.Context, _ *river.Job[PruneWALArchives]) error {
	_, err := PruneWALArchivesNow(ctx, w.deps)
	return err
}

// PruneWALArchivesNow queues a prune for every instance that may take one
// now (the worker's body; tests call it) and returns how many it queued.
// One instance's failure does not stop the others; the first is returned.
func PruneWALArchivesNow(ctx context.Context, d *Deps) (int, error) {
	ids, err := store.New(d.Pool).WALPruneCandidates(ctx)
	if err != nil {
		return 0, fmt.Errorf("prune WAL archives: %w", err)
	}
	queued := 0
	var first error
	for _, id := range ids {
		ok, err := queueWALPrune(ctx, d, id)
		if err != nil {
			d.Logger.ErrorContext(ctx, "prune WAL archive", "instance_id", id, "err", err)
			if first == nil {
				first = err
			}
		}
		if ok {
			queued++
		}
	}
	return queued, first
}

// queueWALPrune queues one instance's prune if it is still idle once its
// row is held.
func queueWALPrune(ctx context.Context, d *Deps, id uuid.UUID) (bool, error) {
	queued := false
	err := d.inTx(ctx, func(_ pgx.Tx, q *store.Queries) error {
		inst, err := q.LockInstance(ctx, id)
		if err != nil {
			return err
		}
		if inst.DeletedAt != nil || inst.Task != status.TaskNone || inst.RunningBackupID.Valid ||
			(inst.ServiceStatus != "healthy" && inst.ServiceStatus != "running") {
			return nil
		}
		var req protocol.PruneWALRequest
		point, err := q.OldestBackupPoint(ctx, uuid.NullUUID{UUID: id, Valid: true})
		switch {
		case errors.Is(err, pgx.ErrNoRows):
		case err != nil:
			return err
		default:
			req.Keep = &protocol.BackupPoint{}
			if err := json.Unmarshal(point, req.Keep); err != nil {
				return fmt.Errorf("backup point: %w", err)
			}
		}
		if _, err := QueueCommand(ctx, q, id, protocol.CommandPruneWAL, req, walPruneLease); err != nil {
			return err
		}
		queued = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("prune WAL archive of %s: %w", id, err)
	}
	return queued, nil
}
