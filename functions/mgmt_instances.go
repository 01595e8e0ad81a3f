package functions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/internal/status"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Trove's management instance routes (admin; 401 for anyone else, as
// Trove's admin_context answers): every project's instances, listed and
// shown with their server and raw datastore status, and the management
// actions:
//
//   - reboot restarts the datastore through the agent, as an instance
//     restart does (the instance shows REBOOT). Trove reboots the VM; on
//     the local provider the datastore is what there is to reboot.
//   - stop stops the datastore; it stays down (operating_status SHUTDOWN)
//     until a restart or reboot.
//   - reset-task-status sets the task to NONE (the datastore status stays)
//     and fails the instance's running backups.
//   - rebuild rebuilds the server on its volume (provider.Rebuilder; see
//     jobs/mgmt_instance.go); the instance shows BUILD (task REBUILDING,
//     server BUILD) until the agent of the rebuilt server has the
//     datastore serving again.
//   - migrate is not supported (501): no provider moves servers.

func init() { register(MgmtInstances) }

// mgmtInstancesPageSize is the default page; the client's limit is not
// capped by it (Trove's offset paging), only by mgmtInstancesMaxPage.
const (
	mgmtInstancesPageSize = 20
	mgmtInstancesMaxPage  = 1000
	// stopLeaseSeconds bounds a datastore's shutdown (a checkpoint).
	stopLeaseSeconds = 300
	// rebuildLeaseSeconds bounds the agent's start of the datastore on
	// the rebuilt server (crash recovery included).
	rebuildLeaseSeconds = 600
)

type mgmtInstanceListInput struct {
	TenantPath
	Deleted          string `query:"deleted" maxLength:"16" doc:"true: only deleted instances; false: only live ones; absent: both"`
	ProjectID        string `query:"project_id" maxLength:"255" doc:"Only this project's instances"`
	IncludeClustered string `query:"include_clustered" maxLength:"16" doc:"Accepted for Trove compatibility; Coffer has no clusters"`
	Limit            int    `query:"limit" minimum:"0" doc:"Page size (default 20, at most 1000)"`
	Marker           string `query:"marker" maxLength:"20" doc:"Offset of the page (Trove's mgmt paging)"`
}

type mgmtInstanceShowInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Deleted    string `query:"deleted" maxLength:"16" doc:"true: show a deleted instance too"`
}

type mgmtInstanceActionInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       openapi.MgmtInstanceAction
}

type mgmtInstanceListOutput struct {
	Body struct {
		Instances []openapi.MgmtInstance `json:"instances"`
		Links     []openapi.Link         `json:"links,omitempty"`
	}
}

type mgmtInstanceOutput struct {
	Body struct {
		Instance openapi.MgmtInstance `json:"instance"`
	}
}

// MgmtInstances serves the management list, show and actions.
func MgmtInstances(api huma.API, deps *Deps) {
	tags := []string{"Management"}
	base := "/v1.0/{tenant_id}/mgmt/instances"
	huma.Register(api, huma.Operation{
		OperationID: "mgmt-list-instances", Method: http.MethodGet, Path: base,
		Summary:     "List every project's instances (admin)",
		Description: "Newest change first; `marker` is an offset (Trove's management paging). `openstack database instance list --all-projects` calls it.",
		Tags:        tags, Security: tokenSecurity, Errors: []int{http.StatusBadRequest, http.StatusUnauthorized},
	}, deps.listMgmtInstances)
	huma.Register(api, huma.Operation{
		OperationID: "mgmt-show-instance", Method: http.MethodGet, Path: base + "/{instance_id}",
		Summary: "Show any project's instance (admin)", Tags: tags, Security: tokenSecurity,
		Errors: []int{http.StatusUnauthorized, http.StatusNotFound},
	}, deps.showMgmtInstance)
	huma.Register(api, huma.Operation{
		OperationID: "mgmt-instance-action", Method: http.MethodPost, Path: base + "/{instance_id}/action",
		Summary: "Run a management action on an instance (admin)",
		Description: "Exactly one of `reboot` (restart the datastore; REBOOT), `stop` (stop the datastore), `reset-task-status` " +
			"(task NONE, running backups failed), `rebuild` (`image_id`: rebuild the server on its volume; BUILD), `migrate` (not supported: 501). " +
			"Any other key: 400 Invalid instance action.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound,
			http.StatusUnprocessableEntity, http.StatusNotImplemented},
		MaxBodyBytes: 16 << 10,
	}, deps.mgmtInstanceAction)
}

// queryBool reads a query boolean as Trove does (the clients send True
// and False).
func queryBool(s string) bool {
	switch strings.ToLower(s) {
	case "true", "1", "yes", "on":
		return true
	}
	return false
}

