// Package protocol is the wire contract between the control plane's agent
// API and the guest agent: paths, message bodies, the agent's configuration
// file and the datastore service statuses the agent reports.
//
// The agent pulls: it long-polls PathCommands for its next command, posts
// the outcome to PathResult, and posts a Heartbeat every interval. Every
// request carries "Authorization: Bearer <instance id>.<secret>", the
// per-instance credential the control plane minted at provision time.
package protocol

import (
	"encoding/json"
	"time"
)

// Paths of the agent API, relative to AgentConfig.APIURL.
const (
	// PathCommands: GET ?wait=<seconds> → 200 Command, or 204 when nothing
	// arrived within the wait.
	PathCommands = "/agent/v1/commands"
	// PathResult: POST Result → 204. {id} is Command.ID. Idempotent.
	PathResult = "/agent/v1/commands/{id}/result"
	// PathHeartbeat: POST Heartbeat → 204.
	PathHeartbeat = "/agent/v1/heartbeat"
)

// MaxWait bounds the long-poll wait the server grants.
const MaxWait = 60 * time.Second

// Command is one unit of work for the agent. Commands are delivered at least
// once (a command whose lease expires is delivered again), so every command
// must be executed idempotently.
type Command struct {
	ID           string          `json:"id"`
	Name         string          `json:"name"`
	Payload      json.RawMessage `json:"payload"`
	LeaseSeconds int             `json:"lease_seconds"`
	Attempt      int             `json:"attempt"`
}

// Result is the outcome of a command.
type Result struct {
	OK     bool            `json:"ok"`
	Error  string          `json:"error,omitempty"`
	Output json.RawMessage `json:"output,omitempty"`
	// ServiceStatus is the datastore status after the command.
	ServiceStatus string `json:"service_status,omitempty"`
}

// Heartbeat reports the agent is alive, the datastore's status and volume use.
type Heartbeat struct {
	ServiceStatus    string `json:"service_status"`
	VolumeUsedBytes  int64  `json:"volume_used_bytes"`
	VolumeTotalBytes int64  `json:"volume_total_bytes"`
	AgentVersion     string `json:"agent_version,omitempty"`
	// Inventory is set by drivers that manage databases and users.
	Inventory *Inventory `json:"inventory,omitempty"`
}

// Command names.
const (
	CommandPrepare = "prepare"
)

// PrepareRequest is the payload of CommandPrepare: set up the datastore on
// an empty volume, start it and create the requested databases and users.
type PrepareRequest struct {
	Datastore    string     `json:"datastore"` // manager: postgresql, mariadb, redis
	Version      string     `json:"version"`
	FlavorRAMMB  int        `json:"flavor_ram_mb"`
	VolumeSizeGB int        `json:"volume_size_gb"`
	Databases    []Database `json:"databases,omitempty"`
	Users        []User     `json:"users,omitempty"`
	// Restore, when set, builds the volume from backups instead of an
	// empty datastore; databases and users that exist are kept.
	Restore *RestoreRequest `json:"restore,omitempty"`
}

// Database to create.
type Database struct {
	Name         string `json:"name"`
	CharacterSet string `json:"character_set,omitempty"`
	Collate      string `json:"collate,omitempty"`
}

// User to create, with access to Databases.
type User struct {
	Name      string   `json:"name"`
	Password  string   `json:"password"`
	Host      string   `json:"host,omitempty"`
	Databases []string `json:"databases,omitempty"`
}

// Datastore service statuses, as Trove's guest reports them (the API maps
// them to operating_status).
const (
	ServiceNew             = "new"
	ServiceBuilding        = "building"
	ServiceHealthy         = "healthy"
	ServiceRunning         = "running"
	ServiceShutdown        = "shutdown"
	ServiceCrashed         = "crashed"
	ServiceFailedToSpawn   = "failed to spawn"
	ServiceRestartRequired = "restart required"
	ServiceRestarting      = "restarting"
	ServiceGuestAgentError = "guestagent error"
	ServiceUnknown         = "unknown"
)

// AgentConfig is the agent's configuration file (JSON), written by the
// provider onto the guest: by the local provider into the instance's
// directory, by the OpenStack provider through cloud-init. It holds the
// instance's own credential and nothing of the platform's.
type AgentConfig struct {
	// APIURL is the agent API base, e.g. https://127.0.0.1:8780.
	APIURL string `json:"api_url"`
	// CACert is the PEM of the CA that signed the agent API's certificate.
	CACert     string `json:"ca_cert"`
	InstanceID string `json:"instance_id"`
	// Token is the per-instance credential ("<instance id>.<secret>").
	Token string `json:"token"`
	// Datastore is the manager the agent drives: postgresql, mariadb, redis.
	Datastore string `json:"datastore"`
	// DataDir is the instance's volume: everything the datastore keeps.
	DataDir string `json:"data_dir"`
	// ListenAddress and Port are where the datastore serves clients.
	ListenAddress string `json:"listen_address"`
	Port          int    `json:"port"`
	// RunAsUser is the OS user the datastore runs as when the agent runs as
	// root (PostgreSQL refuses to run as root). Empty: the driver's default.
	RunAsUser string `json:"run_as_user,omitempty"`
	// HeartbeatSeconds between heartbeats (default 15).
	HeartbeatSeconds int `json:"heartbeat_seconds,omitempty"`
	// PIDFile, if set, is where the agent writes its process id.
	PIDFile string `json:"pid_file,omitempty"`
}

// DefaultPort is the standard client port of a datastore manager.
func DefaultPort(manager string) int {
	switch manager {
	case "postgresql":
		return 5432
	case "mariadb", "mysql":
		return 3306
	case "redis":
		return 6379
	}
	return 0
}
