package functions_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/jobs"
)

// The generic tests (isolation, bad input, operation tables) cover the
// backup routes through these entries.
func init() {
	validBodies["create-backup"] = []func(w *world) string{
		func(w *world) string {
			return `{"backup": {"name": "b2", "instance": "` + w.instance + `", "description": "second", "incremental": 1,
			  "swift_container": "database_backups", "storage_driver": "file"}}`
		},
		func(w *world) string {
			return `{"backup": {"name": "b3", "instance": "` + w.instance + `", "parent_id": "` + w.backup + `", "incremental": 0}}`
		},
	}
	validBodies["create-backup-strategy"] = []func(w *world) string{
		func(w *world) string {
			return `{"backup_strategy": {"instance_id": "` + w.instance + `", "swift_container": "my_backups"}}`
		},
	}
	validBodies["create-instance"] = append(validBodies["create-instance"], func(w *world) string {
		return `{"instance": {"name": "restored", "flavorRef": "1", "volume": {"size": 1}, "restorePoint": {"backupRef": "` + w.backup + `"}}}`
	})
	for _, op := range []string{"create-backup", "create-backup-strategy", "delete-backup-strategies"} {
		ownProjectCreates[op] = true
	}
}

// testBackupDeps are the backup keyring and a file object store of a test
// API.
func testBackupDeps(t testing.TB) (*backupkey.Keyring, *objectstore.File) {
	t.Helper()
	master := make([]byte, backupkey.KeySize)
	if _, err := rand.Read(master); err != nil {
		t.Fatal(err)
	}
	keys, err := backupkey.New(master)
	if err != nil {
		t.Fatal(err)
	}
	files, err := objectstore.NewFile(t.TempDir(), "https://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	return keys, files
}

// completedBackup writes a COMPLETED backup of instance (over parent, if
// not empty) as a finished backup leaves it: key wrapped by the project's
// key, one segment, a point.
func (f *apiFixture) completedBackup(t testing.TB, instance, parent string) uuid.UUID {
	t.Helper()
	ctx := context.Background()
	q := store.New(f.pool)
	var project string
	var version uuid.UUID
	if err := f.pool.QueryRow(ctx, "SELECT project_id, datastore_version_id FROM instance WHERE id = $1", instance).Scan(&project, &version); err != nil {
		t.Fatal(err)
	}
	pk, err := f.keys.ProjectKey(ctx, q, project)
	if err != nil {
		t.Fatal(err)
	}
	id := uuid.New()
	_, wrapped, err := f.keys.NewDataKey(pk, id)
	if err != nil {
		t.Fatal(err)
	}
	var parentID uuid.NullUUID
	if parent != "" {
		parentID = uuid.NullUUID{UUID: uuid.MustParse(parent), Valid: true}
	}
	if _, err := q.InsertBackup(ctx, store.InsertBackupParams{
		ID: id, ProjectID: project, InstanceID: uuid.NullUUID{UUID: uuid.MustParse(instance), Valid: true},
		DatastoreVersionID: version, ParentID: parentID, Name: "done", Incremental: parent != "",
		Location: "file", Container: "database_backups", Prefix: id.String(), KeyID: pk.ID, WrappedKey: wrapped,
		SegmentSize: 64 << 20, VolumeSizeGb: 1,
	}); err != nil {
		t.Fatal(err)
	}
	f.acctExec(t, `UPDATE backup SET status = 'COMPLETED', completed_at = now(), point = '{"end_lsn": "0/3000100", "timeline": 1}',
		segment_count = 1, stored_bytes = 1000, bytes_done = 5000 WHERE id = $1`, id)
	f.acctExec(t, `INSERT INTO backup_segment (backup_id, index, size, sha256) VALUES ($1, 0, 1000, $2)`, id, strings.Repeat("ab", 32))
	// The segment's object, which a restore looks for.
	if err := f.files.EnsureContainer(ctx, "database_backups"); err != nil {
		t.Fatal(err)
	}
	if err := f.files.Put(ctx, "database_backups", jobs.SegmentKey(id.String(), 0), bytes.NewReader(make([]byte, 1000)), 1000); err != nil {
		t.Fatal(err)
	}
	return id
}

// backupWorld gives the world's instance a COMPLETED backup (returned)
// and project A a project-wide backup strategy.
func (w *world) backupWorld(t testing.TB) string {
	t.Helper()
	w.acctExec(t, "INSERT INTO backup_strategy (project_id, instance_id, container) VALUES ($1, '', 'database_backups')", w.projectA)
	return w.completedBackup(t, w.instance, "").String()
}

// backupCommand is the backup command queued for a backup.
func (f *apiFixture) backupCommand(t testing.TB, backup string) (state string, req protocol.BackupRequest) {
	t.Helper()
	var payload []byte
	if err := f.pool.QueryRow(context.Background(), `SELECT c.state, c.payload FROM agent_command c
		JOIN backup b ON b.command_id = c.id WHERE b.id = $1`, backup).Scan(&state, &payload); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(payload, &req); err != nil {
		t.Fatal(err)
	}
	return state, req
}

func (f *apiFixture) backupStatus(t testing.TB, id string) string {
	t.Helper()
	var s string
	if err := f.pool.QueryRow(context.Background(), "SELECT status FROM backup WHERE id = $1", id).Scan(&s); err != nil {
		t.Fatal(err)
	}
	return s
}

// finishBackup plays the agent and FinalizeBackup: the backup COMPLETED,
// the instance no longer busy.
func (f *apiFixture) finishBackup(t testing.TB, id string) {
	t.Helper()
	f.acctExec(t, `UPDATE backup SET status = 'COMPLETED', completed_at = now(), segment_count = 1, stored_bytes = 2000,
		bytes_done = 9000, point = '{"end_lsn": "0/5000000", "timeline": 1}' WHERE id = $1`, id)
	f.acctExec(t, `INSERT INTO backup_segment (backup_id, index, size, sha256) VALUES ($1, 0, 2000, $2)`, id, strings.Repeat("cd", 32))
	f.acctExec(t, `UPDATE agent_command SET state = 'succeeded', payload = '{}', completed_at = now() WHERE id = (SELECT command_id FROM backup WHERE id = $1)`, id)
	f.acctExec(t, `UPDATE instance SET running_backup_id = NULL WHERE running_backup_id = $1`, id)
}

func TestBackupLifecycle(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := "/v1.0/" + f.projectA
	inst := f.activeInstance(t, "src")
	code, body := f.do(t, "POST", a+"/backups", f.tokenA, `{"backup": {"name": "nightly", "instance": "`+inst+`", "description": "first"}}`)
	if code != 202 {
		t.Fatalf("create: %d %v", code, body)
	}
	b := body["backup"].(map[string]any)
	id := b["id"].(string)
	if b["status"] != "NEW" || b["instance_id"] != inst || b["name"] != "nightly" || b["description"] != "first" ||
		b["parent_id"] != nil || b["size"] != nil || b["locationRef"] != nil || b["project_id"] != f.projectA {
		t.Errorf("create answer: %v", b)
	}
	ds := b["datastore"].(map[string]any)
	if ds["type"] != "postgresql" || ds["version"] == "" || ds["version_id"] == "" {
		t.Errorf("datastore: %v", ds)
	}

	// One transaction wrote the backup, its command (with the key) and
	// its watchdog; the key is in no job's arguments.
	state, req := f.backupCommand(t, id)
	if state != "pending" || req.BackupID != id || req.Kind != protocol.BackupFull || len(req.DataKey) != 32 ||
		req.Parent != nil || req.SegmentSize <= 0 || req.Parallel <= 0 {
		t.Errorf("command: %s %+v", state, req)
	}
	var jobs int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM river_job WHERE kind = 'watch_backup' AND args->>'backup_id' = $1", id).Scan(&jobs); err != nil || jobs != 1 {
		t.Errorf("watchdog jobs: %d %v", jobs, err)
	}
	var leak int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM river_job WHERE args::text LIKE '%' || $1 || '%'",
		base64.StdEncoding.EncodeToString(req.DataKey)).Scan(&leak); err != nil || leak != 0 {
		t.Errorf("the data key is in %d job args (%v)", leak, err)
	}
	var wrapped []byte
	if err := f.pool.QueryRow(context.Background(), "SELECT wrapped_key FROM backup WHERE id = $1", id).Scan(&wrapped); err != nil {
		t.Fatal(err)
	}
	pk, err := f.keys.ProjectKey(context.Background(), store.New(f.pool), f.projectA)
	if err != nil {
		t.Fatal(err)
	}
	if key, err := f.keys.Unwrap(pk, uuid.MustParse(id), wrapped); err != nil || string(key) != string(req.DataKey) {
		t.Errorf("stored key does not unwrap to the command's: %v", err)
	}

	// The instance shows BACKUP and takes no action meanwhile.
	code, body = f.do(t, "GET", a+"/instances/"+inst, f.tokenA, "")
	if s := body["instance"].(map[string]any)["status"]; code != 200 || s != "BACKUP" {
		t.Errorf("instance during backup: %d %v", code, s)
	}
	code, body = f.do(t, "POST", a+"/instances/"+inst+"/action", f.tokenA, `{"restart": {}}`)
	if code != 422 || !strings.Contains(fault(t, body, "unprocessableEntity", 422), "status was BACKUP") {
		t.Errorf("restart during backup: %d %v", code, body)
	}
	code, body = f.do(t, "POST", a+"/backups", f.tokenA, `{"backup": {"name": "again", "instance": "`+inst+`"}}`)
	if code != 422 {
		t.Errorf("second backup at once: %d %v", code, body)
	}
	code, body = f.do(t, "DELETE", a+"/backups/"+id, f.tokenA, "")
	if code != 422 || !strings.Contains(fault(t, body, "unprocessableEntity", 422), "running") {
		t.Errorf("delete while running: %d %v", code, body)
	}

	// Show, lists; another project sees none of it.
	f.acctExec(t, "UPDATE backup SET status = 'BUILDING', bytes_done = 100, estimated_bytes = 400 WHERE id = $1", id)
	code, body = f.do(t, "GET", a+"/backups/"+id, f.tokenA, "")
	if b := body["backup"].(map[string]any); code != 200 || b["status"] != "BUILDING" || b["bytes_done"].(float64) != 100 || b["estimated_bytes"].(float64) != 400 {
		t.Errorf("show: %d %v", code, body)
	}
	for _, path := range []string{a + "/backups", a + "/instances/" + inst + "/backups", a + "/backups?instance_id=" + inst, a + "/backups?datastore=postgresql"} {
		code, body = f.do(t, "GET", path, f.tokenA, "")
		if list := body["backups"].([]any); code != 200 || len(list) != 1 || list[0].(map[string]any)["id"] != id {
			t.Errorf("GET %s: %d %v", path, code, body)
		}
	}
	bp := "/v1.0/" + f.projectB
	for _, c := range []struct{ method, path string }{
		{"GET", bp + "/backups/" + id}, {"DELETE", bp + "/backups/" + id}, {"GET", bp + "/instances/" + inst + "/backups"},
	} {
		code, body = f.do(t, c.method, c.path, f.tokenB, "")
		if code != 404 {
			t.Errorf("B: %s %s: %d %v", c.method, c.path, code, body)
		}
	}
	for _, path := range []string{bp + "/backups", bp + "/backups?instance_id=" + inst} {
		if code, body = f.do(t, "GET", path, f.tokenB, ""); code != 200 || len(body["backups"].([]any)) != 0 {
			t.Errorf("B: GET %s: %d %v", path, code, body)
		}
	}
	code, body = f.do(t, "POST", bp+"/backups", f.tokenB, `{"backup": {"name": "steal", "instance": "`+inst+`"}}`)
	if code != 404 {
		t.Errorf("B backing up A's instance: %d %v", code, body)
	}

	// Done: COMPLETED with a size and location, the instance ACTIVE again.
	f.finishBackup(t, id)
	code, body = f.do(t, "GET", a+"/backups/"+id, f.tokenA, "")
	b = body["backup"].(map[string]any)
	if b["status"] != "COMPLETED" || b["size"] == nil || !strings.Contains(fmt.Sprint(b["locationRef"]), id+"/manifest.json") {
		t.Errorf("completed: %v", b)
	}
	code, body = f.do(t, "GET", a+"/instances/"+inst, f.tokenA, "")
	if s := body["instance"].(map[string]any)["status"]; s != "ACTIVE" {
		t.Errorf("instance after the backup: %v", s)
	}

	// An incremental backup over it: the command carries the parent's point.
	code, body = f.do(t, "POST", a+"/backups", f.tokenA, `{"backup": {"name": "inc", "instance": "`+inst+`", "incremental": 1}}`)
	if code != 202 || body["backup"].(map[string]any)["parent_id"] != id {
		t.Fatalf("incremental: %d %v", code, body)
	}
	inc := body["backup"].(map[string]any)["id"].(string)
	if _, req := f.backupCommand(t, inc); req.Kind != protocol.BackupIncremental || req.Parent == nil || req.Parent.EndLSN != "0/5000000" {
		t.Errorf("incremental command: %+v", req)
	}
	f.finishBackup(t, inc)

	// Deleting the full backup deletes the incremental one with it.
	if code, body = f.do(t, "DELETE", a+"/backups/"+id, f.tokenA, ""); code != 202 || body != nil {
		t.Fatalf("delete: %d %v", code, body)
	}
	if code, _ = f.do(t, "DELETE", a+"/backups/"+id, f.tokenA, ""); code != 202 {
		t.Errorf("repeated delete: %d", code)
	}
	var requested, deleteJobs int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM backup WHERE delete_requested_at IS NOT NULL").Scan(&requested); err != nil || requested != 2 {
		t.Errorf("backups marked for deletion: %d %v", requested, err)
	}
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM river_job WHERE kind = 'delete_backup'").Scan(&deleteJobs); err != nil || deleteJobs != 1 {
		t.Errorf("delete jobs: %d %v", deleteJobs, err)
	}
	code, body = f.do(t, "GET", "/v1.0/"+f.projectA+"/mgmt/quotas/"+f.projectA, f.tokenA, "")
	for _, r := range body["quotas"].([]any) {
		if r := r.(map[string]any); r["resource"] == "backups" && r["in_use"].(float64) != 0 {
			t.Errorf("backups in use after the delete: %v", r)
		}
	}
}

