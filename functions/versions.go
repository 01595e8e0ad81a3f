package functions

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/coffer-dbaas/coffer/openapi"
)

type versionsOutput struct {
	Body struct {
		Versions []openapi.Version `json:"versions"`
	}
}

type versionOutput struct {
	Body struct {
		Version openapi.Version `json:"version"`
	}
}

func v1(ctx context.Context) openapi.Version {
	return openapi.Version{ID: "v1.0", Status: "CURRENT", Updated: "2012-08-01T00:00:00Z",
		Links: []openapi.Link{{Rel: "self", Href: baseURL(ctx) + "/v1.0/"}}}
}

// Versions serves GET / (no authentication) and GET /v1.0/.
func Versions(api huma.API, deps *Deps) {
	huma.Register(api, huma.Operation{
		OperationID: "list-versions", Method: http.MethodGet, Path: "/",
		Summary: "List API versions", Tags: []string{"Versions"},
	}, func(ctx context.Context, _ *struct{}) (*versionsOutput, error) {
		out := &versionsOutput{}
		out.Body.Versions = []openapi.Version{v1(ctx)}
		return out, nil
	})
	huma.Register(api, huma.Operation{
		OperationID: "show-version", Method: http.MethodGet, Path: "/v1.0/",
		Summary: "Show API version 1.0", Tags: []string{"Versions"}, Security: tokenSecurity,
	}, func(ctx context.Context, _ *struct{}) (*versionOutput, error) {
		out := &versionOutput{}
		out.Body.Version = v1(ctx)
		return out, nil
	})
}
