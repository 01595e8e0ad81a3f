package openstack

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/imagedata"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// TestVersionImageTags: a datastore version that names its image by tags
// only (Trove's image_tags) boots the newest active Glance image carrying
// all of them; tags no image carries together are refused, naming them.
func TestVersionImageTags(t *testing.T) {
	t.Parallel()
	p := newProvider(t)
	ctx := testContext(t, 2*time.Minute)
	suffix := uuid.NewString()[:8]
	pg, v16 := "coffer-pg-"+suffix, "coffer-16-"+suffix
	older := uploadTaggedImage(t, "older-"+suffix, pg, v16)
	// Glance's created_at has whole seconds.
	time.Sleep(1100 * time.Millisecond)
	newer := uploadTaggedImage(t, "newer-"+suffix, pg, v16)
	time.Sleep(1100 * time.Millisecond)
	onlyPG := uploadTaggedImage(t, "pg-only-"+suffix, pg)

	for _, c := range []struct {
		name string
		tags []string
		want string // image id; "" for a refusal
	}{
		{"both tags: the newer of the two carrying both", []string{pg, v16}, newer},
		{"tag order does not matter", []string{v16, pg}, newer},
		{"one tag: the newest carrying it", []string{pg}, onlyPG},
		{"a tag no image carries with the others", []string{pg, v16, "coffer-none-" + suffix}, ""},
	} {
		ref := provider.VersionImageRef("", c.tags)
		img, err := p.resolveImage(ctx, ref)
		checkErr := p.CheckImage(ctx, "postgresql", "16", ref)
		if c.want == "" {
			if !errors.Is(err, provider.ErrRefused) || !errors.Is(checkErr, provider.ErrRefused) {
				t.Errorf("%s: resolve %v, check %v; want refusals", c.name, err, checkErr)
				continue
			}
			for _, tag := range c.tags {
				if !strings.Contains(checkErr.Error(), tag) {
					t.Errorf("%s: refusal %q does not name tag %s", c.name, checkErr, tag)
				}
			}
			t.Logf("%s: %v", c.name, checkErr)
			continue
		}
		if err != nil || checkErr != nil {
			t.Errorf("%s: resolve %v, check %v", c.name, err, checkErr)
			continue
		}
		if img.ID != c.want {
			t.Errorf("%s: resolved to %s (%s), want %s", c.name, img.ID, img.Name, c.want)
		}
	}
	// An image id wins over tags, as in Trove.
	if img, err := p.resolveImage(ctx, provider.VersionImageRef(older, []string{pg, v16})); err != nil || img.ID != older {
		t.Errorf("image id with tags: %v, %v; want %s", img, err, older)
	}
}

// uploadTaggedImage uploads a small active public image carrying tags,
// deleted when the test ends.
func uploadTaggedImage(t *testing.T, name string, tags ...string) string {
	t.Helper()
	ctx := testContext(t, time.Minute)
	public := images.ImageVisibilityPublic
	img, err := images.Create(ctx, cloud.admin.image, images.CreateOpts{
		Name: "coffer-test-" + name, Tags: tags, ContainerFormat: "bare", DiskFormat: "raw", Visibility: &public,
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
