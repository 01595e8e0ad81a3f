package seed

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/coffer-dbaas/coffer/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func TestParseRules(t *testing.T) {
	t.Parallel()
	rules, err := ParseRules([]byte(`{"configuration-parameters": [
		{"name": "sort_buffer_size", "restart_required": false, "max": 18446744073709551615, "min": 32768, "type": "integer"},
		{"name": "long_query_time", "restart_required": false, "min": 0, "type": "float"},
		{"name": "autocommit", "restart_required": true, "type": "boolean"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(rules) != 3 || rules[0].Max != "18446744073709551615" || rules[0].Min != "32768" || rules[1].Min != "0" ||
		rules[1].Max != "" || !rules[2].RestartRequired || rules[2].Type != "boolean" {
		t.Errorf("rules = %+v", rules)
	}
	for _, bad := range []string{
		`{"configuration-parameters": [{"name": "x", "type": "decimal"}]}`,
		`{"configuration-parameters": [{"name": "bad name", "type": "string"}]}`,
		`{"configuration-parameters": [{"name": "x", "type": "string"}, {"name": "x", "type": "string"}]}`,
		`{"configuration-parameters": [{"name": "x", "type": "integer", "min": "zero"}]}`,
		`not json`,
	} {
		if _, err := ParseRules([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

func TestRulesFor(t *testing.T) {
	t.Parallel()
	pg, ok, err := RulesFor("postgresql")
	if err != nil || !ok {
		t.Fatalf("postgresql: %v %v", ok, err)
	}
	names := map[string]Rule{}
	for _, r := range pg {
		names[r.Name] = r
	}
	if _, found := names["archive_command"]; found {
		t.Error("archive_command is offered")
	}
	if r := names["max_connections"]; r.Type != "integer" || !r.RestartRequired {
		t.Errorf("max_connections = %+v", r)
	}
	if _, ok, err := RulesFor("redis"); ok || err != nil {
		t.Errorf("redis: %v %v (no rules embedded)", ok, err)
	}
}

// The catalog seed loads every version's parameters, big bounds exactly,
// and loading again changes nothing.
func TestCatalogLoadsParameters(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pool := testdb.New(t)
	for range 2 {
		if err := Catalog(ctx, pool); err != nil {
			t.Fatal(err)
		}
	}
	rows, err := pool.Query(ctx, `SELECT d.name, count(*) FROM configuration_parameter p
		JOIN datastore_version v ON v.id = p.datastore_version_id JOIN datastore d ON d.id = v.datastore_id
		GROUP BY d.name ORDER BY d.name`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for rows.Next() {
		var name string
		var n int
		if err := rows.Scan(&name, &n); err != nil {
			t.Fatal(err)
		}
		got = append(got, fmt.Sprintf("%s:%d", name, n))
	}
	if strings.Join(got, ",") != "mariadb:40,postgresql:182" {
		t.Errorf("parameters per datastore = %v", got)
	}
	var max string
	if err := pool.QueryRow(ctx, "SELECT max_size::text FROM configuration_parameter WHERE name = 'max_connect_errors'").Scan(&max); err != nil {
		t.Fatal(err)
	}
	if max != "18446744073709551615" {
		t.Errorf("max_connect_errors max = %s", max)
	}
}
