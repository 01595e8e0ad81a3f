// Package quota limits what a project may hold: instances, their memory
// (MB) and volume space (GB), and backups. A project's limit is its row in
// the quota table or else the default. Checks run inside the transaction
// that creates the resource, under a per-project lock (Check), so
// concurrent creates never exceed a limit. The API (functions) and the
// jobs that create resources on their own (scheduled backups) share it.
package quota

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Quota resources, in Trove's order.
const (
	Instances = "instances"
	RAM       = "ram"
	Backups   = "backups"
	Volumes   = "volumes"
)

// Resources are the quota resources in Trove's order.
var Resources = []string{Instances, RAM, Backups, Volumes}

// Defaults are the limits of a project without a quota row: Trove's
// defaults (max_instances_per_tenant 10, max_ram_per_tenant -1,
// max_backups_per_tenant 50, max_volumes_per_tenant 40 GB), each
// replaceable by COFFER_QUOTA_INSTANCES, _RAM, _BACKUPS, _VOLUMES (-1:
// unlimited). Read once, at first use.
var Defaults = sync.OnceValue(func() map[string]int64 {
	q := map[string]int64{Instances: 10, RAM: -1, Backups: 50, Volumes: 40}
	for _, r := range Resources {
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

// Limits returns a project's limit of every resource.
func Limits(ctx context.Context, q *store.Queries, project string) (map[string]int64, error) {
	limits := map[string]int64{}
	for k, v := range Defaults() {
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

// Usage returns what a project uses of every resource.
func Usage(ctx context.Context, q *store.Queries, project string) (map[string]int64, error) {
	u, err := q.ProjectInstanceUsage(ctx, project)
	if err != nil {
		return nil, fmt.Errorf("load usage of %s: %w", project, err)
	}
	backups, err := q.CountProjectBackups(ctx, project)
	if err != nil {
		return nil, fmt.Errorf("load backups of %s: %w", project, err)
	}
	return map[string]int64{Instances: u.Instances, RAM: u.Ram, Volumes: u.Volumes, Backups: backups}, nil
}

// Check answers 413 if adding deltas to what the project uses would exceed
// one of its limits. It must run in the transaction that then creates the
// resources: it locks the project's quota until that transaction ends, so
// a concurrent check waits and then counts what this one created.
func Check(ctx context.Context, q *store.Queries, project string, deltas map[string]int64) (*openapi.Fault, error) {
	if err := q.LockProjectQuota(ctx, project); err != nil {
		return nil, fmt.Errorf("lock quota of %s: %w", project, err)
	}
	limits, err := Limits(ctx, q, project)
	if err != nil {
		return nil, err
	}
	usage, err := Usage(ctx, q, project)
	if err != nil {
		return nil, err
	}
	var over []string
	for _, r := range Resources {
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
