package functions_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/google/uuid"
)

// mistral sends a Mistral API request (no tenant in the path) and returns
// the status and the decoded body.
func (f *apiFixture) mistral(t testing.TB, method, path, token, body string) (int, map[string]any) {
	t.Helper()
	r := f.send(t, method, path, token, bodyBytes(body))
	var out map[string]any
	if len(r.raw) > 0 {
		if err := json.Unmarshal(r.raw, &out); err != nil {
			t.Fatalf("%s %s: %d, body not JSON: %q", method, path, r.status, r.raw)
		}
	}
	if r.status >= 400 {
		if msg, _ := out["faultstring"].(string); msg == "" || !strings.HasPrefix(r.header.Get("Content-Type"), "application/json") {
			t.Errorf("%s %s: %d without a Mistral fault: %s", method, path, r.status, r.raw)
		}
	}
	return r.status, out
}

// troveTrigger is the body python-troveclient's schedule_create sends
// through mistralclient's cron_triggers.create.
func troveTrigger(name, instance, backupName string, description any, incremental bool) string {
	in, _ := json.Marshal(map[string]any{"instance": instance, "name": backupName, "description": description, "incremental": incremental})
	b, _ := json.Marshal(map[string]any{"name": name, "pattern": "0 * * * *", "first_execution_time": nil,
		"remaining_executions": nil, "workflow_name": "trove.backup_create", "workflow_input": string(in)})
	return string(b)
}

func TestMistralCronTriggersAsTroveClientUsesThem(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	inst := f.acctInstance(t, `{}`)
	name := uuid.NewString()

	code, ct := f.mistral(t, "POST", "/v2/cron_triggers", f.tokenA, troveTrigger(name, inst, "nightly", nil, false))
	if code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, ct)
	}
	for k, want := range map[string]any{"name": name, "id": name, "pattern": "0 * * * *", "workflow_name": "trove.backup_create", "project_id": f.projectA} {
		if ct[k] != want {
			t.Errorf("trigger %s = %v, want %v", k, ct[k], want)
		}
	}
	for _, k := range []string{"created_at", "next_execution_time", "updated_at"} {
		if s, _ := ct[k].(string); len(s) != len("2006-01-02 15:04:05") {
			t.Errorf("trigger %s = %v", k, ct[k])
		}
	}
	var input map[string]any
	if err := json.Unmarshal([]byte(ct["workflow_input"].(string)), &input); err != nil ||
		input["instance"] != inst || input["name"] != "nightly" || input["description"] != nil || input["incremental"] != false {
		t.Errorf("workflow_input %v (%v)", ct["workflow_input"], err)
	}
	// The native API sees the same schedule.
	if code, out := f.do(t, "GET", "/v1.0/"+f.projectA+"/schedules/"+name, f.tokenA, ""); code != 200 ||
		out["schedule"].(map[string]any)["name"] != "nightly" {
		t.Errorf("native show: %d %v", code, out)
	}

	code, out := f.mistral(t, "GET", "/v2/cron_triggers/"+name, f.tokenA, "")
	if code != 200 || out["workflow_input"] != ct["workflow_input"] {
		t.Errorf("get: %d %v", code, out)
	}
	code, out = f.mistral(t, "GET", "/v2/cron_triggers", f.tokenA, "")
	if code != 200 || len(out["cron_triggers"].([]any)) != 1 || !strings.Contains(out["cron_triggers"].([]any)[0].(map[string]any)["workflow_input"].(string), inst) {
		t.Errorf("list: %d %v", code, out)
	}
	if code, out := f.mistral(t, "GET", "/v2/cron_triggers", f.tokenB, ""); code != 200 || len(out["cron_triggers"].([]any)) != 0 {
		t.Errorf("B's list: %d %v", code, out)
	}
	for _, m := range []string{"GET", "DELETE"} {
		if code, _ := f.mistral(t, m, "/v2/cron_triggers/"+name, f.tokenB, ""); code != 404 {
			t.Errorf("B %s A's trigger: %d", m, code)
		}
	}
	if code, _ := f.mistral(t, "POST", "/v2/cron_triggers", f.tokenA, troveTrigger(name, inst, "again", "d", true)); code != http.StatusConflict {
		t.Errorf("duplicate name: %d", code)
	}
	if code, _ := f.mistral(t, "POST", "/v2/cron_triggers", f.tokenB, troveTrigger(uuid.NewString(), inst, "b", nil, false)); code != 404 {
		t.Errorf("B scheduling A's instance: %d", code)
	}
	if code, _ := f.mistral(t, "GET", "/v2/cron_triggers", "", ""); code != 401 {
		t.Errorf("no token: %d", code)
	}
	if code, _ := f.mistral(t, "GET", "/v2/cron_triggers", "bogus", ""); code != 401 {
		t.Errorf("bad token: %d", code)
	}

	code, _ = f.mistral(t, "DELETE", "/v2/cron_triggers/"+name, f.tokenA, "")
	if code != http.StatusNoContent {
		t.Fatalf("delete: %d", code)
	}
	if code, _ := f.mistral(t, "GET", "/v2/cron_triggers/"+name, f.tokenA, ""); code != 404 {
		t.Errorf("get after delete: %d", code)
	}
	if code, _ := f.mistral(t, "DELETE", "/v2/cron_triggers/"+name, f.tokenA, ""); code != 404 {
		t.Errorf("delete twice: %d", code)
	}
}

