package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"golang.org/x/sync/errgroup"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/internal/status"
)

// RefreshComputeStatus is the periodic look at every instance's server
// (provider.GetServer), so that the compute status the Trove status model
// reads follows the cloud: a server Nova put in ERROR makes the instance
// ERROR, with Nova's fault message in the instance's fault; a server that
// is gone reads SHUTDOWN; a server stopped or back to ACTIVE shows so.
// Provisioning records the status the server was built with; this keeps it
// current afterwards.
//
// Only idle and building instances are looked at: while an action or a
// delete runs, its job owns the server's state (a resize passes through
// Nova's RESIZE and VERIFY_RESIZE). The status read from the cloud is
// written only if the instance is still in the task it was read in.
type RefreshComputeStatus struct{}

func (RefreshComputeStatus) Kind() string { return "refresh_compute_status" }

func (RefreshComputeStatus) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 1,
		UniqueOpts: river.UniqueOpts{ByPeriod: ComputeRefreshInterval / 2}}
}

// ComputeRefreshInterval is how often servers are looked at.
const ComputeRefreshInterval = time.Minute

// computeRefreshConcurrency bounds the provider calls in flight.
const computeRefreshConcurrency = 4

type RefreshComputeStatusWorker struct {
	river.WorkerDefaults[RefreshComputeStatus]
	deps *Deps
}

func (w *RefreshComputeStatusWorker) Timeout(*river.Job[RefreshComputeStatus]) time.Duration {
	return 2 * time.Minute
}

func (w *RefreshComputeStatusWorker) Work(ctx context.Context, _ *river.Job[RefreshComputeStatus]) error {
	return RefreshComputeStatusNow(ctx, w.deps)
}

// RefreshComputeStatusNow looks at every watched instance's server once
// (the worker's body; tests call it). One instance's failure does not stop
// the others; the first is returned.
func RefreshComputeStatusNow(ctx context.Context, deps *Deps) error {
	watched, err := store.New(deps.Pool).ListComputeWatched(ctx)
	if err != nil {
		return fmt.Errorf("refresh compute status: %w", err)
	}
	var g errgroup.Group
	g.SetLimit(computeRefreshConcurrency)
	for _, inst := range watched {
		g.Go(func() error { return refreshCompute(ctx, deps, inst) })
	}
	if err := g.Wait(); err != nil {
		return fmt.Errorf("refresh compute status: %w", err)
	}
	return nil
}

// refreshCompute reads one instance's server and records what changed.
func refreshCompute(ctx context.Context, deps *Deps, seen store.ListComputeWatchedRow) error {
	srv, err := deps.Provider.GetServer(ctx, seen.ID.String())
	gone := errors.Is(err, provider.ErrNotFound)
	if err != nil && !gone {
		return fmt.Errorf("instance %s: %w", seen.ID, err)
	}
	if gone {
		srv = provider.Server{Status: ""} // the status model's "server missing"
	}
	if srv.Status == seen.ComputeStatus {
		return nil
	}
	return deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		inst, err := q.LockInstance(ctx, seen.ID)
		if err != nil {
			return fmt.Errorf("instance %s: %w", seen.ID, err)
		}
		if inst.DeletedAt != nil || inst.Task != seen.Task || inst.ComputeStatus != seen.ComputeStatus {
			return nil // something else changed it meanwhile; the next round looks again
		}
		if err := q.SetInstanceComputeStatus(ctx, store.SetInstanceComputeStatusParams{ID: inst.ID, ComputeStatus: srv.Status}); err != nil {
			return fmt.Errorf("instance %s: %w", inst.ID, err)
		}
		deps.Logger.InfoContext(ctx, "compute status changed", "instance_id", inst.ID,
			"from", inst.ComputeStatus, "to", srv.Status, "fault", srv.Fault)
		switch {
		case srv.Status == provider.StatusError && inst.Task == status.TaskBuilding:
			// As provisioning fails a server that comes up in ERROR.
			if err := q.SetInstanceFault(ctx, store.SetInstanceFaultParams{
				ID: inst.ID, Task: status.TaskErrorServer,
				FaultMessage: "The server could not be created: " + srv.Fault, FaultDetails: srv.Fault,
			}); err != nil {
				return err
			}
			return InsertEvent(ctx, q, inst.ProjectID, EventInstanceError, inst.ID, map[string]string{"reason": "server", "fault": srv.Fault})
		case srv.Status == provider.StatusError:
			if err := q.RecordInstanceFault(ctx, store.RecordInstanceFaultParams{
				ID: inst.ID, FaultMessage: "The server is in ERROR: " + srv.Fault, FaultDetails: srv.Fault,
			}); err != nil {
				return err
			}
			return InsertEvent(ctx, q, inst.ProjectID, EventInstanceError, inst.ID, map[string]string{"reason": "server", "fault": srv.Fault})
		case gone:
			if err := q.RecordInstanceFault(ctx, store.RecordInstanceFaultParams{
				ID: inst.ID, FaultMessage: "The instance's server no longer exists.", FaultDetails: "the provider has no server " + inst.ServerID,
			}); err != nil {
				return err
			}
			return InsertEvent(ctx, q, inst.ProjectID, EventInstanceError, inst.ID, map[string]string{"reason": "server gone"})
		}
		return InsertEvent(ctx, q, inst.ProjectID, EventInstanceComputeStatus, inst.ID,
			map[string]string{"from": inst.ComputeStatus, "to": srv.Status})
	})
}

// EventInstanceComputeStatus records that the instance's server changed
// status outside any action (stopped, started, recovered from ERROR).
const EventInstanceComputeStatus = "instance.compute_status"
