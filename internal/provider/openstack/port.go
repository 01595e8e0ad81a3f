package openstack

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/subnets"
)

// managementSubnets lists the management network's IPv4 subnets: an
// instance's address is its port's IPv4 address, so there must be one.
func (p *Provider) managementSubnets(ctx context.Context) ([]subnets.Subnet, error) {
	pages, err := subnets.List(p.network, subnets.ListOpts{NetworkID: p.cfg.ManagementNetworkID, IPVersion: 4}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list subnets of management network %s: %w", p.cfg.ManagementNetworkID, err)
	}
	ss, err := subnets.ExtractSubnets(pages)
	if err != nil {
		return nil, fmt.Errorf("list subnets of management network %s: %w", p.cfg.ManagementNetworkID, err)
	}
	if len(ss) == 0 {
		return nil, fmt.Errorf("management network %s has no IPv4 subnet visible to the service user", p.cfg.ManagementNetworkID)
	}
	return ss, nil
}

// findPorts lists the instance's ports on the management network, oldest
// first.
func (p *Provider) findPorts(ctx context.Context, name string) ([]ports.Port, error) {
	pages, err := ports.List(p.network, ports.ListOpts{
		Name: name, NetworkID: p.cfg.ManagementNetworkID, ProjectID: p.projectID,
	}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	ps, err := ports.ExtractPorts(pages)
	if err != nil {
		return nil, fmt.Errorf("list ports: %w", err)
	}
	return oldest(ps, func(p ports.Port) time.Time { return p.CreatedAt },
		func(p ports.Port) string { return p.ID }), nil
}

// ensurePort finds or creates the instance's port on the management
// network, in the instance's security group only.
func (p *Provider) ensurePort(ctx context.Context, instanceID, name, secGroupID string) (ports.Port, error) {
	ps, err := p.findPorts(ctx, name)
	if err != nil {
		return ports.Port{}, err
	}
	if len(ps) > 1 {
		p.logger.WarnContext(ctx, "openstack provider: instance has several ports; using the oldest", "instance_id", instanceID, "ports", len(ps))
	}
	groups := []string{secGroupID}
	if len(ps) == 0 {
		created, err := ports.Create(ctx, p.network, ports.CreateOpts{
			NetworkID:      p.cfg.ManagementNetworkID,
			Name:           name,
			Description:    "Coffer instance " + instanceID,
			SecurityGroups: &groups,
		}).Extract()
		if err != nil {
			return ports.Port{}, fmt.Errorf("create port: %w", refusal("neutron", err))
		}
		p.logger.InfoContext(ctx, "openstack provider: port created", "instance_id", instanceID, "port_id", created.ID, "address", portIPv4(*created))
		p.step(ctx, "port")
		return *created, nil
	}
	port := ps[0]
	if !slices.Equal(port.SecurityGroups, groups) {
		updated, err := ports.Update(ctx, p.network, port.ID, ports.UpdateOpts{SecurityGroups: &groups}).Extract()
		if err != nil {
			return port, fmt.Errorf("set security group of port %s: %w", port.ID, err)
		}
		port = *updated
	}
	p.step(ctx, "port")
	return port, nil
}

// pruneStrayPorts deletes the instance's ports that no server uses, except
// keepID, once its server is ACTIVE. A worker killed while its port
// request was in flight leaves a port that Neutron creates after the retry
// has looked (and made its own): the server is bound to one, the other is
// a leak. Best effort: a failure is logged, and delete removes them all
// anyway.
func (p *Provider) pruneStrayPorts(ctx context.Context, instanceID, name, keepID string) {
	ps, err := p.findPorts(ctx, name)
	if err != nil {
		p.logger.WarnContext(ctx, "openstack provider: list ports to prune", "instance_id", instanceID, "err", err)
		return
	}
	for _, port := range ps {
		if port.DeviceID != "" || port.ID == keepID {
			continue
		}
		if err := ports.Delete(ctx, p.network, port.ID).ExtractErr(); err != nil && !isNotFound(err) {
			p.logger.WarnContext(ctx, "openstack provider: delete stray port", "instance_id", instanceID, "port_id", port.ID, "err", err)
			continue
		}
		p.logger.InfoContext(ctx, "openstack provider: deleted a stray port", "instance_id", instanceID, "port_id", port.ID)
	}
}

// portIPv4 is the port's first IPv4 address: where the datastore listens
// for clients.
func portIPv4(port ports.Port) string {
	for _, ip := range port.FixedIPs {
		if a, err := netip.ParseAddr(ip.IPAddress); err == nil && a.Is4() {
			return a.String()
		}
	}
	return ""
}

// deletePorts deletes the instance's ports. Nova never deletes a port it
// was given, so this runs once the server is gone.
func (p *Provider) deletePorts(ctx context.Context, name string) error {
	ps, err := p.findPorts(ctx, name)
	if err != nil {
		return err
	}
	for _, port := range ps {
		if err := ports.Delete(ctx, p.network, port.ID).ExtractErr(); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete port %s: %w", port.ID, err)
		}
	}
	return nil
}
