package functions_test

// Shared by the operation-generic tests (isolation_test.go,
// badinput_test.go): the operations of the OpenAPI document, how to fill
// in each path parameter and body, a populated project A ("world"), raw
// requests, Trove fault checks and snapshots of every table.
//
// The tables below are explicit on purpose: an operation added to the API
// whose path parameter or body is not described here fails the tests,
// so that every new route is checked for isolation and bad input.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/danielgtaylor/huma/v2"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/functions"
	"github.com/coffer-dbaas/coffer/openapi"
)

// operation is one operation of the public API's OpenAPI document.
type operation struct {
	ID, Method, Path string
	Body             *huma.Schema // request body schema; nil: no body
	BodyRequired     bool
	Query            []*huma.Param
	reg              huma.Registry
}

func (op operation) String() string { return op.ID + " (" + op.Method + " " + op.Path + ")" }

// params are the {names} in the operation's path, in order.
func (op operation) params() []string {
	var out []string
	for rest := op.Path; ; {
		i := strings.Index(rest, "{")
		if i < 0 {
			return out
		}
		j := strings.Index(rest[i:], "}")
		out = append(out, rest[i+1:i+j])
		rest = rest[i+j+1:]
	}
}

func (op operation) has(kind paramKind) bool {
	for _, p := range op.params() {
		if pp, ok := pathParams[p]; ok && pp.kind == kind {
			return true
		}
	}
	return false
}

func (op operation) mgmt() bool { return strings.Contains(op.Path, "/mgmt/") }

// specOperations lists every operation of functions.Spec(), by path and
// method.
func specOperations(t testing.TB) []operation {
	t.Helper()
	spec := functions.Spec()
	var ops []operation
	for path, item := range spec.Paths {
		for method, o := range map[string]*huma.Operation{
			http.MethodGet: item.Get, http.MethodPost: item.Post, http.MethodPut: item.Put,
			http.MethodPatch: item.Patch, http.MethodDelete: item.Delete,
			http.MethodHead: item.Head, http.MethodOptions: item.Options, http.MethodTrace: item.Trace,
		} {
			if o == nil {
				continue
			}
			op := operation{ID: o.OperationID, Method: method, Path: path, reg: spec.Components.Schemas}
			if rb := o.RequestBody; rb != nil {
				mt := rb.Content["application/json"]
				if mt == nil || mt.Schema == nil {
					t.Fatalf("%s: request body without an application/json schema", op)
				}
				op.Body, op.BodyRequired = mt.Schema, rb.Required
			}
			for _, p := range o.Parameters {
				if p.In == "query" {
					op.Query = append(op.Query, p)
				}
			}
			ops = append(ops, op)
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Path != ops[j].Path {
			return ops[i].Path < ops[j].Path
		}
		return ops[i].Method < ops[j].Method
	})
	if len(ops) == 0 {
		t.Fatal("the spec has no operations")
	}
	return ops
}

// paramKind says whose a path parameter's value is.
type paramKind int

const (
	owned   paramKind = iota + 1 // a resource of one project: others get 404
	child                        // something inside an owned resource (a user, a database)
	catalog                      // shared by all projects: datastores, versions, flavors, parameters
	project                      // a project id (quotas)
)

// pathParams is where each path parameter's value comes from ({tenant_id}
// is the caller's choice). A parameter missing here fails the tests.
var pathParams = map[string]struct {
	kind  paramKind
	value func(w *world) string
}{
	"instance_id":      {owned, func(w *world) string { return w.instance }},
	"configuration_id": {owned, func(w *world) string { return w.configuration }},
	"schedule_id":      {owned, func(w *world) string { return w.schedule }},
	"backup_id":        {owned, func(w *world) string { return w.backup }},
	"user":             {child, func(*world) string { return "app" }},
	"database":         {child, func(*world) string { return "orders" }},
	"project_id":       {project, func(w *world) string { return w.projectA }},
	"datastore":        {catalog, func(*world) string { return "postgresql" }},
	"version":          {catalog, func(w *world) string { return w.versionName }},
	"version_id":       {catalog, func(w *world) string { return w.extraVersion }},
	"name":             {catalog, func(*world) string { return "max_connections" }},
	"flavor_id":        {catalog, func(*world) string { return "1" }},
}

