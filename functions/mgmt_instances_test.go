package functions_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// mgmtJobs lists the kinds of the River jobs inserted for an instance.
func (f *apiFixture) mgmtJobs(t *testing.T, id string) string {
	t.Helper()
	var kinds string
	if err := f.pool.QueryRow(context.Background(),
		"SELECT coalesce(string_agg(kind, ',' ORDER BY id), '') FROM river_job WHERE args->>'instance_id' = $1", id).Scan(&kinds); err != nil {
		t.Fatal(err)
	}
	return kinds
}

func TestMgmtInstancesListAndShow(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := "/v1.0/" + f.projectA + "/mgmt/instances"
	own := f.actInstance(t)
	code, body := f.do(t, "POST", "/v1.0/"+f.projectB+"/instances", f.tokenB, `{"instance": {"name": "b1", "flavorRef": "1", "volume": {"size": 1}}}`)
	if code != 200 {
		t.Fatalf("B's create: %d %v", code, body)
	}
	other := body["instance"].(map[string]any)["id"].(string)
	gone := f.actInstance(t)
	f.actSQL(t, `UPDATE instance SET server_id = id::text WHERE id = $1`, own)
	f.actSQL(t, `UPDATE instance SET deleted_at = now(), service_status = 'deleted', updated_at = now() - interval '1 hour' WHERE id = $1`, gone)

	ids := func(body map[string]any) []string {
		var out []string
		for _, it := range body["instances"].([]any) {
			out = append(out, it.(map[string]any)["id"].(string))
		}
		return out
	}
	// Members: Trove's 401 of the management routes, their own project's
	// instances included.
	for _, path := range []string{a, a + "/" + own, a + "?project_id=" + f.projectA} {
		code, body := f.do(t, "GET", path, f.tokenA, "")
		if code != 401 {
			t.Errorf("GET %s as a member: %d %v", path, code, body)
		}
		fault(t, body, "unauthorized", 401)
	}

	// The admin sees every project's; deleted filters.
	code, body = f.do(t, "GET", a, f.admin, "")
	if got := ids(body); code != 200 || len(got) != 3 {
		t.Fatalf("mgmt list: %d %v", code, body)
	}
	code, body = f.do(t, "GET", a+"?deleted=False&include_clustered=False", f.admin, "")
	if got := ids(body); code != 200 || len(got) != 2 || strings.Contains(fmt.Sprint(got), gone) {
		t.Errorf("mgmt list deleted=False: %d %v", code, got)
	}
	code, body = f.do(t, "GET", a+"?deleted=true", f.admin, "")
	if got := ids(body); code != 200 || len(got) != 1 || got[0] != gone {
		t.Errorf("mgmt list deleted=true: %d %v", code, got)
	}
	code, body = f.do(t, "GET", a+"?deleted=False&project_id="+f.projectB, f.admin, "")
	if got := ids(body); code != 200 || len(got) != 1 || got[0] != other {
		t.Errorf("mgmt list of project B: %d %v", code, got)
	}
	// The view: the instance's detail with the management fields.
	for _, it := range body["instances"].([]any) {
		i := it.(map[string]any)
		if i["tenant_id"] != f.projectB || i["deleted"] != false || i["deleted_at"] != nil || i["server"] != nil ||
			i["service_status"] != "NEW" || i["task_description"] != "Building the initial instance." || i["status"] != "BUILD" {
			t.Errorf("mgmt list item = %v", i)
		}
	}
	// Offset paging: newest change first, marker = offset.
	code, body = f.do(t, "GET", a+"?limit=2", f.admin, "")
	first := ids(body)
	links, _ := body["links"].([]any)
	if code != 200 || len(first) != 2 || len(links) != 1 || !strings.Contains(links[0].(map[string]any)["href"].(string), "marker=2") {
		t.Fatalf("mgmt list limit=2: %d %v", code, body)
	}
	code, body = f.do(t, "GET", a+"?limit=2&marker=2", f.admin, "")
	if got := ids(body); code != 200 || len(got) != 1 || got[0] != gone || body["links"] != nil {
		t.Errorf("mgmt list second page: %d %v", code, body)
	}
	for _, q := range []string{"?marker=x", "?marker=-1", "?limit=-1"} {
		if code, body := f.do(t, "GET", a+q, f.admin, ""); code != 400 {
			t.Errorf("mgmt list %s: %d %v", q, code, body)
		}
	}

	// Show: the server, the guest's own words, root history; a deleted
	// instance only with deleted=true; unknown ids 404.
	f.actSQL(t, `INSERT INTO root_history (instance_id, enabled_by, command_id)
		SELECT $1, 'alice', id FROM agent_command WHERE instance_id = $1 LIMIT 1`, own)
	code, body = f.do(t, "GET", a+"/"+own, f.admin, "")
	i, _ := body["instance"].(map[string]any)
	srv, _ := i["server"].(map[string]any)
	if code != 200 || srv["id"] != own || srv["status"] != "ACTIVE" || srv["tenant_id"] != f.projectA || i["service_status"] != "HEALTHY" ||
		i["guest_status"].(map[string]any)["state_description"] != "healthy" || i["root_enabled_by"] != "alice" || i["root_enabled"] == nil ||
		i["task_description"] != "No tasks for the instance." || i["server_id"] != own {
		t.Errorf("mgmt show = %d %v", code, body)
	}
	if code, body := f.do(t, "GET", a+"/"+gone, f.admin, ""); code != 404 {
		t.Errorf("mgmt show of a deleted instance: %d %v", code, body)
	}
	code, body = f.do(t, "GET", a+"/"+gone+"?deleted=true", f.admin, "")
	if i, _ := body["instance"].(map[string]any); code != 200 || i["deleted"] != true || i["deleted_at"] == nil {
		t.Errorf("mgmt show deleted=true: %d %v", code, body)
	}
	for _, ref := range []string{"00000000-0000-0000-0000-000000000000", "nope"} {
		code, body := f.do(t, "GET", a+"/"+ref, f.admin, "")
		if code != 404 {
			t.Errorf("mgmt show %s: %d", ref, code)
		}
		fault(t, body, "itemNotFound", 404)
	}
}