func (d *Deps) listMgmtInstances(ctx context.Context, in *mgmtInstanceListInput) (*mgmtInstanceListOutput, error) {
	if f := adminOnly(ctx); f != nil {
		return nil, f
	}
	size := in.Limit
	if size <= 0 {
		size = mgmtInstancesPageSize
	}
	size = min(size, mgmtInstancesMaxPage)
	offset := 0
	if in.Marker != "" {
		n, err := strconv.Atoi(in.Marker)
		if err != nil || n < 0 || n > 1<<30 {
			return nil, openapi.BadRequest("Invalid marker '%s': the management instance list pages by offset.", in.Marker)
		}
		offset = n
	}
	params := store.ListMgmtInstancesParams{Skip: int32(offset), MaxRows: int32(size + 1)}
	if in.Deleted != "" {
		params.Deleted = pgtype.Bool{Bool: queryBool(in.Deleted), Valid: true}
	}
	if hasControl(in.ProjectID) {
		return nil, openapi.BadRequest("Invalid project_id: control characters are not allowed.")
	}
	if in.ProjectID != "" {
		params.ProjectID = pgtype.Text{String: in.ProjectID, Valid: true}
	}
	rows, err := d.queries().ListMgmtInstances(ctx, params)
	if err != nil {
		return nil, d.internal(ctx, "mgmt list instances", err)
	}
	out := &mgmtInstanceListOutput{}
	if len(rows) > size {
		rows = rows[:size]
		q := url.Values{}
		for k, v := range map[string]string{"limit": strconv.Itoa(in.Limit), "deleted": in.Deleted,
			"project_id": in.ProjectID, "include_clustered": in.IncludeClustered} {
			if v != "" && v != "0" {
				q.Set(k, v)
			}
		}
		out.Body.Links = nextLink(ctx, "/v1.0/"+in.TenantID+"/mgmt/instances", q, strconv.Itoa(offset+size))
	}
	out.Body.Instances = make([]openapi.MgmtInstance, 0, len(rows))
	for _, r := range rows {
		out.Body.Instances = append(out.Body.Instances, d.mgmtInstanceView(ctx, instanceRow{Instance: r.Instance, FlavorName: r.FlavorName,
			VersionName: r.VersionName, VersionNumber: r.VersionNumber, DatastoreName: r.DatastoreName}, false))
	}
	return out, nil
}

func (d *Deps) showMgmtInstance(ctx context.Context, in *mgmtInstanceShowInput) (*mgmtInstanceOutput, error) {
	if f := adminOnly(ctx); f != nil {
		return nil, f
	}
	notFound := openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	id, err := uuid.Parse(in.InstanceID)
	if err != nil {
		return nil, notFound
	}
	r, err := d.queries().GetInstanceAnyProject(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && r.Instance.DeletedAt != nil && !queryBool(in.Deleted)) {
		return nil, notFound
	}
	if err != nil {
		return nil, d.internal(ctx, "mgmt show instance", err)
	}
	out := &mgmtInstanceOutput{}
	out.Body.Instance = d.mgmtInstanceView(ctx, instanceRow{Instance: r.Instance, FlavorName: r.FlavorName,
		VersionName: r.VersionName, VersionNumber: r.VersionNumber, DatastoreName: r.DatastoreName}, true)
	h, err := d.queries().LatestRootHistory(ctx, id)
	switch {
	case err == nil:
		at := h.EnabledAt.UTC().Format(time.DateOnly + "T" + time.TimeOnly)
		out.Body.Instance.RootEnabled, out.Body.Instance.RootEnabledBy = &at, &h.EnabledBy
	case !errors.Is(err, pgx.ErrNoRows):
		return nil, d.internal(ctx, "mgmt show instance: root history", err)
	}
	return out, nil
}

// mgmtInstanceView is the management view of an instance; show adds the
// live volume use and the guest's status.
func (d *Deps) mgmtInstanceView(ctx context.Context, r instanceRow, show bool) openapi.MgmtInstance {
	i := r.Instance
	v := openapi.MgmtInstance{
		Instance:        d.instanceView(ctx, r, true, show && i.DeletedAt == nil),
		ServiceStatus:   serviceStatusName(i.ServiceStatus),
		Deleted:         i.DeletedAt != nil,
		TaskDescription: taskDescription(i.Task),
	}
	if i.DeletedAt != nil {
		at := openapi.Time(*i.DeletedAt)
		v.DeletedAt = &at
	}
	if i.ServerID != "" {
		v.Server = &openapi.MgmtServer{ID: i.ServerID, Name: i.Name, Status: i.ComputeStatus, TenantID: i.ProjectID}
	}
	if show {
		v.GuestStatus = &openapi.GuestStatus{StateDescription: i.ServiceStatus}
	}
	return v
}

