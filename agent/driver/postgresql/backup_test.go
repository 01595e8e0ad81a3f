package postgresql

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/iotest"
	"time"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// backupOf takes a backup into memory (the agent's pipeline is not part of
// these tests).
func backupOf(t *testing.T, ctx context.Context, d *Driver, kind string, parent *protocol.BackupPoint) (protocol.BackupPoint, []byte) {
	t.Helper()
	var buf bytes.Buffer
	pt, err := d.Backup(ctx, kind, parent, &buf)
	if err != nil {
		t.Fatalf("%s backup: %v", kind, err)
	}
	if pt.StartLSN == "" || pt.EndLSN == "" || pt.Timeline == 0 || pt.StartWAL == "" || pt.EndWAL == "" {
		t.Fatalf("%s backup: incomplete point %+v", kind, pt)
	}
	if parent != nil && (pt.StartWAL != parent.EndWAL || pt.StartLSN != parent.EndLSN) {
		t.Errorf("incremental point %+v does not start where its parent %+v ends", pt, *parent)
	}
	if a, _ := parseLSN(pt.StartLSN); a > mustLSN(t, pt.EndLSN) {
		t.Errorf("%s backup ends before it starts: %+v", kind, pt)
	}
	return pt, buf.Bytes()
}

func mustLSN(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := parseLSN(s)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// memLayer is a restore layer read from memory.
func memLayer(kind string, pt protocol.BackupPoint, data []byte) driver.RestoreLayer {
	return driver.RestoreLayer{Kind: kind, Point: pt, Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}}
}

// restoreRequest is a new instance's prepare request for a restore: no
// databases or users of its own.
var restoreRequest = protocol.PrepareRequest{Datastore: "postgresql", Version: "15", FlavorRAMMB: 256, VolumeSizeGB: 1}

// restored restores chain onto a new volume, as the agent does: Restore,
// then Prepare.
func restored(t *testing.T, ctx context.Context, chain ...driver.RestoreLayer) *Driver {
	t.Helper()
	r := newDriver(t)
	if err := r.Restore(ctx, restoreRequest, chain); err != nil {
		t.Fatalf("Restore of %d backups: %v", len(chain), err)
	}
	if r.cluster("").Running() {
		t.Error("Restore left the server running; Prepare starts it")
	}
	if err := r.Prepare(ctx, restoreRequest); err != nil {
		t.Fatalf("Prepare after Restore: %v", err)
	}
	return r
}

