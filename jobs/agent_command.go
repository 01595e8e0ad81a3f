package jobs

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/db/store"
)

// QueueCommand inserts an agent command in the caller's transaction; the
// insert trigger wakes the instance's parked long-poll at commit. Commands
// whose payload carries secrets are cleared when they complete.
func QueueCommand(ctx context.Context, q *store.Queries, instanceID uuid.UUID, name string, payload any, leaseSeconds int32) (uuid.UUID, error) {
	b := []byte("{}")
	if payload != nil {
		var err error
		if b, err = json.Marshal(payload); err != nil {
			return uuid.Nil, fmt.Errorf("encode %s: %w", name, err)
		}
	}
	id := uuid.New()
	if _, err := q.InsertAgentCommand(ctx, store.InsertAgentCommandParams{
		ID: id, InstanceID: instanceID, Name: name, Payload: b, LeaseSeconds: leaseSeconds,
	}); err != nil {
		return uuid.Nil, fmt.Errorf("queue %s: %w", name, err)
	}
	return id, nil
}
