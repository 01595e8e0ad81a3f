package openstack

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/blockstorage/v3/volumes"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/flavors"
	"github.com/gophercloud/gophercloud/v2/openstack/compute/v2/servers"
	"github.com/gophercloud/gophercloud/v2/openstack/image/v2/images"
	"github.com/gophercloud/gophercloud/v2/openstack/networking/v2/ports"
	"golang.org/x/sync/errgroup"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	cloudinit "github.com/coffer-dbaas/coffer/deploy/cloud-init"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

// CreateServer makes sure the instance's volume, security group, port and
// server exist, and waits (bounded by ctx) until the server has left
// BUILD. It returns the server in ACTIVE, or in ERROR with Nova's fault
// message. Safe to call again, and concurrently, for the same instance:
// what exists is reused. A server that exists is kept as it is, with the
// agent configuration it was created with (see AgentTokenHash); only its
// security group's rules follow spec.AllowedCIDRs.
//
// A request OpenStack refuses (unknown flavor or image, quota, invalid)
// fails with provider.ErrRefused and Nova's (Cinder's, Neutron's) message,
// after removing whatever the instance had, so nothing is left behind.
func (p *Provider) CreateServer(ctx context.Context, spec provider.ServerSpec) (provider.Server, error) {
	srv, err := p.createServer(ctx, spec)
	if err != nil {
		return provider.Server{}, fmt.Errorf("create server for %s: %w", spec.InstanceID, err)
	}
	return srv, nil
}

func (p *Provider) createServer(ctx context.Context, spec provider.ServerSpec) (provider.Server, error) {
	name, err := p.name(spec.InstanceID)
	if err != nil {
		return provider.Server{}, err
	}
	datastore := spec.Datastore
	if datastore == "" {
		datastore = spec.Agent.Datastore
	}
	port := protocol.DefaultPort(datastore)
	if port == 0 {
		return provider.Server{}, refused("no standard port for datastore %q", datastore)
	}
	if spec.Agent.InstanceID != "" && spec.Agent.InstanceID != spec.InstanceID {
		return provider.Server{}, fmt.Errorf("agent configuration is for instance %s", spec.Agent.InstanceID)
	}
	unlock, err := p.locks.lock(ctx, spec.InstanceID)
	if err != nil {
		return provider.Server{}, err
	}
	defer unlock()

	srv, err := p.findServer(ctx, name)
	if err != nil {
		return provider.Server{}, err
	}
	if srv != nil {
		return p.reuse(ctx, spec, name, port, srv)
	}

	// Everything Nova would refuse late is checked before anything is
	// created.
	if spec.Agent.Token == "" {
		return provider.Server{}, errors.New("no agent credential for a new server")
	}
	flavor, err := p.flavor(ctx, spec.FlavorID)
	if err != nil {
		return provider.Server{}, p.abandon(ctx, spec.InstanceID, name, err)
	}
	ref, err := p.imageRef(spec)
	if err != nil {
		return provider.Server{}, p.abandon(ctx, spec.InstanceID, name, err)
	}
	image, err := p.resolveImage(ctx, ref)
	if err != nil {
		return provider.Server{}, p.abandon(ctx, spec.InstanceID, name, err)
	}

	// Cinder and Neutron work side by side: the volume (about a second
	// until available) while the group and the port are made. Neither is
	// cancelled when the other fails, so that a clean-up after a refusal
	// sees everything that was created.
	var (
		vol volumes.Volume
		nic ports.Port
		g   errgroup.Group
	)
	g.Go(func() (err error) {
		vol, err = p.ensureVolume(ctx, spec, name)
		return err
	})
	g.Go(func() error {
		group, err := p.ensureSecGroup(ctx, spec.InstanceID, name, port, spec.AllowedCIDRs)
		if err == nil {
			nic, err = p.ensurePort(ctx, spec.InstanceID, name, group.ID)
		}
		return err
	})
	if err := g.Wait(); err != nil {
		return provider.Server{}, p.abandon(ctx, spec.InstanceID, name, err)
	}
	srv, err = p.boot(ctx, spec, name, port, flavor, image, vol, nic)
	if err != nil {
		if other, ferr := p.findServer(ctx, name); ferr == nil && other != nil {
			// Another process booted the instance's server first (Nova
			// refused ours because the volume was taken): that one it is.
			return p.reuse(ctx, spec, name, port, other)
		}
		return provider.Server{}, p.abandon(ctx, spec.InstanceID, name, err)
	}
	p.step(ctx, "server")
	if srv, err = p.waitBuilt(ctx, srv.ID); err != nil {
		return provider.Server{}, err
	}
	if srv.Status == "ACTIVE" {
		p.pruneStrayPorts(ctx, spec.InstanceID, name, nic.ID)
	}
	return view(srv, portIPv4(nic), port), nil
}

