// Package openstack is the provider that runs instances on OpenStack,
// through gophercloud: an instance's server is a Nova server booted from
// the datastore version's Glance image, with a Cinder volume for the
// datastore's files, a Neutron port on the management network and a
// security group of its own. The guest agent is bootstrapped by cloud-init
// user-data (deploy/cloud-init); no Nova personality files.
//
// The control plane authenticates as a service user, and every instance's
// resources live in that user's project (Trove's model: tenants never see
// or touch the servers). Each resource is named <NamePrefix><instance id>
// (default "coffer-<id>"); the volume also carries the metadata
// coffer_instance_id=<id>, the server the tags "coffer" and its name and
// metadata coffer_instance_id, coffer_instance_name, coffer_datastore,
// coffer_port and coffer_agent_token_sha256. Every step looks its resource
// up (the volume by its metadata, the others by name) before it creates
// one, so a retried or duplicated call finds what an earlier one made
// instead of making a second. Names and metadata are part of the create
// requests themselves: no resource ever exists unlabelled.
//
// CreateServer: the Cinder volume (created through Cinder, waited for
// until available) and, alongside, the security group, opening only the
// datastore's port to ServerSpec.AllowedCIDRs (nothing at all when empty;
// the agent needs no inbound access, it dials out), then the Neutron port
// on the management network in that group; then the Nova server on that
// port, booting the image with the volume in its block device mapping, so
// the server and its volume attachment come from one request and the
// guest finds its disk at boot. The volume also keeps two racing creators
// from both booting a server: Cinder reserves it for the first request,
// and Nova refuses the second.
//
// User-data cannot change once a server exists, so CreateServer for an
// instance that has a server keeps it, with the agent credential it was
// created with; the provider implements provider.CredentialKeeper so that
// the caller can keep that credential valid.
//
// # Configuration
//
// ConfigFromEnv reads:
//
//	COFFER_OS_AUTH_URL             Keystone v3 URL (required), e.g. https://keystone:5000/v3
//	COFFER_OS_USERNAME             service user (required)
//	COFFER_OS_PASSWORD             its password (required)
//	COFFER_OS_PROJECT_NAME         project the instances live in (required), e.g. service
//	COFFER_OS_USER_DOMAIN_NAME     the user's domain (default Default)
//	COFFER_OS_PROJECT_DOMAIN_NAME  the project's domain (default Default)
//	COFFER_OS_REGION               region of the endpoints (default: any)
//	COFFER_OS_INTERFACE            endpoint interface: public, internal, admin (default public)
//	COFFER_OS_CACERT               PEM file of the CA for the OpenStack APIs' TLS (default: system roots)
//	COFFER_OS_NETWORK_ID           management network the instances' ports go on (required); guests
//	                               must reach the agent API from it
//	COFFER_OS_VOLUME_TYPE          Cinder volume type of the data volumes whose instance names none
//	                               (ServerSpec.VolumeType; default: Cinder's default)
//	COFFER_OS_AVAILABILITY_ZONE    availability zone of servers and volumes (default: none)
//	COFFER_OS_IMAGES               images for datastore versions that name none, comma-separated
//	                               MANAGER[:VERSION]=IMAGE, IMAGE a Glance image id or tag:TAG (the
//	                               newest active image with that tag), e.g.
//	                               postgresql=tag:coffer-postgresql,redis:7=0b6f...
//	COFFER_OS_AGENT_PATH           the agent binary on the images (default /usr/local/bin/coffer-agent)
//	COFFER_OS_NAME_PREFIX          prefix of every resource name (default coffer-); lets two Coffer
//	                               deployments share a project
//
// The service user needs only the member role in its project. Coffer
// enforces its own per-tenant quotas; the project's OpenStack quotas must
// allow every tenant's instances together (unlimited is usual).
package openstack

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"

	cloudinit "github.com/coffer-dbaas/coffer/deploy/cloud-init"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

// Config configures the provider. ConfigFromEnv documents each field's
// variable.
type Config struct {
	AuthURL           string
	Username          string
	Password          string
	ProjectName       string
	UserDomainName    string
	ProjectDomainName string
	Region            string
	Interface         string
	CACertFile        string

	ManagementNetworkID string
	VolumeType          string
	AvailabilityZone    string
	// Images maps "manager:version" or "manager" to an image reference,
	// for datastore versions whose ServerSpec.Image is empty.
	Images    map[string]string
	AgentPath string
	// NamePrefix starts every resource's name (default "coffer-").
	NamePrefix string
}

