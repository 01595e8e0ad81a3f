package functions

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/seed"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Datastore and datastore-version management (admin): what `openstack
// datastore version create/set/delete` and `datastore delete` call. The
// management routes answer non-admins 401 (Trove's admin_context);
// deleting a datastore is a policy check, 403.

func init() { register(MgmtDatastores) }

// datastoreManagers are the managers a version may name: those Coffer has
// (or will have) a guest driver for.
var datastoreManagers = map[string]bool{"postgresql": true, "mariadb": true, "mysql": true, "redis": true}

type mgmtVersionInput struct {
	TenantPath
	VersionID string `path:"version_id" maxLength:"64"`
}

type mgmtVersionCreateInput struct {
	TenantPath
	Body struct {
		Version openapi.MgmtDatastoreVersionCreate `json:"version"`
	}
}

type mgmtVersionPatchInput struct {
	TenantPath
	VersionID string `path:"version_id" maxLength:"64"`
	Body      openapi.MgmtDatastoreVersionPatch
}

type mgmtVersionOutput struct {
	Body struct {
		Version openapi.MgmtDatastoreVersion `json:"version"`
	}
}

type mgmtVersionsOutput struct {
	Body struct {
		Versions []openapi.MgmtDatastoreVersion `json:"versions"`
	}
}

// MgmtDatastores serves datastore-version management and datastore delete.
func MgmtDatastores(api huma.API, deps *Deps) {
	tags := []string{"Management"}
	base := "/v1.0/{tenant_id}/mgmt/datastore-versions"
	errs := []int{http.StatusBadRequest, http.StatusUnauthorized}
	huma.Register(api, huma.Operation{
		OperationID: "mgmt-create-datastore-version", Method: http.MethodPost, Path: base,
		Summary: "Create a datastore version (admin)", Description: "The datastore is created if its name is new. An image id or image tags are required.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: errs, MaxBodyBytes: 64 << 10,
	}, deps.createDatastoreVersion)
	huma.Register(api, huma.Operation{
		OperationID: "mgmt-list-datastore-versions", Method: http.MethodGet, Path: base,
		Summary: "List every datastore version (admin)", Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusUnauthorized},
	}, func(ctx context.Context, in *TenantPath) (*mgmtVersionsOutput, error) {
		if f := adminOnly(ctx); f != nil {
			return nil, f
		}
		rows, err := deps.queries().ListMgmtDatastoreVersions(ctx)
		if err != nil {
			return nil, deps.internal(ctx, "list datastore versions", err)
		}
		out := &mgmtVersionsOutput{}
		out.Body.Versions = make([]openapi.MgmtDatastoreVersion, 0, len(rows))
		for _, r := range rows {
			out.Body.Versions = append(out.Body.Versions, mgmtVersionView(r.DatastoreVersion, r.DatastoreName, r.IsDefault))
		}
		return out, nil
	})
	huma.Register(api, huma.Operation{
		OperationID: "mgmt-show-datastore-version", Method: http.MethodGet, Path: base + "/{version_id}",
		Summary: "Show a datastore version (admin)", Tags: tags, Security: tokenSecurity, Errors: errs,
	}, func(ctx context.Context, in *mgmtVersionInput) (*mgmtVersionOutput, error) {
		if f := adminOnly(ctx); f != nil {
			return nil, f
		}
		r, err := deps.mgmtVersion(ctx, deps.queries(), in.VersionID)
		if err != nil {
			return nil, err
		}
		out := &mgmtVersionOutput{}
		out.Body.Version = mgmtVersionView(r.DatastoreVersion, r.DatastoreName, r.IsDefault)
		return out, nil
	})
	huma.Register(api, huma.Operation{
		OperationID: "mgmt-update-datastore-version", Method: http.MethodPatch, Path: base + "/{version_id}",
		Summary: "Change a datastore version (admin)", Description: "The body is not wrapped: any of datastore_manager, image, image_tags, packages, registry_ext, repl_strategy, active, default, name.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: errs, MaxBodyBytes: 64 << 10,
	}, deps.patchDatastoreVersion)
	huma.Register(api, huma.Operation{
		OperationID: "mgmt-delete-datastore-version", Method: http.MethodDelete, Path: base + "/{version_id}",
		Summary: "Delete a datastore version (admin)", Description: "Refused (400) while instances or configuration groups use it; its configuration parameters go with it.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: errs,
	}, deps.deleteDatastoreVersion)
	huma.Register(api, huma.Operation{
		OperationID: "delete-datastore", Method: http.MethodDelete, Path: "/v1.0/{tenant_id}/datastores/{datastore}",
		Summary: "Delete a datastore (admin)", Description: "Refused (400) while it has versions.",
		Tags: []string{"Datastores"}, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors: []int{http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound},
	}, deps.deleteDatastore)
}

