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
	"github.com/coffer-dbaas/coffer/internal/objectstore"
)

func registerBackupWorkers(workers *river.Workers, deps *Deps) {
	river.AddWorker(workers, &FinalizeBackupWorker{deps: deps})
	river.AddWorker(workers, &WatchBackupWorker{deps: deps})
	river.AddWorker(workers, &PurgeBackupObjectsWorker{deps: deps})
	river.AddWorker(workers, &DeleteBackupWorker{deps: deps})
}

// DeleteBackup deletes a backup and its incremental descendants, deepest
// first (a child is useless without its parent): for each, its objects
// are removed from the store and its row soft-deleted. The API marks the
// whole tree (delete_requested_at) when it accepts the delete. Idempotent:
// a retry skips what is gone. A backup whose objects cannot be removed
// after every attempt is left DELETE_FAILED (a new delete may be asked).
type DeleteBackup struct {
	BackupID uuid.UUID `json:"backup_id"`
}

func (DeleteBackup) Kind() string { return "delete_backup" }

func (DeleteBackup) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type DeleteBackupWorker struct {
	river.WorkerDefaults[DeleteBackup]
	deps *Deps
}

func (w *DeleteBackupWorker) Timeout(*river.Job[DeleteBackup]) time.Duration { return 10 * time.Minute }

func (w *DeleteBackupWorker) Work(ctx context.Context, job *river.Job[DeleteBackup]) error {
	tree, err := store.New(w.deps.Pool).BackupSubtree(ctx, job.Args.BackupID)
	if err != nil {
		return fmt.Errorf("delete backup %s: %w", job.Args.BackupID, err)
	}
	for i, row := range tree {
		b := row.Backup
		// A running backup old enough to be deleted (the API refuses
		// younger ones) is failed first: its agent stops getting grants.
		if BackupRunning(b.Status) {
			err := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
				b, err := lockBackup(ctx, q, b.ID)
				if err != nil {
					return err
				}
				return w.deps.failBackup(ctx, tx, q, b, "The backup was deleted while it ran.")
			})
			if err != nil {
				return fmt.Errorf("delete backup %s: %w", b.ID, err)
			}
		}
		if err := w.deps.purge(ctx, b); err != nil {
			if job.Attempt < job.MaxAttempts {
				return fmt.Errorf("delete backup %s: %w", b.ID, err)
			}
			// This one and the ancestors still waiting for it stay, and
			// may be deleted again.
			return w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
				reason := "Its objects could not be removed: " + err.Error()
				for _, r := range tree[i:] {
					if err := q.MarkBackupDeleteFailed(ctx, store.MarkBackupDeleteFailedParams{ID: r.Backup.ID, FailReason: reason}); err != nil {
						return err
					}
					if err := InsertEvent(ctx, q, r.Backup.ProjectID, EventBackupDeleteFailed, r.Backup.ID, map[string]string{"reason": reason}); err != nil {
						return err
					}
					reason = fmt.Sprintf("Incremental backup %s could not be deleted.", b.ID)
				}
				return nil
			})
		}
		err := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
			if err := q.MarkBackupDeleted(ctx, b.ID); err != nil {
				return err
			}
			return InsertEvent(ctx, q, b.ProjectID, EventBackupDeleted, b.ID, nil)
		})
		if err != nil {
			return fmt.Errorf("delete backup %s: %w", b.ID, err)
		}
	}
	return nil
}

// purge removes every object of a backup (segments, manifest, large
// object). Objects already gone are fine.
func (d *Deps) purge(ctx context.Context, b store.Backup) error {
	if d.Store == nil {
		return errors.New("no object store is configured")
	}
	st, ok := StoreAt(d.Locations, d.Store, b.Location)
	if !ok {
		return fmt.Errorf("the backup is in object store %q, this deployment uses %q", b.Location, locationNames(d.Locations))
	}
	if lw, ok := st.(objectstore.LargeObjectWriter); ok {
		if err := lw.DeleteLargeObject(ctx, b.Container, LargeObjectKey(b.Prefix)); err != nil && !errors.Is(err, objectstore.ErrNotFound) {
			return fmt.Errorf("remove large object: %w", err)
		}
	}
	objs, err := st.List(ctx, b.Container, b.Prefix+"/")
	if errors.Is(err, objectstore.ErrNotFound) {
		return nil // no container: nothing was ever uploaded
	}
	if err != nil {
		return fmt.Errorf("list objects: %w", err)
	}
	for _, o := range objs {
		if err := st.Delete(ctx, b.Container, o.Key); err != nil && !errors.Is(err, objectstore.ErrNotFound) {
			return fmt.Errorf("remove %s: %w", o.Key, err)
		}
	}
	return nil
}

// PurgeBackupObjects removes a failed backup's objects (Pass 1 at once,
// Pass 2 after the last grant has expired). The row stays, FAILED, with
// its reason.
type PurgeBackupObjects struct {
	BackupID uuid.UUID `json:"backup_id"`
	Pass     int       `json:"pass"`
}

func (PurgeBackupObjects) Kind() string { return "purge_backup_objects" }

func (PurgeBackupObjects) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type PurgeBackupObjectsWorker struct {
	river.WorkerDefaults[PurgeBackupObjects]
	deps *Deps
}

func (w *PurgeBackupObjectsWorker) Timeout(*river.Job[PurgeBackupObjects]) time.Duration {
	return 10 * time.Minute
}

func (w *PurgeBackupObjectsWorker) Work(ctx context.Context, job *river.Job[PurgeBackupObjects]) error {
	b, err := store.New(w.deps.Pool).GetBackupAnyProject(ctx, job.Args.BackupID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("purge backup %s: %w", job.Args.BackupID, err)
	}
	if b.Status != BackupFailed {
		return nil // only failed backups lose their objects this way
	}
	if err := w.deps.purge(ctx, b); err != nil {
		return fmt.Errorf("purge backup %s: %w", b.ID, err)
	}
	return nil
}
