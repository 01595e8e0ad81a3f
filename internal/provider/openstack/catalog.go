package openstack

import (
	"context"
	"fmt"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumetypes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// ListFlavors lists the Nova flavors the service project may boot: the
// public ones and the private ones shared with it.
func (p *Provider) ListFlavors(ctx context.Context) ([]provider.Flavor, error) {
	pages, err := flavors.ListDetail(p.compute, flavors.ListOpts{AccessType: flavors.AllAccess}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list nova flavors: %w", err)
	}
	fs, err := flavors.ExtractFlavors(pages)
	if err != nil {
		return nil, fmt.Errorf("list nova flavors: %w", err)
	}
	out := make([]provider.Flavor, 0, len(fs))
	for _, f := range fs {
		out = append(out, provider.Flavor{ID: f.ID, Name: f.Name, RAMMB: f.RAM, VCPUs: f.VCPUs, DiskGB: f.Disk, EphemeralGB: f.Ephemeral})
	}
	return out, nil
}

// ListVolumeTypes lists the Cinder volume types visible to the service
// project.
func (p *Provider) ListVolumeTypes(ctx context.Context) ([]provider.VolumeType, error) {
	pages, err := volumetypes.List(p.volume, volumetypes.ListOpts{}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list cinder volume types: %w", err)
	}
	ts, err := volumetypes.ExtractVolumeTypes(pages)
	if err != nil {
		return nil, fmt.Errorf("list cinder volume types: %w", err)
	}
	out := make([]provider.VolumeType, 0, len(ts))
	for _, t := range ts {
		out = append(out, provider.VolumeType{ID: t.ID, Name: t.Name, Description: t.Description, IsPublic: t.IsPublic})
	}
	return out, nil
}
