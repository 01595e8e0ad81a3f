package openstack

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/groups"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/extensions/security/rules"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// findSecGroups lists the instance's security groups, oldest first.
func (p *Provider) findSecGroups(ctx context.Context, name string) ([]groups.SecGroup, error) {
	pages, err := groups.List(p.network, groups.ListOpts{Name: name, ProjectID: p.projectID}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list security groups: %w", err)
	}
	gs, err := groups.ExtractGroups(pages)
	if err != nil {
		return nil, fmt.Errorf("list security groups: %w", err)
	}
	return oldest(gs, func(g groups.SecGroup) time.Time { return g.CreatedAt },
		func(g groups.SecGroup) string { return g.ID }), nil
}

// ingressRule is one opening of the datastore's port.
type ingressRule struct {
	etherType string // IPv4, IPv6
	prefix    string // canonical CIDR
}

// wantedRules turns the allowed CIDRs into rules, refusing what is not a
// CIDR (a bare address is taken as a single host).
func wantedRules(cidrs []string) (map[ingressRule]bool, error) {
	want := map[ingressRule]bool{}
	for _, c := range cidrs {
		pfx, err := netip.ParsePrefix(c)
		if err != nil {
			addr, aerr := netip.ParseAddr(c)
			if aerr != nil {
				return nil, refused("allowed CIDR %q is not a CIDR", c)
			}
			pfx = netip.PrefixFrom(addr, addr.BitLen())
		}
		pfx = pfx.Masked()
		r := ingressRule{etherType: "IPv4", prefix: pfx.String()}
		if pfx.Addr().Is6() {
			r.etherType = "IPv6"
		}
		want[r] = true
	}
	return want, nil
}

// ensureSecGroup finds or creates the instance's security group and makes
// its ingress rules exactly "TCP to the datastore's port from each allowed
// CIDR". Neutron's default egress rules stay: the agent dials out to the
// control plane, and a datastore may reach replicas or DNS.
func (p *Provider) ensureSecGroup(ctx context.Context, instanceID, name string, port int, cidrs []string) (groups.SecGroup, error) {
	want, err := wantedRules(cidrs)
	if err != nil {
		return groups.SecGroup{}, err
	}
	gs, err := p.findSecGroups(ctx, name)
	if err != nil {
		return groups.SecGroup{}, err
	}
	var g groups.SecGroup
	if len(gs) > 0 {
		g = gs[0]
		if len(gs) > 1 {
			p.logger.WarnContext(ctx, "openstack provider: instance has several security groups; using the oldest", "instance_id", instanceID, "groups", len(gs))
		}
	} else {
		created, err := groups.Create(ctx, p.network, groups.CreateOpts{
			Name:        name,
			Description: fmt.Sprintf("Coffer instance %s: datastore port %d", instanceID, port),
		}).Extract()
		if err != nil {
			return groups.SecGroup{}, fmt.Errorf("create security group: %w", refusal("neutron", err))
		}
		g = *created
		p.logger.InfoContext(ctx, "openstack provider: security group created", "instance_id", instanceID, "security_group_id", g.ID)
	}
	p.step(ctx, "security-group")
	return g, p.syncRules(ctx, g, port, want)
}

// syncRules makes g's ingress rules exactly TCP port from each wanted
// prefix: what is missing is added, anything else coming in is removed.
func (p *Provider) syncRules(ctx context.Context, g groups.SecGroup, port int, want map[ingressRule]bool) error {
	want = maps.Clone(want)
	for _, r := range g.Rules {
		if r.Direction != string(rules.DirIngress) {
			continue
		}
		key := ingressRule{etherType: r.EtherType, prefix: r.RemoteIPPrefix}
		exact := r.Protocol == string(rules.ProtocolTCP) && r.PortRangeMin == port && r.PortRangeMax == port &&
			r.RemoteGroupID == "" && r.RemoteAddressGroupID == ""
		if exact && want[key] {
			delete(want, key) // present already
			continue
		}
		if err := rules.Delete(ctx, p.network, r.ID).ExtractErr(); err != nil && !isNotFound(err) {
			return fmt.Errorf("delete rule %s of security group %s: %w", r.ID, g.ID, err)
		}
	}
	for r := range want {
		_, err := rules.Create(ctx, p.network, rules.CreateOpts{
			Direction:      rules.DirIngress,
			EtherType:      rules.RuleEtherType(r.etherType),
			Protocol:       rules.ProtocolTCP,
			PortRangeMin:   port,
			PortRangeMax:   port,
			RemoteIPPrefix: r.prefix,
			SecGroupID:     g.ID,
			Description:    "datastore port",
		}).Extract()
		// 409: a concurrent call added the same rule.
		if err != nil && !gophercloud.ResponseCodeIs(err, 409) {
			return fmt.Errorf("add rule for %s to security group %s: %w", r.prefix, g.ID, refusal("neutron", err))
		}
	}
	return nil
}

// SetAllowedCIDRs changes who reaches the datastore of an instance that
// has a server: its security group's ingress rules become exactly the
// datastore's port from each of cidrs.
func (p *Provider) SetAllowedCIDRs(ctx context.Context, instanceID string, cidrs []string) error {
	if err := p.setAllowedCIDRs(ctx, instanceID, cidrs); err != nil {
		return fmt.Errorf("set allowed CIDRs of %s: %w", instanceID, err)
	}
	return nil
}

func (p *Provider) setAllowedCIDRs(ctx context.Context, instanceID string, cidrs []string) error {
	name, err := p.name(instanceID)
	if err != nil {
		return err
	}
	unlock, err := p.locks.lock(ctx, instanceID)
	if err != nil {
		return err
	}
	defer unlock()
	srv, err := p.findServer(ctx, name)
	if err != nil {
		return err
	}
	if srv == nil {
		return provider.ErrNotFound
	}
	port := metaPortOf(srv)
	if port == 0 {
		return fmt.Errorf("server %s records no datastore port (%s)", srv.ID, metaPort)
	}
	g, err := p.ensureSecGroup(ctx, instanceID, name, port, cidrs)
	if err != nil {
		return err
	}
	// A group made just now (it had been deleted by hand) is not on the
	// port yet.
	_, err = p.ensurePort(ctx, instanceID, name, g.ID)
	return err
}

// deleteSecGroups deletes the groups named name. Neutron refuses (409)
// while a port still uses a group, e.g. right after the port's delete, so
// that is retried until ctx ends.
func (p *Provider) deleteSecGroups(ctx context.Context, name string) error {
	gs, err := p.findSecGroups(ctx, name)
	if err != nil {
		return err
	}
	for _, g := range gs {
		err := poll(ctx, "security group "+g.ID+" to be deleted", func() (bool, error) {
			err := groups.Delete(ctx, p.network, g.ID).ExtractErr()
			switch {
			case err == nil || isNotFound(err):
				return true, nil
			case gophercloud.ResponseCodeIs(err, 409):
				return false, nil
			}
			return false, fmt.Errorf("delete security group %s: %w", g.ID, err)
		})
		if err != nil {
			return err
		}
	}
	return nil
}
