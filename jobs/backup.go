package jobs

// Backups, the control plane's side (the agent streams the data straight
// to object storage; see agent/protocol/backup.go):
//
//   - StartBackup (API and schedules) checks the instance, mints the data
//     key and writes, in the caller's transaction, the backup row (NEW),
//     the agent command carrying the key, the watchdog job and an event.
//     The instance shows BACKUP while instance.running_backup_id is set.
//   - The agent API moves the backup to BUILDING at the agent's first
//     request (grant, segment, progress) and records each segment.
//   - The command's completer (backup_complete.go) moves a succeeded backup
//     to SAVING and queues FinalizeBackup, which checks every segment in
//     the store, writes the manifest (and a Swift SLO) and marks it
//     COMPLETED; a failed one becomes FAILED and its objects are purged.
//   - WatchBackup (backup_watch.go) fails a backup whose agent died or hung.
//   - DeleteBackup (backup_delete.go) removes a backup and its
//     incremental descendants, objects first.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/quota"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Backup statuses (Trove's).
const (
	BackupNew          = "NEW"
	BackupBuilding     = "BUILDING"
	BackupSaving       = "SAVING"
	BackupCompleted    = "COMPLETED"
	BackupFailed       = "FAILED"
	BackupDeleteFailed = "DELETE_FAILED"
)

// BackupRunning reports whether a backup status is one of the running ones
// (NEW, BUILDING, SAVING).
func BackupRunning(status string) bool {
	return status == BackupNew || status == BackupBuilding || status == BackupSaving
}

// Backup event kinds.
const (
	EventBackupCreated      = "backup.created"
	EventBackupCompleted    = "backup.completed"
	EventBackupFailed       = "backup.failed"
	EventBackupDeleted      = "backup.deleted"
	EventBackupDeleteFailed = "backup.delete_failed"
)

// BackupSettings are the deployment's backup settings, the same in every
// process (they come from the environment): StartBackup runs in API and
// worker processes alike and has no Deps.
type BackupSettings struct {
	// Location names the object store backups go to (objectstore.Store
	// Kind, e.g. "file", "s3", "swift"), recorded on each backup.
	Location string
	// Container is the default container (Trove's backup_swift_container).
	Container string
	// SegmentSize is the size of each uploaded segment but the last;
	// Parallel how many the agent uploads at once.
	SegmentSize int64
	Parallel    int
	// MaxDuration is the backup command's lease: the longest a backup may
	// run before the agent abandons it.
	MaxDuration time.Duration
	// StallTimeout: a backup whose agent has not been heard of (grant,
	// segment, progress) for this long is failed, as is one whose command
	// no agent has picked up in this time.
	StallTimeout time.Duration
	// WatchEvery is how often a running backup's watchdog looks at it.
	WatchEvery time.Duration
	// GrantTTL is how long a segment grant (signed URL) is valid.
	GrantTTL time.Duration
	// WALPruneEvery is how often the instances' WAL archives are trimmed
	// (PruneWALArchives).
	WALPruneEvery time.Duration
}

// DefaultBackupSettings are used for whatever SetBackupSettings leaves zero.
var DefaultBackupSettings = BackupSettings{
	Location: "file", Container: "database_backups", SegmentSize: 64 << 20, Parallel: 4,
	MaxDuration: 12 * time.Hour, StallTimeout: 10 * time.Minute, WatchEvery: 15 * time.Second,
	GrantTTL: 15 * time.Minute, WALPruneEvery: 15 * time.Minute,
}

var backupSettings atomic.Pointer[BackupSettings]

