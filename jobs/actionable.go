package jobs

import (
	"net/http"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/status"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Actionable is Trove's "action-able" check (API §5.4): the server is
// ACTIVE, no task but RESTART_REQUIRED runs, the datastore is in a state an
// action can start from, and no backup is running. Otherwise 422 with
// Trove's text. It lives here, not in functions, because a backup started
// by a schedule (a job) makes the same check as one started by the API.
func Actionable(i store.Instance) *openapi.Fault {
	switch {
	case i.ComputeStatus != "ACTIVE":
		return notAvailable(i.ID, "instance", i.ComputeStatus)
	case i.Task != status.TaskNone && i.Task != status.TaskRestartRequired:
		return notAvailable(i.ID, "task", i.Task)
	}
	switch i.ServiceStatus {
	case "running", "shutdown", "crashed", "blocked", "healthy", "restart required":
	default:
		return notAvailable(i.ID, "instance", i.ServiceStatus)
	}
	if i.RunningBackupID.Valid {
		return notAvailable(i.ID, "instance", "BACKUP")
	}
	return nil
}

func notAvailable(id uuid.UUID, what, state string) *openapi.Fault {
	return openapi.Errorf(http.StatusUnprocessableEntity,
		"Instance %s is not currently available for an action to be performed (%s status was %s).", id, what, state)
}
