// Package migrate brings a Postgres database up to Coffer's schema: the
// application tables (db/migration, applied with tern) and River's tables
// (applied with rivermigrate). Safe to run from several processes at once:
// both migrators take an advisory lock.
package migrate

import (
	"context"
	"fmt"
	"io/fs"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/jackc/tern/v2/migrate"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/coffer-dbaas/coffer/db"
)

// versionTable records which application migrations have run.
const versionTable = "coffer_schema_version"

// Up applies every pending migration.
func Up(ctx context.Context, pool *pgxpool.Pool) error {
	// River first: application migrations may reference its tables later.
	rm, err := rivermigrate.New(riverpgxv5.New(pool), nil)
	if err != nil {
		return fmt.Errorf("river migrator: %w", err)
	}
	if _, err := rm.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("migrate river schema: %w", err)
	}

	conn, err := pool.Acquire(ctx)
	if err != nil {
		return fmt.Errorf("acquire connection for migrations: %w", err)
	}
	defer conn.Release()
	m, err := migrate.NewMigrator(ctx, conn.Conn(), versionTable)
	if err != nil {
		return fmt.Errorf("app migrator: %w", err)
	}
	sub, err := fs.Sub(db.Migrations, "migration")
	if err != nil {
		return err
	}
	if err := m.LoadMigrations(sub); err != nil {
		return fmt.Errorf("load app migrations: %w", err)
	}
	if err := m.Migrate(ctx); err != nil {
		return fmt.Errorf("migrate app schema: %w", err)
	}
	return nil
}
