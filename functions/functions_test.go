package functions_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/functions"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/seed"
	"github.com/coffer-dbaas/coffer/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

// apiFixture is the public API on a fresh database with the catalog seeded
// and two projects, each with a member token; project a also has an admin.
type apiFixture struct {
	pool                  *pgxpool.Pool
	srv                   *httptest.Server
	projectA, projectB    string
	tokenA, tokenB, admin string
	keys                  *backupkey.Keyring // backups_test.go
	files                 *objectstore.File  // the backup store
}

func newAPI(t testing.TB) *apiFixture {
	t.Helper()
	ctx := context.Background()
	pool := testdb.New(t)
	if err := seed.Catalog(ctx, pool); err != nil {
		t.Fatal(err)
	}
	f := &apiFixture{pool: pool, projectA: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", projectB: "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"}
	q := store.New(pool)
	for _, p := range []string{f.projectA, f.projectB} {
		if _, err := q.UpsertProject(ctx, store.UpsertProjectParams{ID: p, Name: p[:1]}); err != nil {
			t.Fatal(err)
		}
	}
	issue := func(project, user string, roles ...string) string {
		tok, err := auth.IssueToken(ctx, q, project, user, roles, 0)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	f.tokenA, f.tokenB, f.admin = issue(f.projectA, "alice", "member"), issue(f.projectB, "bob", "member"), issue(f.projectA, "root", "admin")
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	f.keys, f.files = testBackupDeps(t)
	f.srv = httptest.NewServer(functions.Handler(&functions.Deps{
		Keys: f.keys, Store: f.files, Locations: copyTestLocations(t, f.files),
		Pool: pool, River: rc, Auth: &auth.Builtin{Queries: q}, Region: "RegionOne",
		DefaultDatastore: "postgresql", MaxVolumeGB: 10, Logger: slog.New(slog.DiscardHandler),
	}))
	t.Cleanup(f.srv.Close)
	return f
}

// do sends a request and decodes a JSON answer (if any) into a map.
func (f *apiFixture) do(t testing.TB, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d, body not JSON: %q", method, path, resp.StatusCode, raw)
		}
		if resp.StatusCode >= 400 && !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: fault with Content-Type %q", method, path, resp.Header.Get("Content-Type"))
		}
	}
	return resp.StatusCode, out
}

// fault asserts a Trove fault body with the given name and code.
func fault(t testing.TB, body map[string]any, name string, code int) string {
	t.Helper()
	f, ok := body[name].(map[string]any)
	if !ok || len(body) != 1 {
		t.Fatalf("want fault %q, got %v", name, body)
	}
	if int(f["code"].(float64)) != code {
		t.Errorf("fault code %v, want %d", f["code"], code)
	}
	msg, _ := f["message"].(string)
	if msg == "" {
		t.Errorf("fault without message: %v", body)
	}
	return msg
}

func (f *apiFixture) count(t testing.TB, table string) int {
	t.Helper()
	var n int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+pgx.Identifier{table}.Sanitize()).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

const validCreate = `{"instance": {"name": "db1", "flavorRef": "1", "volume": {"size": 1},
  "datastore": {"type": "postgresql"}, "databases": [{"name": "orders"}],
  "users": [{"name": "app", "password": "pw-123", "databases": [{"name": "orders"}]}]}}`

func TestVersions(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	code, body := f.do(t, "GET", "/", "", "")
	if code != 200 || body["versions"].([]any)[0].(map[string]any)["id"] != "v1.0" {
		t.Fatalf("GET / = %d %v", code, body)
	}
	code, body = f.do(t, "GET", "/v1.0/", "", "")
	if code != 401 {
		t.Fatalf("GET /v1.0/ without token = %d", code)
	}
	fault(t, body, "unauthorized", 401)
	code, body = f.do(t, "GET", "/v1.0/", f.tokenA, "")
	if code != 200 || body["version"].(map[string]any)["status"] != "CURRENT" {
		t.Fatalf("GET /v1.0/ = %d %v", code, body)
	}
}

