package main_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
)

// The legacy `trove` CLI (python3-troveclient 8.0.0) through Keystone's
// catalog (cli_test.go), for every command of CLIENT.md §2 that applies to
// PostgreSQL, works in 8.0.0 and no other test drives: databases, users
// and their access, root, configuration groups from create to delete,
// the catalog reads, quotas, volume types, and the routes Trove does not
// serve. Each step's effect is checked in the instance's PostgreSQL (log
// in as the user, read pg_database as the internal administrator, SHOW a
// setting). One all-in-one and one instance serve the whole test: an
// instance is cheap, but every CLI call costs seconds of Python start-up
// on a loaded machine, so independent calls are issued together.

// legacyPrefix picks a loopback /16 for an all-in-one from 127.180-189
// (this file's share of the range), not taken by another all-in-one of
// this process.
func legacyPrefix(t testing.TB) string {
	t.Helper()
	for n := 180; n < 190; n++ {
		if _, taken := takenPrefixes.LoadOrStore(n, true); !taken {
			return fmt.Sprintf("127.%d", n)
		}
	}
	t.Fatal("no loopback /16 left in 127.180-189")
	return ""
}

func TestTroveLegacyCLI(t *testing.T) {
	t.Parallel()
	c := startKeystoneCoffer(t, "COFFER_LOCAL_ADDRESS_PREFIX="+legacyPrefix(t))
	ctx := context.Background()
	member, admin := c.demo, c.admin
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	trove := func(t testing.TB, u keystonetest.User, args ...string) string {
		t.Helper()
		return c.run(t, u, append([]string{"trove"}, args...)...)
	}
	troveJSON := func(t testing.TB, v any, args ...string) {
		t.Helper()
		c.troveJSON(t, member, v, args...)
	}
	troveFails := func(t testing.TB, want string, args ...string) {
		t.Helper()
		c.fails(t, member, want, append([]string{"trove"}, args...)...)
	}

	// The instance builds while the catalog is read. Its user app reads
	// settings (cfgShow).
	const name = "legacy-cli"
	code, body := c.api(t, "POST", "/instances", c.creds.MemberToken, `{"instance": {"name": "`+name+`", "flavorRef": "1", "volume": {"size": 1},
		"databases": [{"name": "appdb"}], "users": [{"name": "app", "password": "app-pass-1", "databases": [{"name": "appdb"}]}]}}`)
	if code != 200 {
		t.Fatalf("create instance: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	inst := "/instances/" + id
	code, body = c.api(t, "GET", "/datastores/postgresql/versions", c.creds.MemberToken, "")
	versions, _ := body["versions"].([]any)
	if code != 200 || len(versions) != 1 {
		t.Fatalf("GET versions: %d %v", code, body)
	}
	verID, verName := versions[0].(map[string]any)["id"].(string), versions[0].(map[string]any)["name"].(string)

	var group map[string]any
	together(t, "catalog",
		check{"datastore-show", func(t testing.TB) {
			var ds map[string]any
			troveJSON(t, &ds, "datastore-show", "postgresql")
			if ds["name"] != "postgresql" || ds["default_version"] != verName || ds["versions (id)"] != verName+" ("+verID+")" {
				t.Errorf("trove datastore-show postgresql = %v", ds)
			}
		}},
		check{"datastore-version-list", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "datastore-version-list", "postgresql")
			if len(rows) != 1 || rows[0]["id"] != verID || rows[0]["name"] != verName {
				t.Errorf("trove datastore-version-list postgresql = %v", rows)
			}
		}},
		check{"datastore-version-show by id", func(t testing.TB) {
			var v map[string]any
			troveJSON(t, &v, "datastore-version-show", verID)
			if v["id"] != verID || v["name"] != verName {
				t.Errorf("trove datastore-version-show %s = %v", verID, v)
			}
		}},
		check{"flavor-show by name", func(t testing.TB) {
			var f map[string]any
			troveJSON(t, &f, "flavor-show", "m1.small")
			if f["id"] != 2.0 || f["name"] != "m1.small" || f["ram"] != 1024.0 {
				t.Errorf("trove flavor-show m1.small = %v", f)
			}
		}},
		// The local provider's cloud has no volume types (Cinder's are
		// synced under OpenStack): an empty list, not an error. The
		// top-level /volume-types Trove removed in 14.0.0 is a 404, as there.
		check{"volume-type-list of the version", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "volume-type-list", "--datastore_type", "postgresql", "--datastore_version_id", verID)
			if len(rows) != 0 {
				t.Errorf("trove volume-type-list of %s = %v", verID, rows)
			}
		}},
		check{"volume-type-list", func(t testing.TB) { troveFails(t, "(HTTP 404)", "volume-type-list") }},
		check{"configuration-parameter-list", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "configuration-parameter-list", verName, "--datastore", "postgresql")
			byName := map[string]map[string]any{}
			for _, r := range rows {
				byName[fmt.Sprint(r["name"])] = r
			}
			if len(rows) < 100 || byName["max_connections"]["restart_required"] != true || byName["work_mem"]["type"] != "string" {
				t.Errorf("trove configuration-parameter-list: %d parameters, max_connections %v, work_mem %v",
					len(rows), byName["max_connections"], byName["work_mem"])
			}
		}},
		check{"configuration-parameter-show by version id", func(t testing.TB) {
			var p map[string]any
			troveJSON(t, &p, "configuration-parameter-show", verID, "temp_file_limit")
			if p["name"] != "temp_file_limit" || p["type"] != "integer" || p["min"] != -1.0 || p["restart_required"] != false {
				t.Errorf("trove configuration-parameter-show = %v", p)
			}
		}},
		check{"quota-show of the own project", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "quota-show", c.creds.ProjectID)
			use := map[string]map[string]any{}
			for _, r := range rows {
				use[fmt.Sprint(r["resource"])] = r
			}
			if len(rows) != 4 || use["instances"]["in_use"] != 1.0 || use["instances"]["limit"] != 10.0 || use["volumes"]["in_use"] != 1.0 {
				t.Errorf("trove quota-show = %v", rows)
			}
		}},
		check{"quota-update as a member", func(t testing.TB) {
			troveFails(t, "User does not have admin privileges", "quota-update", c.creds.ProjectID, "instances", "3")
		}},
		// Security groups and metadata: legacy commands for APIs Trove
		// does not serve; the CLI reports the 404 and exits non-zero.
		check{"secgroup-list", func(t testing.TB) { troveFails(t, "(HTTP 404)", "secgroup-list") }},
		check{"configuration-create", func(t testing.TB) {
			troveJSON(t, &group, "configuration-create", "legacy-tuned", `{"work_mem": "16MB"}`,
				"--datastore", "postgresql", "--datastore_version", verName, "--description", "legacy group")
			if group["name"] != "legacy-tuned" || group["datastore_version_name"] != verName || !strings.Contains(fmt.Sprint(group["values"]), "16MB") {
				t.Errorf("trove configuration-create = %v", group)
			}
		}},
		check{"configuration-create of a value out of range", func(t testing.TB) {
			troveFails(t, "max_connections", "configuration-create", "bad", `{"max_connections": -5}`, "--datastore", "postgresql")
		}},
	)
	gid, _ := group["id"].(string)
	step("catalog, quotas and a configuration group")

	live := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	ip := live["ip"].([]any)[0].(string)
	pg := acctAdmin(t, c.coffer, id, ip)
	defaults, err := cfgShow(ctx, ip, "work_mem")
	if err != nil {
		t.Fatal(err)
	}
	step("instance ACTIVE")

	// database-create (by instance name: the CLI resolves it), user-create.
	trove(t, member, "database-create", name, "shop")
	trove(t, member, "database-create", id, "hr", "--character_set", "UTF8", "--collate", "C")
	trove(t, member, "user-create", name, "clerk", "clerk pw 1", "--databases", "shop")
	acctAPIList(t, c.coffer, inst+"/databases", "databases", "appdb", "hr", "shop")
	acctAPIList(t, c.coffer, inst+"/users", "users", "app", "clerk")
	if got := acctDatabases(t, pg); !slices.Equal(got, []string{"appdb", "hr", "shop"}) {
		t.Errorf("PostgreSQL has databases %v", got)
	}
	var collate string
	if err := pg.QueryRow(ctx, "SELECT datcollate FROM pg_database WHERE datname = 'hr'").Scan(&collate); err != nil || collate != "C" {
		t.Errorf("hr's collation %q (%v), want C", collate, err)
	}
	if err := acctLogin(ip, "clerk", "clerk pw 1", "shop"); err != nil {
		t.Errorf("clerk into shop: %v", err)
	}
	if err := refused(acctLogin(ip, "clerk", "clerk pw 1", "hr")); err != nil {
		t.Errorf("clerk into hr without a grant: %v", err)
	}
	step("database-create, user-create")

	together(t, "accounts created",
		check{"database-list", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "database-list", name)
			if got := column(rows, "name"); !slices.Equal(got, []string{"appdb", "hr", "shop"}) {
				t.Errorf("trove database-list = %v", rows)
			}
		}},
		check{"database-create of an existing database", func(t testing.TB) {
			troveFails(t, "already exists", "database-create", id, "shop")
		}},
		check{"user-list", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "user-list", id)
			users := map[string]string{}
			for _, r := range rows {
				users[fmt.Sprint(r["name"])] = fmt.Sprint(r["host"]) + " " + fmt.Sprint(r["databases"])
			}
			if len(rows) != 2 || !strings.HasPrefix(users["clerk"], "% ") || !strings.Contains(users["clerk"], "shop") {
				t.Errorf("trove user-list = %v", rows)
			}
		}},
		check{"user-show", func(t testing.TB) {
			var u map[string]any
			troveJSON(t, &u, "user-show", name, "clerk")
			if u["name"] != "clerk" || u["host"] != "%" || !strings.Contains(fmt.Sprint(u["databases"]), "shop") {
				t.Errorf("trove user-show = %v", u)
			}
		}},
		check{"user-show of a missing user", func(t testing.TB) {
			troveFails(t, "cannot be found", "user-show", id, "nobody")
		}},
		check{"user-show-access", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "user-show-access", id, "clerk", "--host", "%")
			if got := column(rows, "name"); !slices.Equal(got, []string{"shop"}) {
				t.Errorf("trove user-show-access = %v", rows)
			}
		}},
		check{"root-show before enable", func(t testing.TB) {
			var r map[string]any
			troveJSON(t, &r, "root-show", name)
			if r["is_root_enabled"] != false {
				t.Errorf("trove root-show = %v", r)
			}
		}},
		check{"metadata-list", func(t testing.TB) { troveFails(t, "(HTTP 404)", "metadata-list", id) }},
		check{"eject-replica-source", func(t testing.TB) {
			troveFails(t, "is not a replica source.", "eject-replica-source", name)
		}},
	)
	step("reads of the accounts")

	// user-grant-access / user-revoke-access.
	trove(t, member, "user-grant-access", name, "clerk", "hr", "appdb")
	acctAPIList(t, c.coffer, inst+"/users/clerk/databases", "databases", "appdb", "hr", "shop")
	if err := acctLogin(ip, "clerk", "clerk pw 1", "hr"); err != nil {
		t.Errorf("clerk into hr after the grant: %v", err)
	}
	trove(t, member, "user-revoke-access", id, "clerk", "hr")
	acctAPIList(t, c.coffer, inst+"/users/clerk/databases", "databases", "appdb", "shop")
	if err := refused(acctLogin(ip, "clerk", "clerk pw 1", "hr")); err != nil {
		t.Errorf("clerk into hr after the revoke: %v", err)
	}
	// user-update-attributes: a new password, then a new name.
	trove(t, member, "user-update-attributes", id, "clerk", "--new_password", "clerk-pw-2")
	acctEventually(t, "login with the new password", func() error { return acctLogin(ip, "clerk", "clerk-pw-2", "shop") })
	if err := refused(acctLogin(ip, "clerk", "clerk pw 1", "shop")); err != nil {
		t.Errorf("the old password: %v", err)
	}
	trove(t, member, "user-update-attributes", name, "clerk", "--new_name", "cashier")
	acctAPIList(t, c.coffer, inst+"/users", "users", "app", "cashier")
	if err := acctLogin(ip, "cashier", "clerk-pw-2", "shop"); err != nil {
		t.Errorf("the renamed user: %v", err)
	}
	step("grant, revoke, update attributes")

	// root-enable (generated, then a chosen password), root-show,
	// root-disable.
	var root map[string]any
	troveJSON(t, &root, "root-enable", name)
	rootPW, _ := root["password"].(string)
	if root["name"] != "postgres" || len(rootPW) < 32 {
		t.Errorf("trove root-enable = %v", root)
	}
	acctEventually(t, "login as root", func() error { return acctLogin(ip, "postgres", rootPW, "postgres") })
	troveJSON(t, &root, "root-enable", id, "--root_password", "legacy-root-pw")
	if root["password"] != "legacy-root-pw" {
		t.Errorf("trove root-enable --root_password = %v", root)
	}
	acctEventually(t, "login as root with the chosen password", func() error { return acctLogin(ip, "postgres", "legacy-root-pw", "shop") })
	troveJSON(t, &root, "root-show", id)
	if root["is_root_enabled"] != true {
		t.Errorf("trove root-show after enable = %v", root)
	}
	trove(t, member, "root-disable", name)
	acctEventually(t, "root refused after disable", func() error { return refused(acctLogin(ip, "postgres", "legacy-root-pw", "postgres")) })
	troveJSON(t, &root, "root-show", id)
	if root["is_root_enabled"] != false {
		t.Errorf("trove root-show after disable = %v", root)
	}
	step("root")

	// Configuration groups: attach applies the (dynamic) value live, patch
	// and update change it, detach restores the default, delete.
	trove(t, member, "configuration-attach", name, "legacy-tuned")
	cfgEventually(t, ip, map[string]string{"work_mem": "16MB"})
	if s := c.peekStatus(id); s != "ACTIVE" {
		t.Errorf("status after attaching a dynamic value: %s", s)
	}
	together(t, "attached",
		check{"configuration-list", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "configuration-list")
			if len(rows) != 1 || rows[0]["id"] != gid || rows[0]["description"] != "legacy group" || rows[0]["datastore_version_name"] != verName {
				t.Errorf("trove configuration-list = %v", rows)
			}
		}},
		check{"configuration-show", func(t testing.TB) {
			var g map[string]any
			troveJSON(t, &g, "configuration-show", "legacy-tuned")
			if g["id"] != gid || g["instance_count"] != 1.0 || !strings.Contains(fmt.Sprint(g["values"]), "16MB") {
				t.Errorf("trove configuration-show = %v", g)
			}
		}},
		check{"configuration-instances", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "configuration-instances", gid)
			if len(rows) != 1 || rows[0]["id"] != id || rows[0]["name"] != name {
				t.Errorf("trove configuration-instances = %v", rows)
			}
		}},
		check{"configuration-default", func(t testing.TB) {
			// The instance's defaults: what it runs without a group.
			var d map[string]any
			troveJSON(t, &d, "configuration-default", name)
			if fmt.Sprint(d["work_mem"]) != defaults["work_mem"] || fmt.Sprint(d["max_connections"]) != "50" {
				t.Errorf("trove configuration-default = %v (server default work_mem %s)", d, defaults["work_mem"])
			}
		}},
		check{"configuration-delete of an attached group", func(t testing.TB) {
			troveFails(t, "non-terminated instances", "configuration-delete", gid)
		}},
		check{"configuration-patch of an unknown parameter", func(t testing.TB) {
			troveFails(t, "is not supported for this datastore", "configuration-patch", gid, `{"no_such_setting": 1}`)
		}},
	)
	trove(t, member, "configuration-patch", "legacy-tuned", `{"work_mem": "24MB"}`)
	cfgEventually(t, ip, map[string]string{"work_mem": "24MB"})
	trove(t, member, "configuration-update", gid, `{"work_mem": "12MB"}`, "--name", "legacy-tuned2", "--description", "replaced")
	cfgEventually(t, ip, map[string]string{"work_mem": "12MB"})
	troveJSON(t, &group, "configuration-show", gid)
	if group["name"] != "legacy-tuned2" || group["description"] != "replaced" {
		t.Errorf("trove configuration-show after update = %v", group)
	}
	trove(t, member, "configuration-detach", name)
	cfgEventually(t, ip, defaults)
	trove(t, member, "configuration-delete", "legacy-tuned2")
	var groups []map[string]any
	troveJSON(t, &groups, "configuration-list")
	if len(groups) != 0 {
		t.Errorf("trove configuration-list after delete = %v", groups)
	}
	step("configuration groups")

	// quota-update by the admin; the member sees the new limit.
	var updated map[string]any
	c.troveJSON(t, admin, &updated, "quota-update", c.creds.ProjectID, "instances", "3")
	if updated["instances"] != 3.0 {
		t.Errorf("trove quota-update = %v", updated)
	}
	// user-delete, database-delete.
	trove(t, member, "user-delete", name, "cashier")
	trove(t, member, "database-delete", id, "hr")
	acctAPIList(t, c.coffer, inst+"/users", "users", "app")
	acctAPIList(t, c.coffer, inst+"/databases", "databases", "appdb", "shop")
	if err := refused(acctLogin(ip, "cashier", "clerk-pw-2", "shop")); err != nil {
		t.Errorf("the deleted user: %v", err)
	}
	if got := acctDatabases(t, pg); !slices.Equal(got, []string{"appdb", "shop"}) {
		t.Errorf("PostgreSQL has databases %v after the delete", got)
	}
	together(t, "deleted",
		check{"quota-show", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "quota-show", c.creds.ProjectID)
			for _, r := range rows {
				if r["resource"] == "instances" && r["limit"] != 3.0 {
					t.Errorf("trove quota-show after the update = %v", rows)
				}
			}
		}},
		check{"user-list", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "user-list", name)
			if got := column(rows, "name"); !slices.Equal(got, []string{"app"}) {
				t.Errorf("trove user-list after delete = %v", rows)
			}
		}},
		check{"database-list", func(t testing.TB) {
			var rows []map[string]any
			troveJSON(t, &rows, "database-list", id)
			if got := column(rows, "name"); !slices.Equal(got, []string{"appdb", "shop"}) {
				t.Errorf("trove database-list after delete = %v", rows)
			}
		}},
		check{"database-delete of a deleted database", func(t testing.TB) {
			troveFails(t, "(HTTP 404)", "database-delete", id, "hr")
		}},
	)
	step("deletes")

	if code, _ := c.api(t, "DELETE", inst, c.creds.MemberToken, ""); code != 202 {
		t.Fatalf("delete instance: %d", code)
	}
	c.waitStatus(t, id, "", time.Minute)
}