// mgmtVersionView renders a version for the management API. Empty lists
// are [""], as Trove splits an empty stored string.
func mgmtVersionView(v store.DatastoreVersion, datastore string, isDefault bool) openapi.MgmtDatastoreVersion {
	orBlank := func(l []string) []string {
		if len(l) == 0 {
			return []string{""}
		}
		return l
	}
	return openapi.MgmtDatastoreVersion{ID: v.ID.String(), Name: v.Name, Version: v.Version,
		DatastoreID: v.DatastoreID.String(), DatastoreName: datastore, DatastoreManager: v.Manager,
		Image: v.Image, ImageTags: orBlank(v.ImageTags), Packages: orBlank(v.Packages), Active: v.Active,
		RegistryExt: v.RegistryExt, ReplStrategy: v.ReplStrategy, Default: isDefault}
}

func (d *Deps) mgmtVersion(ctx context.Context, q *store.Queries, ref string) (store.GetMgmtDatastoreVersionRow, error) {
	id, err := uuid.Parse(ref)
	if err != nil {
		return store.GetMgmtDatastoreVersionRow{}, openapi.BadRequest("Datastore version '%s' cannot be found.", ref)
	}
	r, err := q.GetMgmtDatastoreVersion(ctx, id)
	if err != nil {
		return r, d.lookupError(ctx, err, openapi.BadRequest("Datastore version '%s' cannot be found.", ref))
	}
	return r, nil
}

// checkImage validates image and image_tags as Trove's schema does.
func checkImage(image *string, tags []string) *openapi.Fault {
	if image != nil && *image != "" {
		if _, err := uuid.Parse(*image); err != nil {
			return openapi.BadRequest("Validation error: version image '%s' is not a valid image id.", *image)
		}
	}
	for _, t := range tags {
		if len(t) > 20 {
			return openapi.BadRequest("Validation error: version image_tags: '%s' is longer than 20 characters.", t)
		}
	}
	return nil
}

func (d *Deps) createDatastoreVersion(ctx context.Context, in *mgmtVersionCreateInput) (*struct{}, error) {
	if f := adminOnly(ctx); f != nil {
		return nil, f
	}
	req := in.Body.Version
	if req.Image == "" && len(req.ImageTags) == 0 {
		return nil, openapi.BadRequest("The image id or image tags must be specified.")
	}
	if f := checkImage(&req.Image, req.ImageTags); f != nil {
		return nil, f
	}
	if !datastoreManagers[req.DatastoreManager] {
		return nil, openapi.BadRequest("Datastore manager '%s' is not supported (supported: mariadb, mysql, postgresql, redis).", req.DatastoreManager)
	}
	version := req.Version
	if version == "" {
		version = req.Name
	}
	rules, _, err := seed.RulesFor(req.DatastoreManager)
	if err != nil {
		return nil, d.internal(ctx, "create datastore version: rules", err)
	}
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		ds, err := q.GetDatastoreByName(ctx, req.DatastoreName)
		if errors.Is(err, pgx.ErrNoRows) {
			ds, err = q.UpsertDatastore(ctx, store.UpsertDatastoreParams{ID: uuid.New(), Name: req.DatastoreName})
		}
		if err != nil {
			return fmt.Errorf("datastore %s: %w", req.DatastoreName, err)
		}
		existing, err := q.GetDatastoreVersionByName(ctx, store.GetDatastoreVersionByNameParams{DatastoreID: ds.ID, Name: req.Name})
		if err != nil {
			return err
		}
		for _, v := range existing {
			if v.Name == req.Name {
				return openapi.BadRequest("Datastore version '%s' already exists for datastore '%s'.", req.Name, ds.Name)
			}
		}
		v, err := q.InsertDatastoreVersion(ctx, store.InsertDatastoreVersionParams{
			ID: uuid.New(), DatastoreID: ds.ID, Name: req.Name, Version: version, Manager: req.DatastoreManager,
			Active: req.Active, Image: req.Image, ImageTags: nonNil(req.ImageTags), Packages: nonNil(req.Packages),
			RegistryExt: req.RegistryExt, ReplStrategy: req.ReplStrategy,
		})
		if err != nil {
			return fmt.Errorf("insert datastore version: %w", err)
		}
		if req.Default {
			if err := q.SetDatastoreDefaultVersion(ctx, store.SetDatastoreDefaultVersionParams{
				ID: ds.ID, DefaultVersionID: uuid.NullUUID{UUID: v.ID, Valid: true}}); err != nil {
				return err
			}
		}
		// Its configuration parameters, as the seed loads them for every
		// version of a manager with validation rules.
		return seed.LoadParameters(ctx, q, v.ID, rules)
	})
	return nil, d.mgmtError(ctx, "create datastore version", err)
}

func nonNil(l []string) []string {
	if l == nil {
		return []string{}
	}
	return l
}

// mgmtError passes Faults through, turns a unique violation into 400 and
// anything else into a logged 500.
func (d *Deps) mgmtError(ctx context.Context, what string, err error) error {
	var f *openapi.Fault
	var pgErr *pgconn.PgError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &f):
		return f
	case errors.As(err, &pgErr) && pgErr.Code == "23505":
		return openapi.BadRequest("A datastore version with this name already exists for the datastore.")
	}
	return d.internal(ctx, what, err)
}

