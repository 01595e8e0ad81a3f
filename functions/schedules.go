package functions

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
	"unicode"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/robfig/cron/v3"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/backupschedule"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Backup schedules: Coffer's native API for what Trove's client does with
// Mistral cron triggers (mistral.go serves those too, on the same rows).
// A schedule belongs to an instance of the caller's project; the scheduler
// (jobs/schedule.go) takes its backups and applies its retention.

func init() { register(Schedules) }

const (
	schedulesPageSize  = 20
	executionsPageSize = 50
	// maxSchedulesPerInstance bounds the backups one instance can be made
	// to take per tick; more answers 413 like a quota.
	maxSchedulesPerInstance = 20
)

type scheduleInput struct {
	TenantPath
	ScheduleID string `path:"schedule_id" maxLength:"64"`
}

type scheduleCreateInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       struct {
		Schedule openapi.ScheduleCreate `json:"schedule"`
	}
}

type scheduleUpdateInput struct {
	TenantPath
	ScheduleID string `path:"schedule_id" maxLength:"64"`
	Body       struct {
		Schedule openapi.ScheduleUpdate `json:"schedule"`
	}
}

type scheduleListInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Limit      int    `query:"limit" minimum:"0" doc:"Page size (at most 20)"`
	Marker     string `query:"marker" maxLength:"64" doc:"Id of the last schedule of the previous page"`
}

type executionListInput struct {
	TenantPath
	ScheduleID string `path:"schedule_id" maxLength:"64"`
	Limit      int    `query:"limit" minimum:"0" doc:"Page size (at most 50)"`
	Marker     string `query:"marker" maxLength:"64" doc:"Id of the last execution of the previous page"`
}

type scheduleOutput struct {
	Body struct {
		Schedule openapi.Schedule `json:"schedule"`
	}
}

type scheduleListOutput struct {
	Body struct {
		Schedules []openapi.Schedule `json:"schedules"`
		Links     []openapi.Link     `json:"links,omitempty"`
	}
}

type executionListOutput struct {
	Body struct {
		Executions []openapi.ScheduleExecution `json:"executions"`
		Links      []openapi.Link              `json:"links,omitempty"`
	}
}

