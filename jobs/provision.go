package jobs

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/internal/status"
)

// ProvisionInstance creates the server of a BUILDING instance and starts its
// agent with a fresh credential. The prepare command was queued with the
// instance row, so user passwords never pass through job arguments; the
// agent's result on it enqueues CompletePrepare.
type ProvisionInstance struct {
	InstanceID uuid.UUID `json:"instance_id"`
}

func (ProvisionInstance) Kind() string { return "provision_instance" }

func (ProvisionInstance) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 8, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type ProvisionInstanceWorker struct {
	river.WorkerDefaults[ProvisionInstance]
	deps *Deps
}

func (w *ProvisionInstanceWorker) Timeout(*river.Job[ProvisionInstance]) time.Duration {
	return 5 * time.Minute
}

func (w *ProvisionInstanceWorker) Work(ctx context.Context, job *river.Job[ProvisionInstance]) error {
	id := job.Args.InstanceID
	q := store.New(w.deps.Pool)
	row, err := q.GetInstanceAnyProject(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) {
		return river.JobCancel(fmt.Errorf("provision %s: instance does not exist", id))
	}
	if err != nil {
		return fmt.Errorf("provision %s: load instance: %w", id, err)
	}
	inst := row.Instance
	if inst.DeletedAt != nil || inst.Task != status.TaskBuilding {
		// Deleted or failed meanwhile: nothing left to build.
		return nil
	}

	// A fresh credential on every attempt: only its hash is stored, so a
	// retry cannot recover an earlier one, and the provider replaces the
	// agent's configuration with the new token.
	token := id.String() + "." + auth.NewToken()
	if err := q.SetInstanceAgentToken(ctx, store.SetInstanceAgentTokenParams{ID: id, AgentTokenHash: auth.Hash(token)}); err != nil {
		return fmt.Errorf("provision %s: store agent credential: %w", id, err)
	}

	image, err := versionImageRef(ctx, q, row)
	if err != nil {
		return fmt.Errorf("provision %s: %w", id, err)
	}
	server, err := w.deps.Provider.CreateServer(ctx, provider.ServerSpec{
		InstanceID:   id.String(),
		Name:         inst.Name,
		FlavorID:     inst.FlavorID,
		RAMMB:        int(row.FlavorRamMb),
		VCPUs:        int(row.FlavorVcpus),
		VolumeSizeGB: int(inst.VolumeSizeGb),
		Datastore:    row.DatastoreManager,
		Version:      row.VersionName,
		Image:        image,
		VolumeType:   inst.VolumeType,
		AllowedCIDRs: inst.AccessAllowedCidrs,
		Agent: protocol.AgentConfig{
			APIURL:     w.deps.AgentAPIURL,
			CACert:     w.deps.AgentCACert,
			InstanceID: id.String(),
			Token:      token,
			Datastore:  row.DatastoreManager,
		},
	})
	if err != nil {
		err = fmt.Errorf("provision %s: create server: %w", id, err)
		// A refusal (quota, unknown flavor or image) will not change on
		// retry, and the provider already removed what it had created.
		if errors.Is(err, provider.ErrRefused) || job.Attempt >= job.MaxAttempts {
			return w.fail(ctx, inst, err)
		}
		return err
	}
	// A server that already existed keeps the credential it was booted
	// with (user-data cannot change): the agent's is the valid one.
	tokenHash := auth.Hash(token)
	if k, ok := w.deps.Provider.(provider.CredentialKeeper); ok {
		h, err := k.AgentTokenHash(ctx, id.String())
		if err != nil {
			return fmt.Errorf("provision %s: read the server's credential: %w", id, err)
		}
		if h != nil {
			tokenHash = h
		}
	}
	err = w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		if err := q.SetInstanceAgentToken(ctx, store.SetInstanceAgentTokenParams{ID: id, AgentTokenHash: tokenHash}); err != nil {
			return err
		}
		return q.SetInstanceServer(ctx, store.SetInstanceServerParams{
			ID: id, ServerID: server.ID, ComputeStatus: server.Status, Address: server.Address, Port: int32(server.Port),
		})
	})
	if err != nil {
		return fmt.Errorf("provision %s: record server: %w", id, err)
	}
	if server.Status == provider.StatusError {
		return w.fail(ctx, inst, &serverError{instanceID: id, fault: server.Fault})
	}
	return nil
}

// fail records that the server could not be built, with the reason.
func (w *ProvisionInstanceWorker) fail(ctx context.Context, inst store.Instance, cause error) error {
	err := w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		if err := q.SetInstanceFault(ctx, store.SetInstanceFaultParams{
			ID: inst.ID, Task: status.TaskErrorServer,
			FaultMessage: serverFaultMessage(cause), FaultDetails: cause.Error(),
		}); err != nil {
			return err
		}
		return InsertEvent(ctx, q, inst.ProjectID, EventInstanceError, inst.ID, map[string]string{"reason": "server"})
	})
	if err != nil {
		return fmt.Errorf("%w (and recording the fault failed: %v)", cause, err)
	}
	return river.JobCancel(cause)
}