// reuse finishes CreateServer for an instance whose server exists.
func (p *Provider) reuse(ctx context.Context, spec provider.ServerSpec, name string, port int, srv *servers.Server) (provider.Server, error) {
	if sum := sha256.Sum256([]byte(spec.Agent.Token)); spec.Agent.Token != "" && srv.Metadata[metaTokenHash] != hex.EncodeToString(sum[:]) {
		p.logger.InfoContext(ctx, "openstack provider: server exists; its agent keeps the credential it was created with",
			"instance_id", spec.InstanceID, "server_id", srv.ID)
	}
	if _, err := p.ensureSecGroup(ctx, spec.InstanceID, name, port, spec.AllowedCIDRs); err != nil {
		return provider.Server{}, err
	}
	srv, err := p.waitBuilt(ctx, srv.ID)
	if err != nil {
		return provider.Server{}, err
	}
	if srv.Status == "ACTIVE" {
		p.pruneStrayPorts(ctx, spec.InstanceID, name, "")
	}
	addr, err := p.address(ctx, name)
	if err != nil {
		return provider.Server{}, err
	}
	return view(srv, addr, port), nil
}

// abandon handles a CreateServer step's failure. A refusal means the
// instance will not get a server: what earlier steps (or attempts) created
// is deleted again, unless a server appeared meanwhile (another process
// won a race for the volume), which is then what the instance has. Other
// errors keep everything for the retry.
func (p *Provider) abandon(ctx context.Context, instanceID, name string, cause error) error {
	if !errors.Is(cause, provider.ErrRefused) {
		return cause
	}
	if srv, err := p.findServer(ctx, name); err != nil || srv != nil {
		return cause
	}
	if err := p.deleteResources(ctx, instanceID, name); err != nil {
		return fmt.Errorf("%w (and removing what was created failed: %v)", cause, err)
	}
	p.logger.InfoContext(ctx, "openstack provider: create refused; removed what was created", "instance_id", instanceID, "err", cause)
	return cause
}

