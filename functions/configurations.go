package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/coffer-dbaas/coffer/agent/driver/postgresql"
	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/status"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Configuration groups: named sets of datastore settings a project attaches
// to its instances. A group's values are validated against its datastore
// version's parameters (configuration_parameter, loaded from Trove's
// validation rules) before anything is stored. Attaching, detaching and
// changing a group queue an apply_configuration command per instance in
// the same transaction; the agent writes the values and reloads the
// datastore, or, when a changed parameter only takes effect at start,
// writes them and the instance shows RESTART_REQUIRED until restarted
// (jobs/configuration.go records that when the agent confirms).

func init() {
	register(Configurations)
	configurationAttacher = attachConfiguration
}

// configurationsPageSize is Trove's configurations_page_size.
const configurationsPageSize = 20

// applyLeaseSeconds bounds one apply on the guest (a reload, a check).
const applyLeaseSeconds = 120

type configurationInput struct {
	TenantPath
	ConfigurationID string `path:"configuration_id" maxLength:"64"`
}

type configurationListInput struct {
	TenantPath
	Limit  int    `query:"limit" minimum:"0" doc:"Page size (at most 20)"`
	Marker string `query:"marker" maxLength:"64" doc:"Id of the last group of the previous page"`
}

type configurationInstancesInput struct {
	TenantPath
	ConfigurationID string `path:"configuration_id" maxLength:"64"`
	Limit           int    `query:"limit" minimum:"0" doc:"Page size (at most 20)"`
	Marker          string `query:"marker" maxLength:"64" doc:"Id of the last instance of the previous page"`
}

type configurationCreateInput struct {
	TenantPath
	Body struct {
		Configuration openapi.ConfigurationCreate `json:"configuration"`
	}
}

type configurationUpdateInput struct {
	TenantPath
	ConfigurationID string `path:"configuration_id" maxLength:"64"`
	Body            struct {
		Configuration openapi.ConfigurationUpdate `json:"configuration"`
	}
}

type configurationOutput struct {
	Body struct {
		Configuration openapi.ConfigurationDetail `json:"configuration"`
	}
}

type configurationListOutput struct {
	Body struct {
		Configurations []openapi.Configuration `json:"configurations"`
		Links          []openapi.Link          `json:"links,omitempty"`
	}
}

type configurationInstancesOutput struct {
	Body struct {
		Instances []openapi.InstanceRef `json:"instances"`
		Links     []openapi.Link        `json:"links,omitempty"`
	}
}

type defaultConfigurationOutput struct {
	Body struct {
		Instance struct {
			Configuration map[string]any `json:"configuration"`
		} `json:"instance"`
	}
}

