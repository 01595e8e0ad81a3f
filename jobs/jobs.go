// Package jobs holds Coffer's lifecycle steps as River jobs: provisioning,
// deleting, the continuation that marks a prepared instance ACTIVE, and the
// heartbeat watchdog. Every worker is idempotent on retry (it looks up
// before it creates), and every step records its result, its event and the
// next step's job in one transaction.
package jobs

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

// Deps is what the workers need.
type Deps struct {
	Pool     *pgxpool.Pool
	Provider provider.Provider
	// AgentAPIURL and AgentCACert are handed to every agent: where to poll
	// and which CA signs that endpoint.
	AgentAPIURL string
	AgentCACert string
	// BuildTimeout bounds how long an instance may stay BUILDING before the
	// watchdog fails it (Trove's usage_timeout).
	BuildTimeout time.Duration
	Logger       *slog.Logger
	// Store is where backups live, Keys what wraps their keys (backup*.go).
	Store objectstore.Store
	Keys  *backupkey.Keyring
	// Locations names every store a backup may be in (backup.location),
	// Store's among them; nil: Store is the only one (backup_copy.go).
	Locations *objectstore.Registry
	// inserter queues the jobs a backup job follows up with.
	inserter lazyInserter
}

// Queue is the queue every lifecycle job runs on.
const Queue = river.QueueDefault

// Config returns the River client configuration for a worker process with
// River's defaults replaced where they do not fit a control plane.
func Config(deps *Deps, maxWorkers int) *river.Config {
	workers := river.NewWorkers()
	Register(workers, deps)
	return &river.Config{
		Queues:  map[string]river.QueueConfig{Queue: {MaxWorkers: maxWorkers}},
		Workers: workers,
		// Each worker sets its own Timeout(); this is the fallback.
		JobTimeout: 2 * time.Minute,
		// A crashed worker's job is picked up again after this, not River's
		// default hour. Must exceed the longest Timeout().
		RescueStuckJobsAfter: 15 * time.Minute,
		PeriodicJobs: []*river.PeriodicJob{
			river.NewPeriodicJob(river.PeriodicInterval(30*time.Second),
				func() (river.JobArgs, *river.InsertOpts) { return WatchInstances{}, nil },
				&river.PeriodicJobOpts{RunOnStart: true, ID: "watch_instances"}),
			river.NewPeriodicJob(river.PeriodicInterval(CatalogSyncInterval),
				func() (river.JobArgs, *river.InsertOpts) { return SyncCatalog{}, nil },
				&river.PeriodicJobOpts{RunOnStart: true, ID: "sync_catalog"}),
			river.NewPeriodicJob(river.PeriodicInterval(ComputeRefreshInterval),
				func() (river.JobArgs, *river.InsertOpts) { return RefreshComputeStatus{}, nil },
				&river.PeriodicJobOpts{ID: "refresh_compute_status"}),
			river.NewPeriodicJob(river.PeriodicInterval(Backups().WALPruneEvery),
				func() (river.JobArgs, *river.InsertOpts) { return PruneWALArchives{}, nil },
				&river.PeriodicJobOpts{ID: "prune_wal_archives"}),
			schedulePeriodicJob(),
		},
		Logger: deps.Logger,
	}
}

// Register adds every worker to workers.
func Register(workers *river.Workers, deps *Deps) {
	river.AddWorker(workers, &ProvisionInstanceWorker{deps: deps})
	river.AddWorker(workers, &CompletePrepareWorker{deps: deps})
	river.AddWorker(workers, &CompleteCommandWorker{deps: deps})
	river.AddWorker(workers, &DeleteInstanceWorker{deps: deps})
	river.AddWorker(workers, &WatchInstancesWorker{deps: deps})
	registerBackupWorkers(workers, deps)
	river.AddWorker(workers, &CopyBackupWorker{deps: deps})
	registerScheduleWorkers(workers, deps)
	river.AddWorker(workers, &SyncCatalogWorker{deps: deps})
	river.AddWorker(workers, &ResizeInstanceWorker{deps: deps})
	river.AddWorker(workers, &ApplyAccessWorker{deps: deps})
	river.AddWorker(workers, &RefreshComputeStatusWorker{deps: deps})
	river.AddWorker(workers, &PruneWALArchivesWorker{deps: deps})
	registerMgmtWorkers(workers, deps)
}

// inTx runs fn in a transaction.
func (d *Deps) inTx(ctx context.Context, fn func(pgx.Tx, *store.Queries) error) error {
	return pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error { return fn(tx, store.New(tx)) })
}

// Event kinds.
const (
	EventInstanceActive        = "instance.active"
	EventInstanceError         = "instance.error"
	EventInstanceDeleted       = "instance.deleted"
	EventInstanceHeartbeatLost = "instance.heartbeat_lost"
)

// InsertEvent records an event in the caller's transaction.
func InsertEvent(ctx context.Context, q *store.Queries, projectID, kind string, resource uuid.UUID, payload any) error {
	b, err := json.Marshal(payload)
	if err != nil {
		return err
	}
	if payload == nil {
		b = []byte("{}")
	}
	if err := q.InsertEvent(ctx, store.InsertEventParams{
		ProjectID: projectID, Kind: kind, ResourceID: uuid.NullUUID{UUID: resource, Valid: true}, Payload: b,
	}); err != nil {
		return fmt.Errorf("record event %s: %w", kind, err)
	}
	return nil
}