func TestBackupCreateRejectsBadInput(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	a := "/v1.0/" + w.projectA
	other := w.activeInstance(t, "other")
	otherBackup := w.completedBackup(t, other, "").String()
	building := w.activeInstance(t, "building")
	w.acctExec(t, "UPDATE instance SET task = 'BUILDING' WHERE id = $1", building)
	code, body := w.do(t, "POST", "/v1.0/"+w.projectB+"/instances", w.tokenB, `{"instance": {"name": "b", "flavorRef": "1", "volume": {"size": 1}}}`)
	if code != 200 {
		t.Fatal(code, body)
	}
	bInstance := body["instance"].(map[string]any)["id"].(string)
	before := w.snapshot(t)
	cases := []struct {
		what, body string
		code       int
		msg        string
	}{
		{"no name", `{"backup": {"instance": "` + w.instance + `"}}`, 400, ""},
		{"empty name", `{"backup": {"name": "", "instance": "` + w.instance + `"}}`, 400, ""},
		{"name without alphanumerics", `{"backup": {"name": "--", "instance": "` + w.instance + `"}}`, 400, "letter or digit"},
		{"no instance", `{"backup": {"name": "x"}}`, 400, "instance is required"},
		{"malformed instance", `{"backup": {"name": "x", "instance": "nope"}}`, 400, "not a valid UUID"},
		{"unknown instance", `{"backup": {"name": "x", "instance": "` + uuid.NewString() + `"}}`, 404, ""},
		{"another project's instance", `{"backup": {"name": "x", "instance": "` + bInstance + `"}}`, 404, ""},
		{"instance building", `{"backup": {"name": "x", "instance": "` + building + `"}}`, 422, "task status was BUILDING"},
		{"malformed parent", `{"backup": {"name": "x", "instance": "` + w.instance + `", "parent_id": "p"}}`, 400, ""},
		{"unknown parent", `{"backup": {"name": "x", "instance": "` + w.instance + `", "parent_id": "` + uuid.NewString() + `"}}`, 404, ""},
		{"parent of another instance", `{"backup": {"name": "x", "instance": "` + w.instance + `", "parent_id": "` + otherBackup + `"}}`, 400, "was not taken of instance"},
		{"incremental 2", `{"backup": {"name": "x", "instance": "` + w.instance + `", "incremental": 2}}`, 400, ""},
		{"incremental true", `{"backup": {"name": "x", "instance": "` + w.instance + `", "incremental": true}}`, 400, ""},
		{"unknown key", `{"backup": {"name": "x", "instance": "` + w.instance + `", "colour": "red"}}`, 400, ""},
		{"restore_from", `{"backup": {"name": "x", "restore_from": {"remote_location": "http://x/y", "local_datastore_version_id": "` + uuid.NewString() + `", "size": 0.2}}}`, 400, "not supported"},
		{"cinder", `{"backup": {"name": "x", "instance": "` + w.instance + `", "storage_driver": "cinder"}}`, 400, "not available"},
		{"bad container", `{"backup": {"name": "x", "instance": "` + w.instance + `", "swift_container": "../etc"}}`, 400, "container"},
		{"no body", ``, 400, ""},
	}
	for _, c := range cases {
		code, body := w.do(t, "POST", a+"/backups", w.tokenA, c.body)
		if code != c.code {
			t.Errorf("%s: %d %v, want %d", c.what, code, body, c.code)
			continue
		}
		if msg := fault(t, body, openapiFaultName(c.code), c.code); !strings.Contains(msg, c.msg) {
			t.Errorf("%s: message %q, want it to contain %q", c.what, msg, c.msg)
		}
	}
	w.unchanged(t, before, "refused backup creates")

	// The parent must be COMPLETED: 409.
	w.acctExec(t, "UPDATE backup SET status = 'FAILED' WHERE id = $1", w.backup)
	code, body = w.do(t, "POST", a+"/backups", w.tokenA, `{"backup": {"name": "x", "instance": "`+w.instance+`", "parent_id": "`+w.backup+`"}}`)
	if code != 409 {
		t.Errorf("failed parent: %d %v", code, body)
	}
	// Quota: the project's backups limit (413).
	if code, body := w.do(t, "PUT", a+"/mgmt/quotas/"+w.projectA, w.admin, `{"quotas": {"backups": 2}}`); code != 200 {
		t.Fatal(code, body)
	}
	code, body = w.do(t, "POST", a+"/backups", w.tokenA, `{"backup": {"name": "x", "instance": "`+w.instance+`"}}`)
	if code != 413 || !strings.Contains(fault(t, body, "overLimit", 413), "backups") {
		t.Errorf("over quota: %d %v", code, body)
	}
}

