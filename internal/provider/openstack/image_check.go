package openstack

import (
	"context"
	"fmt"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

var _ provider.ImageChecker = (*Provider)(nil)

// CheckImage resolves the image a server of the datastore version would
// boot, as CreateServer does: its own reference (an id, or tag:T1,T2 from
// the version's image_tags: provider.VersionImageRef), else
// COFFER_OS_IMAGES's for the version or the datastore. A reference that
// names nothing bootable is a provider.ErrRefused error.
func (p *Provider) CheckImage(ctx context.Context, datastore, version, image string) error {
	ref, err := p.imageRef(provider.ServerSpec{Datastore: datastore, Version: version, Image: image})
	if err == nil {
		_, err = p.resolveImage(ctx, ref)
	}
	if err != nil {
		return fmt.Errorf("image of %s %s: %w", datastore, version, err)
	}
	return nil
}
