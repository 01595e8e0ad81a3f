package functions_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

// schedule creates a schedule through the native API and returns its view.
func (f *apiFixture) schedule(t testing.TB, instance, body string) map[string]any {
	t.Helper()
	code, out := f.do(t, "POST", "/v1.0/"+f.projectA+"/instances/"+instance+"/schedules", f.tokenA, body)
	if code != 200 {
		t.Fatalf("create schedule %s: %d %v", body, code, out)
	}
	return out["schedule"].(map[string]any)
}

func parseTroveTime(t testing.TB, v any) time.Time {
	t.Helper()
	s, _ := v.(string)
	tm, err := time.Parse("2006-01-02T15:04:05", s)
	if err != nil {
		t.Fatalf("time %v: %v", v, err)
	}
	return tm
}

func TestScheduleLifecycle(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	inst := f.acctInstance(t, `{}`)
	a := "/v1.0/" + f.projectA
	before := time.Now().UTC()
	s := f.schedule(t, inst, `{"schedule": {"name": "nightly", "description": "d", "pattern": "30 2 * * *",
		"incremental": true, "keep_last": 7, "max_age": "168h"}}`)
	id := s["id"].(string)
	for k, want := range map[string]any{"name": "nightly", "description": "d", "pattern": "30 2 * * *", "incremental": true,
		"enabled": true, "keep_last": float64(7), "max_age": float64(7 * 24 * 3600), "instance_id": inst} {
		if s[k] != want {
			t.Errorf("created %s = %v, want %v", k, s[k], want)
		}
	}
	next := parseTroveTime(t, s["next_run_at"])
	if next.Hour() != 2 || next.Minute() != 30 || next.Second() != 0 || !next.After(before.Add(-time.Second)) || next.Sub(before) > 24*time.Hour {
		t.Errorf("next_run_at %v: want the next 02:30 UTC after %v", next, before)
	}

	code, out := f.do(t, "GET", a+"/schedules/"+id, f.tokenA, "")
	if code != 200 || out["schedule"].(map[string]any)["id"] != id {
		t.Fatalf("show: %d %v", code, out)
	}
	f.schedule(t, inst, `{"schedule": {"name": "hourly", "pattern": "@hourly", "max_age": 3600}}`)
	code, out = f.do(t, "GET", a+"/instances/"+inst+"/schedules", f.tokenA, "")
	if code != 200 || len(out["schedules"].([]any)) != 2 {
		t.Fatalf("list: %d %v", code, out)
	}

	// Pause, then resume: the next run is recomputed from now (a tick
	// missed while paused is not run).
	f.acctExec(t, `UPDATE backup_schedule SET next_run_at = now() - interval '3 days' WHERE id = $1`, id)
	code, out = f.do(t, "PATCH", a+"/schedules/"+id, f.tokenA, `{"schedule": {"enabled": false, "keep_last": 2, "max_age": 0}}`)
	if code != 200 {
		t.Fatalf("disable: %d %v", code, out)
	}
	if v := out["schedule"].(map[string]any); v["enabled"] != false || v["keep_last"] != float64(2) || v["max_age"] != float64(0) {
		t.Errorf("after disable: %v", v)
	}
	code, out = f.do(t, "PATCH", a+"/schedules/"+id, f.tokenA, `{"schedule": {"enabled": true}}`)
	if code != 200 {
		t.Fatalf("enable: %d %v", code, out)
	}
	if next := parseTroveTime(t, out["schedule"].(map[string]any)["next_run_at"]); next.Before(before) {
		t.Errorf("resumed schedule's next run %v is in the past", next)
	}
	code, out = f.do(t, "PATCH", a+"/schedules/"+id, f.tokenA, `{"schedule": {"pattern": "*/5 * * * *", "name": "often"}}`)
	if v := out["schedule"].(map[string]any); code != 200 || v["pattern"] != "*/5 * * * *" || v["name"] != "often" ||
		parseTroveTime(t, v["next_run_at"]).Minute()%5 != 0 {
		t.Errorf("new pattern: %d %v", code, out)
	}

	code, out = f.do(t, "DELETE", a+"/schedules/"+id, f.tokenA, "")
	if code != 202 {
		t.Fatalf("delete: %d %v", code, out)
	}
	for _, m := range []string{"GET", "DELETE"} {
		code, out = f.do(t, m, a+"/schedules/"+id, f.tokenA, "")
		fault(t, out, "itemNotFound", 404)
	}
	code, out = f.do(t, "PATCH", a+"/schedules/"+id, f.tokenA, `{"schedule": {"enabled": true}}`)
	fault(t, out, "itemNotFound", 404)
	code, out = f.do(t, "GET", a+"/instances/"+inst+"/schedules", f.tokenA, "")
	if code != 200 || len(out["schedules"].([]any)) != 1 {
		t.Fatalf("list after delete: %d %v", code, out)
	}
}

