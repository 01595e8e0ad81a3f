package jobs

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"golang.org/x/sync/errgroup"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
)

// The backup command's continuation. Status SAVING means: the agent says
// every segment is uploaded, and the control plane is checking them in the
// store and writing the manifest. Only then is the backup COMPLETED, so a
// COMPLETED backup always has every segment and its manifest.

func init() {
	RegisterCompleter(protocol.CommandBackup, completeBackupCommand)
}

// completeBackupCommand runs in the CompleteCommand job's transaction with
// the instance locked.
func completeBackupCommand(ctx context.Context, tx pgx.Tx, q *store.Queries, inst store.Instance, cmd store.AgentCommand) error {
	b, err := q.GetBackupByCommand(ctx, uuid.NullUUID{UUID: cmd.ID, Valid: true})
	if errors.Is(err, pgx.ErrNoRows) {
		return river.JobCancel(fmt.Errorf("complete backup command %s: no backup has it", cmd.ID))
	}
	if err != nil {
		return fmt.Errorf("complete backup command %s: %w", cmd.ID, err)
	}
	if b, err = q.LockBackup(ctx, b.ID); err != nil {
		return fmt.Errorf("complete backup %s: %w", b.ID, err)
	}
	if b.Status != BackupNew && b.Status != BackupBuilding {
		return nil // already failed by its watchdog, or completed
	}
	d := completerDeps(ctx)
	if cmd.State != "succeeded" {
		reason := cmd.Error
		if reason == "" {
			reason = "the guest agent reported a failure without a reason"
		}
		return d.failBackup(ctx, tx, q, b, "Backup failed on the guest: "+reason)
	}
	var res protocol.Result
	var out protocol.BackupResult
	if err := json.Unmarshal(cmd.Result, &res); err == nil && len(res.Output) > 0 {
		err = json.Unmarshal(res.Output, &out)
		if err != nil {
			return d.failBackup(ctx, tx, q, b, "The guest agent's backup result is unreadable: "+err.Error())
		}
	}
	if out.Segments <= 0 {
		return d.failBackup(ctx, tx, q, b, "The guest agent reported a backup without segments.")
	}
	point, _ := json.Marshal(out.Point)
	if err := q.MarkBackupSaving(ctx, store.MarkBackupSavingParams{
		ID: b.ID, Point: point, SegmentCount: int32(out.Segments), StoredBytes: out.StoredBytes, RawBytes: out.RawBytes,
	}); err != nil {
		return fmt.Errorf("complete backup %s: %w", b.ID, err)
	}
	if err := d.enqueue(ctx, tx, FinalizeBackup{BackupID: b.ID}, nil); err != nil {
		return fmt.Errorf("complete backup %s: enqueue finalize: %w", b.ID, err)
	}
	return nil
}

// completerDeps finds the Deps of the running worker: completers are plain
// functions registered in init(), the CompleteCommand worker puts its Deps
// in their context.
func completerDeps(ctx context.Context) *Deps {
	if d, ok := ctx.Value(depsKey{}).(*Deps); ok {
		return d
	}
	return &Deps{}
}

type depsKey struct{}

// WithDeps returns ctx carrying deps for the completers that need them.
func WithDeps(ctx context.Context, deps *Deps) context.Context {
	return context.WithValue(ctx, depsKey{}, deps)
}

// FinalizeBackup checks a SAVING backup's segments in the store, writes
// its manifest (and, on Swift, the large object that presents the segments
// as one), and marks it COMPLETED, or FAILED when the store does not hold
// what the agent reported.
type FinalizeBackup struct {
	BackupID uuid.UUID `json:"backup_id"`
}

func (FinalizeBackup) Kind() string { return "finalize_backup" }

func (FinalizeBackup) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 8, UniqueOpts: river.UniqueOpts{ByArgs: true}}
}

type FinalizeBackupWorker struct {
	river.WorkerDefaults[FinalizeBackup]
	deps *Deps
}

func (w *FinalizeBackupWorker) Timeout(*river.Job[FinalizeBackup]) time.Duration {
	return 5 * time.Minute
}

