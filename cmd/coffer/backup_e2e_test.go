package main_test

// Backups end to end: the real all-in-one, real agents and PostgreSQL
// instances, and each object store (the embedded file store, a real MinIO
// and a real Swift from internal/objectstoretest): data written, a full
// backup, more data, an incremental backup, more data again, then each
// point restored into a new instance whose contents must equal that
// point's exactly. Faults: the object store stopped mid-backup, the agent
// killed mid-backup (both: FAILED with a reason, no COMPLETED backup, the
// instance ACTIVE), and a corrupted segment (the restore fails on its
// checksum; the new instance is ERROR, not ACTIVE).

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// backupPrefix is a loopback /16 of 127.150-164 (this file's range) that
// no other all-in-one of this process uses.
func backupPrefix(t *testing.T) string {
	t.Helper()
	for n := 150; n <= 164; n++ {
		if _, taken := takenPrefixes.LoadOrStore(n, true); !taken {
			return fmt.Sprintf("127.%d", n)
		}
	}
	t.Fatal("no free loopback /16 in 127.150-164")
	return ""
}

// startBackupCoffer starts an all-in-one with small segments (so that even
// a small database makes several) and a quick backup watchdog.
func startBackupCoffer(t *testing.T, env ...string) *coffer {
	t.Helper()
	return startCoffer(t, append([]string{
		"COFFER_LOCAL_ADDRESS_PREFIX=" + backupPrefix(t),
		"COFFER_BACKUP_SEGMENT_SIZE=" + strconv.Itoa(1<<20),
		"COFFER_BACKUP_WATCH_EVERY=2s",
		"COFFER_BACKUP_STALL_TIMEOUT=30s",
	}, env...)...)
}

const backupMarker = "COFFER-PLAINTEXT-MARKER-7f3a"

// pgInstance creates a PostgreSQL instance with database shop and user app
// (restorePoint: extra JSON fields) and returns its id.
func (c *coffer) pgInstance(t *testing.T, name, extra string) string {
	t.Helper()
	body := `{"instance": {"name": "` + name + `", "flavorRef": "1", "volume": {"size": 2}, "datastore": {"type": "postgresql"}`
	if extra != "" {
		body += ", " + extra
	} else {
		body += `, "databases": [{"name": "shop"}], "users": [{"name": "app", "password": "app-pw-1", "databases": [{"name": "shop"}]}]`
	}
	code, out := c.api(t, "POST", "/instances", c.creds.MemberToken, body+"}}")
	if code != 200 {
		t.Fatalf("create %s: %d %v", name, code, out)
	}
	return out["instance"].(map[string]any)["id"].(string)
}

func (c *coffer) instanceIP(t *testing.T, id string) string {
	t.Helper()
	inst := c.waitStatus(t, id, "ACTIVE", 3*time.Minute)
	return inst["ip"].([]any)[0].(string)
}

