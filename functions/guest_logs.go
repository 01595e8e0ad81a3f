package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Guest logs (Trove's /instances/{id}/log): list, show, enable and
// disable. The agent reports its logs with the inventory of every
// heartbeat (protocol.GuestLog: enabled, file size, bytes published), so
// reads need no round trip to the guest; enable and disable queue
// protocol.CommandGuestLogAction, and the answer is the log as it will be
// once the agent ran the command (the commands still open are played onto
// the last report, as for databases and users). The status follows
// Trove's guest_log rules (guestLogView).
//
// Publish and discard act in the caller's Swift (guest_log_publish.go).

func init() { register(GuestLogs) }

// guestLogContainer is Trove's guest_log_container_name.
const guestLogContainer = "database_logs"

// guestLogLeaseSeconds bounds an enable or disable (a reload).
const guestLogLeaseSeconds = 120

type guestLogInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       openapi.GuestLogAction
}

type guestLogsOutput struct {
	Body struct {
		Logs []openapi.GuestLog `json:"logs"`
	}
}

type guestLogOutput struct {
	Body struct {
		Log openapi.GuestLog `json:"log"`
	}
}

// GuestLogs serves the log list and the log action.
func GuestLogs(api huma.API, deps *Deps) {
	tags := []string{"Instances"}
	path := "/v1.0/{tenant_id}/instances/{instance_id}/log"
	huma.Register(api, huma.Operation{
		OperationID: "list-guest-logs", Method: http.MethodGet, Path: path,
		Summary: "List an instance's guest logs", Description: "PostgreSQL has one: `general`, the statement log (USER).",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.listGuestLogs)
	huma.Register(api, huma.Operation{
		OperationID: "guest-log-action", Method: http.MethodPost, Path: path,
		Summary: "Show, enable or disable a guest log",
		Description: "With only `name`: the log. `enable: 1` / `disable: 1` turn a USER log on or off (PostgreSQL's `general`: " +
			"log_statement = 'all' and log_min_duration_statement, applied by a reload); the answer is the log as it will be. " +
			"`publish: 1` stores the unpublished lines in the caller's Swift (container `database_logs`, the catalog's object-store " +
			"in this region, with the caller's token; 501 without Keystone or Swift), and enables a disabled USER log unless `disable: 1` " +
			"is given; `discard: 1` removes what was published.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusOK,
		Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity,
			http.StatusNotImplemented, http.StatusServiceUnavailable},
		MaxBodyBytes: 16 << 10,
	}, deps.guestLogAction)
}

// guestLogDefaults are the logs of a datastore manager before its agent
// reported any (a newer agent reports them with its inventory).
func guestLogDefaults(manager string) []protocol.GuestLog {
	if manager == "postgresql" {
		return []protocol.GuestLog{{Name: "general", Type: protocol.GuestLogUser, File: "postgres.log"}}
	}
	return nil
}

// guestLogState is the instance's logs as the agent last reported them,
// with the guest log commands still open played onto them.
func guestLogState(inst store.Instance, manager string, open []store.ListOpenAccountCommandsRow) []protocol.GuestLog {
	logs := decodeInventory(inst.Inventory).Logs
	if logs == nil {
		logs = guestLogDefaults(manager)
	}
	for _, c := range open {
		var p protocol.GuestLogActionRequest
		if json.Unmarshal(c.Payload, &p) != nil {
			continue
		}
		for i := range logs {
			if logs[i].Name == p.Name && logs[i].Type == protocol.GuestLogUser {
				switch {
				case p.Enable:
					logs[i].Enabled = true
				case p.Disable:
					logs[i].Enabled = false
				}
			}
		}
	}
	return logs
}

// guestLogView renders a log as Trove does (guest_log.py): an enabled (or
// SYS) log with a file is Ready or Partial while it holds unpublished
// bytes, Enabled or Published when it has none; a USER log that is off,
// or has no file yet, is Disabled or Enabled; a SYS log without a file is
// Unavailable.
func guestLogView(inst store.Instance, manager string, l protocol.GuestLog) openapi.GuestLog {
	enabled := l.Enabled || l.Type == protocol.GuestLogSys
	published := min(l.Published, l.Size)
	v := openapi.GuestLog{Name: l.Name, Type: l.Type, Published: published, Pending: l.Size - published,
		Container: "None", Prefix: "None", Metafile: fmt.Sprintf("%s/%s-%s_metafile", inst.ID, manager, l.Name)}
	if published > 0 {
		v.Container, v.Prefix = guestLogContainer, fmt.Sprintf("%s/%s-%s/", inst.ID, manager, l.Name)
	}
	if l.Size > 0 && enabled {
		switch {
		case l.Size > published && published > 0:
			v.Status = "Partial"
		case l.Size > published:
			v.Status = "Ready"
		case published > 0:
			v.Status = "Published"
		default:
			v.Status = "Enabled"
		}
	}
	if l.Size == 0 || !enabled {
		switch {
		case l.Type == protocol.GuestLogSys:
			v.Status = "Unavailable"
		case enabled:
			v.Status = "Enabled"
		default:
			v.Status = "Disabled"
		}
	}
	return v
}

