package openstack

import (
	"context"
	"fmt"
	"strings"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// imageRef is the image a spec boots: its own, else the configured one
// for its datastore version, else for its datastore.
func (p *Provider) imageRef(spec provider.ServerSpec) (string, error) {
	if spec.Image != "" {
		return spec.Image, nil
	}
	for _, key := range []string{spec.Datastore + ":" + spec.Version, spec.Datastore} {
		if ref := p.cfg.Images[key]; ref != "" {
			return ref, nil
		}
	}
	return "", refused("datastore %s version %s names no image and COFFER_OS_IMAGES has none for it", spec.Datastore, spec.Version)
}

// resolveImage turns an image reference into an active Glance image the
// service user can boot: "tag:T1,T2" (provider.VersionImageRef) is the
// newest active image carrying all the tags, anything else an image id.
// Checked before anything is created, so that a wrong image leaves
// nothing behind.
func (p *Provider) resolveImage(ctx context.Context, ref string) (*images.Image, error) {
	tags, ok, err := provider.ImageRefTags(ref)
	if err != nil {
		return nil, refused("%v", err)
	}
	if ok {
		tagged := strings.Join(tags, `", "`)
		pages, err := images.List(p.image, images.ListOpts{
			Tags: tags, Status: images.ImageStatusActive, Sort: "created_at:desc",
		}).AllPages(ctx)
		if err != nil {
			return nil, fmt.Errorf(`list images tagged "%s": %w`, tagged, err)
		}
		imgs, err := images.ExtractImages(pages)
		if err != nil {
			return nil, fmt.Errorf(`list images tagged "%s": %w`, tagged, err)
		}
		if len(imgs) == 0 {
			return nil, refused(`no active image tagged "%s" is visible to the service user`, tagged)
		}
		return &imgs[0], nil
	}
	img, err := images.Get(ctx, p.image, ref).Extract()
	if isNotFound(err) {
		return nil, refused("image %s does not exist (or is not visible to the service user)", ref)
	}
	if err != nil {
		return nil, fmt.Errorf("get image %s: %w", ref, err)
	}
	if img.Status != images.ImageStatusActive {
		return nil, refused("image %s is %s, not active", ref, img.Status)
	}
	return img, nil
}

// flavor returns the Nova flavor, or a refusal if there is none.
func (p *Provider) flavor(ctx context.Context, id string) (*flavors.Flavor, error) {
	if id == "" {
		return nil, refused("no flavor given")
	}
	f, err := flavors.Get(ctx, p.compute, id).Extract()
	if isNotFound(err) {
		return nil, refused("flavor %s does not exist (or is not accessible to the service project)", id)
	}
	if err != nil {
		return nil, fmt.Errorf("get flavor %s: %w", id, err)
	}
	return f, nil
}
