package functions

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/openapi"
)

// The Mistral v2 subset python-troveclient's schedule-* and execution-*
// commands call (through python-mistralclient, which finds it in the
// Keystone catalog as service type `workflowv2`): cron triggers of the
// workflow trove.backup_create and their executions, served from the
// same schedules and executions as the native API (schedules.go), so no
// Mistral is needed.
//
//	POST   /v2/cron_triggers          201 trigger (name: the schedule id, a uuid as the client makes)
//	GET    /v2/cron_triggers          200 {"cron_triggers": [...]}
//	GET    /v2/cron_triggers/{name}   200 trigger
//	DELETE /v2/cron_triggers/{name}   204
//	GET    /v2/executions             200 {"executions": [...]} (marker, limit, sort_keys, sort_dirs, filters)
//	GET    /v2/executions/{id}        200 execution
//	DELETE /v2/executions/{id}        204 (a running one only with force=true)
//
// These are plain handlers outside the OpenAPI document (Mistral's bodies
// and faults are not Trove's): errors are Mistral's
// {"faultcode", "faultstring"}, which mistralclient prints. The project
// comes from the X-Auth-Token, validated like every other request; there
// is no tenant in Mistral's URLs.

func init() { register(Mistral) }

// Mistral names.
const (
	mistralWorkflow = "trove.backup_create"
	// mistralTimeLayout is how Mistral renders times (UTC).
	mistralTimeLayout = "2006-01-02 15:04:05"
	// mistralMaxPage caps a page asked for without a limit.
	mistralMaxPage = 1000
	// mistralMaxBody bounds a cron trigger body.
	mistralMaxBody = 64 << 10
)

// mistralWorkflowID is the id shown for trove.backup_create (Mistral
// reports the workflow of each trigger and execution by id too).
var mistralWorkflowID = uuid.NewSHA1(uuid.NameSpaceURL, []byte("coffer:workflow:"+mistralWorkflow)).String()

// Mistral registers the /v2 routes.
func Mistral(api huma.API, deps *Deps) {
	handle := func(method, path string, h mistralHandler) {
		api.Adapter().Handle(&huma.Operation{Method: method, Path: path}, deps.mistral(h))
	}
	handle(http.MethodPost, "/v2/cron_triggers", deps.mistralCreateTrigger)
	handle(http.MethodGet, "/v2/cron_triggers", deps.mistralListTriggers)
	handle(http.MethodGet, "/v2/cron_triggers/{name}", deps.mistralShowTrigger)
	handle(http.MethodDelete, "/v2/cron_triggers/{name}", deps.mistralDeleteTrigger)
	handle(http.MethodGet, "/v2/executions", deps.mistralListExecutions)
	handle(http.MethodGet, "/v2/executions/{id}", deps.mistralShowExecution)
	handle(http.MethodDelete, "/v2/executions/{id}", deps.mistralDeleteExecution)
}

// mistralHandler answers a Mistral request of an authenticated project:
// a status and a body to encode (nil: none), or an error (a *mistralFault,
// else a logged 500).
type mistralHandler func(ctx context.Context, r *http.Request, project string) (int, any, error)

// mistralFault is Mistral's error answer.
type mistralFault struct {
	status  int
	message string
}

func (f *mistralFault) Error() string { return f.message }

func mistralErrorf(status int, format string, args ...any) *mistralFault {
	return &mistralFault{status: status, message: fmt.Sprintf(format, args...)}
}

