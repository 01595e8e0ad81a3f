package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/backupschedule"
)

// ApplyRetention prunes a schedule's backups after one of them completed
// (queued once per completed backup by SettleExecutions): it keeps what
// the schedule's rules keep (backupschedule.Kept: the last keep_last, those
// younger than max_age, always the last one) and deletes the other
// completed backups of the schedule, through DeleteBackup as a user's
// delete does, except any backup something that stays still needs: an
// ancestor of a kept incremental, of a manual backup or another schedule's,
// of one still running, or of an instance being restored. Deleting a backup
// deletes its children, so the check is made on the whole subtree under
// the backups' locks.
type ApplyRetention struct {
	ScheduleID uuid.UUID `json:"schedule_id"`
	BackupID   uuid.UUID `json:"backup_id"`
}

func (ApplyRetention) Kind() string { return "apply_retention" }

func (ApplyRetention) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 5, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// EventBackupRetention is recorded for each backup retention deletes.
const EventBackupRetention = "backup.deleting"

type ApplyRetentionWorker struct {
	river.WorkerDefaults[ApplyRetention]
	deps *Deps
}

func (w *ApplyRetentionWorker) Timeout(*river.Job[ApplyRetention]) time.Duration { return time.Minute }

func (w *ApplyRetentionWorker) Work(ctx context.Context, job *river.Job[ApplyRetention]) error {
	_, err := w.deps.ApplyRetention(ctx, job.Args.ScheduleID)
	return err
}

// ApplyRetention applies a schedule's retention now and returns the
// backups it asked to delete (each with its subtree).
func (d *Deps) ApplyRetention(ctx context.Context, scheduleID uuid.UUID) ([]uuid.UUID, error) {
	var deleted []uuid.UUID
	err := d.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		deleted = nil
		// The schedule's lock serialises its retention passes.
		s, err := q.LockSchedule(ctx, scheduleID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		maxAge := backupschedule.AgeOf(s.MaxAge)
		if s.DeletedAt != nil || (s.KeepLast == 0 && maxAge == 0) {
			return nil // a deleted schedule's backups, or no rule: all stay
		}
		now, err := q.DatabaseNow(ctx)
		if err != nil {
			return err
		}
		rows, err := q.ListScheduleCompletedBackups(ctx, uuid.NullUUID{UUID: s.ID, Valid: true})
		if err != nil {
			return err
		}
		backups := make([]backupschedule.Backup, 0, len(rows))
		for _, r := range rows {
			backups = append(backups, backupschedule.Backup{ID: r.ID, CreatedAt: r.CreatedAt, CompletedAt: r.CompletedAt})
		}
		kept := backupschedule.Kept(backups, int(s.KeepLast), maxAge, now)
		deletable, err := q.ListRetentionDeletable(ctx, store.ListRetentionDeletableParams{
			ProjectID: s.ProjectID, ScheduleID: s.ID, Kept: append([]uuid.UUID{}, kept...)})
		if err != nil {
			return err
		}
		// Oldest first: a parent's delete covers its children, which are
		// then skipped as already requested.
		slices.Reverse(deletable)
		for _, id := range deletable {
			ok, err := d.retire(ctx, tx, q, s, id, deletable)
			if err != nil {
				return err
			}
			if ok {
				deleted = append(deleted, id)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("retention of schedule %s: %w", scheduleID, err)
	}
	if len(deleted) > 0 {
		d.Logger.InfoContext(ctx, "retention deletes backups", "schedule", scheduleID, "backups", deleted)
	}
	return deleted, nil
}

// retire asks for the delete of backup id and its subtree, as the API's
// delete does, if everything in the subtree is deletable (the chain rule,
// checked again under the locks) and no instance is being restored from
// it.
func (d *Deps) retire(ctx context.Context, tx pgx.Tx, q *store.Queries, s store.BackupSchedule, id uuid.UUID, deletable []uuid.UUID) (bool, error) {
	b, err := q.LockBackup(ctx, id)
	if err != nil {
		return false, fmt.Errorf("lock backup %s: %w", id, err)
	}
	if b.DeletedAt != nil || b.DeleteRequestedAt != nil {
		return false, nil // covered by its parent's delete, or on its way already
	}
	tree, err := q.BackupSubtree(ctx, id)
	if err != nil {
		return false, fmt.Errorf("backup %s subtree: %w", id, err)
	}
	ids := make([]uuid.UUID, 0, len(tree))
	for _, r := range tree {
		c, err := q.LockBackup(ctx, r.Backup.ID)
		if err != nil {
			return false, fmt.Errorf("lock backup %s: %w", r.Backup.ID, err)
		}
		if c.DeleteRequestedAt == nil && !slices.Contains(deletable, c.ID) {
			return false, nil // a descendant that stays needs it
		}
		ids = append(ids, c.ID)
	}
	restoring, err := q.RestoringInstances(ctx, ids)
	if err != nil {
		return false, fmt.Errorf("backup %s restores: %w", id, err)
	}
	if len(restoring) > 0 {
		return false, nil
	}
	if err := q.RequestBackupDelete(ctx, ids); err != nil {
		return false, fmt.Errorf("request delete of backup %s: %w", id, err)
	}
	if err := d.enqueue(ctx, tx, DeleteBackup{BackupID: id}, nil); err != nil {
		return false, fmt.Errorf("enqueue delete of backup %s: %w", id, err)
	}
	return true, InsertEvent(ctx, q, b.ProjectID, EventBackupRetention, id, map[string]any{
		"reason": "retention", "schedule_id": s.ID, "backups": len(ids)})
}
