package jobs

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

// heldRebuild records what the API writes for a rebuild: the instance
// BUILDING, the agent's command held, the action with its image.
func (f *fixture) heldRebuild(t *testing.T, id uuid.UUID, image string) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	cmd := uuid.New()
	for _, sql := range []string{
		`INSERT INTO agent_command (id, instance_id, name, payload, state, leased_until) VALUES ($1, $2, 'rebuild', '{}', 'leased', '3000-01-01')`,
		`INSERT INTO instance_action (command_id, instance_id, action, from_flavor_id, to_flavor_id, from_volume_size_gb, to_volume_size_gb, image_id)
			VALUES ($1, $2, 'rebuild', '1', '1', 1, 1, $3)`,
		`UPDATE instance SET task = 'REBUILDING', compute_status = 'BUILD' WHERE id = $2 AND $1::uuid IS NOT NULL`,
	} {
		args := []any{cmd, id}
		if strings.Contains(sql, "$3") {
			args = append(args, image)
		}
		if _, err := f.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	return cmd
}

func (f *fixture) commandState(t *testing.T, cmd uuid.UUID) string {
	t.Helper()
	var state string
	var attempts int
	if err := f.pool.QueryRow(context.Background(), "SELECT state, attempts FROM agent_command WHERE id = $1", cmd).Scan(&state, &attempts); err != nil {
		t.Fatal(err)
	}
	if state == "leased" && attempts == 0 {
		return "held"
	}
	return state
}

func TestRebuildInstance(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id := f.newInstance(t, "NONE")
	if _, err := f.deps.Provider.CreateServer(ctx, provider.ServerSpec{InstanceID: id.String(), Datastore: "postgresql",
		Agent: protocol.AgentConfig{APIURL: "https://127.0.0.1:1", Token: id.String() + ".t"}}); err != nil {
		t.Fatal(err)
	}
	before := agentPID(t, f.root, id)
	cmd := f.heldRebuild(t, id, "img-9")

	w := &RebuildInstanceWorker{deps: f.deps}
	for range 2 { // a retried job finds the command released and does nothing
		if err := w.Work(ctx, job(RebuildInstance{InstanceID: id, CommandID: cmd}, 1)); err != nil {
			t.Fatal(err)
		}
	}
	if s := f.commandState(t, cmd); s != "pending" {
		t.Errorf("command after the provider's rebuild: %s, want released (pending)", s)
	}
	after := agentPID(t, f.root, id)
	if after == before || alive(before) || !alive(after) {
		t.Errorf("agent %d → %d (old alive %v, new alive %v)", before, after, alive(before), alive(after))
	}
	if b, _ := os.ReadFile(filepath.Join(f.root, id.String(), "image")); strings.TrimSpace(string(b)) != "img-9" {
		t.Errorf("recorded image %q", b)
	}
	if i := f.instance(t, id); i.Task != "REBUILDING" || i.ComputeStatus != "BUILD" {
		t.Errorf("before the agent answered: task %s, compute %s", i.Task, i.ComputeStatus)
	}

	// The rebuilt server's agent answers: the action ends.
	res, _ := json.Marshal(protocol.Result{OK: true, ServiceStatus: "healthy"})
	f.pool.Exec(ctx, `UPDATE agent_command SET state = 'succeeded', result = $2, completed_at = now() WHERE id = $1`, cmd, res)
	f.complete(t, id, cmd)
	if i := f.instance(t, id); i.Task != "NONE" || i.ServiceStatus != "healthy" || i.ComputeStatus != "ACTIVE" {
		t.Errorf("after the rebuild: task %s, service %s, compute %s", i.Task, i.ServiceStatus, i.ComputeStatus)
	}
	if o := f.outcome(t, cmd); o != "succeeded" {
		t.Errorf("outcome %s", o)
	}
	if ev := f.events(t, id); ev != "instance.rebuilt" {
		t.Errorf("events %s", ev)
	}
}

