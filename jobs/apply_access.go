package jobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/internal/status"
)

// ApplyAccess makes the instance's firewall (provider.Firewall: on
// OpenStack, the rules of its security group) open the datastore's port
// to exactly the instance's stored access.allowed_cidrs. The API inserts
// it with an update that changes access, in the same transaction; a
// create needs none (the provider builds the server with the stored
// CIDRs).
//
// The job applies what the row holds when it runs, not what its
// arguments said, and checks the row again afterwards: several updates in
// quick succession each insert a job, the jobs may run in any order, and
// whichever ends last applied the latest CIDRs. An instance still
// building has no server yet: the job waits for it (the server may have
// been created with the CIDRs read before the update). Providers without
// a firewall (local) need nothing.
type ApplyAccess struct {
	InstanceID uuid.UUID `json:"instance_id"`
}

func (ApplyAccess) Kind() string { return "apply_access" }

func (ApplyAccess) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 8}
}

type ApplyAccessWorker struct {
	river.WorkerDefaults[ApplyAccess]
	deps *Deps
}

func (w *ApplyAccessWorker) Timeout(*river.Job[ApplyAccess]) time.Duration {
	return 2 * time.Minute
}

func (w *ApplyAccessWorker) Work(ctx context.Context, job *river.Job[ApplyAccess]) error {
	id := job.Args.InstanceID
	fw, ok := w.deps.Provider.(provider.Firewall)
	if !ok {
		return nil
	}
	q := store.New(w.deps.Pool)
	var applied []string
	for round := 0; ; round++ {
		row, err := q.GetInstanceAnyProject(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			return river.JobCancel(fmt.Errorf("apply access of %s: instance does not exist", id))
		}
		if err != nil {
			return fmt.Errorf("apply access of %s: %w", id, err)
		}
		inst := row.Instance
		if inst.DeletedAt != nil || inst.Task == status.TaskDeleting {
			return nil
		}
		cidrs := inst.AccessAllowedCidrs
		if round > 0 && slices.Equal(cidrs, applied) {
			return nil
		}
		if round >= 5 {
			return fmt.Errorf("apply access of %s: the allowed CIDRs keep changing; trying again later", id)
		}
		err = fw.SetAllowedCIDRs(ctx, id.String(), cidrs)
		switch {
		case errors.Is(err, provider.ErrNotFound) && inst.Task == status.TaskBuilding:
			// Provisioning creates the server with the CIDRs it read;
			// come back once it exists to make sure they are these.
			return river.JobSnooze(10 * time.Second)
		case errors.Is(err, provider.ErrNotFound):
			return nil // no server (a failed build): nothing to open
		case err != nil:
			err = fmt.Errorf("apply access of %s: %w", id, err)
			if errors.Is(err, provider.ErrRefused) || job.Attempt >= job.MaxAttempts {
				return w.fail(ctx, id, cidrs, err)
			}
			return err
		}
		applied = cidrs
	}
}

// fail records on the instance that its access could not be applied. The
// instance keeps running (with the rules it had); an update of access
// tries again.
func (w *ApplyAccessWorker) fail(ctx context.Context, id uuid.UUID, cidrs []string, cause error) error {
	err := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		inst, err := q.LockInstance(ctx, id)
		if err != nil {
			return err
		}
		if !slices.Equal(inst.AccessAllowedCidrs, cidrs) {
			return nil // superseded: a newer update's job applies that
		}
		if err := q.RecordInstanceFault(ctx, store.RecordInstanceFaultParams{
			ID: id, FaultMessage: "The instance's access (allowed CIDRs) could not be applied.", FaultDetails: cause.Error(),
		}); err != nil {
			return err
		}
		return InsertEvent(ctx, q, inst.ProjectID, EventInstanceAccessFailed, id, map[string]any{"allowed_cidrs": cidrs, "error": cause.Error()})
	})
	if err != nil {
		return fmt.Errorf("%w (and recording the fault failed: %v)", cause, err)
	}
	return river.JobCancel(cause)
}

// EventInstanceAccessFailed records that an access update could not be
// applied to the instance's server.
const EventInstanceAccessFailed = "instance.access_failed"
