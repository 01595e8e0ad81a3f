package controlplane

import (
	"context"
	"log/slog"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/jobs"
)

// syncCatalogAtStart reads a cloud's flavors and volume types once before
// the process serves (jobs.SyncCatalog keeps them current afterwards), so
// that the first creates are checked against the cloud's catalog, not the
// seed's or a stale one. A cloud that does not answer in time leaves the
// catalog as it is: the periodic sync tries again.
func syncCatalogAtStart(ctx context.Context, pool *pgxpool.Pool, prov provider.Provider, logger *slog.Logger) {
	if _, ok := prov.(provider.Catalog); !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res, err := jobs.SyncCatalogNow(ctx, &jobs.Deps{Pool: pool, Provider: prov, Logger: logger})
	if err != nil {
		logger.Warn("catalog not synced from the cloud at start; the periodic sync retries", "err", err)
		return
	}
	logger.Info("catalog synced from the cloud", "flavors", res.Flavors, "volume_types", res.VolumeTypes)
}
