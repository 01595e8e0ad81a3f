package openstack

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"

	cloudinit "github.com/coffer-dbaas/coffer/deploy/cloud-init"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

// TestCreateServer checks one instance's whole life: everything
// CreateServer makes, as the admin sees it in Nova, Cinder and Neutron; a
// retry with a rotated credential and other CIDRs; access updates; delete,
// twice.
func TestCreateServer(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	ctx := testContext(t, 5*time.Minute)
	id := newInstanceID()
	cleanupInstance(t, p, id)
	spec := testSpec(id)
	spec.AllowedCIDRs = []string{"203.0.113.0/24", "2001:db8::/48"}

	t0 := time.Now()
	srv, err := p.CreateServer(ctx, spec)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("CreateServer → %s in %s", srv.Status, time.Since(t0).Round(time.Millisecond))
	addr, err := netip.ParseAddr(srv.Address)
	if srv.Status != provider.StatusActive || srv.Port != 5432 || err != nil ||
		!netip.MustParsePrefix("10.98.0.0/22").Contains(addr) || srv.Fault != "" {
		t.Fatalf("CreateServer = %+v", srv)
	}

	inv := takeInventory(t, p.projectID, id)
	if !inv.oneSet() {
		t.Fatalf("after CreateServer: %s, want one of each", inv)
	}
	vol, port, group := inv.volumes[0], inv.ports[0], inv.groups[0]

	// Nova: the server, as the admin reads it (with its user-data).
	s, err := servers.Get(ctx, cloud.admin.compute, srv.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "coffer-"+id || s.Status != "ACTIVE" || s.Flavor["original_name"] != "m1.tiny" ||
		s.Image["id"] != cloud.imageID || s.Metadata[metaInstanceID] != id || s.Metadata[metaPort] != "5432" ||
		s.Tags == nil || !slices.Contains(*s.Tags, "coffer") || !slices.Contains(*s.Tags, "coffer-"+id) {
		t.Fatalf("nova server: name %s status %s flavor %v image %v metadata %v tags %v",
			s.Name, s.Status, s.Flavor, s.Image, s.Metadata, s.Tags)
	}
	if len(s.AttachedVolumes) != 1 || s.AttachedVolumes[0].ID != vol.ID {
		t.Fatalf("nova server volumes: %+v, want %s", s.AttachedVolumes, vol.ID)
	}
	checkUserData(t, s, spec, vol.ID)

	// Cinder: the volume, attached to that server.
	if vol.Size != 1 || vol.Status != "in-use" || len(vol.Attachments) != 1 || vol.Attachments[0].ServerID != srv.ID ||
		vol.Metadata[metaInstanceID] != id {
		t.Fatalf("volume: %+v", vol)
	}

	// Neutron: the port on the management network, in the instance's
	// group only, bound to the server, with the returned address.
	if port.NetworkID != cloud.cfg.ManagementNetworkID || port.DeviceID != srv.ID ||
		!slices.Equal(port.SecurityGroups, []string{group.ID}) || portIPv4(port) != srv.Address {
		t.Fatalf("port: %+v", port)
	}
	checkIngress(t, group, "IPv4 203.0.113.0/24", "IPv6 2001:db8::/48")

	if h, err := p.AgentTokenHash(ctx, id); err != nil || !slices.Equal(h, sha(spec.Agent.Token)) {
		t.Fatalf("AgentTokenHash = %x, %v; want the hash of the first credential", h, err)
	}
	if got, err := p.GetServer(ctx, id); err != nil || got != srv {
		t.Fatalf("GetServer = %+v, %v; want %+v", got, err, srv)
	}

	// A retried provision: new credential, other CIDRs. The server stays,
	// with its first credential; only the rules follow.
	retry := testSpec(id)
	retry.AllowedCIDRs = []string{"198.51.100.7"}
	again, err := p.CreateServer(ctx, retry)
	if err != nil || again != srv {
		t.Fatalf("second CreateServer = %+v, %v; want %+v", again, err, srv)
	}
	inv2 := takeInventory(t, p.projectID, id)
	if !inv2.oneSet() || inv2.servers[0].ID != srv.ID || inv2.volumes[0].ID != vol.ID ||
		inv2.ports[0].ID != port.ID || inv2.groups[0].ID != group.ID {
		t.Fatalf("after the second CreateServer: %s (ids changed?)", inv2)
	}
	checkIngress(t, inv2.groups[0], "IPv4 198.51.100.7/32")
	if h, err := p.AgentTokenHash(ctx, id); err != nil || !slices.Equal(h, sha(spec.Agent.Token)) {
		t.Fatalf("AgentTokenHash after a retry = %x, %v; want the first credential's", h, err)
	}

	// An update of the instance's access.
	if err := p.SetAllowedCIDRs(ctx, id, []string{"10.0.0.0/8"}); err != nil {
		t.Fatal(err)
	}
	checkIngress(t, inv2.groups[0], "IPv4 10.0.0.0/8")
	if err := p.SetAllowedCIDRs(ctx, id, nil); err != nil {
		t.Fatal(err)
	}
	checkIngress(t, inv2.groups[0])

	deleteAndCheck(t, p, id)
	if err := p.DeleteServer(ctx, id); err != nil {
		t.Fatalf("second DeleteServer: %v", err)
	}
	if err := p.SetAllowedCIDRs(ctx, id, nil); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("SetAllowedCIDRs after delete: %v, want ErrNotFound", err)
	}
	if _, err := p.GetServer(ctx, id); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("GetServer after delete: %v, want ErrNotFound", err)
	}
	if _, err := p.AgentTokenHash(ctx, id); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("AgentTokenHash after delete: %v, want ErrNotFound", err)
	}
}