// mistral authenticates a request as the /v1.0 routes are (without a
// tenant to compare: the token's project is the one acted on), applies the
// project's rate limits, runs h and writes its answer.
func (d *Deps) mistral(h mistralHandler) func(huma.Context) {
	return func(hctx huma.Context) {
		r, w := humago.Unwrap(hctx)
		p, err := d.Auth.Authenticate(r.Context(), r.Header.Get("X-Auth-Token"))
		if err == nil {
			err = d.ensureProject(r.Context(), p.ProjectID)
		}
		if err != nil {
			if errors.Is(err, auth.ErrInvalidToken) {
				writeMistral(w, mistralErrorf(http.StatusUnauthorized, "The request you have made requires authentication."))
				return
			}
			d.Logger.ErrorContext(r.Context(), "mistral: authenticate", "err", err)
			writeMistral(w, mistralErrorf(http.StatusServiceUnavailable, "Authentication is unavailable, try again."))
			return
		}
		r = r.WithContext(auth.WithPrincipal(r.Context(), p))
		d.RateLimit.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			status, body, err := h(r.Context(), r, p.ProjectID)
			var fault *mistralFault
			if err != nil && !errors.As(err, &fault) {
				id := uuid.NewString()
				d.Logger.ErrorContext(r.Context(), "mistral "+r.Method+" "+r.URL.Path, "err", err, "error_id", id)
				fault = mistralErrorf(http.StatusInternalServerError, "Internal Server Error (%s).", id)
			}
			if fault != nil {
				writeMistral(w, fault)
				return
			}
			writeMistralStatus(w, d.Logger, status, body)
		})).ServeHTTP(w, r)
	}
}

// writeMistral writes a fault in Mistral's format.
func writeMistral(w http.ResponseWriter, f *mistralFault) {
	code := "Client"
	if f.status >= 500 {
		code = "Server"
	}
	b, _ := json.Marshal(map[string]any{"faultcode": code, "faultstring": f.message, "debuginfo": nil})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(f.status)
	_, _ = w.Write(b)
}