// SetBackupSettings sets the process's backup settings (at startup).
func SetBackupSettings(s BackupSettings) {
	d := DefaultBackupSettings
	if s.Location == "" {
		s.Location = d.Location
	}
	if s.Container == "" {
		s.Container = d.Container
	}
	if s.SegmentSize <= 0 {
		s.SegmentSize = d.SegmentSize
	}
	if s.Parallel <= 0 {
		s.Parallel = d.Parallel
	}
	if s.MaxDuration <= 0 {
		s.MaxDuration = d.MaxDuration
	}
	if s.StallTimeout <= 0 {
		s.StallTimeout = d.StallTimeout
	}
	if s.WatchEvery <= 0 {
		s.WatchEvery = d.WatchEvery
	}
	if s.GrantTTL <= 0 {
		s.GrantTTL = d.GrantTTL
	}
	if s.WALPruneEvery <= 0 {
		s.WALPruneEvery = d.WALPruneEvery
	}
	backupSettings.Store(&s)
}

// Backups returns the process's backup settings.
func Backups() BackupSettings {
	if s := backupSettings.Load(); s != nil {
		return *s
	}
	return DefaultBackupSettings
}

// SegmentKey is the object key of a backup's segment n.
func SegmentKey(prefix string, n int) string { return fmt.Sprintf("%s/segment-%06d", prefix, n) }

// ManifestKey is the object key of a backup's manifest.
func ManifestKey(prefix string) string { return prefix + "/manifest.json" }

// LargeObjectKey is the key of a backup's one-piece view (Swift SLO).
func LargeObjectKey(prefix string) string { return prefix + "/backup" }

// backupManagers are the datastore managers whose driver takes backups.
var backupManagers = map[string]bool{"postgresql": true}

// NewBackup is what a backup is asked for with.
type NewBackup struct {
	ProjectID   string
	InstanceID  uuid.UUID
	Name        string
	Description string
	// ParentID makes the backup incremental over that backup (which must
	// be COMPLETED and of the same instance).
	ParentID *uuid.UUID
	// Incremental without ParentID: over the instance's last COMPLETED
	// backup, or a full backup when it has none (Trove).
	Incremental bool
	ScheduleID  *uuid.UUID
	// Container overrides the backup strategies and the default.
	Container string
}