// boot asks Nova for the server: on the port, booting the image, with the
// volume in its block device mapping (attached at boot, not after), the
// tags and metadata that identify it, and cloud-init user-data that
// configures and starts the agent.
func (p *Provider) boot(ctx context.Context, spec provider.ServerSpec, name string, port int,
	flavor *flavors.Flavor, image *images.Image, vol volumes.Volume, nic ports.Port) (*servers.Server, error) {
	agent := spec.Agent
	agent.InstanceID = spec.InstanceID
	agent.Datastore = cmpOr(spec.Datastore, agent.Datastore)
	agent.DataDir = cloudinit.DataDir
	agent.ListenAddress = "0.0.0.0"
	agent.Port = port
	agent.PIDFile = cloudinit.PIDFile
	userData, err := cloudinit.Render(cloudinit.Params{Agent: agent, VolumeID: vol.ID, AgentPath: p.cfg.AgentPath})
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256([]byte(agent.Token))
	tags := []string{tagCoffer}
	if len(name) <= 60 { // Nova's limit for a tag
		tags = append(tags, name)
	}
	created, err := servers.Create(ctx, p.compute, servers.CreateOpts{
		Name:      name,
		FlavorRef: flavor.ID,
		ImageRef:  image.ID,
		// Encoded here: gophercloud sends bytes that already decode as
		// base64 unchanged, so this is exactly what Nova stores.
		UserData:         []byte(base64.StdEncoding.EncodeToString(userData)),
		Networks:         []servers.Network{{Port: nic.ID}},
		AvailabilityZone: p.cfg.AvailabilityZone,
		Tags:             tags,
		Metadata: map[string]string{
			metaInstanceID:   spec.InstanceID,
			metaInstanceName: truncate(spec.Name, 255),
			metaDatastore:    agent.Datastore,
			metaPort:         strconv.Itoa(port),
			metaTokenHash:    hex.EncodeToString(sum[:]),
		},
		BlockDevice: []servers.BlockDevice{
			{SourceType: servers.SourceImage, DestinationType: servers.DestinationLocal, UUID: image.ID, BootIndex: 0, DeleteOnTermination: true},
			{SourceType: servers.SourceVolume, DestinationType: servers.DestinationVolume, UUID: vol.ID, BootIndex: -1},
		},
	}, nil).Extract()
	if err != nil {
		return nil, fmt.Errorf("create nova server: %w", refusal("nova", err))
	}
	p.logger.InfoContext(ctx, "openstack provider: server created", "instance_id", spec.InstanceID, "server_id", created.ID,
		"flavor", flavor.ID, "image", image.ID, "volume_id", vol.ID, "port_id", nic.ID)
	return created, nil
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// findServer returns the instance's server, or nil. Should there be
// several (another process's creation racing ours), every caller picks the
// same one, the oldest; DeleteServer removes them all.
func (p *Provider) findServer(ctx context.Context, name string) (*servers.Server, error) {
	ss, err := p.findServers(ctx, name)
	if err != nil || len(ss) == 0 {
		return nil, err
	}
	if len(ss) > 1 {
		p.logger.WarnContext(ctx, "openstack provider: several servers with one instance's name; using the oldest", "name", name, "servers", len(ss))
	}
	return &ss[0], nil
}

func (p *Provider) findServers(ctx context.Context, name string) ([]servers.Server, error) {
	// Nova's name filter is a regular expression.
	pages, err := servers.List(p.compute, servers.ListOpts{Name: "^" + regexp.QuoteMeta(name) + "$"}).AllPages(ctx)
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	all, err := servers.ExtractServers(pages)
	if err != nil {
		return nil, fmt.Errorf("list servers: %w", err)
	}
	var ss []servers.Server
	for _, s := range all {
		if s.Name == name {
			ss = append(ss, s)
		}
	}
	return oldest(ss, func(s servers.Server) time.Time { return s.Created },
		func(s servers.Server) string { return s.ID }), nil
}

// waitBuilt waits until the server has left BUILD.
func (p *Provider) waitBuilt(ctx context.Context, id string) (*servers.Server, error) {
	var srv *servers.Server
	err := poll(ctx, "server "+id+" to leave BUILD", func() (bool, error) {
		s, err := servers.Get(ctx, p.compute, id).Extract()
		if err != nil {
			return false, fmt.Errorf("get server %s: %w", id, err)
		}
		srv = s
		return s.Status != "BUILD", nil
	})
	return srv, err
}

// address is where the instance's datastore is reached: its port's IPv4
// address on the management network.
func (p *Provider) address(ctx context.Context, name string) (string, error) {
	ps, err := p.findPorts(ctx, name)
	if err != nil || len(ps) == 0 {
		return "", err
	}
	return portIPv4(ps[0]), nil
}

// view is the provider's picture of a Nova server.
func view(s *servers.Server, address string, port int) provider.Server {
	out := provider.Server{ID: s.ID, Status: computeStatus(s.Status), Address: address, Port: port}
	if out.Status == provider.StatusError {
		out.Fault = s.Fault.Message
		if out.Fault == "" {
			out.Fault = "Nova reports the server in ERROR without a fault message"
		}
	}
	return out
}

// computeStatus maps Nova's server status onto the statuses the status
// model knows (internal/status): transitional states keep the names it
// understands (REBOOT, RESIZE), stopped ones read SHUTDOWN.
func computeStatus(nova string) string {
	switch nova {
	case "ACTIVE":
		return provider.StatusActive
	case "BUILD", "REBUILD":
		return provider.StatusBuild
	case "ERROR":
		return provider.StatusError
	case "SHUTOFF", "STOPPED", "SUSPENDED", "PAUSED", "SHELVED", "SHELVED_OFFLOADED", "SOFT_DELETED", "DELETED":
		return provider.StatusShutdown
	case "REBOOT", "HARD_REBOOT":
		return "REBOOT"
	case "RESIZE", "VERIFY_RESIZE", "REVERT_RESIZE", "MIGRATING":
		return "RESIZE"
	}
	return nova // UNKNOWN, RESCUE, …: the status model shows UNKNOWN
}

// GetServer reports the instance's server as Nova sees it.
func (p *Provider) GetServer(ctx context.Context, instanceID string) (provider.Server, error) {
	srv, err := p.getServer(ctx, instanceID)
	if err != nil {
		return provider.Server{}, fmt.Errorf("get server for %s: %w", instanceID, err)
	}
	return srv, nil
}

func (p *Provider) getServer(ctx context.Context, instanceID string) (provider.Server, error) {
	name, err := p.name(instanceID)
	if err != nil {
		return provider.Server{}, err
	}
	srv, err := p.findServer(ctx, name)
	if err != nil {
		return provider.Server{}, err
	}
	if srv == nil {
		return provider.Server{}, provider.ErrNotFound
	}
	if srv.Status == "ERROR" {
		// Nova's server list leaves out the fault.
		if srv, err = servers.Get(ctx, p.compute, srv.ID).Extract(); isNotFound(err) {
			return provider.Server{}, provider.ErrNotFound
		} else if err != nil {
			return provider.Server{}, fmt.Errorf("get server: %w", err)
		}
	}
	addr, err := p.address(ctx, name)
	if err != nil {
		return provider.Server{}, err
	}
	return view(srv, addr, metaPortOf(srv)), nil
}

// AgentTokenHash returns the SHA-256 of the credential the instance's
// server was created with (recorded in its metadata; the credential itself
// is only in the user-data), nil if none was recorded.
func (p *Provider) AgentTokenHash(ctx context.Context, instanceID string) ([]byte, error) {
	name, err := p.name(instanceID)
	if err != nil {
		return nil, fmt.Errorf("agent credential of %s: %w", instanceID, err)
	}
	srv, err := p.findServer(ctx, name)
	if err != nil {
		return nil, fmt.Errorf("agent credential of %s: %w", instanceID, err)
	}
	if srv == nil {
		return nil, fmt.Errorf("agent credential of %s: %w", instanceID, provider.ErrNotFound)
	}
	v, ok := srv.Metadata[metaTokenHash]
	if !ok {
		return nil, nil
	}
	sum, err := hex.DecodeString(v)
	if err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("agent credential of %s: server %s has a malformed %s", instanceID, srv.ID, metaTokenHash)
	}
	return sum, nil
}
