package openstack

import (
	"context"
	"fmt"

	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
)

// DeleteServer removes everything the instance owns: its server(s), then
// (once Nova has let go of them) its port, security group and volume, and
// waits until none is listed any more. It works from whatever exists, so
// it also cleans up after a partial creation, and deleting an instance
// that has nothing succeeds.
func (p *Provider) DeleteServer(ctx context.Context, instanceID string) error {
	if err := p.deleteServer(ctx, instanceID); err != nil {
		return fmt.Errorf("delete server for %s: %w", instanceID, err)
	}
	return nil
}

func (p *Provider) deleteServer(ctx context.Context, instanceID string) error {
	name, err := p.name(instanceID)
	if err != nil {
		return err
	}
	unlock, err := p.locks.lock(ctx, instanceID)
	if err != nil {
		return err
	}
	defer unlock()
	return p.deleteResources(ctx, instanceID, name)
}

// deleteResources is DeleteServer under the instance's lock.
func (p *Provider) deleteResources(ctx context.Context, instanceID, name string) error {
	ss, err := p.findServers(ctx, name)
	if err != nil {
		return err
	}
	for _, s := range ss {
		if err := servers.Delete(ctx, p.compute, s.ID).ExtractErr(); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete nova server %s: %w", s.ID, err)
		}
	}
	// The port, group and volume are in use until the server is gone.
	for _, s := range ss {
		err := poll(ctx, "server "+s.ID+" to be deleted", func() (bool, error) {
			got, err := servers.Get(ctx, p.compute, s.ID).Extract()
			if isNotFound(err) {
				return true, nil
			}
			if err != nil {
				return false, fmt.Errorf("get server %s: %w", s.ID, err)
			}
			return got.Status == "DELETED", nil
		})
		if err != nil {
			return err
		}
	}
	if err := p.deletePorts(ctx, name); err != nil {
		return err
	}
	if err := p.deleteSecGroups(ctx, name); err != nil {
		return err
	}
	vs, err := p.findVolumes(ctx, instanceID)
	if err != nil {
		return err
	}
	for _, v := range vs {
		if err := p.deleteVolume(ctx, v); err != nil {
			return err
		}
	}
	if len(ss) > 0 || len(vs) > 0 {
		p.logger.InfoContext(ctx, "openstack provider: server deleted", "instance_id", instanceID, "servers", len(ss), "volumes", len(vs))
	}
	return nil
}
