package functions_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
)

func init() {
	validBodies["copy-backup"] = []func(w *world) string{func(*world) string {
		return `{"copy": {"location": "archive", "name": "offsite"}}`
	}}
}

// copyTestLocations are a test API's backup locations: its file store
// ("file", the default) and a second file store, "archive", to copy to.
func copyTestLocations(t testing.TB, files *objectstore.File) *objectstore.Registry {
	t.Helper()
	archive, err := objectstore.NewFile(t.TempDir(), "https://127.0.0.1:1")
	if err != nil {
		t.Fatal(err)
	}
	reg, err := objectstore.NewRegistry(objectstore.Location{Name: "file", Container: "database_backups", Store: files},
		objectstore.Location{Name: "archive", Container: "archive_backups", Store: archive})
	if err != nil {
		t.Fatal(err)
	}
	return reg
}

func TestCopyBackup(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	f := w.apiFixture
	path := "/v1.0/" + f.projectA + "/backups/" + w.backup + "/copy"

	code, body := f.do(t, http.MethodPost, path, f.tokenA, `{"copy": {"location": "archive", "name": "offsite"}}`)
	if code != http.StatusAccepted {
		t.Fatalf("copy: %d %v", code, body)
	}
	cp, _ := body["backup"].(map[string]any)
	if cp["status"] != "NEW" || cp["name"] != "offsite" || cp["id"] == w.backup {
		t.Fatalf("copy: %v", cp)
	}
	var location, container, prefix, srcPrefix string
	var keyID, srcKeyID uuid.UUID
	var wrapped, srcWrapped []byte
	var jobs int
	ctx := context.Background()
	if err := f.pool.QueryRow(ctx, `SELECT c.location, c.container, c.prefix, s.prefix, c.key_id, s.key_id, c.wrapped_key, s.wrapped_key,
	    (SELECT count(*) FROM river_job WHERE kind = 'copy_backup' AND args->>'backup_id' = c.id::text AND args->>'source_id' = s.id::text)
	  FROM backup c, backup s WHERE c.id = $1 AND s.id = $2`, cp["id"], w.backup).
		Scan(&location, &container, &prefix, &srcPrefix, &keyID, &srcKeyID, &wrapped, &srcWrapped, &jobs); err != nil {
		t.Fatal(err)
	}
	if location != "archive" || container != "archive_backups" || prefix != srcPrefix || keyID != srcKeyID || jobs != 1 {
		t.Fatalf("copy row: location %s container %s prefix %s (source %s) key %s (source %s), %d jobs", location, container, prefix, srcPrefix, keyID, srcKeyID, jobs)
	}
	// The same data key, wrapped for the copy's id.
	pk, err := f.keys.ProjectKey(ctx, store.New(f.pool), f.projectA)
	if err != nil {
		t.Fatal(err)
	}
	a, err := f.keys.Unwrap(pk, uuid.MustParse(cp["id"].(string)), wrapped)
	if err != nil {
		t.Fatal(err)
	}
	b, err := f.keys.Unwrap(pk, uuid.MustParse(w.backup), srcWrapped)
	if err != nil || string(a) != string(b) {
		t.Fatalf("copy's data key differs from its source's (%v)", err)
	}

	// A second copy to the same location would share the first one's objects.
	code, body = f.do(t, http.MethodPost, path, f.tokenA, `{"copy": {"location": "archive"}}`)
	if msg := fault(t, body, "conflict", http.StatusConflict); code != http.StatusConflict || !strings.Contains(msg, "already has a copy") {
		t.Errorf("second copy: %d %v", code, body)
	}
	// Unknown location, and the source's own: 400 listing the configured ones.
	for _, loc := range []string{"tape", "file"} {
		code, body = f.do(t, http.MethodPost, path, f.tokenA, `{"copy": {"location": "`+loc+`"}}`)
		if msg := fault(t, body, "badRequest", http.StatusBadRequest); code != http.StatusBadRequest || !strings.Contains(msg, "Configured locations: file, archive.") {
			t.Errorf("copy to %s: %d %v", loc, code, body)
		}
	}
	// Project B cannot copy A's backup, nor name one that does not exist.
	for _, p := range []string{"/v1.0/" + f.projectB + "/backups/" + w.backup + "/copy", "/v1.0/" + f.projectB + "/backups/" + uuid.NewString() + "/copy", "/v1.0/" + f.projectB + "/backups/nope/copy"} {
		tok := f.tokenB
		if code, body = f.do(t, http.MethodPost, p, tok, `{"copy": {"location": "archive"}}`); code != http.StatusNotFound {
			t.Errorf("B copies %s: %d %v", p, code, body)
		}
	}
	// Bad bodies.
	for _, bad := range []string{`{}`, `{"copy": {}}`, `{"copy": {"location": ""}}`, `{"copy": {"location": 3}}`, `{"copy": {"location": "archive", "extra": 1}}`, `not json`} {
		if code, body = f.do(t, http.MethodPost, path, f.tokenA, bad); code < 400 || code >= 500 {
			t.Errorf("body %s: %d %v", bad, code, body)
		}
	}
	var n int
	if err := f.pool.QueryRow(ctx, "SELECT count(*) FROM backup WHERE prefix = $1", srcPrefix).Scan(&n); err != nil || n != 2 {
		t.Errorf("%d rows with the source's prefix, want the source and one copy (%v)", n, err)
	}
}