var guestLogCommands = []string{protocol.CommandGuestLogAction}

func (d *Deps) listGuestLogs(ctx context.Context, in *instanceInput) (*guestLogsOutput, error) {
	id, err := uuid.Parse(in.InstanceID)
	if err != nil {
		return nil, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	}
	q := d.queries()
	r, err := q.GetInstance(ctx, store.GetInstanceParams{ID: id, ProjectID: in.TenantID})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	}
	if err != nil {
		return nil, d.internal(ctx, "list guest logs", err)
	}
	open, err := q.ListOpenAccountCommands(ctx, store.ListOpenAccountCommandsParams{InstanceID: id, Names: guestLogCommands})
	if err != nil {
		return nil, d.internal(ctx, "list guest logs", err)
	}
	pubs, err := q.ListGuestLogPublications(ctx, id)
	if err != nil {
		return nil, d.internal(ctx, "list guest logs", err)
	}
	out := &guestLogsOutput{}
	out.Body.Logs = []openapi.GuestLog{}
	for _, l := range withPublished(guestLogState(r.Instance, r.DatastoreManager, open), pubs) {
		out.Body.Logs = append(out.Body.Logs, guestLogView(r.Instance, r.DatastoreManager, l))
	}
	return out, nil
}

func (d *Deps) guestLogAction(ctx context.Context, in *guestLogInput) (*guestLogOutput, error) {
	a := in.Body
	if a.Enable == 1 && a.Disable == 1 {
		return nil, openapi.BadRequest("Cannot enable and disable log '%s' at once.", a.Name)
	}
	// Publish and discard need the caller's Swift: without one nothing
	// is done (501).
	var sc *gophercloud.ServiceClient
	if a.Publish == 1 || a.Discard == 1 {
		var err error
		if sc, err = d.userSwift(ctx); err != nil {
			return nil, err
		}
	}
	var inst store.Instance
	var manager string
	var log protocol.GuestLog
	err := d.withInstance(ctx, in.TenantID, in.InstanceID, func(_ pgx.Tx, q *store.Queries, i store.Instance) error {
		inst = i
		r, err := q.GetInstance(ctx, store.GetInstanceParams{ID: inst.ID, ProjectID: inst.ProjectID})
		if err != nil {
			return fmt.Errorf("guest log: %w", err)
		}
		manager = r.DatastoreManager
		open, err := q.ListOpenAccountCommands(ctx, store.ListOpenAccountCommandsParams{InstanceID: inst.ID, Names: guestLogCommands})
		if err != nil {
			return fmt.Errorf("guest log: %w", err)
		}
		found := false
		for _, l := range guestLogState(inst, manager, open) {
			if l.Name == a.Name {
				log, found = l, true
			}
		}
		if !found {
			return openapi.NotFound("Log '%s' is not available on instance %s.", a.Name, inst.ID)
		}
		if (a.Enable == 1 || a.Disable == 1) && log.Type != protocol.GuestLogUser {
			return openapi.BadRequest("Log '%s' is a %s log: it cannot be enabled or disabled.", a.Name, log.Type)
		}
		// Publishing a disabled USER log enables it (Trove), unless the
		// same request disables it.
		enable := a.Enable == 1 || (a.Publish == 1 && a.Disable != 1 && log.Type == protocol.GuestLogUser && !log.Enabled)
		if enable || a.Disable == 1 || a.Publish == 1 {
			// Each needs the agent: a reload, or reading the log.
			if f := actionable(inst); f != nil {
				return f
			}
		}
		if enable || a.Disable == 1 {
			if _, err := jobs.QueueCommand(ctx, q, inst.ID, protocol.CommandGuestLogAction,
				protocol.GuestLogActionRequest{Name: a.Name, Enable: enable, Disable: a.Disable == 1}, guestLogLeaseSeconds); err != nil {
				return err
			}
			log.Enabled = enable
			if err := jobs.InsertEvent(ctx, q, inst.ProjectID, "instance.log_changed", inst.ID,
				map[string]any{"log": a.Name, "enabled": log.Enabled}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Publish and discard talk to the agent and to Swift, outside the
	// instance's transaction; each records its progress itself. Both:
	// discard, then publish afresh (Trove's order).
	if a.Discard == 1 {
		if err := d.discardGuestLog(ctx, sc, inst, manager, log); err != nil {
			return nil, err
		}
	}
	if a.Publish == 1 {
		if _, err := d.publishGuestLog(ctx, sc, inst, manager, log); err != nil {
			return nil, err
		}
	}
	pubs, err := d.queries().ListGuestLogPublications(ctx, inst.ID)
	if err != nil {
		return nil, d.internal(ctx, "guest log", err)
	}
	if a.Publish == 1 {
		// The size the agent reported last may predate what was just
		// published.
		for _, p := range pubs {
			if p.Name == log.Name {
				log.Size = max(log.Size, p.Published)
			}
		}
	}
	out := &guestLogOutput{}
	out.Body.Log = guestLogView(inst, manager, withPublished([]protocol.GuestLog{log}, pubs)[0])
	return out, nil
}