// Schedules serves backup schedules and their executions.
func Schedules(api huma.API, deps *Deps) {
	tags := []string{"Backup schedules"}
	huma.Register(api, huma.Operation{
		OperationID: "create-schedule", Method: http.MethodPost, Path: "/v1.0/{tenant_id}/instances/{instance_id}/schedules",
		Summary:     "Create a backup schedule",
		Description: "Backups of the instance taken on a cron pattern (UTC), full or incremental, with retention. An invalid pattern answers 400 naming it. Each tick runs exactly once, however many workers run.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusOK,
		Errors:       []int{http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge},
		MaxBodyBytes: 64 << 10,
	}, deps.createSchedule)
	huma.Register(api, huma.Operation{
		OperationID: "list-schedules", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/instances/{instance_id}/schedules",
		Summary: "List an instance's backup schedules", Description: "Pages of at most 20, ordered by id.",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.listSchedules)
	huma.Register(api, huma.Operation{
		OperationID: "show-schedule", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/schedules/{schedule_id}",
		Summary: "Show a backup schedule", Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.showSchedule)
	huma.Register(api, huma.Operation{
		OperationID: "update-schedule", Method: http.MethodPatch, Path: "/v1.0/{tenant_id}/schedules/{schedule_id}",
		Summary:     "Change a backup schedule",
		Description: "Enable or disable it, change its retention, pattern, names or kind. Retention changes apply after the schedule's next completed backup.",
		Tags:        tags, Security: tokenSecurity, Errors: []int{http.StatusBadRequest, http.StatusNotFound},
		MaxBodyBytes: 64 << 10,
	}, deps.updateSchedule)
	huma.Register(api, huma.Operation{
		OperationID: "delete-schedule", Method: http.MethodDelete, Path: "/v1.0/{tenant_id}/schedules/{schedule_id}",
		Summary: "Delete a backup schedule", Description: "No more ticks; the backups it took stay.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: []int{http.StatusNotFound},
	}, deps.deleteSchedule)
	huma.Register(api, huma.Operation{
		OperationID: "list-schedule-executions", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/schedules/{schedule_id}/executions",
		Summary:     "List a schedule's executions",
		Description: "One per tick, the most recent first, in pages of at most 50; a `links` entry with rel=next carries the next marker.",
		Tags:        tags, Security: tokenSecurity, Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, deps.listExecutions)
}

// scheduleSpec is a validated schedule as it is stored.
type scheduleSpec struct {
	name, description, pattern string
	incremental, enabled       bool
	keepLast                   int
	maxAge                     time.Duration
	cron                       cron.Schedule
}

// validScheduleName applies Trove's rule for backup names (the schedule's
// name is its backups' name): at least one letter or digit.
func validScheduleName(name string) *openapi.Fault {
	if !hasAlnum.MatchString(name) {
		return openapi.BadRequest("Validation error: schedule name must contain at least one letter or digit.")
	}
	if strings.ContainsFunc(name, unicode.IsControl) {
		return openapi.BadRequest("Validation error: schedule name must not contain control characters.")
	}
	return nil
}

// validPattern parses a user's cron pattern; the 400 names it.
func validPattern(pattern string, now time.Time) (cron.Schedule, *openapi.Fault) {
	s, err := backupschedule.Validate(pattern, now)
	if err != nil {
		return nil, openapi.BadRequest("Invalid cron pattern '%s': %v. Use five fields (minute hour day-of-month month day-of-week, e.g. '30 2 * * *'), a descriptor such as @daily, or @every <duration> of at least a minute.", pattern, err)
	}
	return s, nil
}

// validAge parses max_age (seconds or a duration string).
func validAge(v *openapi.StringOrInt) (time.Duration, *openapi.Fault) {
	if v == nil {
		return 0, nil
	}
	d, err := backupschedule.ParseAge(string(*v))
	if err != nil {
		return 0, openapi.BadRequest("Invalid max_age '%s': %v.", string(*v), err)
	}
	return d, nil
}

func (d *Deps) createSchedule(ctx context.Context, in *scheduleCreateInput) (*scheduleOutput, error) {
	req := in.Body.Schedule
	if f := validScheduleName(req.Name); f != nil {
		return nil, f
	}
	now := d.now()
	sched, f := validPattern(req.Pattern, now)
	if f != nil {
		return nil, f
	}
	age, f := validAge(req.MaxAge)
	if f != nil {
		return nil, f
	}
	spec := scheduleSpec{name: req.Name, description: req.Description, pattern: req.Pattern,
		incremental: req.Incremental, enabled: req.Enabled == nil || *req.Enabled, keepLast: req.KeepLast,
		maxAge: age, cron: sched}
	s, err := d.insertSchedule(ctx, in.TenantID, in.InstanceID, uuid.New(), spec, now)
	if err != nil {
		return nil, err
	}
	out := &scheduleOutput{}
	out.Body.Schedule = scheduleView(ctx, s)
	return out, nil
}

// errScheduleIDTaken: the id a Mistral client chose is in use.
var errScheduleIDTaken = errors.New("schedule id taken")

// insertSchedule creates a schedule of the tenant's instance (404 if it is
// not one) in one transaction with the instance locked, so the per-instance
// limit holds under concurrent creates.
func (d *Deps) insertSchedule(ctx context.Context, tenant, instanceRef string, id uuid.UUID, spec scheduleSpec, now time.Time) (store.BackupSchedule, error) {
	instanceID, err := uuid.Parse(instanceRef)
	if err != nil {
		return store.BackupSchedule{}, openapi.NotFound("Instance %s could not be found.", instanceRef)
	}
	var s store.BackupSchedule
	var fault error
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		inst, err := q.LockInstance(ctx, instanceID)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (inst.ProjectID != tenant || inst.DeletedAt != nil)) {
			fault = openapi.NotFound("Instance %s could not be found.", instanceRef)
			return nil
		}
		if err != nil {
			return err
		}
		n, err := q.CountInstanceSchedules(ctx, instanceID)
		if err != nil {
			return err
		}
		if n >= maxSchedulesPerInstance {
			fault = openapi.Errorf(http.StatusRequestEntityTooLarge,
				"Instance %s already has %d backup schedules, the most it may have.", instanceID, n)
			return nil
		}
		s, err = q.InsertSchedule(ctx, store.InsertScheduleParams{
			ID: id, ProjectID: tenant, InstanceID: instanceID, Name: spec.name, Description: spec.description,
			Pattern: spec.pattern, Incremental: spec.incremental, KeepLast: int32(spec.keepLast),
			MaxAge: backupschedule.Interval(spec.maxAge), Enabled: spec.enabled, NextRunAt: backupschedule.Next(spec.cron, now),
		})
		if errors.Is(err, pgx.ErrNoRows) {
			fault = errScheduleIDTaken
			return nil
		}
		return err
	})
	if err != nil {
		return store.BackupSchedule{}, d.internal(ctx, "create schedule", err)
	}
	if fault != nil {
		return store.BackupSchedule{}, fault
	}
	return s, nil
}

