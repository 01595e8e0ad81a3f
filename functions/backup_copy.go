package functions

// Backup copies between storage locations (issue 4): POST
// /backups/{backup_id}/copy inserts the copy's row (NEW, in the target
// location, the source's data key re-wrapped for it) and a jobs.CopyBackup
// job in one transaction; the job moves the objects and completes it.

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/quota"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

func init() { register(BackupCopies) }

type backupCopyInput struct {
	TenantPath
	BackupID string `path:"backup_id" maxLength:"64"`
	Body     struct {
		Copy openapi.BackupCopy `json:"copy"`
	}
}

// BackupCopies serves backup copies.
func BackupCopies(api huma.API, deps *Deps) {
	huma.Register(api, huma.Operation{
		OperationID: "copy-backup", Method: http.MethodPost, Path: "/v1.0/{tenant_id}/backups/{backup_id}/copy",
		Summary: "Copy a backup to another storage location",
		Description: "Answers at once with the copy, a new backup in NEW that goes COMPLETED (or FAILED, with fail_reason) once its objects are copied and verified. " +
			"The source must be COMPLETED (409 otherwise); the location must be configured and not the source's (400). " +
			"An incremental backup's parent must have been copied to the location first (400).",
		Tags: []string{"Backups"}, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors:       []int{http.StatusBadRequest, http.StatusNotFound, http.StatusConflict, http.StatusRequestEntityTooLarge, http.StatusNotImplemented},
		MaxBodyBytes: 16 << 10,
	}, deps.copyBackup)
}

func (d *Deps) copyBackup(ctx context.Context, in *backupCopyInput) (*backupCreateOutput, error) {
	id, err := uuid.Parse(in.BackupID)
	if err != nil {
		return nil, openapi.NotFound("Backup %s could not be found.", in.BackupID)
	}
	req := in.Body.Copy
	if d.Keys == nil || d.Store == nil {
		return nil, openapi.Errorf(http.StatusNotImplemented, "Backups are not configured in this Coffer deployment.")
	}
	configured := []string{jobs.Backups().Location}
	if d.Locations != nil {
		configured = d.Locations.Names()
	}
	target, known := d.Locations.Get(req.Location)
	var (
		row   backupRow
		fault *openapi.Fault
	)
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		// Locked: copies of one backup are serialised, so two cannot
		// both find its target location free.
		src, err := q.LockBackup(ctx, id)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (src.ProjectID != in.TenantID || src.DeletedAt != nil || src.DeleteRequestedAt != nil)) {
			fault = openapi.NotFound("Backup %s could not be found.", in.BackupID)
			return nil
		}
		if err != nil {
			return err
		}
		if src.Status != jobs.BackupCompleted {
			fault = openapi.Errorf(http.StatusConflict, "Backup %s is not completed. Actual state: %s.", src.ID, src.Status)
			return nil
		}
		if !known {
			fault = openapi.BadRequest("Backup location '%s' is not configured. Configured locations: %s.", req.Location, strings.Join(configured, ", "))
			return nil
		}
		if src.Location == target.Name {
			fault = openapi.BadRequest("Backup %s is already in location '%s'. Configured locations: %s.", src.ID, target.Name, strings.Join(configured, ", "))
			return nil
		}
		// One row per object prefix and location: a second copy would
		// share (and on delete remove) the first one's objects.
		other, err := q.BackupAtLocation(ctx, store.BackupAtLocationParams{ProjectID: src.ProjectID, Prefix: src.Prefix, Location: target.Name})
		if err == nil {
			fault = openapi.Errorf(http.StatusConflict, "Backup %s already has a copy in location '%s': backup %s (%s). Delete it first.", src.ID, target.Name, other.ID, other.Status)
			return nil
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		var parentID uuid.NullUUID
		if src.ParentID.Valid {
			p, err := q.GetBackupAnyProject(ctx, src.ParentID.UUID)
			if err != nil {
				return fmt.Errorf("parent %s: %w", src.ParentID.UUID, err)
			}
			pc, err := q.BackupAtLocation(ctx, store.BackupAtLocationParams{ProjectID: src.ProjectID, Prefix: p.Prefix, Location: target.Name})
			if errors.Is(err, pgx.ErrNoRows) || (err == nil && (pc.Status != jobs.BackupCompleted || pc.DeleteRequestedAt != nil)) {
				fault = openapi.BadRequest("Backup %s is incremental: copy its parent backup %s to location '%s' first.", src.ID, p.ID, target.Name)
				return nil
			}
			if err != nil {
				return fmt.Errorf("parent copy: %w", err)
			}
			parentID = uuid.NullUUID{UUID: pc.ID, Valid: true}
		}
		if f, err := quota.Check(ctx, q, src.ProjectID, map[string]int64{quota.Backups: 1}); err != nil {
			return err
		} else if f != nil {
			fault = f
			return nil
		}
		pk, err := d.Keys.ProjectKey(ctx, q, src.ProjectID)
		if err != nil {
			return err
		}
		copyID := uuid.New()
		wrapped, err := d.Keys.Rewrap(pk, src.ID, src.WrappedKey, copyID)
		if err != nil {
			return err
		}
		name := src.Name
		if req.Name != nil {
			name = *req.Name
		}
		if _, err := q.InsertBackup(ctx, store.InsertBackupParams{
			ID: copyID, ProjectID: src.ProjectID, InstanceID: src.InstanceID, DatastoreVersionID: src.DatastoreVersionID,
			ParentID: parentID, Name: name, Description: src.Description, Incremental: src.Incremental,
			Location: target.Name, Container: target.Container, Prefix: src.Prefix,
			KeyID: pk.ID, WrappedKey: wrapped, SegmentSize: src.SegmentSize, VolumeSizeGb: src.VolumeSizeGb,
		}); err != nil {
			return fmt.Errorf("insert copy: %w", err)
		}
		if _, err := d.River.InsertTx(ctx, tx, jobs.CopyBackup{BackupID: copyID, SourceID: src.ID}, nil); err != nil {
			return fmt.Errorf("enqueue copy: %w", err)
		}
		if err := jobs.InsertEvent(ctx, q, src.ProjectID, jobs.EventBackupCreated, copyID, map[string]any{
			"copy_of": src.ID, "location": target.Name}); err != nil {
			return err
		}
		r, err := q.GetBackup(ctx, store.GetBackupParams{ID: copyID, ProjectID: src.ProjectID})
		if err != nil {
			return fmt.Errorf("read copy: %w", err)
		}
		row = backupRow{Backup: r.Backup, VersionName: r.VersionName, DatastoreName: r.DatastoreName}
		return nil
	})
	if err != nil {
		return nil, d.internal(ctx, "copy backup", err)
	}
	if fault != nil {
		return nil, fault
	}
	out := &backupCreateOutput{}
	out.Body.Backup = d.backupView(row)
	return out, nil
}

// servesLocation reports whether backups stored in location can be read
// (restored): the default store's, or a configured copy location.
func (d *Deps) servesLocation(location string) bool {
	_, ok := jobs.StoreAt(d.Locations, d.Store, location)
	return ok
}
