package functions

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/openapi"
)

type datastoresOutput struct {
	Body struct {
		Datastores []openapi.Datastore `json:"datastores"`
	}
}

type datastoreOutput struct {
	Body struct {
		Datastore openapi.Datastore `json:"datastore"`
	}
}

type versionsListOutput struct {
	Body struct {
		Versions []openapi.DatastoreVersion `json:"versions"`
	}
}

type datastoreVersionOutput struct {
	Body struct {
		Version openapi.DatastoreVersion `json:"version"`
	}
}

type datastoreInput struct {
	TenantPath
	Datastore string `path:"datastore" doc:"Datastore name or id" maxLength:"255"`
}

type datastoreVersionInput struct {
	TenantPath
	Datastore string `path:"datastore" doc:"Datastore name or id" maxLength:"255"`
	Version   string `path:"version" doc:"Version name, number or id" maxLength:"255"`
}

// Datastores serves the datastore catalog: engines and their versions.
// Non-admins see only active versions and datastores that have one.
func Datastores(api huma.API, deps *Deps) {
	tags := []string{"Datastores"}
	huma.Register(api, huma.Operation{
		OperationID: "list-datastores", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/datastores",
		Summary: "List datastores", Tags: tags, Security: tokenSecurity,
	}, func(ctx context.Context, in *TenantPath) (*datastoresOutput, error) {
		q := deps.queries()
		dss, err := q.ListDatastores(ctx)
		if err != nil {
			return nil, deps.internal(ctx, "list datastores", err)
		}
		out := &datastoresOutput{}
		out.Body.Datastores = []openapi.Datastore{}
		for _, ds := range dss {
			view, err := deps.datastoreView(ctx, q, in.TenantID, ds, principal(ctx).IsAdmin())
			if err != nil {
				return nil, deps.internal(ctx, "list datastore versions", err)
			}
			if len(view.Versions) == 0 && !principal(ctx).IsAdmin() {
				continue
			}
			out.Body.Datastores = append(out.Body.Datastores, view)
		}
		return out, nil
	})
	huma.Register(api, huma.Operation{
		OperationID: "show-datastore", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/datastores/{datastore}",
		Summary: "Show a datastore", Tags: tags, Security: tokenSecurity,
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *datastoreInput) (*datastoreOutput, error) {
		q := deps.queries()
		ds, err := findDatastore(ctx, q, in.Datastore)
		if err != nil {
			return nil, deps.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", in.Datastore))
		}
		// The embedded list shows active versions only, for every caller.
		view, err := deps.datastoreView(ctx, q, in.TenantID, ds, false)
		if err != nil {
			return nil, deps.internal(ctx, "show datastore", err)
		}
		out := &datastoreOutput{}
		out.Body.Datastore = view
		return out, nil
	})
	huma.Register(api, huma.Operation{
		OperationID: "list-datastore-versions", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/datastores/{datastore}/versions",
		Summary: "List a datastore's versions", Tags: tags, Security: tokenSecurity,
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *datastoreInput) (*versionsListOutput, error) {
		q := deps.queries()
		ds, err := findDatastore(ctx, q, in.Datastore)
		if err != nil {
			return nil, deps.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", in.Datastore))
		}
		versions, err := q.ListDatastoreVersions(ctx, ds.ID)
		if err != nil {
			return nil, deps.internal(ctx, "list datastore versions", err)
		}
		admin := principal(ctx).IsAdmin()
		out := &versionsListOutput{}
		out.Body.Versions = []openapi.DatastoreVersion{}
		for _, v := range versions {
			if v.Active || admin {
				out.Body.Versions = append(out.Body.Versions, versionView(ctx, in.TenantID, v, admin))
			}
		}
		return out, nil
	})
	huma.Register(api, huma.Operation{
		OperationID: "show-datastore-version", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}",
		Summary: "Show a datastore version", Tags: tags, Security: tokenSecurity,
		Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *datastoreVersionInput) (*datastoreVersionOutput, error) {
		q := deps.queries()
		ds, err := findDatastore(ctx, q, in.Datastore)
		if err != nil {
			return nil, deps.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", in.Datastore))
		}
		v, err := findVersion(ctx, q, ds, in.Version)
		if err != nil {
			return nil, deps.lookupError(ctx, err, openapi.NotFound("Datastore version '%s' cannot be found.", in.Version))
		}
		out := &datastoreVersionOutput{}
		out.Body.Version = versionView(ctx, in.TenantID, v, principal(ctx).IsAdmin())
		return out, nil
	})
}