// serviceStatusName is the API name of a datastore status, whatever the
// instance's task (operating_status is empty while a task runs).
func serviceStatusName(service string) string {
	now := time.Now()
	return status.OperatingStatus(status.Instance{Task: status.TaskNone, ComputeStatus: "ACTIVE", ServiceStatus: service, HeartbeatAt: &now}, now)
}

// taskDescriptions are Trove's descriptions of its tasks.
var taskDescriptions = map[string]string{
	status.TaskNone:              "No tasks for the instance.",
	status.TaskBuilding:          "Building the initial instance.",
	status.TaskDeleting:          "Deleting the instance.",
	status.TaskRebooting:         "Rebooting the instance.",
	status.TaskResizing:          "Resizing the instance.",
	status.TaskRestartRequired:   "Instance requires a restart.",
	status.TaskPromoting:         "Promoting the instance to replica source.",
	status.TaskEjecting:          "Ejecting the replica source.",
	status.TaskLogging:           "Transferring guest logs.",
	status.TaskDetaching:         "Detaching the instance from replica source.",
	status.TaskUpdating:          "Updating the instance.",
	status.TaskUpgrading:         "Upgrading the instance.",
	jobs.TaskRebuilding:          "Rebuilding the instance.",
	status.TaskErrorServer:       "Build error: Server.",
	status.TaskErrorGuest:        "Build error: Guest.",
	status.TaskErrorGuestTimeout: "Guestagent timeout.",
}

func taskDescription(task string) string {
	if s, ok := taskDescriptions[task]; ok {
		return s
	}
	if status.IsError(task) {
		return "Error: " + strings.ToLower(strings.ReplaceAll(strings.TrimPrefix(task, status.ErrorPrefix), "_", " ")) + "."
	}
	return task
}

// mgmtActions are the keys of a management action body.
var mgmtActions = map[string]bool{"stop": true, "reboot": true, "migrate": true, "reset-task-status": true, "rebuild": true}

func (d *Deps) mgmtInstanceAction(ctx context.Context, in *mgmtInstanceActionInput) (*struct{}, error) {
	if f := adminOnly(ctx); f != nil {
		return nil, f
	}
	a := in.Body
	action := ""
	// As Trove: the instance first (404), then the body's keys.
	err := d.withAnyInstance(ctx, in.InstanceID, func(tx pgx.Tx, q *store.Queries, inst store.Instance) error {
		for _, k := range a.Keys {
			switch {
			case !mgmtActions[k]:
				return openapi.BadRequest("Invalid instance action: %s", k)
			case action != "":
				return openapi.BadRequest("Only one action can be specified per request.")
			}
			action = k
		}
		switch action {
		case "":
			return openapi.BadRequest("Invalid request body: no action given (one of stop, reboot, migrate, reset-task-status, rebuild).")
		case "reboot":
			if a.Reboot == nil {
				return openapi.BadRequest("Validation error: reboot must be an object.")
			}
			return d.rebootInstance(ctx, tx, q, inst)
		case "stop":
			if a.Stop == nil {
				return openapi.BadRequest("Validation error: stop must be an object.")
			}
			return d.stopInstance(ctx, q, inst)
		case "reset-task-status":
			if a.ResetTaskStatus == nil {
				return openapi.BadRequest("Validation error: reset-task-status must be an object.")
			}
			return d.resetInstanceTask(ctx, tx, q, inst)
		case "rebuild":
			if a.Rebuild == nil {
				return openapi.BadRequest("Validation error: rebuild must be an object with image_id.")
			}
			return d.rebuildInstance(ctx, tx, q, inst, a.Rebuild.ImageID)
		}
		return openapi.Errorf(http.StatusNotImplemented, "Migrating instance %s to another host is not supported: no Coffer provider moves servers between hosts.", inst.ID)
	})
	return nil, err
}

// withAnyInstance is withInstance for the admin: a live instance of any
// project, locked.
func (d *Deps) withAnyInstance(ctx context.Context, ref string, fn func(tx pgx.Tx, q *store.Queries, inst store.Instance) error) error {
	id, err := uuid.Parse(ref)
	if err != nil {
		return openapi.NotFound("Instance %s could not be found.", ref)
	}
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		r, err := q.LockAnyInstance(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) {
			return openapi.NotFound("Instance %s could not be found.", ref)
		}
		if err != nil {
			return fmt.Errorf("lock instance: %w", err)
		}
		return fn(tx, q, r.Instance)
	})
	var f *openapi.Fault
	if errors.As(err, &f) {
		return f
	}
	if err != nil {
		return d.internal(ctx, "mgmt instance "+ref, err)
	}
	return nil
}

