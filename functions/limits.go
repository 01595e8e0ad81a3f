package functions

import (
	"context"
	"net/http"

	"github.com/danielgtaylor/huma/v2"

	"github.com/coffer-dbaas/coffer/openapi"
)

func init() { register(Limits) }

type limitsOutput struct {
	Body struct {
		Limits []openapi.Limit `json:"limits"`
	}
}

// Limits serves GET /limits: the project's absolute limits (its quotas)
// first, then its rate limits.
func Limits(api huma.API, deps *Deps) {
	huma.Register(api, huma.Operation{
		OperationID: "list-limits", Method: http.MethodGet, Path: "/v1.0/{tenant_id}/limits",
		Summary: "List the project's limits", Description: "The first element is the absolute limits (verb ABSOLUTE: max_instances, max_ram, max_backups, max_volumes; -1 is unlimited); the others are rate limits per HTTP verb.",
		Tags: []string{"Quotas and limits"}, Security: tokenSecurity,
	}, func(ctx context.Context, in *TenantPath) (*limitsOutput, error) {
		limits, err := projectQuotas(ctx, deps.queries(), in.TenantID)
		if err != nil {
			return nil, deps.internal(ctx, "list limits", err)
		}
		abs := openapi.Limit{Verb: "ABSOLUTE"}
		for _, l := range []struct {
			out      **int64
			resource string
		}{{&abs.MaxInstances, quotaInstances}, {&abs.MaxRAM, quotaRAM}, {&abs.MaxBackups, quotaBackups}, {&abs.MaxVolumes, quotaVolumes}} {
			v := limits[l.resource]
			*l.out = &v
		}
		out := &limitsOutput{}
		out.Body.Limits = []openapi.Limit{abs}
		// The rate limits with the project's standing (none when rate
		// limiting is off).
		rates, err := deps.RateLimit.Limits(ctx, in.TenantID)
		if err != nil {
			return nil, deps.internal(ctx, "list limits", err)
		}
		for _, r := range rates {
			value, remaining := int64(r.Value), int64(r.Remaining)
			out.Body.Limits = append(out.Body.Limits, openapi.Limit{Verb: r.Verb, URI: r.URI, Regex: r.Regex,
				Value: &value, Unit: r.Unit, Remaining: &remaining, NextAvailable: r.NextAvailable.UTC().Format("2006-01-02T15:04:05Z")})
		}
		return out, nil
	})
}
