package main_test

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
)

// Backup schedules with the real `trove` CLI, as a Trove user has them:
// schedule-create/list/show/delete and execution-list/delete are
// python-troveclient calling Mistral (python-mistralclient, service type
// `workflowv2` in the Keystone catalog). Here the catalog's workflowv2
// endpoint is the all-in-one's /v2, which serves those calls from Coffer's
// own schedules: the schedule takes real backups of a real instance on
// its cron pattern, and its executions show them.

// schedulePrefix is a loopback /16 of 127.170-179 (this file's range) that
// no other all-in-one of this process uses.
func schedulePrefix(t *testing.T) string {
	t.Helper()
	for n := 170; n <= 179; n++ {
		if _, taken := takenPrefixes.LoadOrStore(n, true); !taken {
			return fmt.Sprintf("127.%d", n)
		}
	}
	t.Fatal("no free loopback /16 in 127.170-179")
	return ""
}

// registerWorkflowEndpoint adds the catalog's `workflowv2` service (named
// mistral) with a public endpoint in the all-in-one's region pointing at
// its /v2. mistralclient looks the type up without a region, so this
// process's Keystone must have one such endpoint only: this test's.
func registerWorkflowEndpoint(t *testing.T, cl *keystoneCoffer) {
	t.Helper()
	cl.ks.RegisterEndpoint(t, cl.region, "workflowv2", "mistral", cl.url+"/v2")
}

// troveSched runs the trove CLI as u with the client fix (fixDir "":
// without it); it returns stdout, or the whole output with the error.
func (cl *keystoneCoffer) troveSched(u keystonetest.User, fixDir string, argv ...string) (string, error) {
	return cl.tryFixed(u, fixDir, append([]string{"trove"}, argv...)...)
}

