package jobs

import (
	"context"
	"testing"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/db/store"
)

// A failed enable_root leaves no trace in the root history; a successful
// one stays.
func TestCompleteEnableRoot(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	ctx := context.Background()
	q := store.New(f.pool)
	w := &CompleteCommandWorker{deps: f.deps}
	id := f.newInstance(t, "NONE")

	enable := func(state string) uuid.UUID {
		t.Helper()
		cmd := uuid.New()
		if _, err := f.pool.Exec(ctx, `INSERT INTO agent_command (id, instance_id, name, payload, state, completed_at)
			VALUES ($1, $2, 'enable_root', '{}', $3, now())`, cmd, id, state); err != nil {
			t.Fatal(err)
		}
		if err := q.InsertRootHistory(ctx, store.InsertRootHistoryParams{InstanceID: id, EnabledBy: "alice", CommandID: cmd}); err != nil {
			t.Fatal(err)
		}
		for range 2 { // a duplicate continuation changes nothing
			if err := w.Work(ctx, job(CompleteCommand{InstanceID: id, CommandID: cmd}, 1)); err != nil {
				t.Fatal(err)
			}
		}
		return cmd
	}
	ok := enable("succeeded")
	if h, err := q.LatestRootHistory(ctx, id); err != nil || h.CommandID != ok {
		t.Fatalf("after a successful enable: %+v %v", h, err)
	}
	enable("failed")
	if h, err := q.LatestRootHistory(ctx, id); err != nil || h.CommandID != ok {
		t.Errorf("after a failed enable the latest record is %+v (%v), want the successful one", h, err)
	}
}