// Manifest is what <prefix>/manifest.json holds: enough to find, check and
// (with the key, which it never holds) decrypt every segment.
type Manifest struct {
	Format      int                  `json:"format"`
	BackupID    string               `json:"backup_id"`
	ProjectID   string               `json:"project_id"`
	InstanceID  string               `json:"instance_id,omitempty"`
	Kind        string               `json:"kind"`
	ParentID    string               `json:"parent_id,omitempty"`
	Datastore   ManifestDatastore    `json:"datastore"`
	Point       protocol.BackupPoint `json:"point"`
	KeyID       string               `json:"key_id"`
	Encryption  string               `json:"encryption"`
	Compression string               `json:"compression"`
	SegmentSize int64                `json:"segment_size"`
	StoredBytes int64                `json:"stored_bytes"`
	RawBytes    int64                `json:"raw_bytes"`
	Segments    []ManifestSegment    `json:"segments"`
	Created     time.Time            `json:"created"`
}

// ManifestDatastore is the datastore a backup was taken of.
type ManifestDatastore struct {
	Type      string `json:"type"`
	Version   string `json:"version"`
	VersionID string `json:"version_id"`
	Manager   string `json:"manager"`
}

// ManifestSegment is one stored segment.
type ManifestSegment struct {
	Key    string `json:"key"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// errBadSegments is a store that does not hold what the agent reported:
// no retry helps.
type errBadSegments struct{ msg string }

func (e errBadSegments) Error() string { return e.msg }

func (w *FinalizeBackupWorker) Work(ctx context.Context, job *river.Job[FinalizeBackup]) error {
	q := store.New(w.deps.Pool)
	b, err := q.GetBackupAnyProject(ctx, job.Args.BackupID)
	if errors.Is(err, pgx.ErrNoRows) {
		return river.JobCancel(fmt.Errorf("finalize backup %s: no such backup", job.Args.BackupID))
	}
	if err != nil {
		return fmt.Errorf("finalize backup %s: %w", job.Args.BackupID, err)
	}
	if b.Status != BackupSaving || b.DeletedAt != nil {
		return nil
	}
	manifest, err := w.verifyAndWrite(ctx, q, b)
	var bad errBadSegments
	switch {
	case errors.As(err, &bad):
		return w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
			b, err := lockBackup(ctx, q, b.ID)
			if err != nil {
				return err
			}
			return w.deps.failBackup(ctx, tx, q, b, "The object store does not hold the backup the guest reported: "+bad.msg)
		})
	case err != nil && job.Attempt >= job.MaxAttempts:
		return w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
			b, err2 := lockBackup(ctx, q, b.ID)
			if err2 != nil {
				return err2
			}
			return w.deps.failBackup(ctx, tx, q, b, "The backup could not be saved in the object store: "+err.Error())
		})
	case err != nil:
		return err
	}
	return w.deps.inTx(ctx, func(tx pgx.Tx, q *store.Queries) error {
		b, err := lockBackup(ctx, q, b.ID)
		if err != nil {
			return err
		}
		if b.Status != BackupSaving {
			return nil
		}
		if err := q.CompleteBackup(ctx, b.ID); err != nil {
			return fmt.Errorf("finalize backup %s: %w", b.ID, err)
		}
		if b.InstanceID.Valid {
			if err := q.ClearInstanceRunningBackup(ctx, store.ClearInstanceRunningBackupParams{ID: b.InstanceID.UUID, BackupID: uuid.NullUUID{UUID: b.ID, Valid: true}}); err != nil {
				return fmt.Errorf("finalize backup %s: %w", b.ID, err)
			}
		}
		return InsertEvent(ctx, q, b.ProjectID, EventBackupCompleted, b.ID, map[string]any{
			"instance_id": b.InstanceID.UUID, "stored_bytes": manifest.StoredBytes, "segments": len(manifest.Segments)})
	})
}

// verifyAndWrite checks every segment the agent reported against the
// store, then writes the manifest and the large object.
func (w *FinalizeBackupWorker) verifyAndWrite(ctx context.Context, q *store.Queries, b store.Backup) (Manifest, error) {
	st, ok := StoreAt(w.deps.Locations, w.deps.Store, b.Location)
	if !ok {
		return Manifest{}, fmt.Errorf("no object store is configured for location %q", b.Location)
	}
	segs, err := q.ListBackupSegments(ctx, b.ID)
	if err != nil {
		return Manifest{}, fmt.Errorf("finalize backup %s: segments: %w", b.ID, err)
	}
	if len(segs) != int(b.SegmentCount) {
		return Manifest{}, errBadSegments{fmt.Sprintf("the guest reported %d segments but %d were recorded", b.SegmentCount, len(segs))}
	}
	var total int64
	for i, s := range segs {
		if int(s.Index) != i {
			return Manifest{}, errBadSegments{fmt.Sprintf("segment %d was never reported", i)}
		}
		total += s.Size
	}
	if b.StoredBytes > 0 && total != b.StoredBytes {
		return Manifest{}, errBadSegments{fmt.Sprintf("the guest reported %d bytes but its segments hold %d", b.StoredBytes, total)}
	}
	infos := make([]objectstore.ObjectInfo, len(segs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(8)
	for i, s := range segs {
		g.Go(func() error {
			key := SegmentKey(b.Prefix, i)
			info, err := st.Stat(gctx, b.Container, key)
			if errors.Is(err, objectstore.ErrNotFound) {
				return errBadSegments{fmt.Sprintf("segment %d (%s) is missing", i, key)}
			}
			if err != nil {
				return fmt.Errorf("stat segment %d: %w", i, err)
			}
			if info.Size != s.Size {
				return errBadSegments{fmt.Sprintf("segment %d (%s) is %d bytes, the guest uploaded %d", i, key, info.Size, s.Size)}
			}
			info.Key = key
			infos[i] = info
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return Manifest{}, err
	}

	version, err := q.GetDatastoreVersion(ctx, b.DatastoreVersionID)
	if err != nil {
		return Manifest{}, fmt.Errorf("finalize backup %s: datastore version: %w", b.ID, err)
	}
	ds, err := q.GetDatastoreByID(ctx, version.DatastoreID)
	if err != nil {
		return Manifest{}, fmt.Errorf("finalize backup %s: datastore: %w", b.ID, err)
	}
	m := Manifest{
		Format: 1, BackupID: b.ID.String(), ProjectID: b.ProjectID, Kind: protocol.BackupFull,
		Datastore:  ManifestDatastore{Type: ds.Name, Version: version.Name, VersionID: version.ID.String(), Manager: version.Manager},
		KeyID:      b.KeyID.String(),
		Encryption: "DARE 2.0, AES-256-GCM (minio/sio); data key wrapped by the project key key_id",
		// The agent compresses with zstd before encrypting.
		Compression: "zstd",
		SegmentSize: b.SegmentSize, StoredBytes: total, RawBytes: b.BytesDone,
		Created: b.CreatedAt.UTC(),
	}
	if b.InstanceID.Valid {
		m.InstanceID = b.InstanceID.UUID.String()
	}
	if b.ParentID.Valid {
		m.Kind, m.ParentID = protocol.BackupIncremental, b.ParentID.UUID.String()
	}
	_ = json.Unmarshal(b.Point, &m.Point)
	for i, s := range segs {
		m.Segments = append(m.Segments, ManifestSegment{Key: infos[i].Key, Size: s.Size, SHA256: s.Sha256})
	}
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return Manifest{}, err
	}
	if err := st.Put(ctx, b.Container, ManifestKey(b.Prefix), bytes.NewReader(body), int64(len(body))); err != nil {
		return Manifest{}, fmt.Errorf("write manifest of backup %s: %w", b.ID, err)
	}
	if lw, ok := st.(objectstore.LargeObjectWriter); ok {
		if err := lw.PutLargeObject(ctx, b.Container, LargeObjectKey(b.Prefix), infos); err != nil {
			return Manifest{}, fmt.Errorf("write large object of backup %s: %w", b.ID, err)
		}
	}
	return m, nil
}
