package functions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

func init() { register(InstanceActions) }

// Leases of the action commands: how long the agent may take before the
// command is handed out again. A restart waits for crash recovery; a
// flavor resize restarts, and on failure restarts again with the old
// settings.
const (
	restartLeaseSeconds      = 600
	resizeFlavorLeaseSeconds = 900
	resizeVolumeLeaseSeconds = 120
)

type instanceActionInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       openapi.InstanceAction
}

// InstanceActions serves POST /instances/{id}/action: restart, resize
// (flavor or volume), reset_status, and Trove's replication actions,
// which answer that the instance is no replica.
func InstanceActions(api huma.API, deps *Deps) {
	huma.Register(api, huma.Operation{
		OperationID: "instance-action", Method: http.MethodPost, Path: "/v1.0/{tenant_id}/instances/{instance_id}/action",
		Summary: "Run an action on an instance",
		Description: "The body holds exactly one action: `restart`, `resize` (`flavorRef`, or `volume.size`), " +
			"`reset_status` (admin), `promote_to_replica_source`, `eject_replica_source`. Restart and resize answer at once; " +
			"the instance shows REBOOT or RESIZE until the guest is done, then ACTIVE (a failure is recorded as the instance's fault).",
		Tags: []string{"Instances"}, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors: []int{http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusRequestEntityTooLarge,
			http.StatusUnprocessableEntity, http.StatusNotImplemented},
		MaxBodyBytes: 64 << 10,
	}, deps.instanceAction)
}

func (d *Deps) instanceAction(ctx context.Context, in *instanceActionInput) (*struct{}, error) {
	a := in.Body
	var named []string
	for _, x := range []struct {
		name string
		set  bool
	}{
		{"eject_replica_source", a.EjectReplicaSource != nil}, {"promote_to_replica_source", a.PromoteToReplicaSource != nil},
		{"reset_password", a.ResetPassword != nil}, {"reset_status", a.ResetStatus != nil},
		{"resize", a.Resize != nil}, {"restart", a.Restart != nil},
	} {
		if x.set {
			named = append(named, x.name)
		}
	}
	var err error
	switch {
	case len(named) != 1:
		// Trove looks the instance up before it looks at the action.
		if _, err := d.getInstance(ctx, d.queries(), in.TenantID, in.InstanceID); err != nil {
			return nil, err
		}
		if len(named) == 0 {
			return nil, openapi.BadRequest("No action given: the body must hold one of restart, resize, reset_status, promote_to_replica_source, eject_replica_source.")
		}
		return nil, openapi.BadRequest("Only one action can be performed at a time; the body holds %s.", strings.Join(named, ", "))
	case a.Restart != nil:
		err = d.restartInstance(ctx, in.TenantID, in.InstanceID)
	case a.Resize != nil:
		err = d.resizeInstance(ctx, in.TenantID, in.InstanceID, a.Resize)
	case a.ResetStatus != nil:
		err = d.resetInstanceStatus(ctx, in.TenantID, in.InstanceID, a.ResetStatus.ForceDelete != nil)
	case a.PromoteToReplicaSource != nil:
		err = d.withInstance(ctx, in.TenantID, in.InstanceID, func(_ pgx.Tx, _ *store.Queries, inst store.Instance) error {
			if f := actionable(inst); f != nil {
				return f
			}
			return openapi.BadRequest("Instance %s is not a replica.", inst.ID)
		})
	case a.EjectReplicaSource != nil:
		err = d.withInstance(ctx, in.TenantID, in.InstanceID, func(_ pgx.Tx, _ *store.Queries, inst store.Instance) error {
			if f := actionable(inst); f != nil {
				return f
			}
			return openapi.BadRequest("Instance %s is not a replica source.", inst.ID)
		})
	case a.ResetPassword != nil:
		err = d.withInstance(ctx, in.TenantID, in.InstanceID, func(pgx.Tx, *store.Queries, store.Instance) error {
			return openapi.Errorf(http.StatusNotImplemented, "Resetting the instance password is not supported; use the root or user password operations.")
		})
	}
	return nil, err
}