// plainProvider hides the local provider's Rebuilder.
type plainProvider struct{ provider.Provider }

func TestRebuildWithoutRebuilder(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id := f.newInstance(t, "NONE")
	cmd := f.heldRebuild(t, id, "img-1")
	deps := &Deps{Pool: f.pool, Provider: plainProvider{f.deps.Provider}, Logger: f.deps.Logger}
	w := &RebuildInstanceWorker{deps: deps}
	if err := w.Work(ctx, job(RebuildInstance{InstanceID: id, CommandID: cmd}, 1)); err == nil || !strings.Contains(err.Error(), "cannot rebuild") {
		t.Fatalf("Work = %v, want the job cancelled because the provider cannot rebuild", err)
	}
	i := f.instance(t, id)
	if i.Task != "NONE" || !strings.Contains(i.FaultMessage, "Rebuilding the server from image img-1 failed") || !strings.Contains(i.FaultDetails, "cannot rebuild") {
		t.Errorf("after a rebuild the provider cannot do: task %s, fault %q / %q", i.Task, i.FaultMessage, i.FaultDetails)
	}
	// The server's status is the provider's again (this one has none).
	if i.ComputeStatus != "SHUTDOWN" {
		t.Errorf("compute status after the failed rebuild: %s", i.ComputeStatus)
	}
	if s := f.commandState(t, cmd); s != "cancelled" {
		t.Errorf("command %s, want cancelled", s)
	}
	if o := f.outcome(t, cmd); o != "failed" {
		t.Errorf("outcome %s", o)
	}
}

func TestCompleteStop(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id := f.newInstance(t, "NONE")
	cmd := uuid.New()
	res, _ := json.Marshal(protocol.Result{OK: true, ServiceStatus: "shutdown"})
	if _, err := f.pool.Exec(ctx, `INSERT INTO agent_command (id, instance_id, name, state, result, completed_at)
		VALUES ($1, $2, 'stop_datastore', 'succeeded', $3, now())`, cmd, id, res); err != nil {
		t.Fatal(err)
	}
	f.complete(t, id, cmd)
	if i := f.instance(t, id); i.Task != "NONE" || i.ServiceStatus != "shutdown" {
		t.Errorf("after stop: task %s, service %s", i.Task, i.ServiceStatus)
	}
	if ev := f.events(t, id); ev != "instance.stopped" {
		t.Errorf("events %s", ev)
	}
}

func TestFailInstanceBackups(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	id, other := f.newInstance(t, "NONE"), f.newInstance(t, "NONE")
	backup := func(instance uuid.UUID, status string) uuid.UUID {
		b := uuid.New()
		if _, err := f.pool.Exec(ctx, `INSERT INTO backup (id, project_id, instance_id, datastore_version_id, name, status, location, prefix, key_id, wrapped_key, segment_size)
			SELECT $1, 'p1', $2, datastore_version_id, 'b', $3, 'file', 'x/', gen_random_uuid(), '\x00', 1 FROM instance WHERE id = $2`, b, instance, status); err != nil {
			t.Fatal(err)
		}
		return b
	}
	running, done, others := backup(id, "BUILDING"), backup(id, "COMPLETED"), backup(other, "NEW")
	w := &FailInstanceBackupsWorker{deps: f.deps}
	if err := w.Work(ctx, job(FailInstanceBackups{InstanceID: id, Reason: "reset"}, 1)); err != nil {
		t.Fatal(err)
	}
	for b, want := range map[uuid.UUID]string{running: "FAILED", done: "COMPLETED", others: "NEW"} {
		var got, reason string
		if err := f.pool.QueryRow(ctx, "SELECT status, fail_reason FROM backup WHERE id = $1", b).Scan(&got, &reason); err != nil {
			t.Fatal(err)
		}
		if got != want || (want == "FAILED" && reason != "reset") {
			t.Errorf("backup %s: %s (%q), want %s", b, got, reason, want)
		}
	}
}
