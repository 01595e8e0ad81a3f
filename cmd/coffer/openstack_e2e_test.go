package main_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	cloudinit "github.com/coffer-dbaas/coffer/deploy/cloud-init"
	"github.com/coffer-dbaas/coffer/internal/provider/openstack/openstacktest"
)

// TestOpenStackEndToEnd runs the all-in-one with COFFER_PROVIDER=openstack
// against the real Nova, Cinder, Neutron and Glance of
// scripts/openstack-up.sh (fake hypervisor: Nova reports ACTIVE but boots
// nothing). The test therefore plays cloud-init: it reads the server's
// user-data back from Nova and starts the agent locally with that
// configuration, and the instance must reach ACTIVE through the normal
// agent path (prepare → CompletePrepare).
//
// COFFER_TEST_OPENSTACK_DIR=DIR reuses (or starts and keeps) the cloud in
// DIR, as the provider's tests do.
func TestOpenStackEndToEnd(t *testing.T) {
	t.Parallel()
	cloud := openStackCloud(t)
	c := startOpenStackCoffer(t, cloud)
	toNova, toActive := openStackInstanceLifecycle(t, cloud, c)
	t.Logf("API create → Nova ACTIVE: %s; → instance ACTIVE: %s (agent started after Nova ACTIVE)",
		toNova.Round(time.Millisecond), toActive.Round(time.Millisecond))
}

// BenchmarkOpenStackCreateToActive measures, per instance, the time from
// the API's create to Nova's ACTIVE and to the instance's ACTIVE (the
// local agent is started as soon as Nova reports ACTIVE, as cloud-init
// would on boot). Each iteration also deletes the instance.
func BenchmarkOpenStackCreateToActive(b *testing.B) {
	cloud := openStackCloud(b)
	c := startOpenStackCoffer(b, cloud)
	var nova, active time.Duration
	n := 0
	for b.Loop() {
		toNova, toActive := openStackInstanceLifecycle(b, cloud, c)
		nova += toNova
		active += toActive
		n++
	}
	b.ReportMetric(nova.Seconds()/float64(n), "s-to-nova-active/op")
	b.ReportMetric(active.Seconds()/float64(n), "s-to-instance-active/op")
}

// openStackCloud starts (or reuses) the test OpenStack as the provider's
// tests do; skips loudly outside CI when it cannot, fails in CI.
func openStackCloud(tb testing.TB) *openstacktest.Cloud {
	tb.Helper()
	requirePostgres(tb)
	if testing.Short() {
		tb.Skip("SKIPPING: -short: the OpenStack end-to-end test needs OpenStack (~2 GB, a minute or two to start)")
	}
	cloud, stop, err := openstacktest.Start(context.Background())
	if stop != nil {
		tb.Cleanup(stop)
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			tb.Fatalf("OpenStack is not available: %v", err)
		}
		tb.Skipf("SKIPPING: OpenStack is not available: %v", err)
	}
	return cloud
}

// startOpenStackCoffer starts an all-in-one on the cloud, with its test
// image as the PostgreSQL datastore's image. The seed's flavor ids are
// "1".."4", as Nova's m1.* are; the cloud's test flavor (m1.tiny, "1") is
// one of them.
func startOpenStackCoffer(tb testing.TB, cloud *openstacktest.Cloud) *coffer {
	tb.Helper()
	return startCoffer(tb, append(cloud.CofferEnv(),
		"COFFER_PROVIDER=openstack",
		"COFFER_OS_IMAGES=postgresql="+cloud.Vars["OS_TEST_IMAGE_ID"],
	)...)
}