func TestMistralCronTriggerBadInput(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	inst := f.acctInstance(t, `{}`)
	before := f.snapshot(t)
	input := func(v any) string { b, _ := json.Marshal(v); return string(b) }
	trigger := func(mod func(map[string]any)) string {
		b := map[string]any{"name": uuid.NewString(), "pattern": "0 * * * *", "workflow_name": "trove.backup_create",
			"workflow_input": input(map[string]any{"instance": inst, "name": "n", "description": nil, "incremental": false})}
		mod(b)
		out, _ := json.Marshal(b)
		return string(out)
	}
	cases := map[string]string{
		"malformed":            `{"name": `,
		"array":                `[]`,
		"not a uuid name":      trigger(func(b map[string]any) { b["name"] = "nightly" }),
		"upper-case uuid":      trigger(func(b map[string]any) { b["name"] = strings.ToUpper(uuid.NewString()) }),
		"other workflow":       trigger(func(b map[string]any) { b["workflow_name"] = "std.noop" }),
		"no workflow":          trigger(func(b map[string]any) { delete(b, "workflow_name") }),
		"bad pattern":          trigger(func(b map[string]any) { b["pattern"] = "61 * * * *" }),
		"six fields":           trigger(func(b map[string]any) { b["pattern"] = "0 0 * * * *" }),
		"no pattern":           trigger(func(b map[string]any) { delete(b, "pattern") }),
		"first execution time": trigger(func(b map[string]any) { b["first_execution_time"] = "2030-01-01 00:00" }),
		"remaining executions": trigger(func(b map[string]any) { b["remaining_executions"] = 3 }),
		"workflow params":      trigger(func(b map[string]any) { b["workflow_params"] = `{"env": {}}` }),
		"no input":             trigger(func(b map[string]any) { delete(b, "workflow_input") }),
		"input not JSON":       trigger(func(b map[string]any) { b["workflow_input"] = "{" }),
		"input unknown key": trigger(func(b map[string]any) {
			b["workflow_input"] = input(map[string]any{"instance": inst, "name": "n", "x": 1})
		}),
		"input no instance":  trigger(func(b map[string]any) { b["workflow_input"] = input(map[string]any{"name": "n"}) }),
		"input bad instance": trigger(func(b map[string]any) { b["workflow_input"] = input(map[string]any{"instance": "nope", "name": "n"}) }),
		"input other instance": trigger(func(b map[string]any) {
			b["workflow_input"] = input(map[string]any{"instance": uuid.NewString(), "name": "n"})
		}),
		"input name no alnum": trigger(func(b map[string]any) { b["workflow_input"] = input(map[string]any{"instance": inst, "name": "--"}) }),
		"input NUL":           trigger(func(b map[string]any) { b["workflow_input"] = input(map[string]any{"instance": inst, "name": "a\x00"}) }),
		"input incremental 2": trigger(func(b map[string]any) {
			b["workflow_input"] = input(map[string]any{"instance": inst, "name": "a", "incremental": 2})
		}),
		"input incremental str": trigger(func(b map[string]any) {
			b["workflow_input"] = input(map[string]any{"instance": inst, "name": "a", "incremental": "yes"})
		}),
		"pattern with escape": trigger(func(b map[string]any) { b["pattern"] = "0 * * * *\x1b[2J" }),
		"huge":                `{"name": "` + strings.Repeat("a", 100<<10) + `"}`,
	}
	for what, body := range cases {
		code, out := f.mistral(t, "POST", "/v2/cron_triggers", f.tokenA, body)
		if code < 400 || code >= 500 {
			t.Errorf("%s: %d %v", what, code, out)
		}
		if what == "bad pattern" && !strings.Contains(fmt.Sprint(out["faultstring"]), "'61 * * * *'") {
			t.Errorf("bad pattern: the fault does not name it: %v", out)
		}
	}
	f.unchanged(t, before, "refused cron triggers")
	// Trove's own 0/1 for incremental, and an object input, are taken.
	code, out := f.mistral(t, "POST", "/v2/cron_triggers", f.tokenA, trigger(func(b map[string]any) {
		b["workflow_input"] = map[string]any{"instance": inst, "name": "n", "incremental": 1}
	}))
	if code != 201 || !strings.Contains(out["workflow_input"].(string), `"incremental":true`) {
		t.Errorf("object input with incremental 1: %d %v", code, out)
	}
}

