package main_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"
)

// The WAL archive that incremental backups are cut from is trimmed by the
// control plane (COFFER_BACKUP_WAL_PRUNE_EVERY, 2 s here) to what the
// instance's backups need, checked on the instance's volume: without a
// backup nothing older than the current WAL file stays; with one, nothing
// older than its start goes, and an incremental over it still works;
// once it is deleted, the archive shrinks again.
func TestWALArchivePruned(t *testing.T) {
	t.Parallel()
	c := startBackupCoffer(t, "COFFER_BACKUP_WAL_PRUNE_EVERY=2s")
	src := c.pgInstance(t, "walsrc", "")
	conn := appConn(t, c.instanceIP(t, src))
	db := c.controlDB(t)
	ctx := context.Background()
	archive := filepath.Join(c.dataDir, "instances", src, "volume", "wal_archive")
	segmentName := regexp.MustCompile(`^[0-9A-F]{24}$`)
	segments := func() []string {
		t.Helper()
		entries, err := os.ReadDir(archive)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, e := range entries {
			if segmentName.MatchString(e.Name()) {
				out = append(out, e.Name())
			}
		}
		slices.Sort(out)
		return out
	}
	current := func() string {
		t.Helper()
		var s string
		if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}
	// fill writes ~60 MB of WAL: several segments to archive.
	sqlExec(t, conn, "CREATE TABLE filler (id int, pad text)")
	fill := func() {
		t.Helper()
		sqlExec(t, conn, "INSERT INTO filler SELECT g, repeat(md5(g::text), 6) FROM generate_series(1, 200000) g")
	}
	// pruned waits for a prune that started after since to finish and
	// returns how many files it removed.
	pruned := func(since time.Time) int {
		t.Helper()
		deadline := time.Now().Add(2 * time.Minute)
		for {
			var removed *int
			err := db.QueryRow(ctx, `SELECT sum((result->'output'->>'removed')::int)::int FROM agent_command
				WHERE instance_id = $1 AND name = 'prune_wal' AND state = 'succeeded' AND created_at > $2`, src, since).Scan(&removed)
			if err != nil {
				t.Fatal(err)
			}
			if removed != nil {
				return *removed
			}
			if time.Now().After(deadline) {
				t.Fatal("no prune ran within 2 minutes")
			}
			time.Sleep(500 * time.Millisecond)
		}
	}
	// removedTotal is how many files every prune of the instance removed.
	removedTotal := func() int {
		t.Helper()
		var n int
		if err := db.QueryRow(ctx, `SELECT coalesce(sum((result->'output'->>'removed')::int), 0)::int FROM agent_command
			WHERE instance_id = $1 AND name = 'prune_wal' AND state = 'succeeded'`, src).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	olderThan := func(limit string) []string {
		var out []string
		for _, s := range segments() {
			if s < limit {
				out = append(out, s)
			}
		}
		return out
	}
	// staysBefore waits for the prunes (every 2 s) to remove every archived
	// segment before limit and returns what is still there after a minute.
	// A segment completed, or archived, just after a prune read the
	// current WAL file is the next prune's.
	staysBefore := func(limit string) []string {
		t.Helper()
		deadline := time.Now().Add(time.Minute)
		for {
			old := olderThan(limit)
			if len(old) == 0 || time.Now().After(deadline) {
				return old
			}
			time.Sleep(500 * time.Millisecond)
		}
	}

	// No backup: what was archived goes.
	fill()
	fill()
	filled := time.Now()
	pruned(filled)
	// Prunes ran while the WAL was written too: what they removed
	// together.
	if n := removedTotal(); n == 0 {
		t.Errorf("prunes without backups removed nothing (archive %v)", segments())
	}
	if cur := current(); len(staysBefore(cur)) > 0 {
		t.Errorf("without backups, archived segments older than the current %s stay: %v", cur, olderThan(cur))
	}

	// A full backup: the archive keeps everything from its start.
	full := c.takeBackup(t, `{"backup": {"name": "full", "instance": "`+src+`"}}`)
	var start string
	if err := db.QueryRow(ctx, "SELECT point->>'start_wal' FROM backup WHERE id = $1", full["id"]).Scan(&start); err != nil || start == "" {
		t.Fatalf("backup start WAL %q: %v", start, err)
	}
	fill()
	fill()
	filled = time.Now()
	pruned(filled)
	if old := staysBefore(start); len(old) > 0 {
		t.Errorf("segments older than the backup's start %s stay: %v", start, old)
	}
	if kept := segments(); len(kept) < 2 || kept[0] != start {
		t.Errorf("with a backup starting at %s the archive holds %v", start, kept)
	}
	inc := c.takeBackup(t, `{"backup": {"name": "inc", "instance": "`+src+`", "parent_id": "`+full["id"].(string)+`"}}`)
	t.Logf("incremental over the full backup after pruning: %v bytes", inc["bytes_done"])

	// The backups deleted: nothing is kept for them any more.
	before := removedTotal()
	if code, out := c.api(t, "DELETE", "/backups/"+full["id"].(string), c.creds.MemberToken, ""); code != 202 {
		t.Fatalf("delete backup: %d %v", code, out)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if code, _ := c.api(t, "GET", "/backups/"+inc["id"].(string), c.creds.MemberToken, ""); code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the backups were not deleted within a minute")
		}
		time.Sleep(200 * time.Millisecond)
	}
	pruned(time.Now())
	if removedTotal() == before {
		t.Errorf("prune after the backups were deleted removed nothing (archive %v)", segments())
	}
	if cur := current(); len(staysBefore(cur)) > 0 {
		t.Errorf("after the backups were deleted, segments older than the current %s stay: %v", cur, olderThan(cur))
	}
}