// openStackInstanceLifecycle creates an instance through the API, plays
// cloud-init for it, checks it and what OpenStack holds for it, and
// deletes it; it returns the times from create to Nova ACTIVE and to
// instance ACTIVE.
func openStackInstanceLifecycle(t testing.TB, cloud *openstacktest.Cloud, c *coffer) (toNovaActive, toActive time.Duration) {
	t.Helper()
	ctx := context.Background()
	imageID, flavorID := cloud.Vars["OS_TEST_IMAGE_ID"], cloud.Vars["OS_TEST_FLAVOR_ID"]

	t0 := time.Now()
	code, body := c.api(t, "POST", "/instances", c.creds.MemberToken, fmt.Sprintf(`{"instance": {
		"name": "os-shop", "flavorRef": %q, "volume": {"size": 1},
		"datastore": {"type": "postgresql"},
		"databases": [{"name": "orders"}],
		"users": [{"name": "app", "password": "s3cret-pass", "databases": [{"name": "orders"}]}]}}`, flavorID))
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	name := "coffer-" + id

	g := playCloudInit(t, cloud, name, id, t0)
	defer g.stop()
	srv, cfg := g.srv, g.cfg
	toNovaActive = g.toNova

	inst := c.waitStatus(t, id, "ACTIVE", 3*time.Minute)
	toActive = time.Since(t0)
	if inst["operating_status"] != "HEALTHY" {
		t.Errorf("operating_status = %v", inst["operating_status"])
	}

	// The created user reaches the created database.
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=%d user=app password=s3cret-pass dbname=orders sslmode=disable",
		cfg.ListenAddress, cfg.Port))
	if err != nil {
		t.Fatalf("connect as app: %v", err)
	}
	var db string
	if err := conn.QueryRow(ctx, "SELECT current_database()").Scan(&db); err != nil || db != "orders" {
		t.Errorf("current_database() = %q, %v", db, err)
	}
	conn.Close(ctx)

	// What OpenStack holds, seen by its admin.
	wantFlavor, err := flavors.Get(ctx, cloud.Compute, flavorID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if got := srv.Flavor["original_name"]; got != wantFlavor.Name { // microversion ≥ 2.47 embeds the flavor
		t.Errorf("server flavor %v, want %s (id %s)", srv.Flavor, wantFlavor.Name, flavorID)
	}
	if got, _ := srv.Image["id"].(string); got != imageID {
		t.Errorf("server image %v, want %s", srv.Image, imageID)
	}
	vols := listVolumes(t, cloud, name)
	if len(vols) != 1 {
		t.Fatalf("%d volumes named %s", len(vols), name)
	}
	vol := vols[0]
	if vol.Size != 1 || len(vol.Attachments) != 1 || vol.Attachments[0].ServerID != srv.ID {
		t.Errorf("volume %s: size %d, attachments %+v; want 1 GiB attached to %s", vol.ID, vol.Size, vol.Attachments, srv.ID)
	}
	if len(srv.AttachedVolumes) != 1 || srv.AttachedVolumes[0].ID != vol.ID {
		t.Errorf("server's volumes %+v, want %s", srv.AttachedVolumes, vol.ID)
	}
	sgs := listSecGroups(t, cloud, name)
	if len(sgs) != 1 {
		t.Fatalf("%d security groups named %s", len(sgs), name)
	}
	ps := listPorts(t, cloud, name)
	if len(ps) != 1 {
		t.Fatalf("%d ports named %s", len(ps), name)
	}
	if p := ps[0]; p.NetworkID != cloud.Vars["COFFER_OS_NETWORK_ID"] || p.DeviceID != srv.ID ||
		len(p.SecurityGroups) != 1 || p.SecurityGroups[0] != sgs[0].ID {
		t.Errorf("port %s: network %s device %s groups %v; want network %s, server %s, group %s",
			p.ID, p.NetworkID, p.DeviceID, p.SecurityGroups, cloud.Vars["COFFER_OS_NETWORK_ID"], srv.ID, sgs[0].ID)
	}
	// Ingress: only TCP to the datastore's port, from exactly the
	// instance's allowed CIDRs (none were given: the port stays closed).
	allowed, _ := inst["access"].(map[string]any)["allowed_cidrs"].([]any)
	var ingress []string
	for _, r := range sgs[0].Rules {
		if r.Direction != "ingress" {
			continue
		}
		ingress = append(ingress, r.RemoteIPPrefix)
		if r.Protocol != "tcp" || r.PortRangeMin != cfg.Port || r.PortRangeMax != cfg.Port || r.RemoteGroupID != "" {
			t.Errorf("ingress rule opens more than TCP %d: %+v", cfg.Port, r)
		}
	}
	if len(ingress) != len(allowed) {
		t.Errorf("ingress from %v, allowed_cidrs %v", ingress, allowed)
	}

	// Delete through the API: nothing named for the instance is left.
	if code, body := c.api(t, "DELETE", "/instances/"+id, c.creds.MemberToken, ""); code != 202 {
		t.Fatalf("delete: %d %v", code, body)
	}
	c.waitStatus(t, id, "", 2*time.Minute)
	left := func() string {
		return fmt.Sprintf("servers %d, volumes %d, ports %d, security groups %d",
			len(listServers(t, cloud, name)), len(listVolumes(t, cloud, name)),
			len(listPorts(t, cloud, name)), len(listSecGroups(t, cloud, name)))
	}
	if got := left(); got != "servers 0, volumes 0, ports 0, security groups 0" {
		t.Errorf("after delete, OpenStack still holds: %s", got)
	}
	return toNovaActive, toActive
}

