package jobs

// Copying a COMPLETED backup to another storage location
// (POST /backups/{id}/copy, functions/backup_copy.go): the API inserts the
// copy's row in NEW (same prefix and data key as its source, location and
// container of the target) and a CopyBackup job; the job streams every
// segment and the manifest from the source's store to the target's,
// verifying each segment's size and SHA-256 against backup_segment, then
// records the segments and marks the copy COMPLETED in one transaction. A
// failure marks it FAILED and removes what the copy wrote. Every step
// overwrites the same objects, so a retried job is safe.

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"golang.org/x/sync/errgroup"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
)

// EventBackupCopied is recorded on the copy when it completes.
const EventBackupCopied = "backup.copied"

// CopyBackup copies backup SourceID's objects into the location of backup
// BackupID (its copy, in NEW).
type CopyBackup struct {
	BackupID uuid.UUID `json:"backup_id"`
	SourceID uuid.UUID `json:"source_id"`
}

// Kind names the job.
func (CopyBackup) Kind() string { return "copy_backup" }

// InsertOpts: a copy is retried a few times (stores have bad minutes); the
// last failure marks it FAILED.
func (CopyBackup) InsertOpts() river.InsertOpts {
	return river.InsertOpts{Queue: Queue, MaxAttempts: 5}
}

// CopyBackupWorker runs CopyBackup.
type CopyBackupWorker struct {
	river.WorkerDefaults[CopyBackup]
	deps *Deps
}

// Timeout: a copy moves as many bytes as the backup did.
func (w *CopyBackupWorker) Timeout(*river.Job[CopyBackup]) time.Duration {
	return Backups().MaxDuration
}

// copyFault is a failure that retrying cannot fix (the source's objects
// do not match what was recorded, or are gone).
type copyFault struct{ reason string }

func (e copyFault) Error() string { return e.reason }

// Work copies, then records the outcome.
func (w *CopyBackupWorker) Work(ctx context.Context, job *river.Job[CopyBackup]) error {
	q := store.New(w.deps.Pool)
	b, err := q.GetBackupAnyProject(ctx, job.Args.BackupID)
	if errors.Is(err, pgx.ErrNoRows) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("copy backup %s: %w", job.Args.BackupID, err)
	}
	if b.Status != BackupNew || b.DeletedAt != nil || b.DeleteRequestedAt != nil {
		return nil // done, failed, or deleted meanwhile
	}
	src, err := q.GetBackupAnyProject(ctx, job.Args.SourceID)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && (src.DeletedAt != nil || src.Status != BackupCompleted)) {
		return w.fail(ctx, b, fmt.Sprintf("source backup %s is no longer available", job.Args.SourceID))
	}
	if err != nil {
		return fmt.Errorf("copy backup %s: source: %w", b.ID, err)
	}
	segs, err := w.copyObjects(ctx, src, b)
	var fault copyFault
	switch {
	case errors.As(err, &fault):
		return w.fail(ctx, b, fault.reason)
	case err != nil && job.Attempt >= job.MaxAttempts:
		return w.fail(ctx, b, fmt.Sprintf("copy to %s failed: %v", b.Location, err))
	case err != nil:
		return fmt.Errorf("copy backup %s to %s: %w", b.ID, b.Location, err)
	}
	return pgx.BeginFunc(ctx, w.deps.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		cur, err := q.LockBackup(ctx, b.ID)
		if err != nil {
			return fmt.Errorf("copy backup %s: lock: %w", b.ID, err)
		}
		if cur.Status != BackupNew {
			return nil
		}
		for _, s := range segs {
			if err := q.UpsertBackupSegment(ctx, s); err != nil {
				return fmt.Errorf("copy backup %s: segment %d: %w", b.ID, s.Index, err)
			}
		}
		if err := q.MarkBackupSaving(ctx, store.MarkBackupSavingParams{
			ID: b.ID, Point: src.Point, SegmentCount: src.SegmentCount, StoredBytes: src.StoredBytes, RawBytes: src.BytesDone,
		}); err != nil {
			return fmt.Errorf("copy backup %s: %w", b.ID, err)
		}
		if err := q.CompleteBackup(ctx, b.ID); err != nil {
			return fmt.Errorf("copy backup %s: complete: %w", b.ID, err)
		}
		return InsertEvent(ctx, q, b.ProjectID, EventBackupCopied, b.ID, map[string]any{
			"source_id": src.ID, "from": src.Location, "location": b.Location, "segments": len(segs), "stored_bytes": src.StoredBytes})
	})
}

// fail removes what the copy wrote, then marks it FAILED with reason.
func (w *CopyBackupWorker) fail(ctx context.Context, b store.Backup, reason string) error {
	if err := w.deps.purge(ctx, b); err != nil {
		// Retried: objects left in the target would outlive the row.
		return fmt.Errorf("copy backup %s failed (%s); removing its objects: %w", b.ID, reason, err)
	}
	return pgx.BeginFunc(ctx, w.deps.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		if err := q.FailBackup(ctx, store.FailBackupParams{ID: b.ID, FailReason: reason}); err != nil {
			return fmt.Errorf("fail backup copy %s: %w", b.ID, err)
		}
		return InsertEvent(ctx, q, b.ProjectID, EventBackupFailed, b.ID, map[string]string{"reason": reason})
	})
}