// withInstance runs fn in a transaction on the tenant's live instance,
// locked. A Fault from fn rolls the transaction back and is the answer;
// any other error is logged and answered 500.
func (d *Deps) withInstance(ctx context.Context, tenant, ref string, fn func(tx pgx.Tx, q *store.Queries, inst store.Instance) error) error {
	id, err := uuid.Parse(ref)
	if err != nil {
		return openapi.NotFound("Instance %s could not be found.", ref)
	}
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		inst, err := q.LockProjectInstance(ctx, store.LockProjectInstanceParams{ID: id, ProjectID: tenant})
		if errors.Is(err, pgx.ErrNoRows) {
			return openapi.NotFound("Instance %s could not be found.", ref)
		}
		if err != nil {
			return fmt.Errorf("lock instance: %w", err)
		}
		return fn(tx, q, inst)
	})
	var f *openapi.Fault
	if errors.As(err, &f) {
		return f
	}
	if err != nil {
		return d.internal(ctx, "instance "+ref, err)
	}
	return nil
}

// startAction queues the agent command of an action, records the action
// with its target, schedules its deadline, sets the action's task and
// service status and writes the event, all in the caller's transaction.
func (d *Deps) startAction(ctx context.Context, tx pgx.Tx, q *store.Queries, inst store.Instance, a store.InsertInstanceActionParams, command string, payload any, lease int32, service string, event string) error {
	cmdID, err := jobs.QueueCommand(ctx, q, inst.ID, command, payload, lease)
	if err != nil {
		return err
	}
	if a.Action != jobs.ActionRestart {
		// The provider resizes first (provider_wiring.go).
		if err := d.holdForProvider(ctx, tx, q, inst.ID, cmdID); err != nil {
			return err
		}
	}
	a.CommandID, a.InstanceID = cmdID, inst.ID
	if err := q.InsertInstanceAction(ctx, a); err != nil {
		return fmt.Errorf("record %s: %w", a.Action, err)
	}
	deadline := d.now().Add(time.Duration(lease)*time.Second + jobs.ActionDeadlineAfter)
	if _, err := d.River.InsertTx(ctx, tx, jobs.ActionDeadline{InstanceID: inst.ID, CommandID: cmdID, Deadline: deadline.UTC()},
		&river.InsertOpts{ScheduledAt: deadline}); err != nil {
		return fmt.Errorf("schedule the deadline of %s: %w", a.Action, err)
	}
	if err := q.StartInstanceTask(ctx, store.StartInstanceTaskParams{ID: inst.ID, Task: jobs.ActionTask(a.Action), ServiceStatus: service}); err != nil {
		return fmt.Errorf("start %s: %w", a.Action, err)
	}
	return jobs.InsertEvent(ctx, q, inst.ProjectID, event, inst.ID, jobs.ActionPayload(store.InstanceAction{
		Action: a.Action, FromFlavorID: a.FromFlavorID, ToFlavorID: a.ToFlavorID,
		FromVolumeSizeGb: a.FromVolumeSizeGb, ToVolumeSizeGb: a.ToVolumeSizeGb,
	}))
}

// restartInstance restarts the datastore (Trove: action-able, task
// REBOOTING, service status "restarting"; the guest restarts; task NONE).
func (d *Deps) restartInstance(ctx context.Context, tenant, ref string) error {
	return d.withInstance(ctx, tenant, ref, func(tx pgx.Tx, q *store.Queries, inst store.Instance) error {
		if f := actionable(inst); f != nil {
			return f
		}
		return d.startAction(ctx, tx, q, inst, store.InsertInstanceActionParams{
			Action: jobs.ActionRestart, RequestedBy: principal(ctx).UserName,
			FromFlavorID: inst.FlavorID, FromVolumeSizeGb: inst.VolumeSizeGb,
		}, protocol.CommandRestart, nil, restartLeaseSeconds, protocol.ServiceRestarting, jobs.EventInstanceRestarting)
	})
}

