package jobs

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

// SyncCatalog makes the flavor and volume_type tables what the cloud
// offers, when the provider has a catalog (provider.Catalog: OpenStack's
// Nova flavors and Cinder volume types). It runs when a worker starts and
// every CatalogSyncInterval, so the API refuses (4xx, nothing created) a
// flavor or volume type the cloud does not have instead of failing the
// build later. Providers without a catalog (local) keep the seeded
// flavors and offer no volume types.
//
// A flavor gone from the cloud is deleted, or, while instances still
// refer to it, hidden: their views and resizes still read it, but it is
// neither listed nor accepted for a new create or resize. One that comes
// back is offered again. Nova flavors without memory or vCPUs (which the
// flavor table cannot hold, and no datastore could run on) are left out.
type SyncCatalog struct{}

func (SyncCatalog) Kind() string { return "sync_catalog" }

func (SyncCatalog) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 3,
		UniqueOpts: river.UniqueOpts{ByPeriod: CatalogSyncInterval / 2}}
}

// CatalogSyncInterval is how often the catalog is read from the cloud.
// A flavor created in Nova is offered at most this long after.
const CatalogSyncInterval = 5 * time.Minute

type SyncCatalogWorker struct {
	river.WorkerDefaults[SyncCatalog]
	deps *Deps
}

func (w *SyncCatalogWorker) Timeout(*river.Job[SyncCatalog]) time.Duration {
	return time.Minute
}

func (w *SyncCatalogWorker) Work(ctx context.Context, _ *river.Job[SyncCatalog]) error {
	_, err := SyncCatalogNow(ctx, w.deps)
	return err
}

// CatalogSyncResult says what a sync changed.
type CatalogSyncResult struct {
	Flavors, VolumeTypes int      // offered after the sync
	Deleted, Hidden      []string // flavor ids retired
	Skipped              []string // cloud flavors left out (no memory or vCPUs)
	VolumeTypesRemoved   int64
}

// SyncCatalogNow runs one sync (the worker's body; tests call it). Without
// a catalog it does nothing.
func SyncCatalogNow(ctx context.Context, deps *Deps) (CatalogSyncResult, error) {
	var res CatalogSyncResult
	cat, ok := deps.Provider.(provider.Catalog)
	if !ok {
		return res, nil
	}
	// Both lists are read before anything changes: a cloud that does not
	// answer leaves the catalog as it was.
	flavors, err := cat.ListFlavors(ctx)
	if err != nil {
		return res, fmt.Errorf("sync catalog: %w", err)
	}
	types, err := cat.ListVolumeTypes(ctx)
	if err != nil {
		return res, fmt.Errorf("sync catalog: %w", err)
	}
	offered := make([]provider.Flavor, 0, len(flavors))
	keep := make([]string, 0, len(flavors))
	for _, f := range flavors {
		if f.RAMMB <= 0 || f.VCPUs <= 0 || f.ID == "" {
			res.Skipped = append(res.Skipped, f.ID)
			continue
		}
		offered = append(offered, f)
		keep = append(keep, f.ID)
	}
	if len(offered) == 0 {
		// A cloud that lists no flavor at all is more likely misconfigured
		// (or the service user lost access) than empty: refusing every
		// create on that word would be worse than a stale catalog.
		return res, fmt.Errorf("sync catalog: the cloud lists no usable flavor (%d listed); keeping the catalog as it is", len(flavors))
	}
	typeIDs := make([]string, 0, len(types))
	for _, t := range types {
		typeIDs = append(typeIDs, t.ID)
	}

	err = deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		if err := q.LockCatalogSync(ctx); err != nil {
			return err
		}
		// Retire first, so that a new flavor may take the name of one
		// that is gone.
		retired, err := q.RetireFlavors(ctx, keep)
		if err != nil {
			return fmt.Errorf("retire flavors: %w", err)
		}
		for _, r := range retired {
			if r.Kept {
				res.Hidden = append(res.Hidden, r.ID)
			} else {
				res.Deleted = append(res.Deleted, r.ID)
			}
		}
		for _, f := range offered {
			if err := q.SyncFlavor(ctx, store.SyncFlavorParams{
				ID: f.ID, Name: f.Name, RamMb: int32(f.RAMMB), Vcpus: int32(f.VCPUs),
				DiskGb: int32(f.DiskGB), Ephemeral: int32(f.EphemeralGB),
			}); err != nil {
				return fmt.Errorf("flavor %s (%s): %w", f.ID, f.Name, err)
			}
		}
		if res.VolumeTypesRemoved, err = q.RetireVolumeTypes(ctx, typeIDs); err != nil {
			return fmt.Errorf("retire volume types: %w", err)
		}
		for _, t := range types {
			if err := q.SyncVolumeType(ctx, store.SyncVolumeTypeParams{
				ID: t.ID, Name: t.Name, Description: t.Description, IsPublic: t.IsPublic,
			}); err != nil {
				return fmt.Errorf("volume type %s (%s): %w", t.ID, t.Name, err)
			}
		}
		return nil
	})
	if err != nil {
		return res, fmt.Errorf("sync catalog: %w", err)
	}
	res.Flavors, res.VolumeTypes = len(offered), len(types)
	if len(res.Deleted)+len(res.Hidden)+len(res.Skipped) > 0 || res.VolumeTypesRemoved > 0 {
		deps.Logger.InfoContext(ctx, "catalog synced from the cloud", "flavors", res.Flavors, "volume_types", res.VolumeTypes,
			"flavors_deleted", res.Deleted, "flavors_hidden", res.Hidden, "flavors_skipped", res.Skipped,
			"volume_types_removed", res.VolumeTypesRemoved)
	}
	return res, nil
}
