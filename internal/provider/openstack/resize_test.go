package openstack

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// TestResize: flavor resize (Nova resize + confirm) and volume extend
// (Cinder, in use), each idempotent; a resize Nova cannot place is
// reported with the server still on its flavor.
func TestResize(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	ctx := testContext(t, 5*time.Minute)
	id := newInstanceID()
	cleanupInstance(t, p, id)
	srv, err := p.CreateServer(ctx, testSpec(id))
	if err != nil {
		t.Fatal(err)
	}

	t0 := time.Now()
	resized, err := p.ResizeServer(ctx, id, "2")
	if err != nil || resized.Status != provider.StatusActive || resized.ID != srv.ID || resized.Address != srv.Address || resized.Port != 5432 {
		t.Fatalf("ResizeServer = %+v, %v", resized, err)
	}
	t.Logf("resize + confirm: %s", time.Since(t0).Round(time.Millisecond))
	s, err := servers.Get(ctx, cloud.admin.compute, srv.ID).Extract()
	if err != nil || s.Flavor["original_name"] != "m1.small" || s.Status != "ACTIVE" {
		t.Fatalf("after resize: flavor %v status %s, %v", s.Flavor, s.Status, err)
	}
	if again, err := p.ResizeServer(ctx, id, "2"); err != nil || again != resized {
		t.Fatalf("second ResizeServer = %+v, %v", again, err)
	}

	_, err = p.ResizeServer(ctx, id, hugeFlavor(t))
	if err == nil || !strings.Contains(err.Error(), "did not resize") {
		t.Fatalf("resize to a flavor no host holds: %v", err)
	}
	t.Log(err)
	if s, _ := servers.Get(ctx, cloud.admin.compute, srv.ID).Extract(); s.Flavor["original_name"] != "m1.small" || s.Status != "ACTIVE" {
		t.Fatalf("after the failed resize: flavor %v status %s", s.Flavor, s.Status)
	}
	if _, err := p.ResizeServer(ctx, id, "coffer-no-such-flavor"); !errors.Is(err, provider.ErrRefused) {
		t.Fatalf("resize to a missing flavor: %v", err)
	}

	t0 = time.Now()
	if err := p.ExtendVolume(ctx, id, 2); err != nil {
		t.Fatal(err)
	}
	t.Logf("extend in-use volume: %s", time.Since(t0).Round(time.Millisecond))
	if err := p.ExtendVolume(ctx, id, 2); err != nil {
		t.Fatalf("second ExtendVolume: %v", err)
	}
	if err := p.ExtendVolume(ctx, id, 1); err != nil {
		t.Fatalf("ExtendVolume to a smaller size: %v", err)
	}
	inv := takeInventory(t, p.projectID, id)
	if !inv.oneSet() || inv.volumes[0].Size != 2 || inv.volumes[0].Status != "in-use" {
		t.Fatalf("after extend: %s, volume %+v", inv, inv.volumes)
	}
	deleteAndCheck(t, p, id)
	if _, err := p.ResizeServer(ctx, id, "2"); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("resize of a deleted instance: %v", err)
	}
	if err := p.ExtendVolume(ctx, id, 3); !errors.Is(err, provider.ErrNotFound) {
		t.Fatalf("extend of a deleted instance: %v", err)
	}
}

// TestCatalog: flavors and volume types come from Nova and Cinder.
func TestCatalog(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	ctx := testContext(t, time.Minute)
	fs, err := p.ListFlavors(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(fs, provider.Flavor{ID: "1", Name: "m1.tiny", RAMMB: 256, VCPUs: 1, DiskGB: 1}) ||
		!slices.ContainsFunc(fs, func(f provider.Flavor) bool { return f.ID == "2" && f.Name == "m1.small" }) {
		t.Fatalf("flavors: %+v", fs)
	}
	ts, err := p.ListVolumeTypes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.ContainsFunc(ts, func(v provider.VolumeType) bool { return v.Name == "__DEFAULT__" && v.ID != "" }) {
		t.Fatalf("volume types: %+v", ts)
	}
}
