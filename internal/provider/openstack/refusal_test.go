package openstack

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/quotasets"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/roles"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// TestRefused: what OpenStack would refuse is refused with a clear
// message, as provider.ErrRefused, and leaves nothing behind, whether it
// is found before anything is created (flavor, image, datastore) or after
// (an invalid CIDR, found when the rules are made).
func TestRefused(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		mod  func(*provider.ServerSpec)
		want string
	}{
		"unknown flavor":    {func(s *provider.ServerSpec) { s.FlavorID = "coffer-no-such-flavor" }, "flavor coffer-no-such-flavor does not exist"},
		"unknown image":     {func(s *provider.ServerSpec) { s.Image = newInstanceID() }, "does not exist"},
		"no image with tag": {func(s *provider.ServerSpec) { s.Image = "tag:coffer-no-such-tag" }, `no active image tagged "coffer-no-such-tag"`},
		"unknown datastore": {func(s *provider.ServerSpec) { s.Datastore, s.Agent.Datastore = "cassandra", "cassandra" }, "no standard port"},
		"invalid CIDR":      {func(s *provider.ServerSpec) { s.AllowedCIDRs = []string{"10.0.0.0/8", "everywhere"} }, `"everywhere" is not a CIDR`},
		"zero volume":       {func(s *provider.ServerSpec) { s.VolumeSizeGB = 0 }, "volume size 0 GB"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p := newProvider(t)
			id := newInstanceID()
			cleanupInstance(t, p, id)
			spec := testSpec(id)
			c.mod(&spec)
			_, err := p.CreateServer(testContext(t, 3*time.Minute), spec)
			if !errors.Is(err, provider.ErrRefused) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("CreateServer: %v; want ErrRefused with %q", err, c.want)
			}
			t.Log(err)
			if inv := takeInventory(t, p.projectID, id); !inv.empty() {
				t.Fatalf("refused, but %s left", inv)
			}
		})
	}
}

// TestRefusedAfterPartialCreate: an attempt killed half-way left a volume,
// a group and a port; the retry finds the flavor gone and removes them.
func TestRefusedAfterPartialCreate(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	id := newInstanceID()
	cleanupInstance(t, p, id)
	killed, kill := context.WithCancel(testContext(t, 3*time.Minute))
	defer kill()
	p.afterStep = func(_ context.Context, step string) {
		if step == "port" {
			kill()
		}
	}
	if _, err := p.CreateServer(killed, testSpec(id)); err == nil {
		t.Fatal("CreateServer survived its worker's death")
	}
	p.afterStep = nil
	if inv := takeInventory(t, p.projectID, id); len(inv.volumes) != 1 || len(inv.ports) != 1 {
		t.Fatalf("the killed attempt left %s; want a volume and a port", inv)
	}
	spec := testSpec(id)
	spec.FlavorID = "coffer-no-such-flavor"
	if _, err := p.CreateServer(testContext(t, 3*time.Minute), spec); !errors.Is(err, provider.ErrRefused) {
		t.Fatalf("CreateServer with a missing flavor: %v", err)
	}
	if inv := takeInventory(t, p.projectID, id); !inv.empty() {
		t.Fatalf("refused, but %s left", inv)
	}
}

// TestNovaQuota: Nova refuses the server itself (the project may run no
// instance) after the volume, group and port were made: the error carries
// Nova's message, and they are removed again.
func TestNovaQuota(t *testing.T) {
	t.Parallel()
	requireCloud(t)
	cfg := quotaProject(t)
	p := newProvider(t, cfg)
	id := newInstanceID()
	cleanupInstance(t, p, id)
	_, err := p.CreateServer(testContext(t, 3*time.Minute), testSpec(id))
	if !errors.Is(err, provider.ErrRefused) || !strings.Contains(err.Error(), "Quota exceeded for instances") {
		t.Fatalf("CreateServer over quota: %v", err)
	}
	t.Log(err)
	if inv := takeInventory(t, p.projectID, id); !inv.empty() {
		t.Fatalf("refused, but %s left", inv)
	}
}

