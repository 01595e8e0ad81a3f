package status

import (
	"testing"
	"time"
)

func TestStatus(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 10, 0, 0, 0, time.UTC)
	fresh := now.Add(-10 * time.Second)
	stale := now.Add(-2 * time.Minute)
	cases := []struct {
		name      string
		in        Instance
		status    string
		operating string
	}{
		{"building", Instance{Task: TaskBuilding, ComputeStatus: "BUILD", ServiceStatus: "new"}, "BUILD", ""},
		{"building server error", Instance{Task: TaskBuilding, ComputeStatus: "ERROR"}, "ERROR", ""},
		{"error task", Instance{Task: TaskErrorGuestTimeout, ComputeStatus: "ACTIVE", ServiceStatus: "new"}, "ERROR", ""},
		{"healthy", Instance{Task: TaskNone, ComputeStatus: "ACTIVE", ServiceStatus: "healthy", HeartbeatAt: &fresh}, "ACTIVE", "HEALTHY"},
		{"heartbeat lost", Instance{Task: TaskNone, ComputeStatus: "ACTIVE", ServiceStatus: "healthy", HeartbeatAt: &stale}, "ACTIVE", "ERROR"},
		{"never heard", Instance{Task: TaskNone, ComputeStatus: "ACTIVE", ServiceStatus: "healthy"}, "ACTIVE", "ERROR"},
		{"restart required ignores heartbeat", Instance{Task: TaskNone, ComputeStatus: "ACTIVE", ServiceStatus: "restart required", HeartbeatAt: &stale}, "ACTIVE", "RESTART_REQUIRED"},
		{"deleting", Instance{Task: TaskDeleting, ComputeStatus: "ACTIVE"}, "SHUTDOWN", ""},
		{"deleting server error", Instance{Task: TaskDeleting, ComputeStatus: "ERROR"}, "ERROR", ""},
		{"rebooting", Instance{Task: TaskRebooting, ComputeStatus: "ACTIVE"}, "REBOOT", ""},
		{"backup", Instance{Task: TaskNone, ComputeStatus: "ACTIVE", ServiceStatus: "healthy", HeartbeatAt: &fresh, BackupRunning: true}, "BACKUP", "HEALTHY"},
		{"server gone", Instance{Task: TaskNone, ComputeStatus: "", ServiceStatus: "healthy", HeartbeatAt: &fresh}, "SHUTDOWN", ""},
		{"shutdown service", Instance{Task: TaskNone, ComputeStatus: "ACTIVE", ServiceStatus: "shutdown", HeartbeatAt: &fresh}, "ACTIVE", "SHUTDOWN"},
		{"weird compute", Instance{Task: TaskNone, ComputeStatus: "MIGRATING"}, "UNKNOWN", ""},
	}
	for _, c := range cases {
		if got := Status(c.in); got != c.status {
			t.Errorf("%s: Status = %q, want %q", c.name, got, c.status)
		}
		if got := OperatingStatus(c.in, now); got != c.operating {
			t.Errorf("%s: OperatingStatus = %q, want %q", c.name, got, c.operating)
		}
	}
}