// rebootInstance is the restart of instance_actions.go on any project's
// instance.
func (d *Deps) rebootInstance(ctx context.Context, tx pgx.Tx, q *store.Queries, inst store.Instance) error {
	if f := actionable(inst); f != nil {
		return f
	}
	return d.startAction(ctx, tx, q, inst, store.InsertInstanceActionParams{
		Action: jobs.ActionRestart, RequestedBy: principal(ctx).UserName,
		FromFlavorID: inst.FlavorID, FromVolumeSizeGb: inst.VolumeSizeGb,
	}, protocol.CommandRestart, nil, restartLeaseSeconds, protocol.ServiceRestarting, jobs.EventInstanceRestarting)
}

func (d *Deps) stopInstance(ctx context.Context, q *store.Queries, inst store.Instance) error {
	if f := actionable(inst); f != nil {
		return f
	}
	if _, err := jobs.QueueCommand(ctx, q, inst.ID, protocol.CommandStopDatastore, nil, stopLeaseSeconds); err != nil {
		return err
	}
	return jobs.InsertEvent(ctx, q, inst.ProjectID, "instance.stopping", inst.ID, nil)
}

func (d *Deps) resetInstanceTask(ctx context.Context, tx pgx.Tx, q *store.Queries, inst store.Instance) error {
	if err := q.ResetInstanceTask(ctx, inst.ID); err != nil {
		return fmt.Errorf("reset task: %w", err)
	}
	if _, err := d.River.InsertTx(ctx, tx, jobs.FailInstanceBackups{InstanceID: inst.ID,
		Reason: "The instance's task was reset by an administrator."}, nil); err != nil {
		return fmt.Errorf("reset task: enqueue failing backups: %w", err)
	}
	return jobs.InsertEvent(ctx, q, inst.ProjectID, jobs.EventInstanceTaskReset, inst.ID, map[string]string{"previous_task": inst.Task})
}

// rebuildInstance starts a rebuild: the agent's command held for
// jobs.RebuildInstance, the action recorded with its deadline, task
// BUILDING. An instance building, deleting or busy with another action
// is refused; an idle or failed one (the usual reason to rebuild) is not.
func (d *Deps) rebuildInstance(ctx context.Context, tx pgx.Tx, q *store.Queries, inst store.Instance, image string) error {
	if image = strings.TrimSpace(image); image == "" || strings.ContainsFunc(image, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return openapi.BadRequest("Validation error: rebuild image_id must be an image id.")
	}
	if inst.Task != status.TaskNone && inst.Task != status.TaskRestartRequired && !status.IsError(inst.Task) {
		return openapi.Errorf(http.StatusUnprocessableEntity,
			"Instance %s is not currently available for an action to be performed (task status was %s).", inst.ID, inst.Task)
	}
	cmdID, err := jobs.QueueCommand(ctx, q, inst.ID, protocol.CommandRebuild, protocol.RebuildRequest{ImageID: image}, rebuildLeaseSeconds)
	if err != nil {
		return err
	}
	if err := q.HoldAgentCommand(ctx, cmdID); err != nil {
		return fmt.Errorf("rebuild: hold command: %w", err)
	}
	if err := q.InsertRebuildAction(ctx, store.InsertRebuildActionParams{CommandID: cmdID, InstanceID: inst.ID,
		RequestedBy: principal(ctx).UserName, FlavorID: inst.FlavorID, VolumeSizeGb: inst.VolumeSizeGb, ImageID: image}); err != nil {
		return fmt.Errorf("rebuild: record action: %w", err)
	}
	deadline := d.now().Add(rebuildLeaseSeconds*time.Second + jobs.ActionDeadlineAfter)
	if _, err := d.River.InsertTx(ctx, tx, jobs.ActionDeadline{InstanceID: inst.ID, CommandID: cmdID, Deadline: deadline.UTC()},
		&river.InsertOpts{ScheduledAt: deadline}); err != nil {
		return fmt.Errorf("rebuild: schedule the deadline: %w", err)
	}
	if _, err := d.River.InsertTx(ctx, tx, jobs.RebuildInstance{InstanceID: inst.ID, CommandID: cmdID}, nil); err != nil {
		return fmt.Errorf("rebuild: enqueue the provider's rebuild: %w", err)
	}
	// Shown as BUILD (the server's status) until the agent answers; see
	// jobs.TaskRebuilding.
	if err := q.StartInstanceTask(ctx, store.StartInstanceTaskParams{ID: inst.ID, Task: jobs.TaskRebuilding, ServiceStatus: inst.ServiceStatus}); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	if err := q.SetInstanceComputeStatus(ctx, store.SetInstanceComputeStatusParams{ID: inst.ID, ComputeStatus: provider.StatusBuild}); err != nil {
		return fmt.Errorf("rebuild: %w", err)
	}
	return jobs.InsertEvent(ctx, q, inst.ProjectID, jobs.EventInstanceRebuilding, inst.ID, map[string]string{"image_id": image})
}
