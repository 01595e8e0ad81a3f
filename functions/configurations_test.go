package functions_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// activeInstance creates an instance of project A through the API and
// makes it ACTIVE as a finished prepare would.
func (f *apiFixture) activeInstance(t *testing.T, name string) string {
	t.Helper()
	code, body := f.do(t, "POST", "/v1.0/"+f.projectA+"/instances", f.tokenA,
		`{"instance": {"name": "`+name+`", "flavorRef": "2", "volume": {"size": 1}}}`)
	if code != 200 {
		t.Fatalf("create instance: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	if _, err := f.pool.Exec(context.Background(), `UPDATE instance SET task = 'NONE', compute_status = 'ACTIVE',
		service_status = 'healthy', heartbeat_at = now() WHERE id = $1`, id); err != nil {
		t.Fatal(err)
	}
	return id
}

// applies returns the apply_configuration commands queued for an
// instance, oldest first, with their restart flag from configuration_apply.
func (f *apiFixture) applies(t *testing.T, instance string) []protocol.ApplyConfigurationRequest {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), `SELECT c.payload FROM agent_command c
		JOIN configuration_apply a ON a.command_id = c.id
		WHERE c.instance_id = $1 AND c.name = 'apply_configuration' ORDER BY c.created_at`, instance)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []protocol.ApplyConfigurationRequest
	for rows.Next() {
		var b []byte
		if err := rows.Scan(&b); err != nil {
			t.Fatal(err)
		}
		var r protocol.ApplyConfigurationRequest
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestConfigurationParameters(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	base := "/v1.0/" + f.projectA
	code, body := f.do(t, "GET", base+"/datastores/postgresql/versions", f.tokenA, "")
	if code != 200 {
		t.Fatalf("versions: %d %v", code, body)
	}
	ver := body["versions"].([]any)[0].(map[string]any)
	verID, verName := ver["id"].(string), ver["name"].(string)

	code, body = f.do(t, "GET", base+"/datastores/postgresql/versions/"+verName+"/parameters", f.tokenA, "")
	if code != 200 {
		t.Fatalf("parameters by name: %d %v", code, body)
	}
	params := body["configuration-parameters"].([]any)
	byName := map[string]map[string]any{}
	for _, p := range params {
		byName[p.(map[string]any)["name"].(string)] = p.(map[string]any)
	}
	if len(params) != 182 { // Trove's 183 PostgreSQL rules without archive_command
		t.Errorf("%d parameters", len(params))
	}
	if _, ok := byName["archive_command"]; ok {
		t.Error("archive_command is offered")
	}
	mc := byName["max_connections"]
	if mc["restart_required"] != true || mc["type"] != "integer" || mc["datastore_version_id"] != verID {
		t.Errorf("max_connections = %v", mc)
	}
	if _, ok := mc["min"]; ok {
		t.Errorf("a 0 minimum is shown: %v", mc)
	}
	if w := byName["work_mem"]; w["restart_required"] != false || w["type"] != "string" {
		t.Errorf("work_mem = %v", w)
	}
	if s := byName["superuser_reserved_connections"]; s["min"] != 1.0 {
		t.Errorf("superuser_reserved_connections = %v", s)
	}

	// The same by version id, and one parameter, unwrapped.
	code, body = f.do(t, "GET", base+"/datastores/versions/"+verID+"/parameters", f.tokenA, "")
	if code != 200 || len(body["configuration-parameters"].([]any)) != len(params) {
		t.Errorf("parameters by id: %d", code)
	}
	for _, path := range []string{
		"/datastores/postgresql/versions/" + verID + "/parameters/temp_file_limit",
		"/datastores/versions/" + verID + "/parameters/temp_file_limit",
		"/datastores/versions/" + verID + "/parameters/TEMP_FILE_LIMIT",
	} {
		code, body = f.do(t, "GET", base+path, f.tokenA, "")
		if code != 200 || body["name"] != "temp_file_limit" || body["min"] != -1.0 || body["type"] != "integer" {
			t.Errorf("%s = %d %v", path, code, body)
		}
	}

	// MariaDB's rules have a maximum beyond int64: shown exactly.
	code, body = f.do(t, "GET", base+"/datastores/mariadb/versions/10.11/parameters/max_connect_errors", f.tokenA, "")
	if code != 200 {
		t.Fatalf("mariadb parameter: %d %v", code, body)
	}
	raw := f.raw(t, "GET", base+"/datastores/mariadb/versions/10.11/parameters/max_connect_errors", f.tokenA)
	if !strings.Contains(raw, `"max":18446744073709551615`) {
		t.Errorf("max not exact: %s", raw)
	}

	for _, c := range []struct {
		path, fault string
		code        int
	}{
		{"/datastores/postgresql/versions/" + verName + "/parameters/no_such", "itemNotFound", 404},
		{"/datastores/versions/" + verID + "/parameters/no_such", "itemNotFound", 404},
		{"/datastores/postgresql/versions/8.4/parameters", "badRequest", 400},
		{"/datastores/oracle/versions/1/parameters", "itemNotFound", 404},
		{"/datastores/versions/00000000-0000-0000-0000-000000000000/parameters", "badRequest", 400},
		{"/datastores/versions/not-a-uuid", "badRequest", 400},
		// The by-id routes match only their literal segments.
		{"/datastores/postgresql/" + verID, "itemNotFound", 404},
		{"/datastores/postgresql/" + verID + "/parameters", "itemNotFound", 404},
		{"/datastores/versions/" + verID + "/params", "itemNotFound", 404},
		{"/datastores/versions/" + verID + "/params/work_mem", "itemNotFound", 404},
	} {
		code, body := f.do(t, "GET", base+c.path, f.tokenA, "")
		if code != c.code {
			t.Errorf("%s: %d, want %d (%v)", c.path, code, c.code, body)
			continue
		}
		fault(t, body, c.fault, c.code)
	}

	// datastore version show by id (the CLI without --datastore).
	code, body = f.do(t, "GET", base+"/datastores/versions/"+verID, f.tokenA, "")
	if code != 200 || body["version"].(map[string]any)["id"] != verID || body["version"].(map[string]any)["name"] != verName {
		t.Errorf("version by id: %d %v", code, body)
	}
}

// raw returns a response body as text.
func (f *apiFixture) raw(t *testing.T, method, path, token string) string {
	t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("X-Auth-Token", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestConfigurationGroups(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	ctx := context.Background()
	base := "/v1.0/" + f.projectA + "/configurations"

	// Bad input: Trove's messages, nothing stored.
	for _, c := range []struct {
		body, fault, want string
		code              int
	}{
		{`{"configuration": {"name": "g", "values": {"no_such_param": 1}}}`, "unprocessableEntity", "The configuration parameter no_such_param is not supported for this datastore: postgresql", 422},
		{`{"configuration": {"name": "g", "values": {"max_connections": "200"}}}`, "unprocessableEntity", "The value provided for the configuration parameter max_connections is not of type integer.", 422},
		{`{"configuration": {"name": "g", "values": {"max_connections": 20.5}}}`, "unprocessableEntity", "not of type integer", 422},
		{`{"configuration": {"name": "g", "values": {"max_connections": -5}}}`, "unprocessableEntity", "The value for the configuration parameter max_connections is less than the minimum allowed: 0", 422},
		{`{"configuration": {"name": "g", "values": {"superuser_reserved_connections": 0}}}`, "unprocessableEntity", "less than the minimum allowed: 1", 422},
		{`{"configuration": {"name": "g", "values": {"work_mem": 16}}}`, "unprocessableEntity", "is not of type string", 422},
		{`{"configuration": {"name": "g", "values": {"autovacuum": 1}}}`, "unprocessableEntity", "is not of type boolean", 422},
		{`{"configuration": {"name": "g", "values": {"parallel_setup_cost": 1000}}}`, "unprocessableEntity", "is not of type float", 422},
		{`{"configuration": {"name": "g", "values": {"work_mem": "1MB", "WORK_MEM": "2MB"}}}`, "unprocessableEntity", "given twice", 422},
		{`{"configuration": {"name": "g", "values": {"search_path": "public\n include '/etc/passwd'"}}}`, "unprocessableEntity", "line breaks", 422},
		{`{"configuration": {"name": "g"}}`, "badRequest", "values", 400},
		{`{"configuration": {"name": "g", "values": [1]}}`, "badRequest", "Validation error", 400},
		{`{"configuration": {"values": {}}}`, "badRequest", "name", 400},
		{`{"configuration": {"name": "--", "values": {}}}`, "badRequest", "letter or digit", 400},
		{`{"configuration": {"name": "g", "values": {}, "datastore": {"type": "oracle"}}}`, "itemNotFound", "oracle", 404},
		{`{"configuration": {"name": "g", "values": {}, "datastore": {"type": "postgresql", "version": "8.4"}}}`, "badRequest", "8.4", 400},
		{`{"configuration": {"name": "g", "values": {}, "datastore": {"type": "redis"}}}`, "badRequest", "not active", 400},
		{`{"configuration": {`, "badRequest", "", 400},
	} {
		code, body := f.do(t, "POST", base, f.tokenA, c.body)
		if code != c.code {
			t.Errorf("%s: %d, want %d (%v)", c.body, code, c.code, body)
			continue
		}
		if msg := fault(t, body, c.fault, c.code); !strings.Contains(msg, c.want) {
			t.Errorf("%s: message %q, want %q", c.body, msg, c.want)
		}
	}
	if n := f.count(t, "configuration"); n != 0 {
		t.Fatalf("bad input stored %d groups", n)
	}

	// Create: 200 with the detail view; values keep their JSON types.
	code, body := f.do(t, "POST", base, f.tokenA, `{"configuration": {"name": "tuned", "description": "for tests",
		"values": {"work_mem": "16MB", "max_connections": 120, "autovacuum": false, "parallel_setup_cost": 1000.0,
		"log_min_duration_statement": "250ms", "max_locks_per_transaction": true},
		"datastore": {"type": "postgresql"}}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	g := body["configuration"].(map[string]any)
	gid := g["id"].(string)
	vals := g["values"].(map[string]any)
	if vals["work_mem"] != "16MB" || vals["max_connections"] != 120.0 || vals["autovacuum"] != false || g["instance_count"] != 0.0 ||
		g["datastore_name"] != "postgresql" || g["datastore_version_id"] == "" || g["description"] != "for tests" ||
		g["datastore_version_number"] == "" || g["created"] == nil {
		t.Errorf("created group = %v", g)
	}

	// Show, list; another project sees nothing.
	if code, body = f.do(t, "GET", base+"/"+gid, f.tokenA, ""); code != 200 || body["configuration"].(map[string]any)["name"] != "tuned" {
		t.Errorf("show: %d %v", code, body)
	}
	code, body = f.do(t, "GET", base, f.tokenA, "")
	if code != 200 || len(body["configurations"].([]any)) != 1 {
		t.Fatalf("list: %d %v", code, body)
	}
	if _, ok := body["configurations"].([]any)[0].(map[string]any)["values"]; ok {
		t.Error("list items carry values")
	}
	if code, body = f.do(t, "GET", "/v1.0/"+f.projectB+"/configurations", f.tokenB, ""); code != 200 || len(body["configurations"].([]any)) != 0 {
		t.Errorf("other project's list: %d %v", code, body)
	}
	for _, m := range []string{"GET", "DELETE"} {
		code, body = f.do(t, m, "/v1.0/"+f.projectB+"/configurations/"+gid, f.tokenB, "")
		if code != 404 {
			t.Errorf("other project's %s: %d", m, code)
		}
	}
	if code, _ = f.do(t, "PATCH", "/v1.0/"+f.projectB+"/configurations/"+gid, f.tokenB, `{"configuration": {"values": {"work_mem": "1MB"}}}`); code != 404 {
		t.Errorf("other project's patch: %d", code)
	}
	if code, _ = f.do(t, "GET", base+"/not-a-uuid", f.tokenA, ""); code != 404 {
		t.Errorf("malformed id: %d", code)
	}

	// Attach to an ACTIVE instance through the instance update.
	inst := f.activeInstance(t, "cfg-db")
	other := f.activeInstance(t, "plain-db")
	iBase := "/v1.0/" + f.projectA + "/instances/"
	if code, body = f.do(t, "PUT", iBase+inst, f.tokenA, `{"instance": {"configuration": "`+gid+`"}}`); code != 202 {
		t.Fatalf("attach: %d %v", code, body)
	}
	applies := f.applies(t, inst)
	if len(applies) != 1 {
		t.Fatalf("applies = %v", applies)
	}
	want := map[string]string{"work_mem": "16MB", "max_connections": "120", "autovacuum": "off", "parallel_setup_cost": "1000.0",
		"log_min_duration_statement": "250ms", "max_locks_per_transaction": "1"}
	if !applies[0].Restart || len(applies[0].Values) != len(want) {
		t.Errorf("apply = %+v", applies[0])
	}
	for k, v := range want {
		if applies[0].Values[k] != v {
			t.Errorf("apply value %s = %q, want %q", k, applies[0].Values[k], v)
		}
	}
	code, body = f.do(t, "GET", iBase+inst, f.tokenA, "")
	ref, _ := body["instance"].(map[string]any)["configuration"].(map[string]any)
	if ref["id"] != gid || ref["name"] != "tuned" || ref["links"] == nil {
		t.Errorf("instance shows configuration %v", ref)
	}
	// Trove's checks: already attached, not idle, other project's group.
	code, body = f.do(t, "PUT", iBase+inst, f.tokenA, `{"instance": {"configuration": "`+gid+`"}}`)
	if msg := fault(t, body, "badRequest", 400); code != 400 || !strings.Contains(msg, "already has a Configuration Group attached") {
		t.Errorf("attach twice: %d %s", code, msg)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE instance SET task = 'REBOOTING' WHERE id = $1", other); err != nil {
		t.Fatal(err)
	}
	code, body = f.do(t, "PUT", iBase+other, f.tokenA, `{"instance": {"configuration": "`+gid+`"}}`)
	if msg := fault(t, body, "badRequest", 400); code != 400 || !strings.Contains(msg, "instance status is currently: REBOOTING") {
		t.Errorf("attach while rebooting: %d %s", code, msg)
	}
	if _, err := f.pool.Exec(ctx, "UPDATE instance SET task = 'NONE' WHERE id = $1", other); err != nil {
		t.Fatal(err)
	}
	code, body = f.do(t, "POST", "/v1.0/"+f.projectB+"/configurations", f.tokenB, `{"configuration": {"name": "b", "values": {}}}`)
	if code != 200 {
		t.Fatalf("create in b: %d %v", code, body)
	}
	bGroup := body["configuration"].(map[string]any)["id"].(string)
	if code, body = f.do(t, "PUT", iBase+other, f.tokenA, `{"instance": {"configuration": "`+bGroup+`"}}`); code != 404 {
		t.Errorf("attach another project's group: %d %v", code, body)
	}
	if len(f.applies(t, other)) != 0 {
		t.Error("a refused attach queued a command")
	}

	// The group lists its instance and refuses to be deleted.
	code, body = f.do(t, "GET", base+"/"+gid+"/instances", f.tokenA, "")
	if code != 200 || len(body["instances"].([]any)) != 1 || body["instances"].([]any)[0].(map[string]any)["id"] != inst {
		t.Errorf("group instances: %d %v", code, body)
	}
	if code, body = f.do(t, "GET", base+"/"+gid, f.tokenA, ""); body["configuration"].(map[string]any)["instance_count"] != 1.0 {
		t.Errorf("instance_count: %v", body)
	}
	code, body = f.do(t, "DELETE", base+"/"+gid, f.tokenA, "")
	if msg := fault(t, body, "badRequest", 400); code != 400 || !strings.Contains(msg, "associated with one or more non-terminated instances") {
		t.Errorf("delete attached: %d %s", code, msg)
	}

	// PATCH merges (200, no body) and re-applies; a dynamic-only change
	// needs no restart.
	code, body = f.do(t, "PATCH", base+"/"+gid, f.tokenA, `{"configuration": {"values": {"work_mem": "32MB"}}}`)
	if code != 200 || body != nil {
		t.Fatalf("patch: %d %v", code, body)
	}
	applies = f.applies(t, inst)
	if len(applies) != 2 || applies[1].Restart || applies[1].Values["work_mem"] != "32MB" || applies[1].Values["max_connections"] != "120" {
		t.Errorf("after patch: %+v", applies)
	}
	// Invalid values change nothing.
	code, body = f.do(t, "PATCH", base+"/"+gid, f.tokenA, `{"configuration": {"values": {"max_connections": "lots"}}}`)
	if code != 422 || len(f.applies(t, inst)) != 2 {
		t.Errorf("invalid patch: %d %v", code, body)
	}
	// PUT replaces everything (202); dropping max_connections needs a restart.
	code, body = f.do(t, "PUT", base+"/"+gid, f.tokenA, `{"configuration": {"name": "renamed", "values": {"work_mem": "8MB"}}}`)
	if code != 202 || body != nil {
		t.Fatalf("put: %d %v", code, body)
	}
	applies = f.applies(t, inst)
	if len(applies) != 3 || !applies[2].Restart || len(applies[2].Values) != 1 || applies[2].Values["work_mem"] != "8MB" {
		t.Errorf("after put: %+v", applies)
	}
	code, body = f.do(t, "GET", base+"/"+gid, f.tokenA, "")
	if g := body["configuration"].(map[string]any); g["name"] != "renamed" || g["description"] != "for tests" || len(g["values"].(map[string]any)) != 1 {
		t.Errorf("after put: %v", g)
	}

	// The default configuration comes from the flavor (m1.small, 1024 MB).
	code, body = f.do(t, "GET", iBase+inst+"/configuration", f.tokenA, "")
	def, _ := body["instance"].(map[string]any)["configuration"].(map[string]any)
	if code != 200 || def["max_connections"] != 100.0 || def["shared_buffers"] != "256MB" {
		t.Errorf("default configuration: %d %v", code, body)
	}
	if code, _ = f.do(t, "GET", "/v1.0/"+f.projectB+"/instances/"+inst+"/configuration", f.tokenB, ""); code != 404 {
		t.Errorf("other project's default configuration: %d", code)
	}

	// Detach restores the defaults (empty values); the group now holds
	// only work_mem, so no restart is needed.
	if code, body = f.do(t, "PUT", iBase+inst, f.tokenA, `{"instance": {"configuration": null}}`); code != 202 {
		t.Fatalf("detach: %d %v", code, body)
	}
	applies = f.applies(t, inst)
	if len(applies) != 4 || applies[3].Restart || len(applies[3].Values) != 0 {
		t.Errorf("detach apply: %+v", applies)
	}
	code, body = f.do(t, "GET", iBase+inst, f.tokenA, "")
	if _, ok := body["instance"].(map[string]any)["configuration"]; ok {
		t.Errorf("still attached: %v", body)
	}
	// Detaching again does nothing.
	if code, _ = f.do(t, "PUT", iBase+inst, f.tokenA, `{"instance": {"configuration": null}}`); code != 202 || len(f.applies(t, inst)) != 4 {
		t.Errorf("second detach: %d", code)
	}
	if code, body = f.do(t, "DELETE", base+"/"+gid, f.tokenA, ""); code != 202 || body != nil {
		t.Errorf("delete: %d %v", code, body)
	}
	if code, _ = f.do(t, "GET", base+"/"+gid, f.tokenA, ""); code != 404 {
		t.Errorf("show after delete: %d", code)
	}
}

func TestConfigurationListPaginates(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	base := "/v1.0/" + f.projectA + "/configurations"
	for range 23 {
		if code, body := f.do(t, "POST", base, f.tokenA, `{"configuration": {"name": "g", "values": {}}}`); code != 200 {
			t.Fatalf("create: %d %v", code, body)
		}
	}
	seen := map[string]bool{}
	path := base
	for pages := 0; path != ""; pages++ {
		if pages > 3 {
			t.Fatal("too many pages")
		}
		code, body := f.do(t, "GET", path, f.tokenA, "")
		if code != 200 {
			t.Fatalf("list: %d %v", code, body)
		}
		for _, it := range body["configurations"].([]any) {
			seen[it.(map[string]any)["id"].(string)] = true
		}
		path = ""
		if links, ok := body["links"].([]any); ok {
			href := links[0].(map[string]any)["href"].(string)
			path = href[strings.Index(href, "/v1.0/"):]
		}
	}
	if len(seen) != 23 {
		t.Errorf("pages covered %d groups", len(seen))
	}
	// The admin sees every project's.
	if code, body := f.do(t, "POST", "/v1.0/"+f.projectB+"/configurations", f.tokenB, `{"configuration": {"name": "b", "values": {}}}`); code != 200 {
		t.Fatalf("create b: %d %v", code, body)
	}
	code, body := f.do(t, "GET", base+"?limit=100", f.admin, "")
	if code != 200 || len(body["configurations"].([]any)) != 20 || body["links"] == nil {
		t.Errorf("admin list: %d %d", code, len(body["configurations"].([]any)))
	}
}