func writeMistralStatus(w http.ResponseWriter, logger *slog.Logger, status int, body any) {
	if body == nil {
		w.WriteHeader(status)
		return
	}
	b, err := json.Marshal(body)
	if err != nil {
		logger.Error("mistral: encode answer", "err", err)
		writeMistral(w, mistralErrorf(http.StatusInternalServerError, "Internal Server Error."))
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// backupInput is trove.backup_create's workflow input, as
// python-troveclient sends it: {"instance", "name", "description",
// "incremental"}. Rendered from the schedule, so that a trigger's input
// and its executions' inputs are equal (the client matches them).
type backupInput struct {
	Instance    string  `json:"instance"`
	Name        string  `json:"name"`
	Description *string `json:"description"`
	Incremental bool    `json:"incremental"`
}

func workflowInput(s store.BackupSchedule) string {
	in := backupInput{Instance: s.InstanceID.String(), Name: s.Name, Incremental: s.Incremental}
	if s.Description != "" {
		in.Description = &s.Description
	}
	b, _ := json.Marshal(in) // strings and a bool: cannot fail
	return string(b)
}

// cronTrigger is Mistral's cron trigger resource.
type cronTrigger struct {
	ID                  string  `json:"id"`
	Name                string  `json:"name"`
	Pattern             string  `json:"pattern"`
	WorkflowName        string  `json:"workflow_name"`
	WorkflowID          string  `json:"workflow_id"`
	WorkflowInput       string  `json:"workflow_input"`
	WorkflowParams      string  `json:"workflow_params"`
	Scope               string  `json:"scope"`
	ProjectID           string  `json:"project_id"`
	FirstExecutionTime  *string `json:"first_execution_time"`
	RemainingExecutions *int    `json:"remaining_executions"`
	NextExecutionTime   string  `json:"next_execution_time"`
	CreatedAt           string  `json:"created_at"`
	UpdatedAt           string  `json:"updated_at"`
}

func mistralTime(t time.Time) string { return t.UTC().Format(mistralTimeLayout) }

func triggerView(s store.BackupSchedule) cronTrigger {
	return cronTrigger{
		ID: s.ID.String(), Name: s.ID.String(), Pattern: s.Pattern, WorkflowName: mistralWorkflow,
		WorkflowID: mistralWorkflowID, WorkflowInput: workflowInput(s), WorkflowParams: "{}", Scope: "private",
		ProjectID: s.ProjectID, NextExecutionTime: mistralTime(s.NextRunAt),
		CreatedAt: mistralTime(s.CreatedAt), UpdatedAt: mistralTime(s.UpdatedAt),
	}
}

// triggerCreate is the body mistralclient's cron_triggers.create sends.
type triggerCreate struct {
	Name                string          `json:"name"`
	WorkflowName        string          `json:"workflow_name"`
	WorkflowID          string          `json:"workflow_id"`
	Pattern             *string         `json:"pattern"`
	FirstExecutionTime  *string         `json:"first_execution_time"`
	RemainingExecutions *int64          `json:"remaining_executions"`
	WorkflowInput       json.RawMessage `json:"workflow_input"`
	WorkflowParams      json.RawMessage `json:"workflow_params"`
}

func (d *Deps) mistralCreateTrigger(ctx context.Context, r *http.Request, project string) (int, any, error) {
	raw, err := io.ReadAll(http.MaxBytesReader(nil, r.Body, mistralMaxBody))
	if err != nil {
		return 0, nil, mistralErrorf(http.StatusRequestEntityTooLarge, "The cron trigger is larger than %d bytes.", mistralMaxBody)
	}
	var req triggerCreate
	if err := json.Unmarshal(raw, &req); err != nil {
		return 0, nil, mistralErrorf(http.StatusBadRequest, "Invalid cron trigger: %v.", err)
	}
	if err := checkText(reflect.ValueOf(&req), ""); err != nil {
		return 0, nil, mistralErrorf(http.StatusBadRequest, "Invalid cron trigger: %v.", err)
	}
	switch {
	case req.WorkflowName == "" && req.WorkflowID == "":
		return 0, nil, mistralErrorf(http.StatusBadRequest, "A cron trigger needs a workflow_name (%s).", mistralWorkflow)
	case req.WorkflowName != "" && req.WorkflowName != mistralWorkflow,
		req.WorkflowID != "" && req.WorkflowID != mistralWorkflowID:
		return 0, nil, mistralErrorf(http.StatusBadRequest, "Only the workflow %s (backups of a database instance) can be scheduled here.", mistralWorkflow)
	case req.FirstExecutionTime != nil:
		return 0, nil, mistralErrorf(http.StatusBadRequest, "first_execution_time is not supported: the pattern alone says when a backup runs.")
	case req.RemainingExecutions != nil:
		return 0, nil, mistralErrorf(http.StatusBadRequest, "remaining_executions is not supported: a schedule runs until it is deleted.")
	case req.Pattern == nil || *req.Pattern == "":
		return 0, nil, mistralErrorf(http.StatusBadRequest, "A cron trigger needs a pattern.")
	}
	id, err := uuid.Parse(req.Name)
	if err != nil || req.Name != id.String() {
		return 0, nil, mistralErrorf(http.StatusBadRequest,
			"Invalid cron trigger name '%s': it must be a lower-case uuid (it becomes the schedule's id), as python-troveclient makes.", req.Name)
	}
	if params, ok := jsonText(req.WorkflowParams); !ok || (params != "" && params != "{}" && params != "null") {
		return 0, nil, mistralErrorf(http.StatusBadRequest, "workflow_params are not supported.")
	}
	in, fault := parseBackupInput(req.WorkflowInput)
	if fault != nil {
		return 0, nil, fault
	}
	if f := validScheduleName(in.Name); f != nil {
		return 0, nil, mistralErrorf(http.StatusBadRequest, "Invalid workflow_input: name must contain at least one letter or digit.")
	}
	if in.Description != nil && len(*in.Description) > 255 {
		return 0, nil, mistralErrorf(http.StatusBadRequest, "Invalid workflow_input: description is longer than 255 characters.")
	}
	if len(in.Name) > 255 || len(*req.Pattern) > 255 {
		return 0, nil, mistralErrorf(http.StatusBadRequest, "Invalid cron trigger: name and pattern are at most 255 characters.")
	}
	now := d.now()
	sched, f := validPattern(*req.Pattern, now)
	if f != nil {
		return 0, nil, mistralErrorf(http.StatusBadRequest, "%s", f.Message)
	}
	spec := scheduleSpec{name: in.Name, pattern: *req.Pattern, incremental: in.Incremental, enabled: true, cron: sched}
	if in.Description != nil {
		spec.description = *in.Description
	}
	s, err := d.insertSchedule(ctx, project, in.Instance, id, spec, now)
	if errors.Is(err, errScheduleIDTaken) {
		return 0, nil, mistralErrorf(http.StatusConflict, "Duplicate entry for cron trigger: %s.", req.Name)
	}
	if err != nil {
		return 0, nil, asMistral(err)
	}
	return http.StatusCreated, triggerView(s), nil
}

// jsonText returns a JSON value that is a string's content, or the value
// itself ("" when absent); ok is false for what is neither.
func jsonText(raw json.RawMessage) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", true
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return "", false
		}
		return strings.TrimSpace(s), true
	}
	return string(raw), true
}

