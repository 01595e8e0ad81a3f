// Package provider is the compute abstraction the lifecycle jobs use: a
// provider creates the server (VM, or on one machine a directory and
// processes) that hosts one instance's datastore and guest agent, reports
// its state and deletes it. Implementations: local (this machine) and,
// later, openstack (Nova, Cinder, Neutron through gophercloud).
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