func TestMgmtInstanceActions(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.actInstance(t)
	path := "/v1.0/" + f.projectA + "/mgmt/instances/" + id + "/action"
	act := func(token, body string) (int, map[string]any) {
		t.Helper()
		return f.do(t, "POST", path, token, body)
	}

	// Members get 401 before anything is looked at; bad bodies 400 and
	// unknown instances 404, changing nothing.
	before := f.snapshot(t)
	if code, body := act(f.tokenA, `{"reboot": {}}`); code != 401 {
		t.Errorf("reboot by a member: %d %v", code, body)
	}
	for body, want := range map[string]string{
		`{"explode": {}}`:               "Invalid instance action: explode",
		`{"reboot": {}, "stop": {}}`:    "Only one action can be specified per request.",
		`{"reboot": {}, "explode": {}}`: "Invalid instance action: explode",
		`{}`:                            "Invalid request body",
		`{"rebuild": {}}`:               "image_id",
		`{"rebuild": {"image_id": ""}}`: "image_id",
		`{"rebuild": {"image_id": 7}}`:  "image_id",
		`{"reboot": "now"}`:             "reboot",
	} {
		code, resp := act(f.admin, body)
		if code != 400 {
			t.Errorf("%s: %d %v, want 400", body, code, resp)
			continue
		}
		if msg := fault(t, resp, "badRequest", 400); !strings.Contains(msg, want) {
			t.Errorf("%s: %q, want it to say %q", body, msg, want)
		}
	}
	code, resp := f.do(t, "POST", "/v1.0/"+f.projectA+"/mgmt/instances/00000000-0000-0000-0000-000000000000/action", f.admin, `{"reboot": {}}`)
	if code != 404 {
		t.Errorf("reboot of an unknown instance: %d %v", code, resp)
	}
	code, resp = act(f.admin, `{"migrate": {"host": "elsewhere"}}`)
	if code != 501 || !strings.Contains(fault(t, resp, "notImplemented", 501), "not supported") {
		t.Errorf("migrate: %d %v", code, resp)
	}
	f.unchanged(t, before, "refused management actions")

	// reboot: the restart machinery, REBOOT until the agent answers.
	if code, resp := act(f.admin, `{"reboot": {}}`); code != 202 || resp != nil {
		t.Fatalf("reboot: %d %v", code, resp)
	}
	if s := f.actState(t, id); s.Task != "REBOOTING" || s.Service != "restarting" {
		t.Errorf("after reboot: %+v", s)
	}
	if got := f.actShow(t, id, f.tokenA)["status"]; got != "REBOOT" {
		t.Errorf("status after reboot = %v", got)
	}
	if cmds := f.actCommands(t, id); len(cmds) != 1 || !strings.HasPrefix(cmds[0], "restart ") {
		t.Errorf("commands after reboot: %v", cmds)
	}
	// Busy: another action is refused with Trove's 422.
	if code, resp := act(f.admin, `{"stop": {}}`); code != 422 {
		t.Errorf("stop while rebooting: %d %v", code, resp)
	}
	if code, resp := act(f.admin, `{"rebuild": {"image_id": "img-1"}}`); code != 422 {
		t.Errorf("rebuild while rebooting: %d %v", code, resp)
	}

	// reset-task-status: the task only (the datastore status stays), and
	// the instance's running backups are to be failed.
	if code, resp := act(f.admin, `{"reset-task-status": {}}`); code != 202 {
		t.Fatalf("reset-task-status: %d %v", code, resp)
	}
	if s := f.actState(t, id); s.Task != "NONE" || s.Service != "restarting" {
		t.Errorf("after reset-task-status: %+v", s)
	}
	if jobs := f.mgmtJobs(t, id); !strings.Contains(jobs, "fail_instance_backups") {
		t.Errorf("jobs after reset-task-status: %s", jobs)
	}
	f.actSQL(t, `UPDATE agent_command SET state = 'succeeded', payload = '{}' WHERE instance_id = $1 AND state IN ('pending', 'leased')`, id)
	f.actSQL(t, `UPDATE instance_action SET outcome = 'succeeded', completed_at = now() WHERE instance_id = $1`, id)
	f.actSQL(t, `UPDATE instance SET service_status = 'healthy' WHERE id = $1`, id)

	// stop: the command, no task.
	if code, resp := act(f.admin, `{"stop": {}}`); code != 202 {
		t.Fatalf("stop: %d %v", code, resp)
	}
	if cmds := f.actCommands(t, id); len(cmds) != 1 || !strings.HasPrefix(cmds[0], "stop_datastore ") {
		t.Errorf("commands after stop: %v", cmds)
	}
	if s := f.actState(t, id); s.Task != "NONE" {
		t.Errorf("task after stop: %+v", s)
	}
	f.actSQL(t, `UPDATE agent_command SET state = 'succeeded', payload = '{}' WHERE instance_id = $1 AND state IN ('pending', 'leased')`, id)

	// rebuild: BUILD, the agent's command held for the provider's job, the
	// image recorded with the action.
	if code, resp := act(f.admin, `{"rebuild": {"image_id": "3e50414a-8532-4646-982c-a66fe8f0411b"}}`); code != 202 {
		t.Fatalf("rebuild: %d %v", code, resp)
	}
	if s := f.actState(t, id); s.Task != "REBUILDING" {
		t.Errorf("after rebuild: %+v", s)
	}
	if got := f.actShow(t, id, f.tokenA)["status"]; got != "BUILD" {
		t.Errorf("status after rebuild = %v", got)
	}
	var state, image string
	var attempts int
	if err := f.pool.QueryRow(context.Background(), `SELECT c.state, c.attempts, a.image_id FROM agent_command c
		JOIN instance_action a ON a.command_id = c.id WHERE c.instance_id = $1 AND c.name = 'rebuild'`, id).Scan(&state, &attempts, &image); err != nil {
		t.Fatal(err)
	}
	if state != "leased" || attempts != 0 || image != "3e50414a-8532-4646-982c-a66fe8f0411b" {
		t.Errorf("rebuild command %s (%d attempts), image %q: want held", state, attempts, image)
	}
	if jobs := f.mgmtJobs(t, id); !strings.Contains(jobs, "rebuild_instance") {
		t.Errorf("jobs after rebuild: %s", jobs)
	}
	if ev := f.actEvents(t, id); !strings.HasSuffix(ev, "instance.restarting,instance.task_reset,instance.stopping,instance.rebuilding") {
		t.Errorf("events = %s", ev)
	}

	// Another project's instance: the admin acts on it (the management
	// routes are every project's).
	code, body := f.do(t, "POST", "/v1.0/"+f.projectB+"/instances", f.tokenB, `{"instance": {"name": "b1", "flavorRef": "1", "volume": {"size": 1}}}`)
	if code != 200 {
		t.Fatalf("B's create: %d %v", code, body)
	}
	other := body["instance"].(map[string]any)["id"].(string)
	if code, resp := f.do(t, "POST", "/v1.0/"+f.projectA+"/mgmt/instances/"+other+"/action", f.admin, `{"reset-task-status": {}}`); code != 202 {
		t.Errorf("reset-task-status of B's building instance: %d %v", code, resp)
	}
	if s := f.actState(t, other); s.Task != "NONE" {
		t.Errorf("B's instance after reset-task-status: %+v", s)
	}
}
