package functions

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Quotas limit what a project may hold: instances, their memory (MB) and
// volume space (GB), and backups. A project's limit is its row in the
// quota table or else the default. Checks run inside the transaction that
// creates the resource, under a per-project lock (checkQuota), so
// concurrent creates never exceed a limit.

func init() { register(Quotas) }

// Quota resources, in Trove's order.
const (
	quotaInstances = "instances"
	quotaRAM       = "ram"
	quotaBackups   = "backups"
	quotaVolumes   = "volumes"
)

var quotaResources = []string{quotaInstances, quotaRAM, quotaBackups, quotaVolumes}

// defaultQuotas are the limits of a project without a quota row: Trove's
// defaults (max_instances_per_tenant 10, max_ram_per_tenant -1,
// max_backups_per_tenant 50, max_volumes_per_tenant 40 GB), each
// replaceable by COFFER_QUOTA_INSTANCES, _RAM, _BACKUPS, _VOLUMES (-1:
// unlimited). Read once, at first use.
var defaultQuotas = sync.OnceValue(func() map[string]int64 {
	q := map[string]int64{quotaInstances: 10, quotaRAM: -1, quotaBackups: 50, quotaVolumes: 40}
	for _, r := range quotaResources {
		key := "COFFER_QUOTA_" + strings.ToUpper(r)
		v := os.Getenv(key)
		if v == "" {
			continue
		}
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < -1 {
			slog.Default().Error("ignoring invalid quota default; want an integer >= -1", "variable", key, "value", v)
			continue
		}
		q[r] = n
	}
	return q
})

// projectQuotas returns a project's limit of every resource.
func projectQuotas(ctx context.Context, q *store.Queries, project string) (map[string]int64, error) {
	limits := map[string]int64{}
	for k, v := range defaultQuotas() {
		limits[k] = v
	}
	rows, err := q.ListProjectQuotas(ctx, project)
	if err != nil {
		return nil, fmt.Errorf("load quotas of %s: %w", project, err)
	}
	for _, r := range rows {
		limits[r.Resource] = int64(r.HardLimit)
	}
	return limits, nil
}

// projectUsage returns what a project uses of every resource. Backups are
// counted once Coffer has backups (0 until then).
func projectUsage(ctx context.Context, q *store.Queries, project string) (map[string]int64, error) {
	u, err := q.ProjectInstanceUsage(ctx, project)
	if err != nil {
		return nil, fmt.Errorf("load usage of %s: %w", project, err)
	}
	return map[string]int64{quotaInstances: u.Instances, quotaRAM: u.Ram, quotaVolumes: u.Volumes, quotaBackups: 0}, nil
}

// checkQuota answers 413 if adding deltas to what the project uses would
// exceed one of its limits. It must run in the transaction that then
// creates the resources: it locks the project's quota until that
// transaction ends, so a concurrent check waits and then counts what this
// one created.
func checkQuota(ctx context.Context, q *store.Queries, project string, deltas map[string]int64) (*openapi.Fault, error) {
	if err := q.LockProjectQuota(ctx, project); err != nil {
		return nil, fmt.Errorf("lock quota of %s: %w", project, err)
	}
	limits, err := projectQuotas(ctx, q, project)
	if err != nil {
		return nil, err
	}
	usage, err := projectUsage(ctx, q, project)
	if err != nil {
		return nil, err
	}
	var over []string
	for _, r := range quotaResources {
		d, limit := deltas[r], limits[r]
		if d > 0 && limit >= 0 && usage[r]+d > limit {
			over = append(over, "'"+r+"'")
		}
	}
	if len(over) > 0 {
		// Trove prints the Python list of resources.
		return openapi.Errorf(http.StatusRequestEntityTooLarge, "Quota exceeded for resources: [%s].", strings.Join(over, ", ")), nil
	}
	return nil, nil
}

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
