package jobs

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// finishedAction records an action's command as the agent API would have
// once the agent answered: the command completed with res, and the
// action row the API wrote when it queued it.
func (f *fixture) finishedAction(t *testing.T, id uuid.UUID, command, action string, res protocol.Result, toFlavor string, toVolume int) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	cmdID := uuid.New()
	state := "succeeded"
	if !res.OK {
		state = "failed"
	}
	b, _ := json.Marshal(res)
	if _, err := f.pool.Exec(ctx, `INSERT INTO agent_command (id, instance_id, name, state, result, error, completed_at)
		VALUES ($1, $2, $3, $4, $5, $6, now())`, cmdID, id, command, state, b, res.Error); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, `INSERT INTO instance_action (command_id, instance_id, action, from_flavor_id, to_flavor_id, from_volume_size_gb, to_volume_size_gb)
		VALUES ($1, $2, $3, '1', $4, 1, $5)`, cmdID, id, action, toFlavor, toVolume); err != nil {
		t.Fatal(err)
	}
	return cmdID
}

func (f *fixture) complete(t *testing.T, id, cmd uuid.UUID) {
	t.Helper()
	w := &CompleteCommandWorker{deps: f.deps}
	if err := w.Work(context.Background(), job(CompleteCommand{InstanceID: id, CommandID: cmd}, 1)); err != nil {
		t.Fatal(err)
	}
}

func (f *fixture) outcome(t *testing.T, cmd uuid.UUID) string {
	t.Helper()
	var o string
	if err := f.pool.QueryRow(context.Background(), "SELECT outcome FROM instance_action WHERE command_id = $1 AND completed_at IS NOT NULL", cmd).Scan(&o); err != nil {
		t.Fatal(err)
	}
	return o
}

func TestCompleteRestart(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	id := f.newInstance(t, "REBOOTING")
	cmd := f.finishedAction(t, id, protocol.CommandRestart, ActionRestart, protocol.Result{OK: true, ServiceStatus: "healthy"}, "1", 1)
	for range 2 { // a duplicate continuation changes nothing
		f.complete(t, id, cmd)
	}
	inst := f.instance(t, id)
	if inst.Task != "NONE" || inst.ServiceStatus != "healthy" || inst.FaultAt != nil {
		t.Errorf("after restart: task %s service %s fault %v", inst.Task, inst.ServiceStatus, inst.FaultAt)
	}
	if o := f.outcome(t, cmd); o != "succeeded" {
		t.Errorf("outcome %s", o)
	}
	if ev := f.events(t, id); ev != "instance.restarted" {
		t.Errorf("events = %q", ev)
	}

	failed := f.newInstance(t, "REBOOTING")
	cmd = f.finishedAction(t, failed, protocol.CommandRestart, ActionRestart, protocol.Result{Error: "restart: pg_ctl start: exit status 1", ServiceStatus: "shutdown"}, "1", 1)
	f.complete(t, failed, cmd)
	inst = f.instance(t, failed)
	if inst.Task != "NONE" || inst.ServiceStatus != "shutdown" || inst.FaultMessage != "The datastore could not be restarted." || inst.FaultDetails != "restart: pg_ctl start: exit status 1" {
		t.Errorf("after failed restart: %+v", inst)
	}
	if ev := f.events(t, failed); ev != "instance.action_failed" {
		t.Errorf("events = %q", ev)
	}
}