func openapiFaultName(code int) string {
	switch code {
	case 400:
		return "badRequest"
	case 404:
		return "itemNotFound"
	case 409:
		return "conflict"
	case 413:
		return "overLimit"
	case 422:
		return "unprocessableEntity"
	}
	return "instanceFault"
}

func TestBackupListPaginatesAndFilters(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := "/v1.0/" + f.projectA
	inst := f.activeInstance(t, "src")
	second := f.activeInstance(t, "src2")
	for i := range 23 {
		id := f.completedBackup(t, inst, "")
		// Distinct update times: newest first is then a strict order.
		f.acctExec(t, "UPDATE backup SET updated_at = now() - make_interval(secs => $2) WHERE id = $1", id, 100-i)
	}
	f.completedBackup(t, second, "")
	seen, pages := map[string]bool{}, 0
	var last string
	for path := a + "/backups"; path != ""; pages++ {
		if pages > 3 {
			t.Fatal("too many pages")
		}
		code, body := f.do(t, "GET", path, f.tokenA, "")
		if code != 200 {
			t.Fatalf("%s: %d %v", path, code, body)
		}
		for _, it := range body["backups"].([]any) {
			b := it.(map[string]any)
			if seen[b["id"].(string)] {
				t.Errorf("%s seen twice", b["id"])
			}
			seen[b["id"].(string)] = true
			if last != "" && b["updated"].(string) > last {
				t.Errorf("not newest first: %s after %s", b["updated"], last)
			}
			last = b["updated"].(string)
		}
		path = ""
		if links, ok := body["links"].([]any); ok {
			href := links[0].(map[string]any)["href"].(string)
			path = href[strings.Index(href, "/v1.0/"):]
			if !strings.Contains(href, fmt.Sprintf("marker=%d", 20*(pages+1))) {
				t.Errorf("next link %s: want an offset marker", href)
			}
		}
	}
	if len(seen) != 24 || pages != 2 {
		t.Errorf("%d backups over %d pages, want 24 over 2", len(seen), pages)
	}
	check := func(path, token string, want int) map[string]any {
		t.Helper()
		code, body := f.do(t, "GET", path, token, "")
		if code != want {
			t.Errorf("GET %s: %d %v, want %d", path, code, body, want)
		}
		return body
	}
	if n := len(check(a+"/backups?limit=5&marker=20", f.tokenA, 200)["backups"].([]any)); n != 4 {
		t.Errorf("limit 5 from 20: %d", n)
	}
	if n := len(check(a+"/instances/"+second+"/backups", f.tokenA, 200)["backups"].([]any)); n != 1 {
		t.Errorf("second instance's backups: %d", n)
	}
	if n := len(check(a+"/backups?instance_id=not-a-uuid", f.tokenA, 200)["backups"].([]any)); n != 0 {
		t.Errorf("malformed instance filter: %d", n)
	}
	check(a+"/backups?marker=x", f.tokenA, 400)
	check(a+"/backups?datastore=oracle", f.tokenA, 404)
	if n := len(check(a+"/backups?datastore=postgresql&limit=100", f.tokenA, 200)["backups"].([]any)); n != 24 {
		t.Errorf("datastore filter: %d", n)
	}
	// all_projects and project_id are for admins (Trove's policy: 403).
	fault(t, check(a+"/backups?all_projects=True", f.tokenA, 403), "forbidden", 403)
	fault(t, check(a+"/backups?project_id="+f.projectB, f.tokenA, 403), "forbidden", 403)
	check(a+"/backups?all_projects=False", f.tokenA, 200)
	// The admin (of project A) sees B's backups only when asking for them.
	code, body := f.do(t, "POST", "/v1.0/"+f.projectB+"/instances", f.tokenB, `{"instance": {"name": "b", "flavorRef": "1", "volume": {"size": 1}}}`)
	if code != 200 {
		t.Fatal(code, body)
	}
	f.completedBackup(t, body["instance"].(map[string]any)["id"].(string), "")
	if n := len(check(a+"/backups?all_projects=True&limit=100", f.admin, 200)["backups"].([]any)); n != 25 {
		t.Errorf("admin all_projects: %d", n)
	}
	if n := len(check(a+"/backups?project_id="+f.projectB, f.admin, 200)["backups"].([]any)); n != 1 {
		t.Errorf("admin project_id: %d", n)
	}
	if n := len(check("/v1.0/"+f.projectB+"/backups", f.tokenB, 200)["backups"].([]any)); n != 1 {
		t.Errorf("B's own: %d", n)
	}
}

