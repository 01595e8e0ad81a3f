// Package driver defines what the guest agent needs from a datastore: one
// interface, one implementation per engine (agent/driver/postgresql, later
// mariadb and redis). Every method must be idempotent: the agent receives
// commands at least once and may itself restart at any point.
package driver

import (
	"context"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Driver manages one datastore on one volume.
type Driver interface {
	// Prepare initialises the datastore on an empty volume (or finishes an
	// interrupted initialisation), starts it, waits until it accepts
	// connections and creates the requested databases and users.
	Prepare(ctx context.Context, req protocol.PrepareRequest) error
	// EnsureRunning starts a prepared datastore that is not running (after
	// an agent or host restart). It does nothing before Prepare.
	EnsureRunning(ctx context.Context) error
	// Status reports the datastore's service status (protocol.Service*).
	Status(ctx context.Context) string
	// Stop shuts the datastore down.
	Stop(ctx context.Context) error
	// VolumeUsage returns the bytes used on the volume and its size.
	VolumeUsage(ctx context.Context) (used, total int64, err error)
}
