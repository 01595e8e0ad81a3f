package jobs

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
)

// The API answers root enable at once and records the enable in the root
// history with the command it queued. If the agent could not enable root,
// the record goes: root show must not report an enable that never
// happened (nor the mgmt history credit it to anyone).
func init() { RegisterCompleter(protocol.CommandEnableRoot, completeEnableRoot) }

func completeEnableRoot(ctx context.Context, _ pgx.Tx, q *store.Queries, _ store.Instance, cmd store.AgentCommand) error {
	if cmd.State != "failed" {
		return nil
	}
	if err := q.DeleteRootHistoryOfCommand(ctx, cmd.ID); err != nil {
		return fmt.Errorf("forget failed root enable %s: %w", cmd.ID, err)
	}
	return nil
}