func (d *Deps) resizeInstance(ctx context.Context, tenant, ref string, r *openapi.ResizeAction) error {
	switch {
	case r.FlavorRef != nil && r.Volume != nil:
		return openapi.BadRequest("Not allowed to resize volume and flavor at the same time.")
	case r.FlavorRef != nil:
		return d.resizeFlavor(ctx, tenant, ref, string(*r.FlavorRef))
	case r.Volume != nil:
		return d.resizeVolume(ctx, tenant, ref, r.Volume.Size)
	}
	return openapi.BadRequest("Missing resize arguments.")
}

// resizeFlavor moves the instance to another flavor: the guest re-derives
// its memory settings and restarts; the flavor changes when it is done.
func (d *Deps) resizeFlavor(ctx context.Context, tenant, ref, flavorRef string) error {
	if i := strings.LastIndex(flavorRef, "/"); i >= 0 {
		flavorRef = flavorRef[i+1:]
	}
	if flavorRef == "" {
		return openapi.BadRequest("Validation error: resize flavorRef must not be empty.")
	}
	return d.withInstance(ctx, tenant, ref, func(tx pgx.Tx, q *store.Queries, inst store.Instance) error {
		if f := actionable(inst); f != nil {
			return f
		}
		if flavorRef == inst.FlavorID {
			return openapi.BadRequest("The new flavor id must be different than the current flavor id of '%s'.", inst.FlavorID)
		}
		flavor, err := q.GetOfferedFlavor(ctx, flavorRef)
		if errors.Is(err, pgx.ErrNoRows) {
			return openapi.BadRequest("Flavor %s could not be found.", flavorRef)
		}
		if err != nil {
			return fmt.Errorf("resize: flavor %s: %w", flavorRef, err)
		}
		if flavor.Ephemeral != 0 {
			// Trove: instances on volumes take no flavor with local storage.
			return openapi.Errorf(http.StatusNotImplemented, "Local storage not specified in flavor ID: %s.", flavor.ID)
		}
		current, err := q.GetFlavor(ctx, inst.FlavorID)
		if err != nil {
			return fmt.Errorf("resize: current flavor %s: %w", inst.FlavorID, err)
		}
		if err := checkResizeQuota(ctx, q, inst.ProjectID, quotaRAM, int64(flavor.RamMb-current.RamMb)); err != nil {
			return err
		}
		return d.startAction(ctx, tx, q, inst, store.InsertInstanceActionParams{
			Action: jobs.ActionResizeFlavor, RequestedBy: principal(ctx).UserName,
			FromFlavorID: inst.FlavorID, ToFlavorID: flavor.ID,
			FromVolumeSizeGb: inst.VolumeSizeGb, ToVolumeSizeGb: inst.VolumeSizeGb,
		}, protocol.CommandResizeFlavor, protocol.ResizeFlavorRequest{FlavorRAMMB: int(flavor.RamMb)},
			resizeFlavorLeaseSeconds, inst.ServiceStatus, jobs.EventInstanceResizing)
	})
}

