package postgresql

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

func TestGuestLogs(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDriver(t)
	enable := protocol.GuestLogActionRequest{Name: GeneralLog, Enable: true}
	if _, err := d.GuestLogAction(ctx, enable); err == nil {
		t.Fatal("enable before Prepare succeeded")
	}
	req := prepareRequest(alicePassword)
	req.Databases, req.Users = nil, nil
	if err := d.Prepare(ctx, req); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	// A group's values (overrides.conf) do not stop the log's settings.
	if err := d.ApplyConfiguration(ctx, map[string]string{"log_statement": "ddl"}, false); err != nil {
		t.Fatal(err)
	}
	logs, err := d.GuestLogs(ctx)
	if err != nil || len(logs) != 1 || logs[0].Name != "general" || logs[0].Type != protocol.GuestLogUser || logs[0].Enabled || logs[0].Size == 0 {
		t.Fatalf("GuestLogs = %+v, %v", logs, err)
	}
	pid := postmasterPID(t, d)

	// Enable: live at once (a reload), statements land in the server log.
	l, err := d.GuestLogAction(ctx, enable)
	if err != nil || !l.Enabled || l.File != "postgres.log" {
		t.Fatalf("enable: %+v, %v", l, err)
	}
	if got := show(t, ctx, d, "log_statement", "log_min_duration_statement"); got["log_statement"] != "all" || got["log_min_duration_statement"] != "1s" {
		t.Errorf("after enable: %v", got)
	}
	conn, err := connectTCP(ctx, d, AdminUser, mustState(t, d).SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "SELECT 'guest-log-marker'"); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(filepath.Join(d.dataDir, logName))
		if strings.Contains(string(b), "statement: SELECT 'guest-log-marker'") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the statement is not in the server log")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if again, err := d.GuestLogAction(ctx, enable); err != nil || !again.Enabled || again.Size <= l.Size {
		t.Errorf("enable again: %+v (was %d bytes), %v", again, l.Size, err)
	}

	// Disable: PostgreSQL's defaults, then the group's value, are back.
	if l, err := d.GuestLogAction(ctx, protocol.GuestLogActionRequest{Name: GeneralLog, Disable: true}); err != nil || l.Enabled {
		t.Fatalf("disable: %+v, %v", l, err)
	}
	if got := show(t, ctx, d, "log_statement", "log_min_duration_statement"); got["log_statement"] != "ddl" || got["log_min_duration_statement"] != "-1" {
		t.Errorf("after disable: %v", got)
	}
	if postmasterPID(t, d) != pid {
		t.Error("enable or disable restarted the server")
	}
	// The setting is on the volume: a restart keeps it.
	if _, err := d.GuestLogAction(ctx, enable); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := show(t, ctx, d, "log_statement"); got["log_statement"] != "all" {
		t.Errorf("after a restart: %v", got)
	}

	for _, bad := range []protocol.GuestLogActionRequest{{Name: "slow_query", Enable: true}, {Name: GeneralLog, Enable: true, Disable: true}} {
		if _, err := d.GuestLogAction(ctx, bad); err == nil {
			t.Errorf("%+v succeeded", bad)
		}
	}
}
