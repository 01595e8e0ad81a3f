package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// cfgCLI runs `openstack <args>` against the all-in-one with a static
// token (the member's or the admin's).
func (c *coffer) cfgCLI(token string, args ...string) (string, error) {
	cmd := exec.Command("openstack", args...)
	env := []string{}
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "OS_") {
			env = append(env, e)
		}
	}
	cmd.Env = append(env, "OS_AUTH_TYPE=admin_token", "OS_ENDPOINT="+c.url+"/v1.0/"+c.creds.ProjectID, "OS_TOKEN="+token)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// cfgJSON runs a CLI command with -f json and decodes its output.
func (c *coffer) cfgJSON(t *testing.T, token string, out any, args ...string) {
	t.Helper()
	text, err := c.cfgCLI(token, append(args, "-f", "json")...)
	if err != nil {
		t.Fatalf("openstack %s: %v\n%s", strings.Join(args, " "), err, text)
	}
	if err := json.Unmarshal([]byte(text), out); err != nil {
		t.Fatalf("openstack %s: not JSON: %s", strings.Join(args, " "), text)
	}
}

// cfgMustFail runs a CLI command that must fail with a message containing want.
func (c *coffer) cfgMustFail(t *testing.T, token, want string, args ...string) {
	t.Helper()
	out, err := c.cfgCLI(token, args...)
	if err == nil || !strings.Contains(out, want) {
		t.Errorf("openstack %s: %v, output %q; want a failure saying %q", strings.Join(args, " "), err, out, want)
	}
}

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
// all-in-one, with the effect checked in PostgreSQL: a group with a
// dynamic value (work_mem) and a restart-required one (max_connections)
// is attached, applied at restart, changed live, and detached again.
func TestConfigurationCLI(t *testing.T) {
	if _, err := exec.LookPath("openstack"); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("openstack CLI not installed (CI must install python3-openstackclient python3-troveclient)")
		}
		t.Skip("SKIPPING: openstack CLI not installed; run `go tool task deps:test`")
	}
	c := startCoffer(t)
	member, admin := c.creds.MemberToken, c.creds.AdminToken

	code, body := c.api(t, "POST", "/instances", member, `{"instance": {"name": "cfg-db", "flavorRef": "1", "volume": {"size": 1},
		"databases": [{"name": "appdb"}], "users": [{"name": "app", "password": "app-pass-1", "databases": [{"name": "appdb"}]}]}}`)
	if code != 200 {
		t.Fatalf("create instance: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)

	// Parameters, by version name (with --datastore) and by version id.
	var versions []map[string]any
	c.cfgJSON(t, member, &versions, "datastore", "version", "list", "postgresql")
	if len(versions) != 1 {
		t.Fatalf("versions = %v", versions)
	}
	verID, verName := versions[0]["ID"].(string), versions[0]["Name"].(string)
	var params []map[string]any
	c.cfgJSON(t, member, &params, "database", "configuration", "parameter", "list", verName, "--datastore", "postgresql")
	found := map[string]map[string]any{}
	for _, p := range params {
		found[p["Name"].(string)] = p
	}
	if len(params) < 100 || found["max_connections"]["Restart Required"] != true || found["work_mem"]["Type"] != "string" {
		t.Errorf("parameter list: %d parameters, max_connections %v, work_mem %v", len(params), found["max_connections"], found["work_mem"])
	}
	c.cfgJSON(t, member, &params, "database", "configuration", "parameter", "list", verID)
	if len(params) != len(found) {
		t.Errorf("parameter list by id: %d parameters, by name %d", len(params), len(found))
	}
	var param map[string]any
	c.cfgJSON(t, member, &param, "database", "configuration", "parameter", "show", verID, "work_mem")
	if param["name"] != "work_mem" || param["restart_required"] != false || param["datastore_version_id"] != verID {
		t.Errorf("parameter show by id = %v", param)
	}
	c.cfgJSON(t, member, &param, "database", "configuration", "parameter", "show", verName, "temp_file_limit", "--datastore", "postgresql")
	if param["name"] != "temp_file_limit" || param["min"] != -1.0 {
		t.Errorf("parameter show by name = %v", param)
	}
	c.cfgMustFail(t, member, "HTTP 404", "database", "configuration", "parameter", "show", verID, "no_such_parameter")

	// Create (validated first), list, show by name.
	c.cfgMustFail(t, member, "is not of type integer", "database", "configuration", "create", "bad", `{"max_connections": "many"}`,
		"--datastore", "postgresql", "--datastore-version", verName)
	c.cfgMustFail(t, member, "is not supported for this datastore", "database", "configuration", "create", "bad", `{"no_such": 1}`)
	var group map[string]any
	c.cfgJSON(t, member, &group, "database", "configuration", "create", "tuned", `{"work_mem": "16MB", "max_connections": 77}`,
		"--datastore", "postgresql", "--datastore-version", verName, "--description", "e2e group")
	gid, _ := group["id"].(string)
	if gid == "" || group["name"] != "tuned" || group["datastore_version_name"] != verName {
		t.Fatalf("configuration create = %v", group)
	}
	var groups []map[string]any
	c.cfgJSON(t, member, &groups, "database", "configuration", "list")
	if len(groups) != 1 || groups[0]["ID"] != gid || groups[0]["Description"] != "e2e group" {
		t.Errorf("configuration list = %v", groups)
	}
	c.cfgJSON(t, member, &group, "database", "configuration", "show", "tuned")
	if group["id"] != gid || !strings.Contains(fmt.Sprint(group["values"]), "16MB") {
		t.Errorf("configuration show = %v", group)
	}

	inst := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	ip := inst["ip"].([]any)[0].(string)
	before, err := cfgShow(context.Background(), ip, "work_mem", "max_connections")
	if err != nil {
		t.Fatal(err)
	}
	// The default configuration is what the instance runs with (flavor 1).
	var def map[string]any
	c.cfgJSON(t, member, &def, "database", "configuration", "default", id)
	if fmt.Sprint(def["max_connections"]) != before["max_connections"] || def["work_mem"] != before["work_mem"] {
		t.Errorf("configuration default = %v, instance runs %v", def, before)
	}

	// Attach: max_connections needs a restart, so nothing changes yet and
	// the instance says RESTART_REQUIRED.
	if out, err := c.cfgCLI(member, "database", "configuration", "attach", id, "tuned"); err != nil {
		t.Fatalf("configuration attach: %v\n%s", err, out)
	}
	c.waitStatus(t, id, "RESTART_REQUIRED", time.Minute)
	if now, err := cfgShow(context.Background(), ip, "work_mem", "max_connections"); err != nil || now["work_mem"] != before["work_mem"] || now["max_connections"] != before["max_connections"] {
		t.Errorf("before the restart: %v %v (was %v)", now, err, before)
	}
	var shown map[string]any
	c.cfgJSON(t, member, &shown, "database", "instance", "show", id)
	if shown["configuration"] != gid {
		t.Errorf("instance show configuration = %v", shown["configuration"])
	}
	var attached []map[string]any
	c.cfgJSON(t, member, &attached, "database", "configuration", "instances", "tuned")
	if len(attached) != 1 || attached[0]["ID"] != id {
		t.Errorf("configuration instances = %v", attached)
	}
	c.cfgMustFail(t, member, "non-terminated instances", "database", "configuration", "delete", "tuned")

	if out, err := c.cfgCLI(member, "database", "instance", "restart", id); err != nil {
		t.Fatalf("instance restart: %v\n%s", err, out)
	}
	c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	cfgEventually(t, ip, map[string]string{"work_mem": "16MB", "max_connections": "77"})

	// A dynamic change applies live (reload): no restart, still ACTIVE.
	if out, err := c.cfgCLI(member, "database", "configuration", "parameter", "set", gid, `{"work_mem": "24MB"}`); err != nil {
		t.Fatalf("configuration parameter set: %v\n%s", err, out)
	}
	cfgEventually(t, ip, map[string]string{"work_mem": "24MB", "max_connections": "77"})
	// PUT replaces the values; max_connections keeps its value, so this is
	// live too.
	if out, err := c.cfgCLI(member, "database", "configuration", "set", gid, `{"work_mem": "12MB", "max_connections": 77}`, "--name", "tuned2"); err != nil {
		t.Fatalf("configuration set: %v\n%s", err, out)
	}
	cfgEventually(t, ip, map[string]string{"work_mem": "12MB"})
	if s := c.peekConfigurationStatus(t, id); s != "ACTIVE" {
		t.Errorf("status after live changes = %s", s)
	}
	c.cfgJSON(t, member, &group, "database", "configuration", "show", gid)
	if group["name"] != "tuned2" || group["instance_count"] != 1.0 {
		t.Errorf("after set: %v", group)
	}

	// Detach restores the defaults: max_connections needs the restart.
	if out, err := c.cfgCLI(member, "database", "configuration", "detach", id); err != nil {
		t.Fatalf("configuration detach: %v\n%s", err, out)
	}
	c.waitStatus(t, id, "RESTART_REQUIRED", time.Minute)
	if out, err := c.cfgCLI(member, "database", "instance", "restart", id); err != nil {
		t.Fatalf("instance restart: %v\n%s", err, out)
	}
	c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	cfgEventually(t, ip, before)
	if out, err := c.cfgCLI(member, "database", "configuration", "delete", "tuned2"); err != nil {
		t.Fatalf("configuration delete: %v\n%s", err, out)
	}
	c.cfgJSON(t, member, &groups, "database", "configuration", "list")
	if len(groups) != 0 {
		t.Errorf("list after delete = %v", groups)
	}

	// Quotas and limits.
	var quotas []map[string]any
	c.cfgJSON(t, member, &quotas, "database", "quota", "show", c.creds.ProjectID)
	use := map[string]map[string]any{}
	for _, q := range quotas {
		use[q["Resource"].(string)] = q
	}
	if use["instances"]["In Use"] != 1.0 || use["instances"]["Limit"] != 10.0 || use["ram"]["In Use"] != 512.0 || use["ram"]["Limit"] != -1.0 {
		t.Errorf("quota show = %v", quotas)
	}
	c.cfgMustFail(t, member, "User does not have admin privileges", "database", "quota", "update", c.creds.ProjectID, "instances", "1")
	var updated map[string]any
	c.cfgJSON(t, admin, &updated, "database", "quota", "update", c.creds.ProjectID, "instances", "1")
	if updated["instances"] != 1.0 {
		t.Errorf("quota update = %v", updated)
	}
	out, err := c.cfgCLI(member, "database", "limit", "list")
	if err != nil || !strings.Contains(out, "max_instances") || !strings.Contains(out, "ABSOLUTE") {
		t.Errorf("limit list: %v\n%s", err, out)
	}
	c.cfgMustFail(t, member, "Quota exceeded for resources: ['instances']", "database", "instance", "create", "one-too-many",
		"--flavor", "1", "--size", "1", "--datastore", "postgresql")

	// Datastore versions (admin).
	const image = "0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e90"
	c.cfgMustFail(t, member, "User does not have admin privileges", "datastore", "version", "create", "99", "postgresql", "postgresql", image)
	if out, err := c.cfgCLI(admin, "datastore", "version", "create", "99", "postgresql", "postgresql", image,
		"--active", "--version-number", "99.1", "--image-tags", "pg,next"); err != nil {
		t.Fatalf("datastore version create: %v\n%s", err, out)
	}
	c.cfgJSON(t, admin, &versions, "datastore", "version", "list", "postgresql")
	newID := ""
	for _, v := range versions {
		if v["Name"] == "99" && v["Version"] == "99.1" {
			newID = v["ID"].(string)
		}
	}
	if newID == "" {
		t.Fatalf("created version not listed: %v", versions)
	}
	var version map[string]any
	c.cfgJSON(t, member, &version, "datastore", "version", "show", newID)
	if version["name"] != "99" || version["version"] != "99.1" {
		t.Errorf("datastore version show by id = %v", version)
	}
	c.cfgJSON(t, member, &version, "datastore", "version", "show", "99", "--datastore", "postgresql")
	if version["id"] != newID {
		t.Errorf("datastore version show by name = %v", version)
	}
	if out, err := c.cfgCLI(admin, "datastore", "version", "set", newID, "--disable", "--version-name", "99-beta"); err != nil {
		t.Fatalf("datastore version set: %v\n%s", err, out)
	}
	c.cfgJSON(t, member, &versions, "datastore", "version", "list", "postgresql")
	for _, v := range versions {
		if v["ID"] == newID {
			t.Errorf("a disabled version is listed to members: %v", v)
		}
	}
	c.cfgJSON(t, admin, &version, "datastore", "version", "show", newID)
	if version["name"] != "99-beta" || version["active"] != false {
		t.Errorf("after set: %v", version)
	}
	c.cfgMustFail(t, admin, "in use", "datastore", "version", "delete", verID)
	if out, err := c.cfgCLI(admin, "datastore", "version", "delete", newID); err != nil {
		t.Fatalf("datastore version delete: %v\n%s", err, out)
	}
	c.cfgMustFail(t, admin, "HTTP 400", "datastore", "version", "show", newID)

	// A datastore of its own, deleted once it has no versions.
	if out, err := c.cfgCLI(admin, "datastore", "version", "create", "1.0", "scratch", "redis", image); err != nil {
		t.Fatalf("datastore version create in a new datastore: %v\n%s", err, out)
	}
	c.cfgMustFail(t, admin, "Datastore versions exist", "datastore", "delete", "scratch")
	c.cfgJSON(t, admin, &versions, "datastore", "version", "list", "scratch")
	if len(versions) != 1 {
		t.Fatalf("scratch versions = %v", versions)
	}
	if out, err := c.cfgCLI(admin, "datastore", "version", "delete", versions[0]["ID"].(string)); err != nil {
		t.Fatalf("delete scratch version: %v\n%s", err, out)
	}
	c.cfgMustFail(t, member, "Policy doesn't allow datastore:delete", "datastore", "delete", "scratch")
	if out, err := c.cfgCLI(admin, "datastore", "delete", "scratch"); err != nil {
		t.Fatalf("datastore delete: %v\n%s", err, out)
	}
	c.cfgMustFail(t, admin, "No datastore with a name or ID of 'scratch' exists", "datastore", "show", "scratch")

	if code, _ := c.api(t, "DELETE", "/instances/"+id, member, ""); code != 202 {
		t.Fatalf("delete instance: %d", code)
	}
	c.waitStatus(t, id, "", time.Minute)
}

// peekConfigurationStatus reads an instance's status once.
func (c *coffer) peekConfigurationStatus(t *testing.T, id string) string {
	t.Helper()
	_, body := c.api(t, "GET", "/instances/"+id, c.creds.MemberToken, "")
	s, _ := body["instance"].(map[string]any)["status"].(string)
	return s
}
