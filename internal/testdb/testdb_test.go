package testdb

import (
	"context"
	"fmt"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
)

func TestMain(m *testing.M) { Main(m) }

// Two databases have the schema and do not share rows or tables.
func TestNewIsolated(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a, b := New(t), New(t)

	for _, pool := range []*pgxpool.Pool{a, b} {
		for _, table := range []string{"instance", "agent_command", "river_job", "coffer_schema_version"} {
			var exists bool
			if err := pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", table).Scan(&exists); err != nil {
				t.Fatal(err)
			}
			if !exists {
				t.Errorf("table %s missing", table)
			}
		}
	}

	if _, err := a.Exec(ctx, "INSERT INTO project (id, name) VALUES ('p1', 'one')"); err != nil {
		t.Fatal(err)
	}
	if _, err := a.Exec(ctx, "CREATE TABLE only_in_a (id int)"); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := b.QueryRow(ctx, "SELECT count(*) FROM project").Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 0 {
		t.Errorf("b sees %d projects inserted into a", n)
	}
	var exists bool
	if err := b.QueryRow(ctx, "SELECT to_regclass('only_in_a') IS NOT NULL").Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Error("b sees a table created in a")
	}

	var da, db string
	a.QueryRow(ctx, "SELECT current_database()").Scan(&da)
	b.QueryRow(ctx, "SELECT current_database()").Scan(&db)
	if da == db {
		t.Errorf("both pools on database %s", da)
	}
}

// NewURL's database is dropped when its test ends, even with a
// connection still open.
func TestNewURLDropped(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	var name string
	t.Run("user", func(t *testing.T) {
		conn, err := pgx.Connect(ctx, NewURL(t))
		if err != nil {
			t.Fatal(err)
		}
		// Left open on purpose: the drop is WITH (FORCE).
		if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
			t.Fatal(err)
		}
	})
	if t.Failed() {
		return
	}
	pool := New(t)
	var exists bool
	if err := pool.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&exists); err != nil {
		t.Fatal(err)
	}
	if exists {
		t.Errorf("database %s still exists after its test", name)
	}
}

// Many tests cloning the template at once.
func TestNewConcurrent(t *testing.T) {
	t.Parallel()
	for i := range 12 {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			t.Parallel()
			pool := New(t)
			if _, err := pool.Exec(context.Background(), "INSERT INTO project (id, name) VALUES ('p', 'p')"); err != nil {
				t.Fatal(err)
			}
		})
	}
}