// StartBackup starts a backup in tx: the backup row (NEW), the agent
// command that takes it (its payload holds the plain data key, cleared
// when the command ends), the instance's running backup, the watchdog job
// and an event. Refusals are *openapi.Fault with Trove's status and text:
// 404 unknown instance or parent, 422 instance not action-able, 501
// datastore without backups, 413 quota, 409 parent not completed, 400
// parent of another instance.
func StartBackup(ctx context.Context, tx pgx.Tx, rc *river.Client[pgx.Tx], keys *backupkey.Keyring, in NewBackup) (store.Backup, error) {
	q := store.New(tx)
	settings := Backups()
	inst, err := q.LockInstance(ctx, in.InstanceID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (inst.ProjectID != in.ProjectID || inst.DeletedAt != nil)) {
		return store.Backup{}, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	}
	if err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: %w", in.InstanceID, err)
	}
	if f := Actionable(inst); f != nil {
		return store.Backup{}, f
	}
	version, err := q.GetDatastoreVersion(ctx, inst.DatastoreVersionID)
	if err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: datastore version: %w", in.InstanceID, err)
	}
	if !backupManagers[version.Manager] {
		return store.Backup{}, openapi.Errorf(http.StatusNotImplemented,
			"The 'create_backup' operation is not supported for the '%s' datastore.", version.Manager)
	}

	var parent *store.Backup
	switch {
	case in.ParentID != nil:
		p, err := q.GetBackupAnyProject(ctx, *in.ParentID)
		if errors.Is(err, pgx.ErrNoRows) || (err == nil && (p.ProjectID != in.ProjectID || p.DeletedAt != nil || p.DeleteRequestedAt != nil)) {
			return store.Backup{}, openapi.NotFound("Backup %s could not be found.", *in.ParentID)
		}
		if err != nil {
			return store.Backup{}, fmt.Errorf("start backup of %s: parent: %w", in.InstanceID, err)
		}
		if p.InstanceID.UUID != inst.ID {
			return store.Backup{}, openapi.BadRequest("Parent backup %s was not taken of instance %s.", p.ID, inst.ID)
		}
		if p.Status != BackupCompleted {
			return store.Backup{}, openapi.Errorf(http.StatusConflict,
				"Parent backup %s is not completed. Actual state: %s.", p.ID, p.Status)
		}
		parent = &p
	case in.Incremental:
		p, err := q.LastCompletedBackup(ctx, uuid.NullUUID{UUID: inst.ID, Valid: true})
		if err == nil {
			parent = &p
		} else if !errors.Is(err, pgx.ErrNoRows) {
			return store.Backup{}, fmt.Errorf("start backup of %s: last backup: %w", in.InstanceID, err)
		}
	}

	if f, err := quota.Check(ctx, q, in.ProjectID, map[string]int64{quota.Backups: 1}); err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: %w", in.InstanceID, err)
	} else if f != nil {
		return store.Backup{}, f
	}

	container := in.Container
	if container == "" {
		c, err := q.BackupStrategyContainer(ctx, store.BackupStrategyContainerParams{ProjectID: in.ProjectID, InstanceID: inst.ID.String()})
		switch {
		case err == nil:
			container = c
		case errors.Is(err, pgx.ErrNoRows):
			container = settings.Container
		default:
			return store.Backup{}, fmt.Errorf("start backup of %s: backup strategy: %w", in.InstanceID, err)
		}
	}

	pk, err := keys.ProjectKey(ctx, q, in.ProjectID)
	if err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: %w", in.InstanceID, err)
	}
	id := uuid.New()
	plain, wrapped, err := keys.NewDataKey(pk, id)
	if err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: %w", in.InstanceID, err)
	}
	req := protocol.BackupRequest{BackupID: id.String(), Kind: protocol.BackupFull, DataKey: plain,
		SegmentSize: settings.SegmentSize, Parallel: settings.Parallel}
	var parentID uuid.NullUUID
	if parent != nil {
		var point protocol.BackupPoint
		if err := json.Unmarshal(parent.Point, &point); err != nil {
			return store.Backup{}, fmt.Errorf("start backup of %s: parent %s point: %w", in.InstanceID, parent.ID, err)
		}
		req.Kind, req.Parent = protocol.BackupIncremental, &point
		parentID = uuid.NullUUID{UUID: parent.ID, Valid: true}
	}
	payload, err := json.Marshal(req)
	if err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: encode command: %w", in.InstanceID, err)
	}
	commandID := uuid.New()
	var scheduleID uuid.NullUUID
	if in.ScheduleID != nil {
		scheduleID = uuid.NullUUID{UUID: *in.ScheduleID, Valid: true}
	}
	b, err := q.InsertBackup(ctx, store.InsertBackupParams{
		ID: id, ProjectID: in.ProjectID, InstanceID: uuid.NullUUID{UUID: inst.ID, Valid: true},
		DatastoreVersionID: inst.DatastoreVersionID, ParentID: parentID, ScheduleID: scheduleID,
		Name: in.Name, Description: in.Description, Incremental: parent != nil,
		Location: settings.Location, Container: container, Prefix: id.String(),
		KeyID: pk.ID, WrappedKey: wrapped, CommandID: uuid.NullUUID{UUID: commandID, Valid: true},
		SegmentSize: settings.SegmentSize, VolumeSizeGb: inst.VolumeSizeGb,
	})
	if err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: insert: %w", in.InstanceID, err)
	}
	// The key lives only in this row until the command completes (the
	// payload is then cleared), never in job args or logs.
	if _, err := q.InsertAgentCommand(ctx, store.InsertAgentCommandParams{
		ID: commandID, InstanceID: inst.ID, Name: protocol.CommandBackup, Payload: payload,
		LeaseSeconds: int32(settings.MaxDuration / time.Second),
	}); err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: queue command: %w", in.InstanceID, err)
	}
	if err := q.SetInstanceRunningBackup(ctx, store.SetInstanceRunningBackupParams{ID: inst.ID, BackupID: uuid.NullUUID{UUID: id, Valid: true}}); err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: %w", in.InstanceID, err)
	}
	if _, err := rc.InsertTx(ctx, tx, WatchBackup{BackupID: id}, &river.InsertOpts{ScheduledAt: time.Now().Add(settings.WatchEvery)}); err != nil {
		return store.Backup{}, fmt.Errorf("start backup of %s: enqueue watchdog: %w", in.InstanceID, err)
	}
	if err := InsertEvent(ctx, q, in.ProjectID, EventBackupCreated, id, map[string]any{
		"instance_id": inst.ID, "incremental": parent != nil}); err != nil {
		return store.Backup{}, err
	}
	return b, nil
}

