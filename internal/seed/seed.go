// Package seed fills a fresh control plane with what the embedded default
// offers: the datastore catalog, flavors, and a demo project with an admin
// and a member token. Every function is idempotent.
package seed

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// seedNamespace makes seeded ids stable across restarts and databases.
var seedNamespace = uuid.MustParse("6f1d3a52-8c1e-4b0e-9d55-2f6a3c1b7e90")

// Flavor is a flavor the embedded default offers.
type Flavor struct {
	ID    string
	Name  string
	RAMMB int
	VCPUs int
}

// Flavors seeded for the embedded default.
var Flavors = []Flavor{
	{"1", "m1.tiny", 512, 1},
	{"2", "m1.small", 1024, 1},
	{"3", "m1.medium", 2048, 2},
	{"4", "m1.large", 4096, 4},
}

// Catalog creates (or refreshes) the datastores and flavors:
// PostgreSQL active at the machine's major version; MariaDB and Redis
// listed but inactive until their drivers exist.
func Catalog(ctx context.Context, pool *pgxpool.Pool) error {
	pgMajor := "15"
	if bin, err := pgctl.FindBinDir(); err == nil {
		// /usr/lib/postgresql/<major>/bin
		if m := filepath.Base(filepath.Dir(bin)); m != "" && strings.Trim(m, "0123456789") == "" {
			pgMajor = m
		}
	}
	type version struct {
		datastore, name, manager string
		active                   bool
	}
	versions := []version{
		{"postgresql", pgMajor, "postgresql", true},
		{"mariadb", "10.11", "mariadb", false},
		{"redis", "7.0", "redis", false},
	}
	return pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		for _, v := range versions {
			ds, err := q.UpsertDatastore(ctx, store.UpsertDatastoreParams{
				ID: uuid.NewSHA1(seedNamespace, []byte(v.datastore)), Name: v.datastore})
			if err != nil {
				return fmt.Errorf("seed datastore %s: %w", v.datastore, err)
			}
			dv, err := q.UpsertDatastoreVersion(ctx, store.UpsertDatastoreVersionParams{
				ID: uuid.NewSHA1(seedNamespace, []byte(v.datastore+"/"+v.name)), DatastoreID: ds.ID,
				Name: v.name, Version: v.name, Manager: v.manager, Active: v.active,
			})
			if err != nil {
				return fmt.Errorf("seed datastore version %s %s: %w", v.datastore, v.name, err)
			}
			if !ds.DefaultVersionID.Valid {
				if err := q.SetDatastoreDefaultVersion(ctx, store.SetDatastoreDefaultVersionParams{
					ID: ds.ID, DefaultVersionID: uuid.NullUUID{UUID: dv.ID, Valid: true}}); err != nil {
					return err
				}
			}
		}
		if err := loadAllParameters(ctx, q); err != nil {
			return err
		}
		for _, f := range Flavors {
			if _, err := q.UpsertFlavor(ctx, store.UpsertFlavorParams{
				ID: f.ID, Name: f.Name, RamMb: int32(f.RAMMB), Vcpus: int32(f.VCPUs)}); err != nil {
				return fmt.Errorf("seed flavor %s: %w", f.Name, err)
			}
		}
		return nil
	})
}

// Credentials of the demo project, kept in the data directory so that a
// restart prints the same tokens.
type Credentials struct {
	ProjectID   string `json:"project_id"`
	ProjectName string `json:"project_name"`
	AdminToken  string `json:"admin_token"`
	MemberToken string `json:"member_token"`
}

// DemoProject creates the demo project and its admin and member tokens
// (once; later calls re-register the stored tokens, e.g. after the
// database was replaced).
func DemoProject(ctx context.Context, pool *pgxpool.Pool, dataDir, name string) (Credentials, error) {
	path := filepath.Join(dataDir, "credentials.json")
	var c Credentials
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &c); err != nil {
			return c, fmt.Errorf("read %s: %w", path, err)
		}
	case errors.Is(err, os.ErrNotExist):
		raw := make([]byte, 16)
		_, _ = rand.Read(raw)
		c = Credentials{ProjectID: hex.EncodeToString(raw), ProjectName: name,
			AdminToken: auth.NewToken(), MemberToken: auth.NewToken()}
		b, _ := json.MarshalIndent(c, "", "  ")
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return c, fmt.Errorf("store credentials: %w", err)
		}
	default:
		return c, err
	}
	err = pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		if _, err := q.UpsertProject(ctx, store.UpsertProjectParams{ID: c.ProjectID, Name: c.ProjectName}); err != nil {
			return err
		}
		for _, t := range []struct {
			token, user string
			roles       []string
		}{
			{c.AdminToken, "admin", []string{auth.RoleAdmin, "member", "reader"}},
			{c.MemberToken, "demo", []string{"member", "reader"}},
		} {
			if err := q.InsertAPIToken(ctx, store.InsertAPITokenParams{
				TokenHash: auth.Hash(t.token), ProjectID: c.ProjectID, UserName: t.user, Roles: t.roles}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return c, fmt.Errorf("seed demo project: %w", err)
	}
	return c, nil
}

// WriteOpenRC writes shell exports that point Debian's `openstack database`
// CLI at the API with a token and no Keystone.
func WriteOpenRC(path, endpoint, projectID, token string) error {
	content := fmt.Sprintf(`# Source this file to use "openstack database ..." against Coffer without Keystone.
unset OS_AUTH_URL OS_USERNAME OS_PASSWORD OS_PROJECT_NAME OS_PROJECT_ID OS_USER_DOMAIN_NAME OS_PROJECT_DOMAIN_NAME OS_IDENTITY_API_VERSION OS_REGION_NAME OS_INTERFACE OS_CLOUD
export OS_AUTH_TYPE=admin_token
export OS_ENDPOINT=%s/v1.0/%s
export OS_TOKEN=%s
export COFFER_URL=%s
export COFFER_PROJECT=%s
`, endpoint, projectID, token, endpoint, projectID)
	return os.WriteFile(path, []byte(content), 0o600)
}
