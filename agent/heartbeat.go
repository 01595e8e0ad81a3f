package agent

import (
	"context"
	"errors"
	"time"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// heartbeatLoop sends a heartbeat at once, then every interval and after
// every command, until ctx ends. A failed heartbeat is logged and the next tick tries again:
// heartbeats are snapshots, so there is nothing to catch up on.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	for {
		if err := a.sendHeartbeat(ctx); err != nil && ctx.Err() == nil {
			a.logger.Warn("heartbeat failed; retrying next interval", "error", err)
			var se *statusError
			if errors.As(err, &se) && se.unauthorized() {
				a.refreshCredential()
			}
		}

		t := time.NewTimer(a.heartbeatEvery())
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		case <-a.beatNow:
			t.Stop()
		}
	}
}

func (a *Agent) sendHeartbeat(ctx context.Context) error {
	hb := protocol.Heartbeat{
		ServiceStatus: a.serviceStatus(ctx),
		AgentVersion:  agentVersion(),
	}

	uctx, cancel := context.WithTimeout(ctx, a.probeTimeout)
	used, total, err := a.drv.VolumeUsage(uctx)
	cancel()
	if err != nil {
		// Still send the heartbeat: liveness and status matter more than
		// usage, which is reported as zero for this interval.
		if ctx.Err() == nil {
			a.logger.Warn("read volume usage", "error", err)
		}
	} else {
		hb.VolumeUsedBytes, hb.VolumeTotalBytes = used, total
	}

	if acc, ok := a.drv.(driver.Accounts); ok && hb.ServiceStatus == protocol.ServiceHealthy {
		ictx, cancel := context.WithTimeout(ctx, a.probeTimeout)
		inv, err := acc.Inventory(ictx)
		cancel()
		if err == nil {
			hb.Inventory = &inv
		} else if ctx.Err() == nil {
			a.logger.Warn("read inventory", "error", err)
		}
	}
	// Guest logs ride along with the inventory (Trove's log list).
	if gl, ok := a.drv.(driver.GuestLogger); ok && hb.Inventory != nil {
		if logs, err := gl.GuestLogs(ctx); err == nil {
			hb.Inventory.Logs = logs
		} else if ctx.Err() == nil {
			a.logger.Warn("read guest logs", "error", err)
		}
	}

	return a.post(ctx, a.conn.Load(), "send heartbeat", protocol.PathHeartbeat, hb)
}

// serviceStatus asks the driver for the datastore's status within the
// probe timeout, so that a wedged datastore cannot stall the agent.
func (a *Agent) serviceStatus(ctx context.Context) string {
	ctx, cancel := context.WithTimeout(ctx, a.probeTimeout)
	defer cancel()
	return a.drv.Status(ctx)
}
