package functions

// Restore: POST /instances with restorePoint.backupRef builds the new
// instance's volume from a backup instead of an empty datastore. The
// prepare command carries the chain to apply (the full backup, then each
// incremental one down to the backup asked for), each link with its data
// key (a secret: the payload is cleared when the command completes) and
// its segments' sizes and SHA-256, which the agent verifies before using a
// byte. instance.restore_backup_id protects the chain from deletion while
// the instance builds, and lets the agent get download grants for it.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// restoreSource is the backup an instance create restores from.
type restoreSource struct {
	backup        store.Backup
	chain         []store.Backup // full backup first
	datastoreName string
}

// restoreBackup resolves a create request's restorePoint (nil when none).
func (d *Deps) restoreBackup(ctx context.Context, q *store.Queries, tenant string, point any) (*restoreSource, error) {
	if point == nil || isEmptyJSON(point) {
		return nil, nil
	}
	obj, ok := point.(map[string]any)
	ref, isString := obj["backupRef"].(string)
	if !ok || !isString || len(obj) != 1 {
		return nil, openapi.BadRequest("Validation error: instance restorePoint must be {\"backupRef\": \"<backup id>\"}.")
	}
	id, err := uuid.Parse(ref)
	if err != nil {
		return nil, openapi.BadRequest("Validation error: instance restorePoint backupRef '%s' is not a valid UUID.", ref)
	}
	if d.Keys == nil || d.Store == nil {
		return nil, openapi.Errorf(http.StatusNotImplemented, "Backups are not configured in this Coffer deployment.")
	}
	row, err := d.getBackup(ctx, q, tenant, id.String())
	if err != nil {
		return nil, err
	}
	b := row.Backup
	if b.Status != jobs.BackupCompleted || b.DeleteRequestedAt != nil {
		state := b.Status
		if b.DeleteRequestedAt != nil {
			state = "DELETING"
		}
		return nil, openapi.Errorf(http.StatusConflict, "Unable to create instance because backup %s is not completed. Actual state: %s.", b.ID, state)
	}
	chain, err := q.BackupChain(ctx, b.ID)
	if err != nil {
		return nil, d.internal(ctx, "restore: backup chain", err)
	}
	src := &restoreSource{backup: b, datastoreName: row.DatastoreName}
	for i, c := range chain {
		link := c.Backup
		if f := d.usableLink(b, link, i == 0); f != nil {
			return nil, f
		}
		src.chain = append(src.chain, link)
	}
	for _, link := range src.chain {
		if err := d.checkBackupFiles(ctx, q, link); err != nil {
			return nil, err
		}
	}
	return src, nil
}

// checkBackupFiles makes sure every segment recorded for a backup is in its
// store with its size (one listing per backup), so that a restore from
// files lost or removed behind Coffer's back fails here, as Trove's
// BackupFileNotFound (404), and not as an instance in ERROR later.
// Contents are checked by the agent, segment by segment, as it restores.
func (d *Deps) checkBackupFiles(ctx context.Context, q *store.Queries, b store.Backup) error {
	st, ok := jobs.StoreAt(d.Locations, d.Store, b.Location)
	if !ok { // usableLink refused it already
		return openapi.BadRequest("Backup %s is stored in '%s', which this deployment does not serve.", b.ID, b.Location)
	}
	segs, err := q.ListBackupSegments(ctx, b.ID)
	if err != nil {
		return d.internal(ctx, "restore: segments", err)
	}
	objs, err := st.List(ctx, b.Container, b.Prefix+"/")
	if errors.Is(err, objectstore.ErrNotFound) {
		objs, err = nil, nil // the container is gone: so are the files
	}
	if err != nil {
		d.Logger.ErrorContext(ctx, "restore: list backup files", "backup_id", b.ID, "location", b.Location, "err", err)
		return openapi.Errorf(http.StatusServiceUnavailable, "The storage of backup %s (%s) cannot be reached; try again.", b.ID, b.Location)
	}
	size := make(map[string]int64, len(objs))
	for _, o := range objs {
		size[o.Key] = o.Size
	}
	for _, s := range segs {
		if got, ok := size[jobs.SegmentKey(b.Prefix, int(s.Index))]; !ok || got != s.Size {
			return openapi.NotFound("Backup file in %s was not found in the object storage (backup %s, segment %d).", b.Location, b.ID, s.Index)
		}
	}
	return nil
}