// ConfigFromEnv reads the COFFER_OS_* variables (see the package doc).
func ConfigFromEnv() (Config, error) {
	c := Config{
		AuthURL:             os.Getenv("COFFER_OS_AUTH_URL"),
		Username:            os.Getenv("COFFER_OS_USERNAME"),
		Password:            os.Getenv("COFFER_OS_PASSWORD"),
		ProjectName:         os.Getenv("COFFER_OS_PROJECT_NAME"),
		UserDomainName:      envOr("COFFER_OS_USER_DOMAIN_NAME", "Default"),
		ProjectDomainName:   envOr("COFFER_OS_PROJECT_DOMAIN_NAME", "Default"),
		Region:              os.Getenv("COFFER_OS_REGION"),
		Interface:           envOr("COFFER_OS_INTERFACE", "public"),
		CACertFile:          os.Getenv("COFFER_OS_CACERT"),
		ManagementNetworkID: os.Getenv("COFFER_OS_NETWORK_ID"),
		VolumeType:          os.Getenv("COFFER_OS_VOLUME_TYPE"),
		AvailabilityZone:    os.Getenv("COFFER_OS_AVAILABILITY_ZONE"),
		AgentPath:           envOr("COFFER_OS_AGENT_PATH", cloudinit.DefaultAgentPath),
		NamePrefix:          envOr("COFFER_OS_NAME_PREFIX", "coffer-"),
	}
	if v := os.Getenv("COFFER_OS_IMAGES"); v != "" {
		c.Images = map[string]string{}
		for item := range strings.SplitSeq(v, ",") {
			k, img, ok := strings.Cut(strings.TrimSpace(item), "=")
			if !ok || k == "" || img == "" {
				return c, fmt.Errorf("COFFER_OS_IMAGES: %q is not MANAGER[:VERSION]=IMAGE", item)
			}
			c.Images[k] = img
		}
	}
	return c, c.validate()
}

func (c Config) validate() error {
	var missing []string
	for _, f := range []struct{ name, v string }{
		{"COFFER_OS_AUTH_URL", c.AuthURL}, {"COFFER_OS_USERNAME", c.Username},
		{"COFFER_OS_PASSWORD", c.Password}, {"COFFER_OS_PROJECT_NAME", c.ProjectName},
		{"COFFER_OS_NETWORK_ID", c.ManagementNetworkID},
	} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("openstack provider: missing %s", strings.Join(missing, ", "))
	}
	switch c.Interface {
	case "", "public", "internal", "admin":
	default:
		return fmt.Errorf("openstack provider: COFFER_OS_INTERFACE %q is not public, internal or admin", c.Interface)
	}
	if c.NamePrefix != "" && !safeName.MatchString(c.NamePrefix) {
		return fmt.Errorf("openstack provider: name prefix %q may hold only letters, digits, '-', '_' and '.'", c.NamePrefix)
	}
	return nil
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}

// Provider runs instances as Nova servers. It keeps nothing in memory that
// another process would need: every call finds the instance's resources in
// OpenStack by name. Calls for one instance are serialised within the
// process; across processes the jobs' uniqueness keeps them apart, and the
// volume reservation stops a second server (see the package doc).
type Provider struct {
	cfg       Config
	projectID string
	compute   *gophercloud.ServiceClient
	volume    *gophercloud.ServiceClient
	network   *gophercloud.ServiceClient
	image     *gophercloud.ServiceClient
	logger    *slog.Logger
	locks     keyedMutex
	// afterStep, when set (tests), runs after each step of CreateServer
	// with the step's name, to simulate a worker killed right there.
	afterStep func(ctx context.Context, step string)
}

var (
	_ provider.Provider         = (*Provider)(nil)
	_ provider.Catalog          = (*Provider)(nil)
	_ provider.Resizer          = (*Provider)(nil)
	_ provider.CredentialKeeper = (*Provider)(nil)
	_ provider.Firewall         = (*Provider)(nil)
)

// Microversions the provider speaks. Compute 2.52 is the first that takes
// server tags at creation (so a server is never untagged); volume 3.42
// extends in-use volumes. Zed (the oldest release tested) offers 2.93 and
// 3.70.
const (
	computeMicroversion = "2.52"
	volumeMicroversion  = "3.42"
)

