package functions_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// acctInstance creates an instance of project A through the API and puts
// it where its agent would after prepare: ACTIVE, healthy, a fresh
// heartbeat, the prepare command done, and inventory inv (JSON).
func (f *apiFixture) acctInstance(t testing.TB, inv string) string {
	t.Helper()
	code, body := f.do(t, "POST", "/v1.0/"+f.projectA+"/instances", f.tokenA,
		`{"instance": {"name": "acct", "flavorRef": "1", "volume": {"size": 1}}}`)
	if code != 200 {
		t.Fatalf("create instance: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	f.acctExec(t, `UPDATE instance SET task = 'NONE', compute_status = 'ACTIVE', service_status = 'healthy',
		heartbeat_at = now(), address = '127.0.0.1' WHERE id = $1`, id)
	f.acctExec(t, `UPDATE agent_command SET state = 'succeeded', payload = '{}', completed_at = now() WHERE instance_id = $1`, id)
	f.acctSetInventory(t, id, inv)
	return id
}

func (f *apiFixture) acctExec(t testing.TB, sql string, args ...any) {
	t.Helper()
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// acctSetInventory records a heartbeat's inventory, as the agent API does.
func (f *apiFixture) acctSetInventory(t testing.TB, id, inv string) {
	t.Helper()
	f.acctExec(t, "UPDATE instance SET inventory = $2::jsonb, inventory_at = now(), heartbeat_at = now() WHERE id = $1", id, inv)
}

type acctQueued struct {
	Name    string
	Payload map[string]any
	Raw     string
}

// acctCommands returns the instance's commands the agent has not run.
func (f *apiFixture) acctCommands(t testing.TB, id string) []acctQueued {
	t.Helper()
	rows, err := f.pool.Query(context.Background(),
		"SELECT name, payload FROM agent_command WHERE instance_id = $1 AND state IN ('pending','leased') ORDER BY created_at, id", id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []acctQueued
	for rows.Next() {
		var c acctQueued
		var raw []byte
		if err := rows.Scan(&c.Name, &raw); err != nil {
			t.Fatal(err)
		}
		c.Raw = string(raw)
		_ = json.Unmarshal(raw, &c.Payload)
		out = append(out, c)
	}
	return out
}

// acctRun plays the agent: completes the open commands (clearing their
// payloads, as the agent API does) and reports inventory inv.
func (f *apiFixture) acctRun(t testing.TB, id, inv string) {
	t.Helper()
	f.acctExec(t, `UPDATE agent_command SET state = 'succeeded', payload = '{}', completed_at = now()
		WHERE instance_id = $1 AND state IN ('pending','leased')`, id)
	f.acctSetInventory(t, id, inv)
}

func acctNames(t testing.TB, body map[string]any, key string) []string {
	t.Helper()
	items, ok := body[key].([]any)
	if !ok {
		t.Fatalf("no %s list in %v", key, body)
	}
	var out []string
	for _, it := range items {
		out = append(out, it.(map[string]any)["name"].(string))
	}
	return out
}

func TestDatabases(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.acctInstance(t, `{"databases": [{"name": "orders"}], "users": [], "root_enabled": false}`)
	base := "/v1.0/" + f.projectA + "/instances/" + id + "/databases"

	code, body := f.do(t, "GET", base, f.tokenA, "")
	if code != 200 || !slices.Equal(acctNames(t, body, "databases"), []string{"orders"}) || body["links"] != nil {
		t.Fatalf("list: %d %v", code, body)
	}

	// Create: 202 without a body, one command with both databases.
	code, body = f.do(t, "POST", base, f.tokenA, `{"databases": [{"name": "sales", "character_set": "UTF8", "collate": "C.UTF-8"}, {"name": "hr"}]}`)
	if code != 202 || body != nil {
		t.Fatalf("create: %d %v", code, body)
	}
	cmds := f.acctCommands(t, id)
	if len(cmds) != 1 || cmds[0].Name != "create_databases" ||
		!strings.Contains(cmds[0].Raw, `"sales"`) || !strings.Contains(cmds[0].Raw, `"character_set": "UTF8"`) || !strings.Contains(cmds[0].Raw, `"hr"`) {
		t.Fatalf("queued = %+v", cmds)
	}
	// Reads show what the agent reported; existence checks also count
	// what is queued: a second create of the same name is refused at once.
	if code, body = f.do(t, "GET", base, f.tokenA, ""); !slices.Equal(acctNames(t, body, "databases"), []string{"orders"}) {
		t.Errorf("list before the agent ran: %v", body)
	}
	for _, dup := range []string{"sales", "orders"} {
		code, body = f.do(t, "POST", base, f.tokenA, `{"databases": [{"name": "`+dup+`"}]}`)
		if code != 400 {
			t.Errorf("create existing %s: %d %v", dup, code, body)
			continue
		}
		if msg := fault(t, body, "badRequest", 400); !strings.Contains(msg, "already exists") {
			t.Errorf("create existing %s: %q", dup, msg)
		}
	}
	f.acctRun(t, id, `{"databases": [{"name": "hr"}, {"name": "orders"}, {"name": "sales"}], "users": []}`)
	if code, body = f.do(t, "GET", base, f.tokenA, ""); !slices.Equal(acctNames(t, body, "databases"), []string{"hr", "orders", "sales"}) {
		t.Errorf("list after the agent ran: %d %v", code, body)
	}

	// Delete: 404 for a database that is not there, 400 for a reserved one.
	if code, body = f.do(t, "DELETE", base+"/hr", f.tokenA, ""); code != 202 || body != nil {
		t.Fatalf("delete: %d %v", code, body)
	}
	if cmds = f.acctCommands(t, id); len(cmds) != 1 || cmds[0].Name != "delete_database" || cmds[0].Payload["name"] != "hr" {
		t.Errorf("queued = %+v", cmds)
	}
	code, body = f.do(t, "DELETE", base+"/hr", f.tokenA, "") // already on its way out
	if code != 404 {
		t.Errorf("second delete: %d %v", code, body)
	}
	fault(t, body, "itemNotFound", 404)
	if code, body = f.do(t, "DELETE", base+"/nope", f.tokenA, ""); code != 404 {
		t.Errorf("delete missing: %d", code)
	}
	if code, body = f.do(t, "DELETE", base+"/template1", f.tokenA, ""); code != 400 {
		t.Errorf("delete template1: %d %v", code, body)
	}
	// Trove's ".json" format suffix on the last segment.
	if code, _ = f.do(t, "DELETE", base+"/sales.json", f.tokenA, ""); code != 202 {
		t.Errorf("delete sales.json: %d", code)
	}
	if cmds = f.acctCommands(t, id); len(cmds) != 2 || cmds[1].Payload["name"] != "sales" {
		t.Errorf("queued = %+v", cmds)
	}
	code, body = f.do(t, "GET", base+"/orders", f.tokenA, "")
	if code != 501 {
		t.Errorf("show database: %d", code)
	}
	fault(t, body, "notImplemented", 501)
}

func TestDatabasesRejectBadInput(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.acctInstance(t, `{"databases": [{"name": "orders"}], "users": []}`)
	base := "/v1.0/" + f.projectA + "/instances/" + id + "/databases"
	for name, c := range map[string]struct {
		body string
		code int
	}{
		"malformed":           {`{"databases": [`, 400},
		"no databases key":    {`{}`, 400},
		"empty list":          {`{"databases": []}`, 400},
		"not a list":          {`{"databases": "x"}`, 400},
		"name missing":        {`{"databases": [{}]}`, 400},
		"name not a string":   {`{"databases": [{"name": 5}]}`, 400},
		"empty name":          {`{"databases": [{"name": ""}]}`, 400},
		"quote in name":       {`{"databases": [{"name": "a'b"}]}`, 400},
		"leading digit":       {`{"databases": [{"name": "1db"}]}`, 400},
		"too long":            {`{"databases": [{"name": "` + strings.Repeat("d", 64) + `"}]}`, 400},
		"reserved":            {`{"databases": [{"name": "Postgres"}]}`, 400},
		"template":            {`{"databases": [{"name": "template0"}]}`, 400},
		"duplicate":           {`{"databases": [{"name": "a"}, {"name": "a"}]}`, 400},
		"bad charset":         {`{"databases": [{"name": "a", "character_set": "klingon"}]}`, 400},
		"bad collate":         {`{"databases": [{"name": "a", "collate": "en US"}]}`, 400},
		"too many":            {`{"databases": [` + strings.Repeat(`{"name": "a"},`, 100) + `{"name": "b"}]}`, 400},
		"huge body":           {`{"databases": [{"name": "a", "pad": "` + strings.Repeat("x", 70<<10) + `"}]}`, 413},
		"already exists":      {`{"databases": [{"name": "new"}, {"name": "orders"}]}`, 400},
		"wrong tenant in URL": {`{"databases": [{"name": "a"}]}`, 403},
	} {
		path := base
		if name == "wrong tenant in URL" {
			path = "/v1.0/" + f.projectB + "/instances/" + id + "/databases"
		}
		code, body := f.do(t, "POST", path, f.tokenA, c.body)
		if code != c.code {
			t.Errorf("%s: %d, want %d (%v)", name, code, c.code, body)
			continue
		}
		for k := range body {
			if k == "instanceFault" {
				t.Errorf("%s: internal fault %v", name, body)
			}
		}
	}
	// Aliases PostgreSQL knows are accepted.
	if code, body := f.do(t, "POST", base, f.tokenA, `{"databases": [{"name": "a", "character_set": "utf-8"}, {"name": "b", "character_set": "LATIN1", "collate": "C"}]}`); code != 202 {
		t.Errorf("valid charsets: %d %v", code, body)
	}
	if n := len(f.acctCommands(t, id)); n != 1 {
		t.Errorf("bad requests queued commands: %d open, want 1", n)
	}
}

func TestDatabasesPaginate(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	var dbs []string
	for i := range 45 {
		dbs = append(dbs, fmt.Sprintf(`{"name": "db%02d"}`, 44-i)) // reported in any order
	}
	id := f.acctInstance(t, `{"databases": [`+strings.Join(dbs, ",")+`], "users": []}`)
	base := "/v1.0/" + f.projectA + "/instances/" + id + "/databases"
	var seen []string
	path := base
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("too many pages")
		}
		code, body := f.do(t, "GET", path, f.tokenA, "")
		if code != 200 {
			t.Fatalf("list: %d %v", code, body)
		}
		page := acctNames(t, body, "databases")
		if len(page) > 20 {
			t.Errorf("page of %d", len(page))
		}
		seen = append(seen, page...)
		links, ok := body["links"].([]any)
		if !ok {
			break
		}
		next := links[0].(map[string]any)
		href := next["href"].(string)
		if next["rel"] != "next" || !strings.Contains(href, "marker="+page[len(page)-1]) {
			t.Fatalf("links = %v", links)
		}
		path = href[strings.Index(href, "/v1.0/"):]
	}
	if len(seen) != 45 || !slices.IsSorted(seen) || seen[0] != "db00" {
		t.Errorf("pages = %v", seen)
	}
	code, body := f.do(t, "GET", base+"?limit=5&marker=db09", f.tokenA, "")
	if got := acctNames(t, body, "databases"); code != 200 || !slices.Equal(got, []string{"db10", "db11", "db12", "db13", "db14"}) || body["links"] == nil {
		t.Errorf("limit=5 after db09: %d %v", code, got)
	}
	if !strings.Contains(body["links"].([]any)[0].(map[string]any)["href"].(string), "limit=5") {
		t.Errorf("next link drops the limit: %v", body["links"])
	}
	if code, body = f.do(t, "GET", base+"?limit=100", f.tokenA, ""); len(acctNames(t, body, "databases")) != 20 {
		t.Errorf("limit=100 is capped at 20: %d", len(acctNames(t, body, "databases")))
	}
	if code, _ = f.do(t, "GET", base+"?limit=-1", f.tokenA, ""); code != 400 {
		t.Errorf("limit=-1: %d", code)
	}
}

// Every account route on an instance that is not the tenant's, not ready,
// or of a datastore without accounts.
func TestAccountsInstanceChecks(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.acctInstance(t, `{"databases": [{"name": "orders"}], "users": [{"name": "app", "host": "%", "databases": ["orders"]}]}`)
	routes := []struct{ method, path, body string }{
		{"GET", "/databases", ""},
		{"POST", "/databases", `{"databases": [{"name": "x"}]}`},
		{"DELETE", "/databases/orders", ""},
		{"GET", "/users", ""},
		{"POST", "/users", `{"users": [{"name": "u2", "password": "p"}]}`},
		{"PUT", "/users", `{"users": [{"name": "app", "password": "p"}]}`},
		{"GET", "/users/app", ""},
		{"PUT", "/users/app", `{"user": {"password": "p2"}}`},
		{"DELETE", "/users/app", ""},
		{"GET", "/users/app/databases", ""},
		{"PUT", "/users/app/databases", `{"databases": [{"name": "orders"}]}`},
		{"DELETE", "/users/app/databases/orders", ""},
		{"GET", "/root", ""},
		{"POST", "/root", ""},
		{"DELETE", "/root", ""},
	}
	check := func(what, instance, tenant, token string, code int, faultName string) {
		t.Helper()
		for _, r := range routes {
			got, body := f.do(t, r.method, "/v1.0/"+tenant+"/instances/"+instance+r.path, token, r.body)
			if got != code {
				t.Errorf("%s: %s %s = %d, want %d (%v)", what, r.method, r.path, got, code, body)
				continue
			}
			fault(t, body, faultName, code)
		}
	}
	// Another project's instance does not exist for it, nor does a
	// malformed or unknown id.
	check("other project", id, f.projectB, f.tokenB, 404, "itemNotFound")
	check("malformed id", "not-a-uuid", f.projectA, f.tokenA, 404, "itemNotFound")
	check("unknown id", "0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e90", f.projectA, f.tokenA, 404, "itemNotFound")

	// Not ready: the agent is silent, the service is down, or it is building.
	f.acctExec(t, "UPDATE instance SET heartbeat_at = now() - interval '10 minutes' WHERE id = $1", id)
	check("stale heartbeat", id, f.projectA, f.tokenA, 422, "unprocessableEntity")
	f.acctExec(t, "UPDATE instance SET heartbeat_at = now(), service_status = 'shutdown' WHERE id = $1", id)
	check("service shut down", id, f.projectA, f.tokenA, 422, "unprocessableEntity")
	f.acctExec(t, "UPDATE instance SET service_status = 'healthy', task = 'BUILDING' WHERE id = $1", id)
	check("building", id, f.projectA, f.tokenA, 422, "unprocessableEntity")
	// A datastore without accounts.
	f.acctExec(t, "UPDATE instance SET task = 'NONE' WHERE id = $1", id)
	f.acctExec(t, "UPDATE datastore_version SET manager = 'redis' WHERE id = (SELECT datastore_version_id FROM instance WHERE id = $1)", id)
	check("redis", id, f.projectA, f.tokenA, 422, "unprocessableEntity")

	// None of this queued anything or recorded root.
	if cmds := f.acctCommands(t, id); len(cmds) != 0 {
		t.Errorf("refused requests queued %+v", cmds)
	}
	if n := f.count(t, "root_history"); n != 0 {
		t.Errorf("refused requests wrote %d root history rows", n)
	}
	f.acctExec(t, "UPDATE datastore_version SET manager = 'postgresql' WHERE id = (SELECT datastore_version_id FROM instance WHERE id = $1)", id)
	if code, body := f.do(t, "GET", "/v1.0/"+f.projectA+"/instances/"+id+"/users", f.tokenA, ""); code != 200 {
		t.Errorf("ready again: %d %v", code, body)
	}
}
