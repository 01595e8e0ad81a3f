package functions

import (
	"context"
	"errors"
	"net/http"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/openapi"
)

type flavorsOutput struct {
	Body struct {
		Flavors []openapi.Flavor `json:"flavors"`
	}
}

type flavorOutput struct {
	Body struct {
		Flavor openapi.Flavor `json:"flavor"`
	}
}

type flavorInput struct {
	TenantPath
	FlavorID string `path:"flavor_id" maxLength:"255"`
}

// Flavors serves the flavor catalog (no pagination, as Trove).
func Flavors(api huma.API, deps *Deps) {
	tags := []string{"Flavors"}
	huma.Register(api, huma.Operation{
		OperationID: "list-flavors", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/flavors",
		Summary: "List flavors", Tags: tags, Security: tokenSecurity,
	}, func(ctx context.Context, in *TenantPath) (*flavorsOutput, error) {
		fs, err := deps.queries().ListOfferedFlavors(ctx)
		if err != nil {
			return nil, deps.internal(ctx, "list flavors", err)
		}
		out := &flavorsOutput{}
		out.Body.Flavors = make([]openapi.Flavor, 0, len(fs))
		for _, f := range fs {
			out.Body.Flavors = append(out.Body.Flavors, flavorView(ctx, in.TenantID, f))
		}
		return out, nil
	})
	huma.Register(api, huma.Operation{
		OperationID: "show-flavor", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/flavors/{flavor_id}",
		Summary: "Show a flavor", Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, func(ctx context.Context, in *flavorInput) (*flavorOutput, error) {
		f, err := deps.queries().GetFlavor(ctx, in.FlavorID)
		if errors.Is(err, pgx.ErrNoRows) {
			return nil, openapi.NotFound("Resource %s cannot be found.", in.FlavorID)
		}
		if err != nil {
			return nil, deps.internal(ctx, "show flavor", err)
		}
		out := &flavorOutput{}
		out.Body.Flavor = flavorView(ctx, in.TenantID, f)
		return out, nil
	})
}

func flavorView(ctx context.Context, tenant string, f store.Flavor) openapi.Flavor {
	return openapi.Flavor{ID: flavorID(f.ID), StrID: f.ID, Name: f.Name, RAM: int(f.RamMb), VCPUs: int(f.Vcpus),
		Disk: int(f.DiskGb), Ephemeral: int(f.Ephemeral), Links: links(ctx, tenant, "flavors", f.ID)}
}
