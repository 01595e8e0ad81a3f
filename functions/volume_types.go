package functions

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/openapi"
)

func init() { register(VolumeTypes) }

type volumeTypesOutput struct {
	Body struct {
		VolumeTypes []openapi.VolumeType `json:"volume_types"`
	}
}

// VolumeTypes serves the volume types the cloud offers (synced from
// Cinder by jobs.SyncCatalog when the provider has a catalog; none under
// the local provider) as Trove's per-datastore-version list. No version
// restricts its types, so every version lists them all (Trove without
// datastore_version_metadata). The top-level /volume-types that Trove
// removed in 14.0.0 stays absent (404), as there.
func VolumeTypes(api huma.API, deps *Deps) {
	huma.Register(api, huma.Operation{
		OperationID: "list-datastore-version-volume-types", Method: http.MethodGet,
		Path:    "/v1.0/{tenant_id}/datastores/{datastore}/versions/{version}/volume-types",
		Summary: "List the volume types a datastore version's instances may use", Tags: []string{"Datastores"},
		Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *datastoreVersionInput) (*volumeTypesOutput, error) {
		q := deps.queries()
		ds, err := findDatastore(ctx, q, in.Datastore)
		if err != nil {
			return nil, deps.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", in.Datastore))
		}
		if _, err := findVersion(ctx, q, ds, in.Version); err != nil {
			return nil, deps.lookupError(ctx, err, openapi.NotFound("Datastore version '%s' cannot be found.", in.Version))
		}
		return deps.listVolumeTypes(ctx)
	})
}

func (d *Deps) listVolumeTypes(ctx context.Context) (*volumeTypesOutput, error) {
	ts, err := d.queries().ListVolumeTypes(ctx)
	if err != nil {
		return nil, d.internal(ctx, "list volume types", err)
	}
	out := &volumeTypesOutput{}
	out.Body.VolumeTypes = make([]openapi.VolumeType, 0, len(ts))
	for _, t := range ts {
		out.Body.VolumeTypes = append(out.Body.VolumeTypes, volumeTypeView(t))
	}
	return out, nil
}

func volumeTypeView(t store.VolumeType) openapi.VolumeType {
	return openapi.VolumeType{ID: t.ID, Name: t.Name, IsPublic: t.IsPublic, Description: t.Description}
}

// createVolumeType resolves a create's volume.type (a name or an id) to
// the name of a type the cloud offers; none given: "" (the provider's
// default). Unknown: Trove's 400, before anything is created.
func (d *Deps) createVolumeType(ctx context.Context, q *store.Queries, ref *string) (string, error) {
	if ref == nil || *ref == "" {
		return "", nil
	}
	t, err := q.GetVolumeType(ctx, *ref)
	if errors.Is(err, pgx.ErrNoRows) {
		return "", openapi.BadRequest("Volume type '%s' does not exist.", *ref)
	}
	if err != nil {
		return "", d.internal(ctx, "create instance: volume type", fmt.Errorf("volume type %q: %w", *ref, err))
	}
	return t.Name, nil
}