// guest is an instance's agent, run on this machine with the
// configuration cloud-init would have written from the server's user-data.
type guest struct {
	srv    servers.Server
	cfg    protocol.AgentConfig
	toNova time.Duration // from t0 (the API's create) to Nova's ACTIVE
	stop   func()        // ends the agent and its PostgreSQL
}

// guestAddresses hands each local agent a loopback address of its own in
// the OpenStack e2e range (127.250-254; other tests draw from 127.100-249),
// so that concurrent guests never share one with port 5432.
var guestAddresses atomic.Int64

// playCloudInit waits for the instance's Nova server (named name) to be
// ACTIVE, reads its user-data back (admin, microversion ≥ 2.3), checks the
// agent's configuration in it and starts the agent locally with exactly
// that configuration, except where the guest's volume would be mounted (a
// temporary DataDir instead of /var/lib/coffer/volume) and the address the
// datastore listens on (a loopback address of its own instead of the
// guest's 0.0.0.0). The datastore's port stays.
func playCloudInit(t testing.TB, cloud *openstacktest.Cloud, name, id string, t0 time.Time) *guest {
	t.Helper()
	ctx := context.Background()
	// The Nova server appears and goes ACTIVE (the fake driver "boots" it).
	var srv servers.Server
	deadline := time.Now().Add(3 * time.Minute)
	for {
		ss := listServers(t, cloud, name)
		if len(ss) > 1 {
			t.Fatalf("%d servers named %s", len(ss), name)
		}
		if len(ss) == 1 && ss[0].Status == "ACTIVE" {
			srv = ss[0]
			break
		}
		if len(ss) == 1 && ss[0].Status == "ERROR" {
			t.Fatalf("server %s ERROR: %v", ss[0].ID, ss[0].Fault)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no ACTIVE server %s within 3m (%v)", name, ss)
		}
		time.Sleep(200 * time.Millisecond)
	}
	g := &guest{srv: srv, toNova: time.Since(t0)}

	full, err := servers.Get(ctx, cloud.Compute, srv.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if full.Userdata == nil {
		t.Fatalf("no OS-EXT-SRV-ATTR:user_data in the admin's view of server %s", srv.ID)
	}
	userData, err := base64.StdEncoding.DecodeString(*full.Userdata)
	if err != nil {
		t.Fatalf("user-data of server %s: %v", srv.ID, err)
	}
	cfg, err := cloudinit.ParseAgentConfig(userData)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.InstanceID != id || cfg.Datastore != "postgresql" || cfg.Port != 5432 ||
		!strings.HasPrefix(cfg.Token, id+".") || cfg.CACert == "" || !strings.HasPrefix(cfg.APIURL, "https://") {
		cfg.Token = "…"
		t.Fatalf("agent configuration from user-data: %+v", cfg)
	}
	dataDir, err := os.MkdirTemp("", "cfos-agent")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dataDir, 0o755); err != nil { // the postgres user must reach it
		t.Fatal(err)
	}
	cfg.DataDir = dataDir
	n := guestAddresses.Add(1)
	cfg.ListenAddress = fmt.Sprintf("127.%d.%d.%d", 250+n%5, (n/5)%250, 2+(n/1250)%250)
	cfg.PIDFile = filepath.Join(dataDir, "agent.pid")
	cfgJSON, _ := json.Marshal(cfg)
	cfgFile := filepath.Join(t.TempDir(), "agent.json")
	if err := os.WriteFile(cfgFile, cfgJSON, 0o600); err != nil {
		t.Fatal(err)
	}
	agentLog := &syncBuffer{}
	agent := exec.Command(binary, "agent", "-config", cfgFile)
	for _, kv := range os.Environ() { // only the file configures it
		if !strings.HasPrefix(kv, "COFFER_AGENT_") {
			agent.Env = append(agent.Env, kv)
		}
	}
	agent.Stdout, agent.Stderr = agentLog, agentLog
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	g.cfg = cfg
	var once sync.Once
	g.stop = func() { once.Do(func() { stopLocalAgent(t, agent, agentLog, dataDir) }) }
	t.Cleanup(g.stop)
	return g
}

