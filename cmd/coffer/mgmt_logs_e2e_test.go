package main_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// The management instance actions and guest logs through the real CLIs
// and Keystone (cli_test.go): `openstack database instance list
// --all-projects`, `instance reboot` and `instance rebuild` (admin), and
// `database log list/show/set` with the legacy `trove log-*` commands,
// each checked on the instance's PostgreSQL: the postmaster restarted by a
// reboot and by a rebuild (pg_postmaster_start_time), the data kept, the
// statement log switched on and off (SHOW log_statement, the statement in
// the server log).
func TestMgmtAndLogsCLI(t *testing.T) {
	t.Parallel()
	c := startKeystoneCoffer(t, "COFFER_LOCAL_ADDRESS_PREFIX="+legacyPrefix(t))
	ctx := context.Background()
	member, admin := c.demo, c.admin
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }

	const name = "mgmt-logs"
	code, body := c.api(t, "POST", "/instances", c.creds.MemberToken, `{"instance": {"name": "`+name+`", "flavorRef": "1", "volume": {"size": 1},
		"databases": [{"name": "appdb"}], "users": [{"name": "app", "password": "app-pass-1", "databases": [{"name": "appdb"}]}]}}`)
	if code != 200 {
		t.Fatalf("create instance: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	// The Swift that logs are published into, started while the instance
	// builds.
	swift := objectstoretest.StartSwiftKeystone(t, objectstoretest.KeystoneAuth{
		URL: c.ks.AuthURL, User: c.ks.Service.Name, Password: c.ks.Service.Password, Project: c.ks.Service.ProjectName,
	})
	inst := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	ip := inst["ip"].([]any)[0].(string)
	dsn := fmt.Sprintf("host=%s port=5432 user=app password=app-pass-1 dbname=appdb sslmode=disable connect_timeout=5", ip)
	query := func(sql string, dest ...any) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		if len(dest) == 0 {
			_, err = conn.Exec(ctx, sql)
			return err
		}
		return conn.QueryRow(ctx, sql).Scan(dest...)
	}
	mustQuery := func(sql string, dest ...any) {
		t.Helper()
		if err := query(sql, dest...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	startedAt := func() time.Time {
		t.Helper()
		var ts time.Time
		mustQuery("SELECT pg_postmaster_start_time()", &ts)
		return ts
	}
	rows := func() int {
		t.Helper()
		var n int
		mustQuery("SELECT count(*) FROM kept", &n)
		return n
	}
	mustQuery("CREATE TABLE kept (x text)")
	mustQuery("INSERT INTO kept VALUES ('before the management actions')")
	serverLog := filepath.Join(c.dataDir, "instances", id, "volume", "postgres.log")
	logsOf := func() map[string]any {
		t.Helper()
		code, body := c.api(t, "GET", "/instances/"+id+"/log", c.creds.MemberToken, "")
		logs, _ := body["logs"].([]any)
		if code != 200 || len(logs) != 1 {
			t.Fatalf("GET log: %d %v", code, body)
		}
		return logs[0].(map[string]any)
	}
	step("instance ACTIVE")

	together(t, "before",
		check{"instance list --all-projects as admin", func(t testing.TB) {
			var list []map[string]any
			c.oscJSON(t, admin, &list, "database", "instance", "list", "--all-projects")
			found := false
			for _, r := range list {
				if r["ID"] == id {
					found = r["Tenant ID"] == c.creds.ProjectID && r["Server ID"] == id && r["Status"] == "ACTIVE" && r["Name"] == name
				}
			}
			if !found {
				t.Errorf("instance list --all-projects = %v", list)
			}
		}},
		check{"instance list --all-projects as a member", func(t testing.TB) {
			c.oscFails(t, member, "User does not have admin privileges", "database", "instance", "list", "--all-projects")
		}},
		check{"instance reboot as a member", func(t testing.TB) {
			c.oscFails(t, member, "User does not have admin privileges", "database", "instance", "reboot", id)
		}},
		check{"log list", func(t testing.TB) {
			var logs []map[string]any
			c.oscJSON(t, member, &logs, "database", "log", "list", name)
			if len(logs) != 1 || logs[0]["Name"] != "general" || logs[0]["Type"] != "USER" || logs[0]["Status"] != "Disabled" {
				t.Errorf("log list = %v", logs)
			}
		}},
		check{"trove log-list", func(t testing.TB) {
			var logs []map[string]any
			c.troveJSON(t, member, &logs, "log-list", id)
			if len(logs) != 1 || logs[0]["name"] != "general" || logs[0]["status"] != "Disabled" {
				t.Errorf("trove log-list = %v", logs)
			}
		}},
	)
	step("lists")

	// Guest logs: the legacy CLI enables the statement log; PostgreSQL
	// logs statements at once (a reload, no restart).
	before := logsOf()["pending"].(float64)
	var l map[string]any
	c.troveJSON(t, member, &l, "log-enable", name, "general")
	if l["name"] != "general" || l["status"] != "Ready" {
		t.Errorf("trove log-enable = %v", l)
	}
	cfgEventually(t, ip, map[string]string{"log_statement": "all", "log_min_duration_statement": "1s"})
	mustQuery("SELECT 'coffer-log-marker-1'")
	acctEventually(t, "the statement in the server log", func() error {
		b, err := os.ReadFile(serverLog)
		if err == nil && !strings.Contains(string(b), "statement: SELECT 'coffer-log-marker-1'") {
			err = fmt.Errorf("not in %d bytes of the server log", len(b))
		}
		return err
	})
	acctEventually(t, "the log's pending bytes reported", func() error {
		if l := logsOf(); l["status"] != "Ready" || l["pending"].(float64) <= before {
			return fmt.Errorf("log %v, pending was %v", l, before)
		}
		return nil
	})
	step("log enabled")
	together(t, "log enabled",
		check{"log show", func(t testing.TB) {
			var l map[string]any
			c.oscJSON(t, member, &l, "database", "log", "show", id, "general")
			if l["status"] != "Ready" || l["pending"].(float64) <= 0 || l["published"] != 0.0 || l["container"] != "None" ||
				l["metafile"] != id+"/postgresql-general_metafile" {
				t.Errorf("log show = %v", l)
			}
		}},
		check{"trove log-show", func(t testing.TB) {
			var l map[string]any
			c.troveJSON(t, member, &l, "log-show", name, "general")
			if l["status"] != "Ready" || l["type"] != "USER" {
				t.Errorf("trove log-show = %v", l)
			}
		}},
		// The region has no object-store yet: nowhere to publish to (501,
		// Trove without Swift). The legacy CLI prints the message and
		// exits 0.
		check{"log set --publish without Swift", func(t testing.TB) {
			c.oscFails(t, member, "the catalog has no object-store (Swift) endpoint", "database", "log", "set", id, "general", "--publish")
		}},
		check{"trove log-publish without Swift", func(t testing.TB) {
			if out := c.run(t, member, "trove", "log-publish", id, "general"); !strings.Contains(out, "the catalog has no object-store (Swift) endpoint") {
				t.Errorf("trove log-publish: %s", out)
			}
		}},
		check{"trove log-discard without Swift", func(t testing.TB) {
			if out := c.run(t, member, "trove", "log-discard", id, "general"); !strings.Contains(out, "the catalog has no object-store (Swift) endpoint") {
				t.Errorf("trove log-discard: %s", out)
			}
		}},
		check{"log set of an unknown log", func(t testing.TB) {
			c.oscFails(t, member, "(HTTP 404)", "database", "log", "set", id, "slow_query", "--enable")
		}},
	)
	step("log actions without Swift")
	publishGuestLogs(t, c, swift, id, serverLog, mustQuery)
	step("published, tailed, saved and discarded through both CLIs")

	c.oscJSON(t, member, &l, "database", "log", "set", name, "general", "--disable")
	if l["status"] != "Disabled" {
		t.Errorf("log set --disable = %v", l)
	}
	cfgEventually(t, ip, map[string]string{"log_statement": "none", "log_min_duration_statement": "-1"})
	c.oscJSON(t, member, &l, "database", "log", "set", id, "general", "--enable")
	if l["status"] != "Ready" {
		t.Errorf("log set --enable = %v", l)
	}
	cfgEventually(t, ip, map[string]string{"log_statement": "all"})
	step("log disabled and enabled again")

	// stop (no CLI command; the API): the datastore goes down, the
	// instance stays ACTIVE with operating_status SHUTDOWN.
	first := startedAt()
	if code, body := c.api(t, "POST", "/mgmt/instances/"+id+"/action", c.creds.AdminToken, `{"stop": {}}`); code != 202 {
		t.Fatalf("stop: %d %v", code, body)
	}
	acctEventually(t, "the datastore stopped", func() error {
		_, body := c.api(t, "GET", "/instances/"+id, c.creds.MemberToken, "")
		i := body["instance"].(map[string]any)
		if i["status"] != "ACTIVE" || i["operating_status"] != "SHUTDOWN" {
			return fmt.Errorf("status %v / %v", i["status"], i["operating_status"])
		}
		return refused(query("SELECT 1"))
	})
	step("stopped")

	// reboot: REBOOT, then ACTIVE with a new postmaster and the data.
	w := c.watchStatuses(id)
	c.osc(t, admin, "database", "instance", "reboot", id)
	c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	if seen := w.end(); !transitioned(seen, "REBOOT") {
		t.Errorf("reboot statuses = %v, want REBOOT then ACTIVE", seen)
	}
	rebooted := startedAt()
	if !rebooted.After(first) {
		t.Errorf("postmaster start %v → %v: reboot did not start the server", first, rebooted)
	}
	if n := rows(); n != 1 {
		t.Errorf("%d rows after the reboot", n)
	}
	step("rebooted")

	// rebuild: BUILD, then ACTIVE; the server (agent and datastore) was
	// started anew on the same volume: new postmaster, the data and the
	// log setting kept, the image recorded.
	const image = "3e50414a-8532-4646-982c-a66fe8f0411b"
	agentBefore, _ := os.ReadFile(filepath.Join(c.dataDir, "instances", id, "agent.pid"))
	w = c.watchStatuses(id)
	c.osc(t, admin, "database", "instance", "rebuild", id, image)
	c.waitStatus(t, id, "ACTIVE", 3*time.Minute)
	if seen := w.end(); !transitioned(seen, "BUILD") {
		t.Errorf("rebuild statuses = %v, want BUILD then ACTIVE", seen)
	}
	acctEventually(t, "the rebuilt datastore serves", func() error { return query("SELECT 1") })
	if rebuilt := startedAt(); !rebuilt.After(rebooted) {
		t.Errorf("postmaster start %v → %v: rebuild did not restart the server", rebooted, rebuilt)
	}
	if n := rows(); n != 1 {
		t.Errorf("%d rows after the rebuild", n)
	}
	cfgEventually(t, ip, map[string]string{"log_statement": "all"})
	agentAfter, _ := os.ReadFile(filepath.Join(c.dataDir, "instances", id, "agent.pid"))
	if strings.TrimSpace(string(agentAfter)) == strings.TrimSpace(string(agentBefore)) {
		t.Errorf("the agent's pid is %s before and after the rebuild", agentAfter)
	}
	if b, err := os.ReadFile(filepath.Join(c.dataDir, "instances", id, "image")); err != nil || strings.TrimSpace(string(b)) != image {
		t.Errorf("recorded image %q (%v)", b, err)
	}
	var shown map[string]any
	c.oscJSON(t, member, &shown, "database", "instance", "show", id)
	if shown["status"] != "ACTIVE" || shown["operating_status"] != "HEALTHY" {
		t.Errorf("instance show after the rebuild = %v / %v", shown["status"], shown["operating_status"])
	}
	step("rebuilt")

	db := c.controlDB(t)
	var outcomes string
	if err := db.QueryRow(ctx, `SELECT string_agg(action || ':' || outcome || coalesce(nullif(':' || image_id, ':'), ''), ',' ORDER BY created_at)
		FROM instance_action WHERE instance_id = $1`, id).Scan(&outcomes); err != nil {
		t.Fatal(err)
	}
	if outcomes != "restart:succeeded,rebuild:succeeded:"+image {
		t.Errorf("actions = %s", outcomes)
	}
	var kinds string
	if err := db.QueryRow(ctx, `SELECT string_agg(kind, ',' ORDER BY id) FROM event WHERE resource_id = $1 AND kind NOT IN ('instance.created', 'instance.active')`, id).Scan(&kinds); err != nil {
		t.Fatal(err)
	}
	want := "instance.log_changed,instance.log_changed,instance.log_changed,instance.stopping,instance.stopped," +
		"instance.restarting,instance.restarted,instance.rebuilding,instance.rebuilt"
	if kinds != want {
		t.Errorf("events:\n got %s\nwant %s", kinds, want)
	}

	if code, _ := c.api(t, "DELETE", "/instances/"+id, c.creds.MemberToken, ""); code != 202 {
		t.Fatalf("delete instance: %d", code)
	}
	c.waitStatus(t, id, "", time.Minute)
}
