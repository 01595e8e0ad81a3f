package openstack

import (
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumetypes"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// TestCheckImage: what the API asks before it accepts a create — the
// image a version would boot resolves (its own id or tag, else
// COFFER_OS_IMAGES's), or a refusal says why not.
func TestCheckImage(t *testing.T) {
	t.Parallel()
	cfg := cloud.cfg
	cfg.Images = map[string]string{"postgresql": cloud.imageID, "redis:7": "tag:coffer-no-such-tag"}
	p := newProvider(t, cfg)
	ctx := testContext(t, time.Minute)
	for _, c := range []struct {
		name                      string
		datastore, version, image string
		refused                   bool
	}{
		{"own image id", "mariadb", "11", cloud.imageID, false},
		{"configured for the datastore", "postgresql", "16", "", false},
		{"missing image id", "postgresql", "16", uuid.NewString(), true},
		{"tag nothing has", "postgresql", "16", "tag:coffer-no-such-tag", true},
		{"configured tag nothing has", "redis", "7", "", true},
		{"none at all", "mariadb", "11", "", true},
	} {
		err := p.CheckImage(ctx, c.datastore, c.version, c.image)
		if got := errors.Is(err, provider.ErrRefused); got != c.refused || (err != nil && !got) {
			t.Errorf("%s: %v (refused: %v, want %v)", c.name, err, got, c.refused)
		}
	}
}

// TestCreateServerVolumeType: the instance's volume type (ServerSpec)
// wins over the configured default.
func TestCreateServerVolumeType(t *testing.T) {
	t.Parallel()
	ctx := testContext(t, 3*time.Minute)
	vt, err := volumetypes.Create(ctx, cloud.admin.volume, volumetypes.CreateOpts{Name: "coffer-test-vt-" + uuid.NewString()[:8]}).Extract()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = volumetypes.Delete(testContext(t, time.Minute), cloud.admin.volume, vt.ID).ExtractErr() })
	cfg := cloud.cfg
	cfg.VolumeType = "__DEFAULT__"
	p := newProvider(t, cfg)
	id := newInstanceID()
	cleanupInstance(t, p, id)
	spec := testSpec(id)
	spec.VolumeType = vt.Name
	if _, err := p.CreateServer(ctx, spec); err != nil {
		t.Fatal(err)
	}
	inv := takeInventory(t, p.projectID, id)
	if !inv.oneSet() || inv.volumes[0].VolumeType != vt.Name {
		t.Fatalf("%s; volume type %q, want %q", inv, inv.volumes[0].VolumeType, vt.Name)
	}
	deleteAndCheck(t, p, id)
}
