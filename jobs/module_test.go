package jobs

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// The guest's report of a module apply lands on the modules that command
// applied; a report of an older apply does not overwrite a newer one; a
// failed command marks its modules ERROR.
func TestCompleteModuleApply(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	w := &CompleteCommandWorker{deps: f.deps}
	id := f.newInstance(t, "NONE")
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := f.pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	mod := func(name string) uuid.UUID {
		m := uuid.New()
		exec(`INSERT INTO module (id, project_id, name, type, contents, md5) VALUES ($1, 'p', $2, 'ping', 'x', 'md5')`, m, name)
		return m
	}
	a, b := mod("a"), mod("b")
	// command runs a module_apply of mods, completed in state with output.
	command := func(state string, out *protocol.ModuleApplyResult, errText string, mods ...uuid.UUID) uuid.UUID {
		t.Helper()
		cmd := uuid.New()
		res := protocol.Result{OK: state == "succeeded", Error: errText}
		if out != nil {
			res.Output, _ = json.Marshal(out)
		}
		raw, _ := json.Marshal(res)
		exec(`INSERT INTO agent_command (id, instance_id, name, payload, state, result, error, completed_at)
			VALUES ($1, $2, 'module_apply', '{}', $3, $4, $5, now())`, cmd, id, state, raw, errText)
		for _, m := range mods {
			exec(`INSERT INTO instance_module (instance_id, module_id, md5, command_id) VALUES ($1, $2, 'md5', $3)
				ON CONFLICT (instance_id, module_id) DO UPDATE SET command_id = EXCLUDED.command_id, status = NULL, message = ''`, id, m, cmd)
		}
		return cmd
	}
	complete := func(cmd uuid.UUID) {
		t.Helper()
		if err := w.Work(ctx, job(CompleteCommand{InstanceID: id, CommandID: cmd}, 1)); err != nil {
			t.Fatal(err)
		}
	}
	status := func(m uuid.UUID) string {
		t.Helper()
		var s, msg *string
		if err := f.pool.QueryRow(ctx, `SELECT status, message FROM instance_module WHERE instance_id = $1 AND module_id = $2`, id, m).Scan(&s, &msg); err != nil {
			t.Fatal(err)
		}
		if s == nil {
			return "<nil>"
		}
		return *s + ": " + *msg
	}

	report := &protocol.ModuleApplyResult{Modules: []protocol.ModuleResult{
		{ID: a.String(), Status: "OK", Message: "Module applied"},
		{ID: b.String(), Status: "ERROR", Message: "bad contents"},
		{ID: "not-an-id", Status: "OK"},
	}}
	old := command("succeeded", report, "", a, b)
	command("succeeded", nil, "", b) // b applied again before old's report is processed
	complete(old)
	if got := status(a); got != "OK: Module applied" {
		t.Errorf("a: %s", got)
	}
	if got := status(b); got != "<nil>" {
		t.Errorf("b after the older apply's report: %s, want no report yet", got)
	}
	failed := command("failed", nil, "decode payload: boom", a, b)
	complete(failed)
	complete(failed) // a duplicate continuation changes nothing
	if got := status(a); got != "ERROR: decode payload: boom" {
		t.Errorf("a after a failed apply: %s", got)
	}
	if got := status(b); got != "ERROR: decode payload: boom" {
		t.Errorf("b after a failed apply: %s", got)
	}
}
