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

// Instance actions (restart, resize flavor, resize volume) run in two
// halves. The API locks the instance, sets the action's task (REBOOTING,
// RESIZING), and in the same transaction queues the agent command and
// records an instance_action row with the resize target. When the agent
// posts its result, the agent API enqueues CompleteCommand, which runs
// completeInstanceAction below: it applies the target (flavor, volume
// size) if the command succeeded, returns the task to NONE, records a
// fault if it failed, and closes the action row.
//
// A resize's command is queued held, with a ResizeInstance job
// (resize_instance.go) between the request and the agent: a provider with
// real servers and volumes (provider.Resizer: OpenStack) resizes the
// server or extends the volume there first, and the job then hands the
// command to the agent; a provider's failure ends the action as a failed
// command does. The local provider has nothing to do for either resize: a
// flavor is only the memory the datastore is configured for (the agent
// re-derives its settings and restarts), and a volume is a directory whose
// size limit the agent enforces; the job releases the command at once.

// Actions, as recorded in instance_action.action.
const (
	ActionRestart      = "restart"
	ActionResizeFlavor = "resize_flavor"
	ActionResizeVolume = "resize_volume"
	// ActionRebuild is the mgmt rebuild (mgmt_instance.go).
	ActionRebuild = "rebuild"
)

// ActionTask is the task an action runs under.
func ActionTask(action string) string {
	switch action {
	case ActionRestart:
		return status.TaskRebooting
	case ActionRebuild:
		return TaskRebuilding
	}
	return status.TaskResizing
}

// Event kinds of instance updates and actions.
const (
	EventInstanceUpdated      = "instance.updated"
	EventInstanceRestarting   = "instance.restarting"
	EventInstanceRestarted    = "instance.restarted"
	EventInstanceResizing     = "instance.resizing"
	EventInstanceResized      = "instance.resized"
	EventInstanceActionFailed = "instance.action_failed"
	EventInstanceStatusReset  = "instance.status_reset"
)

// ActionDeadline ends an action whose agent never answered (the agent is
// dead, or its host): without it the instance would show REBOOT or RESIZE
// for ever. The API inserts it with the action, scheduled at the
// action's deadline. It runs as a CompleteCommand, so it needs no worker
// of its own: the same kind, and arguments the worker decodes as
// CompleteCommand's (Deadline is ignored) but that differ for River's
// uniqueness, so the continuation the agent's answer enqueues is not
// merged into it. Run after the answer, it finds the action complete and
// does nothing; before, it finds the command unanswered and fails the
// action (completeInstanceAction).
type ActionDeadline struct {
	InstanceID uuid.UUID `json:"instance_id"`
	CommandID  uuid.UUID `json:"command_id"`
	Deadline   time.Time `json:"deadline"`
}

func (ActionDeadline) Kind() string { return CompleteCommand{}.Kind() }

func (ActionDeadline) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// ActionDeadlineAfter is how long after its command's lease an action may
// still be answered: the agent's own timeout ends the command within the
// lease, and the answer's delivery may be retried for a while.
const ActionDeadlineAfter = 2 * time.Minute

func init() {
	RegisterCompleter(protocol.CommandRestart, completeInstanceAction)
	RegisterCompleter(protocol.CommandResizeFlavor, completeInstanceAction)
	RegisterCompleter(protocol.CommandResizeVolume, completeInstanceAction)
}

