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

// CompletePrepare is the continuation of an instance's prepare command,
// enqueued by the agent API in the transaction that records the agent's
// result: it makes the instance ACTIVE or records why it failed.
type CompletePrepare struct {
	InstanceID uuid.UUID `json:"instance_id"`
	CommandID  uuid.UUID `json:"command_id"`
}

func (CompletePrepare) Kind() string { return "complete_prepare" }

func (CompletePrepare) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type CompletePrepareWorker struct {
	river.WorkerDefaults[CompletePrepare]
	deps *Deps
}

func (w *CompletePrepareWorker) Timeout(*river.Job[CompletePrepare]) time.Duration {
	return 30 * time.Second
}

func (w *CompletePrepareWorker) Work(ctx context.Context, job *river.Job[CompletePrepare]) error {
	a := job.Args
	return w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		inst, err := q.LockInstance(ctx, a.InstanceID)
		if errors.Is(err, pgx.ErrNoRows) {
			return river.JobCancel(fmt.Errorf("complete prepare %s: instance does not exist", a.InstanceID))
		}
		if err != nil {
			return fmt.Errorf("complete prepare %s: %w", a.InstanceID, err)
		}
		if inst.DeletedAt != nil || inst.Task != status.TaskBuilding {
			return nil // already completed, failed or deleted
		}
		cmd, err := q.GetAgentCommand(ctx, store.GetAgentCommandParams{ID: a.CommandID, InstanceID: a.InstanceID})
		if err != nil {
			return fmt.Errorf("complete prepare %s: load command: %w", a.InstanceID, err)
		}
		var res protocol.Result
		if len(cmd.Result) > 0 {
			_ = json.Unmarshal(cmd.Result, &res)
		}
		if cmd.State == "succeeded" {
			service := res.ServiceStatus
			if service == "" {
				service = protocol.ServiceHealthy
			}
			if err := q.SetInstanceActive(ctx, store.SetInstanceActiveParams{ID: inst.ID, ServiceStatus: service}); err != nil {
				return err
			}
			return InsertEvent(ctx, q, inst.ProjectID, EventInstanceActive, inst.ID, nil)
		}
		if err := q.SetInstanceFault(ctx, store.SetInstanceFaultParams{
			ID: inst.ID, Task: status.TaskErrorGuest,
			FaultMessage: "The datastore could not be prepared.", FaultDetails: cmd.Error,
		}); err != nil {
			return err
		}
		return InsertEvent(ctx, q, inst.ProjectID, EventInstanceError, inst.ID, map[string]string{"reason": "prepare"})
	})
}
