package provider

import "context"

// Rebuilder is implemented by providers that can rebuild an instance's
// server in place on its volume (Trove's mgmt rebuild: Nova rebuilds the
// VM from a new image, keeping the data volume). The guest agent on the
// rebuilt server runs again with its existing configuration.
type Rebuilder interface {
	// RebuildServer rebuilds the instance's server from image and returns
	// it once its agent has been started again. Idempotent: calling it
	// again rebuilds again. ErrNotFound when the instance has no server.
	RebuildServer(ctx context.Context, instanceID, image string) (Server, error)
}
