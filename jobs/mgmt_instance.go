package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

// The workers' side of Trove's management instance actions
// (functions/mgmt_instances.go):
//
//   - reboot is a restart (instance_actions.go): the agent restarts the
//     datastore, the instance shows REBOOT meanwhile.
//   - stop queues protocol.CommandStopDatastore; its completer records the
//     datastore's status (shutdown) and an event. No task: the instance
//     stays ACTIVE with operating_status SHUTDOWN until a restart.
//   - rebuild is an instance action in two halves, like a resize: the API
//     records the action and queues the agent's CommandRebuild held, with
//     RebuildInstance; the job has the provider rebuild the server
//     (provider.Rebuilder) and releases the command, which the agent of
//     the rebuilt server answers once the datastore serves again from the
//     volume; completeRebuild ends the action. Meanwhile the task is
//     TaskRebuilding and the server's status BUILD, which Trove's status
//     model shows as BUILD (Trove's rebuild shows BUILD too). Not the task
//     BUILDING: the build watchdog fails instances BUILDING longer than the
//     build timeout after their creation, which an instance rebuilt at an
//     age over the timeout always is; and the compute refresh, which
//     watches BUILDING instances, would read the server between the
//     provider's stop and start.
//   - reset-task-status sets the task to NONE and inserts
//     FailInstanceBackups, which fails the instance's running backups as
//     Trove does.

// TaskRebuilding is the task of a rebuild (see above).
const TaskRebuilding = "REBUILDING"

// Event kinds of the management actions.
const (
	EventInstanceStopped    = "instance.stopped"
	EventInstanceRebuilding = "instance.rebuilding"
	EventInstanceRebuilt    = "instance.rebuilt"
	EventInstanceTaskReset  = "instance.task_reset"
)

func init() {
	RegisterCompleter(protocol.CommandRebuild, completeRebuild)
	RegisterCompleter(protocol.CommandStopDatastore, completeStop)
}

// registerMgmtWorkers adds the management actions' workers.
func registerMgmtWorkers(workers *river.Workers, deps *Deps) {
	river.AddWorker(workers, &RebuildInstanceWorker{deps: deps})
	river.AddWorker(workers, &FailInstanceBackupsWorker{deps: deps})
}

// completeStop records the datastore status the agent reported after a
// stop, and the outcome as an event. A task that started meanwhile keeps
// the instance (its own completer records the status it ends with).
func completeStop(ctx context.Context, tx pgx.Tx, q *store.Queries, inst store.Instance, cmd store.AgentCommand) error {
	var res protocol.Result
	if len(cmd.Result) > 0 {
		_ = json.Unmarshal(cmd.Result, &res)
	}
	if res.ServiceStatus != "" && inst.Task == "NONE" {
		if err := q.StartInstanceTask(ctx, store.StartInstanceTaskParams{ID: inst.ID, Task: inst.Task, ServiceStatus: res.ServiceStatus}); err != nil {
			return fmt.Errorf("complete stop of %s: %w", inst.ID, err)
		}
	}
	if cmd.State != "succeeded" {
		return InsertEvent(ctx, q, inst.ProjectID, EventInstanceActionFailed, inst.ID, map[string]string{"action": "stop", "error": cmd.Error})
	}
	return InsertEvent(ctx, q, inst.ProjectID, EventInstanceStopped, inst.ID, nil)
}

// completeRebuild ends a rebuild as any action ends
// (completeInstanceAction), and the server's BUILD with it: the agent
// answered (or its deadline passed), so the rebuilt server runs; were it
// otherwise, the compute refresh, which watches the idle instance again,
// shows it within a minute.
func completeRebuild(ctx context.Context, tx pgx.Tx, q *store.Queries, inst store.Instance, cmd store.AgentCommand) error {
	if err := completeInstanceAction(ctx, tx, q, inst, cmd); err != nil {
		return err
	}
	if inst.ComputeStatus != provider.StatusBuild {
		return nil
	}
	if err := q.SetInstanceComputeStatus(ctx, store.SetInstanceComputeStatusParams{ID: inst.ID, ComputeStatus: provider.StatusActive}); err != nil {
		return fmt.Errorf("complete rebuild of %s: %w", inst.ID, err)
	}
	return nil
}

// RebuildInstance is the provider's half of a rebuild; see above.
type RebuildInstance struct {
	InstanceID uuid.UUID `json:"instance_id"`
	CommandID  uuid.UUID `json:"command_id"`
}

func (RebuildInstance) Kind() string { return "rebuild_instance" }

func (RebuildInstance) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 3, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type RebuildInstanceWorker struct {
	river.WorkerDefaults[RebuildInstance]
	deps *Deps
}

