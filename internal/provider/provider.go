// Package provider is the compute abstraction the lifecycle jobs use: a
// provider creates the server (VM, or on one machine a directory and
// processes) that hosts one instance's datastore and guest agent, reports
// its state and deletes it. Implementations: local (this machine) and
// openstack (Nova, Cinder, Neutron through gophercloud).
//
// Every method is idempotent and keyed by the Coffer instance id, so a job
// retried after a crash at any point neither duplicates nor leaks resources.
package provider

import (
	"context"
	"errors"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// ErrNotFound is returned by GetServer when the instance has no server.
var ErrNotFound = errors.New("server not found")

// Server statuses, as Nova names them.
const (
	StatusBuild    = "BUILD"
	StatusActive   = "ACTIVE"
	StatusError    = "ERROR"
	StatusShutdown = "SHUTDOWN"
)

// ServerSpec describes the server for one instance.
type ServerSpec struct {
	InstanceID   string
	Name         string
	FlavorID     string
	RAMMB        int
	VCPUs        int
	VolumeSizeGB int
	Datastore    string // manager: postgresql, mariadb, redis
	Version      string
	Image        string
	// VolumeType is the block-storage type the instance asked for (one
	// of the provider's Catalog); empty: the provider's default.
	VolumeType string
	// AllowedCIDRs are the networks that may reach the datastore's port
	// (the instance's access.allowed_cidrs). Empty: nobody from outside;
	// the agent needs no inbound access (it dials out to the control
	// plane). Providers without a network firewall (local) ignore it.
	AllowedCIDRs []string
	// Agent is the agent's configuration; the provider fills in where the
	// datastore listens (ListenAddress, Port) and DataDir before handing it
	// to the guest.
	Agent protocol.AgentConfig
}

// Server is a provider's view of an instance's server.
type Server struct {
	ID      string
	Status  string // StatusBuild, StatusActive, StatusError, StatusShutdown
	Address string // where clients reach the datastore
	Port    int
	Fault   string // why Status is StatusError
}

// Provider creates, inspects and deletes servers.
type Provider interface {
	Name() string
	// CreateServer makes sure the instance's server exists and its agent
	// runs with spec.Agent (a newer credential replaces an older one).
	CreateServer(ctx context.Context, spec ServerSpec) (Server, error)
	// GetServer returns ErrNotFound when the instance has no server.
	GetServer(ctx context.Context, instanceID string) (Server, error)
	// DeleteServer removes everything the instance's server owns; deleting
	// what does not exist succeeds.
	DeleteServer(ctx context.Context, instanceID string) error
}

// ErrRefused marks a CreateServer (or resize) error the cloud gave for a
// reason a retry does not fix: an unknown flavor or image, a quota, a
// request the cloud rejects as invalid. The error's text carries the
// cloud's own message. Whatever the call had created for the instance has
// been removed again. The caller should fail the operation at once instead
// of retrying.
var ErrRefused = errors.New("refused by the cloud")

// Flavor is a compute flavor as a provider's catalog reports it.
type Flavor struct {
	ID          string
	Name        string
	RAMMB       int
	VCPUs       int
	DiskGB      int
	EphemeralGB int
}

// VolumeType is a block-storage volume type.
type VolumeType struct {
	ID          string
	Name        string
	Description string
	IsPublic    bool
}

// Catalog is implemented by providers whose cloud defines the flavors and
// volume types (OpenStack: Nova and Cinder), so that the catalog shows
// what can really be booted.
type Catalog interface {
	ListFlavors(ctx context.Context) ([]Flavor, error)
	ListVolumeTypes(ctx context.Context) ([]VolumeType, error)
}

// ImageChecker is implemented by providers that boot datastore versions
// from images of their cloud (OpenStack: Glance), so that the API refuses
// a create whose version's image is missing (4xx, nothing created)
// instead of failing the build.
type ImageChecker interface {
	// CheckImage reports, as an ErrRefused error with the reason, that the
	// image a server of the datastore version would boot (image, the
	// version's own reference, else the provider's configured one) is not
	// usable; nil when it is. Other errors: the cloud could not be asked.
	CheckImage(ctx context.Context, datastore, version, image string) error
}

// Resizer is implemented by providers that can resize an instance's
// server and volume in place. Both are idempotent: calling again after a
// crash finishes the operation.
type Resizer interface {
	// ResizeServer moves the server to flavorID and returns it. A resize
	// the cloud cannot complete is reverted and reported as an error.
	ResizeServer(ctx context.Context, instanceID, flavorID string) (Server, error)
	// ExtendVolume grows the instance's volume to sizeGB (never shrinks);
	// the agent then grows the filesystem.
	ExtendVolume(ctx context.Context, instanceID string, sizeGB int) error
}

// CredentialKeeper is implemented by providers that hand the agent its
// configuration once, when the server is created (OpenStack: cloud-init
// user-data, which Nova cannot change afterwards). For them, CreateServer
// on an instance whose server already exists keeps that server, whose
// agent keeps the credential it was created with, not spec.Agent.Token.
//
// AgentTokenHash returns the SHA-256 of that credential (what auth.Hash
// stores), nil if the server carries none, or ErrNotFound. A caller that
// rotated the credential before CreateServer stores this hash back when it
// differs from its own, so the agent that runs stays authorised.
type CredentialKeeper interface {
	AgentTokenHash(ctx context.Context, instanceID string) ([]byte, error)
}

// Firewall is implemented by providers that filter who reaches an
// instance's datastore, so that a change of the instance's
// access.allowed_cidrs applies to a server that exists.
type Firewall interface {
	// SetAllowedCIDRs makes cidrs (CIDRs or bare addresses) exactly the
	// networks that reach the datastore's port; empty closes it. It
	// returns ErrNotFound when the instance has no server.
	SetAllowedCIDRs(ctx context.Context, instanceID string, cidrs []string) error
}
