package controlplane

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coffer-dbaas/coffer/db/migrate"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// embeddedPort names the embedded cluster's socket; it listens on no TCP
// port, so it cannot clash with a PostgreSQL the machine already runs.
const embeddedPort = 5439

// Database is the control plane's Postgres: a pool, plus the embedded
// cluster when no URL was configured.
type Database struct {
	Pool     *pgxpool.Pool
	URL      string
	embedded *pgctl.Cluster
}

// OpenDatabase connects to cfg.DatabaseURL, or starts (creating it on first
// use) the embedded cluster under DataDir, then migrates the schema.
func OpenDatabase(ctx context.Context, cfg Config, logger *slog.Logger) (*Database, error) {
	d := &Database{URL: cfg.DatabaseURL}
	if d.URL == "" {
		cluster, err := embeddedCluster(cfg.DataDir)
		if err != nil {
			return nil, err
		}
		if err := cluster.Init(ctx); err != nil {
			return nil, fmt.Errorf("init embedded postgres: %w", err)
		}
		if err := cluster.WriteConfig(map[string]string{
			"max_connections": "200", "shared_buffers": "128MB",
			"synchronous_commit": "on", "log_min_messages": "warning",
		}); err != nil {
			return nil, fmt.Errorf("configure embedded postgres: %w", err)
		}
		if err := cluster.Start(ctx); err != nil {
			return nil, fmt.Errorf("start embedded postgres: %w", err)
		}
		logger.Info("embedded control-plane postgres running", "data_dir", cluster.DataDir, "socket_dir", cluster.SocketDir)
		d.embedded = cluster
		d.URL = cluster.ConnString("postgres")
	}
	poolCfg, err := pgxpool.ParseConfig(d.URL)
	if err != nil {
		return nil, fmt.Errorf("parse database url: %w", err)
	}
	poolCfg.MaxConns = 40
	d.Pool, err = pgxpool.NewWithConfig(ctx, poolCfg)
	if err != nil {
		return nil, fmt.Errorf("connect to control-plane database: %w", err)
	}
	if err := migrate.Up(ctx, d.Pool); err != nil {
		d.Pool.Close()
		return nil, err
	}
	return d, nil
}

// Close closes the pool and stops the embedded cluster, if any.
func (d *Database) Close(ctx context.Context) error {
	d.Pool.Close()
	if d.embedded != nil {
		return d.embedded.Stop(ctx)
	}
	return nil
}

func embeddedCluster(dataDir string) (*pgctl.Cluster, error) {
	dir := filepath.Join(dataDir, "controlplane")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("create %s: %w", dir, err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return nil, err
	}
	password, err := readOrCreateSecret(filepath.Join(dir, "superuser-password"))
	if err != nil {
		return nil, err
	}
	return &pgctl.Cluster{
		DataDir:       filepath.Join(dir, "pgdata"),
		SocketDir:     filepath.Join(dir, "run"),
		Port:          embeddedPort,
		SuperUser:     "coffer",
		SuperPassword: password,
		LogFile:       filepath.Join(dir, "postgres.log"),
	}, nil
}

// readOrCreateSecret returns the secret stored in path, creating a random
// one (mode 0600) on first use.
func readOrCreateSecret(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		return strings.TrimSpace(string(b)), nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	raw := make([]byte, 24)
	_, _ = rand.Read(raw)
	secret := hex.EncodeToString(raw)
	if err := os.WriteFile(path, []byte(secret+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("store secret %s: %w", path, err)
	}
	return secret, nil
}