// validBodies are, per operation with a request body, bodies that succeed
// on a fresh world (TestOperationTablesWork checks it). Each sets as many
// fields as the operation takes, so that the bad-input variants derived
// from them reach every field.
var validBodies = map[string][]func(w *world) string{
	"create-instance": {func(w *world) string {
		return `{"instance": {"name": "second", "flavorRef": "2", "volume": {"size": 1, "type": null},
		  "datastore": {"type": "postgresql", "version": "` + w.versionName + `"},
		  "databases": [{"name": "shop", "character_set": "UTF8", "collate": "C"}],
		  "users": [{"name": "shopper", "password": "pw-123", "host": "%", "databases": [{"name": "shop"}]}],
		  "access": {"is_public": false}, "availability_zone": "nova", "region_name": "RegionOne"}}`
	}},
	"update-instance": {func(*world) string { return `{"instance": {"name": "renamed"}}` },
		func(*world) string {
			return `{"instance": {"access": {"is_public": true, "allowed_cidrs": ["10.0.0.0/8"]}}}`
		}},
	"edit-instance": {func(*world) string { return `{"instance": {"name": "edited"}}` }},
	"instance-action": {
		func(*world) string { return `{"restart": {}}` },
		func(*world) string { return `{"resize": {"volume": {"size": 2}}}` },
		func(*world) string { return `{"resize": {"flavorRef": "2"}}` },
	},
	"create-databases": {func(*world) string {
		return `{"databases": [{"name": "newdb", "character_set": "UTF8", "collate": "C"}]}`
	}},
	"create-users": {func(*world) string {
		return `{"users": [{"name": "newuser", "password": "pw-123", "host": "%", "databases": [{"name": "orders"}]}]}`
	}},
	"change-user-passwords": {func(*world) string { return `{"users": [{"name": "app", "password": "pw-456", "host": "%"}]}` }},
	"update-user":           {func(*world) string { return `{"user": {"name": "app2", "password": "pw-789", "host": "%"}}` }},
	"grant-user-access":     {func(*world) string { return `{"databases": [{"name": "stock"}]}` }},
	"enable-root":           {func(*world) string { return `{"password": "root-pw-1"}` }, func(*world) string { return `` }},
	"create-configuration": {func(w *world) string {
		return `{"configuration": {"name": "cg-new", "description": "a group", "values": {"max_connections": 120, "work_mem": "8MB"},
		  "datastore": {"type": "postgresql", "version": "` + w.versionName + `"}}}`
	}},
	"update-configuration": {func(*world) string {
		return `{"configuration": {"name": "cg-put", "description": "replaced", "values": {"max_connections": 130}}}`
	}},
	"patch-configuration": {func(*world) string {
		return `{"configuration": {"name": "cg-patch", "description": "patched", "values": {"work_mem": "16MB"}}}`
	}},
	"update-quotas": {func(*world) string { return `{"quotas": {"instances": 25, "ram": -1, "volumes": 50, "backups": 5}}` }},
	"create-schedule": {func(*world) string {
		return `{"schedule": {"name": "nightly", "description": "every night", "pattern": "30 2 * * *", "incremental": true,
		  "keep_last": 7, "max_age": "168h", "enabled": true}}`
	}, func(*world) string { return `{"schedule": {"name": "hourly", "pattern": "@hourly", "max_age": 86400}}` }},
	"update-schedule": {func(*world) string {
		return `{"schedule": {"name": "renamed", "description": "changed", "pattern": "0 3 * * 1", "incremental": false,
		  "enabled": false, "keep_last": 3, "max_age": "30d"}}`
	}},
	"mgmt-create-datastore-version": {func(*world) string {
		return `{"version": {"name": "pg-new", "datastore_name": "postgresql", "datastore_manager": "postgresql", "active": false,
		  "image": "0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e90", "image_tags": ["tag"], "packages": ["pkg"], "default": false,
		  "version": "99.1", "registry_ext": "ext", "repl_strategy": "strategy"}}`
	}},
	"mgmt-instance-action": {
		func(*world) string { return `{"reboot": {}}` },
		func(*world) string { return `{"stop": {}}` },
		func(*world) string { return `{"reset-task-status": {}}` },
		func(*world) string { return `{"rebuild": {"image_id": "0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e92"}}` },
	},
	"guest-log-action": {func(*world) string { return `{"name": "general", "enable": 1}` }},
	"mgmt-update-datastore-version": {func(*world) string {
		return `{"name": "pg-renamed", "datastore_manager": "postgresql", "image": "0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e91",
		  "image_tags": ["tag2"], "packages": ["pkg2"], "registry_ext": "ext2", "repl_strategy": "strategy2", "active": true, "default": false}`
	}},
}

// successCodes are the answers of the valid calls that are not a 2xx:
// Trove's 501 for showing a database, and the datastore delete that its
// versions refuse (the world's datastores all have versions).
var successCodes = map[string]int{"show-database": 501, "delete-datastore": 400}

