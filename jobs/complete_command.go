package jobs

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/db/store"
)

// CompleteCommand is the continuation of an agent command that has a
// completer (restart, resize, configuration, ...): enqueued by the agent
// API in the transaction that records the result, it runs the command's
// completer, which records the outcome on the instance.
type CompleteCommand struct {
	InstanceID uuid.UUID `json:"instance_id"`
	CommandID  uuid.UUID `json:"command_id"`
}

func (CompleteCommand) Kind() string { return "complete_command" }

func (CompleteCommand) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 10, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

// Completer records a finished command's outcome, in the transaction tx
// that holds the instance row locked. cmd.State is "succeeded" or "failed"
// (cmd.Error says why).
type Completer func(ctx context.Context, tx pgx.Tx, q *store.Queries, inst store.Instance, cmd store.AgentCommand) error

var (
	completersMu sync.RWMutex
	completers   = map[string]Completer{}
)

// RegisterCompleter sets the completer of a command name (from init()).
func RegisterCompleter(command string, c Completer) {
	completersMu.Lock()
	defer completersMu.Unlock()
	completers[command] = c
}

// HasCompleter reports whether a command has a continuation.
func HasCompleter(command string) bool {
	completersMu.RLock()
	defer completersMu.RUnlock()
	_, ok := completers[command]
	return ok
}

type CompleteCommandWorker struct {
	river.WorkerDefaults[CompleteCommand]
	deps *Deps
}

func (w *CompleteCommandWorker) Timeout(*river.Job[CompleteCommand]) time.Duration {
	return 30 * time.Second
}

func (w *CompleteCommandWorker) Work(ctx context.Context, job *river.Job[CompleteCommand]) error {
	a := job.Args
	return w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		inst, err := q.LockInstance(ctx, a.InstanceID)
		if errors.Is(err, pgx.ErrNoRows) {
			return river.JobCancel(fmt.Errorf("complete command %s: instance %s does not exist", a.CommandID, a.InstanceID))
		}
		if err != nil {
			return fmt.Errorf("complete command %s: %w", a.CommandID, err)
		}
		if inst.DeletedAt != nil {
			return nil
		}
		cmd, err := q.GetAgentCommand(ctx, store.GetAgentCommandParams{ID: a.CommandID, InstanceID: a.InstanceID})
		if err != nil {
			return fmt.Errorf("complete command %s: load: %w", a.CommandID, err)
		}
		completersMu.RLock()
		c := completers[cmd.Name]
		completersMu.RUnlock()
		if c == nil {
			return river.JobCancel(fmt.Errorf("complete command %s: no completer for %s", a.CommandID, cmd.Name))
		}
		return c(WithDeps(ctx, w.deps), tx, q, inst, cmd)
	})
}