func appConn(t *testing.T, ip string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, "host="+ip+" port=5432 user=app password=app-pw-1 dbname=shop sslmode=disable")
	if err != nil {
		t.Fatalf("connect to %s: %v", ip, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

func sqlExec(t *testing.T, conn *pgx.Conn, sql string) {
	t.Helper()
	if _, err := conn.Exec(context.Background(), sql); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// contents is a digest of everything in the shop database's tables: row
// counts and a hash over every row, in key order.
func contents(t *testing.T, conn *pgx.Conn) string {
	t.Helper()
	var out []string
	for _, table := range []string{"items", "notes"} {
		var n int64
		var digest *string
		err := conn.QueryRow(context.Background(), fmt.Sprintf(
			"SELECT count(*), md5(string_agg(t::text, '|' ORDER BY t.id)) FROM %s t", table)).Scan(&n, &digest)
		if err != nil {
			t.Fatalf("read %s: %v", table, err)
		}
		d := ""
		if digest != nil {
			d = *digest
		}
		out = append(out, fmt.Sprintf("%s:%d:%s", table, n, d))
	}
	return strings.Join(out, " ")
}

// takeBackup asks for a backup and waits until it is COMPLETED.
func (c *coffer) takeBackup(t *testing.T, body string) map[string]any {
	t.Helper()
	code, out := c.api(t, "POST", "/backups", c.creds.MemberToken, body)
	if code != 202 {
		t.Fatalf("backup: %d %v", code, out)
	}
	return c.waitBackup(t, out["backup"].(map[string]any)["id"].(string), "COMPLETED", 3*time.Minute)
}

// waitBackup polls a backup until its status is want (a FAILED backup
// fails the test unless that is what is waited for).
func (c *coffer) waitBackup(t *testing.T, id, want string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var last map[string]any
	for time.Now().Before(deadline) {
		code, out := c.api(t, "GET", "/backups/"+id, c.creds.MemberToken, "")
		if code != 200 {
			t.Fatalf("show backup %s: %d %v", id, code, out)
		}
		last = out["backup"].(map[string]any)
		if last["status"] == want {
			return last
		}
		if last["status"] == "FAILED" || last["status"] == "COMPLETED" {
			t.Fatalf("backup %s is %s, want %s: %v", id, last["status"], want, last)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("backup %s not %s within %s: %v", id, want, timeout, last)
	return nil
}

// waitEither polls an instance until it is ACTIVE or ERROR.
func (c *coffer) waitSettled(t *testing.T, id string, timeout time.Duration) map[string]any {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		code, out := c.api(t, "GET", "/instances/"+id, c.creds.AdminToken, "")
		if code == 200 {
			inst := out["instance"].(map[string]any)
			if s := inst["status"]; s == "ACTIVE" || s == "ERROR" {
				return inst
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("instance %s neither ACTIVE nor ERROR within %s", id, timeout)
	return nil
}

// backupScenario is the full/incremental/restore round trip. objects
// lists a backup's objects in the store the all-in-one uses.
func backupScenario(t *testing.T, c *coffer, objects func(prefix string) []objectstore.ObjectInfo) {
	src := c.pgInstance(t, "src", "")
	conn := appConn(t, c.instanceIP(t, src))
	sqlExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, payload text NOT NULL);
		CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL)`)
	// ~3 MB of poorly compressible text, and a marker that must never be
	// readable in the store.
	sqlExec(t, conn, `INSERT INTO items SELECT g, repeat(md5(g::text || random()::text), 20) FROM generate_series(1, 5000) g`)
	sqlExec(t, conn, `INSERT INTO notes VALUES (1, '`+backupMarker+`')`)
	atFull := contents(t, conn)

	start := time.Now()
	full := c.takeBackup(t, `{"backup": {"name": "full", "instance": "`+src+`", "description": "the first"}}`)
	t.Logf("full backup: %.1f s, %v GB stored, %v bytes of stream", time.Since(start).Seconds(), full["size"], full["bytes_done"])
	if full["parent_id"] != nil || full["size"] == nil || full["locationRef"] == nil {
		t.Errorf("full backup: %v", full)
	}
	fullID := full["id"].(string)

	sqlExec(t, conn, `INSERT INTO items SELECT g, repeat(md5(g::text || random()::text), 20) FROM generate_series(5001, 7000) g;
		UPDATE items SET payload = 'changed' WHERE id % 97 = 0; DELETE FROM items WHERE id % 101 = 0;
		INSERT INTO notes VALUES (2, 'after the full backup')`)
	atInc := contents(t, conn)
	start = time.Now()
	inc := c.takeBackup(t, `{"backup": {"name": "inc", "instance": "`+src+`", "incremental": 1}}`)
	t.Logf("incremental backup: %.1f s, %v bytes of stream", time.Since(start).Seconds(), inc["bytes_done"])
	if inc["parent_id"] != fullID {
		t.Errorf("incremental backup's parent: %v, want %s", inc["parent_id"], fullID)
	}
	incID := inc["id"].(string)
	// Written after the last backup: in no restore.
	sqlExec(t, conn, `INSERT INTO notes VALUES (3, 'after every backup')`)
	if after := contents(t, conn); after == atInc {
		t.Fatal("the last write changed nothing")
	}
	if code, out := c.api(t, "GET", "/instances/"+src, c.creds.MemberToken, ""); code != 200 || out["instance"].(map[string]any)["status"] != "ACTIVE" {
		t.Errorf("source instance after the backups: %d %v", code, out)
	}

	// The store holds several encrypted segments and a manifest per
	// backup; the data is not readable in them.
	for _, id := range []string{fullID, incID} {
		objs := objects(id + "/")
		var segments int
		manifest := false
		for _, o := range objs {
			if strings.Contains(o.Key, "/segment-") {
				segments++
			}
			manifest = manifest || strings.HasSuffix(o.Key, "/manifest.json")
		}
		if !manifest || segments == 0 {
			t.Errorf("backup %s: objects %v", id, objs)
		}
		if id == fullID && segments < 2 {
			t.Errorf("full backup in %d segment(s); want several at 1 MiB", segments)
		}
	}

	// Each point restored into its own instance, in parallel.
	restored := map[string]string{}
	for _, p := range []struct{ name, backup string }{{"r-full", fullID}, {"r-inc", incID}} {
		restored[p.name] = c.pgInstance(t, p.name, `"restorePoint": {"backupRef": "`+p.backup+`"}`)
	}
	start = time.Now()
	for name, want := range map[string]string{"r-full": atFull, "r-inc": atInc} {
		got := contents(t, appConn(t, c.instanceIP(t, restored[name])))
		if got != want {
			t.Errorf("%s: contents %s, want %s", name, got, want)
		}
	}
	t.Logf("both restores ACTIVE and checked %.1f s after the requests", time.Since(start).Seconds())

	// Protected while in use, deleted with its children otherwise, and
	// its objects go with it.
	if code, out := c.api(t, "DELETE", "/backups/"+fullID, c.creds.MemberToken, ""); code != 202 {
		t.Fatalf("delete: %d %v", code, out)
	}
	deadline := time.Now().Add(time.Minute)
	for {
		c1, _ := c.api(t, "GET", "/backups/"+fullID, c.creds.MemberToken, "")
		c2, _ := c.api(t, "GET", "/backups/"+incID, c.creds.MemberToken, "")
		if c1 == 404 && c2 == 404 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backups not deleted: %d %d", c1, c2)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, id := range []string{fullID, incID} {
		if objs := objects(id + "/"); len(objs) != 0 {
			t.Errorf("backup %s deleted, objects left: %v", id, objs)
		}
	}
}

func TestBackupRestoreFileStore(t *testing.T) {
	t.Parallel()
	c := startBackupCoffer(t)
	root := filepath.Join(c.dataDir, "backups", "database_backups")
	objects := func(prefix string) []objectstore.ObjectInfo {
		var out []objectstore.ObjectInfo
		_ = filepath.WalkDir(filepath.Join(root, prefix), func(p string, d os.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				rel, _ := filepath.Rel(root, p)
				info, _ := d.Info()
				out = append(out, objectstore.ObjectInfo{Key: rel, Size: info.Size()})
				if b, _ := os.ReadFile(p); bytes.Contains(b, []byte(backupMarker)) {
					t.Errorf("%s holds the data in plain text", rel)
				}
			}
			return nil
		})
		return out
	}
	backupScenario(t, c, objects)
}

func TestBackupRestoreMinIO(t *testing.T) {
	t.Parallel()
	srv := objectstoretest.MinIO(t)
	cfg := srv.NewContainer("e2e-backup")
	c := startBackupCoffer(t, srv.EnvList(cfg.Container)...)
	st, err := objectstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	backupScenario(t, c, storeObjects(t, st, cfg.Container))
}

func TestBackupRestoreSwift(t *testing.T) {
	t.Parallel()
	srv := objectstoretest.Swift(t)
	cfg := srv.NewContainer("e2e-backup")
	c := startBackupCoffer(t, srv.EnvList(cfg.Container)...)
	st, err := objectstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	backupScenario(t, c, storeObjects(t, st, cfg.Container))
}

// storeObjects lists objects through the store itself, checking that none
// holds the data in plain text.
func storeObjects(t *testing.T, st objectstore.Store, container string) func(string) []objectstore.ObjectInfo {
	return func(prefix string) []objectstore.ObjectInfo {
		t.Helper()
		ctx := context.Background()
		objs, err := st.List(ctx, container, prefix)
		if err != nil {
			t.Fatalf("list %s: %v", prefix, err)
		}
		for _, o := range objs {
			if !strings.Contains(o.Key, "/segment-") {
				continue
			}
			rd, err := st.Get(ctx, container, o.Key)
			if err != nil {
				t.Fatal(err)
			}
			var buf bytes.Buffer
			_, _ = buf.ReadFrom(rd)
			rd.Close()
			if bytes.Contains(buf.Bytes(), []byte(backupMarker)) {
				t.Errorf("%s holds the data in plain text", o.Key)
			}
		}
		return objs
	}
}

// bigSource makes an instance with enough data that a backup in 16 KiB
// segments, one at a time, takes seconds: time for a fault.
func bigSource(t *testing.T, c *coffer) (id string, conn *pgx.Conn) {
	t.Helper()
	id = c.pgInstance(t, "src", "")
	conn = appConn(t, c.instanceIP(t, id))
	sqlExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, payload text NOT NULL);
		CREATE TABLE notes (id int PRIMARY KEY, body text NOT NULL);
		INSERT INTO items SELECT g, repeat(md5(g::text || random()::text), 40) FROM generate_series(1, 15000) g`)
	return id, conn
}

// faultBackup starts a backup and waits until its first segments are
// stored, then calls fault; the backup must then fail with a reason that
// contains one of reasons, leaving no COMPLETED backup and the instance
// ACTIVE.
func faultBackup(t *testing.T, c *coffer, src string, fault func(), reasons ...string) {
	t.Helper()
	code, out := c.api(t, "POST", "/backups", c.creds.MemberToken, `{"backup": {"name": "doomed", "instance": "`+src+`"}}`)
	if code != 202 {
		t.Fatalf("backup: %d %v", code, out)
	}
	id := out["backup"].(map[string]any)["id"].(string)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		_, out := c.api(t, "GET", "/backups/"+id, c.creds.MemberToken, "")
		b := out["backup"].(map[string]any)
		if b["bytes_done"].(float64) > 0 {
			t.Logf("fault at %v of %v bytes", b["bytes_done"], b["estimated_bytes"])
			break
		}
		if b["status"] != "NEW" && b["status"] != "BUILDING" || time.Now().After(deadline) {
			t.Fatalf("backup never got under way: %v", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	_, inst := c.api(t, "GET", "/instances/"+src, c.creds.MemberToken, "")
	if s := inst["instance"].(map[string]any)["status"]; s != "BACKUP" {
		t.Errorf("instance during the backup: %v", s)
	}
	fault()
	start := time.Now()
	b := c.waitBackup(t, id, "FAILED", 3*time.Minute)
	reason, _ := b["fail_reason"].(string)
	t.Logf("FAILED %.1f s after the fault: %s", time.Since(start).Seconds(), reason)
	matched := false
	for _, r := range reasons {
		matched = matched || strings.Contains(reason, r)
	}
	if !matched {
		t.Errorf("fail_reason %q mentions none of %q", reason, reasons)
	}
	if b["size"] != nil || b["locationRef"] != nil {
		t.Errorf("a failed backup shows a size or location: %v", b)
	}
	_, inst = c.api(t, "GET", "/instances/"+src, c.creds.MemberToken, "")
	if s := inst["instance"].(map[string]any)["status"]; s != "ACTIVE" {
		t.Errorf("instance after the failed backup: %v", s)
	}
	db := c.controlDB(t)
	var completed, secrets int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM backup WHERE status = 'COMPLETED'").Scan(&completed); err != nil || completed != 0 {
		t.Errorf("COMPLETED backups: %d (%v)", completed, err)
	}
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM agent_command WHERE name = 'backup' AND payload::text LIKE '%data_key%'").Scan(&secrets); err != nil || secrets != 0 {
		t.Errorf("backup commands still holding their key: %d (%v)", secrets, err)
	}
}

func slowBackups() []string {
	return []string{"COFFER_BACKUP_SEGMENT_SIZE=16384", "COFFER_BACKUP_PARALLEL=1"}
}

func TestBackupObjectStoreStoppedMidBackup(t *testing.T) {
	t.Parallel()
	srv := objectstoretest.StartMinIO(t)
	cfg := srv.NewContainer("e2e-fault")
	c := startBackupCoffer(t, append(srv.EnvList(cfg.Container), slowBackups()...)...)
	src, _ := bigSource(t, c)
	faultBackup(t, c, src, func() { srv.Stop(t) }, "Backup failed on the guest", "object store")
	// The store back, backups work again.
	srv.Restart(t)
	c.takeBackup(t, `{"backup": {"name": "after", "instance": "`+src+`"}}`)
}

func TestBackupAgentKilledMidBackup(t *testing.T) {
	t.Parallel()
	c := startBackupCoffer(t, slowBackups()...)
	src, _ := bigSource(t, c)
	pidFile := filepath.Join(c.dataDir, "instances", src, "agent.pid")
	faultBackup(t, c, src, func() {
		b, err := os.ReadFile(pidFile)
		if err != nil {
			t.Fatal(err)
		}
		pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil || pid <= 1 {
			t.Fatalf("agent pid %q", b)
		}
		if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
	}, "no progress", "stopped responding")
}

func TestRestoreCorruptedSegmentFails(t *testing.T) {
	t.Parallel()
	c := startBackupCoffer(t)
	src := c.pgInstance(t, "src", "")
	conn := appConn(t, c.instanceIP(t, src))
	sqlExec(t, conn, `CREATE TABLE items (id int PRIMARY KEY, payload text NOT NULL);
		INSERT INTO items SELECT g, repeat(md5(g::text), 10) FROM generate_series(1, 2000) g`)
	b := c.takeBackup(t, `{"backup": {"name": "full", "instance": "`+src+`"}}`)
	id := b["id"].(string)
	// One byte of one segment flipped, its size unchanged.
	seg := filepath.Join(c.dataDir, "backups", "database_backups", id, "segment-000001")
	data, err := os.ReadFile(seg)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	data[len(data)/2] ^= 0x40
	if err := os.WriteFile(seg, data, 0o600); err != nil {
		t.Fatal(err)
	}
	r := c.pgInstance(t, "restored", `"restorePoint": {"backupRef": "`+id+`"}`)
	inst := c.waitSettled(t, r, 3*time.Minute)
	if inst["status"] != "ERROR" {
		t.Fatalf("restore from a corrupted backup: %v", inst)
	}
	f, _ := inst["fault"].(map[string]any)
	details, _ := f["details"].(string)
	t.Logf("fault: %v / %s", f["message"], details)
	if !strings.Contains(details, "checksum") {
		t.Errorf("fault details %q do not name the checksum (segment sha256 was %s)", details, hex.EncodeToString(sum[:]))
	}
}
