package jobs

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// finishedApply records an apply_configuration command as the agent API
// would once the agent answered, with the configuration_apply row the API
// wrote when it queued it; at orders commands.
func (f *fixture) finishedApply(t *testing.T, id uuid.UUID, restart bool, res protocol.Result, at time.Time) uuid.UUID {
	t.Helper()
	cmd := f.command(t, id, protocol.CommandApplyConfiguration, res, at)
	if _, err := f.pool.Exec(context.Background(), `INSERT INTO configuration_apply (command_id, instance_id, restart) VALUES ($1, $2, $3)`,
		cmd, id, restart); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func (f *fixture) command(t *testing.T, id uuid.UUID, name string, res protocol.Result, at time.Time) uuid.UUID {
	t.Helper()
	cmd := uuid.New()
	state := "succeeded"
	if !res.OK {
		state = "failed"
	}
	b, _ := json.Marshal(res)
	if _, err := f.pool.Exec(context.Background(), `INSERT INTO agent_command (id, instance_id, name, state, result, error, created_at, completed_at)
		VALUES ($1, $2, $3, $4, $5, $6, $7, now())`, cmd, id, name, state, b, res.Error, at); err != nil {
		t.Fatal(err)
	}
	return cmd
}

func (f *fixture) completeCommand(t *testing.T, id, cmd uuid.UUID) {
	t.Helper()
	w := &CompleteCommandWorker{deps: f.deps}
	if err := w.Work(context.Background(), job(CompleteCommand{InstanceID: id, CommandID: cmd}, 1)); err != nil {
		t.Fatal(err)
	}
}

func TestCompleteApplyConfiguration(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	now := time.Now()
	ok := protocol.Result{OK: true, ServiceStatus: "healthy"}

	// Applied live: nothing changes.
	live := f.newInstance(t, "NONE")
	f.completeCommand(t, live, f.finishedApply(t, live, false, ok, now))
	if inst := f.instance(t, live); inst.Task != "NONE" || inst.FaultAt != nil {
		t.Errorf("live apply: task %s fault %v", inst.Task, inst.FaultAt)
	}
	if ev := f.events(t, live); ev != EventConfigurationApplied {
		t.Errorf("events %q", ev)
	}

	// Needs a restart: RESTART_REQUIRED once the agent confirms; a repeated
	// continuation changes nothing.
	pending := f.newInstance(t, "NONE")
	cmd := f.finishedApply(t, pending, true, ok, now)
	for range 2 {
		f.completeCommand(t, pending, cmd)
	}
	if inst := f.instance(t, pending); inst.Task != "RESTART_REQUIRED" || inst.ServiceStatus != protocol.ServiceRestartRequired {
		t.Errorf("restart-required apply: task %s service %s", inst.Task, inst.ServiceStatus)
	}

	// A restart queued after the apply supersedes it, whatever order the
	// completions run in; so does a later apply.
	for _, later := range []string{protocol.CommandRestart, protocol.CommandApplyConfiguration} {
		id := f.newInstance(t, "NONE")
		cmd := f.finishedApply(t, id, true, ok, now)
		f.command(t, id, later, ok, now.Add(time.Second))
		f.completeCommand(t, id, cmd)
		if inst := f.instance(t, id); inst.Task != "NONE" {
			t.Errorf("apply superseded by %s: task %s", later, inst.Task)
		}
	}
	// An instance busy with another task keeps it.
	busy := f.newInstance(t, "REBOOTING")
	f.completeCommand(t, busy, f.finishedApply(t, busy, true, ok, now))
	if inst := f.instance(t, busy); inst.Task != "REBOOTING" {
		t.Errorf("busy instance: task %s", inst.Task)
	}

	// Refused by the guest: a fault, the task untouched; the next
	// successful apply clears that fault.
	failing := f.newInstance(t, "NONE")
	msg := `apply configuration: PostgreSQL refuses the configuration: invalid value for parameter "work_mem": "lots"`
	f.completeCommand(t, failing, f.finishedApply(t, failing, false, protocol.Result{Error: msg, ServiceStatus: "healthy"}, now))
	inst := f.instance(t, failing)
	if inst.Task != "NONE" || !strings.HasPrefix(inst.FaultMessage, ConfigurationFaultPrefix) || !strings.Contains(inst.FaultMessage, "work_mem") ||
		inst.FaultDetails != msg || inst.FaultAt == nil {
		t.Errorf("failed apply: %+v", inst)
	}
	if ev := f.events(t, failing); ev != EventConfigurationApplyFailed {
		t.Errorf("events %q", ev)
	}
	f.completeCommand(t, failing, f.finishedApply(t, failing, false, ok, now.Add(time.Second)))
	if inst := f.instance(t, failing); inst.FaultAt != nil || inst.FaultMessage != "" {
		t.Errorf("fault kept after a successful apply: %+v", inst)
	}
}