// quotaProject makes (once) a project whose compute quota allows no
// instance, with a member user, and returns a configuration for it. Its
// ports go on the shared test network (the management network belongs to
// the service project).
func quotaProject(t *testing.T) Config {
	ctx := testContext(t, time.Minute)
	id := cloud.admin.identity
	const name, password = "coffer-test-quota", "quotapass"
	pp, err := projects.List(id, projects.ListOpts{Name: name, DomainID: "default"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ps, _ := projects.ExtractProjects(pp)
	var project *projects.Project
	if len(ps) > 0 {
		project = &ps[0]
	} else if project, err = projects.Create(ctx, id, projects.CreateOpts{Name: name, DomainID: "default"}).Extract(); err != nil {
		t.Fatal(err)
	}
	up, err := users.List(id, users.ListOpts{Name: name, DomainID: "default"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	us, _ := users.ExtractUsers(up)
	var user *users.User
	if len(us) > 0 {
		user = &us[0]
	} else if user, err = users.Create(ctx, id, users.CreateOpts{
		Name: name, DomainID: "default", Password: password, DefaultProjectID: project.ID,
	}).Extract(); err != nil {
		t.Fatal(err)
	}
	rp, err := roles.List(id, roles.ListOpts{Name: "member"}).AllPages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rs, _ := roles.ExtractRoles(rp)
	if len(rs) != 1 {
		t.Fatalf("roles named member: %v", rs)
	}
	if err := roles.Assign(ctx, id, rs[0].ID, roles.AssignOpts{UserID: user.ID, ProjectID: project.ID}).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	zero := 0
	if _, err := quotasets.Update(ctx, cloud.admin.compute, project.ID, quotasets.UpdateOpts{Instances: &zero}).Extract(); err != nil {
		t.Fatal(err)
	}
	cfg := cloud.cfg
	cfg.Username, cfg.Password, cfg.ProjectName = name, password, name
	cfg.ManagementNetworkID = cloud.vars["OS_TEST_NETWORK_ID"]
	return cfg
}

// TestNoValidHost: Nova accepts the server but cannot place it (a flavor
// no host can hold). CreateServer reports the server in ERROR with Nova's
// fault, not an error; DeleteServer removes everything.
func TestNoValidHost(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	ctx := testContext(t, 3*time.Minute)
	id := newInstanceID()
	cleanupInstance(t, p, id)
	spec := testSpec(id)
	spec.FlavorID = hugeFlavor(t)
	srv, err := p.CreateServer(ctx, spec)
	if err != nil || srv.Status != provider.StatusError || !strings.Contains(srv.Fault, "No valid host") {
		t.Fatalf("CreateServer = %+v, %v; want ERROR with a No valid host fault", srv, err)
	}
	if got, err := p.GetServer(ctx, id); err != nil || got != srv {
		t.Fatalf("GetServer = %+v, %v; want %+v", got, err, srv)
	}
	deleteAndCheck(t, p, id)
}

// hugeFlavor makes (once) a flavor larger than the fake hypervisor.
func hugeFlavor(t *testing.T) string {
	ctx := testContext(t, time.Minute)
	const id = "coffer-test-huge"
	if _, err := flavors.Get(ctx, cloud.admin.compute, id).Extract(); err == nil {
		return id
	}
	disk := 1
	_, err := flavors.Create(ctx, cloud.admin.compute, flavors.CreateOpts{
		ID: id, Name: "coffer.test.huge", VCPUs: 100000, RAM: 64 << 20, Disk: &disk,
	}).Extract()
	if err != nil && !strings.Contains(err.Error(), "409") {
		t.Fatal(err)
	}
	return id
}

// taggedImage uploads a small public image tagged tag, deleted when the
// test ends.
func taggedImage(t *testing.T, tag string) string {
	ctx := testContext(t, time.Minute)
	public := images.ImageVisibilityPublic
	img, err := images.Create(ctx, cloud.admin.image, images.CreateOpts{
		Name: tag, Tags: []string{tag}, ContainerFormat: "bare", DiskFormat: "raw", Visibility: &public,
	}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := images.Delete(ctx, cloud.admin.image, img.ID).ExtractErr(); err != nil {
			t.Errorf("delete image %s: %v", img.ID, err)
		}
	})
	if err := imagedata.Upload(ctx, cloud.admin.image, img.ID, bytes.NewReader(make([]byte, 1024))).ExtractErr(); err != nil {
		t.Fatal(err)
	}
	return img.ID
}