// Timeout leaves a cloud's rebuild (a new root disk from the image, a
// boot) some minutes; the local provider takes seconds.
func (w *RebuildInstanceWorker) Timeout(*river.Job[RebuildInstance]) time.Duration {
	return 10 * time.Minute
}

func (w *RebuildInstanceWorker) NextRetry(job *river.Job[RebuildInstance]) time.Time {
	return time.Now().Add(time.Duration(job.Attempt) * 15 * time.Second)
}

func (w *RebuildInstanceWorker) Work(ctx context.Context, job *river.Job[RebuildInstance]) error {
	a := job.Args
	q := store.New(w.deps.Pool)
	action, err := loadAction(ctx, q, "rebuild", a.InstanceID, a.CommandID)
	if err != nil {
		return err
	}
	if action.Action != ActionRebuild {
		return river.JobCancel(fmt.Errorf("rebuild %s: command %s is a %s", a.InstanceID, a.CommandID, action.Action))
	}
	// The resize job's bookkeeping fits a rebuild as it is: a held
	// command, released or failed as one.
	rw := &ResizeInstanceWorker{deps: w.deps}
	if open, err := rw.held(ctx, q, action); err != nil || !open {
		return err
	}
	r, ok := w.deps.Provider.(provider.Rebuilder)
	if !ok {
		return w.fail(ctx, rw, action, fmt.Errorf("the %s provider cannot rebuild servers", w.deps.Provider.Name()))
	}
	if _, err := r.RebuildServer(ctx, a.InstanceID.String(), action.ImageID); err != nil {
		err = fmt.Errorf("rebuild %s: %w", a.InstanceID, err)
		if errors.Is(err, provider.ErrRefused) || errors.Is(err, provider.ErrNotFound) || job.Attempt >= job.MaxAttempts {
			return w.fail(ctx, rw, action, err)
		}
		return err
	}
	// The server stays BUILD until its agent answered (completeRebuild).
	if err := rw.release(ctx, action, nil); err != nil {
		return fmt.Errorf("rebuild %s: hand the command to the agent: %w", a.InstanceID, err)
	}
	return nil
}

// fail ends a rebuild the provider could not do, as the resize job ends a
// failed resize, and puts back the server status the provider reports
// (the rebuild showed BUILD).
func (w *RebuildInstanceWorker) fail(ctx context.Context, rw *ResizeInstanceWorker, action store.InstanceAction, cause error) error {
	err := rw.fail(ctx, action, cause)
	status := provider.StatusActive
	if srv, gerr := w.deps.Provider.GetServer(ctx, action.InstanceID.String()); gerr == nil {
		status = srv.Status
	} else if errors.Is(gerr, provider.ErrNotFound) {
		status = provider.StatusShutdown
	}
	if serr := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		inst, err := q.LockInstance(ctx, action.InstanceID)
		if err != nil || inst.ComputeStatus != provider.StatusBuild || inst.Task == TaskRebuilding {
			return err
		}
		return q.SetInstanceComputeStatus(ctx, store.SetInstanceComputeStatusParams{ID: inst.ID, ComputeStatus: status})
	}); serr != nil {
		w.deps.Logger.WarnContext(ctx, "rebuild failed; restoring the server status failed too", "instance_id", action.InstanceID, "err", serr)
	}
	return err
}

// FailInstanceBackups fails an instance's running backups (Trove's mgmt
// reset-task-status does so: a reset instance has no work in flight).
type FailInstanceBackups struct {
	InstanceID uuid.UUID `json:"instance_id"`
	Reason     string    `json:"reason"`
}

func (FailInstanceBackups) Kind() string { return "fail_instance_backups" }

func (FailInstanceBackups) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 10}
}

type FailInstanceBackupsWorker struct {
	river.WorkerDefaults[FailInstanceBackups]
	deps *Deps
}

func (w *FailInstanceBackupsWorker) Work(ctx context.Context, job *river.Job[FailInstanceBackups]) error {
	return w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		if _, err := q.LockInstance(ctx, job.Args.InstanceID); err != nil {
			return fmt.Errorf("fail backups of %s: %w", job.Args.InstanceID, err)
		}
		running, err := q.ListRunningInstanceBackups(ctx, uuid.NullUUID{UUID: job.Args.InstanceID, Valid: true})
		if err != nil {
			return fmt.Errorf("fail backups of %s: %w", job.Args.InstanceID, err)
		}
		for _, b := range running {
			if err := w.deps.failBackup(ctx, tx, q, b, job.Args.Reason); err != nil {
				return err
			}
		}
		return nil
	})
}