// adminOnly is how a member token is refused on an admin operation. Every
// path under /mgmt/ is admin only (Trove answers 401) unless listed in
// memberMgmt; other admin operations are listed here.
var adminOnly = map[string]int{"delete-datastore": 403}

// memberMgmt are the /mgmt/ operations members may call (on their own
// project).
var memberMgmt = map[string]bool{"show-quotas": true}

// isAdminOp reports whether only admins may call op, and the status a
// member gets.
func isAdminOp(op operation) (int, bool) {
	if code, ok := adminOnly[op.ID]; ok {
		return code, true
	}
	if op.mgmt() && !memberMgmt[op.ID] {
		return http.StatusUnauthorized, true
	}
	return 0, false
}

// world is project A with one of everything: an ACTIVE instance with
// databases, users and root enabled in its inventory and a configuration
// group attached, another (unattached) group, a quota row, and an extra
// datastore version; project B has nothing.
type world struct {
	*apiFixture
	instance      string // A's instance
	configuration string // A's unattached group
	attached      string // A's group attached to the instance
	schedule      string // A's backup schedule of the instance
	backup        string // A's COMPLETED backup of the instance (backups_test.go)
	module        string // A's module, applied nowhere (modules_test.go)
	versionName   string // the seeded PostgreSQL version's name
	extraVersion  string // id of an unused, active PostgreSQL version
}

const worldInventory = `{"databases": [{"name": "orders"}, {"name": "stock"}],
  "users": [{"name": "app", "host": "%", "databases": ["orders"]}, {"name": "reader", "host": "%", "databases": ["stock"]}],
  "root_enabled": true}`

func newWorld(t testing.TB) *world {
	t.Helper()
	w := &world{apiFixture: newAPI(t)}
	a := "/v1.0/" + w.projectA
	w.instance = w.acctInstance(t, worldInventory)
	mustDo := func(method, path, token, body string, want int) map[string]any {
		t.Helper()
		code, out := w.do(t, method, path, token, body)
		if code != want {
			t.Fatalf("world: %s %s: %d %v", method, path, code, out)
		}
		return out
	}
	out := mustDo("GET", a+"/datastores/postgresql", w.tokenA, "", 200)
	for _, v := range out["datastore"].(map[string]any)["versions"].([]any) {
		w.versionName = v.(map[string]any)["name"].(string)
	}
	group := func(name string) string {
		out := mustDo("POST", a+"/configurations", w.tokenA,
			`{"configuration": {"name": "`+name+`", "values": {"max_connections": 150}}}`, 200)
		return out["configuration"].(map[string]any)["id"].(string)
	}
	w.configuration, w.attached = group("cg1"), group("cg2")
	mustDo("PUT", a+"/instances/"+w.instance, w.tokenA, `{"instance": {"configuration": "`+w.attached+`"}}`, 202)
	mustDo("POST", a+"/instances/"+w.instance+"/root", w.tokenA, "", 200)
	w.schedule = mustDo("POST", a+"/instances/"+w.instance+"/schedules", w.tokenA,
		`{"schedule": {"name": "daily", "pattern": "@daily"}}`, 200)["schedule"].(map[string]any)["id"].(string)
	w.acctRun(t, w.instance, worldInventory) // the agent did all that
	w.backup = w.backupWorld(t)
	w.module = w.moduleWorld(t)
	mustDo("PUT", a+"/mgmt/quotas/"+w.projectA, w.admin, `{"quotas": {"instances": 20}}`, 200)
	mustDo("POST", a+"/mgmt/datastore-versions", w.admin, `{"version": {"name": "pg-extra", "datastore_name": "postgresql",
		"datastore_manager": "postgresql", "active": true, "image": "0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e90"}}`, 202)
	for _, v := range mustDo("GET", a+"/mgmt/datastore-versions", w.admin, "", 200)["versions"].([]any) {
		if v := v.(map[string]any); v["name"] == "pg-extra" {
			w.extraVersion = v["id"].(string)
		}
	}
	if w.versionName == "" || w.extraVersion == "" {
		t.Fatalf("world: version %q, extra version %q", w.versionName, w.extraVersion)
	}
	return w
}

// path fills op's path in: tenant in {tenant_id}, the world's values
// elsewhere, overridden by set (name → raw value, escaped here).
func (w *world) path(t testing.TB, op operation, tenant string, set map[string]string) string {
	t.Helper()
	p := op.Path
	for _, name := range op.params() {
		v, ok := set[name]
		switch {
		case ok:
		case name == "tenant_id":
			v = tenant
		default:
			src, known := pathParams[name]
			if !known {
				t.Fatalf("%s: path parameter {%s} has no value source: add it to pathParams in fixture_test.go", op, name)
			}
			v = src.value(w)
		}
		p = strings.Replace(p, "{"+name+"}", url.PathEscape(v), 1)
	}
	return p
}

