package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/status"
)

// WatchBackup is a running backup's watchdog, queued by StartBackup: it
// looks at the backup every BackupSettings.WatchEvery (snoozing between
// looks) until the backup is no longer running, and fails it when its
// agent is gone: no heartbeat for status.HeartbeatExpiry (killed, host
// down), no grant, segment or progress report for StallTimeout (hung, or
// restarted and no longer running it), the command never picked up, its
// lease (the longest a backup may run) over, or the command ended without
// its result being recorded (the instance was deleted meanwhile). The
// backup then never becomes COMPLETED; its uploaded objects are purged.
type WatchBackup struct {
	BackupID uuid.UUID `json:"backup_id"`
}

func (WatchBackup) Kind() string { return "watch_backup" }

func (WatchBackup) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 25, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type WatchBackupWorker struct {
	river.WorkerDefaults[WatchBackup]
	deps *Deps
}

func (w *WatchBackupWorker) Timeout(*river.Job[WatchBackup]) time.Duration { return 30 * time.Second }

// resultGrace is how long a finished command's continuation may take to
// record its result before the watchdog decides it never will.
const resultGrace = 2 * time.Minute

func (w *WatchBackupWorker) Work(ctx context.Context, job *river.Job[WatchBackup]) error {
	settings := Backups()
	var running bool
	err := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		b, err := lockBackup(ctx, q, job.Args.BackupID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil
		}
		if err != nil {
			return err
		}
		if !BackupRunning(b.Status) || b.DeletedAt != nil {
			return nil
		}
		running = true
		reason, err := w.stalled(ctx, q, b, settings, time.Now())
		if err != nil || reason == "" {
			return err
		}
		running = false
		w.deps.Logger.WarnContext(ctx, "backup failed by its watchdog", "backup_id", b.ID, "reason", reason)
		return w.deps.failBackup(ctx, tx, q, b, reason)
	})
	if err != nil {
		return fmt.Errorf("watch backup %s: %w", job.Args.BackupID, err)
	}
	if running {
		return river.JobSnooze(settings.WatchEvery)
	}
	return nil
}

// stalled says why a running backup has no future ("": it may still
// finish).
func (w *WatchBackupWorker) stalled(ctx context.Context, q *store.Queries, b store.Backup, s BackupSettings, now time.Time) (string, error) {
	if b.Status == BackupSaving {
		// The agent is done; FinalizeBackup retries and fails it itself.
		return "", nil
	}
	if !b.CommandID.Valid || !b.InstanceID.Valid {
		return "The backup has no guest command.", nil
	}
	inst, err := q.LockInstance(ctx, b.InstanceID.UUID) // already locked by lockBackup
	if errors.Is(err, pgx.ErrNoRows) {
		return "The instance no longer exists.", nil
	}
	if err != nil {
		return "", err
	}
	if inst.DeletedAt != nil || inst.Task == status.TaskDeleting {
		return "The instance was deleted during the backup.", nil
	}
	cmd, err := q.GetAgentCommand(ctx, store.GetAgentCommandParams{ID: b.CommandID.UUID, InstanceID: inst.ID})
	if errors.Is(err, pgx.ErrNoRows) {
		return "The backup's guest command is gone.", nil
	}
	if err != nil {
		return "", err
	}
	switch cmd.State {
	case "cancelled":
		return "The backup's guest command was cancelled.", nil
	case "succeeded", "failed":
		if cmd.CompletedAt != nil && now.Sub(*cmd.CompletedAt) > resultGrace {
			return fmt.Sprintf("The guest agent finished the backup (%s) but its result was never recorded.", cmd.State), nil
		}
		return "", nil
	case "pending":
		if now.Sub(b.CreatedAt) > s.StallTimeout {
			return fmt.Sprintf("The guest agent did not start the backup within %s.", s.StallTimeout), nil
		}
		return "", nil
	}
	// Leased: the agent has it.
	if cmd.LeasedUntil != nil && now.After(*cmd.LeasedUntil) {
		return fmt.Sprintf("The backup did not finish within its time limit of %s.", time.Duration(cmd.LeaseSeconds)*time.Second), nil
	}
	if inst.HeartbeatAt != nil && now.Sub(*inst.HeartbeatAt) > status.HeartbeatExpiry {
		return fmt.Sprintf("The guest agent stopped responding during the backup (last heartbeat %s ago).",
			now.Sub(*inst.HeartbeatAt).Round(time.Second)), nil
	}
	last := b.CreatedAt
	if cmd.LeasedUntil != nil {
		if leased := cmd.LeasedUntil.Add(-time.Duration(cmd.LeaseSeconds) * time.Second); leased.After(last) {
			last = leased
		}
	}
	if b.ProgressAt != nil && b.ProgressAt.After(last) {
		last = *b.ProgressAt
	}
	if now.Sub(last) > s.StallTimeout {
		return fmt.Sprintf("The backup made no progress for %s: the guest agent stopped working on it.", now.Sub(last).Round(time.Second)), nil
	}
	return "", nil
}

// lockBackup locks a backup's instance, then the backup: the order every
// transaction that changes both uses (the command's completer runs with
// the instance locked), so that they never deadlock.
func lockBackup(ctx context.Context, q *store.Queries, id uuid.UUID) (store.Backup, error) {
	b, err := q.GetBackupAnyProject(ctx, id)
	if err != nil {
		return b, err
	}
	if b.InstanceID.Valid {
		if _, err := q.LockInstance(ctx, b.InstanceID.UUID); err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return b, err
		}
	}
	return q.LockBackup(ctx, id)
}
