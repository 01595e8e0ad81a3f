package main_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
)

// cfgShow reads settings on the instance as its user, in a new session.
func cfgShow(ctx context.Context, ip string, settings ...string) (map[string]string, error) {
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=app password=app-pass-1 dbname=appdb sslmode=disable", ip))
	if err != nil {
		return nil, err
	}
	defer conn.Close(ctx)
	got := map[string]string{}
	for _, s := range settings {
		var v string
		if err := conn.QueryRow(ctx, "SHOW "+s).Scan(&v); err != nil {
			return nil, err
		}
		got[s] = v
	}
	return got, nil
}

// cfgEventually polls until the instance shows want for every setting.
func cfgEventually(t *testing.T, ip string, want map[string]string) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(60 * time.Second)
	var got map[string]string
	var err error
	names := make([]string, 0, len(want))
	for k := range want {
		names = append(names, k)
	}
	for time.Now().Before(deadline) {
		got, err = cfgShow(ctx, ip, names...)
		if err == nil {
			match := true
			for k, v := range want {
				match = match && got[k] == v
			}
			if match {
				return
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("settings %v (error %v), want %v", got, err, want)
}

// The real `openstack database configuration ...`, `database quota`,
// `database limit` and `datastore version ...` commands against the
// all-in-one, through Keystone's catalog (cli_test.go), with the effect
// checked in PostgreSQL: a group with a dynamic value (work_mem) and a
// restart-required one (max_connections) is attached, applied at restart,
// changed live, and detached again.
func TestConfigurationCLI(t *testing.T) {
	t.Parallel()
	c := startKeystoneCoffer(t)
	member, admin := c.demo, c.admin
	cli := func(u keystonetest.User, args ...string) (string, error) {
		return c.try(u, append([]string{"openstack"}, args...)...)
	}

	code, body := c.api(t, "POST", "/instances", c.creds.MemberToken, `{"instance": {"name": "cfg-db", "flavorRef": "1", "volume": {"size": 1},
		"databases": [{"name": "appdb"}], "users": [{"name": "app", "password": "app-pass-1", "databases": [{"name": "appdb"}]}]}}`)
	if code != 200 {
		t.Fatalf("create instance: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)

	// Parameters, by version name (with --datastore) and by version id.
	var versions []map[string]any
	c.oscJSON(t, member, &versions, "datastore", "version", "list", "postgresql")
	if len(versions) != 1 {
		t.Fatalf("versions = %v", versions)
	}
	verID, verName := versions[0]["ID"].(string), versions[0]["Name"].(string)
	var params []map[string]any
	c.oscJSON(t, member, &params, "database", "configuration", "parameter", "list", verName, "--datastore", "postgresql")
	found := map[string]map[string]any{}
	for _, p := range params {
		found[p["Name"].(string)] = p
	}
	if len(params) < 100 || found["max_connections"]["Restart Required"] != true || found["work_mem"]["Type"] != "string" {
		t.Errorf("parameter list: %d parameters, max_connections %v, work_mem %v", len(params), found["max_connections"], found["work_mem"])
	}
	together(t, "parameters",
		check{"parameter list by id", func(t testing.TB) {
			var params []map[string]any
			c.oscJSON(t, member, &params, "database", "configuration", "parameter", "list", verID)
			if len(params) != len(found) {
				t.Errorf("parameter list by id: %d parameters, by name %d", len(params), len(found))
			}
		}},
		check{"parameter show by id", func(t testing.TB) {
			var param map[string]any
			c.oscJSON(t, member, &param, "database", "configuration", "parameter", "show", verID, "work_mem")
			if param["name"] != "work_mem" || param["restart_required"] != false || param["datastore_version_id"] != verID {
				t.Errorf("parameter show by id = %v", param)
			}
		}},
		check{"parameter show by name", func(t testing.TB) {
			var param map[string]any
			c.oscJSON(t, member, &param, "database", "configuration", "parameter", "show", verName, "temp_file_limit", "--datastore", "postgresql")
			if param["name"] != "temp_file_limit" || param["min"] != -1.0 {
				t.Errorf("parameter show by name = %v", param)
			}
		}},
		check{"parameter show of an unknown parameter", func(t testing.TB) {
			c.oscFails(t, member, "HTTP 404", "database", "configuration", "parameter", "show", verID, "no_such_parameter")
		}},
		check{"datastore version show by id", func(t testing.TB) {
			var version map[string]any
			c.oscJSON(t, member, &version, "datastore", "version", "show", verID)
			if version["name"] != verName || version["id"] != verID {
				t.Errorf("datastore version show by id = %v", version)
			}
		}},
		// Invalid groups are refused before anything is stored (the list
		// below shows only the valid one).
		check{"configuration create of a wrong type", func(t testing.TB) {
			c.oscFails(t, member, "is not of type integer", "database", "configuration", "create", "bad", `{"max_connections": "many"}`,
				"--datastore", "postgresql", "--datastore-version", verName)
		}},
		check{"configuration create of an unknown parameter", func(t testing.TB) {
			c.oscFails(t, member, "is not supported for this datastore", "database", "configuration", "create", "bad", `{"no_such": 1}`)
		}},
	)

	// Create, list, show by name.
	var group map[string]any
	c.oscJSON(t, member, &group, "database", "configuration", "create", "tuned", `{"work_mem": "16MB", "max_connections": 77}`,
		"--datastore", "postgresql", "--datastore-version", verName, "--description", "e2e group")
	gid, _ := group["id"].(string)
	if gid == "" || group["name"] != "tuned" || group["datastore_version_name"] != verName {
		t.Fatalf("configuration create = %v", group)
	}
	together(t, "group created",
		check{"configuration list", func(t testing.TB) {
			var groups []map[string]any
			c.oscJSON(t, member, &groups, "database", "configuration", "list")
			if len(groups) != 1 || groups[0]["ID"] != gid || groups[0]["Description"] != "e2e group" {
				t.Errorf("configuration list = %v", groups)
			}
		}},
		check{"configuration show", func(t testing.TB) {
			var group map[string]any
			c.oscJSON(t, member, &group, "database", "configuration", "show", "tuned")
			if group["id"] != gid || !strings.Contains(fmt.Sprint(group["values"]), "16MB") {
				t.Errorf("configuration show = %v", group)
			}
		}},
	)

	inst := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	ip := inst["ip"].([]any)[0].(string)
	before, err := cfgShow(context.Background(), ip, "work_mem", "max_connections")
	if err != nil {
		t.Fatal(err)
	}
	// The default configuration is what the instance runs with (flavor 1).
	var def map[string]any
	c.oscJSON(t, member, &def, "database", "configuration", "default", id)
	if fmt.Sprint(def["max_connections"]) != before["max_connections"] || def["work_mem"] != before["work_mem"] {
		t.Errorf("configuration default = %v, instance runs %v", def, before)
	}

	// Attach: max_connections needs a restart, so nothing changes yet and
	// the instance says RESTART_REQUIRED.
	c.osc(t, member, "database", "configuration", "attach", id, "tuned")
	c.waitStatus(t, id, "RESTART_REQUIRED", time.Minute)
	if now, err := cfgShow(context.Background(), ip, "work_mem", "max_connections"); err != nil || now["work_mem"] != before["work_mem"] || now["max_connections"] != before["max_connections"] {
		t.Errorf("before the restart: %v %v (was %v)", now, err, before)
	}
	together(t, "attached",
		check{"instance show", func(t testing.TB) {
			var shown map[string]any
			c.oscJSON(t, member, &shown, "database", "instance", "show", id)
			if shown["configuration"] != gid {
				t.Errorf("instance show configuration = %v", shown["configuration"])
			}
		}},
		check{"configuration instances", func(t testing.TB) {
			var attached []map[string]any
			c.oscJSON(t, member, &attached, "database", "configuration", "instances", "tuned")
			if len(attached) != 1 || attached[0]["ID"] != id {
				t.Errorf("configuration instances = %v", attached)
			}
		}},
		check{"configuration delete of an attached group", func(t testing.TB) {
			c.oscFails(t, member, "non-terminated instances", "database", "configuration", "delete", "tuned")
		}},
	)

	c.osc(t, member, "database", "instance", "restart", id)
	c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	cfgEventually(t, ip, map[string]string{"work_mem": "16MB", "max_connections": "77"})

	// A dynamic change applies live (reload): no restart, still ACTIVE.
	c.osc(t, member, "database", "configuration", "parameter", "set", gid, `{"work_mem": "24MB"}`)
	cfgEventually(t, ip, map[string]string{"work_mem": "24MB", "max_connections": "77"})
	// PUT replaces the values; max_connections keeps its value, so this is
	// live too.
	c.osc(t, member, "database", "configuration", "set", gid, `{"work_mem": "12MB", "max_connections": 77}`, "--name", "tuned2")
	cfgEventually(t, ip, map[string]string{"work_mem": "12MB"})
	if s := c.peekConfigurationStatus(t, id); s != "ACTIVE" {
		t.Errorf("status after live changes = %s", s)
	}
	c.oscJSON(t, member, &group, "database", "configuration", "show", gid)
	if group["name"] != "tuned2" || group["instance_count"] != 1.0 {
		t.Errorf("after set: %v", group)
	}

	// Detach restores the defaults: max_connections needs the restart.
	c.osc(t, member, "database", "configuration", "detach", id)
	c.waitStatus(t, id, "RESTART_REQUIRED", time.Minute)
	c.osc(t, member, "database", "instance", "restart", id)
	c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	cfgEventually(t, ip, before)
	c.osc(t, member, "database", "configuration", "delete", "tuned2")
	var groups []map[string]any
	c.oscJSON(t, member, &groups, "database", "configuration", "list")
	if len(groups) != 0 {
		t.Errorf("list after delete = %v", groups)
	}

	// Quotas and limits. The admin looks the project up by name (the CLI
	// asks Keystone); a member may see its own project's quotas only.
	together(t, "quotas",
		check{"quota show", func(t testing.TB) {
			var quotas []map[string]any
			c.oscJSON(t, member, &quotas, "database", "quota", "show", c.creds.ProjectID)
			use := map[string]map[string]any{}
			for _, q := range quotas {
				use[q["Resource"].(string)] = q
			}
			if use["instances"]["In Use"] != 1.0 || use["instances"]["Limit"] != 10.0 || use["ram"]["In Use"] != 512.0 || use["ram"]["Limit"] != -1.0 {
				t.Errorf("quota show = %v", quotas)
			}
		}},
		check{"quota show by project name as admin", func(t testing.TB) {
			var quotas []map[string]any
			c.oscJSON(t, admin, &quotas, "database", "quota", "show", c.demo.ProjectName)
			if got := column(quotas, "Resource"); !slices.Contains(got, "instances") || len(quotas) != 4 {
				t.Errorf("quota show %s as admin = %v", c.demo.ProjectName, quotas)
			}
		}},
		check{"quota show of another project as a member", func(t testing.TB) {
			c.oscFails(t, member, "HTTP 403", "database", "quota", "show", c.alt.ProjectID)
		}},
		check{"quota update as a member", func(t testing.TB) {
			c.oscFails(t, member, "User does not have admin privileges", "database", "quota", "update", c.creds.ProjectID, "instances", "1")
		}},
	)
	var updated map[string]any
	c.oscJSON(t, admin, &updated, "database", "quota", "update", c.creds.ProjectID, "instances", "1")
	if updated["instances"] != 1.0 {
		t.Errorf("quota update = %v", updated)
	}
	together(t, "quota updated",
		check{"limit list", func(t testing.TB) {
			out, err := cli(member, "database", "limit", "list")
			if err != nil || !strings.Contains(out, "max_instances") || !strings.Contains(out, "ABSOLUTE") {
				t.Errorf("limit list: %v\n%s", err, out)
			}
		}},
		check{"instance create over the quota", func(t testing.TB) {
			c.oscFails(t, member, "Quota exceeded for resources: ['instances']", "database", "instance", "create", "one-too-many",
				"--flavor", "1", "--size", "1", "--datastore", "postgresql")
		}},
		check{"datastore version create as a member", func(t testing.TB) {
			c.oscFails(t, member, "User does not have admin privileges", "datastore", "version", "create", "99", "postgresql", "postgresql", cfgImage)
		}},
	)

	// Datastore versions (admin).
	c.osc(t, admin, "datastore", "version", "create", "99", "postgresql", "postgresql", cfgImage,
		"--active", "--version-number", "99.1", "--image-tags", "pg,next")
	c.oscJSON(t, admin, &versions, "datastore", "version", "list", "postgresql")
	newID := ""
	for _, v := range versions {
		if v["Name"] == "99" && v["Version"] == "99.1" {
			newID = v["ID"].(string)
		}
	}
	if newID == "" {
		t.Fatalf("created version not listed: %v", versions)
	}
	together(t, "version created",
		check{"datastore version show by id", func(t testing.TB) {
			var version map[string]any
			c.oscJSON(t, member, &version, "datastore", "version", "show", newID)
			if version["name"] != "99" || version["version"] != "99.1" {
				t.Errorf("datastore version show by id = %v", version)
			}
		}},
		check{"datastore version show by name", func(t testing.TB) {
			var version map[string]any
			c.oscJSON(t, member, &version, "datastore", "version", "show", "99", "--datastore", "postgresql")
			if version["id"] != newID {
				t.Errorf("datastore version show by name = %v", version)
			}
		}},
	)
	c.osc(t, admin, "datastore", "version", "set", newID, "--disable", "--version-name", "99-beta")
	together(t, "version disabled",
		check{"datastore version list as a member", func(t testing.TB) {
			var versions []map[string]any
			c.oscJSON(t, member, &versions, "datastore", "version", "list", "postgresql")
			for _, v := range versions {
				if v["ID"] == newID {
					t.Errorf("a disabled version is listed to members: %v", v)
				}
			}
		}},
		check{"datastore version show as admin", func(t testing.TB) {
			var version map[string]any
			c.oscJSON(t, admin, &version, "datastore", "version", "show", newID)
			if version["name"] != "99-beta" || version["active"] != false {
				t.Errorf("after set: %v", version)
			}
		}},
		check{"datastore version delete of a version in use", func(t testing.TB) {
			c.oscFails(t, admin, "in use", "datastore", "version", "delete", verID)
		}},
	)
	c.osc(t, admin, "datastore", "version", "delete", newID)
	c.oscFails(t, admin, "HTTP 400", "datastore", "version", "show", newID)

	// A datastore of its own, deleted once it has no versions.
	c.osc(t, admin, "datastore", "version", "create", "1.0", "scratch", "redis", cfgImage)
	c.oscFails(t, admin, "Datastore versions exist", "datastore", "delete", "scratch")
	c.oscJSON(t, admin, &versions, "datastore", "version", "list", "scratch")
	if len(versions) != 1 {
		t.Fatalf("scratch versions = %v", versions)
	}
	c.osc(t, admin, "datastore", "version", "delete", versions[0]["ID"].(string))
	c.oscFails(t, member, "Policy doesn't allow datastore:delete", "datastore", "delete", "scratch")
	c.osc(t, admin, "datastore", "delete", "scratch")
	c.oscFails(t, admin, "No datastore with a name or ID of 'scratch' exists", "datastore", "show", "scratch")

	if code, _ := c.api(t, "DELETE", "/instances/"+id, c.creds.MemberToken, ""); code != 202 {
		t.Fatalf("delete instance: %d", code)
	}
	c.waitStatus(t, id, "", time.Minute)
}

// cfgImage is the (unchecked) image id of the versions the test creates.
const cfgImage = "0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e90"

// peekConfigurationStatus reads an instance's status once.
func (c *coffer) peekConfigurationStatus(t *testing.T, id string) string {
	t.Helper()
	_, body := c.api(t, "GET", "/instances/"+id, c.creds.MemberToken, "")
	s, _ := body["instance"].(map[string]any)["status"].(string)
	return s
}