// Configurations serves configuration groups and an instance's default
// configuration.
func Configurations(api huma.API, deps *Deps) {
	tags := []string{"Configuration groups"}
	base := "/v1.0/{tenant_id}/configurations"
	one := base + "/{configuration_id}"
	huma.Register(api, huma.Operation{
		OperationID: "list-configurations", Method: http.MethodGet, Path: base,
		Summary: "List configuration groups", Description: "Pages of at most 20, ordered by id. Admins see every project's groups.",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusBadRequest},
	}, deps.listConfigurations)
	huma.Register(api, huma.Operation{
		OperationID: "create-configuration", Method: http.MethodPost, Path: base,
		Summary: "Create a configuration group", Description: "Values are checked against the datastore version's parameters (unknown name, type, minimum, maximum: 422) before anything is stored.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusOK, MaxBodyBytes: 256 << 10,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity},
	}, deps.createConfiguration)
	huma.Register(api, huma.Operation{
		OperationID: "show-configuration", Method: http.MethodGet, Path: one,
		Summary: "Show a configuration group", Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.showConfiguration)
	huma.Register(api, huma.Operation{
		OperationID: "list-configuration-instances", Method: http.MethodGet, Path: one + "/instances",
		Summary: "List the instances a configuration group is attached to", Tags: tags, Security: tokenSecurity,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, deps.listConfigurationInstances)
	huma.Register(api, huma.Operation{
		OperationID: "update-configuration", Method: http.MethodPut, Path: one,
		Summary: "Replace a configuration group's values", Description: "All values are replaced (none given: all removed) and the group is applied again to every instance it is attached to.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, MaxBodyBytes: 256 << 10,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity},
	}, func(ctx context.Context, in *configurationUpdateInput) (*struct{}, error) {
		return nil, deps.updateConfiguration(ctx, in, true)
	})
	huma.Register(api, huma.Operation{
		OperationID: "patch-configuration", Method: http.MethodPatch, Path: one,
		Summary: "Set some values of a configuration group", Description: "The given values are added or replaced; the group is applied again to every instance it is attached to. Answers 200 without a body (Trove).",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusOK, MaxBodyBytes: 256 << 10,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity},
	}, func(ctx context.Context, in *configurationUpdateInput) (*struct{}, error) {
		return nil, deps.updateConfiguration(ctx, in, false)
	})
	huma.Register(api, huma.Operation{
		OperationID: "delete-configuration", Method: http.MethodDelete, Path: one,
		Summary: "Delete a configuration group", Description: "Refused (400) while the group is attached to an instance.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, deps.deleteConfiguration)
	huma.Register(api, huma.Operation{
		OperationID: "show-instance-default-configuration", Method: http.MethodGet,
		Path:    "/v1.0/{tenant_id}/instances/{instance_id}/configuration",
		Summary: "Show an instance's default configuration", Description: "The settings the datastore runs with when no group overrides them, derived from the instance's flavor.",
		Tags: []string{"Instances"}, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.defaultConfiguration)
}

// --- reads -----------------------------------------------------------------

// getConfiguration reads a group the caller may see: its project's, or any
// for an admin. Anything else is 404.
func (d *Deps) getConfiguration(ctx context.Context, q *store.Queries, tenant, ref string) (store.GetConfigurationRow, error) {
	id, err := uuid.Parse(ref)
	if err != nil {
		return store.GetConfigurationRow{}, configurationNotFound(ref)
	}
	row, err := q.GetConfiguration(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && row.Configuration.ProjectID != tenant && !principal(ctx).IsAdmin()) {
		return store.GetConfigurationRow{}, configurationNotFound(ref)
	}
	if err != nil {
		return row, d.internal(ctx, "load configuration group", err)
	}
	return row, nil
}

func configurationNotFound(ref string) *openapi.Fault {
	return openapi.NotFound("Configuration group %s could not be found.", ref)
}

func (d *Deps) showConfiguration(ctx context.Context, in *configurationInput) (*configurationOutput, error) {
	q := d.queries()
	row, err := d.getConfiguration(ctx, q, in.TenantID, in.ConfigurationID)
	if err != nil {
		return nil, err
	}
	n, err := q.CountConfigurationInstances(ctx, uuid.NullUUID{UUID: row.Configuration.ID, Valid: true})
	if err != nil {
		return nil, d.internal(ctx, "count configuration instances", err)
	}
	out := &configurationOutput{}
	out.Body.Configuration, err = configurationDetail(row.Configuration, row.DatastoreName, row.VersionName, row.VersionNumber, n)
	if err != nil {
		return nil, d.internal(ctx, "show configuration", err)
	}
	return out, nil
}

func configurationView(c store.Configuration, datastore, version, number string) openapi.Configuration {
	v := openapi.Configuration{ID: c.ID.String(), Name: c.Name, Created: openapi.Time(c.CreatedAt), Updated: openapi.Time(c.UpdatedAt),
		DatastoreVersionID: c.DatastoreVersionID.String(), DatastoreName: datastore, DatastoreVersionName: version,
		DatastoreVersionNumber: number}
	if c.Description.Valid {
		desc := c.Description.String
		v.Description = &desc
	}
	return v
}

func configurationDetail(c store.Configuration, datastore, version, number string, instances int64) (openapi.ConfigurationDetail, error) {
	values, err := decodeItems(c.Items)
	if err != nil {
		return openapi.ConfigurationDetail{}, err
	}
	return openapi.ConfigurationDetail{Configuration: configurationView(c, datastore, version, number),
		Values: values, InstanceCount: instances}, nil
}

func decodeItems(b []byte) (openapi.ConfigValues, error) {
	values := openapi.ConfigValues{}
	if len(b) == 0 {
		return values, nil
	}
	if err := json.Unmarshal(b, &values); err != nil {
		return nil, fmt.Errorf("decode configuration values: %w", err)
	}
	return values, nil
}

func (d *Deps) listConfigurations(ctx context.Context, in *configurationListInput) (*configurationListOutput, error) {
	size := pageSize(in.Limit, configurationsPageSize)
	params := store.ListConfigurationsParams{MaxRows: int32(size + 1)}
	if !principal(ctx).IsAdmin() {
		params.ProjectID = pgtype.Text{String: in.TenantID, Valid: true}
	}
	var err error
	if params.Marker, err = idMarker(in.Marker); err != nil {
		return nil, err
	}
	rows, err := d.queries().ListConfigurations(ctx, params)
	if err != nil {
		return nil, d.internal(ctx, "list configurations", err)
	}
	out := &configurationListOutput{}
	if len(rows) > size {
		rows = rows[:size]
		q := url.Values{}
		if in.Limit > 0 {
			q.Set("limit", strconv.Itoa(in.Limit))
		}
		out.Body.Links = nextLink(ctx, "/v1.0/"+in.TenantID+"/configurations", q, rows[len(rows)-1].Configuration.ID.String())
	}
	out.Body.Configurations = make([]openapi.Configuration, 0, len(rows))
	for _, r := range rows {
		out.Body.Configurations = append(out.Body.Configurations, configurationView(r.Configuration, r.DatastoreName, r.VersionName, r.VersionNumber))
	}
	return out, nil
}

func (d *Deps) listConfigurationInstances(ctx context.Context, in *configurationInstancesInput) (*configurationInstancesOutput, error) {
	q := d.queries()
	row, err := d.getConfiguration(ctx, q, in.TenantID, in.ConfigurationID)
	if err != nil {
		return nil, err
	}
	size := pageSize(in.Limit, instancesPageSize)
	params := store.ListConfigurationInstancesParams{
		ConfigurationID: uuid.NullUUID{UUID: row.Configuration.ID, Valid: true}, MaxRows: int32(size + 1)}
	if params.Marker, err = idMarker(in.Marker); err != nil {
		return nil, err
	}
	rows, err := q.ListConfigurationInstances(ctx, params)
	if err != nil {
		return nil, d.internal(ctx, "list configuration instances", err)
	}
	out := &configurationInstancesOutput{}
	if len(rows) > size {
		rows = rows[:size]
		qs := url.Values{}
		if in.Limit > 0 {
			qs.Set("limit", strconv.Itoa(in.Limit))
		}
		out.Body.Links = nextLink(ctx, "/v1.0/"+in.TenantID+"/configurations/"+row.Configuration.ID.String()+"/instances",
			qs, rows[len(rows)-1].ID.String())
	}
	out.Body.Instances = make([]openapi.InstanceRef, 0, len(rows))
	for _, r := range rows {
		out.Body.Instances = append(out.Body.Instances, openapi.InstanceRef{ID: r.ID.String(), Name: r.Name})
	}
	return out, nil
}

// configurationRef is the attached group as an instance's detail view shows
// it. A failed lookup still shows the id.
func (d *Deps) configurationRef(ctx context.Context, tenant string, id uuid.UUID) *openapi.ConfigurationRef {
	ref := &openapi.ConfigurationRef{ID: id.String(), Links: links(ctx, tenant, "configurations", id.String())}
	row, err := d.queries().GetConfiguration(ctx, id)
	if err != nil {
		d.Logger.WarnContext(ctx, "load attached configuration group", "configuration_id", id, "err", err)
		return ref
	}
	ref.Name = row.Configuration.Name
	return ref
}

// defaultSettings renders, per datastore manager, the settings an instance
// runs with before any group: for PostgreSQL the agent driver's own
// derivation from the flavor's memory (one source of truth).
var defaultSettings = map[string]func(ramMB int) map[string]string{
	"postgresql": postgresql.DefaultSettings,
}

func (d *Deps) defaultConfiguration(ctx context.Context, in *instanceInput) (*defaultConfigurationOutput, error) {
	id, err := uuid.Parse(in.InstanceID)
	if err != nil {
		return nil, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	}
	r, err := d.queries().GetInstance(ctx, store.GetInstanceParams{ID: id, ProjectID: in.TenantID})
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	}
	if err != nil {
		return nil, d.internal(ctx, "instance default configuration", err)
	}
	out := &defaultConfigurationOutput{}
	out.Body.Instance.Configuration = map[string]any{}
	if render := defaultSettings[r.DatastoreManager]; render != nil {
		for k, v := range render(int(r.FlavorRamMb)) {
			// Numbers as numbers, as Trove's rendered templates parse them.
			if n, err := strconv.ParseInt(v, 10, 64); err == nil {
				out.Body.Instance.Configuration[k] = n
			} else {
				out.Body.Instance.Configuration[k] = v
			}
		}
	}
	return out, nil
}

// --- writes ----------------------------------------------------------------

func (d *Deps) createConfiguration(ctx context.Context, in *configurationCreateInput) (*configurationOutput, error) {
	req := in.Body.Configuration
	if !hasAlnum.MatchString(req.Name) {
		return nil, openapi.BadRequest("Validation error: configuration name must contain at least one letter or digit.")
	}
	if req.Values == nil {
		return nil, openapi.BadRequest("Validation error: configuration values is required.")
	}
	q := d.queries()
	ds, version, err := d.configurationVersion(ctx, q, req.Datastore)
	if err != nil {
		return nil, err
	}
	if len(req.Values) > 0 {
		rules, err := q.ListConfigurationParameters(ctx, version.ID)
		if err != nil {
			return nil, d.internal(ctx, "create configuration: parameters", err)
		}
		if f := validateValues(req.Values, rules, ds.Name, version.Name); f != nil {
			return nil, f
		}
	}
	items, err := json.Marshal(req.Values)
	if err != nil {
		return nil, d.internal(ctx, "create configuration: encode values", err)
	}
	var desc pgtype.Text
	if req.Description != nil {
		desc = pgtype.Text{String: *req.Description, Valid: true}
	}
	c, err := q.InsertConfiguration(ctx, store.InsertConfigurationParams{
		ID: uuid.New(), ProjectID: in.TenantID, Name: req.Name, Description: desc,
		DatastoreVersionID: version.ID, Items: items,
	})
	if err != nil {
		return nil, d.internal(ctx, "create configuration", err)
	}
	out := &configurationOutput{}
	if out.Body.Configuration, err = configurationDetail(c, ds.Name, version.Name, version.Version, 0); err != nil {
		return nil, d.internal(ctx, "create configuration", err)
	}
	return out, nil
}

// configurationVersion resolves the datastore version a new group is for:
// by default the default datastore's default version; it must be active.
func (d *Deps) configurationVersion(ctx context.Context, q *store.Queries, spec *openapi.DatastoreSpec) (store.Datastore, store.DatastoreVersion, error) {
	dsRef, verRef := d.DefaultDatastore, ""
	if spec != nil {
		if spec.Type != "" {
			dsRef = spec.Type
		}
		verRef = spec.Version
		if verRef == "" {
			verRef = spec.VersionNumber
		}
	}
	ds, err := findDatastore(ctx, q, dsRef)
	if err != nil {
		return ds, store.DatastoreVersion{}, d.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", dsRef))
	}
	var v store.DatastoreVersion
	if verRef == "" {
		if !ds.DefaultVersionID.Valid {
			return ds, v, openapi.BadRequest("Default version for datastore '%s' not found.", ds.Name)
		}
		v, err = q.GetDatastoreVersion(ctx, ds.DefaultVersionID.UUID)
	} else {
		v, err = findVersion(ctx, q, ds, verRef)
	}
	if err != nil {
		return ds, v, d.lookupError(ctx, err, openapi.BadRequest("Datastore version '%s' cannot be found.", verRef))
	}
	if !v.Active {
		return ds, v, openapi.BadRequest("Datastore version '%s' is not active.", v.Name)
	}
	return ds, v, nil
}

func (d *Deps) updateConfiguration(ctx context.Context, in *configurationUpdateInput, replace bool) error {
	req := in.Body.Configuration
	if req.Name != nil && !hasAlnum.MatchString(*req.Name) {
		return openapi.BadRequest("Validation error: configuration name must contain at least one letter or digit.")
	}
	id, err := uuid.Parse(in.ConfigurationID)
	if err != nil {
		return configurationNotFound(in.ConfigurationID)
	}
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		c, err := q.LockConfiguration(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && c.ProjectID != in.TenantID && !principal(ctx).IsAdmin()) {
			return configurationNotFound(in.ConfigurationID)
		}
		if err != nil {
			return fmt.Errorf("lock configuration: %w", err)
		}
		old, err := decodeItems(c.Items)
		if err != nil {
			return err
		}
		values := openapi.ConfigValues{}
		if !replace {
			values = cloneValues(old)
		}
		for k, v := range req.Values {
			// A new spelling of a name replaces the old one.
			for existing := range values {
				if strings.EqualFold(existing, k) {
					delete(values, existing)
				}
			}
			values[k] = v
		}
		rules, err := q.ListConfigurationParameters(ctx, c.DatastoreVersionID)
		if err != nil {
			return fmt.Errorf("load parameters: %w", err)
		}
		if len(req.Values) > 0 {
			v, err := q.GetDatastoreVersion(ctx, c.DatastoreVersionID)
			if err != nil {
				return fmt.Errorf("load datastore version: %w", err)
			}
			ds, err := q.GetDatastoreByID(ctx, v.DatastoreID)
			if err != nil {
				return fmt.Errorf("load datastore: %w", err)
			}
			if f := validateValues(req.Values, rules, ds.Name, v.Name); f != nil {
				return f
			}
		}
		items, err := json.Marshal(values)
		if err != nil {
			return err
		}
		name, desc := c.Name, c.Description
		if req.Name != nil {
			name = *req.Name
		}
		if req.Description != nil {
			desc = pgtype.Text{String: *req.Description, Valid: true}
		}
		if _, err := q.UpdateConfiguration(ctx, store.UpdateConfigurationParams{ID: c.ID, Name: name, Description: desc, Items: items}); err != nil {
			return fmt.Errorf("update configuration: %w", err)
		}
		// Apply the new values wherever the group is attached.
		insts, err := q.LockConfigurationInstances(ctx, uuid.NullUUID{UUID: c.ID, Valid: true})
		if err != nil {
			return fmt.Errorf("lock attached instances: %w", err)
		}
		strValues, err := agentValues(values, rules)
		if err != nil {
			return err
		}
		restart := restartNeeded(old, values, rules)
		for _, inst := range insts {
			if inst.Task == status.TaskDeleting {
				continue
			}
			if err := queueApply(ctx, q, inst, uuid.NullUUID{UUID: c.ID, Valid: true}, strValues, restart); err != nil {
				return err
			}
		}
		return nil
	})
	var f *openapi.Fault
	if errors.As(err, &f) {
		return f
	}
	if err != nil {
		return d.internal(ctx, "update configuration", err)
	}
	return nil
}