func (d *Deps) patchDatastoreVersion(ctx context.Context, in *mgmtVersionPatchInput) (*struct{}, error) {
	if f := adminOnly(ctx); f != nil {
		return nil, f
	}
	p := in.Body
	if f := checkImage(p.Image, p.ImageTags); f != nil {
		return nil, f
	}
	if p.DatastoreManager != nil && !datastoreManagers[*p.DatastoreManager] {
		return nil, openapi.BadRequest("Datastore manager '%s' is not supported (supported: mariadb, mysql, postgresql, redis).", *p.DatastoreManager)
	}
	err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		r, err := d.mgmtVersion(ctx, q, in.VersionID)
		if err != nil {
			return err
		}
		v := r.DatastoreVersion
		u := store.UpdateDatastoreVersionParams{ID: v.ID, Name: v.Name, Manager: v.Manager, Active: v.Active, Image: v.Image,
			ImageTags: v.ImageTags, Packages: v.Packages, RegistryExt: v.RegistryExt, ReplStrategy: v.ReplStrategy}
		set := func(dst *string, src *string) {
			if src != nil {
				*dst = *src
			}
		}
		set(&u.Name, p.Name)
		set(&u.Manager, p.DatastoreManager)
		set(&u.Image, p.Image)
		set(&u.RegistryExt, p.RegistryExt)
		set(&u.ReplStrategy, p.ReplStrategy)
		if p.Active != nil {
			u.Active = *p.Active
		}
		if p.ImageTags != nil {
			u.ImageTags = p.ImageTags
		}
		if p.Packages != nil {
			u.Packages = p.Packages
		}
		if u.Image == "" && len(u.ImageTags) == 0 && (p.Image != nil || p.ImageTags != nil) {
			return openapi.BadRequest("The image id or image tags must be specified.")
		}
		if _, err := q.UpdateDatastoreVersion(ctx, u); err != nil {
			return fmt.Errorf("update datastore version: %w", err)
		}
		if p.Default != nil {
			ds, err := q.LockDatastore(ctx, v.DatastoreID)
			if err != nil {
				return err
			}
			switch {
			case *p.Default:
				err = q.SetDatastoreDefaultVersion(ctx, store.SetDatastoreDefaultVersionParams{ID: ds.ID, DefaultVersionID: uuid.NullUUID{UUID: v.ID, Valid: true}})
			case ds.DefaultVersionID.Valid && ds.DefaultVersionID.UUID == v.ID:
				err = q.SetDatastoreDefaultVersion(ctx, store.SetDatastoreDefaultVersionParams{ID: ds.ID})
			}
			if err != nil {
				return err
			}
		}
		if p.DatastoreManager != nil && *p.DatastoreManager != v.Manager {
			rules, _, err := seed.RulesFor(*p.DatastoreManager)
			if err != nil {
				return err
			}
			return seed.LoadParameters(ctx, q, v.ID, rules)
		}
		return nil
	})
	return nil, d.mgmtError(ctx, "update datastore version", err)
}

func (d *Deps) deleteDatastoreVersion(ctx context.Context, in *mgmtVersionInput) (*struct{}, error) {
	if f := adminOnly(ctx); f != nil {
		return nil, f
	}
	err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		r, err := d.mgmtVersion(ctx, q, in.VersionID)
		if err != nil {
			return err
		}
		v := r.DatastoreVersion
		ds, err := q.LockDatastore(ctx, v.DatastoreID)
		if err != nil {
			return err
		}
		inUse, err := q.DatastoreVersionInUse(ctx, v.ID)
		if err != nil {
			return err
		}
		if inUse {
			return openapi.BadRequest("Datastore version '%s' is in use by instances or configuration groups and cannot be deleted.", v.Name)
		}
		if ds.DefaultVersionID.Valid && ds.DefaultVersionID.UUID == v.ID {
			if err := q.SetDatastoreDefaultVersion(ctx, store.SetDatastoreDefaultVersionParams{ID: ds.ID}); err != nil {
				return err
			}
		}
		// Its configuration parameters go with it (ON DELETE CASCADE).
		return q.DeleteDatastoreVersion(ctx, v.ID)
	})
	return nil, d.mgmtError(ctx, "delete datastore version", err)
}

func (d *Deps) deleteDatastore(ctx context.Context, in *datastoreInput) (*struct{}, error) {
	if !principal(ctx).IsAdmin() {
		return nil, openapi.Errorf(http.StatusForbidden, "Policy doesn't allow datastore:delete to be performed.")
	}
	err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		found, err := findDatastore(ctx, q, in.Datastore)
		if err != nil {
			return d.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", in.Datastore))
		}
		ds, err := q.LockDatastore(ctx, found.ID)
		if err != nil {
			return err
		}
		n, err := q.CountDatastoreVersions(ctx, ds.ID)
		if err != nil {
			return err
		}
		if n > 0 {
			return openapi.BadRequest("Datastore versions exist for datastore %s.", in.Datastore)
		}
		return q.DeleteDatastore(ctx, ds.ID)
	})
	return nil, d.mgmtError(ctx, "delete datastore", err)
}
