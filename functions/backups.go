package functions

// Backups (Trove API §7): create, list (per project, per instance, or all
// projects for admins), show, delete, and backup strategies (which
// container a project's or an instance's backups go to). The work is in
// jobs (jobs.StartBackup and the backup workers) and in the guest agent;
// handlers validate, write rows and jobs in one transaction and answer.

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

func init() { register(Backups) }

// backupsPageSize is Trove's backups_page_size.
const backupsPageSize = 20

// maxBackupsPage bounds a client's limit (Trove does not cap it; a bound
// keeps one request from reading every row).
const maxBackupsPage = 1000

// runningBackupsExpire is Trove's running_backups_expires: a backup that
// has been running this long may be deleted.
const runningBackupsExpire = 3 * 24 * time.Hour

// containerPattern is what a container (Swift container, S3 bucket, file
// store directory) may be called.
var containerPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,254}$`)

type backupPathInput struct {
	TenantPath
	BackupID string `path:"backup_id" maxLength:"64"`
}

type backupListInput struct {
	TenantPath
	Limit       int    `query:"limit" minimum:"0" doc:"Page size (default 20)"`
	Marker      string `query:"marker" maxLength:"20" doc:"Offset of the page: the marker of the previous page's next link"`
	Datastore   string `query:"datastore" maxLength:"255" doc:"Only backups of this datastore (name or id)"`
	InstanceID  string `query:"instance_id" maxLength:"64" doc:"Only backups of this instance"`
	ProjectID   string `query:"project_id" maxLength:"255" doc:"Only this project's backups (admin)"`
	AllProjects string `query:"all_projects" maxLength:"16" doc:"True: every project's backups (admin)"`
}

type instanceBackupsInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Limit      int    `query:"limit" minimum:"0" doc:"Page size (default 20)"`
	Marker     string `query:"marker" maxLength:"20" doc:"Offset of the page: the marker of the previous page's next link"`
}

type backupCreateInput struct {
	TenantPath
	Body struct {
		Backup openapi.BackupCreate `json:"backup"`
	}
}

type backupOutput struct {
	Body struct {
		Backup openapi.Backup `json:"backup"`
	}
}

type backupCreateOutput struct {
	Body struct {
		Backup openapi.Backup `json:"backup"`
	}
}

type backupListOutput struct {
	Body struct {
		Backups []openapi.Backup `json:"backups"`
		Links   []openapi.Link   `json:"links,omitempty"`
	}
}

type strategyCreateInput struct {
	TenantPath
	Body struct {
		Strategy openapi.BackupStrategyCreate `json:"backup_strategy"`
	}
}

type strategyQueryInput struct {
	TenantPath
	InstanceID string `query:"instance_id" maxLength:"64" doc:"Only this instance's strategy (delete: \"\" or absent is the project-wide one)"`
	ProjectID  string `query:"project_id" maxLength:"255" doc:"Another project's strategies (admin)"`
}

type strategyOutput struct {
	Body struct {
		Strategy openapi.BackupStrategy `json:"backup_strategy"`
	}
}

type strategyListOutput struct {
	Body struct {
		Strategies []openapi.BackupStrategy `json:"backup_strategies"`
	}
}

// Backups serves backups and backup strategies.
func Backups(api huma.API, deps *Deps) {
	tags := []string{"Backups"}
	huma.Register(api, huma.Operation{
		OperationID: "list-backups", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/backups",
		Summary:     "List backups",
		Description: "Newest update first, 20 per page; the rel=next link's marker is the next page's offset. project_id and all_projects are for admins (403 otherwise).",
		Tags:        tags, Security: tokenSecurity, Errors: []int{http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound},
	}, deps.listBackups)
	huma.Register(api, huma.Operation{
		OperationID: "create-backup", Method: http.MethodPost, Path: "/v1.0/{tenant_id}/backups",
		Summary:     "Create a backup",
		Description: "Answers at once with the backup in NEW; it goes BUILDING, SAVING and COMPLETED (or FAILED, with fail_reason) as the guest streams it, compressed and encrypted, to object storage. The instance shows status BACKUP meanwhile.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors:       []int{http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity, http.StatusNotImplemented},
		MaxBodyBytes: 64 << 10,
	}, deps.createBackup)
	huma.Register(api, huma.Operation{
		OperationID: "show-backup", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/backups/{backup_id}",
		Summary: "Show a backup", Description: "While it runs, bytes_done and estimated_bytes show its progress.",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.showBackup)
	huma.Register(api, huma.Operation{
		OperationID: "delete-backup", Method: http.MethodDelete, Path: "/v1.0/{tenant_id}/backups/{backup_id}",
		Summary:     "Delete a backup",
		Description: "Deletes the backup and its incremental descendants, objects first. Refused (422) while one of them runs, and (409) while an instance is being restored from one.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors: []int{http.StatusNotFound, http.StatusConflict, http.StatusUnprocessableEntity},
	}, deps.deleteBackup)
	huma.Register(api, huma.Operation{
		OperationID: "list-instance-backups", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/instances/{instance_id}/backups",
		Summary: "List an instance's backups", Tags: tags, Security: tokenSecurity,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, deps.listInstanceBackups)

	stags := []string{"Backup strategies"}
	huma.Register(api, huma.Operation{
		OperationID: "create-backup-strategy", Method: http.MethodPost, Path: "/v1.0/{tenant_id}/backup_strategies",
		Summary:     "Create or replace a backup strategy",
		Description: "Sets the container the project's backups (or one instance's, with instance_id) go to.",
		Tags:        stags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound}, MaxBodyBytes: 16 << 10,
	}, deps.createStrategy)
	huma.Register(api, huma.Operation{
		OperationID: "list-backup-strategies", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/backup_strategies",
		Summary: "List backup strategies", Tags: stags, Security: tokenSecurity, Errors: []int{http.StatusForbidden},
	}, deps.listStrategies)
	huma.Register(api, huma.Operation{
		OperationID: "delete-backup-strategies", Method: http.MethodDelete, Path: "/v1.0/{tenant_id}/backup_strategies",
		Summary: "Delete a backup strategy", Description: "The project-wide one, or the instance_id's.",
		Tags: stags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: []int{http.StatusForbidden},
	}, deps.deleteStrategies)
}

// backupRow is a backup with the names its view shows.
type backupRow struct {
	Backup        store.Backup
	VersionName   string
	DatastoreName string
}

func (d *Deps) backupView(r backupRow) openapi.Backup {
	b := r.Backup
	v := openapi.Backup{
		ID: b.ID.String(), Name: b.Name, Created: openapi.Time(b.CreatedAt), Updated: openapi.Time(b.UpdatedAt),
		Status: b.Status, ProjectID: b.ProjectID,
		Datastore: openapi.BackupDatastore{Type: r.DatastoreName, Version: r.VersionName, VersionID: b.DatastoreVersionID.String()},
		BytesDone: b.BytesDone, EstimatedBytes: b.EstimatedBytes,
	}
	if b.Description != "" {
		desc := b.Description
		v.Description = &desc
	}
	if b.InstanceID.Valid {
		id := b.InstanceID.UUID.String()
		v.InstanceID = &id
	}
	if b.ParentID.Valid {
		id := b.ParentID.UUID.String()
		v.ParentID = &id
	}
	if b.Status == jobs.BackupCompleted {
		loc := b.Location + "://" + b.Container + "/" + jobs.ManifestKey(b.Prefix)
		v.LocationRef = &loc
		size := math.Round(float64(b.StoredBytes)/gib*1000) / 1000
		v.Size = &size
	}
	if b.Status == jobs.BackupFailed || b.Status == jobs.BackupDeleteFailed {
		v.FailReason = b.FailReason
	}
	return v
}

// queryText refuses query parameters with control characters (NUL cannot
// even reach PostgreSQL).
func queryText(params map[string]string) *openapi.Fault {
	for name, v := range params {
		if hasControl(v) {
			return openapi.BadRequest("Query parameter %s must not contain control characters.", name)
		}
	}
	return nil
}

func (d *Deps) listBackups(ctx context.Context, in *backupListInput) (*backupListOutput, error) {
	if f := queryText(map[string]string{"datastore": in.Datastore, "instance_id": in.InstanceID, "project_id": in.ProjectID, "marker": in.Marker}); f != nil {
		return nil, f
	}
	all := boolFromString(in.AllProjects)
	if (all || in.ProjectID != "") && !principal(ctx).IsAdmin() {
		return nil, openapi.Errorf(http.StatusForbidden, "Policy doesn't allow backup:index:all_projects to be performed.")
	}
	params := store.ListBackupsParams{ProjectID: pgText(in.TenantID)}
	switch {
	case in.ProjectID != "":
		params.ProjectID = pgText(in.ProjectID)
	case all:
		params.ProjectID = pgtype.Text{}
	}
	if in.InstanceID != "" {
		id, err := uuid.Parse(in.InstanceID)
		if err != nil {
			return emptyBackupList(), nil // matches nothing
		}
		params.InstanceID = uuid.NullUUID{UUID: id, Valid: true}
	}
	if in.Datastore != "" {
		ds, err := findDatastore(ctx, d.queries(), in.Datastore)
		if err != nil {
			return nil, d.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", in.Datastore))
		}
		params.DatastoreID = uuid.NullUUID{UUID: ds.ID, Valid: true}
	}
	q := url.Values{}
	for k, v := range map[string]string{"datastore": in.Datastore, "instance_id": in.InstanceID, "project_id": in.ProjectID, "all_projects": in.AllProjects} {
		if v != "" {
			q.Set(k, v)
		}
	}
	return d.pageBackups(ctx, params, in.Limit, in.Marker, "/v1.0/"+in.TenantID+"/backups", q)
}

func (d *Deps) listInstanceBackups(ctx context.Context, in *instanceBackupsInput) (*backupListOutput, error) {
	inst, err := d.getInstance(ctx, d.queries(), in.TenantID, in.InstanceID)
	if err != nil {
		return nil, err
	}
	params := store.ListBackupsParams{ProjectID: pgText(in.TenantID), InstanceID: uuid.NullUUID{UUID: inst.Instance.ID, Valid: true}}
	return d.pageBackups(ctx, params, in.Limit, in.Marker, "/v1.0/"+in.TenantID+"/instances/"+in.InstanceID+"/backups", url.Values{})
}

func emptyBackupList() *backupListOutput {
	out := &backupListOutput{}
	out.Body.Backups = []openapi.Backup{}
	return out
}

// pageBackups reads one page at offset marker (Trove's backup marker).
func (d *Deps) pageBackups(ctx context.Context, params store.ListBackupsParams, limit int, marker, path string, query url.Values) (*backupListOutput, error) {
	offset := 0
	if marker != "" {
		n, err := strconv.Atoi(marker)
		if err != nil || n < 0 {
			return nil, openapi.BadRequest("Invalid marker '%s': backup markers are offsets (0, 20, 40, ...).", marker)
		}
		offset = n
	}
	size := backupsPageSize
	if limit > 0 {
		size = min(limit, maxBackupsPage)
	}
	params.MaxRows, params.Skip = int32(size+1), int32(offset)
	rows, err := d.queries().ListBackups(ctx, params)
	if err != nil {
		return nil, d.internal(ctx, "list backups", err)
	}
	out := emptyBackupList()
	if len(rows) > size {
		rows = rows[:size]
		if limit > 0 {
			query.Set("limit", strconv.Itoa(limit))
		}
		out.Body.Links = nextLink(ctx, path, query, strconv.Itoa(offset+size))
	}
	for _, r := range rows {
		out.Body.Backups = append(out.Body.Backups, d.backupView(backupRow{Backup: r.Backup, VersionName: r.VersionName, DatastoreName: r.DatastoreName}))
	}
	return out, nil
}

// getBackup reads a live backup of the tenant; anything else is 404.
func (d *Deps) getBackup(ctx context.Context, q *store.Queries, tenant, ref string) (backupRow, error) {
	id, err := uuid.Parse(ref)
	if err != nil {
		return backupRow{}, openapi.NotFound("Backup %s could not be found.", ref)
	}
	r, err := q.GetBackup(ctx, store.GetBackupParams{ID: id, ProjectID: tenant})
	if errors.Is(err, pgx.ErrNoRows) {
		return backupRow{}, openapi.NotFound("Backup %s could not be found.", ref)
	}
	if err != nil {
		return backupRow{}, d.internal(ctx, "show backup", err)
	}
	return backupRow{Backup: r.Backup, VersionName: r.VersionName, DatastoreName: r.DatastoreName}, nil
}

func (d *Deps) showBackup(ctx context.Context, in *backupPathInput) (*backupOutput, error) {
	r, err := d.getBackup(ctx, d.queries(), in.TenantID, in.BackupID)
	if err != nil {
		return nil, err
	}
	out := &backupOutput{}
	out.Body.Backup = d.backupView(r)
	return out, nil
}

func (d *Deps) createBackup(ctx context.Context, in *backupCreateInput) (*backupCreateOutput, error) {
	req := in.Body.Backup
	if req.RestoreFrom != nil {
		return nil, openapi.BadRequest("Importing a backup from another location (restore_from) is not supported by Coffer.")
	}
	if !hasAlnum.MatchString(req.Name) {
		return nil, openapi.BadRequest("Validation error: backup name must contain at least one letter or digit.")
	}
	if req.Instance == "" {
		return nil, openapi.BadRequest("Validation error: backup instance is required.")
	}
	instanceID, err := uuid.Parse(req.Instance)
	if err != nil {
		return nil, openapi.BadRequest("Validation error: backup instance '%s' is not a valid UUID.", req.Instance)
	}
	nb := jobs.NewBackup{ProjectID: in.TenantID, InstanceID: instanceID, Name: req.Name,
		Incremental: req.Incremental != nil && *req.Incremental == 1}
	if req.Description != nil {
		nb.Description = *req.Description
	}
	if req.ParentID != nil && *req.ParentID != "" {
		p, err := uuid.Parse(*req.ParentID)
		if err != nil {
			return nil, openapi.BadRequest("Validation error: backup parent_id '%s' is not a valid UUID.", *req.ParentID)
		}
		nb.ParentID = &p
	}
	if req.SwiftContainer != nil && *req.SwiftContainer != "" {
		if !containerPattern.MatchString(*req.SwiftContainer) {
			return nil, openapi.BadRequest("'%s' is not a valid container name: use letters, digits, '.', '_' or '-', starting with a letter or digit.", *req.SwiftContainer)
		}
		nb.Container = *req.SwiftContainer
	}
	if d.Keys == nil || d.Store == nil {
		return nil, openapi.Errorf(http.StatusNotImplemented, "Backups are not configured in this Coffer deployment.")
	}
	if req.StorageDriver != nil && *req.StorageDriver != "" && *req.StorageDriver != d.Store.Kind() {
		return nil, openapi.BadRequest("Storage driver '%s' is not available: this deployment stores backups in '%s'.", *req.StorageDriver, d.Store.Kind())
	}
	var row backupRow
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		b, err := jobs.StartBackup(ctx, tx, d.River, d.Keys, nb)
		if err != nil {
			return err
		}
		r, err := store.New(tx).GetBackup(ctx, store.GetBackupParams{ID: b.ID, ProjectID: in.TenantID})
		if err != nil {
			return fmt.Errorf("read new backup: %w", err)
		}
		row = backupRow{Backup: r.Backup, VersionName: r.VersionName, DatastoreName: r.DatastoreName}
		return nil
	})
	var fault *openapi.Fault
	if errors.As(err, &fault) {
		return nil, fault
	}
	if err != nil {
		return nil, d.internal(ctx, "create backup", err)
	}
	out := &backupCreateOutput{}
	out.Body.Backup = d.backupView(row)
	return out, nil
}

func (d *Deps) deleteBackup(ctx context.Context, in *backupPathInput) (*struct{}, error) {
	id, err := uuid.Parse(in.BackupID)
	if err != nil {
		return nil, openapi.NotFound("Backup %s could not be found.", in.BackupID)
	}
	var fault *openapi.Fault
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		root, err := q.LockBackup(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (root.ProjectID != in.TenantID || root.DeletedAt != nil)) {
			fault = openapi.NotFound("Backup %s could not be found.", in.BackupID)
			return nil
		}
		if err != nil {
			return err
		}
		if root.DeleteRequestedAt != nil {
			return nil // already on its way
		}
		tree, err := q.BackupSubtree(ctx, id)
		if err != nil {
			return err
		}
		ids := make([]uuid.UUID, 0, len(tree))
		for _, r := range tree {
			// Locked, like the chain an instance create restores, so a
			// restore and a delete of the same backups are serialised.
			b, err := q.LockBackup(ctx, r.Backup.ID)
			if err != nil {
				return err
			}
			if jobs.BackupRunning(b.Status) && d.now().Sub(b.CreatedAt) < runningBackupsExpire {
				if b.ID == id {
					fault = openapi.Errorf(http.StatusUnprocessableEntity, "Backup %s cannot be deleted because it is running.", id)
				} else {
					fault = openapi.Errorf(http.StatusUnprocessableEntity, "Backup %s cannot be deleted because its incremental backup %s is running.", id, b.ID)
				}
				return nil
			}
			ids = append(ids, b.ID)
		}
		restoring, err := q.RestoringInstances(ctx, ids)
		if err != nil {
			return err
		}
		if len(restoring) > 0 {
			fault = openapi.Errorf(http.StatusConflict, "Backup %s cannot be deleted: instance %s is being restored from it (or from an incremental backup over it).",
				id, restoring[0].ID)
			return nil
		}
		if err := q.RequestBackupDelete(ctx, ids); err != nil {
			return err
		}
		if _, err := d.River.InsertTx(ctx, tx, jobs.DeleteBackup{BackupID: id}, nil); err != nil {
			return fmt.Errorf("enqueue delete: %w", err)
		}
		return jobs.InsertEvent(ctx, q, root.ProjectID, "backup.deleting", id, map[string]int{"backups": len(ids)})
	})
	if err != nil {
		return nil, d.internal(ctx, "delete backup", err)
	}
	if fault != nil {
		return nil, fault
	}
	return nil, nil
}

func (d *Deps) strategyView(s store.BackupStrategy) openapi.BackupStrategy {
	backend := "swift"
	if d.Store != nil {
		backend = d.Store.Kind()
	}
	return openapi.BackupStrategy{ProjectID: s.ProjectID, InstanceID: s.InstanceID, Backend: backend, SwiftContainer: s.Container}
}

func (d *Deps) createStrategy(ctx context.Context, in *strategyCreateInput) (*strategyOutput, error) {
	req := in.Body.Strategy
	if !containerPattern.MatchString(req.SwiftContainer) {
		return nil, openapi.BadRequest("'%s' is not a valid container name: use letters, digits, '.', '_' or '-', starting with a letter or digit.", req.SwiftContainer)
	}
	instance := ""
	if req.InstanceID != nil && *req.InstanceID != "" {
		inst, err := d.getInstance(ctx, d.queries(), in.TenantID, *req.InstanceID)
		if err != nil {
			return nil, err
		}
		instance = inst.Instance.ID.String()
	}
	s, err := d.queries().UpsertBackupStrategy(ctx, store.UpsertBackupStrategyParams{ProjectID: in.TenantID, InstanceID: instance, Container: req.SwiftContainer})
	if err != nil {
		return nil, d.internal(ctx, "create backup strategy", err)
	}
	out := &strategyOutput{}
	out.Body.Strategy = d.strategyView(s)
	return out, nil
}

// strategyProject is the project a strategy query is about: another
// project's needs the admin role.
func strategyProject(ctx context.Context, in *strategyQueryInput, action string) (string, *openapi.Fault) {
	if f := queryText(map[string]string{"instance_id": in.InstanceID, "project_id": in.ProjectID}); f != nil {
		return "", f
	}
	if in.ProjectID == "" || in.ProjectID == in.TenantID {
		return in.TenantID, nil
	}
	if !principal(ctx).IsAdmin() {
		return "", openapi.Errorf(http.StatusForbidden, "Policy doesn't allow backup_strategy:%s to be performed.", action)
	}
	return in.ProjectID, nil
}

func (d *Deps) listStrategies(ctx context.Context, in *strategyQueryInput) (*strategyListOutput, error) {
	project, f := strategyProject(ctx, in, "index")
	if f != nil {
		return nil, f
	}
	params := store.ListBackupStrategiesParams{ProjectID: project}
	if in.InstanceID != "" {
		params.InstanceID = pgText(in.InstanceID)
	}
	rows, err := d.queries().ListBackupStrategies(ctx, params)
	if err != nil {
		return nil, d.internal(ctx, "list backup strategies", err)
	}
	out := &strategyListOutput{}
	out.Body.Strategies = []openapi.BackupStrategy{}
	for _, s := range rows {
		out.Body.Strategies = append(out.Body.Strategies, d.strategyView(s))
	}
	return out, nil
}

func (d *Deps) deleteStrategies(ctx context.Context, in *strategyQueryInput) (*struct{}, error) {
	project, f := strategyProject(ctx, in, "delete")
	if f != nil {
		return nil, f
	}
	// Trove: no instance_id means the project-wide strategy ("").
	if err := d.queries().DeleteBackupStrategies(ctx, store.DeleteBackupStrategiesParams{ProjectID: project, InstanceID: pgText(in.InstanceID)}); err != nil {
		return nil, d.internal(ctx, "delete backup strategies", err)
	}
	return nil, nil
}

// boolFromString is oslo's bool_from_string: Trove's query booleans (the
// client sends Python's "True"/"False").
func boolFromString(s string) bool {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "1", "t", "true", "on", "y", "yes":
		return true
	}
	return false
}

// pgText is a nullable text parameter that is set.
func pgText(s string) pgtype.Text { return pgtype.Text{String: s, Valid: true} }
