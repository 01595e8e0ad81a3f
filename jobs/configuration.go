package jobs

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/status"
)

// Configuration groups reach an instance as an apply_configuration command,
// queued by the API when a group is attached, detached or changed, with a
// configuration_apply row saying whether the change needs a restart. When
// the agent confirms, completeApplyConfiguration records the outcome:
//
//   - applied live (no restart needed): nothing changes, the task stays NONE;
//   - written for the next restart: task RESTART_REQUIRED and service status
//     "restart required", until a restart (jobs/instance_actions.go) ends it;
//   - refused by the guest (the datastore rejected a value): a fault on the
//     instance; the datastore keeps running with its previous settings.
//
// A later apply, restart or flavor resize of the same instance supersedes
// an earlier apply's RESTART_REQUIRED (it replaced the values or restarted
// the server), whichever order the completions run in.

// Event kinds of configuration groups on instances.
const (
	EventConfigurationAttached    = "instance.configuration_attached"
	EventConfigurationDetached    = "instance.configuration_detached"
	EventConfigurationApplied     = "instance.configuration_applied"
	EventConfigurationApplyFailed = "instance.configuration_apply_failed"
)

// ConfigurationFaultPrefix starts the fault message of a failed apply; a
// later successful apply clears such a fault (and no other).
const ConfigurationFaultPrefix = "The configuration could not be applied"

func init() {
	RegisterCompleter(protocol.CommandApplyConfiguration, completeApplyConfiguration)
}

func completeApplyConfiguration(ctx context.Context, _ pgx.Tx, q *store.Queries, inst store.Instance, cmd store.AgentCommand) error {
	apply, err := q.GetConfigurationApply(ctx, cmd.ID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil // not queued by the configuration API: nothing to record
	}
	if err != nil {
		return fmt.Errorf("complete apply_configuration %s: %w", cmd.ID, err)
	}
	payload := map[string]any{"command_id": cmd.ID.String(), "restart_required": apply.Restart}
	if apply.ConfigurationID.Valid {
		payload["configuration_id"] = apply.ConfigurationID.UUID.String()
	}

	if cmd.State != "succeeded" {
		// The task is left alone (it is not ours: applies run under NONE).
		if err := q.SetInstanceFault(ctx, store.SetInstanceFaultParams{
			ID: inst.ID, Task: inst.Task, FaultMessage: ConfigurationFaultPrefix + ": " + cmd.Error, FaultDetails: cmd.Error,
		}); err != nil {
			return fmt.Errorf("complete apply_configuration %s: record fault: %w", cmd.ID, err)
		}
		payload["error"] = cmd.Error
		return InsertEvent(ctx, q, inst.ProjectID, EventConfigurationApplyFailed, inst.ID, payload)
	}

	if len(inst.FaultMessage) >= len(ConfigurationFaultPrefix) && inst.FaultMessage[:len(ConfigurationFaultPrefix)] == ConfigurationFaultPrefix {
		if err := q.ClearInstanceFault(ctx, inst.ID); err != nil {
			return fmt.Errorf("complete apply_configuration %s: clear fault: %w", cmd.ID, err)
		}
	}
	if apply.Restart {
		superseded, err := q.ConfigurationApplySuperseded(ctx, cmd.ID)
		if err != nil {
			return fmt.Errorf("complete apply_configuration %s: %w", cmd.ID, err)
		}
		// Only an idle instance turns RESTART_REQUIRED: one that is
		// restarting or resizing picks the values up as it restarts.
		if !superseded && inst.Task == status.TaskNone {
			if err := q.SetInstanceTask(ctx, store.SetInstanceTaskParams{ID: inst.ID, Task: status.TaskRestartRequired}); err != nil {
				return fmt.Errorf("complete apply_configuration %s: set task: %w", cmd.ID, err)
			}
			if err := q.SetInstanceServiceStatus(ctx, store.SetInstanceServiceStatusParams{
				ID: inst.ID, ServiceStatus: protocol.ServiceRestartRequired}); err != nil {
				return fmt.Errorf("complete apply_configuration %s: set service status: %w", cmd.ID, err)
			}
		}
	}
	return InsertEvent(ctx, q, inst.ProjectID, EventConfigurationApplied, inst.ID, payload)
}