func TestMistralExecutionsAsTroveClientPagesThem(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	inst := f.acctInstance(t, `{}`)
	mine, other := uuid.NewString(), uuid.NewString()
	for _, n := range []string{mine, other} {
		if code, out := f.mistral(t, "POST", "/v2/cron_triggers", f.tokenA, troveTrigger(n, inst, "b-"+n[:4], nil, false)); code != 201 {
			t.Fatalf("create: %d %v", code, out)
		}
	}
	// 130 ticks of each; a third still running.
	for _, n := range []string{mine, other} {
		f.acctExec(t, `INSERT INTO schedule_execution (id, schedule_id, project_id, scheduled_at, state, created_at)
			SELECT gen_random_uuid(), $1, $2, timestamptz '2026-01-01' + n * interval '1 minute',
			       CASE WHEN n % 3 = 0 THEN 'RUNNING' ELSE 'SUCCESS' END, timestamptz '2026-01-01' + n * interval '1 minute'
			FROM generate_series(1, 130) n`, n, f.projectA)
	}
	code, ct := f.mistral(t, "GET", "/v2/cron_triggers/"+mine, f.tokenA, "")
	if code != 200 {
		t.Fatal(code)
	}
	var ctInput map[string]any
	_ = json.Unmarshal([]byte(ct["workflow_input"].(string)), &ctInput)

	// python-troveclient's execution_list: pages of 50, newest first, the
	// marker the last id, until an empty page; it keeps the executions of
	// the trigger's workflow whose input equals the trigger's.
	var matched, pages int
	marker := ""
	var last string
	for {
		q := url.Values{"limit": {"50"}, "sort_dirs": {"desc"}}
		if marker != "" {
			q.Set("marker", marker)
		}
		code, out := f.mistral(t, "GET", "/v2/executions?"+q.Encode(), f.tokenA, "")
		if code != 200 {
			t.Fatalf("page %d: %d %v", pages, code, out)
		}
		items := out["executions"].([]any)
		if len(items) == 0 {
			break
		}
		if pages++; pages > 10 {
			t.Fatal("the pages do not end")
		}
		for _, it := range items {
			e := it.(map[string]any)
			if s := e["created_at"].(string); last != "" && s > last {
				t.Fatalf("not newest first: %s after %s", s, last)
			}
			last = e["created_at"].(string)
			var in map[string]any
			if err := json.Unmarshal([]byte(e["input"].(string)), &in); err != nil {
				t.Fatalf("input %v: %v", e["input"], err)
			}
			if e["workflow_name"] == ct["workflow_name"] && fmt.Sprint(in) == fmt.Sprint(ctInput) {
				matched++
			}
			for _, k := range []string{"id", "state", "output", "created_at"} {
				if _, ok := e[k]; !ok {
					t.Fatalf("execution without %s: %v", k, e)
				}
			}
		}
		marker = items[len(items)-1].(map[string]any)["id"].(string)
	}
	if matched != 130 || pages != 6 {
		t.Errorf("%d executions of the trigger in %d pages, want 130 in 6", matched, pages)
	}
	code, out := f.mistral(t, "GET", "/v2/executions?state=RUNNING", f.tokenA, "")
	if code != 200 || len(out["executions"].([]any)) != 2*43 {
		t.Errorf("state=RUNNING: %d, %d executions", code, len(out["executions"].([]any)))
	}
	for _, q := range []string{"?workflow_name=std.noop", "?task_execution_id=" + uuid.NewString()} {
		if code, out := f.mistral(t, "GET", "/v2/executions"+q, f.tokenA, ""); code != 200 || len(out["executions"].([]any)) != 0 {
			t.Errorf("%s: %d %v", q, code, out)
		}
	}
	for _, q := range []string{"?marker=" + uuid.NewString(), "?sort_dirs=sideways", "?sort_keys=state", "?limit=x", "?state=in:A,B", "?foo=bar", "?all_projects=true"} {
		if code, _ := f.mistral(t, "GET", "/v2/executions"+q, f.tokenA, ""); code != 400 {
			t.Errorf("%s: %d, want 400", q, code)
		}
	}
	if code, out := f.mistral(t, "GET", "/v2/executions", f.tokenB, ""); code != 200 || len(out["executions"].([]any)) != 0 {
		t.Errorf("B's executions: %d %v", code, out)
	}

	var running, done string
	if err := f.pool.QueryRow(t.Context(), `SELECT id FROM schedule_execution WHERE state = 'RUNNING' LIMIT 1`).Scan(&running); err != nil {
		t.Fatal(err)
	}
	if err := f.pool.QueryRow(t.Context(), `SELECT id FROM schedule_execution WHERE state = 'SUCCESS' LIMIT 1`).Scan(&done); err != nil {
		t.Fatal(err)
	}
	if code, _ := f.mistral(t, "DELETE", "/v2/executions/"+done, f.tokenB, ""); code != 404 {
		t.Errorf("B deleting A's execution: %d", code)
	}
	if code, _ := f.mistral(t, "DELETE", "/v2/executions/"+running, f.tokenA, ""); code != http.StatusForbidden {
		t.Errorf("deleting a running execution: %d", code)
	}
	for _, id := range []string{done, running + "?force=true"} {
		if code, out := f.mistral(t, "DELETE", "/v2/executions/"+id, f.tokenA, ""); code != http.StatusNoContent {
			t.Errorf("delete %s: %d %v", id, code, out)
		}
	}
	if code, _ := f.mistral(t, "GET", "/v2/executions/"+done, f.tokenA, ""); code != 404 {
		t.Errorf("get deleted execution: %d", code)
	}
	if code, _ := f.mistral(t, "DELETE", "/v2/executions/"+done, f.tokenA, ""); code != 404 {
		t.Errorf("delete twice: %d", code)
	}
	// Deleting the trigger keeps its executions, as Mistral does.
	f.mistral(t, "DELETE", "/v2/cron_triggers/"+mine, f.tokenA, "")
	if code, out := f.mistral(t, "GET", "/v2/executions", f.tokenA, ""); code != 200 || len(out["executions"].([]any)) != 258 {
		t.Errorf("after trigger delete: %d, %d executions", code, len(out["executions"].([]any)))
	}
}
