package jobs

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// completedBackup takes a full backup of a new instance as the agent and
// the finalizer would: segments of the given sizes in the file store.
func (f *backupFixture) completedBackup(t *testing.T, sizes ...int) store.Backup {
	t.Helper()
	b, err := f.start(t, NewBackup{ProjectID: "p1", InstanceID: f.activeInstance(t), Name: "full"})
	if err != nil {
		t.Fatal(err)
	}
	raw, stored := f.upload(t, b, sizes...)
	f.result(t, b, okResult(t, len(sizes), stored, raw))
	if err := f.finalize(t, b.ID, 1); err != nil {
		t.Fatal(err)
	}
	if b = f.backup(t, b.ID); b.Status != BackupCompleted {
		t.Fatalf("backup: %s %s", b.Status, b.FailReason)
	}
	return b
}

// copyRow inserts src's copy in location as POST /backups/{id}/copy does.
func (f *backupFixture) copyRow(t *testing.T, src store.Backup, to objectstore.Location) store.Backup {
	t.Helper()
	ctx := context.Background()
	pk, err := f.deps.Keys.ProjectKey(ctx, store.New(f.pool), src.ProjectID)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	wrapped, err := f.deps.Keys.Rewrap(pk, src.ID, src.WrappedKey, id)
	if err != nil {
		t.Fatal(err)
	}
	b, err := store.New(f.pool).InsertBackup(ctx, store.InsertBackupParams{
		ID: id, ProjectID: src.ProjectID, InstanceID: src.InstanceID, DatastoreVersionID: src.DatastoreVersionID,
		Name: "copy", Location: to.Name, Container: to.Container, Prefix: src.Prefix, KeyID: pk.ID, WrappedKey: wrapped,
		SegmentSize: src.SegmentSize, VolumeSizeGb: src.VolumeSizeGb,
	})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (f *backupFixture) copy(t *testing.T, b, src store.Backup, attempt int) error {
	t.Helper()
	w := &CopyBackupWorker{deps: f.deps}
	return w.Work(context.Background(), job(CopyBackup{BackupID: b.ID, SourceID: src.ID}, attempt))
}

func TestCopyBackupToMinIO(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	f := newBackupFixture(t)
	cfg := objectstoretest.MinIO(t).NewContainer("copy")
	s3, err := objectstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	target := objectstore.Location{Name: "s3", Container: cfg.Container, Store: s3}
	f.deps.Locations, err = objectstore.NewRegistry(objectstore.Location{Name: "file", Container: DefaultBackupSettings.Container, Store: f.files}, target)
	if err != nil {
		t.Fatal(err)
	}

	src := f.completedBackup(t, 1000, 1000, 10)
	cp := f.copyRow(t, src, target)
	if err := f.copy(t, cp, src, 1); err != nil {
		t.Fatal(err)
	}
	cp = f.backup(t, cp.ID)
	if cp.Status != BackupCompleted || cp.SegmentCount != 3 || cp.StoredBytes != src.StoredBytes || cp.BytesDone != src.BytesDone || !bytes.Equal(cp.Point, src.Point) {
		t.Fatalf("copy: %s (%s), %d segments, %d bytes", cp.Status, cp.FailReason, cp.SegmentCount, cp.StoredBytes)
	}
	if ev := f.events(t, cp.ID); ev != EventBackupCopied {
		t.Errorf("events: %s", ev)
	}
	// Every segment in MinIO has the recorded size and SHA-256, and the
	// copy's rows are its source's.
	segs, err := store.New(f.pool).ListBackupSegments(ctx, cp.ID)
	if err != nil || len(segs) != 3 {
		t.Fatalf("copy's segments: %d, %v", len(segs), err)
	}
	srcSegs, _ := store.New(f.pool).ListBackupSegments(ctx, src.ID)
	for i, s := range segs {
		rd, err := s3.Get(ctx, cp.Container, SegmentKey(cp.Prefix, i))
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rd)
		rd.Close()
		sum := sha256.Sum256(data)
		if int64(len(data)) != s.Size || hex.EncodeToString(sum[:]) != s.Sha256 || s.Sha256 != srcSegs[i].Sha256 || s.Size != srcSegs[i].Size {
			t.Errorf("segment %d in MinIO: %d bytes %x, recorded %d %s", i, len(data), sum, s.Size, s.Sha256)
		}
	}
	rd, err := s3.Get(ctx, cp.Container, ManifestKey(cp.Prefix))
	if err != nil {
		t.Fatal(err)
	}
	var m Manifest
	err = json.NewDecoder(rd).Decode(&m)
	rd.Close()
	if err != nil || m.BackupID != cp.ID.String() || len(m.Segments) != 3 || m.Segments[0].SHA256 != segs[0].Sha256 {
		t.Errorf("copy's manifest: %+v (%v)", m, err)
	}
	// The restore of the copy reads MinIO: its store, and its data key
	// is its source's.
	if st, ok := StoreAt(f.deps.Locations, f.deps.Store, cp.Location); !ok || st != s3 {
		t.Error("the copy's location does not resolve to MinIO")
	}
	pk, _ := f.deps.Keys.ProjectKey(ctx, store.New(f.pool), "p1")
	k1, err1 := f.deps.Keys.Unwrap(pk, cp.ID, cp.WrappedKey)
	k2, err2 := f.deps.Keys.Unwrap(pk, src.ID, src.WrappedKey)
	if err1 != nil || err2 != nil || !bytes.Equal(k1, k2) {
		t.Errorf("data keys: %v %v", err1, err2)
	}
	// Again (a retried job): nothing changes.
	if err := f.copy(t, cp, src, 2); err != nil {
		t.Fatal(err)
	}
	// Deleting the copy removes its objects from MinIO only.
	if err := f.deps.purge(ctx, cp); err != nil {
		t.Fatal(err)
	}
	if objs, err := s3.List(ctx, cp.Container, cp.Prefix+"/"); err != nil || len(objs) != 0 {
		t.Errorf("after purging the copy, MinIO holds %v (%v)", objs, err)
	}
	if n := len(f.objects(t, src)); n != 4 {
		t.Errorf("purging the copy touched its source: %d objects left", n)
	}

	// A corrupted source segment: FAILED, nothing left in MinIO.
	bad := f.completedBackup(t, 2000, 2000, 2000)
	junk := bytes.Repeat([]byte{7}, 2000)
	if err := f.files.Put(ctx, bad.Container, SegmentKey(bad.Prefix, 1), bytes.NewReader(junk), 2000); err != nil {
		t.Fatal(err)
	}
	badCopy := f.copyRow(t, bad, target)
	if err := f.copy(t, badCopy, bad, 1); err != nil {
		t.Fatal(err)
	}
	badCopy = f.backup(t, badCopy.ID)
	if badCopy.Status != BackupFailed || !strings.Contains(badCopy.FailReason, "segment 1 of backup "+bad.ID.String()+": checksum mismatch") {
		t.Errorf("copy of a corrupted backup: %s (%s)", badCopy.Status, badCopy.FailReason)
	}
	if objs, err := s3.List(ctx, badCopy.Container, badCopy.Prefix+"/"); (err != nil && !errors.Is(err, objectstore.ErrNotFound)) || len(objs) != 0 {
		t.Errorf("the failed copy left %v in MinIO (%v)", objs, err)
	}
	if ev := f.events(t, badCopy.ID); ev != EventBackupFailed {
		t.Errorf("events: %s", ev)
	}

	// A truncated source segment, too.
	short := f.completedBackup(t, 500)
	if err := f.files.Put(ctx, short.Container, SegmentKey(short.Prefix, 0), bytes.NewReader(junk[:100]), 100); err != nil {
		t.Fatal(err)
	}
	shortCopy := f.copyRow(t, short, target)
	if err := f.copy(t, shortCopy, short, 1); err != nil {
		t.Fatal(err)
	}
	if shortCopy = f.backup(t, shortCopy.ID); shortCopy.Status != BackupFailed || !strings.Contains(shortCopy.FailReason, "is 100 bytes, 500 were recorded") {
		t.Errorf("copy of a truncated backup: %s (%s)", shortCopy.Status, shortCopy.FailReason)
	}
	if objs, _ := s3.List(ctx, shortCopy.Container, shortCopy.Prefix+"/"); len(objs) != 0 {
		t.Errorf("the failed copy left %v in MinIO", objs)
	}
}