func TestAuthAndRouting(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	code, body := f.do(t, "GET", "/v1.0/"+f.projectA+"/instances", "not-a-token", "")
	if code != 401 {
		t.Fatalf("bad token: %d", code)
	}
	fault(t, body, "unauthorized", 401)
	// The tenant in the URL must be the token's project.
	code, body = f.do(t, "GET", "/v1.0/"+f.projectB+"/instances", f.tokenA, "")
	if code != 403 {
		t.Fatalf("foreign tenant: %d", code)
	}
	fault(t, body, "forbidden", 403)
	code, body = f.do(t, "GET", "/v1.0/"+f.projectA+"/nothing-here", f.tokenA, "")
	if code != 404 {
		t.Fatalf("unknown route: %d", code)
	}
	fault(t, body, "itemNotFound", 404)
	code, body = f.do(t, "PATCH", "/v1.0/"+f.projectA+"/flavors", f.tokenA, "{}")
	if code != 405 {
		t.Fatalf("wrong method: %d", code)
	}
	fault(t, body, "badMethod", 405)
}

func TestCatalog(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	base := "/v1.0/" + f.projectA
	code, body := f.do(t, "GET", base+"/flavors", f.tokenA, "")
	if code != 200 || len(body["flavors"].([]any)) != len(seed.Flavors) {
		t.Fatalf("flavors: %d %v", code, body)
	}
	fl := body["flavors"].([]any)[0].(map[string]any)
	if fl["id"].(float64) != 1 || fl["str_id"] != "1" || fl["ram"].(float64) != 512 {
		t.Errorf("flavor 1 = %v", fl)
	}
	if code, body = f.do(t, "GET", base+"/flavors/404", f.tokenA, ""); code != 404 {
		t.Errorf("unknown flavor: %d", code)
	}
	fault(t, body, "itemNotFound", 404)

	code, body = f.do(t, "GET", base+"/datastores", f.tokenA, "")
	if code != 200 {
		t.Fatalf("datastores: %d", code)
	}
	// Members see only datastores with an active version: PostgreSQL.
	dss := body["datastores"].([]any)
	if len(dss) != 1 || dss[0].(map[string]any)["name"] != "postgresql" {
		t.Fatalf("member datastores = %v", dss)
	}
	pg := dss[0].(map[string]any)
	if pg["default_version"] != pg["versions"].([]any)[0].(map[string]any)["id"] {
		t.Errorf("default_version not among versions: %v", pg)
	}
	code, body = f.do(t, "GET", base+"/datastores", f.admin, "")
	if code != 200 || len(body["datastores"].([]any)) != 3 {
		t.Fatalf("admin datastores: %d %v", code, body)
	}
	for _, ref := range []string{"postgresql", pg["id"].(string)} {
		if code, body = f.do(t, "GET", base+"/datastores/"+ref+"/versions", f.tokenA, ""); code != 200 || len(body["versions"].([]any)) != 1 {
			t.Errorf("versions of %s: %d %v", ref, code, body)
		}
	}
	ver := pg["versions"].([]any)[0].(map[string]any)
	for _, ref := range []string{ver["name"].(string), ver["id"].(string)} {
		code, body = f.do(t, "GET", base+"/datastores/postgresql/versions/"+ref, f.tokenA, "")
		if code != 200 || body["version"].(map[string]any)["id"] != ver["id"] {
			t.Errorf("version %s: %d %v", ref, code, body)
		}
	}
	if code, body = f.do(t, "GET", base+"/datastores/oracle", f.tokenA, ""); code != 404 {
		t.Errorf("unknown datastore: %d", code)
	}
	fault(t, body, "itemNotFound", 404)
}

