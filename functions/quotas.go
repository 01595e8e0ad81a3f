package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/quota"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Quotas limit what a project may hold: instances, their memory (MB) and
// volume space (GB), and backups. A project's limit is its row in the
// quota table or else the default. Checks run inside the transaction that
// creates the resource, under a per-project lock (checkQuota), so
// concurrent creates never exceed a limit.

func init() { register(Quotas) }

// The quota code itself is in internal/quota, shared with the jobs that
// create backups.
const (
	quotaInstances = quota.Instances
	quotaRAM       = quota.RAM
	quotaBackups   = quota.Backups
	quotaVolumes   = quota.Volumes
)

var (
	quotaResources = quota.Resources
	projectQuotas  = quota.Limits
	projectUsage   = quota.Usage
	checkQuota     = quota.Check
)

type quotaInput struct {
	TenantPath
	ProjectID string `path:"project_id" maxLength:"255" doc:"The project whose quotas to show or set"`
}

type quotaUpdateInput struct {
	TenantPath
	ProjectID string `path:"project_id" maxLength:"255" doc:"The project whose quotas to set"`
	Body      struct {
		Quotas map[string]json.RawMessage `json:"quotas" doc:"Resource (instances, ram, backups, volumes) → new limit, an integer >= -1 (-1: unlimited); null values are skipped"`
	}
}

type quotaShowOutput struct {
	Body struct {
		Quotas []openapi.QuotaUsage `json:"quotas"`
	}
}

type quotaUpdateOutput struct {
	Body struct {
		Quotas map[string]int64 `json:"quotas"`
	}
}

// Quotas serves the management quota routes.
func Quotas(api huma.API, deps *Deps) {
	tags := []string{"Quotas and limits"}
	path := "/v1.0/{tenant_id}/mgmt/quotas/{project_id}"
	huma.Register(api, huma.Operation{
		OperationID: "show-quotas", Method: http.MethodGet, Path: path,
		Summary: "Show a project's quotas and usage", Description: "Any caller may read its own project's; another project's needs the admin role (403).",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusForbidden},
	}, deps.showQuotas)
	huma.Register(api, huma.Operation{
		OperationID: "update-quotas", Method: http.MethodPut, Path: path,
		Summary: "Set a project's quotas (admin)", Description: "Answers the limits that were set. Non-admins get Trove's 401.",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusBadRequest, http.StatusUnauthorized, http.StatusNotFound},
		MaxBodyBytes: 16 << 10,
	}, deps.updateQuotas)
}

func (d *Deps) showQuotas(ctx context.Context, in *quotaInput) (*quotaShowOutput, error) {
	if in.ProjectID != in.TenantID && !principal(ctx).IsAdmin() {
		return nil, openapi.Errorf(http.StatusForbidden, "Operation not allowed for tenant %s.", in.TenantID)
	}
	q := d.queries()
	limits, err := projectQuotas(ctx, q, in.ProjectID)
	if err != nil {
		return nil, d.internal(ctx, "show quotas", err)
	}
	usage, err := projectUsage(ctx, q, in.ProjectID)
	if err != nil {
		return nil, d.internal(ctx, "show quotas", err)
	}
	out := &quotaShowOutput{}
	for _, r := range quotaResources {
		out.Body.Quotas = append(out.Body.Quotas, openapi.QuotaUsage{Resource: r, InUse: usage[r], Limit: limits[r]})
	}
	return out, nil
}

// adminOnly is Trove's admin_context check of the management routes:
// 401, not 403.
func adminOnly(ctx context.Context) *openapi.Fault {
	if principal(ctx).IsAdmin() {
		return nil
	}
	return openapi.Errorf(http.StatusUnauthorized, "User does not have admin privileges.")
}

func (d *Deps) updateQuotas(ctx context.Context, in *quotaUpdateInput) (*quotaUpdateOutput, error) {
	if f := adminOnly(ctx); f != nil {
		return nil, f
	}
	if in.Body.Quotas == nil {
		return nil, openapi.BadRequest("Validation error: quotas is required.")
	}
	known := map[string]bool{}
	for _, r := range quotaResources {
		known[r] = true
	}
	// Everything is checked before anything is written.
	set := map[string]int64{}
	for r, raw := range in.Body.Quotas {
		raw = bytes.TrimSpace(raw)
		if string(raw) == "null" {
			continue
		}
		if !known[r] {
			return nil, openapi.NotFound("Unknown quota resources %s.", r)
		}
		n, err := strconv.ParseInt(string(raw), 10, 32)
		if err != nil {
			return nil, openapi.BadRequest("Validation error: quotas %s: %s is not an integer.", r, raw)
		}
		if n < -1 {
			return nil, openapi.BadRequest("Validation error: quotas %s: %d is less than the minimum of -1.", r, n)
		}
		set[r] = n
	}
	out := &quotaUpdateOutput{}
	out.Body.Quotas = map[string]int64{}
	err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		for _, r := range quotaResources {
			n, ok := set[r]
			if !ok {
				continue
			}
			limit, err := q.UpsertQuota(ctx, store.UpsertQuotaParams{ProjectID: in.ProjectID, Resource: r, HardLimit: int32(n)})
			if err != nil {
				return fmt.Errorf("set quota %s: %w", r, err)
			}
			out.Body.Quotas[r] = int64(limit)
		}
		return nil
	})
	if err != nil {
		return nil, d.internal(ctx, "update quotas", err)
	}
	return out, nil
}
