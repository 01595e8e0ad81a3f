// Package status is Trove's instance status model: the stored task, the
// compute (server) status and the datastore service status the agent last
// reported are combined on every read into the API's `status` and
// `operating_status` (see Trove API §5). Nothing derived is stored, so a
// read is always as fresh as its inputs.
package status

import (
	"strings"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Tasks (Trove's InstanceTasks). Error tasks carry the ErrorPrefix.
const (
	TaskNone            = "NONE"
	TaskBuilding        = "BUILDING"
	TaskDeleting        = "DELETING"
	TaskRebooting       = "REBOOTING"
	TaskResizing        = "RESIZING"
	TaskRestartRequired = "RESTART_REQUIRED"
	TaskPromoting       = "PROMOTING"
	TaskEjecting        = "EJECTING"
	TaskLogging         = "LOGGING"
	TaskDetaching       = "DETACHING"
	TaskUpdating        = "UPDATING"
	TaskUpgrading       = "UPGRADING"

	ErrorPrefix = "ERROR_"
	// TaskErrorServer: the provider could not create the server.
	TaskErrorServer = "ERROR_BUILDING_SERVER"
	// TaskErrorGuest: the guest agent reported a failed prepare.
	TaskErrorGuest = "ERROR_BUILDING_GUEST"
	// TaskErrorGuestTimeout: the guest never reported within the build timeout.
	TaskErrorGuestTimeout = "ERROR_GUEST_TIMEOUT"
)

// HeartbeatExpiry is how old a heartbeat may be before the guest is
// considered lost (Trove's agent_heartbeat_expiry).
const HeartbeatExpiry = 90 * time.Second

// Instance is what the model reads.
type Instance struct {
	Task          string
	ComputeStatus string // BUILD, ACTIVE, ERROR, SHUTDOWN (provider.Status*)
	ServiceStatus string // protocol.Service*
	HeartbeatAt   *time.Time
	BackupRunning bool
}

// IsError reports whether task is one of the error tasks.
func IsError(task string) bool { return strings.HasPrefix(task, ErrorPrefix) }

// Status returns the API status (Trove §5.2, first match wins).
func Status(in Instance) string {
	switch {
	case IsError(in.Task):
		return "ERROR"
	case in.Task == TaskBuilding:
		if in.ComputeStatus == "ERROR" {
			return "ERROR"
		}
		return "BUILD"
	}
	switch in.Task {
	case TaskRebooting:
		return "REBOOT"
	case TaskResizing:
		return "RESIZE"
	case TaskUpgrading:
		return "UPGRADE"
	case TaskRestartRequired:
		return "RESTART_REQUIRED"
	case TaskPromoting:
		return "PROMOTE"
	case TaskEjecting:
		return "EJECT"
	case TaskLogging:
		return "LOGGING"
	case TaskDetaching:
		return "DETACH"
	case TaskDeleting:
		switch in.ComputeStatus {
		case "ACTIVE", "SHUTDOWN", "DELETED":
			return "SHUTDOWN"
		}
		return "ERROR"
	}
	if in.BackupRunning {
		return "BACKUP"
	}
	switch in.ComputeStatus {
	case "BUILD", "ERROR", "REBOOT", "RESIZE", "ACTIVE", "SHUTDOWN":
		return in.ComputeStatus
	case "VERIFY_RESIZE":
		return "RESIZE"
	case "":
		return "SHUTDOWN"
	}
	return "UNKNOWN"
}

// OperatingStatus returns the API operating_status (Trove §5.3): empty while
// a task runs or the server is not ACTIVE; ERROR when the agent's last
// heartbeat is older than HeartbeatExpiry.
func OperatingStatus(in Instance, now time.Time) string {
	if in.Task != TaskNone || in.ComputeStatus != "ACTIVE" {
		return ""
	}
	service := in.ServiceStatus
	if HeartbeatStale(in, now) {
		service = protocol.ServiceGuestAgentError
	}
	return serviceAPIName(service)
}

// HeartbeatStale reports whether an idle instance's agent has gone quiet.
func HeartbeatStale(in Instance, now time.Time) bool {
	if in.Task != TaskNone || in.ServiceStatus == protocol.ServiceRestartRequired {
		return false
	}
	return in.HeartbeatAt == nil || now.Sub(*in.HeartbeatAt) > HeartbeatExpiry
}

func serviceAPIName(service string) string {
	switch service {
	case protocol.ServiceRunning:
		return "ACTIVE"
	case protocol.ServiceHealthy:
		return "HEALTHY"
	case "blocked":
		return "BLOCKED"
	case "paused", protocol.ServiceShutdown, protocol.ServiceCrashed:
		return "SHUTDOWN"
	case protocol.ServiceFailedToSpawn:
		return "FAILED"
	case protocol.ServiceBuilding, "instance ready":
		return "BUILD"
	case "promoting replica":
		return "PROMOTE"
	case "ejecting replica source":
		return "EJECT"
	case "transferring guest logs":
		return "LOGGING"
	case protocol.ServiceNew:
		return "NEW"
	case "deleted":
		return "DELETED"
	case protocol.ServiceRestartRequired:
		return "RESTART_REQUIRED"
	case protocol.ServiceRestarting:
		return "RESTARTING"
	}
	return "ERROR" // unknown, guestagent error
}
