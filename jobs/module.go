package jobs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
)

// A module apply's outcome is the guest's report, per module: it is
// recorded on the instance's module rows that this command applied (a
// later apply of the same module replaced the command id, so an older
// report cannot overwrite a newer one). A command that failed as a whole
// marks its modules ERROR with the agent's error.
func init() { RegisterCompleter(protocol.CommandModuleApply, completeModuleApply) }

func completeModuleApply(ctx context.Context, _ pgx.Tx, q *store.Queries, inst store.Instance, cmd store.AgentCommand) error {
	cmdID := uuid.NullUUID{UUID: cmd.ID, Valid: true}
	if cmd.State != "succeeded" {
		msg := cmd.Error
		if msg == "" {
			msg = "the guest could not apply the module"
		}
		if err := q.FailCommandModules(ctx, store.FailCommandModulesParams{Message: msg, InstanceID: inst.ID, CommandID: cmdID}); err != nil {
			return fmt.Errorf("record failed module apply %s: %w", cmd.ID, err)
		}
		return nil
	}
	var out protocol.Result
	var res protocol.ModuleApplyResult
	if err := json.Unmarshal(cmd.Result, &out); err != nil {
		return fmt.Errorf("module apply %s: decode result: %w", cmd.ID, err)
	}
	if err := json.Unmarshal(out.Output, &res); err != nil {
		return fmt.Errorf("module apply %s: decode output: %w", cmd.ID, err)
	}
	for _, r := range res.Modules {
		id, err := uuid.Parse(r.ID)
		if err != nil || (r.Status != "OK" && r.Status != "ERROR") {
			continue // not a report this control plane asked for
		}
		if err := q.RecordInstanceModuleResult(ctx, store.RecordInstanceModuleResultParams{
			Status: pgtype.Text{String: r.Status, Valid: true}, Message: r.Message,
			InstanceID: inst.ID, ModuleID: id, CommandID: cmdID,
		}); err != nil {
			return fmt.Errorf("record module %s on %s: %w", id, inst.ID, err)
		}
	}
	return nil
}