// usableLink checks one backup of a restore chain.
func (d *Deps) usableLink(target, link store.Backup, first bool) *openapi.Fault {
	switch {
	case link.DeletedAt != nil:
		return openapi.Errorf(http.StatusConflict, "Unable to create instance from backup %s: its parent backup %s was deleted.", target.ID, link.ID)
	case link.Status != jobs.BackupCompleted || link.DeleteRequestedAt != nil:
		state := link.Status
		if link.DeleteRequestedAt != nil {
			state = "DELETING"
		}
		return openapi.Errorf(http.StatusConflict, "Unable to create instance because backup %s is not completed. Actual state: %s.", link.ID, state)
	case first && link.ParentID.Valid:
		return openapi.Errorf(http.StatusConflict, "Unable to create instance from backup %s: its chain does not start with a full backup.", target.ID)
	case !d.servesLocation(link.Location):
		return openapi.BadRequest("Backup %s is stored in '%s', which this deployment does not serve (it uses '%s').", link.ID, link.Location, jobs.Backups().Location)
	}
	return nil
}

// restoreRequest checks that the backup fits the new instance (same
// datastore and version, data within the volume) and builds the prepare
// command's restore payload, data keys unwrapped.
func (d *Deps) restoreRequest(ctx context.Context, q *store.Queries, tenant string, src *restoreSource, ds store.Datastore, v store.DatastoreVersion, sizeGB int) (*protocol.RestoreRequest, error) {
	b := src.backup
	if src.datastoreName != ds.Name {
		return nil, openapi.BadRequest("The datastore from which the backup was taken, %s, does not match the destination datastore of %s.", src.datastoreName, ds.Name)
	}
	if b.DatastoreVersionID != v.ID {
		return nil, openapi.BadRequest("Backup %s was taken on another version of %s; it can only be restored into that version (%s), not %s.",
			b.ID, ds.Name, b.DatastoreVersionID, v.Name)
	}
	var raw int64
	for _, link := range src.chain {
		raw += link.BytesDone
	}
	if raw > int64(sizeGB)*gib {
		return nil, openapi.Errorf(http.StatusForbidden, "Backup is too large for given flavor or volume. Backup size: %.2f GBs. Available size: %d GBs.",
			float64(raw)/gib, sizeGB)
	}
	pk, err := d.Keys.ProjectKey(ctx, q, tenant)
	if err != nil {
		return nil, d.internal(ctx, "restore: project key", err)
	}
	req := &protocol.RestoreRequest{}
	for _, link := range src.chain {
		key, err := d.Keys.Unwrap(pk, link.ID, link.WrappedKey)
		if err != nil {
			return nil, d.internal(ctx, "restore: data key", err)
		}
		segs, err := q.ListBackupSegments(ctx, link.ID)
		if err != nil {
			return nil, d.internal(ctx, "restore: segments", err)
		}
		if len(segs) != int(link.SegmentCount) {
			return nil, d.internal(ctx, "restore: segments", fmt.Errorf("backup %s has %d segments recorded, %d expected", link.ID, len(segs), link.SegmentCount))
		}
		rb := protocol.RestoreBackup{BackupID: link.ID.String(), Kind: protocol.BackupFull, DataKey: key}
		if link.ParentID.Valid {
			rb.Kind = protocol.BackupIncremental
		}
		if err := json.Unmarshal(link.Point, &rb.Point); err != nil {
			return nil, d.internal(ctx, "restore: backup point", err)
		}
		for _, s := range segs {
			rb.Segments = append(rb.Segments, protocol.SegmentInfo{Size: s.Size, SHA256: s.Sha256})
		}
		req.Chain = append(req.Chain, rb)
	}
	return req, nil
}

// lockRestore, in the instance create's transaction, locks the chain (a
// backup delete locks the backups it deletes too, so the two serialise),
// checks it is still whole, and records the backup on the instance.
func (d *Deps) lockRestore(ctx context.Context, q *store.Queries, instanceID uuid.UUID, src *restoreSource) error {
	for i, link := range src.chain {
		b, err := q.LockBackup(ctx, link.ID)
		if err != nil {
			return fmt.Errorf("lock backup %s: %w", link.ID, err)
		}
		if f := d.usableLink(src.backup, b, i == 0); f != nil {
			return f
		}
	}
	if err := q.SetInstanceRestoreBackup(ctx, store.SetInstanceRestoreBackupParams{ID: instanceID, BackupID: uuid.NullUUID{UUID: src.backup.ID, Valid: true}}); err != nil {
		return fmt.Errorf("record restore: %w", err)
	}
	return nil
}

// prepareLease is the prepare command's lease: a restore streams the
// whole backup, so it may take as long as a backup.
func prepareLease(src *restoreSource) int32 {
	if src == nil {
		return 600
	}
	return int32(jobs.Backups().MaxDuration / time.Second)
}