func cloneValues(m openapi.ConfigValues) openapi.ConfigValues {
	out := make(openapi.ConfigValues, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (d *Deps) deleteConfiguration(ctx context.Context, in *configurationInput) (*struct{}, error) {
	id, err := uuid.Parse(in.ConfigurationID)
	if err != nil {
		return nil, configurationNotFound(in.ConfigurationID)
	}
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		// FOR UPDATE waits for an attach in flight (it holds a key-share
		// lock on the group), so the count below includes it.
		c, err := q.LockConfiguration(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && c.ProjectID != in.TenantID && !principal(ctx).IsAdmin()) {
			return configurationNotFound(in.ConfigurationID)
		}
		if err != nil {
			return fmt.Errorf("lock configuration: %w", err)
		}
		n, err := q.CountConfigurationInstances(ctx, uuid.NullUUID{UUID: id, Valid: true})
		if err != nil {
			return err
		}
		if n > 0 {
			return openapi.BadRequest("A configuration group cannot be deleted if it is associated with one or more non-terminated instances. Detach the configuration group from all non-terminated instances and please try again.")
		}
		return q.DeleteConfiguration(ctx, id)
	})
	var f *openapi.Fault
	if errors.As(err, &f) {
		return nil, f
	}
	if err != nil {
		return nil, d.internal(ctx, "delete configuration", err)
	}
	return nil, nil
}