// parseBackupInput reads trove.backup_create's input: a JSON string (what
// mistralclient sends) or object.
func parseBackupInput(raw json.RawMessage) (backupInput, *mistralFault) {
	text, ok := jsonText(raw)
	if !ok || text == "" || text == "null" {
		return backupInput{}, mistralErrorf(http.StatusBadRequest,
			"A cron trigger of %s needs a workflow_input {\"instance\", \"name\", \"description\", \"incremental\"}.", mistralWorkflow)
	}
	var in struct {
		Instance    *string `json:"instance"`
		Name        *string `json:"name"`
		Description *string `json:"description"`
		Incremental any     `json:"incremental"`
	}
	dec := json.NewDecoder(strings.NewReader(text))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&in); err != nil || dec.More() {
		msg := "it must be a JSON object"
		if err != nil {
			msg = err.Error()
		}
		return backupInput{}, mistralErrorf(http.StatusBadRequest,
			"Invalid workflow_input: %s; %s takes instance, name, description and incremental.", msg, mistralWorkflow)
	}
	if err := checkText(reflect.ValueOf(&in), "workflow_input"); err != nil {
		return backupInput{}, mistralErrorf(http.StatusBadRequest, "Invalid workflow_input: %v.", err)
	}
	if in.Instance == nil || *in.Instance == "" || in.Name == nil {
		return backupInput{}, mistralErrorf(http.StatusBadRequest, "Invalid workflow_input: instance and name are required.")
	}
	out := backupInput{Instance: *in.Instance, Name: *in.Name, Description: in.Description}
	switch v := in.Incremental.(type) {
	case nil:
	case bool:
		out.Incremental = v
	case float64: // Trove's own API takes 0/1
		if v != 0 && v != 1 {
			return backupInput{}, mistralErrorf(http.StatusBadRequest, "Invalid workflow_input: incremental must be true or false.")
		}
		out.Incremental = v == 1
	default:
		return backupInput{}, mistralErrorf(http.StatusBadRequest, "Invalid workflow_input: incremental must be true or false.")
	}
	return out, nil
}

// asMistral turns a Trove fault from shared code into Mistral's format.
func asMistral(err error) error {
	var f *openapi.Fault
	if errors.As(err, &f) {
		return mistralErrorf(f.Status, "%s", f.Message)
	}
	return err
}

// mistralQuery is a list request's query: paging, sorting and filters
// (plain values or Mistral's "eq:value").
type mistralQuery struct {
	marker   string
	limit    int
	desc     bool
	sortKeys []string
	filters  map[string]string
}

// parseMistralQuery reads the query; filters outside allowed, sort keys
// outside sortable and unknown filter operators are refused (a filter
// quietly ignored would list what the client asked not to see).
func parseMistralQuery(q url.Values, sortable, allowed []string) (mistralQuery, *mistralFault) {
	mq := mistralQuery{filters: map[string]string{}}
	for key, vals := range q {
		v := vals[len(vals)-1]
		if hasControl(v) || len(v) > 1024 {
			return mq, mistralErrorf(http.StatusBadRequest, "Invalid value of %s.", key)
		}
		switch key {
		case "marker":
			mq.marker = v
		case "limit":
			if v == "" {
				continue
			}
			n, err := strconv.Atoi(v)
			if err != nil {
				return mq, mistralErrorf(http.StatusBadRequest, "Invalid limit '%s': it must be an integer.", v)
			}
			if n > 0 {
				mq.limit = n
			}
		case "sort_dirs":
			dir, _, _ := strings.Cut(v, ",")
			switch strings.TrimSpace(dir) {
			case "", "asc":
			case "desc":
				mq.desc = true
			default:
				return mq, mistralErrorf(http.StatusBadRequest, "Invalid sort direction '%s': use asc or desc.", dir)
			}
		case "sort_keys":
			for _, k := range strings.Split(v, ",") {
				if k = strings.TrimSpace(k); k == "" {
					continue
				}
				if !slices.Contains(sortable, k) {
					return mq, mistralErrorf(http.StatusBadRequest, "Cannot sort by '%s': use %s.", k, strings.Join(sortable, " or "))
				}
				mq.sortKeys = append(mq.sortKeys, k)
			}
		case "fields", "include_output", "nulls", "all_projects", "project_id":
			// fields: every field is always returned (a superset of what
			// was asked for is what Mistral's clients parse anyway);
			// all_projects / project_id: a project sees its own only.
			if (key == "all_projects" && v != "" && !strings.EqualFold(v, "false")) || key == "project_id" {
				return mq, mistralErrorf(http.StatusBadRequest, "Listing other projects is not supported.")
			}
		default:
			if !slices.Contains(allowed, key) {
				return mq, mistralErrorf(http.StatusBadRequest, "Filtering by '%s' is not supported; filters: %s.", key, strings.Join(allowed, ", "))
			}
			if op, rest, ok := strings.Cut(v, ":"); ok && op != "eq" && isMistralOperator(op) {
				return mq, mistralErrorf(http.StatusBadRequest, "Filter operator '%s' is not supported; use a plain value or eq:value.", op)
			} else if ok && op == "eq" {
				v = rest
			}
			mq.filters[key] = v
		}
	}
	return mq, nil
}