func TestCreateInstanceRejectsBadInput(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	path := "/v1.0/" + f.projectA + "/instances"
	cases := []struct {
		name, body, fault string
		code              int
	}{
		{"malformed JSON", `{"instance": {`, "badRequest", 400},
		{"not an object", `[1,2]`, "badRequest", 400},
		{"missing instance", `{}`, "badRequest", 400},
		{"missing name", `{"instance": {"flavorRef": "1", "volume": {"size": 1}}}`, "badRequest", 400},
		{"name without alphanumerics", `{"instance": {"name": "--", "flavorRef": "1", "volume": {"size": 1}}}`, "badRequest", 400},
		{"name wrong type", `{"instance": {"name": 5, "flavorRef": "1", "volume": {"size": 1}}}`, "badRequest", 400},
		{"unknown flavor", `{"instance": {"name": "x", "flavorRef": "99", "volume": {"size": 1}}}`, "badRequest", 400},
		{"missing flavor", `{"instance": {"name": "x", "volume": {"size": 1}}}`, "badRequest", 400},
		{"missing volume", `{"instance": {"name": "x", "flavorRef": "1"}}`, "badRequest", 400},
		{"zero volume", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 0}}}`, "badRequest", 400},
		{"volume not a number", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": "big"}}}`, "badRequest", 400},
		{"volume too large", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 11}}}`, "overLimit", 413},
		{"unknown datastore", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "oracle"}}}`, "itemNotFound", 404},
		{"unknown version", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "postgresql", "version": "8.4"}}}`, "badRequest", 400},
		{"inactive version", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "redis"}}}`, "badRequest", 400},
		{"user of unknown database", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "users": [{"name": "u", "password": "p", "databases": [{"name": "nope"}]}]}}`, "badRequest", 400},
		{"user without password", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "users": [{"name": "u"}]}}`, "badRequest", 400},
		{"reserved user", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "users": [{"name": "postgres", "password": "p"}]}}`, "badRequest", 400},
		{"bad database name", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "databases": [{"name": "a;drop"}]}}`, "badRequest", 400},
		{"duplicate database", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "databases": [{"name": "a"}, {"name": "a"}]}}`, "badRequest", 400},
		{"restore from an unknown backup", `{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "restorePoint": {"backupRef": "0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e90"}}}`, "itemNotFound", 404},
	}
	for _, c := range cases {
		code, body := f.do(t, "POST", path, f.tokenA, c.body)
		if code != c.code {
			t.Errorf("%s: status %d, want %d (%v)", c.name, code, c.code, body)
			continue
		}
		msg := fault(t, body, c.fault, c.code)
		if strings.Contains(msg, "Internal") {
			t.Errorf("%s: message %q", c.name, msg)
		}
	}
	// A foreign tenant in the URL is refused before anything is read.
	code, body := f.do(t, "POST", "/v1.0/"+f.projectB+"/instances", f.tokenA, validCreate)
	if code != 403 {
		t.Fatalf("foreign tenant create: %d", code)
	}
	fault(t, body, "forbidden", 403)
	for _, table := range []string{"instance", "agent_command", "river_job", "event"} {
		if n := f.count(t, table); n != 0 {
			t.Errorf("bad input wrote %d rows to %s", n, table)
		}
	}
}

func TestInstanceLifecycleRows(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	ctx := context.Background()
	base := "/v1.0/" + f.projectA + "/instances"
	code, body := f.do(t, "POST", base, f.tokenA, validCreate)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	inst := body["instance"].(map[string]any)
	id := inst["id"].(string)
	if inst["status"] != "BUILD" || inst["flavor"].(map[string]any)["id"] != "1" ||
		inst["datastore"].(map[string]any)["type"] != "postgresql" || inst["volume"].(map[string]any)["size"].(float64) != 1 {
		t.Errorf("create answer = %v", inst)
	}
	if _, ok := inst["tenant_id"]; ok {
		t.Errorf("member sees tenant_id")
	}
	// One transaction wrote the row, the prepare command and the job.
	var cmdName string
	var payload []byte
	if err := f.pool.QueryRow(ctx, "SELECT name, payload FROM agent_command WHERE instance_id = $1", id).Scan(&cmdName, &payload); err != nil {
		t.Fatal(err)
	}
	if cmdName != "prepare" || !bytes.Contains(payload, []byte(`"orders"`)) {
		t.Errorf("prepare command = %s %s", cmdName, payload)
	}
	var jobArgs []byte
	if err := f.pool.QueryRow(ctx, "SELECT args FROM river_job WHERE kind = 'provision_instance'").Scan(&jobArgs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(jobArgs, []byte(id)) || bytes.Contains(jobArgs, []byte("pw-123")) {
		t.Errorf("provision args = %s (must name the instance and carry no password)", jobArgs)
	}

	// Readable at once by its project, invisible to the other one.
	if code, body = f.do(t, "GET", base+"/"+id, f.tokenA, ""); code != 200 || body["instance"].(map[string]any)["id"] != id {
		t.Fatalf("show: %d %v", code, body)
	}
	code, body = f.do(t, "GET", "/v1.0/"+f.projectB+"/instances/"+id, f.tokenB, "")
	if code != 404 {
		t.Fatalf("other project's show: %d", code)
	}
	fault(t, body, "itemNotFound", 404)
	if code, body = f.do(t, "GET", "/v1.0/"+f.projectB+"/instances", f.tokenB, ""); code != 200 || len(body["instances"].([]any)) != 0 {
		t.Fatalf("other project's list: %d %v", code, body)
	}
	if code, _ = f.do(t, "DELETE", "/v1.0/"+f.projectB+"/instances/"+id, f.tokenB, ""); code != 404 {
		t.Fatalf("other project's delete: %d", code)
	}
	if code, _ = f.do(t, "GET", base+"/not-a-uuid", f.tokenA, ""); code != 404 {
		t.Fatalf("malformed id: %d", code)
	}
	// The admin sees who owns it.
	if code, body = f.do(t, "GET", base+"/"+id, f.admin, ""); code != 200 || body["instance"].(map[string]any)["tenant_id"] != f.projectA {
		t.Fatalf("admin show: %d %v", code, body)
	}

	// Trove refuses to delete while building.
	code, body = f.do(t, "DELETE", base+"/"+id, f.tokenA, "")
	if code != 422 {
		t.Fatalf("delete while building: %d", code)
	}
	fault(t, body, "unprocessableEntity", 422)

	if _, err := f.pool.Exec(ctx, "UPDATE instance SET task = 'NONE', compute_status = 'ACTIVE', service_status = 'healthy', heartbeat_at = now() WHERE id = $1", id); err != nil {
		t.Fatal(err)
	}
	code, body = f.do(t, "GET", base+"/"+id, f.tokenA, "")
	if s := body["instance"].(map[string]any); s["status"] != "ACTIVE" || s["operating_status"] != "HEALTHY" {
		t.Fatalf("after prepare: %v", s)
	}
	for range 2 { // a repeated delete is accepted and changes nothing
		if code, body = f.do(t, "DELETE", base+"/"+id, f.tokenA, ""); code != 202 || body != nil {
			t.Fatalf("delete: %d %v", code, body)
		}
	}
	code, body = f.do(t, "GET", base+"/"+id, f.tokenA, "")
	if s := body["instance"].(map[string]any)["status"]; s != "SHUTDOWN" {
		t.Errorf("deleting instance status = %v", s)
	}
	var deleteJobs int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE kind = 'delete_instance'").Scan(&deleteJobs); err != nil {
		t.Fatal(err)
	}
	if deleteJobs != 1 {
		t.Errorf("delete jobs = %d, want 1", deleteJobs)
	}
}

func TestListInstancesPaginates(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	base := "/v1.0/" + f.projectA + "/instances"
	// More instances than the default quota (10) allows.
	if code, body := f.do(t, "PUT", "/v1.0/"+f.projectA+"/mgmt/quotas/"+f.projectA, f.admin, `{"quotas": {"instances": 30}}`); code != 200 {
		t.Fatalf("raise quota: %d %v", code, body)
	}
	for range 23 {
		if code, body := f.do(t, "POST", base, f.tokenA, `{"instance": {"name": "p", "flavorRef": 1, "volume": {"size": "1"}}}`); code != 200 {
			t.Fatalf("create: %d %v", code, body)
		}
	}
	seen := map[string]bool{}
	path := base
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("too many pages")
		}
		code, body := f.do(t, "GET", path, f.tokenA, "")
		if code != 200 {
			t.Fatalf("list: %d %v", code, body)
		}
		for _, it := range body["instances"].([]any) {
			seen[it.(map[string]any)["id"].(string)] = true
		}
		links, ok := body["links"].([]any)
		if !ok {
			break
		}
		next := links[0].(map[string]any)
		if next["rel"] != "next" {
			t.Fatalf("links = %v", links)
		}
		href := next["href"].(string)
		path = href[strings.Index(href, "/v1.0/"):]
	}
	if len(seen) != 23 {
		t.Errorf("pages covered %d instances, want 23", len(seen))
	}
	code, body := f.do(t, "GET", base+"?limit=5", f.tokenA, "")
	if code != 200 || len(body["instances"].([]any)) != 5 || body["links"] == nil {
		t.Errorf("limit=5: %d, %d items", code, len(body["instances"].([]any)))
	}
	if code, body = f.do(t, "GET", base+"?marker=zzz", f.tokenA, ""); code != 400 {
		t.Errorf("bad marker: %d", code)
	}
}
