package agent

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// rebuildPoll paces the wait for the datastore to serve after a rebuild.
const rebuildPoll = 200 * time.Millisecond

// mgmtHandlers are the commands of the management instance actions and of
// guest logs.
func (a *Agent) mgmtHandlers() map[string]handler {
	type none struct{}
	return map[string]handler{
		protocol.CommandStopDatastore: commandHandler(func(ctx context.Context, _ none) (any, error) {
			return nil, a.drv.Stop(ctx)
		}),
		protocol.CommandRebuild: commandHandler(func(ctx context.Context, _ protocol.RebuildRequest) (any, error) {
			return nil, a.rebuilt(ctx)
		}),
		protocol.CommandGuestLogAction: commandHandler(func(ctx context.Context, p protocol.GuestLogActionRequest) (any, error) {
			gl, ok := a.drv.(driver.GuestLogger)
			if !ok {
				return nil, errors.New("this datastore has no guest logs")
			}
			return gl.GuestLogAction(ctx, p)
		}),
		protocol.CommandGuestLogRead: commandHandler(func(ctx context.Context, p protocol.GuestLogReadRequest) (any, error) {
			return a.readGuestLog(ctx, p)
		}),
	}
}

// rebuilt finishes a rebuild: this agent was started again on the
// instance's volume (the provider's part of the rebuild), and started the
// datastore before it took commands. It makes sure the datastore runs and
// waits until it serves, so the command's success means the instance is
// back.
func (a *Agent) rebuilt(ctx context.Context) error {
	if err := a.drv.EnsureRunning(ctx); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	for {
		s := a.drv.Status(ctx)
		switch s {
		case protocol.ServiceHealthy, protocol.ServiceRunning:
			return nil
		case protocol.ServiceNew, protocol.ServiceBuilding:
			return fmt.Errorf("rebuild: the volume holds no prepared datastore (status %s)", s)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("rebuild: the datastore does not serve (status %s): %w", s, ctx.Err())
		case <-time.After(rebuildPoll):
		}
	}
}