func TestCopyBackupStatesAndChains(t *testing.T) {
	t.Parallel()
	w := newWorld(t)
	f := w.apiFixture
	copyTo := func(id, token string) (int, map[string]any) {
		return f.do(t, http.MethodPost, "/v1.0/"+f.projectA+"/backups/"+id+"/copy", token, `{"copy": {"location": "archive"}}`)
	}
	// Not COMPLETED: 409, as Trove answers a backup in the wrong state.
	f.acctExec(t, "UPDATE backup SET status = 'BUILDING' WHERE id = $1", w.backup)
	if code, body := copyTo(w.backup, f.tokenA); code != http.StatusConflict {
		t.Errorf("copy of a BUILDING backup: %d %v", code, body)
	}
	f.acctExec(t, "UPDATE backup SET status = 'COMPLETED' WHERE id = $1", w.backup)

	// An incremental backup needs its parent in the location first.
	child := f.completedBackup(t, w.instance, w.backup).String()
	code, body := copyTo(child, f.tokenA)
	if msg := fault(t, body, "badRequest", http.StatusBadRequest); code != http.StatusBadRequest || !strings.Contains(msg, "copy its parent backup "+w.backup) {
		t.Fatalf("copy of an incremental before its parent: %d %v", code, body)
	}
	code, body = copyTo(w.backup, f.tokenA)
	if code != http.StatusAccepted {
		t.Fatalf("copy of the parent: %d %v", code, body)
	}
	parentCopy := body["backup"].(map[string]any)["id"].(string)
	// The parent's copy is not COMPLETED yet (no workers here).
	if code, body = copyTo(child, f.tokenA); code != http.StatusBadRequest {
		t.Errorf("copy of an incremental while its parent's copy runs: %d %v", code, body)
	}
	f.acctExec(t, "UPDATE backup SET status = 'COMPLETED', completed_at = now() WHERE id = $1", parentCopy)
	// A copy restores like any backup (its location is configured); a
	// backup in a location that is not is refused.
	restore := func(id string) (int, map[string]any) {
		return f.do(t, http.MethodPost, "/v1.0/"+f.projectA+"/instances", f.tokenA,
			`{"instance": {"name": "from-copy", "flavorRef": "1", "volume": {"size": 1}, "restorePoint": {"backupRef": "`+id+`"}}}`)
	}
	if code, body := restore(parentCopy); code != http.StatusOK {
		t.Errorf("restore from the copy: %d %v", code, body)
	}
	gone := f.completedBackup(t, w.instance, "").String()
	f.acctExec(t, "UPDATE backup SET location = 'swift' WHERE id = $1", gone)
	if code, body := restore(gone); code != http.StatusBadRequest {
		t.Errorf("restore from an unconfigured location: %d %v", code, body)
	}
	code, body = copyTo(child, f.tokenA)
	if code != http.StatusAccepted {
		t.Fatalf("copy of the incremental: %d %v", code, body)
	}
	if got := body["backup"].(map[string]any)["parent_id"]; got != parentCopy {
		t.Errorf("the incremental's copy has parent %v, want the parent's copy %s", got, parentCopy)
	}

	// Quota: backups +1.
	f.acctExec(t, "INSERT INTO quota (project_id, resource, hard_limit) VALUES ($1, 'backups', 5) ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = 5", f.projectA)
	other := f.completedBackup(t, w.instance, "").String()
	if code, body = copyTo(other, f.tokenA); code != http.StatusRequestEntityTooLarge {
		t.Errorf("copy over quota: %d %v", code, body)
	}
}