func TestScheduleRefusesBadPatternsAndAges(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	inst := f.acctInstance(t, `{}`)
	path := "/v1.0/" + f.projectA + "/instances/" + inst + "/schedules"
	id := f.schedule(t, inst, `{"schedule": {"name": "ok", "pattern": "0 * * * *"}}`)["id"].(string)
	before := f.snapshot(t)
	for _, p := range []string{
		"", "not a cron", "* * * *", "0 0 * * * *", "61 * * * *", "* 25 * * *", "0 0 30 2 *", "@fortnightly",
		"@every 30s", "@every", "CRON_TZ=Mars/Olympus 0 3 * * *", "CRON_TZ=UTC", "TZ=", "0 0 ? ? ?x", "*/0 * * * *",
	} {
		code, out := f.do(t, "POST", path, f.tokenA, fmt.Sprintf(`{"schedule": {"name": "s", "pattern": %q}}`, p))
		msg := fault(t, out, "badRequest", 400)
		if code != 400 || (p != "" && !strings.Contains(msg, "'"+p+"'")) {
			t.Errorf("pattern %q: %d %q (want 400 naming the pattern)", p, code, msg)
		}
		code, out = f.do(t, "PATCH", "/v1.0/"+f.projectA+"/schedules/"+id, f.tokenA, fmt.Sprintf(`{"schedule": {"pattern": %q}}`, p))
		if code != 400 {
			t.Errorf("PATCH pattern %q: %d %v", p, code, out)
		}
	}
	for _, age := range []string{`"abc"`, `"-1h"`, `"1.5s"`, `"500ms"`, `"1000000h"`, `"99999999999999999999"`, `-5`, `1.5`, `true`, `"36501d"`, `""`} {
		code, out := f.do(t, "POST", path, f.tokenA, `{"schedule": {"name": "s", "pattern": "@daily", "max_age": `+age+`}}`)
		if code != 400 {
			t.Errorf("max_age %s: %d %v", age, code, out)
		}
	}
	for _, body := range []string{
		`{"schedule": {"name": "---", "pattern": "@daily"}}`,
		`{"schedule": {"name": "s", "pattern": "@daily", "keep_last": -1}}`,
		`{"schedule": {"name": "s", "pattern": "@daily", "keep_last": 100000}}`,
		`{"schedule": {"pattern": "@daily"}}`,
		`{"schedule": {"name": "s"}}`,
	} {
		if code, out := f.do(t, "POST", path, f.tokenA, body); code != 400 {
			t.Errorf("%s: %d %v", body, code, out)
		}
	}
	f.unchanged(t, before, "refused schedules")

	for _, c := range []struct {
		pattern string
		age     string
		seconds float64
	}{
		{"@every 1h30m", `"30d"`, 30 * 86400}, {"CRON_TZ=Europe/Berlin 0 3 * * *", `3600`, 3600},
		{"0 0 1 * *", `"90m"`, 5400}, {"@weekly", `"604800"`, 604800}, {"0 9-17 * * mon-fri", `0`, 0},
	} {
		s := f.schedule(t, inst, fmt.Sprintf(`{"schedule": {"name": "s", "pattern": %q, "max_age": %s}}`, c.pattern, c.age))
		if s["max_age"] != c.seconds {
			t.Errorf("max_age %s = %v, want %v", c.age, s["max_age"], c.seconds)
		}
	}
}