func (d *Deps) listSchedules(ctx context.Context, in *scheduleListInput) (*scheduleListOutput, error) {
	q := d.queries()
	inst, err := d.getInstance(ctx, q, in.TenantID, in.InstanceID)
	if err != nil {
		return nil, err
	}
	size := pageSize(in.Limit, schedulesPageSize)
	params := store.ListInstanceSchedulesParams{ProjectID: in.TenantID, InstanceID: inst.Instance.ID, MaxRows: int32(size + 1)}
	if params.Marker, err = idMarker(in.Marker); err != nil {
		return nil, err
	}
	rows, err := q.ListInstanceSchedules(ctx, params)
	if err != nil {
		return nil, d.internal(ctx, "list schedules", err)
	}
	out := &scheduleListOutput{}
	if len(rows) > size {
		rows = rows[:size]
		query := url.Values{}
		if in.Limit > 0 {
			query.Set("limit", fmt.Sprint(in.Limit))
		}
		out.Body.Links = nextLink(ctx, "/v1.0/"+in.TenantID+"/instances/"+inst.Instance.ID.String()+"/schedules", query, rows[len(rows)-1].ID.String())
	}
	out.Body.Schedules = make([]openapi.Schedule, 0, len(rows))
	for _, s := range rows {
		out.Body.Schedules = append(out.Body.Schedules, scheduleView(ctx, s))
	}
	return out, nil
}

// getSchedule reads a live schedule of the tenant; anything else
// (another project's, deleted, malformed id) is a 404.
func (d *Deps) getSchedule(ctx context.Context, q *store.Queries, tenant, ref string) (store.BackupSchedule, error) {
	id, err := uuid.Parse(ref)
	if err != nil {
		return store.BackupSchedule{}, openapi.NotFound("Schedule %s could not be found.", ref)
	}
	s, err := q.GetSchedule(ctx, store.GetScheduleParams{ID: id, ProjectID: tenant})
	if errors.Is(err, pgx.ErrNoRows) {
		return store.BackupSchedule{}, openapi.NotFound("Schedule %s could not be found.", ref)
	}
	if err != nil {
		return store.BackupSchedule{}, d.internal(ctx, "show schedule", err)
	}
	return s, nil
}

func (d *Deps) showSchedule(ctx context.Context, in *scheduleInput) (*scheduleOutput, error) {
	s, err := d.getSchedule(ctx, d.queries(), in.TenantID, in.ScheduleID)
	if err != nil {
		return nil, err
	}
	out := &scheduleOutput{}
	out.Body.Schedule = scheduleView(ctx, s)
	return out, nil
}

func (d *Deps) updateSchedule(ctx context.Context, in *scheduleUpdateInput) (*scheduleOutput, error) {
	req := in.Body.Schedule
	if req.Name != nil {
		if f := validScheduleName(*req.Name); f != nil {
			return nil, f
		}
	}
	now := d.now()
	var newCron cron.Schedule
	if req.Pattern != nil {
		var f *openapi.Fault
		if newCron, f = validPattern(*req.Pattern, now); f != nil {
			return nil, f
		}
	}
	age, f := validAge(req.MaxAge)
	if f != nil {
		return nil, f
	}
	id, err := uuid.Parse(in.ScheduleID)
	if err != nil {
		return nil, openapi.NotFound("Schedule %s could not be found.", in.ScheduleID)
	}
	var s store.BackupSchedule
	var fault error
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		cur, err := q.LockSchedule(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (cur.ProjectID != in.TenantID || cur.DeletedAt != nil)) {
			fault = openapi.NotFound("Schedule %s could not be found.", in.ScheduleID)
			return nil
		}
		if err != nil {
			return err
		}
		p := store.UpdateScheduleParams{ID: id, Name: cur.Name, Description: cur.Description, Pattern: cur.Pattern,
			Incremental: cur.Incremental, KeepLast: cur.KeepLast, MaxAge: cur.MaxAge, Enabled: cur.Enabled,
			NextRunAt: cur.NextRunAt}
		if req.Name != nil {
			p.Name = *req.Name
		}
		if req.Description != nil {
			p.Description = *req.Description
		}
		if req.Incremental != nil {
			p.Incremental = *req.Incremental
		}
		if req.KeepLast != nil {
			p.KeepLast = int32(*req.KeepLast)
		}
		if req.MaxAge != nil {
			p.MaxAge = backupschedule.Interval(age)
		}
		if req.Enabled != nil {
			p.Enabled = *req.Enabled
		}
		// A new pattern, or a paused schedule resuming, starts from the
		// next tick after now: ticks missed while paused are not run.
		resumed := p.Enabled && !cur.Enabled
		if newCron != nil {
			p.Pattern = *req.Pattern
		}
		if newCron != nil || resumed {
			sched := newCron
			if sched == nil {
				if sched, err = backupschedule.Parse(p.Pattern); err != nil {
					return fmt.Errorf("stored pattern %q of schedule %s: %w", p.Pattern, id, err)
				}
			}
			p.NextRunAt = backupschedule.Next(sched, now)
		}
		s, err = q.UpdateSchedule(ctx, p)
		return err
	})
	if err != nil {
		return nil, d.internal(ctx, "update schedule", err)
	}
	if fault != nil {
		return nil, fault
	}
	out := &scheduleOutput{}
	out.Body.Schedule = scheduleView(ctx, s)
	return out, nil
}

