package main_test

import (
	"slices"
	"testing"
	"time"
)

// Backups through the real CLIs (CLIENT.md's `database backup …` and the
// legacy `backup-*`), authenticated by Keystone: a full backup, an
// incremental over it, the lists and shows both CLIs print, backup
// strategies, a restore with `database instance create --backup` whose data
// equals the incremental's point, the other project's view, and deletes.
func TestBackupCLI(t *testing.T) {
	t.Parallel()
	c := startKeystoneCoffer(t)
	member, alt := c.demo, c.alt

	src := c.pgInstance(t, "bk-src", "")
	conn := appConn(t, c.instanceIP(t, src))
	sqlExec(t, conn, "CREATE TABLE items (id int PRIMARY KEY, v text)")
	sqlExec(t, conn, "CREATE TABLE notes (id int PRIMARY KEY, v text)")
	sqlExec(t, conn, "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 2000) g")

	// Full backup with the OpenStack CLI.
	var full map[string]any
	c.oscJSON(t, member, &full, "database", "backup", "create", "cli-full", "--instance", src, "--description", "first")
	fullID, _ := full["id"].(string)
	if fullID == "" || full["name"] != "cli-full" || full["instance_id"] != src {
		t.Fatalf("backup create printed %v", full)
	}
	c.waitBackup(t, fullID, "COMPLETED", 3*time.Minute)

	sqlExec(t, conn, "INSERT INTO items SELECT g, md5(g::text) FROM generate_series(2001, 3000) g")
	sqlExec(t, conn, "INSERT INTO notes VALUES (1, 'after the full backup')")
	atInc := contents(t, conn)

	// Incremental with the legacy CLI (its --incremental picks the last
	// COMPLETED backup as the parent).
	var inc map[string]any
	c.troveJSON(t, member, &inc, "backup-create", src, "cli-inc", "--incremental")
	incID, _ := inc["id"].(string)
	if incID == "" {
		t.Fatalf("backup-create printed %v", inc)
	}
	c.waitBackup(t, incID, "COMPLETED", 3*time.Minute)
	sqlExec(t, conn, "INSERT INTO notes VALUES (2, 'after the incremental')")

	together(t, "reads",
		check{"backup show", func(t testing.TB) {
			var b map[string]any
			c.oscJSON(t, member, &b, "database", "backup", "show", incID)
			if b["status"] != "COMPLETED" || b["parent_id"] != fullID || b["instance_id"] != src || b["locationRef"] == nil {
				t.Errorf("backup show %s: %v", incID, b)
			}
			// OSC flattens the datastore into datastore / _version / _version_id.
			if b["datastore"] != "postgresql" || b["datastore_version_id"] == nil || b["datastore_version_id"] == "" {
				t.Errorf("backup show datastore: %v", b)
			}
		}},
		check{"backup list", func(t testing.TB) {
			var rows []map[string]any
			c.oscJSON(t, member, &rows, "database", "backup", "list")
			ids := column(rows, "ID")
			if !slices.Contains(ids, fullID) || !slices.Contains(ids, incID) {
				t.Errorf("backup list: %v", rows)
			}
			for _, r := range rows {
				if r["ID"] == incID && r["Parent ID"] != fullID {
					t.Errorf("backup list row of %s: %v", incID, r)
				}
			}
		}},
		check{"backup list instance", func(t testing.TB) {
			var rows []map[string]any
			c.oscJSON(t, member, &rows, "database", "backup", "list", "instance", src)
			if ids := column(rows, "ID"); len(ids) != 2 || !slices.Contains(ids, fullID) || !slices.Contains(ids, incID) {
				t.Errorf("backup list instance: %v", rows)
			}
		}},
		check{"trove backup-list", func(t testing.TB) {
			var rows []map[string]any
			c.troveJSON(t, member, &rows, "backup-list")
			if ids := column(rows, "id"); !slices.Contains(ids, fullID) || !slices.Contains(ids, incID) {
				t.Errorf("trove backup-list: %v", rows)
			}
		}},
		check{"trove backup-list-instance", func(t testing.TB) {
			var rows []map[string]any
			c.troveJSON(t, member, &rows, "backup-list-instance", src)
			if ids := column(rows, "id"); len(ids) != 2 {
				t.Errorf("trove backup-list-instance: %v", rows)
			}
		}},
		check{"trove backup-show", func(t testing.TB) {
			var b map[string]any
			c.troveJSON(t, member, &b, "backup-show", fullID)
			if b["id"] != fullID || b["status"] != "COMPLETED" || b["description"] != "first" {
				t.Errorf("trove backup-show: %v", b)
			}
		}},
		check{"other project", func(t testing.TB) {
			c.oscFails(t, alt, "", "database", "backup", "show", fullID)
			var rows []map[string]any
			c.oscJSON(t, alt, &rows, "database", "backup", "list")
			if len(rows) != 0 {
				t.Errorf("the other project lists backups: %v", rows)
			}
			c.oscFails(t, alt, "", "database", "backup", "delete", fullID)
		}},
		check{"strategies", func(t testing.TB) {
			var s map[string]any
			c.oscJSON(t, member, &s, "database", "backup", "strategy", "create", "--instance-id", src, "--swift-container", "cli-backups")
			if s["swift_container"] != "cli-backups" || s["instance_id"] != src {
				t.Errorf("strategy create: %v", s)
			}
			var rows []map[string]any
			c.oscJSON(t, member, &rows, "database", "backup", "strategy", "list", "--instance-id", src)
			if len(rows) != 1 || rows[0]["Swift Container"] != "cli-backups" {
				t.Errorf("strategy list: %v", rows)
			}
			c.osc(t, member, "database", "backup", "strategy", "delete", "--instance-id", src)
			c.oscJSON(t, member, &rows, "database", "backup", "strategy", "list", "--instance-id", src)
			if len(rows) != 0 {
				t.Errorf("strategy list after delete: %v", rows)
			}
		}},
	)

	// Restore the incremental's point into a new instance.
	var restored map[string]any
	c.oscJSON(t, member, &restored, "database", "instance", "create", "bk-restored", "--flavor", "1", "--size", "2",
		"--datastore", "postgresql", "--backup", incID)
	rid, _ := restored["id"].(string)
	if rid == "" {
		t.Fatalf("instance create --backup printed %v", restored)
	}
	rconn := appConn(t, c.instanceIP(t, rid))
	if got := contents(t, rconn); got != atInc {
		t.Errorf("restored from %s: %s, want %s", incID, got, atInc)
	}

	// A backup that an instance is being restored from is protected only
	// while it builds; now both deletes go through. The legacy CLI deletes
	// the child, the OpenStack CLI the parent.
	c.run(t, member, "trove", "backup-delete", incID)
	c.osc(t, member, "database", "backup", "delete", fullID)
	deadline := time.Now().Add(2 * time.Minute)
	for {
		var rows []map[string]any
		c.oscJSON(t, member, &rows, "database", "backup", "list", "instance", src)
		if len(rows) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("backups still listed after delete: %v", rows)
		}
		time.Sleep(time.Second)
	}
	if code, _ := c.api(t, "GET", "/backups/"+fullID, c.creds.MemberToken, ""); code != 404 {
		t.Errorf("GET of a deleted backup: %d, want 404", code)
	}
	c.oscFails(t, member, "", "database", "backup", "show", fullID)
}