func TestBackupDeleteProtectsChainsInUse(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := "/v1.0/" + f.projectA
	inst := f.activeInstance(t, "src")
	full := f.completedBackup(t, inst, "").String()
	inc := f.completedBackup(t, inst, full).String()
	// An incremental backup of the full one running: the full one cannot go.
	running := f.completedBackup(t, inst, inc).String()
	f.acctExec(t, "UPDATE backup SET status = 'BUILDING' WHERE id = $1", running)
	code, body := f.do(t, "DELETE", a+"/backups/"+full, f.tokenA, "")
	if code != 422 || !strings.Contains(fault(t, body, "unprocessableEntity", 422), running) {
		t.Errorf("delete with a running descendant: %d %v", code, body)
	}
	f.acctExec(t, "UPDATE backup SET status = 'FAILED', created_at = now() - interval '4 days' WHERE id = $1", running)

	// An instance restoring from the incremental one protects the chain.
	code, body = f.do(t, "POST", a+"/instances", f.tokenA, `{"instance": {"name": "r", "flavorRef": "1", "volume": {"size": 1},
		"restorePoint": {"backupRef": "`+inc+`"}}}`)
	if code != 200 {
		t.Fatalf("restore: %d %v", code, body)
	}
	restored := body["instance"].(map[string]any)["id"].(string)
	before := f.snapshot(t)
	for _, id := range []string{full, inc} {
		code, body = f.do(t, "DELETE", a+"/backups/"+id, f.tokenA, "")
		if code != 409 || !strings.Contains(fault(t, body, "conflict", 409), restored) {
			t.Errorf("delete %s during a restore: %d %v", id, code, body)
		}
	}
	f.unchanged(t, before, "refused deletes")
	// Built: the chain may go, and goes whole.
	f.acctExec(t, "UPDATE instance SET task = 'NONE', compute_status = 'ACTIVE' WHERE id = $1", restored)
	if code, body = f.do(t, "DELETE", a+"/backups/"+full, f.tokenA, ""); code != 202 {
		t.Fatalf("delete: %d %v", code, body)
	}
	var n int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM backup WHERE delete_requested_at IS NOT NULL").Scan(&n); err != nil || n != 3 {
		t.Errorf("marked for deletion: %d %v", n, err)
	}
	// And it is no longer a restore source.
	code, body = f.do(t, "POST", a+"/instances", f.tokenA, `{"instance": {"name": "r2", "flavorRef": "1", "volume": {"size": 1},
		"restorePoint": {"backupRef": "`+inc+`"}}}`)
	if code != 409 {
		t.Errorf("restore from a deleted backup: %d %v", code, body)
	}
}