// attachConfiguration attaches the configuration group groupID to inst, or
// with groupID nil detaches the attached group (restoring the defaults;
// nothing attached: nothing to do). The caller holds inst locked in the
// transaction q runs in (PUT /instances/{id} calls it through
// configurationAttacher). As in Trove, the instance must be ACTIVE with no
// task (400 InvalidInstanceState), an attach needs no group attached yet
// (400 ConfigurationAlreadyAttached) and a group of the instance's project
// and datastore version. It records the attachment and queues the
// apply_configuration command; the task stays NONE, and when the agent
// confirms an apply that changed a restart-required parameter, the
// instance turns RESTART_REQUIRED (jobs/configuration.go).
func attachConfiguration(ctx context.Context, q *store.Queries, inst store.Instance, groupID *uuid.UUID) *openapi.Fault {
	if groupID == nil && !inst.ConfigurationID.Valid {
		return nil
	}
	if groupID != nil && inst.ConfigurationID.Valid {
		return openapi.BadRequest("Instance %s already has a Configuration Group attached: %s.", inst.ID, inst.ConfigurationID.UUID)
	}
	if f := assignable(inst); f != nil {
		return f
	}
	rules, err := q.ListConfigurationParameters(ctx, inst.DatastoreVersionID)
	if err != nil {
		return internalFault(ctx, "attach configuration: parameters", err)
	}
	if groupID == nil {
		// The detached group's values (for what needs a restart); no lock:
		// an update of the group waits for this instance's row instead.
		old, err := q.GetConfiguration(ctx, inst.ConfigurationID.UUID)
		if err != nil {
			return internalFault(ctx, "detach configuration: load group", err)
		}
		oldValues, err := decodeItems(old.Configuration.Items)
		if err != nil {
			return internalFault(ctx, "detach configuration", err)
		}
		if err := q.SetInstanceConfiguration(ctx, store.SetInstanceConfigurationParams{ID: inst.ID}); err != nil {
			return internalFault(ctx, "detach configuration", err)
		}
		if err := queueApply(ctx, q, inst, uuid.NullUUID{}, map[string]string{}, restartNeeded(oldValues, nil, rules)); err != nil {
			return internalFault(ctx, "detach configuration", err)
		}
		if err := jobs.InsertEvent(ctx, q, inst.ProjectID, jobs.EventConfigurationDetached, inst.ID,
			map[string]string{"configuration_id": old.Configuration.ID.String()}); err != nil {
			return internalFault(ctx, "detach configuration", err)
		}
		return nil
	}

	// A key-share lock on the group: a concurrent delete waits for this
	// attach (and then sees it), a concurrent update's re-apply too.
	c, err := q.ShareConfiguration(ctx, *groupID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && c.ProjectID != inst.ProjectID) {
		return openapi.NotFound("Configuration group id: %s could not be found.", groupID)
	}
	if err != nil {
		return internalFault(ctx, "attach configuration: load group", err)
	}
	if c.DatastoreVersionID != inst.DatastoreVersionID {
		return openapi.BadRequest("Datastore Version on Configuration %s does not match the Datastore Version on the instance %s.",
			c.DatastoreVersionID, inst.DatastoreVersionID)
	}
	values, err := decodeItems(c.Items)
	if err != nil {
		return internalFault(ctx, "attach configuration", err)
	}
	strValues, err := agentValues(values, rules)
	if err != nil {
		return internalFault(ctx, "attach configuration", err)
	}
	if err := q.SetInstanceConfiguration(ctx, store.SetInstanceConfigurationParams{
		ID: inst.ID, ConfigurationID: uuid.NullUUID{UUID: c.ID, Valid: true}}); err != nil {
		return internalFault(ctx, "attach configuration", err)
	}
	if err := queueApply(ctx, q, inst, uuid.NullUUID{UUID: c.ID, Valid: true}, strValues, restartNeeded(nil, values, rules)); err != nil {
		return internalFault(ctx, "attach configuration", err)
	}
	if err := jobs.InsertEvent(ctx, q, inst.ProjectID, jobs.EventConfigurationAttached, inst.ID,
		map[string]string{"configuration_id": c.ID.String()}); err != nil {
		return internalFault(ctx, "attach configuration", err)
	}
	return nil
}

