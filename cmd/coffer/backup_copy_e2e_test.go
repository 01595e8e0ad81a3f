package main_test

// Backup copies end to end: an all-in-one whose backups go to its file
// store with a real MinIO as copy location (COFFER_BACKUP_COPY_STORES=s3);
// a full backup is copied to MinIO, the original deleted, and the copy
// restored into a new instance whose contents must equal the source's at
// the backup.

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// copyPrefix is a loopback /16 of 127.165-169 (this file's range) that no
// other all-in-one of this process uses.
func copyPrefix(t *testing.T) string {
	t.Helper()
	for n := 169; n >= 165; n-- {
		if _, taken := takenPrefixes.LoadOrStore(n, true); !taken {
			return fmt.Sprintf("127.%d", n)
		}
	}
	t.Fatal("no free loopback /16 in 127.165-169")
	return ""
}

func TestBackupCopyToMinIORestores(t *testing.T) {
	t.Parallel()
	srv := objectstoretest.MinIO(t)
	cfg := srv.NewContainer("e2e-copy")
	env := append(srv.EnvList(cfg.Container), "COFFER_BACKUP_STORE=file", "COFFER_BACKUP_COPY_STORES=s3")
	c := startCoffer(t, append([]string{"COFFER_LOCAL_ADDRESS_PREFIX=" + copyPrefix(t),
		"COFFER_BACKUP_SEGMENT_SIZE=1048576", "COFFER_BACKUP_WATCH_EVERY=2s", "COFFER_BACKUP_STALL_TIMEOUT=30s"}, env...)...)
	st, err := objectstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	objects := storeObjects(t, st, cfg.Container)

	src := c.pgInstance(t, "src", "")
	conn := appConn(t, c.instanceIP(t, src))
	sqlExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, payload text NOT NULL);
		CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)`)
	sqlExec(t, conn, `INSERT INTO items SELECT g, repeat(md5(g::text || random()::text), 20) FROM generate_series(1, 5000) g`)
	sqlExec(t, conn, `INSERT INTO notes VALUES (1, '`+backupMarker+`')`)
	atFull := contents(t, conn)
	full := c.takeBackup(t, `{"backup": {"name": "full", "instance": "`+src+`"}}`)
	fullID := full["id"].(string)
	sqlExec(t, conn, `INSERT INTO notes VALUES (2, 'after the backup')`)

	// To a location that is not configured: 400 naming the configured ones.
	if code, out := c.api(t, "POST", "/backups/"+fullID+"/copy", c.creds.MemberToken, `{"copy": {"location": "swift"}}`); code != 400 ||
		!strings.Contains(fmt.Sprint(out), "Configured locations: file, s3.") {
		t.Errorf("copy to swift: %d %v", code, out)
	}
	start := time.Now()
	code, out := c.api(t, "POST", "/backups/"+fullID+"/copy", c.creds.MemberToken, `{"copy": {"location": "s3", "name": "offsite"}}`)
	if code != 202 {
		t.Fatalf("copy: %d %v", code, out)
	}
	copyID := out["backup"].(map[string]any)["id"].(string)
	cp := c.waitBackup(t, copyID, "COMPLETED", 3*time.Minute)
	t.Logf("copy to MinIO: %.1f s, %v GB", time.Since(start).Seconds(), cp["size"])
	var segments int
	manifest := false
	for _, o := range objects(fullID + "/") { // a copy keeps its source's prefix
		segments += strings.Count(o.Key, "/segment-")
		manifest = manifest || strings.HasSuffix(o.Key, "/manifest.json")
	}
	if segments < 2 || !manifest {
		t.Errorf("MinIO holds %d segments, manifest %v", segments, manifest)
	}

	// The original goes: the restore can only read MinIO.
	if code, out := c.api(t, "DELETE", "/backups/"+fullID, c.creds.MemberToken, ""); code != 202 {
		t.Fatalf("delete the original: %d %v", code, out)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		if code, _ := c.api(t, "GET", "/backups/"+fullID, c.creds.MemberToken, ""); code == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the original backup was not deleted")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if n := len(objects(fullID + "/")); n == 0 {
		t.Fatal("deleting the original removed the copy's objects")
	}
	restored := c.pgInstance(t, "r-copy", `"restorePoint": {"backupRef": "`+copyID+`"}`)
	if got := contents(t, appConn(t, c.instanceIP(t, restored))); got != atFull {
		t.Errorf("restored from the copy: %s, want %s", got, atFull)
	}
}
