package controlplane

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"time"

	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/jobs"
)

// openBackups opens what backups need: the object store (COFFER_BACKUP_*,
// objectstore.FromEnv), the keyring (COFFER_BACKUP_MASTER_KEY or the key
// file in the data directory) and the process's backup settings:
//
//	COFFER_BACKUP_SEGMENT_SIZE   bytes per uploaded segment (default 64 MiB)
//	COFFER_BACKUP_PARALLEL       segments uploaded at once (default 4)
//	COFFER_BACKUP_MAX_DURATION   longest a backup may run (default 12h)
//	COFFER_BACKUP_STALL_TIMEOUT  a backup with no sign of its agent for this long fails (default 10m)
//	COFFER_BACKUP_WATCH_EVERY    how often a running backup is looked at (default 15s)
//	COFFER_BACKUP_WAL_PRUNE_EVERY how often WAL archives are trimmed to what backups need (default 15m)
//
// COFFER_BACKUP_COPY_STORES adds the locations backups may be copied to
// (objectstore.CopyStoresFromEnv); all are returned in one registry.
// agentAPIURL is where the file store's grants point.
func openBackups(ctx context.Context, dataDir, agentAPIURL string, logger *slog.Logger) (*objectstore.Registry, *backupkey.Keyring, error) {
	cfg, err := objectstore.FromEnv(dataDir)
	if err != nil {
		return nil, nil, fmt.Errorf("backup store: %w", err)
	}
	if cfg.Kind == "file" && cfg.File.BaseURL == "" {
		cfg.File.BaseURL = agentAPIURL
	}
	st, err := objectstore.Open(ctx, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("backup store %s: %w", cfg.Kind, err)
	}
	copyCfgs, err := objectstore.CopyStoresFromEnv(dataDir, cfg)
	if err != nil {
		return nil, nil, err
	}
	var copies []objectstore.Location
	for _, c := range copyCfgs {
		if c.Kind == "file" && c.File.BaseURL == "" {
			c.File.BaseURL = agentAPIURL
		}
		cs, err := objectstore.Open(ctx, c)
		if err != nil {
			return nil, nil, fmt.Errorf("backup copy store %s: %w", c.Kind, err)
		}
		copies = append(copies, objectstore.Location{Name: c.Name, Container: c.Container, Store: cs})
	}
	reg, err := objectstore.NewRegistry(objectstore.Location{Name: cfg.Name, Container: cfg.Container, Store: st}, copies...)
	if err != nil {
		return nil, nil, err
	}
	keys, err := backupkey.FromEnv(dataDir)
	if err != nil {
		return nil, nil, err
	}
	s := jobs.BackupSettings{Location: cfg.Name, Container: cfg.Container}
	if s.SegmentSize, err = envInt64("COFFER_BACKUP_SEGMENT_SIZE", 0); err != nil {
		return nil, nil, err
	}
	n, err := envInt64("COFFER_BACKUP_PARALLEL", 0)
	if err != nil {
		return nil, nil, err
	}
	s.Parallel = int(n)
	for _, d := range []struct {
		key string
		to  *time.Duration
	}{
		{"COFFER_BACKUP_MAX_DURATION", &s.MaxDuration}, {"COFFER_BACKUP_STALL_TIMEOUT", &s.StallTimeout},
		{"COFFER_BACKUP_WATCH_EVERY", &s.WatchEvery}, {"COFFER_BACKUP_WAL_PRUNE_EVERY", &s.WALPruneEvery},
	} {
		if v := os.Getenv(d.key); v != "" {
			if *d.to, err = time.ParseDuration(v); err != nil || *d.to <= 0 {
				return nil, nil, fmt.Errorf("%s must be a positive duration (e.g. 10m), got %q", d.key, v)
			}
		}
	}
	jobs.SetBackupSettings(s)
	s = jobs.Backups()
	logger.Info("backups", "store", cfg.Kind, "location", s.Location, "container", s.Container,
		"segment_size", s.SegmentSize, "parallel", s.Parallel, "locations", reg.Names())
	return reg, keys, nil
}

func envInt64(key string, def int64) (int64, error) {
	v := os.Getenv(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%s must be a positive integer, got %q", key, v)
	}
	return n, nil
}