func sha(s string) []byte { h := sha256.Sum256([]byte(s)); return h[:] }

// checkUserData reads the server's user-data back as the admin (compute
// ≥ 2.3) and checks it configures the agent as the spec says, with the
// guest-side settings the provider fills in, and mounts the volume.
func checkUserData(t *testing.T, s *servers.Server, spec provider.ServerSpec, volumeID string) {
	t.Helper()
	if s.Userdata == nil {
		t.Fatal("no OS-EXT-SRV-ATTR:user_data in the admin's view")
	}
	ud, err := base64.StdEncoding.DecodeString(*s.Userdata)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := cloudinit.ParseAgentConfig(ud)
	if err != nil {
		t.Fatal(err)
	}
	want := spec.Agent
	want.ListenAddress, want.Port = "0.0.0.0", 5432
	want.DataDir, want.PIDFile = cloudinit.DataDir, cloudinit.PIDFile
	if cfg != want {
		t.Fatalf("agent configuration in user-data:\n got %+v\nwant %+v", cfg, want)
	}
	if !strings.Contains(string(ud), "- ["+cloudinit.MountScript+", "+volumeID+", "+cloudinit.DataDir+"]") {
		t.Fatalf("user-data does not mount volume %s:\n%s", volumeID, ud)
	}
}