func TestScheduleLimitPerInstance(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	inst := f.acctInstance(t, `{}`)
	for i := range 20 {
		f.schedule(t, inst, fmt.Sprintf(`{"schedule": {"name": "s%d", "pattern": "@daily"}}`, i))
	}
	code, out := f.do(t, "POST", "/v1.0/"+f.projectA+"/instances/"+inst+"/schedules", f.tokenA, `{"schedule": {"name": "one-too-many", "pattern": "@daily"}}`)
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("21st schedule: %d %v", code, out)
	}
	fault(t, out, "overLimit", 413)
	// Paged by 20.
	code, out = f.do(t, "GET", "/v1.0/"+f.projectA+"/instances/"+inst+"/schedules?limit=15", f.tokenA, "")
	if code != 200 || len(out["schedules"].([]any)) != 15 || out["links"] == nil {
		t.Fatalf("page 1: %d %v", code, out)
	}
}

func TestScheduleExecutionsPages(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	inst := f.acctInstance(t, `{}`)
	id := f.schedule(t, inst, `{"schedule": {"name": "s", "pattern": "@hourly"}}`)["id"].(string)
	// 120 ticks, one per hour; the scheduler would have written these.
	f.acctExec(t, `INSERT INTO schedule_execution (id, schedule_id, project_id, scheduled_at, state, state_info)
		SELECT gen_random_uuid(), $1, $2, timestamptz '2026-01-01' + n * interval '1 hour',
		       CASE WHEN n % 3 = 0 THEN 'ERROR' ELSE 'SUCCESS' END, CASE WHEN n % 3 = 0 THEN 'refused' ELSE '' END
		FROM generate_series(1, 120) n`, id, f.projectA)
	path := "/v1.0/" + f.projectA + "/schedules/" + id + "/executions"
	var seen []time.Time
	next := path + "?limit=50"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		code, out := f.do(t, "GET", next, f.tokenA, "")
		if code != 200 {
			t.Fatalf("GET %s: %d %v", next, code, out)
		}
		for _, e := range out["executions"].([]any) {
			e := e.(map[string]any)
			if e["schedule_id"] != id || (e["state"] == "ERROR") != (e["state_info"] == "refused") {
				t.Errorf("execution %v", e)
			}
			seen = append(seen, parseTroveTime(t, e["scheduled_at"]))
		}
		next = ""
		if links, ok := out["links"].([]any); ok {
			href := links[0].(map[string]any)["href"].(string)
			next = href[strings.Index(href, "/v1.0/"):]
		}
	}
	if len(seen) != 120 {
		t.Fatalf("%d executions listed, want 120", len(seen))
	}
	for i := 1; i < len(seen); i++ {
		if !seen[i].Before(seen[i-1]) {
			t.Fatalf("not newest first at %d: %v then %v", i, seen[i-1], seen[i])
		}
	}
	for _, q := range []string{"?marker=" + uuid.NewString(), "?marker=nope", "?limit=-1", "?limit=x"} {
		if code, out := f.do(t, "GET", path+q, f.tokenA, ""); code != 400 {
			t.Errorf("%s: %d %v", q, code, out)
		}
	}
	// Another project sees none of it.
	for _, p := range []string{"/v1.0/" + f.projectB + "/schedules/" + id + "/executions", "/v1.0/" + f.projectB + "/schedules/" + id} {
		code, out := f.do(t, "GET", p, f.tokenB, "")
		fault(t, out, "itemNotFound", 404)
		_ = code
	}
}
