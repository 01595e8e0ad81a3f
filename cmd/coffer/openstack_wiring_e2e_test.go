package main_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/roles"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/coffer-dbaas/coffer/internal/provider/openstack/openstacktest"
)

// The control plane's wiring of the OpenStack provider, end to end through
// the API on the real services: the catalog from Nova and Cinder, refusals
// at the API (nothing created), Nova refusing or failing a build (instance
// ERROR with the reason, nothing left), access.allowed_cidrs as security
// group rules, resizes through Nova and Cinder, compute status from Nova.
//
// Each test's Coffer lives in an OpenStack project of its own (the coffer
// service user is a member there, ports go on the cloud's shared network):
// what the project holds is exactly what that Coffer made, whatever other
// tests do on the same cloud, and its Nova quota can be set to refuse.

// osProject is a project of the test cloud for one Coffer.
type osProject struct {
	id, name string
	cloud    *openstacktest.Cloud
}

func newOSProject(t *testing.T, cloud *openstacktest.Cloud) *osProject {
	t.Helper()
	ctx := context.Background()
	v := cloud.Vars
	pc, err := openstack.AuthenticatedClient(ctx, gophercloud.AuthOptions{
		IdentityEndpoint: v["OS_AUTH_URL"], Username: v["OS_USERNAME"], Password: v["OS_PASSWORD"],
		DomainName: "Default", TenantName: v["OS_PROJECT_NAME"], AllowReauth: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	identity, err := openstack.NewIdentityV3(pc, gophercloud.EndpointOpts{Region: v["OS_REGION_NAME"]})
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	p, err := projects.Create(ctx, identity, projects.CreateOpts{Name: "coffer-e2e-" + hex.EncodeToString(b), DomainID: "default"}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = projects.Delete(context.Background(), identity, p.ID).ExtractErr() })
	userPages, err := users.List(identity, users.ListOpts{Name: v["COFFER_OS_USERNAME"]}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	us, _ := users.ExtractUsers(userPages)
	rolePages, err := roles.List(identity, roles.ListOpts{Name: "member"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := roles.ExtractRoles(rolePages)
	if len(us) != 1 || len(rs) != 1 {
		t.Fatalf("user %s: %d found, role member: %d found", v["COFFER_OS_USERNAME"], len(us), len(rs))
	}
	if err := roles.Assign(ctx, identity, rs[0].ID, roles.AssignOpts{UserID: us[0].ID, ProjectID: p.ID}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	// Unlimited, as the up script makes the service project's: a flavor
	// no host holds then reaches Nova's scheduler instead of its quota.
	unlimited := -1
	if _, err := quotasets.Update(ctx, cloud.Compute, p.ID, quotasets.UpdateOpts{
		Instances: &unlimited, Cores: &unlimited, RAM: &unlimited}).Extract(); err != nil {
		t.Fatal(err)
	}
	return &osProject{id: p.ID, name: p.Name, cloud: cloud}
}

// start runs a Coffer whose instances live in the project.
func (p *osProject) start(t *testing.T) *coffer {
	t.Helper()
	return startCoffer(t, append(p.cloud.CofferEnv(),
		"COFFER_PROVIDER=openstack",
		"COFFER_OS_PROJECT_NAME="+p.name,
		"COFFER_OS_NETWORK_ID="+p.cloud.Vars["OS_TEST_NETWORK_ID"],
		"COFFER_OS_IMAGES=postgresql="+p.cloud.Vars["OS_TEST_IMAGE_ID"],
	)...)
}

// held says what the project holds (its default security group aside).
func (p *osProject) held(t *testing.T) string {
	t.Helper()
	ctx := context.Background()
	sp, err := servers.List(p.cloud.Compute, servers.ListOpts{AllTenants: true, TenantID: p.id}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ss, _ := servers.ExtractServers(sp)
	vp, err := volumes.List(p.cloud.Volume, volumes.ListOpts{AllTenants: true, TenantID: p.id}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	vs, _ := volumes.ExtractVolumes(vp)
	pp, err := ports.List(p.cloud.Network, ports.ListOpts{ProjectID: p.id}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := ports.ExtractPorts(pp)
	gp, err := groups.List(p.cloud.Network, groups.ListOpts{ProjectID: p.id}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gs, _ := groups.ExtractGroups(gp)
	gs = slices.DeleteFunc(gs, func(g groups.SecGroup) bool { return g.Name == "default" })
	return fmt.Sprintf("servers %d, volumes %d, ports %d, security groups %d", len(ss), len(vs), len(ps), len(gs))
}

const holdsNothing = "servers 0, volumes 0, ports 0, security groups 0"

// waitHeld waits until the project holds want (deletes finish
// asynchronously in Cinder and Nova).
func (p *osProject) waitHeld(t *testing.T, want string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got := p.held(t)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the project holds %s, want %s", got, want)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

func (p *osProject) setInstanceQuota(t *testing.T, n int) {
	t.Helper()
	if _, err := quotasets.Update(context.Background(), p.cloud.Compute, p.id, quotasets.UpdateOpts{Instances: &n}).Extract(); err != nil {
		t.Fatal(err)
	}
}

// waitFor polls the instance (as the admin, who sees fault details) until
// ok says so.
func (c *coffer) waitFor(t *testing.T, id, what string, timeout time.Duration, ok func(inst map[string]any) bool) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		code, body := c.api(t, "GET", "/instances/"+id, c.creds.AdminToken, "")
		if code == 200 {
			last = body["instance"].(map[string]any)
			if ok(last) {
				return last
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("instance %s: not %s within %s; last: %v", id, what, timeout, last)
	return nil
}

// waitGone waits until the instance is deleted (404), whatever its
// status meanwhile.
func (c *coffer) waitGone(t *testing.T, id string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		code, body := c.api(t, "GET", "/instances/"+id, c.creds.MemberToken, "")
		if code == 404 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("instance %s not deleted within %s: %d %v", id, timeout, code, body)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

func faultOf(inst map[string]any) (message, details string) {
	f, _ := inst["fault"].(map[string]any)
	message, _ = f["message"].(string)
	details, _ = f["details"].(string)
	return
}

// novaHugeFlavor is a flavor Nova has but no host of the test cloud can
// hold (as the provider's tests make it).
func novaHugeFlavor(t *testing.T, cloud *openstacktest.Cloud) string {
	t.Helper()
	const id = "coffer-test-huge"
	if _, err := flavors.Get(context.Background(), cloud.Compute, id).Extract(); err == nil {
		return id
	}
	disk := 1
	_, err := flavors.Create(context.Background(), cloud.Compute, flavors.CreateOpts{
		ID: id, Name: "coffer.test.huge", VCPUs: 100000, RAM: 64 << 20, Disk: &disk,
	}).Extract()
	if err != nil && !strings.Contains(err.Error(), "409") {
		t.Fatal(err)
	}
	return id
}

// TestOpenStackCatalogAndRefusals: the flavors and volume types come from
// Nova and Cinder; a create naming a flavor, volume type or image the
// cloud lacks is refused at the API with nothing created anywhere; Nova
// refusing the server (quota) or failing it (no host) makes the instance
// ERROR with Nova's reason, and nothing is left in OpenStack.
func TestOpenStackCatalogAndRefusals(t *testing.T) {
	t.Parallel()
	cloud := openStackCloud(t)
	huge := novaHugeFlavor(t, cloud) // before the start, so the first sync has it
	proj := newOSProject(t, cloud)
	c := proj.start(t)
	member, admin := c.creds.MemberToken, c.creds.AdminToken

	// The catalog is synced when the worker starts: the seed's flavors 3
	// and 4 (not in Nova) go, Nova's m1.tiny (256 MB, not the seed's 512)
	// is what flavor 1 is.
	deadline := time.Now().Add(time.Minute)
	var listed map[string]map[string]any
	for {
		code, body := c.api(t, "GET", "/flavors", member, "")
		if code != 200 {
			t.Fatalf("flavors: %d %v", code, body)
		}
		listed = map[string]map[string]any{}
		for _, f := range body["flavors"].([]any) {
			f := f.(map[string]any)
			listed[f["str_id"].(string)] = f
		}
		if _, seeded := listed["3"]; !seeded {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the catalog was not synced from Nova within a minute: %v", listed)
		}
		time.Sleep(250 * time.Millisecond)
	}
	for id, f := range listed {
		nf, err := flavors.Get(context.Background(), cloud.Compute, id).Extract()
		if err != nil || nf.Name != f["name"] || float64(nf.RAM) != f["ram"] || float64(nf.VCPUs) != f["vcpus"] {
			t.Errorf("flavor %s listed as %v; Nova: %+v %v", id, f, nf, err)
		}
	}
	if listed["1"]["ram"] != float64(256) || listed["4"] != nil || listed[huge] == nil {
		t.Errorf("flavors after the sync: %v", listed)
	}
	_, ds := c.api(t, "GET", "/datastores/postgresql", member, "")
	version := ds["datastore"].(map[string]any)["versions"].([]any)[0].(map[string]any)["name"].(string)
	code, body := c.api(t, "GET", "/datastores/postgresql/versions/"+version+"/volume-types", member, "")
	if code != 200 || !strings.Contains(fmt.Sprint(body), "name:__DEFAULT__") {
		t.Errorf("volume types: %d %v", code, body)
	}

	// Refused at the API: nothing created, in Coffer or in OpenStack.
	code, _ = c.api(t, "POST", "/mgmt/datastore-versions", admin, `{"version": {"name": "pg-noimage", "datastore_name": "postgresql",
		"datastore_manager": "postgresql", "active": true, "image": "`+uuid.NewString()+`"}}`)
	if code != 202 {
		t.Fatalf("add a version with a missing image: %d", code)
	}
	create := func(flavor, volume, datastore string) string {
		return `{"instance": {"name": "refused", "flavorRef": "` + flavor + `", "volume": ` + volume + `, "datastore": ` + datastore + `}}`
	}
	pg := `{"type": "postgresql"}`
	for _, r := range []struct{ name, body, fault string }{
		{"seeded flavor Nova lacks", create("3", `{"size": 1}`, pg), "Flavor 3 could not be found."},
		{"unknown flavor", create("coffer-no-such-flavor", `{"size": 1}`, pg), "Flavor coffer-no-such-flavor could not be found."},
		{"unknown volume type", create("1", `{"size": 1, "type": "coffer-no-such-type"}`, pg), "Volume type 'coffer-no-such-type' does not exist."},
		{"missing image", create("1", `{"size": 1}`, `{"type": "postgresql", "version": "pg-noimage"}`), "The image of datastore version 'pg-noimage' is not available: image"},
		{"garbage CIDR", `{"instance": {"name": "refused", "flavorRef": "1", "volume": {"size": 1}, "access": {"is_public": false, "allowed_cidrs": ["300.1.2.3/8"]}}}`, "is not an IPv4 network"},
	} {
		code, body := c.api(t, "POST", "/instances", member, r.body)
		f, _ := body["badRequest"].(map[string]any)
		if code != 400 || f == nil || !strings.Contains(fmt.Sprint(f["message"]), r.fault) {
			t.Errorf("%s: %d %v; want 400 %q", r.name, code, body, r.fault)
		}
	}
	if _, body := c.api(t, "GET", "/instances", member, ""); len(body["instances"].([]any)) != 0 {
		t.Errorf("refused creates left instances: %v", body)
	}
	var rows, provisions int
	db := c.controlDB(t)
	if err := db.QueryRow(context.Background(), `SELECT (SELECT count(*) FROM instance), (SELECT count(*) FROM river_job WHERE kind = 'provision_instance')`).Scan(&rows, &provisions); err != nil || rows+provisions != 0 {
		t.Errorf("refused creates left %d instance rows, %d provision jobs (%v)", rows, provisions, err)
	}
	if got := proj.held(t); got != holdsNothing {
		t.Errorf("refused creates left in OpenStack: %s", got)
	}

	// Nova refuses the server (the project's instance quota is 0): the
	// instance fails at once, with Nova's reason; what was made for it
	// (volume, port, security group) is removed again.
	proj.setInstanceQuota(t, 0)
	t0 := time.Now()
	code, body = c.api(t, "POST", "/instances", member, create("1", `{"size": 1}`, pg))
	if code != 200 {
		t.Fatalf("create over Nova's quota: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	inst := c.waitFor(t, id, "ERROR with a fault", 2*time.Minute, func(i map[string]any) bool { return i["status"] == "ERROR" && i["fault"] != nil })
	msg, details := faultOf(inst)
	t.Logf("quota refusal → ERROR in %s: %q (%s)", time.Since(t0).Round(time.Millisecond), msg, details)
	if !strings.HasPrefix(msg, "The server could not be created; the cloud refused it: nova (403): Quota exceeded for instances") ||
		!strings.Contains(details, "refused by the cloud") {
		t.Errorf("fault %q, details %q", msg, details)
	}
	if _, body := c.api(t, "GET", "/instances/"+id, member, ""); body["instance"].(map[string]any)["fault"].(map[string]any)["details"] != nil {
		t.Error("a member sees the fault's details")
	}
	if got := proj.held(t); got != holdsNothing {
		t.Errorf("after Nova's refusal OpenStack holds %s", got)
	}
	proj.setInstanceQuota(t, -1)
	if code, _ := c.api(t, "DELETE", "/instances/"+id, member, ""); code != 202 {
		t.Fatalf("delete the failed instance: %d", code)
	}
	c.waitGone(t, id, time.Minute)

	// Nova takes the server but no host can hold it: ERROR with Nova's
	// fault; deleting the instance leaves nothing.
	code, body = c.api(t, "POST", "/instances", member, create(huge, `{"size": 1}`, pg))
	if code != 200 {
		t.Fatalf("create on %s: %d %v", huge, code, body)
	}
	id = body["instance"].(map[string]any)["id"].(string)
	inst = c.waitFor(t, id, "ERROR with a fault", 2*time.Minute, func(i map[string]any) bool { return i["status"] == "ERROR" && i["fault"] != nil })
	msg, details = faultOf(inst)
	t.Logf("no host → ERROR: %q (%s)", msg, details)
	if !strings.HasPrefix(msg, "The server could not be created: No valid host was found") || !strings.Contains(details, "server in ERROR") {
		t.Errorf("fault %q, details %q", msg, details)
	}
	if code, _ := c.api(t, "DELETE", "/instances/"+id, member, ""); code != 202 {
		t.Fatalf("delete: %d", code)
	}
	c.waitGone(t, id, 2*time.Minute)
	proj.waitHeld(t, holdsNothing, time.Minute)
}

// TestOpenStackResizeAccessAndComputeStatus: on an instance that reached
// ACTIVE through its agent, access.allowed_cidrs (create and update) are
// exactly the security group's rules; a flavor resize is a Nova resize and
// a volume resize a Cinder extend, each before the agent's part; a resize
// Nova cannot do leaves the instance ACTIVE with a fault; a server Nova
// has in ERROR makes the instance ERROR; delete leaves nothing.
func TestOpenStackResizeAccessAndComputeStatus(t *testing.T) {
	t.Parallel()
	cloud := openStackCloud(t)
	huge := novaHugeFlavor(t, cloud)
	proj := newOSProject(t, cloud)
	c := proj.start(t)
	member := c.creds.MemberToken
	ctx := context.Background()

	t0 := time.Now()
	code, body := c.api(t, "POST", "/instances", member, `{"instance": {"name": "os-wired", "flavorRef": "1",
		"volume": {"size": 1, "type": "__DEFAULT__"}, "datastore": {"type": "postgresql"},
		"access": {"is_public": false, "allowed_cidrs": ["192.0.2.0/24"]}}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	name := "coffer-" + id
	g := playCloudInit(t, cloud, name, id, t0)
	c.waitStatus(t, id, "ACTIVE", 3*time.Minute)
	t.Logf("create → Nova ACTIVE %s, → instance ACTIVE %s", g.toNova.Round(time.Millisecond), time.Since(t0).Round(time.Millisecond))
	vols := listVolumes(t, cloud, name)
	if len(vols) != 1 || vols[0].VolumeType != "__DEFAULT__" {
		t.Errorf("volumes: %+v", vols)
	}
	ingress := func() []string {
		sgs := listSecGroups(t, cloud, name)
		if len(sgs) != 1 {
			t.Fatalf("%d security groups named %s", len(sgs), name)
		}
		var out []string
		for _, r := range sgs[0].Rules {
			if r.Direction != "ingress" {
				continue
			}
			if r.Protocol != "tcp" || r.PortRangeMin != 5432 || r.PortRangeMax != 5432 {
				t.Errorf("rule opens more than TCP 5432: %+v", r)
			}
			out = append(out, r.RemoteIPPrefix)
		}
		sort.Strings(out)
		return out
	}
	if got := ingress(); !slices.Equal(got, []string{"192.0.2.0/24"}) {
		t.Errorf("ingress after create: %v", got)
	}

	// Access update: the rules follow.
	code, _ = c.api(t, "PUT", "/instances/"+id, member, `{"instance": {"access": {"is_public": false, "allowed_cidrs": ["198.51.100.0/24", "203.0.113.9"]}}}`)
	if code != 202 {
		t.Fatalf("access update: %d", code)
	}
	for deadline := time.Now().Add(time.Minute); ; {
		got := ingress()
		if slices.Equal(got, []string{"198.51.100.0/24", "203.0.113.9/32"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ingress a minute after the access update: %v", got)
		}
		time.Sleep(250 * time.Millisecond)
	}

	// Flavor resize: Nova resize + confirm, then the agent's restart with
	// the new memory.
	resize := func(body string) time.Duration {
		t.Helper()
		t0 := time.Now()
		if code, b := c.api(t, "POST", "/instances/"+id+"/action", member, body); code != 202 {
			t.Fatalf("%s: %d %v", body, code, b)
		}
		c.waitFor(t, id, "RESIZE", 30*time.Second, func(i map[string]any) bool { return i["status"] == "RESIZE" })
		c.waitFor(t, id, "ACTIVE again", 3*time.Minute, func(i map[string]any) bool { return i["status"] == "ACTIVE" })
		return time.Since(t0)
	}
	took := resize(`{"resize": {"flavorRef": "2"}}`)
	s, err := servers.Get(ctx, cloud.Compute, g.srv.ID).Extract()
	_, inst := c.api(t, "GET", "/instances/"+id, member, "")
	if err != nil || s.Flavor["original_name"] != "m1.small" || s.Status != "ACTIVE" ||
		inst["instance"].(map[string]any)["flavor"].(map[string]any)["id"] != "2" || inst["instance"].(map[string]any)["fault"] != nil {
		t.Errorf("after the flavor resize (%s): Nova flavor %v status %s (%v); instance %v", took, s.Flavor, s.Status, err, inst)
	}
	t.Logf("flavor resize through Nova: %s", took.Round(time.Millisecond))

	took = resize(`{"resize": {"volume": {"size": 2}}}`)
	vols = listVolumes(t, cloud, name)
	_, inst = c.api(t, "GET", "/instances/"+id, member, "")
	if len(vols) != 1 || vols[0].Size != 2 || inst["instance"].(map[string]any)["volume"].(map[string]any)["size"] != float64(2) {
		t.Errorf("after the volume resize: %+v; instance %v", vols, inst)
	}
	t.Logf("volume resize through Cinder: %s", took.Round(time.Millisecond))

	// A resize Nova cannot do: the instance returns to ACTIVE on its
	// flavor, the fault says so; the server is untouched.
	took = resize(`{"resize": {"flavorRef": "` + huge + `"}}`)
	final := c.waitFor(t, id, "with a fault", time.Second, func(i map[string]any) bool { return i["fault"] != nil })
	msg, details := faultOf(final)
	t.Logf("impossible resize → ACTIVE in %s: %q (%s)", took.Round(time.Millisecond), msg, details)
	if msg != "Resizing to flavor "+huge+" failed; the instance keeps flavor 2." || !strings.Contains(details, "did not resize") ||
		final["flavor"].(map[string]any)["id"] != "2" {
		t.Errorf("after the impossible resize: %v", final)
	}
	if s, _ := servers.Get(ctx, cloud.Compute, g.srv.ID).Extract(); s.Flavor["original_name"] != "m1.small" || s.Status != "ACTIVE" {
		t.Errorf("server after the impossible resize: %v %s", s.Flavor, s.Status)
	}

	// Nova has the server in ERROR: so has the instance, once the compute
	// status is refreshed (every minute); back to ACTIVE likewise.
	if err := servers.ResetState(ctx, cloud.Compute, g.srv.ID, servers.StateError).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	t0 = time.Now()
	inst2 := c.waitFor(t, id, "ERROR with a fault", 3*time.Minute, func(i map[string]any) bool { return i["status"] == "ERROR" && i["fault"] != nil })
	msg, _ = faultOf(inst2)
	t.Logf("server ERROR → instance ERROR in %s: %q", time.Since(t0).Round(time.Millisecond), msg)
	if !strings.HasPrefix(msg, "The server is in ERROR: ") {
		t.Errorf("fault of the instance whose server is in ERROR: %q", msg)
	}
	if err := servers.ResetState(ctx, cloud.Compute, g.srv.ID, servers.StateActive).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	c.waitFor(t, id, "ACTIVE", 3*time.Minute, func(i map[string]any) bool { return i["status"] == "ACTIVE" })

	g.stop()
	if code, _ := c.api(t, "DELETE", "/instances/"+id, member, ""); code != 202 {
		t.Fatalf("delete: %d", code)
	}
	c.waitStatus(t, id, "", 2*time.Minute)
	proj.waitHeld(t, holdsNothing, time.Minute)
}

// concurrentCreates is how many instances BenchmarkOpenStackConcurrentCreates
// creates at once (Coffer's default instance quota per project).
const concurrentCreates = 10

// BenchmarkOpenStackConcurrentCreates creates 10 instances at once through
// the API (the service project of the test cloud, as
// BenchmarkOpenStackCreateToActive) and plays cloud-init for each as soon
// as its server is ACTIVE. It reports the total time until all are ACTIVE
// and, per instance, the time from its create to Nova's ACTIVE and to the
// instance's ACTIVE (median and maximum); each instance must end with
// exactly one server, volume, port and security group, and none of them
// with anything after the deletes.
func BenchmarkOpenStackConcurrentCreates(b *testing.B) {
	cloud := openStackCloud(b)
	c := startOpenStackCoffer(b, cloud)
	var total, novaP50, novaMax, activeP50, activeMax time.Duration
	n := 0
	for b.Loop() {
		tot, nova, active := concurrentLifecycles(b, cloud, c)
		total += tot
		novaP50, novaMax = novaP50+median(nova), novaMax+slices.Max(nova)
		activeP50, activeMax = activeP50+median(active), activeMax+slices.Max(active)
		n++
		b.Logf("%d concurrent creates: all ACTIVE in %s; create → Nova ACTIVE p50 %s max %s; → instance ACTIVE p50 %s max %s",
			concurrentCreates, tot.Round(time.Millisecond), median(nova).Round(time.Millisecond), slices.Max(nova).Round(time.Millisecond),
			median(active).Round(time.Millisecond), slices.Max(active).Round(time.Millisecond))
	}
	per := func(d time.Duration) float64 { return d.Seconds() / float64(n) }
	b.ReportMetric(per(total), "s-all-active/op")
	b.ReportMetric(per(novaP50), "s-nova-active-p50")
	b.ReportMetric(per(novaMax), "s-nova-active-max")
	b.ReportMetric(per(activeP50), "s-instance-active-p50")
	b.ReportMetric(per(activeMax), "s-instance-active-max")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

// concurrentLifecycles creates concurrentCreates instances at once, brings
// each to ACTIVE through its agent, checks what OpenStack holds for each,
// and deletes them all. A failure inside an instance's goroutine ends that
// goroutine (FailNow) and fails the benchmark.
func concurrentLifecycles(b *testing.B, cloud *openstacktest.Cloud, c *coffer) (total time.Duration, toNova, toActive []time.Duration) {
	toNova = make([]time.Duration, concurrentCreates)
	toActive = make([]time.Duration, concurrentCreates)
	ids := make([]string, concurrentCreates)
	guests := make([]*guest, concurrentCreates)
	t0 := time.Now()
	var wg sync.WaitGroup
	for i := range concurrentCreates {
		wg.Go(func() {
			start := time.Now()
			code, body := c.api(b, "POST", "/instances", c.creds.MemberToken, fmt.Sprintf(`{"instance": {
				"name": "bench-%d", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "postgresql"}}}`, i))
			if code != 200 {
				b.Errorf("create %d: %d %v", i, code, body)
				return
			}
			id := body["instance"].(map[string]any)["id"].(string)
			ids[i] = id
			guests[i] = playCloudInit(b, cloud, "coffer-"+id, id, start)
			toNova[i] = guests[i].toNova
			c.waitStatus(b, id, "ACTIVE", 5*time.Minute)
			toActive[i] = time.Since(start)
		})
	}
	wg.Wait()
	total = time.Since(t0)
	if b.Failed() {
		b.FailNow()
	}
	for _, id := range ids {
		name := "coffer-" + id
		if got := fmt.Sprintf("servers %d, volumes %d, ports %d, security groups %d", len(listServers(b, cloud, name)),
			len(listVolumes(b, cloud, name)), len(listPorts(b, cloud, name)), len(listSecGroups(b, cloud, name))); got != "servers 1, volumes 1, ports 1, security groups 1" {
			b.Errorf("instance %s: OpenStack holds %s", id, got)
		}
	}
	for i, id := range ids {
		guests[i].stop()
		if code, body := c.api(b, "DELETE", "/instances/"+id, c.creds.MemberToken, ""); code != 202 {
			b.Errorf("delete %s: %d %v", id, code, body)
		}
	}
	for _, id := range ids {
		c.waitStatus(b, id, "", 3*time.Minute)
		name := "coffer-" + id
		if n := len(listServers(b, cloud, name)) + len(listVolumes(b, cloud, name)) + len(listPorts(b, cloud, name)) + len(listSecGroups(b, cloud, name)); n != 0 {
			b.Errorf("instance %s: %d resources left after delete", id, n)
		}
	}
	return total, toNova, toActive
}
