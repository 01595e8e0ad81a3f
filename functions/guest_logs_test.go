package functions_test

import (
	"strings"
	"testing"
)

func TestGuestLogs(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.acctInstance(t, `{"databases": [], "users": [], "root_enabled": false}`)
	base := "/v1.0/" + f.projectA + "/instances/" + id + "/log"
	list := func() []map[string]any {
		t.Helper()
		code, body := f.do(t, "GET", base, f.tokenA, "")
		if code != 200 {
			t.Fatalf("log list: %d %v", code, body)
		}
		var out []map[string]any
		for _, l := range body["logs"].([]any) {
			out = append(out, l.(map[string]any))
		}
		return out
	}
	action := func(body string, want int) map[string]any {
		t.Helper()
		code, resp := f.do(t, "POST", base, f.tokenA, body)
		if code != want {
			t.Fatalf("log action %s: %d %v, want %d", body, code, resp, want)
		}
		if want != 200 {
			return resp
		}
		return resp["log"].(map[string]any)
	}
	is := func(what string, l map[string]any, status string, pending float64) {
		t.Helper()
		if l["name"] != "general" || l["type"] != "USER" || l["status"] != status || l["published"] != 0.0 || l["pending"] != pending ||
			l["container"] != "None" || l["prefix"] != "None" || l["metafile"] != id+"/postgresql-general_metafile" {
			t.Errorf("%s: %v, want status %s, pending %v", what, l, status, pending)
		}
	}

	// Before the agent reported any: PostgreSQL's general log, off.
	if logs := list(); len(logs) != 1 {
		t.Fatalf("logs = %v", logs)
	} else {
		is("before any report", logs[0], "Disabled", 0)
	}
	// As reported: off, with a server log of 4096 bytes.
	f.acctSetInventory(t, id, `{"databases": [], "users": [], "logs": [{"name": "general", "type": "USER", "enabled": false, "file": "postgres.log", "size": 4096}]}`)
	is("show", action(`{"name": "general"}`, 200), "Disabled", 4096)

	// Refused, changing nothing: both flags, an unknown log, publish, and
	// another project.
	before := f.snapshot(t)
	if msg := fault(t, action(`{"name": "general", "enable": 1, "disable": 1}`, 400), "badRequest", 400); !strings.Contains(msg, "enable and disable") {
		t.Errorf("enable and disable: %q", msg)
	}
	fault(t, action(`{"name": "slow_query", "enable": 1}`, 404), "itemNotFound", 404)
	fault(t, action(`{"name": "general", "publish": 1}`, 501), "notImplemented", 501)
	fault(t, action(`{"name": "general", "enable": 2}`, 400), "badRequest", 400)
	fault(t, action(`{"name": "general", "enable": true}`, 400), "badRequest", 400)
	for _, method := range []string{"GET", "POST"} {
		code, body := f.do(t, method, "/v1.0/"+f.projectB+"/instances/"+id+"/log", f.tokenB, `{"name": "general", "enable": 1}`)
		if code != 404 {
			t.Errorf("%s of A's log by B: %d %v", method, code, body)
		}
	}
	// Without Keystone there is no Swift of the caller's to publish into
	// or discard from (Trove without a Swift endpoint): 501, and the
	// publish did not enable the log either.
	fault(t, action(`{"name": "general", "discard": 1}`, 501), "notImplemented", 501)
	is("after publish and discard", action(`{"name": "general"}`, 200), "Disabled", 4096)
	f.unchanged(t, before, "refused log actions")

	// enable: the agent's command, and the log as it will be.
	is("enable", action(`{"name": "general", "enable": 1}`, 200), "Ready", 4096)
	cmds := f.acctCommands(t, id)
	if len(cmds) != 1 || cmds[0].Name != "guest_log_action" || cmds[0].Payload["name"] != "general" || cmds[0].Payload["enable"] != true {
		t.Errorf("commands after enable: %+v", cmds)
	}
	is("list while the agent has not run it", list()[0], "Ready", 4096)
	f.acctRun(t, id, `{"databases": [], "users": [], "logs": [{"name": "general", "type": "USER", "enabled": true, "file": "postgres.log", "size": 5000}]}`)
	is("list after the agent ran it", list()[0], "Ready", 5000)

	// disable.
	is("disable", action(`{"name": "general", "disable": 1}`, 200), "Disabled", 5000)
	f.acctRun(t, id, `{"databases": [], "users": [], "logs": [{"name": "general", "type": "USER", "enabled": false, "file": "postgres.log", "size": 5100}]}`)
	is("list after disable", list()[0], "Disabled", 5100)
	if ev := f.actEvents(t, id); !strings.HasSuffix(ev, "instance.log_changed,instance.log_changed") {
		t.Errorf("events = %s", ev)
	}

	// An instance busy with an action takes no log change (Trove's 422).
	f.acctExec(t, `UPDATE instance SET task = 'RESIZING' WHERE id = $1`, id)
	fault(t, action(`{"name": "general", "enable": 1}`, 422), "unprocessableEntity", 422)
}