func TestRestoreFromBackup(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := "/v1.0/" + f.projectA
	inst := f.activeInstance(t, "src")
	full := f.completedBackup(t, inst, "")
	inc := f.completedBackup(t, inst, full.String())
	create := func(extra string) (int, map[string]any) {
		return f.do(t, "POST", a+"/instances", f.tokenA, `{"instance": {"name": "restored", "flavorRef": "1", "volume": {"size": 1}, `+extra+`}}`)
	}
	failed := f.completedBackup(t, inst, "")
	f.acctExec(t, "UPDATE backup SET status = 'FAILED' WHERE id = $1", failed)
	big := f.completedBackup(t, inst, "")
	f.acctExec(t, "UPDATE backup SET bytes_done = 5 * 1024^3 WHERE id = $1", big)
	code, body := f.do(t, "POST", "/v1.0/"+f.projectB+"/instances", f.tokenB, `{"instance": {"name": "b", "flavorRef": "1", "volume": {"size": 1}}}`)
	if code != 200 {
		t.Fatal(code, body)
	}
	bBackup := f.completedBackup(t, body["instance"].(map[string]any)["id"].(string), "")
	// Files lost behind Coffer's back: one removed, one cut short, and a
	// chain whose parent's file is gone.
	gone := f.completedBackup(t, inst, "")
	if err := f.files.Delete(context.Background(), "database_backups", jobs.SegmentKey(gone.String(), 0)); err != nil {
		t.Fatal(err)
	}
	short := f.completedBackup(t, inst, "")
	if err := f.files.Put(context.Background(), "database_backups", jobs.SegmentKey(short.String(), 0), strings.NewReader("cut"), 3); err != nil {
		t.Fatal(err)
	}
	orphan := f.completedBackup(t, inst, gone.String())
	before := f.snapshot(t)
	for _, c := range []struct {
		what, extra, name string
		code              int
	}{
		{"unknown backup", `"restorePoint": {"backupRef": "` + uuid.NewString() + `"}`, "itemNotFound", 404},
		{"another project's backup", `"restorePoint": {"backupRef": "` + bBackup.String() + `"}`, "itemNotFound", 404},
		{"malformed ref", `"restorePoint": {"backupRef": "x"}`, "badRequest", 400},
		{"not an object", `"restorePoint": "x"`, "badRequest", 400},
		{"extra key", `"restorePoint": {"backupRef": "` + full.String() + `", "x": 1}`, "badRequest", 400},
		{"failed backup", `"restorePoint": {"backupRef": "` + failed.String() + `"}`, "conflict", 409},
		{"too large", `"restorePoint": {"backupRef": "` + big.String() + `"}`, "forbidden", 403},
		{"file gone", `"restorePoint": {"backupRef": "` + gone.String() + `"}`, "itemNotFound", 404},
		{"file cut short", `"restorePoint": {"backupRef": "` + short.String() + `"}`, "itemNotFound", 404},
		{"parent's file gone", `"restorePoint": {"backupRef": "` + orphan.String() + `"}`, "itemNotFound", 404},
		{"other version", `"restorePoint": {"backupRef": "` + full.String() + `"}, "datastore": {"type": "postgresql", "version": "nosuch"}`, "badRequest", 400},
	} {
		code, body := create(c.extra)
		if code != c.code {
			t.Errorf("%s: %d %v, want %d", c.what, code, body, c.code)
			continue
		}
		if msg := fault(t, body, c.name, c.code); strings.HasPrefix(c.what, "file") && !strings.Contains(msg, "Backup file in file was not found") {
			t.Errorf("%s: %q", c.what, msg)
		}
	}
	f.unchanged(t, before, "refused restores")

	code, body = create(`"restorePoint": {"backupRef": "` + inc.String() + `"}`)
	if code != 200 {
		t.Fatalf("restore: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	var payload []byte
	var restoreID uuid.NullUUID
	if err := f.pool.QueryRow(context.Background(), `SELECT c.payload, i.restore_backup_id FROM agent_command c JOIN instance i ON i.id = c.instance_id
		WHERE c.instance_id = $1 AND c.name = 'prepare'`, id).Scan(&payload, &restoreID); err != nil {
		t.Fatal(err)
	}
	if restoreID.UUID != inc {
		t.Errorf("restore_backup_id = %v, want %s", restoreID, inc)
	}
	var prep protocol.PrepareRequest
	if err := json.Unmarshal(payload, &prep); err != nil {
		t.Fatal(err)
	}
	if prep.Restore == nil || len(prep.Restore.Chain) != 2 {
		t.Fatalf("prepare restore: %+v", prep.Restore)
	}
	pk, err := f.keys.ProjectKey(context.Background(), store.New(f.pool), f.projectA)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []uuid.UUID{full, inc} {
		link := prep.Restore.Chain[i]
		var wrapped []byte
		if err := f.pool.QueryRow(context.Background(), "SELECT wrapped_key FROM backup WHERE id = $1", want).Scan(&wrapped); err != nil {
			t.Fatal(err)
		}
		key, err := f.keys.Unwrap(pk, want, wrapped)
		if err != nil {
			t.Fatal(err)
		}
		kind := map[int]string{0: protocol.BackupFull, 1: protocol.BackupIncremental}[i]
		if link.BackupID != want.String() || link.Kind != kind || string(link.DataKey) != string(key) ||
			len(link.Segments) != 1 || link.Segments[0].SHA256 != strings.Repeat("ab", 32) || link.Point.EndLSN != "0/3000100" {
			t.Errorf("chain[%d] = %+v", i, link)
		}
	}
	// The prepare command, with the keys, is cleared when it completes
	// (agent API), like every command.
	var lease int
	if err := f.pool.QueryRow(context.Background(), "SELECT lease_seconds FROM agent_command WHERE instance_id = $1", id).Scan(&lease); err != nil || lease <= 600 {
		t.Errorf("restore lease %d s (%v): want longer than a plain prepare", lease, err)
	}
}

func TestBackupStrategies(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a := "/v1.0/" + f.projectA
	inst := f.activeInstance(t, "src")
	code, body := f.do(t, "POST", a+"/backup_strategies", f.tokenA, `{"backup_strategy": {"swift_container": "project_backups"}}`)
	if code != 202 {
		t.Fatalf("create: %d %v", code, body)
	}
	if s := body["backup_strategy"].(map[string]any); s["instance_id"] != "" || s["swift_container"] != "project_backups" || s["project_id"] != f.projectA {
		t.Errorf("project strategy: %v", s)
	}
	container := func() string {
		t.Helper()
		code, body := f.do(t, "POST", a+"/backups", f.tokenA, `{"backup": {"name": "x", "instance": "`+inst+`"}}`)
		if code != 202 {
			t.Fatalf("backup: %d %v", code, body)
		}
		id := body["backup"].(map[string]any)["id"].(string)
		var c string
		if err := f.pool.QueryRow(context.Background(), "SELECT container FROM backup WHERE id = $1", id).Scan(&c); err != nil {
			t.Fatal(err)
		}
		f.finishBackup(t, id)
		return c
	}
	if c := container(); c != "project_backups" {
		t.Errorf("container with a project strategy: %s", c)
	}
	if code, body = f.do(t, "POST", a+"/backup_strategies", f.tokenA, `{"backup_strategy": {"instance_id": "`+inst+`", "swift_container": "inst_backups"}}`); code != 202 {
		t.Fatalf("instance strategy: %d %v", code, body)
	}
	if c := container(); c != "inst_backups" {
		t.Errorf("container with an instance strategy: %s", c)
	}
	code, body = f.do(t, "GET", a+"/backup_strategies", f.tokenA, "")
	if code != 200 || len(body["backup_strategies"].([]any)) != 2 {
		t.Errorf("list: %d %v", code, body)
	}
	code, body = f.do(t, "GET", a+"/backup_strategies?instance_id="+inst, f.tokenA, "")
	if code != 200 || len(body["backup_strategies"].([]any)) != 1 {
		t.Errorf("list one instance's: %d %v", code, body)
	}
	// Another project's: admins only; another project's instance: 404.
	if code, body = f.do(t, "GET", a+"/backup_strategies?project_id="+f.projectB, f.tokenA, ""); code != 403 {
		t.Errorf("member listing B's: %d %v", code, body)
	}
	if code, body = f.do(t, "GET", a+"/backup_strategies?project_id="+f.projectB, f.admin, ""); code != 200 {
		t.Errorf("admin listing B's: %d %v", code, body)
	}
	if code, body = f.do(t, "POST", "/v1.0/"+f.projectB+"/backup_strategies", f.tokenB, `{"backup_strategy": {"instance_id": "`+inst+`", "swift_container": "x"}}`); code != 404 {
		t.Errorf("B's strategy for A's instance: %d %v", code, body)
	}
	if code, body = f.do(t, "POST", a+"/backup_strategies", f.tokenA, `{"backup_strategy": {"swift_container": "a/b"}}`); code != 400 {
		t.Errorf("bad container: %d %v", code, body)
	}
	if code, body = f.do(t, "POST", a+"/backup_strategies", f.tokenA, `{"backup_strategy": {"swift_container": "c", "backend": "cinder"}}`); code != 400 {
		t.Errorf("unknown key: %d %v", code, body)
	}
	// Delete: no instance_id is the project-wide one.
	if code, _ = f.do(t, "DELETE", a+"/backup_strategies", f.tokenA, ""); code != 202 {
		t.Errorf("delete: %d", code)
	}
	code, body = f.do(t, "GET", a+"/backup_strategies", f.tokenA, "")
	if list := body["backup_strategies"].([]any); len(list) != 1 || list[0].(map[string]any)["instance_id"] != inst {
		t.Errorf("after deleting the project's: %v", list)
	}
	if code, _ = f.do(t, "DELETE", a+"/backup_strategies?instance_id="+inst, f.tokenA, ""); code != 202 {
		t.Errorf("delete instance's: %d", code)
	}
	if c := container(); c != "database_backups" {
		t.Errorf("container without strategies: %s", c)
	}
	if code, body = f.do(t, "GET", a+"/backups", f.tokenA, ""); code != 200 {
		t.Fatal(code, body)
	}
	_ = http.StatusOK
}