// copyObjects streams src's segments and manifest into b's location and
// returns b's segment rows.
func (w *CopyBackupWorker) copyObjects(ctx context.Context, src, b store.Backup) ([]store.UpsertBackupSegmentParams, error) {
	from, ok := StoreAt(w.deps.Locations, w.deps.Store, src.Location)
	if !ok {
		return nil, copyFault{fmt.Sprintf("source location %q is not configured", src.Location)}
	}
	to, ok := StoreAt(w.deps.Locations, w.deps.Store, b.Location)
	if !ok {
		return nil, copyFault{fmt.Sprintf("location %q is not configured", b.Location)}
	}
	segs, err := store.New(w.deps.Pool).ListBackupSegments(ctx, src.ID)
	if err != nil {
		return nil, fmt.Errorf("segments of %s: %w", src.ID, err)
	}
	if len(segs) != int(src.SegmentCount) {
		return nil, copyFault{fmt.Sprintf("source backup %s has %d segments recorded, %d expected", src.ID, len(segs), src.SegmentCount)}
	}
	if err := to.EnsureContainer(ctx, b.Container); err != nil {
		return nil, fmt.Errorf("container %s: %w", b.Container, err)
	}
	out := make([]store.UpsertBackupSegmentParams, len(segs))
	infos := make([]objectstore.ObjectInfo, len(segs))
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(max(1, Backups().Parallel))
	for i, s := range segs {
		g.Go(func() error {
			if int(s.Index) != i {
				return copyFault{fmt.Sprintf("source segment %d was never recorded", i)}
			}
			info, err := copySegment(gctx, from, to, src, b, s)
			if err != nil {
				return err
			}
			infos[i] = info
			out[i] = store.UpsertBackupSegmentParams{BackupID: b.ID, Index: s.Index, Size: s.Size, Sha256: s.Sha256, Etag: info.ETag}
			return nil
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}
	if err := copyManifest(ctx, from, to, src, b); err != nil {
		return nil, err
	}
	if lw, ok := to.(objectstore.LargeObjectWriter); ok {
		if err := lw.PutLargeObject(ctx, b.Container, LargeObjectKey(b.Prefix), infos); err != nil {
			return nil, fmt.Errorf("large object: %w", err)
		}
	}
	return out, nil
}

// copySegment streams one segment, hashing it on the way; a segment whose
// size or SHA-256 differs from its record is removed from the target.
func copySegment(ctx context.Context, from, to objectstore.Store, src, b store.Backup, s store.BackupSegment) (objectstore.ObjectInfo, error) {
	srcKey, dstKey := SegmentKey(src.Prefix, int(s.Index)), SegmentKey(b.Prefix, int(s.Index))
	r, err := from.Get(ctx, src.Container, srcKey)
	if errors.Is(err, objectstore.ErrNotFound) {
		return objectstore.ObjectInfo{}, copyFault{fmt.Sprintf("segment %d (%s) of backup %s is missing", s.Index, srcKey, src.ID)}
	}
	if err != nil {
		return objectstore.ObjectInfo{}, fmt.Errorf("read segment %d: %w", s.Index, err)
	}
	defer r.Close()
	hr := &hashingReader{r: r, h: sha256.New()}
	// At most the recorded size goes to the store; what is left over
	// is counted below.
	putErr := to.Put(ctx, b.Container, dstKey, io.LimitReader(hr, s.Size), s.Size)
	if _, err := io.Copy(io.Discard, hr); err != nil && putErr == nil {
		putErr = err
	}
	sum := hex.EncodeToString(hr.h.Sum(nil))
	if hr.n != s.Size || sum != s.Sha256 {
		_ = to.Delete(ctx, b.Container, dstKey)
		if hr.n != s.Size {
			return objectstore.ObjectInfo{}, copyFault{fmt.Sprintf("segment %d of backup %s is %d bytes, %d were recorded", s.Index, src.ID, hr.n, s.Size)}
		}
		return objectstore.ObjectInfo{}, copyFault{fmt.Sprintf("segment %d of backup %s: checksum mismatch", s.Index, src.ID)}
	}
	if putErr != nil {
		return objectstore.ObjectInfo{}, fmt.Errorf("write segment %d: %w", s.Index, putErr)
	}
	info, err := to.Stat(ctx, b.Container, dstKey)
	if err != nil {
		return objectstore.ObjectInfo{}, fmt.Errorf("stat copied segment %d: %w", s.Index, err)
	}
	if info.Size != s.Size {
		return objectstore.ObjectInfo{}, fmt.Errorf("copied segment %d is %d bytes in %s, want %d", s.Index, info.Size, b.Location, s.Size)
	}
	info.Key = dstKey
	return info, nil
}

// copyManifest rewrites the source's manifest for the copy (its id and
// parent) into the target.
func copyManifest(ctx context.Context, from, to objectstore.Store, src, b store.Backup) error {
	r, err := from.Get(ctx, src.Container, ManifestKey(src.Prefix))
	if errors.Is(err, objectstore.ErrNotFound) {
		return copyFault{fmt.Sprintf("the manifest of backup %s is missing", src.ID)}
	}
	if err != nil {
		return fmt.Errorf("read manifest: %w", err)
	}
	defer r.Close()
	var m Manifest
	if err := json.NewDecoder(io.LimitReader(r, 64<<20)).Decode(&m); err != nil {
		return copyFault{fmt.Sprintf("the manifest of backup %s is not readable: %v", src.ID, err)}
	}
	m.BackupID = b.ID.String()
	if b.ParentID.Valid {
		m.ParentID = b.ParentID.UUID.String()
	}
	body, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := to.Put(ctx, b.Container, ManifestKey(b.Prefix), bytes.NewReader(body), int64(len(body))); err != nil {
		return fmt.Errorf("write manifest: %w", err)
	}
	return nil
}

// hashingReader hashes and counts what is read through it.
type hashingReader struct {
	r io.Reader
	h hash.Hash
	n int64
}

func (h *hashingReader) Read(p []byte) (int, error) {
	n, err := h.r.Read(p)
	h.h.Write(p[:n])
	h.n += int64(n)
	return n, err
}