func isMistralOperator(op string) bool {
	return slices.Contains([]string{"neq", "in", "nin", "gt", "gte", "lt", "lte", "has"}, op)
}

func (d *Deps) mistralListTriggers(ctx context.Context, r *http.Request, project string) (int, any, error) {
	mq, fault := parseMistralQuery(r.URL.Query(), []string{"created_at", "updated_at", "name", "id", "pattern", "next_execution_time"},
		[]string{"name", "id", "pattern", "workflow_name", "workflow_id", "scope"})
	if fault != nil {
		return 0, nil, fault
	}
	rows, err := d.queries().ListProjectSchedules(ctx, project)
	if err != nil {
		return 0, nil, fmt.Errorf("list cron triggers: %w", err)
	}
	var triggers []cronTrigger
	for _, s := range rows {
		t := triggerView(s)
		if matchTrigger(t, mq.filters) {
			triggers = append(triggers, t)
		}
	}
	keys := append(slices.Clone(mq.sortKeys), "created_at", "id")
	slices.SortStableFunc(triggers, func(a, b cronTrigger) int {
		for _, k := range keys {
			if c := cmp.Compare(triggerField(a, k), triggerField(b, k)); c != 0 {
				if mq.desc {
					return -c
				}
				return c
			}
		}
		return 0
	})
	if mq.marker != "" {
		i := slices.IndexFunc(triggers, func(t cronTrigger) bool { return t.ID == mq.marker || t.Name == mq.marker })
		if i < 0 {
			return 0, nil, mistralErrorf(http.StatusBadRequest, "Invalid marker '%s': no such cron trigger.", mq.marker)
		}
		triggers = triggers[i+1:]
	}
	limit := mq.limit
	if limit == 0 || limit > mistralMaxPage {
		limit = mistralMaxPage
	}
	if len(triggers) > limit {
		triggers = triggers[:limit]
	}
	if triggers == nil {
		triggers = []cronTrigger{}
	}
	return http.StatusOK, map[string]any{"cron_triggers": triggers}, nil
}

func matchTrigger(t cronTrigger, filters map[string]string) bool {
	for k, v := range filters {
		if triggerField(t, k) != v {
			return false
		}
	}
	return true
}

// triggerField is a trigger's field by Mistral name (times sort as text:
// their layout orders like the times).
func triggerField(t cronTrigger, name string) string {
	switch name {
	case "id":
		return t.ID
	case "name":
		return t.Name
	case "pattern":
		return t.Pattern
	case "workflow_name":
		return t.WorkflowName
	case "workflow_id":
		return t.WorkflowID
	case "scope":
		return t.Scope
	case "created_at":
		return t.CreatedAt
	case "updated_at":
		return t.UpdatedAt
	case "next_execution_time":
		return t.NextExecutionTime
	}
	return ""
}

