package main_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// modulesPrefix is a loopback /16 in 127.190-199 for the modules test.
func modulesPrefix(t *testing.T) string {
	t.Helper()
	for n := 190; n <= 199; n++ {
		if _, taken := takenPrefixes.LoadOrStore(n, true); !taken {
			return fmt.Sprintf("127.%d", n)
		}
	}
	t.Fatal("no free loopback /16 in 127.190-199")
	return ""
}

// waitModuleFile polls until the module file on the instance's volume
// exists (want true) or is gone, and returns its contents.
func waitModuleFile(t *testing.T, path string, want bool) []byte {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		b, err := os.ReadFile(path)
		switch {
		case want && err == nil:
			return b
		case !want && errors.Is(err, fs.ErrNotExist):
			return nil
		case time.Now().After(deadline):
			t.Fatalf("module file %s: %v, want present=%v", path, err, want)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// The legacy `trove module-*` commands (CLIENT.md §2) against the
// all-in-one through Keystone: a ping module is created from a file and
// given to `trove create --module` (its contents land in
// <volume>/modules/<name>, 0600, after prepare); it is listed, shown,
// updated; a new_relic_license module is applied with module-apply (the
// license file is written); both are queried, counted, retrieved (the
// files written equal the originals), refused deletion while applied,
// removed (the files go) and deleted.
func TestModulesCLI(t *testing.T) {
	t.Parallel()
	c := startKeystoneCoffer(t, "COFFER_LOCAL_ADDRESS_PREFIX="+modulesPrefix(t))
	member := c.demo

	dir := t.TempDir()
	contents, license := "ping contents\nline two\n", "license_key=0123456789abcdef\n"
	md5of := func(s string) string {
		sum := md5.Sum([]byte(s))
		return hex.EncodeToString(sum[:])
	}
	file, licFile := filepath.Join(dir, "ping.dat"), filepath.Join(dir, "license.dat")
	for name, body := range map[string]string{file: contents, licFile: license} {
		if err := os.WriteFile(name, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	var mod map[string]any
	c.troveJSON(t, member, &mod, "module-create", "pinger", "ping", file, "--description", "a ping")
	if mod["name"] != "pinger" || mod["type"] != "ping" || mod["md5"] != md5of(contents) || mod["tenant"] != c.creds.ProjectID {
		t.Fatalf("module-create: %v", mod)
	}
	modID := mod["id"].(string)
	// At rest the contents are sealed under the project's key.
	var sealed bool
	if err := c.controlDB(t).QueryRow(context.Background(), `SELECT contents_key IS NOT NULL AND position($2::bytea IN contents) = 0
		FROM module WHERE id = $1`, modID, []byte("ping contents")).Scan(&sealed); err != nil || !sealed {
		t.Errorf("module contents at rest: sealed %v (%v)", sealed, err)
	}
	var inst map[string]any
	c.troveJSON(t, member, &inst, "create", "mod-db", "1", "--size", "1", "--datastore", "postgresql", "--module", "pinger")
	id, _ := inst["id"].(string)
	if id == "" {
		t.Fatalf("create --module: %v", inst)
	}

	together(t, "module reads",
		check{"module-list", func(t testing.TB) {
			var list []map[string]any
			c.troveJSON(t, member, &list, "module-list")
			// newrelic is being created concurrently: it may be listed too.
			if ids := column(list, "id"); !slices.Contains(ids, modID) || len(ids) > 2 {
				t.Errorf("module-list: %v", list)
			}
		}},
		check{"module-show", func(t testing.TB) {
			var m map[string]any
			c.troveJSON(t, member, &m, "module-show", "pinger")
			// module-update runs concurrently: either description.
			if m["id"] != modID || (m["description"] != "a ping" && m["description"] != "pings") || m["instance_count"] != 1.0 {
				t.Errorf("module-show: %v", m)
			}
		}},
		check{"module-update", func(t testing.TB) {
			var m map[string]any
			c.troveJSON(t, member, &m, "module-update", "pinger", "--description", "pings", "--apply_order", "2")
			if m["description"] != "pings" || m["apply_order"] != 2.0 || m["md5"] != md5of(contents) {
				t.Errorf("module-update: %v", m)
			}
		}},
		check{"module-create new_relic_license", func(t testing.TB) {
			var m map[string]any
			c.troveJSON(t, member, &m, "module-create", "newrelic", "new_relic_license", licFile)
			if m["type"] != "new_relic_license" || m["md5"] != md5of(license) {
				t.Errorf("module-create new_relic_license: %v", m)
			}
		}},
		check{"module-create of an admin option by a member", func(t testing.TB) {
			c.fails(t, member, "You must be admin to create a module with these options. (Tenant: all)",
				"trove", "module-create", "global", "ping", file, "--all_tenants")
		}},
	)

	volume := filepath.Join(c.dataDir, "instances", id, "volume")
	modFile, licModFile, licCfg := filepath.Join(volume, "modules", "pinger"), filepath.Join(volume, "modules", "newrelic"),
		filepath.Join(volume, "newrelic", "newrelic.cfg")
	c.waitStatus(t, id, "ACTIVE", 3*time.Minute)
	if got := waitModuleFile(t, modFile, true); string(got) != contents {
		t.Errorf("module file (create --module) holds %q, want %q", got, contents)
	}
	if fi, err := os.Stat(modFile); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("module file mode: %v %v", fi, err)
	}
	var applied []map[string]any
	c.troveJSON(t, member, &applied, "module-apply", "mod-db", "newrelic")
	if len(applied) != 1 || applied[0]["name"] != "newrelic" {
		t.Fatalf("module-apply: %v", applied)
	}
	if got := waitModuleFile(t, licCfg, true); string(got) != "license_key = 0123456789abcdef\n" {
		t.Errorf("New Relic license file holds %q", got)
	}
	if got := waitModuleFile(t, licModFile, true); string(got) != license {
		t.Errorf("newrelic module file holds %q", got)
	}
	// The guest's reports arrive with the commands' results.
	deadline := time.Now().Add(60 * time.Second)
	for {
		code, body := c.api(t, "GET", "/instances/"+id+"/modules?from_guest=True", c.creds.MemberToken, "")
		mods, _ := body["modules"].([]any)
		if code == 200 && len(mods) == 2 && mods[0].(map[string]any)["status"] == "OK" && mods[1].(map[string]any)["status"] == "OK" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("guest reports: %d %v", code, body)
		}
		time.Sleep(250 * time.Millisecond)
	}

	retrieved := filepath.Join(dir, "retrieved")
	together(t, "applied modules",
		check{"module-query", func(t testing.TB) {
			var q []map[string]any
			c.troveJSON(t, member, &q, "module-query", "mod-db")
			got := map[string]string{}
			for _, m := range q {
				got[fmt.Sprint(m["name"])] = fmt.Sprint(m["status"], "/", m["message"], "/", m["md5"])
			}
			if len(q) != 2 || got["pinger"] != "OK/Module applied/"+md5of(contents) ||
				got["newrelic"] != "OK/New Relic license applied/"+md5of(license) {
				t.Errorf("module-query: %v", q)
			}
		}},
		check{"module-list-instance", func(t testing.TB) {
			var l []map[string]any
			c.troveJSON(t, member, &l, "module-list-instance", "mod-db")
			if len(l) != 2 || l[0]["id"] != modID || l[0]["md5"] != md5of(contents) {
				t.Errorf("module-list-instance: %v", l)
			}
		}},
		check{"module-instances", func(t testing.TB) {
			var l []map[string]any
			c.troveJSON(t, member, &l, "module-instances", "pinger")
			if len(l) != 1 || l[0]["id"] != id || l[0]["name"] != "mod-db" {
				t.Errorf("module-instances: %v", l)
			}
		}},
		check{"module-instance-count", func(t testing.TB) {
			var l []map[string]any
			c.troveJSON(t, member, &l, "module-instance-count", "pinger")
			if len(l) != 1 || l[0]["instance_count"] != 1.0 || l[0]["current"] != true || l[0]["module_md5"] != md5of(contents) {
				t.Errorf("module-instance-count: %v", l)
			}
		}},
		check{"module-retrieve", func(t testing.TB) {
			out := c.run(t, member, "trove", "module-retrieve", "mod-db", "--directory", retrieved)
			for name, want := range map[string]string{"pinger_all_all.dat": contents, "newrelic_all_all.dat": license} {
				name = filepath.Join(retrieved, name)
				got, err := os.ReadFile(name)
				if err != nil || string(got) != want || !strings.Contains(out, name) {
					t.Errorf("module-retrieve: %q; %s holds %q (%v)", out, name, got, err)
				}
			}
		}},
		check{"module-delete while applied", func(t testing.TB) {
			c.fails(t, member, "non-terminated instance", "trove", "module-delete", "pinger")
		}},
	)

	// A live_update module's new contents reach the guest with module-reapply.
	newFile := filepath.Join(dir, "ping2.dat")
	if err := os.WriteFile(newFile, []byte("new ping contents\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var upd map[string]any
	c.troveJSON(t, member, &upd, "module-update", "pinger", "--file", newFile, "--live_update")
	if upd["md5"] != md5of("new ping contents\n") || upd["live_update"] != true {
		t.Errorf("module-update --file --live_update: %v", upd)
	}
	c.run(t, member, "trove", "module-reapply", "pinger")
	for deadline := time.Now().Add(90 * time.Second); ; time.Sleep(250 * time.Millisecond) {
		if b, err := os.ReadFile(modFile); err == nil && string(b) == "new ping contents\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("module-reapply: the new contents never reached the guest")
		}
	}

	together(t, "remove",
		check{"module-remove pinger", func(t testing.TB) { c.run(t, member, "trove", "module-remove", "mod-db", "pinger") }},
		check{"module-remove newrelic", func(t testing.TB) { c.run(t, member, "trove", "module-remove", "mod-db", "newrelic") }},
	)
	for _, f := range []string{modFile, licModFile, licCfg} {
		waitModuleFile(t, f, false)
	}
	together(t, "delete",
		check{"module-delete pinger", func(t testing.TB) { c.run(t, member, "trove", "module-delete", "pinger") }},
		check{"module-delete newrelic", func(t testing.TB) { c.run(t, member, "trove", "module-delete", "newrelic") }},
	)
	code, body := c.api(t, "GET", "/modules", c.creds.MemberToken, "")
	if code != 200 || len(body["modules"].([]any)) != 0 {
		t.Errorf("modules after module-delete: %d %v", code, body)
	}
}