// checkIngress asserts the group's ingress rules are exactly TCP 5432
// from each of want ("IPv4 203.0.113.0/24").
func checkIngress(t *testing.T, g groups.SecGroup, want ...string) {
	t.Helper()
	g2, err := groups.Get(testContext(t, time.Minute), cloud.admin.network, g.ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range g2.Rules {
		if r.Direction != "ingress" {
			continue
		}
		if r.Protocol != "tcp" || r.PortRangeMin != 5432 || r.PortRangeMax != 5432 {
			t.Fatalf("ingress rule not for TCP 5432: %+v", r)
		}
		got = append(got, r.EtherType+" "+r.RemoteIPPrefix)
	}
	sort.Strings(got)
	sort.Strings(want)
	if !slices.Equal(got, want) {
		t.Fatalf("ingress rules %q, want %q", got, want)
	}
}

// TestConcurrentCreate: concurrent CreateServer calls for one instance
// (each with its own credential, as concurrent provision attempts would
// have) make one server, and all report it. The image is named by tag.
func TestConcurrentCreate(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	ctx := testContext(t, 5*time.Minute)
	tag := "coffer-test-" + newInstanceID()[:8]
	imageID := taggedImage(t, tag)
	id := newInstanceID()
	cleanupInstance(t, p, id)

	const n = 4
	results := make([]provider.Server, n)
	errs := make([]error, n)
	specs := make([]provider.ServerSpec, n)
	var wg sync.WaitGroup
	for i := range n {
		specs[i] = testSpec(id)
		specs[i].Image = "tag:" + tag
		wg.Go(func() { results[i], errs[i] = p.CreateServer(ctx, specs[i]) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || results[i] != results[0] || results[i].Status != provider.StatusActive {
			t.Fatalf("call %d: %+v, %v; call 0: %+v", i, results[i], errs[i], results[0])
		}
	}
	inv := takeInventory(t, p.projectID, id)
	if !inv.oneSet() {
		t.Fatalf("after %d concurrent CreateServer: %s", n, inv)
	}
	s, err := servers.Get(ctx, cloud.admin.compute, results[0].ID).Extract()
	if err != nil {
		t.Fatal(err)
	}
	if s.Image["id"] != imageID {
		t.Fatalf("server image %v, want %s (tag %s)", s.Image, imageID, tag)
	}
	// The one credential the server has is one of the callers', and
	// AgentTokenHash names it.
	ud, _ := base64.StdEncoding.DecodeString(*s.Userdata)
	cfg, err := cloudinit.ParseAgentConfig(ud)
	if err != nil {
		t.Fatal(err)
	}
	h, err := p.AgentTokenHash(ctx, id)
	if err != nil || !slices.Equal(h, sha(cfg.Token)) ||
		!slices.ContainsFunc(specs, func(s provider.ServerSpec) bool { return s.Agent.Token == cfg.Token }) {
		t.Fatalf("AgentTokenHash %x, %v; user-data token %q is not a caller's or does not match", h, err, cfg.Token)
	}
	deleteAndCheck(t, p, id)
}

// TestKilledMidCreate: a worker killed after a step of CreateServer
// (simulated by cancelling its context right after the step: the volume
// requested, the port made, the server requested but not yet built with
// its volume attached) leaves something behind; the retried call finishes
// with exactly one server, volume, port and group, the volume attached to
// the server. (The "volume" case is a Redis instance without allowed
// CIDRs, whose group must let nothing in.)
func TestKilledMidCreate(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"volume", "port", "server"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			p := newProvider(t)
			id := newInstanceID()
			cleanupInstance(t, p, id)
			spec := testSpec(id)
			if step == "volume" {
				spec.Datastore, spec.Agent.Datastore = "redis", "redis"
			}
			killed, kill := context.WithCancel(testContext(t, 5*time.Minute))
			defer kill()
			p.afterStep = func(_ context.Context, s string) {
				if s == step {
					kill()
				}
			}
			if _, err := p.CreateServer(killed, spec); err == nil {
				t.Fatal("CreateServer survived its worker's death")
			}
			before := takeInventory(t, p.projectID, id)
			t.Logf("killed after %s: %s", step, before)
			if step == "server" && len(before.servers) != 1 {
				t.Fatalf("killed after the server was requested, but %s", before)
			}

			p.afterStep = nil
			spec.Agent.Token = newToken(id) // the retried job's credential
			srv, err := p.CreateServer(testContext(t, 5*time.Minute), spec)
			if err != nil || srv.Status != provider.StatusActive || srv.Port != 5432 && step != "volume" {
				t.Fatalf("retried CreateServer = %+v, %v", srv, err)
			}
			inv := takeInventory(t, p.projectID, id)
			if !inv.oneSet() {
				t.Fatalf("after the retry: %s", inv)
			}
			if len(inv.volumes[0].Attachments) != 1 || inv.volumes[0].Attachments[0].ServerID != srv.ID {
				t.Fatalf("volume not attached to %s: %+v", srv.ID, inv.volumes[0].Attachments)
			}
			if step == "volume" {
				if srv.Port != 6379 {
					t.Fatalf("redis port %d", srv.Port)
				}
				checkIngress(t, inv.groups[0])
			}
			deleteAndCheck(t, p, id)
		})
	}
}
