package postgresql

import (
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// The agent's path (BackupZstd): a full backup compressed by PostgreSQL
// and incrementals compressed by the driver restore exactly, each point to
// its own state, through the same Restore as the plain streams; the point
// and the plain size are what the plain path gives for the same data.
func TestBackupZstdRestoresExactly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := newDriver(t)
	if err := src.Prepare(ctx, prepareRequest(alicePassword)); err != nil {
		t.Fatal(err)
	}
	aliceExec(t, ctx, src,
		"CREATE TABLE items (id int PRIMARY KEY, body text)",
		"INSERT INTO items SELECT g, 'first ' || g FROM generate_series(1, 20000) g")
	want1 := itemsSum(t, ctx, src)
	// zstdBackup takes a compressed backup and returns its point, the
	// compressed stream and the plain stream.
	zstdBackup := func(kind string, parent *protocol.BackupPoint) (protocol.BackupPoint, []byte, []byte) {
		t.Helper()
		var buf bytes.Buffer
		var plain atomic.Int64
		pt, err := src.BackupZstd(ctx, kind, parent, &buf, &plain)
		if err != nil {
			t.Fatalf("%s BackupZstd: %v", kind, err)
		}
		dec, err := zstd.NewReader(bytes.NewReader(buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		defer dec.Close()
		raw, err := io.ReadAll(dec)
		if err != nil {
			t.Fatalf("%s backup: not a zstd stream: %v", kind, err)
		}
		// The plain size: exact for the driver's own compression, to
		// the KiB from pg_basebackup's progress report.
		if d := int64(len(raw)) - plain.Load(); d < 0 || d >= 1024 || (kind == protocol.BackupIncremental && d != 0) {
			t.Errorf("%s backup: plain size %d, the stream decompresses to %d bytes", kind, plain.Load(), len(raw))
		}
		if pt.StartLSN == "" || pt.EndLSN == "" || pt.Timeline != 1 || pt.StartWAL == "" || pt.EndWAL == "" || mustLSN(t, pt.EndLSN) < mustLSN(t, pt.StartLSN) {
			t.Fatalf("%s backup: point %+v", kind, pt)
		}
		if parent != nil && (pt.StartWAL != parent.EndWAL || pt.StartLSN != parent.EndLSN) {
			t.Errorf("incremental point %+v does not start where its parent %+v ends", pt, *parent)
		}
		t.Logf("%s: %d bytes compressed, %d plain, %+v", kind, buf.Len(), len(raw), pt)
		return pt, buf.Bytes(), raw
	}
	full, fullZ, fullRaw := zstdBackup(protocol.BackupFull, nil)
	if len(fullZ)*4 > len(fullRaw) {
		t.Errorf("full backup: %d bytes compressed to %d", len(fullRaw), len(fullZ))
	}
	if bytes.Contains(fullRaw, []byte("backup_manifest")) || !full.NoManifest {
		t.Errorf("the server-compressed full backup: manifest in the stream %v, point %+v", bytes.Contains(fullRaw, []byte("backup_manifest")), full)
	}
	aliceExec(t, ctx, src,
		"INSERT INTO items SELECT g, 'second ' || g FROM generate_series(20001, 25000) g",
		"DELETE FROM items WHERE id % 7 = 0")
	want2 := itemsSum(t, ctx, src)
	inc, _, incRaw := zstdBackup(protocol.BackupIncremental, &full)
	aliceExec(t, ctx, src, "INSERT INTO items VALUES (100000, 'after the last backup')")

	// Without a manifest to check the files against, a stream cut at a
	// file boundary still fails: the server does not start from it.
	if err := newDriver(t).Restore(ctx, restoreRequest, []driver.RestoreLayer{memLayer(protocol.BackupFull, full, tarPrefix(t, fullRaw, "global/pg_control"))}); err == nil {
		t.Error("a compressed full backup cut before global/pg_control restored")
	}
	if got := itemsSum(t, ctx, restored(t, ctx, memLayer(protocol.BackupFull, full, fullRaw))); got != want1 {
		t.Errorf("restore of the compressed full backup: items %s, want %s", got, want1)
	}
	if got := itemsSum(t, ctx, restored(t, ctx, memLayer(protocol.BackupFull, full, fullRaw), memLayer(protocol.BackupIncremental, inc, incRaw))); got != want2 {
		t.Errorf("restore of the compressed chain: items %s, want %s", got, want2)
	}
}

// A server that cannot compress (older than 15; forced here) gets its
// plain stream compressed by the driver: manifest included, so the
// restore verifies it, and the plain size exact.
func TestBackupZstdWithoutServerCompression(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	src := newDriver(t)
	src.noServerCompression = true
	if err := src.Prepare(ctx, prepareRequest(alicePassword)); err != nil {
		t.Fatal(err)
	}
	aliceExec(t, ctx, src, "CREATE TABLE items (id int PRIMARY KEY, body text)",
		"INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 3000) g")
	want := itemsSum(t, ctx, src)
	var buf bytes.Buffer
	var plain atomic.Int64
	full, err := src.BackupZstd(ctx, protocol.BackupFull, nil, &buf, &plain)
	if err != nil {
		t.Fatal(err)
	}
	dec, err := zstd.NewReader(&buf)
	if err != nil {
		t.Fatal(err)
	}
	defer dec.Close()
	raw, err := io.ReadAll(dec)
	if err != nil || int64(len(raw)) != plain.Load() || full.NoManifest || !bytes.Contains(raw, []byte("backup_manifest")) {
		t.Fatalf("full backup: %d plain bytes (counted %d), %v, point %+v, manifest in the stream %v", len(raw), plain.Load(), err, full, bytes.Contains(raw, []byte("backup_manifest")))
	}
	if got := itemsSum(t, ctx, restored(t, ctx, memLayer(protocol.BackupFull, full, raw))); got != want {
		t.Errorf("restore: items %s, want %s", got, want)
	}
}

// Whether the server compresses is read from PG_VERSION: 15 and later do.
func TestServerCompressesByVersion(t *testing.T) {
	t.Parallel()
	for content, want := range map[string]bool{"17\n": true, "15\n": true, "14\n": false, "9.6\n": false} {
		dir := t.TempDir()
		if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if got, err := serverCompresses(&pgctl.Cluster{DataDir: dir}); err != nil || got != want {
			t.Errorf("PG_VERSION %q: %v, %v; want %v", content, got, err, want)
		}
	}
	dir := t.TempDir()
	if _, err := serverCompresses(&pgctl.Cluster{DataDir: dir}); err == nil {
		t.Error("no PG_VERSION: no error")
	}
	if err := os.WriteFile(filepath.Join(dir, "PG_VERSION"), []byte("x\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := serverCompresses(&pgctl.Cluster{DataDir: dir}); err == nil {
		t.Error("PG_VERSION x: no error")
	}
}