func TestScheduleTroveCLI(t *testing.T) {
	t.Parallel()
	requireCLIs(t)
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	cl := startKeystoneCoffer(t, "COFFER_LOCAL_ADDRESS_PREFIX="+schedulePrefix(t))
	registerWorkflowEndpoint(t, cl)
	fix := troveclientFix(t)
	demo, alt := cl.demo, cl.alt
	tok := cl.creds.MemberToken
	step("coffer up; database and workflowv2 endpoints in its region")

	code, body := cl.api(t, "POST", "/instances", tok, `{"instance": {"name": "sched-pg", "flavorRef": "1",
		"volume": {"size": 1}, "datastore": {"type": "postgresql"}}}`)
	if code != 200 {
		t.Fatalf("create instance: %d %v", code, body)
	}
	inst := body["instance"].(map[string]any)["id"].(string)
	cl.waitStatus(t, inst, "ACTIVE", 3*time.Minute)
	step("instance ACTIVE")

	// The unmended client: Keystone refuses its Mistral client's password
	// authentication (no domains), whatever serves workflowv2.
	if out, err := cl.troveSched(demo, "", "schedule-list", inst); err == nil {
		t.Errorf("trove schedule-list without the domain fix worked; the fix may be obsolete:\n%s", out)
	} else {
		t.Logf("without the domain fix, as python-troveclient 8.0.0 ships: %s", lastLine(out))
	}

	jsonRun := func(u keystonetest.User, v any, argv ...string) {
		t.Helper()
		out, err := cl.troveSched(u, fix, append([]string{"--json"}, argv...)...)
		if err != nil {
			t.Fatal(err)
		}
		decodeCLI(t, out, v, "trove --json", argv)
	}
	var sched map[string]any
	jsonRun(demo, &sched, "schedule-create", inst, "* * * * *", "cli-nightly", "--description", "taken by the trove CLI")
	id, _ := sched["id"].(string)
	if _, err := uuid.Parse(id); err != nil || sched["name"] != "cli-nightly" || sched["instance"] != inst ||
		sched["pattern"] != "* * * * *" || sched["next_execution_time"] == nil || sched["created_at"] == nil {
		t.Fatalf("trove schedule-create = %v", sched)
	}
	step("schedule-create " + id)
	// The schedule exists: the native API and the database show it.
	code, body = cl.api(t, "GET", "/schedules/"+id, tok, "")
	if code != 200 || body["schedule"].(map[string]any)["pattern"] != "* * * * *" ||
		body["schedule"].(map[string]any)["description"] != "taken by the trove CLI" {
		t.Fatalf("native GET of the CLI's schedule: %d %v", code, body)
	}
	db := cl.controlDB(t)
	var rows int
	if err := db.QueryRow(t.Context(), `SELECT count(*) FROM backup_schedule WHERE id = $1 AND instance_id = $2
		AND deleted_at IS NULL AND enabled`, id, inst).Scan(&rows); err != nil || rows != 1 {
		t.Fatalf("backup_schedule row: %d (%v)", rows, err)
	}

	together(t, "reads",
		check{"schedule-list", func(t testing.TB) {
			var list []map[string]any
			out, err := cl.troveSched(demo, fix, "--json", "schedule-list", inst)
			if err != nil {
				t.Fatal(err)
			}
			decodeCLI(t, out, &list, "trove --json", []string{"schedule-list"})
			if len(list) != 1 || list[0]["id"] != id || list[0]["pattern"] != "* * * * *" || list[0]["name"] != "cli-nightly" {
				t.Errorf("trove schedule-list = %v", list)
			}
		}},
		check{"schedule-list as a table", func(t testing.TB) {
			out, err := cl.troveSched(demo, fix, "schedule-list", inst)
			if err != nil || !strings.Contains(out, id) || !strings.Contains(out, "Next Execution Time") {
				t.Errorf("trove schedule-list (table): %v\n%s", err, out)
			}
		}},
		check{"schedule-show", func(t testing.TB) {
			var shown map[string]any
			out, err := cl.troveSched(demo, fix, "--json", "schedule-show", id)
			if err != nil {
				t.Fatal(err)
			}
			decodeCLI(t, out, &shown, "trove --json", []string{"schedule-show"})
			var in map[string]any
			if s, _ := shown["input"].(string); json.Unmarshal([]byte(s), &in) != nil || in["instance"] != inst || in["name"] != "cli-nightly" {
				t.Errorf("trove schedule-show = %v", shown)
			}
		}},
		check{"schedule-create with a bad pattern", func(t testing.TB) {
			out, err := cl.troveSched(demo, fix, "schedule-create", inst, "61 * * * *", "bad")
			if err == nil || !strings.Contains(out, "Invalid cron pattern '61 * * * *'") {
				t.Errorf("trove schedule-create with pattern 61: %v\n%s", err, out)
			}
		}},
		check{"alt shows demo's schedule", func(t testing.TB) {
			out, err := cl.troveSched(alt, fix, "schedule-show", id)
			if err == nil || !strings.Contains(out, "Cron trigger not found") {
				t.Errorf("alt: trove schedule-show of demo's schedule: %v\n%s", err, out)
			}
		}},
		check{"alt deletes demo's schedule", func(t testing.TB) {
			if out, err := cl.troveSched(alt, fix, "schedule-delete", id); err == nil {
				t.Errorf("alt deleted demo's schedule:\n%s", out)
			}
		}},
		check{"alt lists demo's instance's schedules", func(t testing.TB) {
			if out, err := cl.troveSched(alt, fix, "schedule-list", inst); err == nil {
				t.Errorf("alt listed the schedules of demo's instance:\n%s", out)
			}
		}},
	)
	step("list/show/refusals")

	// The first tick (the next minute) takes a backup; the scheduler
	// settles the execution when the backup ends.
	var exec map[string]any
	deadline := time.Now().Add(5 * time.Minute)
	for exec == nil {
		if time.Now().After(deadline) {
			t.Fatal("no finished execution within 5 minutes")
		}
		time.Sleep(2 * time.Second)
		code, body := cl.api(t, "GET", "/schedules/"+id+"/executions", tok, "")
		if code != 200 {
			t.Fatalf("native executions: %d %v", code, body)
		}
		for _, e := range body["executions"].([]any) {
			if e := e.(map[string]any); e["state"] != "RUNNING" {
				exec = e
			}
		}
	}
	execID := exec["id"].(string)
	step(fmt.Sprintf("first execution %s: %s %v (backup %v)", execID, exec["state"], exec["state_info"], exec["backup_id"]))
	if exec["backup_id"] != nil {
		code, body := cl.api(t, "GET", "/backups/"+exec["backup_id"].(string), tok, "")
		if code != 200 {
			t.Fatalf("the execution's backup: %d %v", code, body)
		}
		b := body["backup"].(map[string]any)
		t.Logf("backup %s: %s %v, name %v", b["id"], b["status"], b["fail_reason"], b["name"])
		if (exec["state"] == "SUCCESS") != (b["status"] == "COMPLETED") || b["name"] != "cli-nightly" || b["instance_id"] != inst {
			t.Errorf("execution %s but backup %v", exec["state"], b)
		}
	}
	if exec["state"] != "SUCCESS" {
		t.Errorf("the scheduled backup did not complete: %v", exec)
	}

	var execs []map[string]any
	jsonRun(demo, &execs, "execution-list", id)
	found := false
	for _, e := range execs {
		if e["id"] == execID {
			found = true
			var out map[string]any
			_ = json.Unmarshal([]byte(fmt.Sprint(e["output"])), &out)
			if e["state"] != exec["state"] || e["workflow_name"] != "trove.backup_create" || e["created_at"] == nil ||
				(exec["backup_id"] != nil && out["backup_id"] != exec["backup_id"]) {
				t.Errorf("trove execution-list shows %v, the API %v", e, exec)
			}
		}
	}
	if !found {
		t.Fatalf("trove execution-list %s = %v, without execution %s", id, execs, execID)
	}
	step(fmt.Sprintf("execution-list: %d executions", len(execs)))
	if out, err := cl.troveSched(alt, fix, "execution-delete", execID); err == nil || !strings.Contains(out, "Execution not found") {
		t.Errorf("alt: trove execution-delete of demo's execution: %v\n%s", err, out)
	}
	// The owner deletes it with the other CLI: OSC's `database backup
	// execution delete` calls the same Mistral client.
	if _, err := cl.tryFixed(demo, fix, "openstack", "database", "backup", "execution", "delete", execID); err != nil {
		t.Fatal(err)
	}
	jsonRun(demo, &execs, "execution-list", id)
	for _, e := range execs {
		if e["id"] == execID {
			t.Errorf("execution %s still listed after execution delete", execID)
		}
	}
	step("trove execution-delete (refused for alt), openstack database backup execution delete")

	if _, err := cl.troveSched(demo, fix, "schedule-delete", id); err != nil {
		t.Fatal(err)
	}
	if out, err := cl.troveSched(demo, fix, "schedule-show", id); err == nil || !strings.Contains(out, "Cron trigger not found") {
		t.Errorf("trove schedule-show after schedule-delete: %v\n%s", err, out)
	}
	var list []map[string]any
	jsonRun(demo, &list, "schedule-list", inst)
	if len(list) != 0 {
		t.Errorf("trove schedule-list after schedule-delete = %v", list)
	}
	if code, body := cl.api(t, "GET", "/schedules/"+id, tok, ""); code != 404 {
		t.Errorf("native GET after schedule-delete: %d %v", code, body)
	}
	if err := db.QueryRow(t.Context(), `SELECT count(*) FROM backup_schedule WHERE id = $1 AND deleted_at IS NOT NULL`, id).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("backup_schedule row after delete: %d deleted (%v)", rows, err)
	}
	step("schedule-delete")
	// The backups a schedule took stay.
	if exec["backup_id"] != nil {
		if code, _ := cl.api(t, "GET", "/backups/"+exec["backup_id"].(string), tok, ""); code != 200 {
			t.Errorf("the schedule's backup went with the schedule: %d", code)
		}
	}
}

// lastLine is the last non-empty line of a CLI's output.
func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
