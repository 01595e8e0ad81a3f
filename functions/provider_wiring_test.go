package functions_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// The API's side of the provider wiring: the catalog a sync wrote
// (hidden flavors, volume types) decides what a create or resize may ask
// for; access on create; resizes and access updates go through their
// jobs. The jobs themselves run against real OpenStack in package jobs and
// cmd/coffer.

// wiringCounts is what a refused create must leave untouched.
func (f *apiFixture) wiringCounts(t *testing.T) string {
	t.Helper()
	var jobs int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM river_job").Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	return strings.Join([]string{
		"instances " + itoa(f.count(t, "instance")), "commands " + itoa(f.count(t, "agent_command")),
		"events " + itoa(f.count(t, "event")), "jobs " + itoa(jobs),
	}, ", ")
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

func TestCreateCatalogChecks(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	base := "/v1.0/" + f.projectA
	// What a catalog sync leaves: flavor 3 gone from the cloud but used
	// (hidden), two volume types.
	f.actSQL(t, `UPDATE flavor SET hidden = true WHERE id = '3'`)
	f.actSQL(t, `INSERT INTO volume_type (id, name, description, is_public) VALUES
		('0b9e3c52-1111-4c38-9d7c-6e2a9d0c0001', 'fast', 'SSD', true),
		('0b9e3c52-1111-4c38-9d7c-6e2a9d0c0002', '__DEFAULT__', 'Default Volume Type', true)`)

	before := f.wiringCounts(t)
	create := func(flavor, volume string) string {
		return `{"instance": {"name": "c", "flavorRef": "` + flavor + `", "volume": ` + volume + `, "datastore": {"type": "postgresql"}}}`
	}
	for _, c := range []struct{ name, body, want string }{
		{"hidden flavor", create("3", `{"size": 1}`), "Flavor 3 could not be found."},
		{"unknown flavor", create("77", `{"size": 1}`), "Flavor 77 could not be found."},
		{"unknown volume type", create("1", `{"size": 1, "type": "slow"}`), "Volume type 'slow' does not exist."},
		{"volume type by wrong case", create("1", `{"size": 1, "type": "FAST"}`), "Volume type 'FAST' does not exist."},
		{"garbage cidr", `{"instance": {"name": "c", "flavorRef": "1", "volume": {"size": 1}, "access": {"is_public": false, "allowed_cidrs": ["10.0.0.0/8", "banana"]}}}`, "'banana' is not an IPv4 network"},
		{"ipv6 cidr", `{"instance": {"name": "c", "flavorRef": "1", "volume": {"size": 1}, "access": {"is_public": false, "allowed_cidrs": ["2001:db8::/32"]}}}`, "not an IPv4 network"},
		{"cidr twice", `{"instance": {"name": "c", "flavorRef": "1", "volume": {"size": 1}, "access": {"is_public": false, "allowed_cidrs": ["10.0.0.1", "10.0.0.1/32"]}}}`, "more than once"},
		{"too many cidrs", `{"instance": {"name": "c", "flavorRef": "1", "volume": {"size": 1}, "access": {"is_public": false, "allowed_cidrs": [` +
			strings.TrimSuffix(strings.Repeat(`"10.0.0.1",`, 101), ",") + `]}}}`, "at most 100"},
	} {
		code, body := f.do(t, "POST", base+"/instances", f.tokenA, c.body)
		if code != 400 {
			t.Errorf("%s: %d %v", c.name, code, body)
			continue
		}
		if msg := fault(t, body, "badRequest", 400); !strings.Contains(msg, c.want) {
			t.Errorf("%s: message %q, want %q", c.name, msg, c.want)
		}
	}
	if after := f.wiringCounts(t); after != before {
		t.Errorf("refused creates left something: before %s, after %s", before, after)
	}

	// The flavor list leaves the hidden one out; showing it still works
	// (instances on it link to it).
	code, body := f.do(t, "GET", base+"/flavors", f.tokenA, "")
	if code != 200 {
		t.Fatalf("list flavors: %d %v", code, body)
	}
	var ids []string
	for _, fl := range body["flavors"].([]any) {
		ids = append(ids, fl.(map[string]any)["str_id"].(string))
	}
	if strings.Join(ids, ",") != "1,2,4" {
		t.Errorf("flavors listed: %v, want 1,2,4", ids)
	}
	if code, body := f.do(t, "GET", base+"/flavors/3", f.tokenA, ""); code != 200 || body["flavor"].(map[string]any)["name"] != "m1.medium" {
		t.Errorf("show hidden flavor: %d %v", code, body)
	}

	// The datastore version's volume types.
	code, body = f.do(t, "GET", base+"/datastores/postgresql/versions/"+f.pgVersion(t)+"/volume-types", f.tokenA, "")
	if code != 200 {
		t.Fatalf("volume types: %d %v", code, body)
	}
	if b, _ := json.Marshal(body); string(b) != `{"volume_types":[{"description":"Default Volume Type","id":"0b9e3c52-1111-4c38-9d7c-6e2a9d0c0002","is_public":true,"name":"__DEFAULT__"},`+
		`{"description":"SSD","id":"0b9e3c52-1111-4c38-9d7c-6e2a9d0c0001","is_public":true,"name":"fast"}]}` {
		t.Errorf("volume types: %s", b)
	}
	for _, p := range []string{"/datastores/oracle/versions/1/volume-types", "/datastores/postgresql/versions/8.4/volume-types"} {
		if code, body := f.do(t, "GET", base+p, f.tokenA, ""); code != 404 {
			t.Errorf("%s: %d %v", p, code, body)
		} else {
			fault(t, body, "itemNotFound", 404)
		}
	}
	if code, _ := f.do(t, "GET", base+"/volume-types", f.tokenA, ""); code != 404 {
		t.Errorf("legacy /volume-types (removed from Trove in 14.0.0): %d", code)
	}

	// A known volume type (by id) and allowed CIDRs: stored, the access
	// shown as asked (canonical), the type by its name for the provider.
	code, body = f.do(t, "POST", base+"/instances", f.tokenA, `{"instance": {"name": "c", "flavorRef": "2",
		"volume": {"size": 1, "type": "0b9e3c52-1111-4c38-9d7c-6e2a9d0c0001"}, "datastore": {"type": "postgresql"},
		"access": {"is_public": false, "allowed_cidrs": ["192.0.2.7", "10.1.2.3/16"]}}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	inst := body["instance"].(map[string]any)
	if b, _ := json.Marshal(inst["access"]); string(b) != `{"allowed_cidrs":["192.0.2.7/32","10.1.0.0/16"],"is_public":false}` {
		t.Errorf("access in the create answer: %s", b)
	}
	var vt string
	var cidrs []string
	if err := f.pool.QueryRow(context.Background(), "SELECT volume_type, access_allowed_cidrs FROM instance WHERE id = $1", inst["id"]).Scan(&vt, &cidrs); err != nil {
		t.Fatal(err)
	}
	if vt != "fast" || strings.Join(cidrs, " ") != "192.0.2.7/32 10.1.0.0/16" {
		t.Errorf("stored volume type %q, cidrs %v", vt, cidrs)
	}
	if a := f.actShow(t, inst["id"].(string), f.tokenA)["access"]; a.(map[string]any)["allowed_cidrs"] == nil {
		t.Errorf("show: access %v", a)
	}
	// By name works too; no type is the provider's default.
	for _, v := range []string{`{"size": 1, "type": "fast"}`, `{"size": 1, "type": null}`, `{"size": 1}`} {
		if code, body := f.do(t, "POST", base+"/instances", f.tokenA, create("1", v)); code != 200 {
			t.Errorf("create with volume %s: %d %v", v, code, body)
		}
	}
}

// pgVersion is the seeded PostgreSQL version's name.
func (f *apiFixture) pgVersion(t *testing.T) string {
	t.Helper()
	var name string
	if err := f.pool.QueryRow(context.Background(), "SELECT v.name FROM datastore_version v JOIN datastore d ON d.id = v.datastore_id WHERE d.name = 'postgresql' AND v.active LIMIT 1").Scan(&name); err != nil {
		t.Fatal(err)
	}
	return name
}

// A resize's command waits, held, for the provider's job; restarts go to
// the agent at once. An access update has its job.
func TestResizeAndAccessGoThroughTheirJobs(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.actInstance(t)
	other := f.actInstance(t)
	path := func(id string) string { return "/v1.0/" + f.projectA + "/instances/" + id + "/action" }

	f.actSQL(t, `UPDATE flavor SET hidden = true WHERE id = '3'`)
	code, body := f.do(t, "POST", path(id), f.tokenA, `{"resize": {"flavorRef": "3"}}`)
	if code != 400 || !strings.Contains(fault(t, body, "badRequest", 400), "Flavor 3 could not be found") {
		t.Errorf("resize to a hidden flavor: %d %v", code, body)
	}

	if code, body := f.do(t, "POST", path(id), f.tokenA, `{"resize": {"flavorRef": "2"}}`); code != 202 {
		t.Fatalf("resize flavor: %d %v", code, body)
	}
	if code, body := f.do(t, "POST", path(other), f.tokenA, `{"resize": {"volume": {"size": 3}}}`); code != 202 {
		t.Fatalf("resize volume: %d %v", code, body)
	}
	for _, c := range []struct{ id, name string }{{id, "resize_flavor"}, {other, "resize_volume"}} {
		var state string
		var attempts, jobs int
		if err := f.pool.QueryRow(context.Background(), `SELECT c.state, c.attempts,
			(SELECT count(*) FROM river_job j WHERE j.kind = 'resize_instance' AND j.args->>'command_id' = c.id::text AND j.args->>'instance_id' = $1)
			FROM agent_command c WHERE c.instance_id = $1::uuid AND c.name = $2`, c.id, c.name).Scan(&state, &attempts, &jobs); err != nil {
			t.Fatal(err)
		}
		if state != "leased" || attempts != 0 || jobs != 1 {
			t.Errorf("%s: command %s (%d attempts), %d resize jobs; want held for one job", c.name, state, attempts, jobs)
		}
	}
	// The held command is still the action's: reset_status cancels it.
	code, _ = f.do(t, "POST", path(id), f.admin, `{"reset_status": {}}`)
	if code != 202 {
		t.Fatalf("reset_status: %d", code)
	}
	var state string
	if err := f.pool.QueryRow(context.Background(), `SELECT state FROM agent_command WHERE instance_id = $1 AND name = 'resize_flavor'`, id).Scan(&state); err != nil || state != "cancelled" {
		t.Errorf("held command after reset_status: %s %v", state, err)
	}

	// A restart is not held.
	third := f.actInstance(t)
	if code, _ := f.do(t, "POST", path(third), f.tokenA, `{"restart": {}}`); code != 202 {
		t.Fatal("restart")
	}
	if err := f.pool.QueryRow(context.Background(), `SELECT state FROM agent_command WHERE instance_id = $1 AND name = 'restart'`, third).Scan(&state); err != nil || state != "pending" {
		t.Errorf("restart command: %s %v", state, err)
	}

	code, body = f.do(t, "PUT", "/v1.0/"+f.projectA+"/instances/"+third, f.tokenA, `{"instance": {"access": {"allowed_cidrs": ["10.9.0.0/16"]}}}`)
	if code != 202 {
		t.Fatalf("access update: %d %v", code, body)
	}
	var jobs int
	if err := f.pool.QueryRow(context.Background(), `SELECT count(*) FROM river_job WHERE kind = 'apply_access' AND args->>'instance_id' = $1`, third).Scan(&jobs); err != nil || jobs != 1 {
		t.Errorf("apply_access jobs: %d %v", jobs, err)
	}
}
