package agentapi_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/functions/agentapi"
	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/seed"
	"github.com/coffer-dbaas/coffer/internal/testdb"
	"github.com/coffer-dbaas/coffer/jobs"
)

func backupPath(path, id string, n int) string {
	return strings.Replace(strings.Replace(path, "{id}", id, 1), "{n}", strconv.Itoa(n), 1)
}

func TestBackupSegmentsAndGrants(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pool := testdb.New(t)
	if err := seed.Catalog(ctx, pool); err != nil {
		t.Fatal(err)
	}
	if _, err := store.New(pool).UpsertProject(ctx, store.UpsertProjectParams{ID: "p1", Name: "p1"}); err != nil {
		t.Fatal(err)
	}
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	master := make([]byte, 32)
	_, _ = rand.Read(master)
	keys, _ := backupkey.New(master)
	filesRoot := t.TempDir()
	files, err := objectstore.NewFile(filesRoot, "")
	if err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	hub := agentapi.NewHub(pool.Config().ConnConfig, logger)
	go func() { _ = hub.Run(ctx) }()
	<-hub.Ready()
	srv := httptest.NewTLSServer((&agentapi.Server{Pool: pool, River: rc, Hub: hub, Logger: logger, Store: files}).Handler())
	t.Cleanup(srv.Close)
	if err := files.SetBaseURL(srv.URL); err != nil {
		t.Fatal(err)
	}
	f := &fixture{pool: pool, srv: srv}
	exec := func(sql string, args ...any) {
		t.Helper()
		if _, err := pool.Exec(ctx, sql, args...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	active := func() *agentClient {
		a := f.newInstance(t)
		exec("UPDATE instance SET task = 'NONE', compute_status = 'ACTIVE', service_status = 'healthy', heartbeat_at = now() WHERE id = $1", a.id)
		return a
	}
	taker, other := active(), active()
	var b store.Backup
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		b, err = jobs.StartBackup(ctx, tx, rc, keys, jobs.NewBackup{ProjectID: "p1", InstanceID: taker.id, Name: "b"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	id := b.ID.String()
	data := []byte(strings.Repeat("encrypted bytes ", 64))
	sum := sha256.Sum256(data)
	sha := hex.EncodeToString(sum[:])
	put := protocol.SegmentGrantRequest{Method: "PUT", Size: int64(len(data)), SHA256: sha}
	grant := func(a *agentClient, n int, req protocol.SegmentGrantRequest) (int, protocol.Grant) {
		t.Helper()
		code, body := a.request(t, "POST", backupPath(protocol.PathSegmentGrant, id, n), req)
		var g protocol.Grant
		if code == 200 {
			if err := json.Unmarshal(body, &g); err != nil {
				t.Fatal(err)
			}
		}
		return code, g
	}
	status := func() string {
		var s string
		if err := pool.QueryRow(ctx, "SELECT status FROM backup WHERE id = $1", b.ID).Scan(&s); err != nil {
			t.Fatal(err)
		}
		return s
	}

	// Until the agent has leased the command, the backup is nobody's.
	if code, _ := grant(taker, 0, put); code != 404 {
		t.Errorf("grant before the lease: %d", code)
	}
	if code, cmd := taker.poll(t, 1); code != 200 || cmd.Name != protocol.CommandBackup {
		t.Fatalf("poll: %d %+v", code, cmd)
	}
	if code, _ := taker.request(t, "POST", backupPath(protocol.PathBackupProgress, id, 0), protocol.BackupProgress{EstimatedBytes: 5000}); code != 204 {
		t.Fatalf("progress: %d", code)
	}
	if s := status(); s != "BUILDING" {
		t.Errorf("after progress: %s", s)
	}

	// Bad requests: 400; another instance, unknown backups: 404.
	for _, c := range []struct {
		what string
		n    int
		req  protocol.SegmentGrantRequest
		want int
	}{
		{"too large", 0, protocol.SegmentGrantRequest{Method: "PUT", Size: b.SegmentSize + 1}, 400},
		{"empty", 0, protocol.SegmentGrantRequest{Method: "PUT", Size: 0}, 400},
		{"bad sha", 0, protocol.SegmentGrantRequest{Method: "PUT", Size: 10, SHA256: "XYZ"}, 400},
		{"method", 0, protocol.SegmentGrantRequest{Method: "DELETE", Size: 10}, 400},
		{"download of its own backup", 0, protocol.SegmentGrantRequest{Method: "GET"}, 404},
	} {
		if code, _ := grant(taker, c.n, c.req); code != c.want {
			t.Errorf("%s: %d, want %d", c.what, code, c.want)
		}
	}
	for _, path := range []string{
		backupPath(protocol.PathSegmentGrant, id, -1), backupPath(protocol.PathSegmentGrant, id, 1_000_000),
	} {
		if code, _ := taker.request(t, "POST", path, put); code != 400 {
			t.Errorf("%s: %d", path, code)
		}
	}
	for _, path := range []string{
		backupPath(protocol.PathSegmentGrant, uuid.NewString(), 0), backupPath(protocol.PathSegmentGrant, "nope", 0),
	} {
		if code, _ := taker.request(t, "POST", path, put); code != 404 {
			t.Errorf("%s: %d", path, code)
		}
	}
	for _, c := range []struct {
		path string
		body any
	}{
		{backupPath(protocol.PathSegmentGrant, id, 0), put},
		{backupPath(protocol.PathSegmentGrant, id, 0), protocol.SegmentGrantRequest{Method: "GET"}},
		{backupPath(protocol.PathSegmentDone, id, 0), protocol.SegmentReport{Size: 10, SHA256: sha}},
		{backupPath(protocol.PathBackupProgress, id, 0), protocol.BackupProgress{EstimatedBytes: 1}},
	} {
		if code, _ := other.request(t, "POST", c.path, c.body); code != 404 {
			t.Errorf("another instance: POST %s: %d", c.path, code)
		}
	}
	// Without a credential nothing is answered.
	req, _ := http.NewRequest("POST", srv.URL+backupPath(protocol.PathSegmentGrant, id, 0), strings.NewReader(`{"method": "PUT", "size": 10}`))
	if resp, err := srv.Client().Do(req); err != nil || resp.StatusCode != 401 {
		t.Errorf("no credential: %v %v", resp, err)
	}

	// The grant: a signed URL of the file store, mounted on the agent API.
	code, g := grant(taker, 0, put)
	if code != 200 || g.Method != "PUT" || !strings.HasPrefix(g.URL, srv.URL+objectstore.ObjectsPath) || g.Expires.IsZero() {
		t.Fatalf("grant: %d %+v", code, g)
	}
	upload := func(g protocol.Grant, body []byte) int {
		req, _ := http.NewRequest(g.Method, g.URL, bytes.NewReader(body))
		req.ContentLength = int64(len(body))
		resp, err := srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := upload(g, data[:10]); code/100 == 2 {
		t.Error("an upload of another size than granted was accepted")
	}
	if code := upload(g, data); code/100 != 2 {
		t.Fatalf("upload: %d", code)
	}
	if info, err := files.Stat(ctx, b.Container, jobs.SegmentKey(b.Prefix, 0)); err != nil || info.Size != int64(len(data)) {
		t.Fatalf("stored segment: %+v %v", info, err)
	}
	for range 2 { // idempotent
		if code, _ := taker.request(t, "POST", backupPath(protocol.PathSegmentDone, id, 0),
			protocol.SegmentReport{Size: int64(len(data)), SHA256: sha, RawBytesDone: 3000}); code != 204 {
			t.Fatalf("segment done: %d", code)
		}
	}
	if code, _ := taker.request(t, "POST", backupPath(protocol.PathSegmentDone, id, 1), protocol.SegmentReport{Size: 5, SHA256: "nope"}); code != 400 {
		t.Errorf("bad report: %d", code)
	}
	var segs, done, estimate int64
	if err := pool.QueryRow(ctx, "SELECT (SELECT count(*) FROM backup_segment WHERE backup_id = $1), bytes_done, estimated_bytes FROM backup WHERE id = $1", b.ID).Scan(&segs, &done, &estimate); err != nil {
		t.Fatal(err)
	}
	if segs != 1 || done != 3000 || estimate != 5000 {
		t.Errorf("recorded: %d segments, %d of %d bytes", segs, done, estimate)
	}

	// Once SAVING, no more uploads.
	exec("UPDATE backup SET status = 'SAVING', segment_count = 1 WHERE id = $1", b.ID)
	if code, _ := grant(taker, 1, put); code != 404 {
		t.Errorf("grant while SAVING: %d", code)
	}

	// A restoring instance downloads the segments of its chain only.
	exec("UPDATE backup SET status = 'COMPLETED' WHERE id = $1", b.ID)
	restorer := f.newInstance(t) // BUILDING
	if code, _ := grant(restorer, 0, protocol.SegmentGrantRequest{Method: "GET"}); code != 404 {
		t.Errorf("download before the restore is recorded: %d", code)
	}
	exec("UPDATE instance SET restore_backup_id = $2 WHERE id = $1", restorer.id, b.ID)
	code, g = grant(restorer, 0, protocol.SegmentGrantRequest{Method: "GET"})
	if code != 200 || g.Method != "GET" {
		t.Fatalf("download grant: %d %+v", code, g)
	}
	resp, err := srv.Client().Get(g.URL)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, data) {
		t.Errorf("downloaded %d bytes, not the segment", len(got))
	}
	if code, _ := grant(restorer, 1, protocol.SegmentGrantRequest{Method: "GET"}); code != 404 {
		t.Errorf("download past the last segment: %d", code)
	}
	if code, _ := grant(restorer, 0, put); code != 404 {
		t.Errorf("upload by the restoring instance: %d", code)
	}
	exec("UPDATE instance SET task = 'NONE' WHERE id = $1", restorer.id)
	if code, _ := grant(restorer, 0, protocol.SegmentGrantRequest{Method: "GET"}); code != 404 {
		t.Errorf("download after the build: %d", code)
	}

	// A container removed behind Coffer's back, while this server knows
	// it: the next backup's first segment creates it again.
	if err := os.RemoveAll(filepath.Join(filesRoot, b.Container)); err != nil {
		t.Fatal(err)
	}
	var b2 store.Backup
	if err := pgx.BeginFunc(ctx, pool, func(tx pgx.Tx) error {
		b2, err = jobs.StartBackup(ctx, tx, rc, keys, jobs.NewBackup{ProjectID: "p1", InstanceID: other.id, Name: "b2"})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if b2.Container != b.Container {
		t.Fatalf("second backup's container %q, first's %q: the check below needs the same", b2.Container, b.Container)
	}
	if code, cmd := other.poll(t, 1); code != 200 || cmd.Name != protocol.CommandBackup {
		t.Fatalf("poll: %d %+v", code, cmd)
	}
	id = b2.ID.String()
	code, g = grant(other, 0, put)
	if code != 200 {
		t.Fatalf("grant after the container was removed: %d", code)
	}
	if code := upload(g, data); code/100 != 2 {
		t.Errorf("upload after the container was removed: %d", code)
	}
}