// resizeVolume grows the instance's volume (never shrinks it, as Trove).
func (d *Deps) resizeVolume(ctx context.Context, tenant, ref string, sizeRef openapi.StringOrInt) error {
	size, ok := sizeRef.Int()
	if !ok || size < 1 {
		return openapi.BadRequest("Validation error: resize volume size must be a positive integer, got '%s'.", sizeRef)
	}
	if size > d.MaxVolumeGB {
		return openapi.Errorf(http.StatusRequestEntityTooLarge,
			"Volume 'size' cannot exceed maximum of %d GB, %d cannot be accepted.", d.MaxVolumeGB, size)
	}
	return d.withInstance(ctx, tenant, ref, func(tx pgx.Tx, q *store.Queries, inst store.Instance) error {
		if f := actionable(inst); f != nil {
			return f
		}
		if size <= int(inst.VolumeSizeGb) {
			return openapi.BadRequest("The new volume 'size' must be larger than the current volume size of '%d'.", inst.VolumeSizeGb)
		}
		if err := checkResizeQuota(ctx, q, inst.ProjectID, quotaVolumes, int64(size)-int64(inst.VolumeSizeGb)); err != nil {
			return err
		}
		return d.startAction(ctx, tx, q, inst, store.InsertInstanceActionParams{
			Action: jobs.ActionResizeVolume, RequestedBy: principal(ctx).UserName,
			FromFlavorID: inst.FlavorID, ToFlavorID: inst.FlavorID,
			FromVolumeSizeGb: inst.VolumeSizeGb, ToVolumeSizeGb: int32(size),
		}, protocol.CommandResizeVolume, protocol.ResizeVolumeRequest{VolumeSizeGB: size},
			resizeVolumeLeaseSeconds, inst.ServiceStatus, jobs.EventInstanceResizing)
	})
}

// checkResizeQuota is Trove's quota check of a resize: the growth of the
// project's memory (quotaRAM) or volume space (quotaVolumes) use, on top
// of what its resizes still running will add. It runs under the project's
// quota lock, in the transaction that starts the resize.
func checkResizeQuota(ctx context.Context, q *store.Queries, project, resource string, delta int64) error {
	if delta <= 0 {
		return nil
	}
	// The lock before the read of the running resizes (checkQuota takes it
	// again, which an advisory lock allows).
	if err := q.LockProjectQuota(ctx, project); err != nil {
		return fmt.Errorf("resize: lock quota: %w", err)
	}
	pending, err := q.ProjectPendingResizes(ctx, project)
	if err != nil {
		return fmt.Errorf("resize: running resizes: %w", err)
	}
	if resource == quotaRAM {
		delta += pending.Ram
	} else {
		delta += pending.Volumes
	}
	f, err := checkQuota(ctx, q, project, map[string]int64{resource: delta})
	if err != nil {
		return fmt.Errorf("resize: %w", err)
	}
	if f != nil {
		return f
	}
	return nil
}

// resetInstanceStatus is Trove's reset_status: whatever the instance was
// doing, its task becomes NONE and its datastore status unknown (shown as
// operating_status ERROR) until the agent's next heartbeat. Commands the
// agent has not finished are cancelled, and their actions with them: a
// reset instance starts from a clean slate, and a stuck BUILD or action
// can then be deleted (the client's "force delete" is reset_status
// followed by DELETE). Admin only, by Trove's default policy.
func (d *Deps) resetInstanceStatus(ctx context.Context, tenant, ref string, forceDelete bool) error {
	return d.withInstance(ctx, tenant, ref, func(_ pgx.Tx, q *store.Queries, inst store.Instance) error {
		// Trove's instance:force_delete rule is admin_or_owner; the owner
		// is the project the lookup is scoped to.
		if !forceDelete && !principal(ctx).IsAdmin() {
			return openapi.Errorf(http.StatusForbidden, "Policy doesn't allow instance:reset_status to be performed.")
		}
		if err := q.CancelAgentCommands(ctx, inst.ID); err != nil {
			return fmt.Errorf("reset status: cancel commands: %w", err)
		}
		if err := q.CancelInstanceActions(ctx, inst.ID); err != nil {
			return fmt.Errorf("reset status: cancel actions: %w", err)
		}
		if err := q.ResetInstanceStatus(ctx, inst.ID); err != nil {
			return fmt.Errorf("reset status: %w", err)
		}
		return jobs.InsertEvent(ctx, q, inst.ProjectID, jobs.EventInstanceStatusReset, inst.ID,
			map[string]string{"previous_task": inst.Task, "previous_service_status": inst.ServiceStatus})
	})
}