func (d *Deps) datastoreView(ctx context.Context, q *store.Queries, tenant string, ds store.Datastore, includeInactive bool) (openapi.Datastore, error) {
	versions, err := q.ListDatastoreVersions(ctx, ds.ID)
	if err != nil {
		return openapi.Datastore{}, err
	}
	view := openapi.Datastore{ID: ds.ID.String(), Name: ds.Name, Links: links(ctx, tenant, "datastores", ds.ID.String()),
		Versions: []openapi.DatastoreVersion{}}
	for _, v := range versions {
		if !v.Active && !includeInactive {
			continue
		}
		vv := versionView(ctx, tenant, v, false)
		vv.Datastore = "" // not shown when embedded
		view.Versions = append(view.Versions, vv)
		if ds.DefaultVersionID.Valid && ds.DefaultVersionID.UUID == v.ID {
			view.DefaultVersion = v.ID.String()
		}
	}
	return view, nil
}

func versionView(ctx context.Context, tenant string, v store.DatastoreVersion, admin bool) openapi.DatastoreVersion {
	view := openapi.DatastoreVersion{ID: v.ID.String(), Name: v.Name, Version: v.Version, Datastore: v.DatastoreID.String(),
		Links: links(ctx, tenant, "datastores/versions", v.ID.String())}
	if admin {
		active, image := v.Active, v.Image
		view.Active, view.Image = &active, &image
	}
	return view
}

// errNotFound marks a lookup that found nothing.
var errNotFound = errors.New("not found")

// findDatastore looks a datastore up by id or name.
func findDatastore(ctx context.Context, q *store.Queries, ref string) (store.Datastore, error) {
	if id, err := uuid.Parse(ref); err == nil {
		ds, err := q.GetDatastoreByID(ctx, id)
		if err == nil || !errors.Is(err, pgx.ErrNoRows) {
			return ds, err
		}
	}
	ds, err := q.GetDatastoreByName(ctx, ref)
	if errors.Is(err, pgx.ErrNoRows) {
		return ds, errNotFound
	}
	return ds, err
}

// findVersion looks a version of ds up by id, name or version number.
func findVersion(ctx context.Context, q *store.Queries, ds store.Datastore, ref string) (store.DatastoreVersion, error) {
	if id, err := uuid.Parse(ref); err == nil {
		v, err := q.GetDatastoreVersion(ctx, id)
		if err == nil && v.DatastoreID == ds.ID {
			return v, nil
		}
		if err != nil && !errors.Is(err, pgx.ErrNoRows) {
			return v, err
		}
	}
	vs, err := q.GetDatastoreVersionByName(ctx, store.GetDatastoreVersionByNameParams{DatastoreID: ds.ID, Name: ref})
	if err != nil {
		return store.DatastoreVersion{}, err
	}
	switch len(vs) {
	case 0:
		return store.DatastoreVersion{}, errNotFound
	case 1:
		return vs[0], nil
	}
	for _, v := range vs { // an exact name match beats a version-number match
		if v.Name == ref {
			return v, nil
		}
	}
	return store.DatastoreVersion{}, fmt.Errorf("%w: multiple datastore versions found for '%s'", errAmbiguous, ref)
}

var errAmbiguous = errors.New("ambiguous")

// lookupError answers a failed lookup: notFound for a miss, 400 for an
// ambiguous name, 500 (logged) otherwise.
func (d *Deps) lookupError(ctx context.Context, err error, notFound *openapi.Fault) error {
	switch {
	case errors.Is(err, errNotFound), errors.Is(err, pgx.ErrNoRows):
		return notFound
	case errors.Is(err, errAmbiguous):
		return openapi.BadRequest("%s", err.Error())
	}
	return d.internal(ctx, "lookup", err)
}

// internal logs an unexpected error and answers Trove's generic 500 with an
// id to find the log line by.
func (d *Deps) internal(ctx context.Context, what string, err error) error {
	id := uuid.NewString()
	d.Logger.ErrorContext(ctx, what, "err", err, "error_id", id)
	return openapi.Errorf(http.StatusInternalServerError,
		"Internal Server Error. Please keep this ID to help us figure out what went wrong: (%s).", id)
}