func (d *Deps) deleteSchedule(ctx context.Context, in *scheduleInput) (*struct{}, error) {
	return nil, d.removeSchedule(ctx, in.TenantID, in.ScheduleID)
}

// removeSchedule deletes a live schedule of the tenant (404 otherwise).
// Its executions and backups stay.
func (d *Deps) removeSchedule(ctx context.Context, tenant, ref string) error {
	id, err := uuid.Parse(ref)
	if err != nil {
		return openapi.NotFound("Schedule %s could not be found.", ref)
	}
	n, err := d.queries().DeleteSchedule(ctx, store.DeleteScheduleParams{ID: id, ProjectID: tenant})
	if err != nil {
		return d.internal(ctx, "delete schedule", err)
	}
	if n == 0 {
		return openapi.NotFound("Schedule %s could not be found.", ref)
	}
	return nil
}

func (d *Deps) listExecutions(ctx context.Context, in *executionListInput) (*executionListOutput, error) {
	q := d.queries()
	s, err := d.getSchedule(ctx, q, in.TenantID, in.ScheduleID)
	if err != nil {
		return nil, err
	}
	size := pageSize(in.Limit, executionsPageSize)
	params := store.ListScheduleExecutionsParams{ScheduleID: s.ID, MaxRows: int32(size + 1)}
	if in.Marker != "" {
		m, err := uuid.Parse(in.Marker)
		if err != nil {
			return nil, openapi.BadRequest("Invalid marker '%s'.", in.Marker)
		}
		e, err := q.GetScheduleExecution(ctx, store.GetScheduleExecutionParams{ID: m, ScheduleID: s.ID})
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, openapi.BadRequest("Invalid marker '%s'.", in.Marker)
		} else if err != nil {
			return nil, d.internal(ctx, "list executions: marker", err)
		}
		params.MarkerScheduledAt, params.MarkerID = &e.ScheduledAt, uuid.NullUUID{UUID: e.ID, Valid: true}
	}
	rows, err := q.ListScheduleExecutions(ctx, params)
	if err != nil {
		return nil, d.internal(ctx, "list executions", err)
	}
	out := &executionListOutput{}
	if len(rows) > size {
		rows = rows[:size]
		query := url.Values{}
		if in.Limit > 0 {
			query.Set("limit", fmt.Sprint(in.Limit))
		}
		out.Body.Links = nextLink(ctx, "/v1.0/"+in.TenantID+"/schedules/"+s.ID.String()+"/executions", query, rows[len(rows)-1].ID.String())
	}
	out.Body.Executions = make([]openapi.ScheduleExecution, 0, len(rows))
	for _, e := range rows {
		v := openapi.ScheduleExecution{ID: e.ID.String(), ScheduleID: e.ScheduleID.String(),
			ScheduledAt: openapi.Time(e.ScheduledAt), State: e.State, StateInfo: e.StateInfo,
			Created: openapi.Time(e.CreatedAt), Updated: openapi.Time(e.UpdatedAt)}
		if e.BackupID.Valid {
			b := e.BackupID.UUID.String()
			v.BackupID = &b
		}
		out.Body.Executions = append(out.Body.Executions, v)
	}
	return out, nil
}

func scheduleView(ctx context.Context, s store.BackupSchedule) openapi.Schedule {
	return openapi.Schedule{
		ID: s.ID.String(), Name: s.Name, Description: s.Description, InstanceID: s.InstanceID.String(),
		Pattern: s.Pattern, Incremental: s.Incremental, Enabled: s.Enabled, KeepLast: int(s.KeepLast),
		MaxAge: int64(backupschedule.AgeOf(s.MaxAge) / time.Second), NextRun: openapi.Time(s.NextRunAt),
		Created: openapi.Time(s.CreatedAt), Updated: openapi.Time(s.UpdatedAt),
		Links: links(ctx, s.ProjectID, "schedules", s.ID.String()),
	}
}