// completeInstanceAction records the outcome of a restart or resize
// command on the locked instance. A repeated continuation, or one for an
// action that reset_status cancelled, changes nothing.
func completeInstanceAction(ctx context.Context, tx pgx.Tx, q *store.Queries, inst store.Instance, cmd store.AgentCommand) error {
	action, err := q.GetInstanceAction(ctx, cmd.ID)
	if errors.Is(err, pgx.ErrNoRows) {
		// Queued by something other than the action API: no target to
		// apply and no task of ours to end.
		return nil
	}
	if err != nil {
		return fmt.Errorf("complete %s %s: load action: %w", cmd.Name, cmd.ID, err)
	}
	if action.CompletedAt != nil {
		return nil
	}
	var res protocol.Result
	if len(cmd.Result) > 0 {
		_ = json.Unmarshal(cmd.Result, &res)
	}
	if cmd.State == "pending" || cmd.State == "leased" {
		// Only ActionDeadline runs before the agent answered: give up on
		// the command. Whether a leased one ran on the guest is unknown.
		if _, err := q.CancelAgentCommand(ctx, cmd.ID); err != nil {
			return fmt.Errorf("complete %s %s: cancel: %w", cmd.Name, cmd.ID, err)
		}
		cmd.State = "failed"
		cmd.Error = fmt.Sprintf("the guest agent did not answer %s within its deadline (%d attempts delivered)", cmd.Name, cmd.Attempts)
	}
	// reset_status cancels open actions, so the task is normally still
	// ours; if an admin reset it meanwhile, the outcome is still applied
	// (it happened on the guest) but the task is left alone.
	ours := inst.Task == ActionTask(action.Action)
	succeeded := cmd.State == "succeeded"
	outcome := "failed"
	if succeeded {
		outcome = "succeeded"
	}

	if succeeded {
		switch action.Action {
		case ActionResizeFlavor:
			if err := q.SetInstanceFlavor(ctx, store.SetInstanceFlavorParams{ID: inst.ID, FlavorID: action.ToFlavorID}); err != nil {
				return fmt.Errorf("complete resize of %s: set flavor %s: %w", inst.ID, action.ToFlavorID, err)
			}
		case ActionResizeVolume:
			if err := q.SetInstanceVolumeSize(ctx, store.SetInstanceVolumeSizeParams{ID: inst.ID, VolumeSizeGb: action.ToVolumeSizeGb}); err != nil {
				return fmt.Errorf("complete resize of %s: set volume size %d: %w", inst.ID, action.ToVolumeSizeGb, err)
			}
		}
	}
	if ours {
		service := res.ServiceStatus
		if service == "" {
			service = protocol.ServiceUnknown
			if succeeded {
				service = protocol.ServiceHealthy
			}
		}
		if err := q.FinishInstanceTask(ctx, store.FinishInstanceTaskParams{ID: inst.ID, ServiceStatus: service}); err != nil {
			return fmt.Errorf("complete %s of %s: %w", action.Action, inst.ID, err)
		}
		if !succeeded {
			// Trove's rollback: the task returns to NONE (the guest undid
			// what it could) and the failure is recorded as the fault.
			if err := q.SetInstanceFault(ctx, store.SetInstanceFaultParams{
				ID: inst.ID, Task: status.TaskNone, FaultMessage: failureMessage(action), FaultDetails: cmd.Error,
			}); err != nil {
				return fmt.Errorf("complete %s of %s: record fault: %w", action.Action, inst.ID, err)
			}
		}
	}
	if err := q.CompleteInstanceAction(ctx, store.CompleteInstanceActionParams{CommandID: cmd.ID, Outcome: outcome}); err != nil {
		return fmt.Errorf("complete %s of %s: close action: %w", action.Action, inst.ID, err)
	}
	return InsertEvent(ctx, q, inst.ProjectID, actionEvent(action.Action, succeeded), inst.ID, actionPayload(action, cmd.Error))
}

func failureMessage(a store.InstanceAction) string {
	switch a.Action {
	case ActionResizeFlavor:
		return fmt.Sprintf("Resizing to flavor %s failed; the instance keeps flavor %s.", a.ToFlavorID, a.FromFlavorID)
	case ActionResizeVolume:
		return fmt.Sprintf("Resizing the volume to %d GB failed; it stays %d GB.", a.ToVolumeSizeGb, a.FromVolumeSizeGb)
	case ActionRebuild:
		return fmt.Sprintf("Rebuilding the server from image %s failed.", a.ImageID)
	}
	return "The datastore could not be restarted."
}

func actionEvent(action string, succeeded bool) string {
	switch {
	case !succeeded:
		return EventInstanceActionFailed
	case action == ActionRestart:
		return EventInstanceRestarted
	case action == ActionRebuild:
		return EventInstanceRebuilt
	}
	return EventInstanceResized
}

// actionPayload describes an action in its events.
func actionPayload(a store.InstanceAction, failure string) map[string]any {
	p := map[string]any{"action": a.Action}
	switch a.Action {
	case ActionResizeFlavor:
		p["from_flavor_id"], p["to_flavor_id"] = a.FromFlavorID, a.ToFlavorID
	case ActionResizeVolume:
		p["from_volume_size_gb"], p["to_volume_size_gb"] = a.FromVolumeSizeGb, a.ToVolumeSizeGb
	case ActionRebuild:
		p["image_id"] = a.ImageID
	}
	if failure != "" {
		p["error"] = failure
	}
	return p
}

// ActionPayload is the payload of the event that starts an action.
func ActionPayload(a store.InstanceAction) map[string]any { return actionPayload(a, "") }