// New authenticates and finds the endpoints. The token is renewed
// whenever it expires.
func New(ctx context.Context, cfg Config, logger *slog.Logger) (*Provider, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.AgentPath == "" {
		cfg.AgentPath = cloudinit.DefaultAgentPath
	}
	pc, err := openstack.NewClient(cfg.AuthURL)
	if err != nil {
		return nil, fmt.Errorf("openstack provider: auth URL %s: %w", cfg.AuthURL, err)
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	if cfg.CACertFile != "" {
		pem, err := os.ReadFile(cfg.CACertFile)
		if err != nil {
			return nil, fmt.Errorf("openstack provider: read CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("openstack provider: no certificate in %s", cfg.CACertFile)
		}
		transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	// No client-wide timeout: every call is bounded by its context.
	pc.HTTPClient = http.Client{Transport: transport}
	err = openstack.Authenticate(ctx, pc, gophercloud.AuthOptions{
		IdentityEndpoint: cfg.AuthURL,
		Username:         cfg.Username,
		Password:         cfg.Password,
		DomainName:       cfg.UserDomainName,
		Scope:            &gophercloud.AuthScope{ProjectName: cfg.ProjectName, DomainName: cfg.ProjectDomainName},
		AllowReauth:      true,
	})
	if err != nil {
		return nil, fmt.Errorf("openstack provider: authenticate %s in project %s: %w", cfg.Username, cfg.ProjectName, err)
	}
	project, err := authProject(pc)
	if err != nil {
		return nil, fmt.Errorf("openstack provider: %w", err)
	}

	eo := gophercloud.EndpointOpts{Region: cfg.Region, Availability: gophercloud.Availability(cfg.Interface)}
	p := &Provider{cfg: cfg, projectID: project, logger: logger}
	if p.compute, err = openstack.NewComputeV2(pc, eo); err != nil {
		return nil, fmt.Errorf("openstack provider: compute endpoint: %w", err)
	}
	if p.volume, err = openstack.NewBlockStorageV3(pc, eo); err != nil {
		return nil, fmt.Errorf("openstack provider: block-storage endpoint: %w", err)
	}
	if p.network, err = openstack.NewNetworkV2(pc, eo); err != nil {
		return nil, fmt.Errorf("openstack provider: network endpoint: %w", err)
	}
	if p.image, err = openstack.NewImageV2(pc, eo); err != nil {
		return nil, fmt.Errorf("openstack provider: image endpoint: %w", err)
	}
	p.compute.Microversion = computeMicroversion
	p.volume.Microversion = volumeMicroversion

	// Fail at start-up, not at the first instance, when the network is
	// wrong or invisible to the service user.
	if _, err := p.managementSubnets(ctx); err != nil {
		return nil, fmt.Errorf("openstack provider: %w", err)
	}
	return p, nil
}

// authProject is the id of the project the token is scoped to: where the
// provider's resources live.
func authProject(pc *gophercloud.ProviderClient) (string, error) {
	res, ok := pc.GetAuthResult().(tokens.CreateResult)
	if !ok {
		return "", errors.New("authentication did not return a v3 token")
	}
	project, err := res.ExtractProject()
	if err != nil || project == nil || project.ID == "" {
		return "", fmt.Errorf("token has no project scope: %v", err)
	}
	return project.ID, nil
}

// Name is "openstack".
func (p *Provider) Name() string { return "openstack" }

// ProjectID is the project the instances' resources live in.
func (p *Provider) ProjectID() string { return p.projectID }

// step calls the test hook.
func (p *Provider) step(ctx context.Context, name string) {
	if p.afterStep != nil {
		p.afterStep(ctx, name)
	}
}

// pollInterval paces waits on OpenStack's asynchronous state changes:
// quick at first (a volume is available in about a second), then twice a
// second per waiting call, which bounds both the added latency and the
// load many waiting calls put on the APIs.
func pollInterval(attempt int) time.Duration {
	d := 100 * time.Millisecond * time.Duration(attempt+1)
	return min(d, 500*time.Millisecond)
}

// poll calls check until it reports done or fails, or ctx ends.
func poll(ctx context.Context, what string, check func() (bool, error)) error {
	for attempt := 0; ; attempt++ {
		done, err := check()
		if err != nil || done {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", what, context.Cause(ctx))
		case <-time.After(pollInterval(attempt)):
		}
	}
}