// itemsSum is the content of app.items as alice sees it: row count and a
// digest of every row in order.
func itemsSum(t *testing.T, ctx context.Context, d *Driver) string {
	t.Helper()
	conn, err := connectTCP(ctx, d, "alice", alicePassword, "app")
	if err != nil {
		t.Fatalf("connect as alice: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	var sum string
	if err := conn.QueryRow(ctx, "SELECT count(*), coalesce(md5(string_agg(id || ':' || body, ',' ORDER BY id)), '') FROM items").Scan(&n, &sum); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d rows, md5 %s", n, sum)
}

func aliceExec(t *testing.T, ctx context.Context, d *Driver, sqls ...string) {
	t.Helper()
	conn, err := connectTCP(ctx, d, "alice", alicePassword, "app")
	if err != nil {
		t.Fatalf("connect as alice: %v", err)
	}
	defer conn.Close(ctx)
	for _, sql := range sqls {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
}

// A full backup, then changes, an incremental, more changes and an
// incremental of the incremental: each prefix of the chain restores
// exactly the state at its last backup, onto new volumes with their own
// addresses, flavors and passwords for the agent, and the users' own
// passwords kept.
func TestBackupChainRestoresExactly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	src := newDriver(t)
	if err := src.Prepare(ctx, prepareRequest(alicePassword)); err != nil {
		t.Fatal(err)
	}
	aliceExec(t, ctx, src,
		"CREATE TABLE items (id int PRIMARY KEY, body text)",
		"INSERT INTO items SELECT g, 'first ' || g FROM generate_series(1, 5000) g")
	want1 := itemsSum(t, ctx, src)
	size, err := src.BackupSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	full, fullData := backupOf(t, ctx, src, protocol.BackupFull, nil)
	t.Logf("full backup: %d bytes (estimate %d), %+v", len(fullData), size, full)
	if size < int64(len(fullData))/2 || size > int64(len(fullData))*2 {
		t.Errorf("BackupSize estimate %d for a %d-byte backup", size, len(fullData))
	}

	aliceExec(t, ctx, src,
		"INSERT INTO items SELECT g, 'second ' || g FROM generate_series(5001, 8000) g",
		"DELETE FROM items WHERE id % 7 = 0",
		"UPDATE items SET body = body || ' updated' WHERE id % 5 = 0")
	want2 := itemsSum(t, ctx, src)
	inc1, inc1Data := backupOf(t, ctx, src, protocol.BackupIncremental, &full)
	t.Logf("incremental 1: %d bytes, %+v", len(inc1Data), inc1)

	aliceExec(t, ctx, src,
		"INSERT INTO items SELECT g, 'third ' || g FROM generate_series(8001, 9000) g",
		"DELETE FROM items WHERE id BETWEEN 100 AND 200")
	want3 := itemsSum(t, ctx, src)
	inc2, inc2Data := backupOf(t, ctx, src, protocol.BackupIncremental, &inc1)
	t.Logf("incremental 2: %d bytes, %+v", len(inc2Data), inc2)

	// Not in any backup.
	aliceExec(t, ctx, src, "INSERT INTO items VALUES (100000, 'after the last backup')", "DELETE FROM items WHERE id < 50")
	if got := itemsSum(t, ctx, src); got == want3 {
		t.Fatal("the source did not change after the last backup")
	}
	if want1 == want2 || want2 == want3 {
		t.Fatal("the states to tell apart are equal")
	}

	fullL := memLayer(protocol.BackupFull, full, fullData)
	inc1L := memLayer(protocol.BackupIncremental, inc1, inc1Data)
	inc2L := memLayer(protocol.BackupIncremental, inc2, inc2Data)
	for _, tc := range []struct {
		chain []driver.RestoreLayer
		want  string
	}{
		{[]driver.RestoreLayer{fullL}, want1},
		{[]driver.RestoreLayer{fullL, inc1L}, want2},
		{[]driver.RestoreLayer{fullL, inc1L, inc2L}, want3},
	} {
		r := restored(t, ctx, tc.chain...)
		if got := itemsSum(t, ctx, r); got != tc.want {
			t.Errorf("restore of %d backups: items %s, want %s", len(tc.chain), got, tc.want)
		}
		checkRestoredInstance(t, ctx, r, src)
		if len(tc.chain) < 3 {
			if err := r.Stop(ctx); err != nil {
				t.Fatal(err)
			}
			continue
		}

		// The restored instance backs up in its turn (on a new timeline),
		// and its chain restores too.
		aliceExec(t, ctx, r, "INSERT INTO items VALUES (200000, 'on the restored instance')")
		rfull, rfullData := backupOf(t, ctx, r, protocol.BackupFull, nil)
		if rfull.Timeline != full.Timeline+1 {
			t.Errorf("restored instance's backup on timeline %d, want %d", rfull.Timeline, full.Timeline+1)
		}
		aliceExec(t, ctx, r, "DELETE FROM items WHERE id > 8500")
		rwant := itemsSum(t, ctx, r)
		rinc, rincData := backupOf(t, ctx, r, protocol.BackupIncremental, &rfull)
		// The source's backups are not parents of the restored instance's.
		if _, err := r.Backup(ctx, protocol.BackupIncremental, &inc2, io.Discard); err == nil {
			t.Error("an incremental on the source's backup succeeded on the restored instance")
		}
		if err := r.Stop(ctx); err != nil {
			t.Fatal(err)
		}
		rr := restored(t, ctx, memLayer(protocol.BackupFull, rfull, rfullData), memLayer(protocol.BackupIncremental, rinc, rincData))
		if got := itemsSum(t, ctx, rr); got != rwant {
			t.Errorf("restore of the restored instance's chain: items %s, want %s", got, rwant)
		}
	}

	// Pruning keeps what a chain from the kept point needs, and only that.
	var n int
	if _, err := src.Backup(ctx, protocol.BackupIncremental, &inc2, io.Discard); err != nil {
		t.Fatalf("incremental on incremental 2 before pruning: %v", err)
	}
	n, err = src.PruneWAL(ctx, &inc2)
	if err != nil {
		t.Fatalf("PruneWAL: %v", err)
	}
	if n == 0 {
		t.Error("PruneWAL removed nothing")
	}
	if _, err := src.Backup(ctx, protocol.BackupIncremental, &inc2, io.Discard); err != nil {
		t.Errorf("incremental on the kept point after pruning: %v", err)
	}
	if _, err := src.Backup(ctx, protocol.BackupIncremental, &full, io.Discard); err == nil || !strings.Contains(err.Error(), "not in the archive") {
		t.Errorf("incremental on a pruned point: %v, want a WAL segment missing from the archive", err)
	}

	// No backup left to keep (nil): everything archived before now goes,
	// and the next full backup starts a chain that works.
	if n, err := src.PruneWAL(ctx, nil); err != nil || n == 0 {
		t.Errorf("PruneWAL(nil) = %d, %v; want files removed", n, err)
	}
	if _, err := src.Backup(ctx, protocol.BackupIncremental, &inc2, io.Discard); err == nil || !strings.Contains(err.Error(), "not in the archive") {
		t.Errorf("incremental on a point pruned by PruneWAL(nil): %v, want a WAL segment missing from the archive", err)
	}
	fresh, err := src.Backup(ctx, protocol.BackupFull, nil, io.Discard)
	if err != nil {
		t.Fatalf("full backup after PruneWAL(nil): %v", err)
	}
	if _, err := src.Backup(ctx, protocol.BackupIncremental, &fresh, io.Discard); err != nil {
		t.Errorf("incremental on a full backup taken after PruneWAL(nil): %v", err)
	}
}

// checkRestoredInstance checks a restored instance runs with its own
// settings, not the source's, and holds nothing of the restore.
func checkRestoredInstance(t *testing.T, ctx context.Context, r, src *Driver) {
	t.Helper()
	if got := r.Status(ctx); got != protocol.ServiceHealthy {
		t.Errorf("restored instance status %q", got)
	}
	st := mustState(t, r)
	if !st.Prepared || st.SuperPassword == mustState(t, src).SuperPassword {
		t.Errorf("restored state: prepared %v, source's admin password %v", st.Prepared, st.SuperPassword == mustState(t, src).SuperPassword)
	}
	admin := adminTCP(t, ctx, r, "postgres")
	for name, want := range map[string]string{
		"port":                          fmt.Sprint(r.port),
		"listen_addresses":              "127.0.0.1",
		"unix_socket_directories":       filepath.Join(r.dataDir, runDir),
		"shared_buffers":                "64MB", // 256 MB flavor; the source has 512
		"archive_mode":                  "on",
		"restore_command":               "",
		"hot_standby":                   "on",
		"default_transaction_read_only": "off",
	} {
		var got string
		if err := admin.QueryRow(ctx, "SELECT current_setting($1)", name).Scan(&got); err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Errorf("restored %s = %q, want %q", name, got, want)
		}
	}
	var archiveCommand string
	if err := admin.QueryRow(ctx, "SHOW archive_command").Scan(&archiveCommand); err != nil || !strings.Contains(archiveCommand, r.archivePath()) {
		t.Errorf("restored archive_command %q (%v) does not archive to %s", archiveCommand, err, r.archivePath())
	}
	for _, name := range []string{restoreWALDir, restoreSockDir, filepath.Join(pgdataDir, "recovery.signal"), filepath.Join(pgdataDir, overridesName)} {
		if _, err := os.Stat(filepath.Join(r.dataDir, name)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after restore: %v", name, err)
		}
	}
	conf, err := os.ReadFile(filepath.Join(r.dataDir, pgdataDir, "coffer.conf"))
	if err != nil || strings.Contains(string(conf), "restore_command") || strings.Contains(string(conf), src.dataDir) {
		t.Errorf("restored coffer.conf (%v):\n%s", err, conf)
	}
	hba, err := os.ReadFile(filepath.Join(r.dataDir, pgdataDir, "pg_hba.conf"))
	if err != nil || strings.Contains(string(hba), "trust") {
		t.Errorf("restored pg_hba.conf (%v):\n%s", err, hba)
	}
}

// A backup does not stop writers; a full backup taken while they write
// restores a consistent state between the backup's start and its end, and
// the incremental taken after the writes stop restores all of them.
func TestBackupWhileWriting(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	src := newDriver(t)
	if err := src.Prepare(ctx, prepareRequest(alicePassword)); err != nil {
		t.Fatal(err)
	}
	aliceExec(t, ctx, src,
		"CREATE TABLE items (id int PRIMARY KEY, body text)",
		// Enough data for the backup to take a moment.
		"CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 200000) g")

	// One writer, one row per transaction, ids in order: any consistent
	// state holds exactly the rows 1..n.
	var committed atomic.Int64
	wctx, stopWriter := context.WithCancel(ctx)
	var wg sync.WaitGroup
	var writeErr error // read once done is closed
	done := make(chan struct{})
	wg.Go(func() {
		defer close(done)
		conn, err := connectTCP(wctx, src, "alice", alicePassword, "app")
		if err != nil {
			writeErr = err
			return
		}
		defer conn.Close(context.Background())
		for i := int64(1); wctx.Err() == nil; i++ {
			if _, err := conn.Exec(wctx, "INSERT INTO items VALUES ($1::int, 'row ' || $1::int)", i); err != nil {
				if wctx.Err() == nil {
					writeErr = err
				}
				return
			}
			committed.Store(i)
		}
	})
	waitRows := func(n int64) {
		for committed.Load() < n {
			select {
			case <-done:
				t.Fatalf("the writer stopped: %v", writeErr)
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	waitRows(200)
	before := committed.Load()
	full, fullData := backupOf(t, ctx, src, protocol.BackupFull, nil)
	after := committed.Load()
	waitRows(after + 200)
	inc1, inc1Data := backupOf(t, ctx, src, protocol.BackupIncremental, &full)
	waitRows(committed.Load() + 200)
	stopWriter()
	wg.Wait()
	if writeErr != nil {
		t.Fatalf("the writer failed during the backups: %v", writeErr)
	}
	t.Logf("rows: %d when the full backup started, %d when it ended, %d at the end", before, after, committed.Load())
	inc2, inc2Data := backupOf(t, ctx, src, protocol.BackupIncremental, &inc1)
	want := itemsSum(t, ctx, src)

	r := restored(t, ctx, memLayer(protocol.BackupFull, full, fullData))
	conn, err := connectTCP(ctx, r, "alice", alicePassword, "app")
	if err != nil {
		t.Fatal(err)
	}
	var n, maxID int64
	if err := conn.QueryRow(ctx, "SELECT count(*), coalesce(max(id), 0) FROM items").Scan(&n, &maxID); err != nil {
		t.Fatal(err)
	}
	conn.Close(ctx)
	if n != maxID || n < before || n > after {
		t.Errorf("full backup restored %d rows up to id %d; want rows 1..n with %d <= n <= %d", n, maxID, before, after)
	}
	if err := r.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	r = restored(t, ctx, memLayer(protocol.BackupFull, full, fullData), memLayer(protocol.BackupIncremental, inc1, inc1Data), memLayer(protocol.BackupIncremental, inc2, inc2Data))
	if got := itemsSum(t, ctx, r); got != want {
		t.Errorf("chain restored items %s, want %s", got, want)
	}
}

// A restore that fails leaves an empty volume and no server, and can be
// retried; a volume that holds an instance is refused and left alone.
func TestRestoreFailures(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	src := newDriver(t)
	if err := src.Prepare(ctx, prepareRequest(alicePassword)); err != nil {
		t.Fatal(err)
	}
	aliceExec(t, ctx, src,
		"CREATE TABLE items (id int PRIMARY KEY, body text)",
		"INSERT INTO items SELECT g, 'row ' || g FROM generate_series(1, 1000) g")
	full, fullData := backupOf(t, ctx, src, protocol.BackupFull, nil)
	aliceExec(t, ctx, src, "INSERT INTO items VALUES (1001, 'incremental')")
	inc, incData := backupOf(t, ctx, src, protocol.BackupIncremental, &full)
	want := itemsSum(t, ctx, src)

	fullL := memLayer(protocol.BackupFull, full, fullData)
	incL := memLayer(protocol.BackupIncremental, inc, incData)
	lying := inc
	lying.EndLSN = formatLSN(mustLSN(t, inc.EndLSN) + 64<<20) // WAL the chain does not have
	unreadable := driver.RestoreLayer{Kind: protocol.BackupIncremental, Point: inc, Open: func(context.Context) (io.ReadCloser, error) {
		return io.NopCloser(io.MultiReader(bytes.NewReader(incData[:len(incData)/2]), errReader{errors.New("segment 3 of backup x: checksum mismatch")})), nil
	}}

	r := newDriver(t)
	for _, tc := range []struct {
		name    string
		chain   []driver.RestoreLayer
		wantErr string
	}{
		{"truncated full backup", []driver.RestoreLayer{memLayer(protocol.BackupFull, full, fullData[:len(fullData)/2])}, "unexpected EOF"},
		{"full backup cut at a file boundary", []driver.RestoreLayer{memLayer(protocol.BackupFull, full, tarPrefix(t, fullData, "global/pg_control"))}, "does not match its manifest"},
		{"corrupted data file", []driver.RestoreLayer{memLayer(protocol.BackupFull, full, flipByte(t, fullData, "base/1/1259"))}, "does not match its manifest"},
		{"incremental read error", []driver.RestoreLayer{fullL, unreadable}, "checksum mismatch"},
		{"incremental without its WAL", []driver.RestoreLayer{fullL, memLayer(protocol.BackupIncremental, lying, incData)}, "WAL is missing"},
		{"garbage", []driver.RestoreLayer{memLayer(protocol.BackupFull, full, bytes.Repeat([]byte("garbage!"), 4096))}, ""},
		{"broken chain", []driver.RestoreLayer{fullL, memLayer(protocol.BackupIncremental, protocol.BackupPoint{StartWAL: "000000010000000000000099", Timeline: 1}, incData)}, "does not continue"},
		{"no full backup", []driver.RestoreLayer{incL}, "want full"},
	} {
		err := r.Restore(ctx, restoreRequest, tc.chain)
		t.Logf("%s: %v", tc.name, err)
		if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
			t.Errorf("%s: Restore error %v, want one containing %q", tc.name, err, tc.wantErr)
		}
		if entries, _ := os.ReadDir(r.dataDir); len(entries) != 0 {
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			t.Errorf("%s: the volume holds %v after a failed restore", tc.name, names)
		}
		if got := r.Status(ctx); got != protocol.ServiceNew {
			t.Errorf("%s: status after a failed restore %q, want new", tc.name, got)
		}
	}

	// A restore interrupted by a crash (its state file says restoring) is
	// removed and done again.
	if err := os.MkdirAll(filepath.Join(r.dataDir, pgdataDir, "base"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := r.saveRestoreState(restoreState{State: "restoring"}); err != nil {
		t.Fatal(err)
	}
	if err := r.Restore(ctx, restoreRequest, []driver.RestoreLayer{fullL, incL}); err != nil {
		t.Fatalf("Restore after an interrupted one: %v", err)
	}
	// Repeated (a redelivered command): done already, nothing read.
	if err := r.Restore(ctx, restoreRequest, []driver.RestoreLayer{{Kind: protocol.BackupFull, Open: func(context.Context) (io.ReadCloser, error) {
		return nil, errors.New("read a backup again")
	}}}); err != nil {
		t.Errorf("repeated Restore: %v", err)
	}
	if err := r.Prepare(ctx, restoreRequest); err != nil {
		t.Fatal(err)
	}
	if got := itemsSum(t, ctx, r); got != want {
		t.Errorf("restored items %s, want %s", got, want)
	}

	// A prepared instance's volume is not a restore target.
	err := src.Restore(ctx, restoreRequest, []driver.RestoreLayer{fullL})
	if err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("Restore onto a prepared volume: %v", err)
	}
	if got := itemsSum(t, ctx, src); got != want {
		t.Errorf("the refused restore changed the instance: %s, want %s", got, want)
	}
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

// tarPrefix returns data up to the tar entry named name (a stream that
// ends cleanly, without the rest of the backup, backup_label included).
func tarPrefix(t *testing.T, data []byte, name string) []byte {
	t.Helper()
	i := bytes.Index(data, append([]byte(name), 0))
	if i < 0 || i%512 != 0 {
		t.Fatalf("no tar header for %s", name)
	}
	return append(data[:i:i], make([]byte, 1024)...)
}

// flipByte returns a copy of data with a byte inside the tar entry name
// changed: the tar stays valid, the file's content does not.
func flipByte(t *testing.T, data []byte, name string) []byte {
	t.Helper()
	i := bytes.Index(data, append([]byte(name), 0))
	if i < 0 || i%512 != 0 {
		t.Fatalf("no tar header for %s", name)
	}
	out := bytes.Clone(data)
	out[i+512+100] ^= 0xFF
	return out
}

// A failing stream or a cancelled context stops pg_basebackup; the server
// keeps serving and holds nothing of the backup.
func TestBackupAborts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDriver(t)
	prepareWithNotes(t, ctx, d, 1)
	aliceExec(t, ctx, d, "CREATE TABLE bulk AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 100000) g")

	_, err := d.Backup(ctx, protocol.BackupFull, nil, &failingWriter{after: 1 << 20})
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("backup to a failing writer: %v", err)
	}
	cctx, ccancel := context.WithCancel(ctx)
	_, err = d.Backup(cctx, protocol.BackupFull, nil, &failingWriter{after: 1 << 20, cancel: ccancel})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled backup: %v", err)
	}
	if _, err := d.Backup(ctx, protocol.BackupIncremental, &protocol.BackupPoint{EndWAL: "nonsense", EndLSN: "0/0"}, io.Discard); err == nil {
		t.Error("incremental with a nonsense parent succeeded")
	}
	if _, err := d.Backup(ctx, "differential", nil, io.Discard); err == nil {
		t.Error("unknown backup kind accepted")
	}

	admin := adminTCP(t, ctx, d, "postgres")
	for deadline := time.Now().Add(10 * time.Second); ; {
		var senders, slots int
		if err := admin.QueryRow(ctx, "SELECT (SELECT count(*) FROM pg_stat_replication), (SELECT count(*) FROM pg_replication_slots)").Scan(&senders, &slots); err != nil {
			t.Fatal(err)
		}
		if senders == 0 && slots == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after the aborted backups: %d WAL senders, %d slots", senders, slots)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if out, _ := exec.Command("pgrep", "-f", "pg_basebackup.*"+d.dataDir).Output(); len(out) > 0 {
		t.Errorf("pg_basebackup still running: %s", out)
	}
	if n := countNotes(t, ctx, d); n != 1 {
		t.Errorf("%d notes after the aborted backups", n)
	}
	// And the next backup works.
	if _, err := d.Backup(ctx, protocol.BackupFull, nil, io.Discard); err != nil {
		t.Errorf("backup after aborted ones: %v", err)
	}
}

type failingWriter struct {
	after  int
	n      int
	cancel context.CancelFunc
}

func (w *failingWriter) Write(p []byte) (int, error) {
	w.n += len(p)
	if w.n > w.after {
		if w.cancel != nil {
			w.cancel()
			time.Sleep(200 * time.Millisecond) // let the cancellation land first
			return len(p), nil
		}
		return 0, errors.New("disk on fire")
	}
	return len(p), nil
}

// An instance prepared before the driver archived WAL gets archiving from
// EnsureRunning (stopped or running) or from its first backup; a
// configuration group turning archiving off makes backups fail clearly.
func TestArchivingForOlderInstances(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	d := newDriver(t)
	prepareWithNotes(t, ctx, d, 1)
	st := mustState(t, d)
	c := d.cluster(st.SuperPassword)

	// The configuration an older driver wrote: no archiving.
	makeOld := func() {
		t.Helper()
		if err := c.WriteConfig(serverSettings(512)); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(d.archivePath()); err != nil {
			t.Fatal(err)
		}
	}
	archiveMode := func() string {
		t.Helper()
		return showSetting(t, ctx, d, "archive_mode")
	}

	// Running: EnsureRunning (agent start) restarts it with archiving.
	makeOld()
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if got := archiveMode(); got != "off" {
		t.Fatalf("old configuration: archive_mode %s", got)
	}
	if err := d.EnsureRunning(ctx); err != nil {
		t.Fatalf("EnsureRunning: %v", err)
	}
	if got := archiveMode(); got != "on" {
		t.Errorf("after EnsureRunning: archive_mode %s", got)
	}
	if got := showSetting(t, ctx, d, "shared_buffers"); got != "128MB" {
		t.Errorf("EnsureRunning lost the flavor's settings: shared_buffers %s", got)
	}
	// Once on, EnsureRunning leaves the server alone.
	started := startTime(t, ctx, d)
	if err := d.EnsureRunning(ctx); err != nil {
		t.Fatal(err)
	}
	if !startTime(t, ctx, d).Equal(started) {
		t.Error("EnsureRunning restarted a server that archives")
	}

	// Stopped: it starts with archiving.
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	makeOld()
	if err := d.EnsureRunning(ctx); err != nil {
		t.Fatalf("EnsureRunning: %v", err)
	}
	if got := archiveMode(); got != "on" {
		t.Errorf("after EnsureRunning of a stopped server: archive_mode %s", got)
	}

	// Running with no agent restart since: the first backup turns it on,
	// and an incremental on that backup finds its WAL archived.
	makeOld()
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	full, _ := backupOf(t, ctx, d, protocol.BackupFull, nil)
	if got := archiveMode(); got != "on" {
		t.Errorf("after a backup: archive_mode %s", got)
	}
	aliceExec(t, ctx, d, "INSERT INTO notes (body) VALUES ('more')")
	backupOf(t, ctx, d, protocol.BackupIncremental, &full)

	// A configuration group may not switch archiving off.
	for _, name := range []string{"archive_mode", "wal_level"} {
		err := d.ApplyConfiguration(ctx, map[string]string{name: "off"}, true)
		if err == nil || !strings.Contains(err.Error(), "managed by Coffer") {
			t.Errorf("configuration group setting %s: %v", name, err)
		}
	}
	if err := d.ApplyConfiguration(ctx, map[string]string{"archive_command": "true"}, false); err == nil {
		t.Error("a configuration group replaced archive_command")
	}
}

// The archive command copies atomically, accepts a segment archived again
// with the same content and refuses a different one.
func TestArchiveCommand(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	d := &Driver{dataDir: filepath.Join(dir, "it's a 100% volume")}
	if err := os.MkdirAll(d.archivePath(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "seg"), []byte("segment content"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := d.archiveSettings()["archive_command"]
	run := func(name string) error {
		// PostgreSQL's substitutions: %p (relative to PGDATA), %f, %%.
		s := strings.NewReplacer("%p", "seg", "%f", name, "%%", "%").Replace(cmd)
		c := exec.Command("/bin/sh", "-c", s)
		c.Dir = dir
		out, err := c.CombinedOutput()
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}
	const name = "000000010000000000000001"
	if err := run(name); err != nil {
		t.Fatalf("archive: %v", err)
	}
	got, err := os.ReadFile(filepath.Join(d.archivePath(), name))
	if err != nil || string(got) != "segment content" {
		t.Fatalf("archived %q, %v", got, err)
	}
	if err := run(name); err != nil {
		t.Errorf("archive the same segment again: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "seg"), []byte("other content"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := run(name); err == nil {
		t.Error("archiving a different segment under an archived name succeeded")
	}
	if got, _ := os.ReadFile(filepath.Join(d.archivePath(), name)); string(got) != "segment content" {
		t.Errorf("the archived segment was replaced: %q", got)
	}
	entries, _ := os.ReadDir(d.archivePath())
	if len(entries) != 1 {
		t.Errorf("archive holds %d files, want 1 (no temporary files left)", len(entries))
	}
}

func TestWALNames(t *testing.T) {
	t.Parallel()
	const seg = 16 << 20
	for _, tc := range []struct {
		lsn  string
		want string
	}{
		{"0/3000100", "000000010000000000000003"},
		{"0/4000000", "000000010000000000000003"}, // an end at a boundary completes the segment before
		{"1/0", "0000000100000000000000FF"},
		{"1/1000001", "000000010000000100000001"},
	} {
		lsn, err := parseLSN(tc.lsn)
		if err != nil {
			t.Fatal(err)
		}
		if got := endSegment(1, lsn, seg).name(seg); got != tc.want {
			t.Errorf("end segment of %s = %s, want %s", tc.lsn, got, tc.want)
		}
		if f, err := parseWALName(tc.want, seg); err != nil || f.name(seg) != tc.want {
			t.Errorf("parse %s: %v %v", tc.want, f, err)
		}
	}
	if _, err := parseWALName("000000010000000000000100", seg); err == nil {
		t.Error("segment number 0x100 of 16 MB segments accepted")
	}
	if got := formatLSN(0x1_0000_00A8); got != "1/A8" {
		t.Errorf("formatLSN = %s", got)
	}
	for _, v := range []string{`'plain'`, `'it''s'`, `'back\\slash'`} {
		if _, ok := unquoteConf(v); !ok {
			t.Errorf("unquote %s failed", v)
		}
	}
	if got, _ := unquoteConf(`'a''b\\c'`); got != `a'b\c` {
		t.Errorf("unquote = %q", got)
	}
}

// The stream reaches the writer byte for byte, whatever the tar holds and
// whatever follows its end marker.
func TestForwardBaseBackup(t *testing.T) {
	t.Parallel()
	var src bytes.Buffer
	tw := tar.NewWriter(&src)
	files := []struct {
		name string
		size int
	}{{"backup_label", 200}, {"base/1/1259", 3 << 20}, {"empty", 0}, {"odd", 513}, {"backup_manifest", 70000}}
	for i, f := range files {
		body := bytes.Repeat([]byte{byte('a' + i)}, f.size)
		if err := tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o600, Size: int64(f.size), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	src.Write(make([]byte, 8192)) // pg_basebackup pads like tar(1)
	want := bytes.Clone(src.Bytes())

	var got bytes.Buffer
	label, manifest, err := forwardBaseBackup(iotest.HalfReader(&src), &got)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.Bytes(), want) {
		t.Errorf("forwarded %d bytes, differing from the %d read", got.Len(), len(want))
	}
	if len(label) != 200 || label[0] != 'a' || len(manifest) != 70000 || manifest[0] != 'e' {
		t.Errorf("label %d bytes, manifest %d bytes", len(label), len(manifest))
	}

	// A cut stream is an error.
	if _, _, err := forwardBaseBackup(bytes.NewReader(want[:len(want)/2]), io.Discard); err == nil {
		t.Error("a truncated stream forwarded without error")
	}
}
