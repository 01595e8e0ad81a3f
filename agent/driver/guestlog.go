package driver

import (
	"context"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// GuestLogger is implemented by drivers whose datastore has guest logs
// (Trove's `log list/enable/disable`). The agent reports GuestLogs with
// every heartbeat's inventory.
type GuestLogger interface {
	// GuestLogs lists the logs with their state and file size.
	GuestLogs(ctx context.Context) ([]protocol.GuestLog, error)
	// GuestLogAction enables, disables or discards a log and returns its
	// state afterwards. Unknown logs are an error.
	GuestLogAction(ctx context.Context, req protocol.GuestLogActionRequest) (protocol.GuestLog, error)
}