func TestCompleteResize(t *testing.T) {
	t.Parallel()
	f := newFixture(t)

	// Flavor: the new flavor is the instance's once the guest is done.
	id := f.newInstance(t, "RESIZING")
	cmd := f.finishedAction(t, id, protocol.CommandResizeFlavor, ActionResizeFlavor, protocol.Result{OK: true, ServiceStatus: "healthy"}, "3", 1)
	f.complete(t, id, cmd)
	if inst := f.instance(t, id); inst.Task != "NONE" || inst.FlavorID != "3" || inst.ServiceStatus != "healthy" {
		t.Errorf("after flavor resize: task %s flavor %s service %s", inst.Task, inst.FlavorID, inst.ServiceStatus)
	}
	if ev := f.events(t, id); ev != "instance.resized" {
		t.Errorf("events = %q", ev)
	}

	// Volume.
	vol := f.newInstance(t, "RESIZING")
	cmd = f.finishedAction(t, vol, protocol.CommandResizeVolume, ActionResizeVolume, protocol.Result{OK: true, ServiceStatus: "healthy"}, "1", 4)
	f.complete(t, vol, cmd)
	if inst := f.instance(t, vol); inst.Task != "NONE" || inst.VolumeSizeGb != 4 || inst.FlavorID != "1" {
		t.Errorf("after volume resize: task %s volume %d flavor %s", inst.Task, inst.VolumeSizeGb, inst.FlavorID)
	}

	// A failed resize rolls back: old flavor, task NONE, fault recorded.
	bad := f.newInstance(t, "RESIZING")
	cmd = f.finishedAction(t, bad, protocol.CommandResizeFlavor, ActionResizeFlavor,
		protocol.Result{Error: "resize memory to 4194304 MB: ... (the previous settings are back in effect)", ServiceStatus: "healthy"}, "4", 1)
	f.complete(t, bad, cmd)
	inst := f.instance(t, bad)
	if inst.Task != "NONE" || inst.FlavorID != "1" || inst.ServiceStatus != "healthy" ||
		inst.FaultMessage != "Resizing to flavor 4 failed; the instance keeps flavor 1." || inst.FaultAt == nil {
		t.Errorf("after failed resize: %+v", inst)
	}
	if o := f.outcome(t, cmd); o != "failed" {
		t.Errorf("outcome %s", o)
	}
	if ev := f.events(t, bad); ev != "instance.action_failed" {
		t.Errorf("events = %q", ev)
	}

	// reset_status came between the agent's result and the continuation:
	// the volume did grow, so the size is recorded; the task is the
	// admin's now and stays.
	reset := f.newInstance(t, "RESIZING")
	cmd = f.finishedAction(t, reset, protocol.CommandResizeVolume, ActionResizeVolume, protocol.Result{OK: true, ServiceStatus: "healthy"}, "1", 2)
	if _, err := f.pool.Exec(context.Background(), "UPDATE instance SET task = 'NONE', service_status = 'unknown' WHERE id = $1", reset); err != nil {
		t.Fatal(err)
	}
	f.complete(t, reset, cmd)
	if inst := f.instance(t, reset); inst.Task != "NONE" || inst.ServiceStatus != "unknown" || inst.VolumeSizeGb != 2 {
		t.Errorf("after a reset race: task %s service %s volume %d", inst.Task, inst.ServiceStatus, inst.VolumeSizeGb)
	}

	// An action reset_status cancelled is not applied.
	cancelled := f.newInstance(t, "NONE")
	cmd = f.finishedAction(t, cancelled, protocol.CommandResizeVolume, ActionResizeVolume, protocol.Result{OK: true}, "1", 5)
	if _, err := f.pool.Exec(context.Background(), "UPDATE instance_action SET outcome = 'cancelled', completed_at = now() WHERE command_id = $1", cmd); err != nil {
		t.Fatal(err)
	}
	f.complete(t, cancelled, cmd)
	if inst := f.instance(t, cancelled); inst.VolumeSizeGb != 1 {
		t.Errorf("a cancelled resize was applied: volume %d", inst.VolumeSizeGb)
	}

	// A restart command without an action row (not queued by the action
	// API) has nothing to complete.
	other := f.newInstance(t, "RESTART_REQUIRED")
	orphan := uuid.New()
	if _, err := f.pool.Exec(context.Background(), `INSERT INTO agent_command (id, instance_id, name, state, result) VALUES ($1, $2, 'restart', 'succeeded', '{"ok":true}')`, orphan, other); err != nil {
		t.Fatal(err)
	}
	f.complete(t, other, orphan)
	if inst := f.instance(t, other); inst.Task != "RESTART_REQUIRED" {
		t.Errorf("orphan restart changed the task to %s", inst.Task)
	}
}

func TestActionDeadline(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()

	// The deadline's arguments are a CompleteCommand's, plus the deadline:
	// the complete_command worker decodes them, River tells them apart.
	id := f.newInstance(t, "REBOOTING")
	cmd := uuid.New()
	b, _ := json.Marshal(ActionDeadline{InstanceID: id, CommandID: cmd})
	var decoded CompleteCommand
	if err := json.Unmarshal(b, &decoded); err != nil || decoded != (CompleteCommand{InstanceID: id, CommandID: cmd}) {
		t.Fatalf("ActionDeadline decodes as %+v (%v)", decoded, err)
	}
	if (ActionDeadline{}).Kind() != (CompleteCommand{}).Kind() {
		t.Fatal("ActionDeadline is not run by the complete_command worker")
	}

	// The agent never took the restart: at the deadline the command is
	// cancelled and the action fails, task NONE.
	if _, err := f.pool.Exec(ctx, "INSERT INTO agent_command (id, instance_id, name) VALUES ($1, $2, 'restart')", cmd, id); err != nil {
		t.Fatal(err)
	}
	if _, err := f.pool.Exec(ctx, "INSERT INTO instance_action (command_id, instance_id, action) VALUES ($1, $2, 'restart')", cmd, id); err != nil {
		t.Fatal(err)
	}
	f.complete(t, id, cmd)
	inst := f.instance(t, id)
	if inst.Task != "NONE" || inst.ServiceStatus != "unknown" || inst.FaultMessage != "The datastore could not be restarted." ||
		inst.FaultDetails != "the guest agent did not answer restart within its deadline (0 attempts delivered)" {
		t.Errorf("after the deadline: %+v", inst)
	}
	var state string
	if err := f.pool.QueryRow(ctx, "SELECT state FROM agent_command WHERE id = $1", cmd).Scan(&state); err != nil || state != "cancelled" {
		t.Errorf("command state %s %v", state, err)
	}
	if o := f.outcome(t, cmd); o != "failed" {
		t.Errorf("outcome %s", o)
	}
	// An answer after the deadline is not applied (the agent API finds the
	// command cancelled); a later deadline run changes nothing.
	f.complete(t, id, cmd)
	if ev := f.events(t, id); ev != "instance.action_failed" {
		t.Errorf("events = %q", ev)
	}

	// A deadline after the answer: the action is complete, nothing to do.
	done := f.newInstance(t, "RESIZING")
	cmd = f.finishedAction(t, done, protocol.CommandResizeVolume, ActionResizeVolume, protocol.Result{OK: true, ServiceStatus: "healthy"}, "1", 2)
	f.complete(t, done, cmd) // the agent's answer
	f.complete(t, done, cmd) // the deadline
	if inst := f.instance(t, done); inst.Task != "NONE" || inst.VolumeSizeGb != 2 || inst.FaultAt != nil {
		t.Errorf("deadline after the answer: %+v", inst)
	}
}
