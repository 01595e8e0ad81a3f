package functions

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// The API's side of the jobs that carry a change to the provider's cloud
// (resizes, access). The API does not know which provider the workers run
// (it may be a process of its own): it always goes through the job, which
// does nothing for a provider without that capability.

// maxAllowedCIDRs bounds access.allowed_cidrs (each is a security group
// rule; Neutron's default quota is 100 rules per group).
const maxAllowedCIDRs = 100

// createAccess validates a create's access: allowed_cidrs as an update's
// (IPv4 networks or addresses, each once), canonical. Nil: none asked for.
func createAccess(a *openapi.Access) (*store.SetInstanceCreateAccessParams, error) {
	if a == nil {
		return nil, nil
	}
	if len(a.AllowedCIDRs) > maxAllowedCIDRs {
		return nil, openapi.BadRequest("Validation error: instance access allowed_cidrs: at most %d networks, got %d.", maxAllowedCIDRs, len(a.AllowedCIDRs))
	}
	cidrs, err := normalizeCIDRs(a.AllowedCIDRs)
	if err != nil {
		return nil, openapi.BadRequest("Validation error: instance access allowed_cidrs: %s.", err)
	}
	return &store.SetInstanceCreateAccessParams{IsPublic: pgtype.Bool{Bool: a.IsPublic, Valid: true}, AllowedCidrs: cidrs}, nil
}

// holdForProvider keeps a resize's agent command from the agent until
// jobs.ResizeInstance has resized the server or extended the volume, in
// the transaction that queued the command.
func (d *Deps) holdForProvider(ctx context.Context, tx pgx.Tx, q *store.Queries, instanceID, commandID uuid.UUID) error {
	if err := q.HoldAgentCommand(ctx, commandID); err != nil {
		return fmt.Errorf("hold command %s: %w", commandID, err)
	}
	if _, err := d.River.InsertTx(ctx, tx, jobs.ResizeInstance{InstanceID: instanceID, CommandID: commandID}, nil); err != nil {
		return fmt.Errorf("enqueue the provider's resize: %w", err)
	}
	return nil
}

// applyAccess has the instance's new access applied to its server's
// firewall, in the transaction that stored it.
func (d *Deps) applyAccess(ctx context.Context, tx pgx.Tx, instanceID uuid.UUID) error {
	if _, err := d.River.InsertTx(ctx, tx, jobs.ApplyAccess{InstanceID: instanceID}, nil); err != nil {
		return fmt.Errorf("enqueue applying access: %w", err)
	}
	return nil
}

// checkVersionImage refuses a create whose datastore version's image the
// cloud does not have (Trove looks the image up in Glance on create too),
// before anything is created. A cloud that cannot be asked lets the create
// through: provisioning retries, and refuses it then if it must.
func (d *Deps) checkVersionImage(ctx context.Context, v store.DatastoreVersion) error {
	if d.Images == nil {
		return nil
	}
	err := d.Images.CheckImage(ctx, v.Manager, v.Name, provider.VersionImageRef(v.Image, v.ImageTags))
	switch {
	case err == nil:
		return nil
	case errors.Is(err, provider.ErrRefused):
		d.Logger.InfoContext(ctx, "create refused: the datastore version's image is not usable", "version", v.Name, "err", err)
		_, reason, _ := strings.Cut(err.Error(), provider.ErrRefused.Error()+": ")
		return openapi.BadRequest("The image of datastore version '%s' is not available: %s.", v.Name, reason)
	}
	d.Logger.WarnContext(ctx, "create: could not check the datastore version's image; provisioning will", "version", v.Name, "err", err)
	return nil
}
