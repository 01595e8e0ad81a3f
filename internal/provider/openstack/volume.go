package openstack

import (
	"context"
	"fmt"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// findVolumes lists the instance's volumes, oldest first. Looked up by
// metadata, which Cinder sets in the create request itself.
func (p *Provider) findVolumes(ctx context.Context, instanceID string) ([]volumes.Volume, error) {
	pages, err := volumes.List(p.volume, volumes.ListOpts{
		Metadata: map[string]string{metaInstanceID: instanceID},
	}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	vs, err := volumes.ExtractVolumes(pages)
	if err != nil {
		return nil, fmt.Errorf("list volumes: %w", err)
	}
	return oldest(vs, func(v volumes.Volume) time.Time { return v.CreatedAt },
		func(v volumes.Volume) string { return v.ID }), nil
}

// ensureVolume finds or creates the instance's data volume and waits
// until it can be attached (or is attached already).
func (p *Provider) ensureVolume(ctx context.Context, spec provider.ServerSpec, name string) (volumes.Volume, error) {
	if spec.VolumeSizeGB <= 0 {
		return volumes.Volume{}, refused("volume size %d GB is not positive", spec.VolumeSizeGB)
	}
	vs, err := p.findVolumes(ctx, spec.InstanceID)
	if err != nil {
		return volumes.Volume{}, err
	}
	var v volumes.Volume
	switch {
	case len(vs) > 0 && vs[0].Status == "error":
		// A failed creation by an earlier attempt: replace it.
		p.logger.WarnContext(ctx, "openstack provider: replacing volume in error", "instance_id", spec.InstanceID, "volume_id", vs[0].ID)
		if err := p.deleteVolume(ctx, vs[0]); err != nil {
			return volumes.Volume{}, err
		}
		vs = nil
	case len(vs) > 1:
		p.logger.WarnContext(ctx, "openstack provider: instance has several volumes; using the oldest", "instance_id", spec.InstanceID, "volumes", len(vs))
	}
	if len(vs) > 0 {
		v = vs[0]
	} else {
		created, err := volumes.Create(ctx, p.volume, volumes.CreateOpts{
			Name:             name,
			Description:      fmt.Sprintf("Coffer instance %s (%s): datastore volume", spec.InstanceID, truncate(spec.Name, 128)),
			Size:             spec.VolumeSizeGB,
			VolumeType:       cmpOr(spec.VolumeType, p.cfg.VolumeType),
			AvailabilityZone: p.cfg.AvailabilityZone,
			Metadata:         map[string]string{metaInstanceID: spec.InstanceID},
		}, nil).Extract()
		if err != nil {
			return volumes.Volume{}, fmt.Errorf("create volume: %w", refusal("cinder", err))
		}
		v = *created
		p.logger.InfoContext(ctx, "openstack provider: volume created", "instance_id", spec.InstanceID, "volume_id", v.ID, "size_gb", v.Size)
	}
	p.step(ctx, "volume")

	err = poll(ctx, "volume "+v.ID+" to become available", func() (bool, error) {
		got, err := volumes.Get(ctx, p.volume, v.ID).Extract()
		if err != nil {
			return false, fmt.Errorf("get volume %s: %w", v.ID, err)
		}
		v = *got
		switch v.Status {
		case "available", "in-use", "reserved", "attaching":
			return true, nil
		case "error":
			return false, fmt.Errorf("volume %s went to error (see cinder-volume's log; the next attempt replaces it)", v.ID)
		}
		return false, nil
	})
	return v, err
}

// settled reports a volume status from which a delete is possible.
func settled(status string) bool {
	switch status {
	case "available", "error", "error_restoring", "error_extending", "error_managing":
		return true
	}
	return false
}

// deleteVolume waits until Nova has let go of the volume (a deleted
// server detaches its volumes on the way out), deletes it and waits until
// Cinder no longer lists it.
func (p *Provider) deleteVolume(ctx context.Context, v volumes.Volume) error {
	err := poll(ctx, "volume "+v.ID+" to be released", func() (bool, error) {
		got, err := volumes.Get(ctx, p.volume, v.ID).Extract()
		if isNotFound(err) {
			v.Status = "deleted"
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("get volume %s: %w", v.ID, err)
		}
		v = *got
		return settled(v.Status) || v.Status == "deleting", nil
	})
	if err != nil {
		return fmt.Errorf("%w (volume is %s)", err, v.Status)
	}
	if v.Status != "deleted" && v.Status != "deleting" {
		err := volumes.Delete(ctx, p.volume, v.ID, volumes.DeleteOpts{Cascade: true}).ExtractErr()
		if err != nil && !isNotFound(err) {
			return fmt.Errorf("delete volume %s: %w", v.ID, err)
		}
	}
	return poll(ctx, "volume "+v.ID+" to be deleted", func() (bool, error) {
		got, err := volumes.Get(ctx, p.volume, v.ID).Extract()
		if isNotFound(err) {
			return true, nil
		}
		if err != nil {
			return false, fmt.Errorf("get volume %s: %w", v.ID, err)
		}
		if got.Status == "error_deleting" {
			return false, fmt.Errorf("volume %s: cinder could not delete it (error_deleting)", v.ID)
		}
		return false, nil
	})
}

// ExtendVolume grows the instance's volume to sizeGB through Cinder (an
// attached volume is extended in place; Nova tells the guest) and waits
// until Cinder reports the new size. A volume already that large is left
// alone.
func (p *Provider) ExtendVolume(ctx context.Context, instanceID string, sizeGB int) error {
	if err := p.extendVolume(ctx, instanceID, sizeGB); err != nil {
		return fmt.Errorf("extend volume of %s to %d GB: %w", instanceID, sizeGB, err)
	}
	return nil
}

func (p *Provider) extendVolume(ctx context.Context, instanceID string, sizeGB int) error {
	if _, err := p.name(instanceID); err != nil {
		return err
	}
	unlock, err := p.locks.lock(ctx, instanceID)
	if err != nil {
		return err
	}
	defer unlock()
	vs, err := p.findVolumes(ctx, instanceID)
	if err != nil {
		return err
	}
	if len(vs) == 0 {
		return provider.ErrNotFound
	}
	v := vs[0]
	stable := func() (bool, error) {
		got, err := volumes.Get(ctx, p.volume, v.ID).Extract()
		if err != nil {
			return false, fmt.Errorf("get volume %s: %w", v.ID, err)
		}
		v = *got
		switch v.Status {
		case "available", "in-use":
			return true, nil
		case "error_extending":
			return false, fmt.Errorf("volume %s: cinder failed to extend it (error_extending)", v.ID)
		}
		return false, nil
	}
	if err := poll(ctx, "volume "+v.ID+" to settle", stable); err != nil {
		return err
	}
	if v.Size >= sizeGB {
		return nil
	}
	if err := volumes.ExtendSize(ctx, p.volume, v.ID, volumes.ExtendSizeOpts{NewSize: sizeGB}).ExtractErr(); err != nil {
		return fmt.Errorf("extend volume %s: %w", v.ID, refusal("cinder", err))
	}
	err = poll(ctx, "volume "+v.ID+" to be extended", func() (bool, error) {
		ok, err := stable()
		return ok && v.Size >= sizeGB, err
	})
	if err == nil {
		p.logger.InfoContext(ctx, "openstack provider: volume extended", "instance_id", instanceID, "volume_id", v.ID, "size_gb", v.Size)
	}
	return err
}