// bodies are op's valid bodies ("" for none). An operation with a body
// that validBodies does not know fails the test.
func (w *world) bodies(t testing.TB, op operation) []string {
	t.Helper()
	if op.Body == nil {
		return []string{""}
	}
	fns := validBodies[op.ID]
	if len(fns) == 0 {
		t.Fatalf("%s: no valid body: add one to validBodies in fixture_test.go", op)
	}
	var out []string
	for _, fn := range fns {
		out = append(out, fn(w))
	}
	return out
}

// reply is a raw answer.
type reply struct {
	status int
	header http.Header
	raw    []byte
}

func (r reply) String() string {
	s := string(r.raw)
	if len(s) > 300 {
		s = s[:300] + "…"
	}
	return fmt.Sprintf("%d %s", r.status, s)
}

// send sends a request with a raw body (Content-Type application/json when
// there is one) and returns the raw answer.
func (f *apiFixture) send(t testing.TB, method, path, token string, body []byte) reply {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, rd)
	if err != nil {
		t.Fatalf("%s %q: %v", method, path, err)
	}
	if token != "" {
		req.Header.Set("X-Auth-Token", token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		// The server dropped the connection (a panic): status 0.
		return reply{header: http.Header{}, raw: []byte("no answer: " + err.Error())}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return reply{status: resp.StatusCode, header: resp.Header, raw: []byte("answer cut: " + err.Error())}
	}
	return reply{status: resp.StatusCode, header: resp.Header, raw: raw}
}

// faultProblem says what is wrong with r as a Trove fault (nil: nothing):
// application/json, a single key naming the status's fault, whose value
// holds code == status and a message.
func faultProblem(r reply) error {
	if r.status < 400 {
		return fmt.Errorf("status %d is no error", r.status)
	}
	if ct := r.header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		return fmt.Errorf("fault with Content-Type %q", ct)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(r.raw, &body); err != nil || len(body) != 1 {
		return fmt.Errorf("fault body is not an object with one key: %q", r.raw)
	}
	want := openapi.FaultName(r.status)
	var f struct {
		Code    *int    `json:"code"`
		Message *string `json:"message"`
	}
	if err := json.Unmarshal(body[want], &f); err != nil || f.Code == nil || f.Message == nil {
		return fmt.Errorf("want fault %q with code and message, got %s", want, r.raw)
	}
	if *f.Code != r.status || *f.Message == "" {
		return fmt.Errorf("fault code %d (status %d), message %q", *f.Code, r.status, *f.Message)
	}
	return nil
}

// snapshot is every row of every table (as text), by table. rate_limit is
// left out: counting requests is its purpose.
type snapshot map[string][]string

func (f *apiFixture) snapshot(t testing.TB) snapshot {
	t.Helper()
	ctx := context.Background()
	rows, err := f.pool.Query(ctx, `SELECT table_name FROM information_schema.tables
		WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> 'rate_limit'`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	s := snapshot{}
	for _, table := range tables {
		rows, err := f.pool.Query(ctx, "SELECT t::text FROM "+pgx.Identifier{table}.Sanitize()+" t ORDER BY 1")
		if err != nil {
			t.Fatal(err)
		}
		if s[table], err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// diff lists the rows that differ from before ("-" gone, "+" new).
func (s snapshot) diff(before snapshot) []string {
	var out []string
	for table, rows := range s {
		old := before[table]
		for _, r := range old {
			if !slices.Contains(rows, r) {
				out = append(out, table+": - "+r)
			}
		}
		for _, r := range rows {
			if !slices.Contains(old, r) {
				out = append(out, table+": + "+r)
			}
		}
	}
	for table := range before {
		if _, ok := s[table]; !ok {
			out = append(out, table+": table gone")
		}
	}
	sort.Strings(out)
	return out
}

// unchanged fails the test if any row changed since before.
func (f *apiFixture) unchanged(t testing.TB, before snapshot, what string) {
	t.Helper()
	if d := f.snapshot(t).diff(before); len(d) > 0 {
		if len(d) > 20 {
			d = append(d[:20], fmt.Sprintf("… and %d more", len(d)-20))
		}
		t.Errorf("%s changed state:\n  %s", what, strings.Join(d, "\n  "))
	}
}