// triggerSchedule finds the project's live schedule a trigger name (its
// id) names.
func (d *Deps) triggerSchedule(ctx context.Context, project, name string) (store.BackupSchedule, error) {
	s, err := d.getSchedule(ctx, d.queries(), project, name)
	var f *openapi.Fault
	if errors.As(err, &f) && f.Status == http.StatusNotFound {
		return s, mistralErrorf(http.StatusNotFound, "Cron trigger not found [name=%s]", name)
	}
	return s, asMistral(err)
}

func (d *Deps) mistralShowTrigger(ctx context.Context, r *http.Request, project string) (int, any, error) {
	s, err := d.triggerSchedule(ctx, project, r.PathValue("name"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, triggerView(s), nil
}

func (d *Deps) mistralDeleteTrigger(ctx context.Context, r *http.Request, project string) (int, any, error) {
	name := r.PathValue("name")
	if err := d.removeSchedule(ctx, project, name); err != nil {
		var f *openapi.Fault
		if errors.As(err, &f) && f.Status == http.StatusNotFound {
			return 0, nil, mistralErrorf(http.StatusNotFound, "Cron trigger not found [name=%s]", name)
		}
		return 0, nil, asMistral(err)
	}
	return http.StatusNoContent, nil, nil
}

// mistralExecution is Mistral's workflow execution resource.
type mistralExecution struct {
	ID                string  `json:"id"`
	WorkflowID        string  `json:"workflow_id"`
	WorkflowName      string  `json:"workflow_name"`
	WorkflowNamespace string  `json:"workflow_namespace"`
	Description       string  `json:"description"`
	Params            string  `json:"params"`
	TaskExecutionID   *string `json:"task_execution_id"`
	RootExecutionID   *string `json:"root_execution_id"`
	SourceExecutionID *string `json:"source_execution_id"`
	State             string  `json:"state"`
	StateInfo         *string `json:"state_info"`
	Input             string  `json:"input"`
	Output            string  `json:"output"`
	ProjectID         string  `json:"project_id"`
	CreatedAt         string  `json:"created_at"`
	UpdatedAt         string  `json:"updated_at"`
}

func executionView(e store.ScheduleExecution, s store.BackupSchedule) mistralExecution {
	params, _ := json.Marshal(map[string]string{"cron_trigger": s.ID.String(), "scheduled_at": mistralTime(e.ScheduledAt)})
	output := map[string]string{}
	if e.BackupID.Valid {
		output["backup_id"] = e.BackupID.UUID.String()
	}
	out, _ := json.Marshal(output)
	v := mistralExecution{
		ID: e.ID.String(), WorkflowID: mistralWorkflowID, WorkflowName: mistralWorkflow,
		Description: fmt.Sprintf("Backup %q of cron trigger %s at %s", s.Name, s.ID, mistralTime(e.ScheduledAt)),
		Params:      string(params), State: e.State, Input: workflowInput(s), Output: string(out),
		ProjectID: e.ProjectID, CreatedAt: mistralTime(e.CreatedAt), UpdatedAt: mistralTime(e.UpdatedAt),
	}
	if e.StateInfo != "" {
		v.StateInfo = &e.StateInfo
	}
	return v
}

func (d *Deps) mistralListExecutions(ctx context.Context, r *http.Request, project string) (int, any, error) {
	mq, fault := parseMistralQuery(r.URL.Query(), []string{"created_at", "id"},
		[]string{"workflow_name", "workflow_id", "state", "id", "task_execution_id", "root_execution_id"})
	if fault != nil {
		return 0, nil, fault
	}
	if len(mq.sortKeys) > 0 && mq.sortKeys[0] != "created_at" {
		return 0, nil, mistralErrorf(http.StatusBadRequest, "Executions are sorted by created_at (then id).")
	}
	empty := map[string]any{"executions": []mistralExecution{}}
	// None of these executions was started by a task or another execution,
	// and all run the one workflow.
	if mq.filters["task_execution_id"] != "" || mq.filters["root_execution_id"] != "" ||
		(mq.filters["workflow_name"] != "" && mq.filters["workflow_name"] != mistralWorkflow) ||
		(mq.filters["workflow_id"] != "" && mq.filters["workflow_id"] != mistralWorkflowID) {
		return http.StatusOK, empty, nil
	}
	limit := mq.limit
	if limit == 0 || limit > mistralMaxPage {
		limit = mistralMaxPage
	}
	q := d.queries()
	asc := store.ListProjectExecutionsAscParams{ProjectID: project, MaxRows: int32(limit)}
	if v := mq.filters["state"]; v != "" {
		asc.State = pgtype.Text{String: v, Valid: true}
	}
	if v := mq.filters["id"]; v != "" {
		id, err := uuid.Parse(v)
		if err != nil {
			return http.StatusOK, empty, nil
		}
		asc.ID = uuid.NullUUID{UUID: id, Valid: true}
	}
	if mq.marker != "" {
		m, err := d.projectExecution(ctx, project, mq.marker)
		var f *mistralFault
		if errors.As(err, &f) {
			return 0, nil, mistralErrorf(http.StatusBadRequest, "Invalid marker '%s': no such execution.", mq.marker)
		} else if err != nil {
			return 0, nil, err
		}
		e := m.ScheduleExecution
		asc.MarkerCreatedAt, asc.MarkerID = &e.CreatedAt, uuid.NullUUID{UUID: e.ID, Valid: true}
	}
	var out []mistralExecution
	if mq.desc {
		rows, err := q.ListProjectExecutionsDesc(ctx, store.ListProjectExecutionsDescParams(asc))
		if err != nil {
			return 0, nil, fmt.Errorf("list executions: %w", err)
		}
		for _, r := range rows {
			out = append(out, executionView(r.ScheduleExecution, r.BackupSchedule))
		}
	} else {
		rows, err := q.ListProjectExecutionsAsc(ctx, asc)
		if err != nil {
			return 0, nil, fmt.Errorf("list executions: %w", err)
		}
		for _, r := range rows {
			out = append(out, executionView(r.ScheduleExecution, r.BackupSchedule))
		}
	}
	if out == nil {
		return http.StatusOK, empty, nil
	}
	return http.StatusOK, map[string]any{"executions": out}, nil
}

// projectExecution finds one of the project's executions by id.
func (d *Deps) projectExecution(ctx context.Context, project, ref string) (store.GetProjectExecutionRow, error) {
	notFound := mistralErrorf(http.StatusNotFound, "Execution not found [id=%s]", ref)
	id, err := uuid.Parse(ref)
	if err != nil {
		return store.GetProjectExecutionRow{}, notFound
	}
	row, err := d.queries().GetProjectExecution(ctx, store.GetProjectExecutionParams{ID: id, ProjectID: project})
	if errors.Is(err, pgx.ErrNoRows) {
		return row, notFound
	}
	if err != nil {
		return row, fmt.Errorf("show execution: %w", err)
	}
	return row, nil
}

func (d *Deps) mistralShowExecution(ctx context.Context, r *http.Request, project string) (int, any, error) {
	row, err := d.projectExecution(ctx, project, r.PathValue("id"))
	if err != nil {
		return 0, nil, err
	}
	return http.StatusOK, executionView(row.ScheduleExecution, row.BackupSchedule), nil
}

func (d *Deps) mistralDeleteExecution(ctx context.Context, r *http.Request, project string) (int, any, error) {
	ref := r.PathValue("id")
	row, err := d.projectExecution(ctx, project, ref)
	if err != nil {
		return 0, nil, err
	}
	force, _ := strconv.ParseBool(r.URL.Query().Get("force"))
	if row.ScheduleExecution.State == "RUNNING" && !force {
		// Mistral's answer: only a finished execution may go (the backup
		// it started runs on either way).
		return 0, nil, mistralErrorf(http.StatusForbidden,
			"Execution %s is still running: it can be deleted once its backup has ended (or with force=true).", ref)
	}
	n, err := d.queries().DeleteScheduleExecution(ctx, store.DeleteScheduleExecutionParams{ID: row.ScheduleExecution.ID, ProjectID: project})
	if err != nil {
		return 0, nil, fmt.Errorf("delete execution: %w", err)
	}
	if n == 0 {
		return 0, nil, mistralErrorf(http.StatusNotFound, "Execution not found [id=%s]", ref)
	}
	return http.StatusNoContent, nil, nil
}