// lazyInserter is an insert-only River client over Deps.Pool, made on
// first use: a job queues its follow-up jobs with it whether it runs under
// a River client or is called directly (tests).
type lazyInserter struct {
	once   sync.Once
	client *river.Client[pgx.Tx]
	err    error
}

// enqueue inserts a job in tx.
func (d *Deps) enqueue(ctx context.Context, tx pgx.Tx, args river.JobArgs, opts *river.InsertOpts) error {
	if c, err := river.ClientFromContextSafely[pgx.Tx](ctx); err == nil {
		_, err = c.InsertTx(ctx, tx, args, opts)
		return err
	}
	d.inserter.once.Do(func() {
		d.inserter.client, d.inserter.err = river.NewClient(riverpgxv5.New(d.Pool), &river.Config{Logger: d.Logger})
	})
	if d.inserter.err != nil {
		return d.inserter.err
	}
	_, err := d.inserter.client.InsertTx(ctx, tx, args, opts)
	return err
}

// failBackup records, in tx, that a running backup failed: FAILED with the
// reason, its command cancelled (payload and key cleared), the instance no
// longer busy, an event, and its objects purged now and once more after
// the last grant can have been used.
func (d *Deps) failBackup(ctx context.Context, tx pgx.Tx, q *store.Queries, b store.Backup, reason string) error {
	if !BackupRunning(b.Status) {
		return nil
	}
	if err := q.FailBackup(ctx, store.FailBackupParams{ID: b.ID, FailReason: reason}); err != nil {
		return fmt.Errorf("fail backup %s: %w", b.ID, err)
	}
	if b.CommandID.Valid {
		if _, err := q.CancelAgentCommand(ctx, b.CommandID.UUID); err != nil {
			return fmt.Errorf("fail backup %s: cancel command: %w", b.ID, err)
		}
	}
	if b.InstanceID.Valid {
		if err := q.ClearInstanceRunningBackup(ctx, store.ClearInstanceRunningBackupParams{ID: b.InstanceID.UUID, BackupID: uuid.NullUUID{UUID: b.ID, Valid: true}}); err != nil {
			return fmt.Errorf("fail backup %s: %w", b.ID, err)
		}
	}
	// Now, and again once every grant handed out for it has expired: an
	// upload under way when the backup failed may land after the first
	// pass.
	if err := d.enqueue(ctx, tx, PurgeBackupObjects{BackupID: b.ID, Pass: 1}, nil); err != nil {
		return fmt.Errorf("fail backup %s: enqueue purge: %w", b.ID, err)
	}
	later := time.Now().Add(Backups().GrantTTL + time.Minute)
	if err := d.enqueue(ctx, tx, PurgeBackupObjects{BackupID: b.ID, Pass: 2}, &river.InsertOpts{ScheduledAt: later}); err != nil {
		return fmt.Errorf("fail backup %s: enqueue purge: %w", b.ID, err)
	}
	return InsertEvent(ctx, q, b.ProjectID, EventBackupFailed, b.ID, map[string]string{"reason": reason})
}