// stopLocalAgent ends the agent this test started and the PostgreSQL it
// started (which, as on a guest, outlives the agent).
func stopLocalAgent(t testing.TB, agent *exec.Cmd, log *syncBuffer, dataDir string) {
	_ = agent.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = agent.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = agent.Process.Kill()
		<-done
	}
	pgdata := filepath.Join(dataDir, "pgdata")
	if _, err := os.Stat(filepath.Join(pgdata, "postmaster.pid")); err == nil {
		pgCtl := "pg_ctl"
		if m, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl"); len(m) > 0 {
			pgCtl = m[len(m)-1]
		}
		args := []string{pgCtl, "stop", "-D", pgdata, "-m", "fast", "-w"}
		if os.Geteuid() == 0 { // pg_ctl refuses root; the agent ran it as postgres
			args = append([]string{"runuser", "-u", "postgres", "--"}, args...)
		}
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Errorf("pg_ctl stop %s: %v\n%s", pgdata, err, out)
		}
	}
	if t.Failed() {
		t.Logf("agent log:\n%s", tail(log.String(), 8000))
	}
	_ = os.RemoveAll(dataDir)
}

func listServers(t testing.TB, c *openstacktest.Cloud, name string) []servers.Server {
	t.Helper()
	pages, err := servers.List(c.Compute, servers.ListOpts{Name: "^" + name + "$", AllTenants: true}).AllPages(context.Background())
	if err != nil {
		t.Fatalf("list servers: %v", err)
	}
	ss, err := servers.ExtractServers(pages)
	if err != nil {
		t.Fatalf("list servers: %v", err)
	}
	return ss
}

func listVolumes(t testing.TB, c *openstacktest.Cloud, name string) []volumes.Volume {
	t.Helper()
	pages, err := volumes.List(c.Volume, volumes.ListOpts{Name: name, AllTenants: true}).AllPages(context.Background())
	if err != nil {
		t.Fatalf("list volumes: %v", err)
	}
	vs, err := volumes.ExtractVolumes(pages)
	if err != nil {
		t.Fatalf("list volumes: %v", err)
	}
	return vs
}

func listPorts(t testing.TB, c *openstacktest.Cloud, name string) []ports.Port {
	t.Helper()
	pages, err := ports.List(c.Network, ports.ListOpts{Name: name}).AllPages(context.Background())
	if err != nil {
		t.Fatalf("list ports: %v", err)
	}
	ps, err := ports.ExtractPorts(pages)
	if err != nil {
		t.Fatalf("list ports: %v", err)
	}
	return ps
}

func listSecGroups(t testing.TB, c *openstacktest.Cloud, name string) []groups.SecGroup {
	t.Helper()
	pages, err := groups.List(c.Network, groups.ListOpts{Name: name}).AllPages(context.Background())
	if err != nil {
		t.Fatalf("list security groups: %v", err)
	}
	gs, err := groups.ExtractGroups(pages)
	if err != nil {
		t.Fatalf("list security groups: %v", err)
	}
	return gs
}
