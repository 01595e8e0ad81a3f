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
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/internal/status"
)

// ResizeInstance is the provider's half of a resize, between the API's
// request and the agent's command (see instance_actions.go). The API
// records the action, queues the agent's command held
// (HoldAgentCommand) and inserts this job, all in one transaction. The
// job, when the provider implements provider.Resizer, resizes the server
// (Nova resize + confirm, reverted on failure) or extends the volume
// (Cinder), then releases the command: the agent re-derives its memory
// settings for the new flavor, or grows its filesystem, and the command's
// completer ends the action. Without a Resizer (local) it only releases
// the command.
//
// When the provider's part fails, the action fails as a guest's failure
// does (Trove's rollback): the command is cancelled, the task returns to
// NONE and the fault says why; the instance stays ACTIVE on its old flavor
// or volume size. A refusal (provider.ErrRefused: quota, a flavor the
// cloud will not take) fails it at once, anything else after a few tries.
//
// Every step is idempotent: a retry finds the server resized or the
// volume extended and goes on; an action already ended (reset_status, its
// deadline, a delete) or a command already released is left alone.
type ResizeInstance struct {
	InstanceID uuid.UUID `json:"instance_id"`
	CommandID  uuid.UUID `json:"command_id"`
}

func (ResizeInstance) Kind() string { return "resize_instance" }

func (ResizeInstance) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 3, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type ResizeInstanceWorker struct {
	river.WorkerDefaults[ResizeInstance]
	deps *Deps
}

// Timeout leaves a cloud's resize (a cold migration of the server) some
// minutes; it stays under the River rescue delay (jobs.Config).
func (w *ResizeInstanceWorker) Timeout(*river.Job[ResizeInstance]) time.Duration {
	return 10 * time.Minute
}

// NextRetry retries soon: the instance shows RESIZE meanwhile, and
// River's default backoff would keep it there for minutes.
func (w *ResizeInstanceWorker) NextRetry(job *river.Job[ResizeInstance]) time.Time {
	return time.Now().Add(time.Duration(job.Attempt) * 15 * time.Second)
}

func (w *ResizeInstanceWorker) Work(ctx context.Context, job *river.Job[ResizeInstance]) error {
	a := job.Args
	q := store.New(w.deps.Pool)
	action, err := loadAction(ctx, q, "resize", a.InstanceID, a.CommandID)
	if err != nil {
		return err
	}
	if open, err := w.held(ctx, q, action); err != nil || !open {
		return err
	}

	var server *provider.Server
	if r, ok := w.deps.Provider.(provider.Resizer); ok {
		switch action.Action {
		case ActionResizeFlavor:
			var srv provider.Server
			if srv, err = r.ResizeServer(ctx, a.InstanceID.String(), action.ToFlavorID); err == nil {
				server = &srv
			}
		case ActionResizeVolume:
			err = r.ExtendVolume(ctx, a.InstanceID.String(), int(action.ToVolumeSizeGb))
		default:
			return river.JobCancel(fmt.Errorf("resize %s: action %s is no resize", a.InstanceID, action.Action))
		}
		if err != nil {
			err = fmt.Errorf("resize %s: %w", a.InstanceID, err)
			if errors.Is(err, provider.ErrRefused) || errors.Is(err, provider.ErrNotFound) || job.Attempt >= job.MaxAttempts {
				return w.fail(ctx, action, err)
			}
			return err
		}
	}

	if err := w.release(ctx, action, server); err != nil {
		return fmt.Errorf("resize %s: hand the command to the agent: %w", a.InstanceID, err)
	}
	return nil
}

