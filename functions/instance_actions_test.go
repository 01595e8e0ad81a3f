package functions_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// actInstance creates an instance through the API and makes it ACTIVE
// and HEALTHY as a finished prepare would.
func (f *apiFixture) actInstance(t *testing.T) string {
	t.Helper()
	code, body := f.do(t, "POST", "/v1.0/"+f.projectA+"/instances", f.tokenA, validCreate)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	f.actSQL(t, `UPDATE instance SET task = 'NONE', compute_status = 'ACTIVE', service_status = 'healthy', heartbeat_at = now() WHERE id = $1`, id)
	f.actSQL(t, `UPDATE agent_command SET state = 'succeeded', payload = '{}' WHERE instance_id = $1`, id)
	return id
}

func (f *apiFixture) actSQL(t *testing.T, sql string, args ...any) {
	t.Helper()
	if _, err := f.pool.Exec(context.Background(), sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// row reads the columns an action changes.
type actRow struct {
	Task, Service, Flavor, Name string
	VolumeGB                    int
}

func (f *apiFixture) actState(t *testing.T, id string) actRow {
	t.Helper()
	var s actRow
	if err := f.pool.QueryRow(context.Background(), "SELECT task, service_status, flavor_id, name, volume_size_gb FROM instance WHERE id = $1", id).
		Scan(&s.Task, &s.Service, &s.Flavor, &s.Name, &s.VolumeGB); err != nil {
		t.Fatal(err)
	}
	return s
}

// actCommands lists the instance's undelivered or running commands as
// "name payload".
func (f *apiFixture) actCommands(t *testing.T, id string) []string {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT name, payload::text FROM agent_command WHERE instance_id = $1 AND state IN ('pending', 'leased') ORDER BY created_at", id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var n, p string
		if err := rows.Scan(&n, &p); err != nil {
			t.Fatal(err)
		}
		out = append(out, n+" "+p)
	}
	return out
}

func (f *apiFixture) actShow(t *testing.T, id, token string) map[string]any {
	t.Helper()
	code, body := f.do(t, "GET", "/v1.0/"+f.projectA+"/instances/"+id, token, "")
	if code != 200 {
		t.Fatalf("show: %d %v", code, body)
	}
	return body["instance"].(map[string]any)
}

func (f *apiFixture) actEvents(t *testing.T, id string) string {
	t.Helper()
	rows, err := f.pool.Query(context.Background(), "SELECT kind FROM event WHERE resource_id = $1 ORDER BY id", id)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var kinds []string
	for rows.Next() {
		var k string
		_ = rows.Scan(&k)
		kinds = append(kinds, k)
	}
	return strings.Join(kinds, ",")
}

func TestInstanceActionRestart(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.actInstance(t)
	path := "/v1.0/" + f.projectA + "/instances/" + id + "/action"

	code, body := f.do(t, "POST", path, f.tokenA, `{"restart": {}}`)
	if code != 202 || body != nil {
		t.Fatalf("restart: %d %v", code, body)
	}
	if s := f.actState(t, id); s.Task != "REBOOTING" || s.Service != "restarting" {
		t.Errorf("after restart: %+v", s)
	}
	if cmds := f.actCommands(t, id); len(cmds) != 1 || cmds[0] != "restart {}" {
		t.Errorf("commands = %v", cmds)
	}
	if v := f.actShow(t, id, f.tokenA); v["status"] != "REBOOT" || v["operating_status"] != "" {
		t.Errorf("shown while restarting: %v %v", v["status"], v["operating_status"])
	}
	var action, by string
	if err := f.pool.QueryRow(context.Background(), "SELECT action, requested_by FROM instance_action WHERE instance_id = $1", id).Scan(&action, &by); err != nil || action != "restart" || by != "alice" {
		t.Errorf("action row: %s %s %v", action, by, err)
	}
	if ev := f.actEvents(t, id); ev != "instance.created,instance.restarting" {
		t.Errorf("events = %s", ev)
	}
	// Its deadline is scheduled with it, beyond the command's lease.
	var deadlines int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job j JOIN agent_command c ON c.id::text = j.args->>'command_id'
		WHERE j.kind = 'complete_command' AND j.state = 'scheduled' AND c.instance_id = $1 AND c.name = 'restart'
		  AND j.scheduled_at > now() + interval '10 minutes' AND j.args ? 'deadline'`, id).Scan(&deadlines); err != nil || deadlines != 1 {
		t.Errorf("restart deadline jobs: %d %v", deadlines, err)
	}

	// Nothing else while it restarts (Trove's §5.4 check).
	for _, b := range []string{`{"restart": {}}`, `{"resize": {"flavorRef": "2"}}`, `{"resize": {"volume": {"size": 2}}}`} {
		code, body = f.do(t, "POST", path, f.tokenA, b)
		if code != 422 {
			t.Fatalf("%s while rebooting: %d %v", b, code, body)
		}
		if msg := fault(t, body, "unprocessableEntity", 422); !strings.Contains(msg, "task status was REBOOTING") {
			t.Errorf("message %q", msg)
		}
	}
	if cmds := f.actCommands(t, id); len(cmds) != 1 {
		t.Errorf("refused actions queued commands: %v", cmds)
	}
}

func TestInstanceActionResize(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	ctx := context.Background()
	id := f.actInstance(t)
	path := "/v1.0/" + f.projectA + "/instances/" + id + "/action"
	cases := []struct {
		name, body, fault string
		code              int
		contains          string
	}{
		{"same flavor", `{"resize": {"flavorRef": "1"}}`, "badRequest", 400, "must be different than the current flavor id of '1'"},
		{"same flavor as int", `{"resize": {"flavorRef": 1}}`, "badRequest", 400, "must be different"},
		{"unknown flavor", `{"resize": {"flavorRef": "99"}}`, "badRequest", 400, "Flavor 99"},
		{"empty flavor", `{"resize": {"flavorRef": ""}}`, "badRequest", 400, "flavorRef"},
		{"flavor and volume", `{"resize": {"flavorRef": "2", "volume": {"size": 2}}}`, "badRequest", 400, "at the same time"},
		{"nothing to resize", `{"resize": {}}`, "badRequest", 400, "Missing resize arguments"},
		{"same volume", `{"resize": {"volume": {"size": 1}}}`, "badRequest", 400, "larger than the current volume size of '1'"},
		{"zero volume", `{"resize": {"volume": {"size": 0}}}`, "badRequest", 400, "positive integer"},
		{"volume not a number", `{"resize": {"volume": {"size": "big"}}}`, "badRequest", 400, "positive integer"},
		{"volume without size", `{"resize": {"volume": {}}}`, "badRequest", 400, "Validation error"},
		{"volume too large", `{"resize": {"volume": {"size": 11}}}`, "overLimit", 413, "cannot exceed maximum of 10 GB"},
		{"resize not an object", `{"resize": "2"}`, "badRequest", 400, "Validation error"},
		{"no action", `{}`, "badRequest", 400, "No action given"},
		{"unknown action", `{"reboot": {}}`, "badRequest", 400, "No action given"},
		{"two actions", `{"restart": {}, "resize": {"flavorRef": "2"}}`, "badRequest", 400, "resize, restart"},
		{"restart not an object", `{"restart": 1}`, "badRequest", 400, "Validation error"},
		{"not JSON", `{"restart": `, "badRequest", 400, ""},
		{"promote", `{"promote_to_replica_source": {}}`, "badRequest", 400, "is not a replica."},
		{"eject", `{"eject_replica_source": {}}`, "badRequest", 400, "is not a replica source."},
		{"reset password", `{"reset_password": {}}`, "notImplemented", 501, "not supported"},
		{"member reset_status", `{"reset_status": {}}`, "forbidden", 403, "Policy doesn't allow instance:reset_status to be performed."},
	}
	for _, c := range cases {
		code, body := f.do(t, "POST", path, f.tokenA, c.body)
		if code != c.code {
			t.Errorf("%s: %d %v, want %d", c.name, code, body, c.code)
			continue
		}
		if msg := fault(t, body, c.fault, c.code); !strings.Contains(msg, c.contains) {
			t.Errorf("%s: message %q does not contain %q", c.name, msg, c.contains)
		}
	}
	// None of that changed anything.
	if s := f.actState(t, id); s.Task != "NONE" || s.Service != "healthy" || s.Flavor != "1" || s.VolumeGB != 1 {
		t.Errorf("after refused requests: %+v", s)
	}
	if cmds := f.actCommands(t, id); len(cmds) != 0 {
		t.Errorf("refused requests queued %v", cmds)
	}
	if n := f.count(t, "instance_action"); n != 0 {
		t.Errorf("refused requests recorded %d actions", n)
	}

	// Another project's instance, a malformed id: 404 before anything.
	for _, p := range []string{"/v1.0/" + f.projectB + "/instances/" + id + "/action", "/v1.0/" + f.projectB + "/instances/nope/action"} {
		code, body := f.do(t, "POST", p, f.tokenB, `{"restart": {}}`)
		if code != 404 {
			t.Fatalf("POST %s: %d %v", p, code, body)
		}
		fault(t, body, "itemNotFound", 404)
	}
	if code, body := f.do(t, "POST", "/v1.0/"+f.projectB+"/instances/"+id+"/action", f.tokenB, `{}`); code != 404 {
		t.Errorf("foreign instance, no action: %d %v", code, body)
	}

	// Flavor resize by href: RESIZE, the agent gets the new flavor's memory.
	code, body := f.do(t, "POST", path, f.tokenA, `{"resize": {"flavorRef": "http://coffer.example/v1.0/x/flavors/2"}}`)
	if code != 202 || body != nil {
		t.Fatalf("resize flavor: %d %v", code, body)
	}
	if s := f.actState(t, id); s.Task != "RESIZING" || s.Flavor != "1" || s.Service != "healthy" {
		t.Errorf("while resizing: %+v (the flavor changes when the guest is done)", s)
	}
	if cmds := f.actCommands(t, id); len(cmds) != 1 || cmds[0] != `resize_flavor {"flavor_ram_mb": 1024}` {
		t.Errorf("commands = %v", cmds)
	}
	var from, to string
	if err := f.pool.QueryRow(ctx, "SELECT from_flavor_id, to_flavor_id FROM instance_action WHERE instance_id = $1", id).Scan(&from, &to); err != nil || from != "1" || to != "2" {
		t.Errorf("action: %s → %s %v", from, to, err)
	}
	if v := f.actShow(t, id, f.tokenA); v["status"] != "RESIZE" {
		t.Errorf("status while resizing = %v", v["status"])
	}

	// Volume resize on another instance.
	other := f.actInstance(t)
	code, body = f.do(t, "POST", "/v1.0/"+f.projectA+"/instances/"+other+"/action", f.tokenA, `{"resize": {"volume": {"size": "3"}}}`)
	if code != 202 {
		t.Fatalf("resize volume: %d %v", code, body)
	}
	if s := f.actState(t, other); s.Task != "RESIZING" || s.VolumeGB != 1 {
		t.Errorf("while resizing the volume: %+v", s)
	}
	if cmds := f.actCommands(t, other); len(cmds) != 1 || cmds[0] != `resize_volume {"volume_size_gb": 3}` {
		t.Errorf("commands = %v", cmds)
	}
	if ev := f.actEvents(t, other); ev != "instance.created,instance.resizing" {
		t.Errorf("events = %s", ev)
	}
}

func TestInstanceResetStatusAndForceDelete(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	base := "/v1.0/" + f.projectA + "/instances/"

	// A build that never finishes: delete is refused, the member may not
	// reset it, the admin may; then delete goes through (force delete).
	code, body := f.do(t, "POST", "/v1.0/"+f.projectA+"/instances", f.tokenA, validCreate)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	stuck := body["instance"].(map[string]any)["id"].(string)
	if code, _ := f.do(t, "DELETE", base+stuck, f.tokenA, ""); code != 422 {
		t.Fatalf("delete while building: %d", code)
	}
	code, body = f.do(t, "POST", base+stuck+"/action", f.tokenA, `{"reset_status": {}}`)
	if code != 403 {
		t.Fatalf("member reset_status: %d %v", code, body)
	}
	if msg := fault(t, body, "forbidden", 403); msg != "Policy doesn't allow instance:reset_status to be performed." {
		t.Errorf("message %q", msg)
	}
	if s := f.actState(t, stuck); s.Task != "BUILDING" {
		t.Errorf("refused reset changed the task: %+v", s)
	}
	if code, body = f.do(t, "POST", base+stuck+"/action", f.admin, `{"reset_status": {}}`); code != 202 || body != nil {
		t.Fatalf("admin reset_status: %d %v", code, body)
	}
	if s := f.actState(t, stuck); s.Task != "NONE" || s.Service != "unknown" {
		t.Errorf("after reset: %+v", s)
	}
	if cmds := f.actCommands(t, stuck); len(cmds) != 0 {
		t.Errorf("the prepare command is still open: %v", cmds)
	}
	if code, _ := f.do(t, "DELETE", base+stuck, f.tokenA, ""); code != 202 {
		t.Fatalf("delete after reset: %d", code)
	}
	if ev := f.actEvents(t, stuck); ev != "instance.created,instance.status_reset,instance.deleting" {
		t.Errorf("events = %s", ev)
	}

	// A running action: reset cancels its command and its action, and the
	// instance shows operating_status ERROR until the guest reports.
	id := f.actInstance(t)
	if code, _ := f.do(t, "POST", base+id+"/action", f.tokenA, `{"resize": {"volume": {"size": 2}}}`); code != 202 {
		t.Fatal("resize")
	}
	if code, _ := f.do(t, "POST", base+id+"/action", f.admin, `{"reset_status": {}}`); code != 202 {
		t.Fatal("reset")
	}
	var outcome string
	if err := f.pool.QueryRow(context.Background(), "SELECT outcome FROM instance_action WHERE instance_id = $1", id).Scan(&outcome); err != nil || outcome != "cancelled" {
		t.Errorf("action outcome %q %v", outcome, err)
	}
	if cmds := f.actCommands(t, id); len(cmds) != 0 {
		t.Errorf("open commands after reset: %v", cmds)
	}
	v := f.actShow(t, id, f.tokenA)
	if v["status"] != "ACTIVE" || v["operating_status"] != "ERROR" {
		t.Errorf("after reset: status %v operating_status %v", v["status"], v["operating_status"])
	}
	// Restart needs a known datastore state (Trove: 422 until the guest
	// reports).
	if code, _ := f.do(t, "POST", base+id+"/action", f.tokenA, `{"restart": {}}`); code != 422 {
		t.Errorf("restart of an instance in unknown state: %d", code)
	}
	// The owner may use Trove's force_delete variant.
	if code, body := f.do(t, "POST", base+id+"/action", f.tokenA, `{"reset_status": {"force_delete": true}}`); code != 202 {
		t.Errorf("owner force_delete reset: %d %v", code, body)
	}
	// Another project's admin-less member cannot reach it at all.
	if code, _ := f.do(t, "POST", "/v1.0/"+f.projectB+"/instances/"+id+"/action", f.tokenB, `{"reset_status": {}}`); code != 404 {
		t.Errorf("foreign reset: %d", code)
	}
}

func TestInstanceUpdate(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.actInstance(t)
	path := "/v1.0/" + f.projectA + "/instances/" + id

	// Rename: at once, visible, an event.
	if code, body := f.do(t, "PUT", path, f.tokenA, `{"instance": {"name": "renamed"}}`); code != 202 || body != nil {
		t.Fatalf("rename: %d %v", code, body)
	}
	if v := f.actShow(t, id, f.tokenA); v["name"] != "renamed" {
		t.Errorf("name = %v", v["name"])
	}
	var payload []byte
	if err := f.pool.QueryRow(context.Background(), "SELECT payload FROM event WHERE resource_id = $1 AND kind = 'instance.updated'", id).Scan(&payload); err != nil || !strings.Contains(string(payload), "renamed") {
		t.Errorf("update event: %s %v", payload, err)
	}
	// PATCH renames too.
	if code, body := f.do(t, "PATCH", path, f.tokenA, `{"instance": {"name": "patched"}}`); code != 202 {
		t.Fatalf("patch rename: %d %v", code, body)
	}

	// Access: stored and shown; the CIDRs canonical.
	code, body := f.do(t, "PUT", path, f.tokenA, `{"instance": {"access": {"is_public": true, "allowed_cidrs": ["10.1.0.0/16", "192.0.2.7"]}}}`)
	if code != 202 {
		t.Fatalf("access: %d %v", code, body)
	}
	access := f.actShow(t, id, f.tokenA)["access"].(map[string]any)
	if b, _ := json.Marshal(access); string(b) != `{"allowed_cidrs":["10.1.0.0/16","192.0.2.7/32"],"is_public":true}` {
		t.Errorf("access = %s", b)
	}
	// Listed the same way.
	_, list := f.do(t, "GET", "/v1.0/"+f.projectA+"/instances", f.tokenA, "")
	if a := list["instances"].([]any)[0].(map[string]any)["access"].(map[string]any); a["is_public"] != true {
		t.Errorf("listed access = %v", a)
	}
	if code, _ := f.do(t, "PUT", path, f.tokenA, `{"instance": {"access": {"is_public": false}}}`); code != 202 {
		t.Fatal("make private")
	}
	if a := f.actShow(t, id, f.tokenA)["access"].(map[string]any); a["is_public"] != false || a["allowed_cidrs"] != nil {
		t.Errorf("access after is_public false = %v", a)
	}

	// Configuration: detach with nothing attached is accepted (null, and
	// the legacy client's empty object).
	for _, b := range []string{`{"instance": {"configuration": null}}`, `{"instance": {}}`} {
		if code, body := f.do(t, "PUT", path, f.tokenA, b); code != 202 {
			t.Errorf("%s: %d %v", b, code, body)
		}
	}

	before := f.actState(t, id)
	cases := []struct {
		method, name, body, fault string
		code                      int
		contains                  string
	}{
		{"PUT", "two attributes", `{"instance": {"configuration": null, "access": {"is_public": true}}}`, "badRequest", 400, "Only one attribute (except 'name') is allowed to update."},
		{"PUT", "two attributes and a name", `{"instance": {"name": "x", "replica_of": null, "datastore_version": "15"}}`, "badRequest", 400, "Only one attribute"},
		{"PUT", "unknown key", `{"instance": {"name": "x", "flavorRef": "2"}}`, "badRequest", 400, "Validation error"},
		{"PUT", "slave_of is PATCH only", `{"instance": {"slave_of": null}}`, "badRequest", 400, "Validation error"},
		{"PATCH", "access is PUT only", `{"instance": {"access": {"is_public": true}}}`, "badRequest", 400, "Validation error"},
		{"PUT", "missing instance", `{"name": "x"}`, "badRequest", 400, "Validation error"},
		{"PUT", "empty name", `{"instance": {"name": ""}}`, "badRequest", 400, "Validation error"},
		{"PUT", "name without alphanumerics", `{"instance": {"name": "--"}}`, "badRequest", 400, "letter or digit"},
		{"PUT", "name with a newline", `{"instance": {"name": "a\nb"}}`, "badRequest", 400, "control characters"},
		{"PUT", "name wrong type", `{"instance": {"name": 7}}`, "badRequest", 400, "Validation error"},
		{"PUT", "not a replica", `{"instance": {"name": "x", "replica_of": null}}`, "badRequest", 400, "is not a replica."},
		{"PATCH", "slave_of: not a replica", `{"instance": {"slave_of": "abc"}}`, "badRequest", 400, "is not a replica."},
		{"PUT", "bad cidr", `{"instance": {"access": {"allowed_cidrs": ["10.0.0.0/33"]}}}`, "badRequest", 400, "not an IPv4 network"},
		{"PUT", "ipv6 cidr", `{"instance": {"access": {"allowed_cidrs": ["2001:db8::/32"]}}}`, "badRequest", 400, "not an IPv4 network"},
		{"PUT", "same cidr twice", `{"instance": {"access": {"allowed_cidrs": ["10.0.0.1", "10.0.0.1/32"]}}}`, "badRequest", 400, "more than once"},
		{"PUT", "unknown access key", `{"instance": {"access": {"is_public": true, "port": 5432}}}`, "badRequest", 400, "Validation error"},
		{"PUT", "is_public not a boolean", `{"instance": {"access": {"is_public": "yes"}}}`, "badRequest", 400, "Validation error"},
		{"PUT", "configuration not an id", `{"instance": {"configuration": "default"}}`, "badRequest", 400, ""},
		{"PUT", "unknown datastore version", `{"instance": {"datastore_version": "8.4"}}`, "badRequest", 400, "cannot be found"},
		{"PATCH", "current datastore version", `{"instance": {"name": "x", "datastore_version": "15"}}`, "badRequest", 400, "already runs"},
	}
	for _, c := range cases {
		code, body := f.do(t, c.method, path, f.tokenA, c.body)
		if code != c.code {
			t.Errorf("%s %s: %d %v, want %d", c.method, c.name, code, body, c.code)
			continue
		}
		if msg := fault(t, body, c.fault, c.code); !strings.Contains(msg, c.contains) {
			t.Errorf("%s %s: message %q does not contain %q", c.method, c.name, msg, c.contains)
		}
	}
	// A refused attribute leaves the name alone too.
	if after := f.actState(t, id); after != before {
		t.Errorf("refused updates changed the instance: %+v → %+v", before, after)
	}

	// Another project's instance; a malformed id.
	for _, p := range []string{"/v1.0/" + f.projectB + "/instances/" + id, "/v1.0/" + f.projectB + "/instances/nope"} {
		for _, m := range []string{"PUT", "PATCH"} {
			code, body := f.do(t, m, p, f.tokenB, `{"instance": {"name": "stolen"}}`)
			if code != 404 {
				t.Fatalf("%s %s: %d %v", m, p, code, body)
			}
			fault(t, body, "itemNotFound", 404)
		}
	}
	if s := f.actState(t, id); s.Name != "patched" {
		t.Errorf("name = %s", s.Name)
	}

	// Detaching a replica checks first that the instance can act.
	building := f.actInstance(t)
	f.actSQL(t, "UPDATE instance SET task = 'BUILDING' WHERE id = $1", building)
	code, body = f.do(t, "PUT", "/v1.0/"+f.projectA+"/instances/"+building, f.tokenA, `{"instance": {"replica_of": null}}`)
	if code != 422 {
		t.Fatalf("detach while building: %d %v", code, body)
	}
	// A rename is fine while building.
	if code, _ := f.do(t, "PUT", "/v1.0/"+f.projectA+"/instances/"+building, f.tokenA, `{"instance": {"name": "still-building"}}`); code != 202 {
		t.Errorf("rename while building: %d", code)
	}
}

func TestInstanceResizeQuota(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	f.actSQL(t, "INSERT INTO quota (project_id, resource, hard_limit) VALUES ($1, 'volumes', 3), ($1, 'ram', 1200)", f.projectA)
	a, b := f.actInstance(t), f.actInstance(t) // 1 GB and 512 MB each: 2 GB, 1024 MB used
	action := func(id string) string { return "/v1.0/" + f.projectA + "/instances/" + id + "/action" }

	// 2 GB + 1 GB more = 3 GB: within the limit.
	if code, body := f.do(t, "POST", action(a), f.tokenA, `{"resize": {"volume": {"size": 2}}}`); code != 202 {
		t.Fatalf("resize within quota: %d %v", code, body)
	}
	// Another GB would make 4 once the running resize is done.
	code, body := f.do(t, "POST", action(b), f.tokenA, `{"resize": {"volume": {"size": 2}}}`)
	if code != 413 {
		t.Fatalf("resize beyond quota (counting the running one): %d %v", code, body)
	}
	if msg := fault(t, body, "overLimit", 413); msg != "Quota exceeded for resources: ['volumes']." {
		t.Errorf("message %q", msg)
	}
	// 1024 MB + 512 MB more > 1200 MB.
	code, body = f.do(t, "POST", action(b), f.tokenA, `{"resize": {"flavorRef": "2"}}`)
	if code != 413 {
		t.Fatalf("flavor resize beyond the ram quota: %d %v", code, body)
	}
	if msg := fault(t, body, "overLimit", 413); msg != "Quota exceeded for resources: ['ram']." {
		t.Errorf("message %q", msg)
	}
	if s := f.actState(t, b); s.Task != "NONE" || s.Flavor != "1" || s.VolumeGB != 1 {
		t.Errorf("refused resizes changed the instance: %+v", s)
	}
	// Shrinking is never a quota matter: refused for its own reason.
	if code, _ := f.do(t, "POST", action(b), f.tokenA, `{"resize": {"volume": {"size": 1}}}`); code != 400 {
		t.Errorf("same size: %d", code)
	}
}
