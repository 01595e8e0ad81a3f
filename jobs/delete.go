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
)

// DeleteInstance removes an instance's server and everything on it, revokes
// its agent credential and marks the row deleted. Safe to run any number of
// times.
type DeleteInstance struct {
	InstanceID uuid.UUID `json:"instance_id"`
}

func (DeleteInstance) Kind() string { return "delete_instance" }

func (DeleteInstance) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 20, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type DeleteInstanceWorker struct {
	river.WorkerDefaults[DeleteInstance]
	deps *Deps
}

func (w *DeleteInstanceWorker) Timeout(*river.Job[DeleteInstance]) time.Duration {
	return 3 * time.Minute
}

func (w *DeleteInstanceWorker) Work(ctx context.Context, job *river.Job[DeleteInstance]) error {
	id := job.Args.InstanceID
	inst, err := store.New(w.deps.Pool).GetInstanceAnyProject(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return river.JobCancel(fmt.Errorf("delete %s: instance does not exist", id))
	}
	if err != nil {
		return fmt.Errorf("delete %s: %w", id, err)
	}
	if inst.Instance.DeletedAt != nil {
		return nil
	}
	if err := w.deps.Provider.DeleteServer(ctx, id.String()); err != nil {
		return fmt.Errorf("delete %s: delete server: %w", id, err)
	}
	return w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		if err := q.CancelAgentCommands(ctx, id); err != nil {
			return err
		}
		if err := q.MarkInstanceDeleted(ctx, id); err != nil {
			return err
		}
		return InsertEvent(ctx, q, inst.Instance.ProjectID, EventInstanceDeleted, id, nil)
	})
}