// loadAction loads the action of a held command for the job of verb
// ("resize", "rebuild"); an action that is gone or another instance's
// cancels the job.
func loadAction(ctx context.Context, q *store.Queries, verb string, instanceID, commandID uuid.UUID) (store.InstanceAction, error) {
	action, err := q.GetInstanceAction(ctx, commandID)
	if errors.Is(err, pgx.ErrNoRows) {
		return action, river.JobCancel(fmt.Errorf("%s %s: no action for command %s", verb, instanceID, commandID))
	}
	if err != nil {
		return action, fmt.Errorf("%s %s: load action: %w", verb, instanceID, err)
	}
	if action.InstanceID != instanceID {
		return action, river.JobCancel(fmt.Errorf("%s %s: command %s belongs to instance %s", verb, instanceID, commandID, action.InstanceID))
	}
	return action, nil
}

// release hands the held command to the agent, if the action is still
// open, recording the server's new status first when server is not nil.
func (w *ResizeInstanceWorker) release(ctx context.Context, action store.InstanceAction, server *provider.Server) error {
	return w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		inst, err := q.LockInstance(ctx, action.InstanceID)
		if err != nil {
			return err
		}
		if open, err := w.held(ctx, q, action); err != nil || !open {
			return err
		}
		if server != nil && inst.ComputeStatus != server.Status {
			if err := q.SetInstanceComputeStatus(ctx, store.SetInstanceComputeStatusParams{ID: inst.ID, ComputeStatus: server.Status}); err != nil {
				return err
			}
		}
		_, err = q.ReleaseAgentCommand(ctx, action.CommandID)
		return err
	})
}

// held reports whether the action is still open with its command held
// for this job.
func (w *ResizeInstanceWorker) held(ctx context.Context, q *store.Queries, action store.InstanceAction) (bool, error) {
	if action.CompletedAt != nil {
		return false, nil
	}
	cur, err := q.GetInstanceAction(ctx, action.CommandID)
	if err != nil {
		return false, fmt.Errorf("resize %s: load action: %w", action.InstanceID, err)
	}
	if cur.CompletedAt != nil {
		return false, nil
	}
	cmd, err := q.GetAgentCommand(ctx, store.GetAgentCommandParams{ID: action.CommandID, InstanceID: action.InstanceID})
	if err != nil {
		return false, fmt.Errorf("resize %s: load command: %w", action.InstanceID, err)
	}
	return cmd.State == "leased" && cmd.Attempts == 0, nil
}

// fail ends the action because the provider's part failed: as a failed
// agent command would (completeInstanceAction), with the provider's error
// as the fault's details.
func (w *ResizeInstanceWorker) fail(ctx context.Context, action store.InstanceAction, cause error) error {
	err := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		inst, err := q.LockInstance(ctx, action.InstanceID)
		if err != nil {
			return err
		}
		if open, err := w.held(ctx, q, action); err != nil || !open {
			return err
		}
		if _, err := q.CancelAgentCommand(ctx, action.CommandID); err != nil {
			return fmt.Errorf("cancel command: %w", err)
		}
		if inst.Task == ActionTask(action.Action) {
			if err := q.FinishInstanceTask(ctx, store.FinishInstanceTaskParams{ID: inst.ID, ServiceStatus: inst.ServiceStatus}); err != nil {
				return err
			}
			if err := q.SetInstanceFault(ctx, store.SetInstanceFaultParams{
				ID: inst.ID, Task: status.TaskNone, FaultMessage: failureMessage(action), FaultDetails: cause.Error(),
			}); err != nil {
				return fmt.Errorf("record fault: %w", err)
			}
		}
		if err := q.CompleteInstanceAction(ctx, store.CompleteInstanceActionParams{CommandID: action.CommandID, Outcome: "failed"}); err != nil {
			return fmt.Errorf("close action: %w", err)
		}
		return InsertEvent(ctx, q, inst.ProjectID, EventInstanceActionFailed, inst.ID, actionPayload(action, cause.Error()))
	})
	if err != nil {
		return fmt.Errorf("%w (and recording the failure failed: %v)", cause, err)
	}
	w.deps.Logger.WarnContext(ctx, "resize failed at the provider", "instance_id", action.InstanceID, "action", action.Action, "err", cause)
	return river.JobCancel(cause)
}
