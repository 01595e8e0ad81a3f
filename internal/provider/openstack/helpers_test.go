package openstack

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

const testCA = "-----BEGIN CERTIFICATE-----\nMIIBdTCCARugAwIBAgIRAKy0test0nly0notreal\n-----END CERTIFICATE-----\n"

// testSpec is a PostgreSQL instance on m1.tiny with a 1 GB volume and a
// fresh credential, as the provision job builds it.
func testSpec(id string) provider.ServerSpec {
	return provider.ServerSpec{
		InstanceID:   id,
		Name:         "test " + id[:8],
		FlavorID:     cloud.flavor,
		VolumeSizeGB: 1,
		Datastore:    "postgresql",
		Version:      "16",
		Image:        cloud.imageID,
		Agent: protocol.AgentConfig{
			APIURL:     "https://10.98.0.1:8780",
			CACert:     testCA,
			InstanceID: id,
			Token:      newToken(id),
			Datastore:  "postgresql",
		},
	}
}

func newToken(id string) string {
	b := make([]byte, 32)
	rand.Read(b)
	return id + "." + base64.RawURLEncoding.EncodeToString(b)
}

func testContext(tb testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	tb.Cleanup(cancel)
	return ctx
}

// inventory is what OpenStack holds for one instance, seen by the admin
// through plain listings of the project (not through the provider's own
// look-ups, which are what is under test).
type inventory struct {
	servers []servers.Server
	volumes []volumes.Volume
	ports   []ports.Port
	groups  []groups.SecGroup
	failed  bool // a listing failed (reported); the inventory is unknown
}

func (inv inventory) String() string {
	return fmt.Sprintf("%d servers, %d volumes, %d ports, %d security groups",
		len(inv.servers), len(inv.volumes), len(inv.ports), len(inv.groups))
}

func (inv inventory) empty() bool {
	return !inv.failed && len(inv.servers)+len(inv.volumes)+len(inv.ports)+len(inv.groups) == 0
}

func (inv inventory) oneSet() bool {
	return !inv.failed && len(inv.servers) == 1 && len(inv.volumes) == 1 && len(inv.ports) == 1 && len(inv.groups) == 1
}

// It reports (not stops) on errors, so other goroutines may use it too.
func takeInventory(tb testing.TB, projectID, instanceID string) inventory {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := cloud.admin
	var inv inventory
	mine := func(name string) bool { return strings.Contains(name, instanceID) }

	sp, err := servers.List(a.compute, servers.ListOpts{AllTenants: true, TenantID: projectID}).AllPages(ctx)
	if err != nil {
		tb.Errorf("inventory of %s: %v", instanceID, err)
		inv.failed = true
		return inv
	}
	ss, _ := servers.ExtractServers(sp)
	for _, s := range ss {
		if mine(s.Name) {
			inv.servers = append(inv.servers, s)
		}
	}
	vp, err := volumes.List(a.volume, volumes.ListOpts{AllTenants: true, TenantID: projectID}).AllPages(ctx)
	if err != nil {
		tb.Errorf("inventory of %s: %v", instanceID, err)
		inv.failed = true
		return inv
	}
	vs, _ := volumes.ExtractVolumes(vp)
	for _, v := range vs {
		if mine(v.Name) || v.Metadata[metaInstanceID] == instanceID {
			inv.volumes = append(inv.volumes, v)
		}
	}
	pp, err := ports.List(a.network, ports.ListOpts{ProjectID: projectID}).AllPages(ctx)
	if err != nil {
		tb.Errorf("inventory of %s: %v", instanceID, err)
		inv.failed = true
		return inv
	}
	ps, _ := ports.ExtractPorts(pp)
	for _, p := range ps {
		if mine(p.Name) {
			inv.ports = append(inv.ports, p)
		}
	}
	gp, err := groups.List(a.network, groups.ListOpts{ProjectID: projectID}).AllPages(ctx)
	if err != nil {
		tb.Errorf("inventory of %s: %v", instanceID, err)
		inv.failed = true
		return inv
	}
	gs, _ := groups.ExtractGroups(gp)
	for _, g := range gs {
		if mine(g.Name) {
			inv.groups = append(inv.groups, g)
		}
	}
	return inv
}

// deleteAndCheck deletes the instance and asserts nothing of it is left.
func deleteAndCheck(tb testing.TB, p *Provider, instanceID string) {
	tb.Helper()
	ctx := testContext(tb, 3*time.Minute)
	if err := p.DeleteServer(ctx, instanceID); err != nil {
		tb.Fatal(err)
	}
	if inv := takeInventory(tb, p.projectID, instanceID); !inv.empty() {
		tb.Fatalf("after DeleteServer: %s left", inv)
	}
}

// deleteChecked is deleteAndCheck for other goroutines than the test's:
// it reports instead of stopping the test.
func deleteChecked(tb testing.TB, p *Provider, instanceID string) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := p.DeleteServer(ctx, instanceID); err != nil {
		tb.Error(err)
		return
	}
	if inv := takeInventory(tb, p.projectID, instanceID); !inv.empty() {
		tb.Errorf("after DeleteServer: %s left", inv)
	}
}

// cleanupInstance deletes the instance at the end of the test whatever
// happened, so a failing test does not leak into the next ones.
func cleanupInstance(tb testing.TB, p *Provider, instanceID string) {
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		defer cancel()
		if err := p.DeleteServer(ctx, instanceID); err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
}

func newInstanceID() string { return uuid.NewString() }