// assignable is Trove's check before a configuration attach or detach,
// stricter than actionable: the server ACTIVE and no task at all.
func assignable(inst store.Instance) *openapi.Fault {
	state := ""
	switch {
	case inst.ComputeStatus != "ACTIVE":
		state = inst.ComputeStatus
	case inst.Task != status.TaskNone:
		state = inst.Task
	}
	if state != "" {
		return openapi.BadRequest("The operation you have requested cannot be executed because the instance status is currently: %s.", state)
	}
	return nil
}

// queueApply queues the apply_configuration command that makes inst run
// with values (empty: the defaults) and records what its completion needs.
func queueApply(ctx context.Context, q *store.Queries, inst store.Instance, group uuid.NullUUID, values map[string]string, restart bool) error {
	cmdID, err := jobs.QueueCommand(ctx, q, inst.ID, protocol.CommandApplyConfiguration,
		protocol.ApplyConfigurationRequest{Values: values, Restart: restart}, applyLeaseSeconds)
	if err != nil {
		return err
	}
	if err := q.InsertConfigurationApply(ctx, store.InsertConfigurationApplyParams{
		CommandID: cmdID, InstanceID: inst.ID, ConfigurationID: group, Restart: restart}); err != nil {
		return fmt.Errorf("record configuration apply: %w", err)
	}
	return nil
}

// internalFault logs an unexpected error of code that answers with a bare
// Fault (no Deps at hand) and returns Trove's generic 500.
func internalFault(ctx context.Context, what string, err error) *openapi.Fault {
	id := uuid.NewString()
	slog.Default().ErrorContext(ctx, what, "err", err, "error_id", id)
	return openapi.Errorf(http.StatusInternalServerError,
		"Internal Server Error. Please keep this ID to help us figure out what went wrong: (%s).", id)
}
