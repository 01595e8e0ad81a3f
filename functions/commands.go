package functions

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/status"
	"github.com/coffer-dbaas/coffer/openapi"
)

// queueCommand inserts an agent command in the caller's transaction; the
// insert trigger wakes the instance's parked long-poll at commit. Commands
// whose payload carries secrets are cleared when they complete.
func queueCommand(ctx context.Context, q *store.Queries, instanceID uuid.UUID, name string, payload any, leaseSeconds int32) (uuid.UUID, error) {
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

// actionable is Trove's "action-able" check (API §5.4): the server is
// ACTIVE, no task but RESTART_REQUIRED runs, and the datastore is in a
// state an action can start from. Otherwise 422.
func actionable(i store.Instance) *openapi.Fault {
	switch {
	case i.ComputeStatus != "ACTIVE":
		return notAvailable(i.ID, "instance", i.ComputeStatus)
	case i.Task != status.TaskNone && i.Task != status.TaskRestartRequired:
		return notAvailable(i.ID, "task", i.Task)
	}
	switch i.ServiceStatus {
	case "running", "shutdown", "crashed", "blocked", "healthy", "restart required":
		return nil
	}
	return notAvailable(i.ID, "instance", i.ServiceStatus)
}

func notAvailable(id uuid.UUID, what, state string) *openapi.Fault {
	return openapi.Errorf(http.StatusUnprocessableEntity,
		"Instance %s is not currently available for an action to be performed (%s status was %s).", id, what, state)
}
