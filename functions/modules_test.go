package functions_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// The module operations in the every-operation tables (fixture_test.go):
// the world's module is A's, applied nowhere, so deleting it succeeds; a
// reapply of a module applied nowhere changes nothing (202).
func init() {
	pathParams["module_id"] = struct {
		kind  paramKind
		value func(w *world) string
	}{owned, func(w *world) string { return w.module }}
	ownProjectCreates["create-module"] = true
	successCodes["reapply-module"] = http.StatusAccepted
	validBodies["create-module"] = []func(*world) string{func(w *world) string {
		return `{"module": {"name": "m-new", "module_type": "ping", "contents": "` + b64("pong") + `", "description": "new",
		  "datastore": {"type": "postgresql", "version": "` + w.versionName + `"}, "live_update": 1, "apply_order": 3, "visible": 1}}`
	}}
	validBodies["update-module"] = []func(*world) string{func(*world) string {
		return `{"module": {"name": "m-renamed", "module_type": "ping", "contents": "` + b64("pong2") + `", "description": "changed",
		  "apply_order": 7, "live_update": 0, "all_datastores": 1}}`
	}}
	validBodies["reapply-module"] = []func(*world) string{func(*world) string {
		return `{"reapply": {"md5": "0123456789abcdef0123456789abcdef", "batch_size": 1, "batch_delay": 0, "force": 1, "include_clustered": 0}}`
	}}
	validBodies["apply-instance-modules"] = []func(*world) string{func(w *world) string {
		return `{"modules": [{"id": "` + w.module + `"}]}`
	}}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

// moduleWorld creates the world's module.
func (w *world) moduleWorld(t testing.TB) string {
	t.Helper()
	code, body := w.do(t, "POST", "/v1.0/"+w.projectA+"/modules", w.tokenA,
		`{"module": {"name": "m1", "module_type": "ping", "contents": "`+b64("ping me")+`"}}`)
	if code != 200 {
		t.Fatalf("world: create module: %d %v", code, body)
	}
	return body["module"].(map[string]any)["id"].(string)
}

func (f *apiFixture) createModule(t *testing.T, token, tenant, body string) (int, map[string]any) {
	t.Helper()
	return f.do(t, "POST", "/v1.0/"+tenant+"/modules", token, body)
}

func moduleOf(t *testing.T, body map[string]any) map[string]any {
	t.Helper()
	m, ok := body["module"].(map[string]any)
	if !ok {
		t.Fatalf("no module in %v", body)
	}
	return m
}

// commandPayloads are the payloads of an instance's commands of a name, oldest first.
func (f *apiFixture) commandPayloads(t *testing.T, instance, name string) [][]byte {
	t.Helper()
	rows, err := f.pool.Query(context.Background(),
		`SELECT payload FROM agent_command WHERE instance_id = $1 AND name = $2 ORDER BY seq`, instance, name)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	return out
}

func TestModuleCreateValidatesAndSeals(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := f.projectA
	before := f.count(t, "module")
	for _, c := range []struct {
		what, body string
		status     int
		fault      string
	}{
		{"garbage base64", `{"module": {"name": "x", "module_type": "ping", "contents": "%%% not base64 %%%"}}`, 400, "badRequest"},
		{"empty contents", `{"module": {"name": "x", "module_type": "ping", "contents": ""}}`, 0, ""},
		{"unknown type", `{"module": {"name": "x", "module_type": "bogus", "contents": "` + b64("a") + `"}}`, 404, "itemNotFound"},
		{"name with slash", `{"module": {"name": "../x", "module_type": "ping", "contents": "` + b64("a") + `"}}`, 400, "badRequest"},
		{"version without datastore", `{"module": {"name": "x", "module_type": "ping", "contents": "` + b64("a") + `", "datastore": {"version": "16"}}}`, 400, "badRequest"},
		{"unknown datastore", `{"module": {"name": "x", "module_type": "ping", "contents": "` + b64("a") + `", "datastore": {"type": "nosuch"}}}`, 404, "itemNotFound"},
		{"flag not 0/1", `{"module": {"name": "x", "module_type": "ping", "contents": "` + b64("a") + `", "live_update": 7}}`, 0, ""},
		{"apply order 10", `{"module": {"name": "x", "module_type": "ping", "contents": "` + b64("a") + `", "apply_order": 10}}`, 0, ""},
	} {
		code, body := f.createModule(t, f.tokenA, a, c.body)
		switch {
		case c.status == 0 && (code < 400 || code >= 500):
			t.Errorf("%s: %d %v, want a 4xx", c.what, code, body)
		case c.status != 0 && code != c.status:
			t.Errorf("%s: %d %v, want %d", c.what, code, body, c.status)
		case c.fault != "":
			fault(t, body, c.fault, c.status)
		}
	}
	if n := f.count(t, "module"); n != before {
		t.Fatalf("refused creates left %d modules", n-before)
	}

	code, body := f.createModule(t, f.tokenA, a, `{"module": {"name": "lic", "module_type": "ping", "contents": "`+b64("secret-license")+`"}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	m := moduleOf(t, body)
	if m["md5"] != md5hex("secret-license") || m["tenant"] != a || m["tenant_id"] != a || m["is_admin"] != false ||
		m["visible"] != true || m["apply_order"] != float64(5) || m["datastore"] != "all" || m["datastore_version"] != "all" {
		t.Errorf("created module: %v", m)
	}
	if _, ok := m["contents"]; ok {
		t.Errorf("module view shows contents: %v", m)
	}
	var contents, key []byte
	if err := f.pool.QueryRow(context.Background(), "SELECT contents, contents_key FROM module WHERE id = $1", m["id"]).Scan(&contents, &key); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(contents, []byte("secret-license")) || len(key) == 0 {
		t.Errorf("contents at rest are not sealed: %q (key %d bytes)", contents, len(key))
	}
	code, body = f.createModule(t, f.tokenA, a, `{"module": {"name": "lic", "module_type": "ping", "contents": "`+b64("x")+`"}}`)
	if code != 400 {
		t.Errorf("duplicate name: %d %v", code, body)
	}
	code, body = f.do(t, "GET", "/v1.0/"+a+"/modules/"+m["id"].(string), f.tokenA, "")
	if code != 200 || moduleOf(t, body)["instance_count"] != float64(0) {
		t.Errorf("show: %d %v", code, body)
	}

	// Bad module lists in an instance create: a 4xx, no instance.
	for _, mods := range []string{`"x"`, `{"id": "` + m["id"].(string) + `"}`, `[{"id": 5}]`, `[{}]`, `["` + m["id"].(string) + `"]`,
		`[{"id": "` + uuidLike + `"}]`} {
		code, body := f.do(t, "POST", "/v1.0/"+a+"/instances", f.tokenA,
			`{"instance": {"name": "bad-mods", "flavorRef": "1", "volume": {"size": 1}, "modules": `+mods+`}}`)
		if code < 400 || code >= 500 {
			t.Errorf("create with modules %s: %d %v", mods, code, body)
		}
	}
	if n := f.count(t, "instance"); n != 0 {
		t.Errorf("refused creates left %d instances", n)
	}
}

const uuidLike = "4b0c1c9e-1d7a-4a7e-9b51-0c9f3b2d6e11"

func TestModuleAdminOptions(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := f.projectA
	c := `"contents": "` + b64("x") + `"`
	for opt, options := range map[string]string{
		`"all_tenants": 1`:    "(Tenant: all)",
		`"auto_apply": 1`:     "(Auto: True)",
		`"visible": 0`:        "(Visible: False)",
		`"priority_apply": 1`: "(Priority: True)",
		`"full_access": 1`:    "(Full Access: True)",
		`"full_access": 0`:    "(Full Access: False)",
	} {
		code, body := f.createModule(t, f.tokenA, a, `{"module": {"name": "m", "module_type": "ping", `+c+`, `+opt+`}}`)
		if code != 403 {
			t.Errorf("member with %s: %d %v, want 403", opt, code, body)
			continue
		}
		if msg := fault(t, body, "forbidden", 403); msg != "You must be admin to create a module with these options. "+options {
			t.Errorf("member with %s: %q", opt, msg)
		}
	}
	code, body := f.createModule(t, f.admin, a, `{"module": {"name": "m", "module_type": "ping", `+c+`, "full_access": 1, "auto_apply": 1}}`)
	if code != 400 {
		t.Errorf("full access with admin options: %d %v", code, body)
	}
	if n := f.count(t, "module"); n != 0 {
		t.Fatalf("refused creates left %d modules", n)
	}

	// An admin's all-tenant auto-apply module: every project sees it, only admins change it.
	code, body = f.createModule(t, f.admin, a, `{"module": {"name": "global", "module_type": "ping", `+c+`, "all_tenants": 1, "auto_apply": 1}}`)
	if code != 200 {
		t.Fatalf("admin create: %d %v", code, body)
	}
	global := moduleOf(t, body)
	if global["tenant"] != "all" || global["tenant_id"] != nil || global["is_admin"] != true || global["auto_apply"] != true {
		t.Errorf("all-tenant module: %v", global)
	}
	code, body = f.createModule(t, f.admin, a, `{"module": {"name": "hidden", "module_type": "ping", `+c+`, "all_tenants": 1, "visible": 0}}`)
	if code != 200 {
		t.Fatalf("admin hidden create: %d %v", code, body)
	}
	hidden := moduleOf(t, body)["id"].(string)
	code, body = f.createModule(t, f.admin, a, `{"module": {"name": "open", "module_type": "ping", `+c+`, "full_access": 1}}`)
	if code != 200 || moduleOf(t, body)["is_admin"] != false {
		t.Fatalf("admin full-access create: %d %v", code, body)
	}
	own := moduleOf(t, func() map[string]any {
		_, b := f.createModule(t, f.tokenA, a, `{"module": {"name": "mine", "module_type": "ping", `+c+`}}`)
		return b
	}())["id"].(string)

	b := "/v1.0/" + f.projectB
	code, body = f.do(t, "GET", b+"/modules", f.tokenB, "")
	if code != 200 {
		t.Fatalf("B's list: %d %v", code, body)
	}
	var names []string
	for _, m := range body["modules"].([]any) {
		names = append(names, m.(map[string]any)["name"].(string))
	}
	if strings.Join(names, ",") != "global" {
		t.Errorf("B sees %v, want only the visible all-tenant module", names)
	}
	for _, id := range []string{own, hidden} {
		if code, body := f.do(t, "GET", b+"/modules/"+id, f.tokenB, ""); code != 404 {
			t.Errorf("B shows %s: %d %v", id, code, body)
		}
		if code, body := f.do(t, "DELETE", b+"/modules/"+id, f.tokenB, ""); code != 404 {
			t.Errorf("B deletes %s: %d %v", id, code, body)
		}
	}
	if code, body := f.do(t, "PUT", b+"/modules/"+global["id"].(string), f.tokenB, `{"module": {"description": "mine now"}}`); code != 403 {
		t.Errorf("B updates the admin module: %d %v", code, body)
	}
	if code, body := f.do(t, "DELETE", b+"/modules/"+global["id"].(string), f.tokenB, ""); code != 403 {
		t.Errorf("B deletes the admin module: %d %v", code, body)
	}
	// A member may not make its module an admin one.
	if code, body := f.do(t, "PUT", "/v1.0/"+a+"/modules/"+own, f.tokenA, `{"module": {"auto_apply": 1}}`); code != 403 {
		t.Errorf("member sets auto_apply: %d %v", code, body)
	}
	// The admin sees all of them, with a datastore filter.
	code, body = f.do(t, "GET", "/v1.0/"+a+"/modules?datastore=all", f.admin, "")
	if code != 200 || len(body["modules"].([]any)) != 4 {
		t.Errorf("admin list: %d %v", code, body)
	}
	code, body = f.do(t, "GET", "/v1.0/"+a+"/modules?datastore=postgresql", f.admin, "")
	if code != 200 || len(body["modules"].([]any)) != 0 {
		t.Errorf("admin list of postgresql modules: %d %v", code, body)
	}

	// A create gets the auto-apply module after prepare, with the ones it names.
	code, body = f.do(t, "POST", "/v1.0/"+a+"/instances", f.tokenA,
		`{"instance": {"name": "with-mods", "flavorRef": "1", "volume": {"size": 1}, "modules": [{"id": "`+own+`"}]}}`)
	if code != 200 {
		t.Fatalf("create with modules: %d %v", code, body)
	}
	inst := body["instance"].(map[string]any)["id"].(string)
	var names2 []string
	if err := f.pool.QueryRow(context.Background(), `SELECT array_agg(name ORDER BY seq) FROM agent_command WHERE instance_id = $1`, inst).Scan(&names2); err != nil {
		t.Fatal(err)
	}
	if strings.Join(names2, ",") != "prepare,module_apply" {
		t.Errorf("commands of the new instance: %v", names2)
	}
	var req protocol.ModuleApplyRequest
	if err := json.Unmarshal(f.commandPayloads(t, inst, protocol.CommandModuleApply)[0], &req); err != nil {
		t.Fatal(err)
	}
	if len(req.Modules) != 2 || string(req.Modules[0].Contents) != "x" {
		t.Errorf("apply at create: %+v", req)
	}
	// Another project's module in a create: not found, nothing created.
	n := f.count(t, "instance")
	code, body = f.do(t, "POST", b+"/instances", f.tokenB,
		`{"instance": {"name": "theirs", "flavorRef": "1", "volume": {"size": 1}, "modules": [{"id": "`+own+`"}]}}`)
	if code != 404 || f.count(t, "instance") != n {
		t.Errorf("B creates with A's module: %d %v", code, body)
	}
}

func TestInstanceModules(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := "/v1.0/" + f.projectA
	inst := f.acctInstance(t, `{"databases": [], "users": [], "root_enabled": false}`)
	_, body := f.createModule(t, f.tokenA, f.projectA, `{"module": {"name": "pinger", "module_type": "ping", "contents": "`+b64("hello")+`"}}`)
	mod := moduleOf(t, body)["id"].(string)

	if code, body := f.do(t, "POST", a+"/instances/"+inst+"/modules", f.tokenA, `{"modules": []}`); code != 400 {
		t.Errorf("apply nothing: %d %v", code, body)
	}
	code, body := f.do(t, "POST", a+"/instances/"+inst+"/modules", f.tokenA, `{"modules": [{"id": "`+mod+`"}]}`)
	if code != 200 {
		t.Fatalf("apply: %d %v", code, body)
	}
	if got := body["modules"].([]any); len(got) != 1 || got[0].(map[string]any)["name"] != "pinger" || got[0].(map[string]any)["status"] != nil {
		t.Errorf("apply answer: %v", body)
	}
	payloads := f.commandPayloads(t, inst, protocol.CommandModuleApply)
	var req protocol.ModuleApplyRequest
	if len(payloads) != 1 || json.Unmarshal(payloads[0], &req) != nil || len(req.Modules) != 1 ||
		string(req.Modules[0].Contents) != "hello" || req.Modules[0].MD5 != md5hex("hello") || req.Modules[0].Name != "pinger" {
		t.Fatalf("module_apply payloads: %s", payloads)
	}

	// Project B: A's instance and module are not found.
	b := "/v1.0/" + f.projectB
	for _, c := range [][3]string{
		{"GET", b + "/instances/" + inst + "/modules", ""},
		{"POST", b + "/instances/" + inst + "/modules", `{"modules": [{"id": "` + mod + `"}]}`},
		{"DELETE", b + "/instances/" + inst + "/modules/" + mod, ""},
		{"GET", b + "/modules/" + mod + "/instances", ""},
	} {
		if code, body := f.do(t, c[0], c[1], f.tokenB, c[2]); code != 404 {
			t.Errorf("B %s %s: %d %v", c[0], c[1], code, body)
		}
	}

	// The guest has not reported yet: from_guest lists nothing; the plain list has it.
	code, body = f.do(t, "GET", a+"/instances/"+inst+"/modules?from_guest=True", f.tokenA, "")
	if code != 200 || len(body["modules"].([]any)) != 0 {
		t.Errorf("from_guest before the report: %d %v", code, body)
	}
	code, body = f.do(t, "GET", a+"/instances/"+inst+"/modules", f.tokenA, "")
	if code != 200 || len(body["modules"].([]any)) != 1 {
		t.Errorf("list: %d %v", code, body)
	}
	// The guest's report, as the module_apply completion records it.
	f.acctExec(t, `UPDATE instance_module SET status = 'OK', message = 'Module applied' WHERE instance_id = $1`, inst)
	code, body = f.do(t, "GET", a+"/instances/"+inst+"/modules?from_guest=True&include_contents=True", f.tokenA, "")
	if code != 200 || len(body["modules"].([]any)) != 1 {
		t.Fatalf("from_guest: %d %v", code, body)
	}
	g := body["modules"].([]any)[0].(map[string]any)
	if g["status"] != "OK" || g["message"] != "Module applied" || g["contents"] != b64("hello") || g["md5"] != md5hex("hello") {
		t.Errorf("guest module: %v", g)
	}
	code, body = f.do(t, "GET", a+"/modules/"+mod+"/instances?count_only=True", f.tokenA, "")
	if code != 200 {
		t.Fatalf("count: %d %v", code, body)
	}
	if cs := body["instances"].([]any); len(cs) != 1 || cs[0].(map[string]any)["instance_count"] != float64(1) || cs[0].(map[string]any)["current"] != true {
		t.Errorf("count: %v", body)
	}
	code, body = f.do(t, "GET", a+"/modules/"+mod+"/instances", f.tokenA, "")
	if code != 200 || len(body["instances"].([]any)) != 1 || body["instances"].([]any)[0].(map[string]any)["id"] != inst {
		t.Errorf("module instances: %d %v", code, body)
	}

	// Applied to a live instance: no delete, no contents change.
	code, body = f.do(t, "DELETE", a+"/modules/"+mod, f.tokenA, "")
	if code != 403 || !strings.Contains(fault(t, body, "forbidden", 403), "non-terminated instance") {
		t.Errorf("delete while applied: %d %v", code, body)
	}
	if code, body := f.do(t, "PUT", a+"/modules/"+mod, f.tokenA, `{"module": {"contents": "`+b64("changed")+`"}}`); code != 403 {
		t.Errorf("contents change while applied: %d %v", code, body)
	}
	// A live_update module may change; reapply then queues a new apply.
	if code, body := f.do(t, "PUT", a+"/modules/"+mod, f.tokenA, `{"module": {"live_update": 1, "contents": "`+b64("changed")+`"}}`); code != 200 || moduleOf(t, body)["md5"] != md5hex("changed") {
		t.Errorf("live update: %d %v", code, body)
	}
	if code, body := f.do(t, "PUT", a+"/modules/"+mod+"/instances", f.tokenA, `{"reapply": {}}`); code != 202 {
		t.Errorf("reapply: %d %v", code, body)
	}
	if n := len(f.commandPayloads(t, inst, protocol.CommandModuleApply)); n != 2 {
		t.Errorf("%d module_apply commands after the reapply, want 2", n)
	}

	if code, body := f.do(t, "DELETE", a+"/instances/"+inst+"/modules/"+mod, f.tokenA, ""); code != 200 {
		t.Fatalf("remove: %d %v", code, body)
	}
	var rm protocol.ModuleRemoveRequest
	if p := f.commandPayloads(t, inst, protocol.CommandModuleRemove); len(p) != 1 || json.Unmarshal(p[0], &rm) != nil || rm.Name != "pinger" {
		t.Errorf("module_remove: %s", p)
	}
	if code, body := f.do(t, "DELETE", a+"/modules/"+mod, f.tokenA, ""); code != 200 {
		t.Errorf("delete after remove: %d %v", code, body)
	}
	if n := f.count(t, "module"); n != 0 {
		t.Errorf("%d modules after delete", n)
	}
}
