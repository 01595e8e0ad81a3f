package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// backupAPI is the agent API's backup side in memory: the three backup
// paths, plus an object endpoint on the same server that the grants point
// at (as the embedded file store's do), accepting only the signature it
// handed out.
type backupAPI struct {
	t     *testing.T
	srv   *httptest.Server
	token string
	sig   string

	mu       sync.Mutex
	objects  map[string][]byte
	reports  map[int]protocol.SegmentReport
	progress []int64
	// grantStatus, when not 0, answers grant requests with it.
	grantStatus int
}

func newBackupAPI(t *testing.T) *backupAPI {
	t.Helper()
	b := &backupAPI{
		t:       t,
		token:   testInstanceID + ".secret",
		sig:     "SIG" + rand.Text(),
		objects: map[string][]byte{},
		reports: map[int]protocol.SegmentReport{},
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+protocol.PathSegmentGrant, b.auth(b.grant))
	mux.HandleFunc("POST "+protocol.PathSegmentDone, b.auth(b.done))
	mux.HandleFunc("POST "+protocol.PathBackupProgress, b.auth(b.progressHandler))
	mux.HandleFunc("/objects/{id}/{n}", b.object)
	b.srv = httptest.NewUnstartedServer(mux)
	b.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	b.srv.StartTLS()
	t.Cleanup(b.srv.Close)
	return b
}

func (b *backupAPI) config() protocol.AgentConfig {
	return protocol.AgentConfig{
		APIURL:     b.srv.URL,
		CACert:     string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.srv.Certificate().Raw})),
		InstanceID: testInstanceID,
		Token:      b.token,
		Datastore:  "postgresql",
		DataDir:    "/nonexistent",
	}
}

func (b *backupAPI) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+b.token {
			http.Error(w, "bad credential", http.StatusUnauthorized)
			return
		}
		h(w, r)
	}
}

func (b *backupAPI) grant(w http.ResponseWriter, r *http.Request) {
	var req protocol.SegmentGrantRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	status := b.grantStatus
	b.mu.Unlock()
	if status != 0 {
		http.Error(w, "no such backup", status)
		return
	}
	if req.Method == http.MethodPut && (req.Size <= 0 || len(req.SHA256) != 64) {
		http.Error(w, "PUT grant needs size and sha256", http.StatusBadRequest)
		return
	}
	u := fmt.Sprintf("%s/objects/%s/%s?sig=%s&size=%d", b.srv.URL, r.PathValue("id"), r.PathValue("n"), b.sig, req.Size)
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(protocol.Grant{Method: req.Method, URL: u, Expires: time.Now().Add(time.Minute)})
}

func (b *backupAPI) done(w http.ResponseWriter, r *http.Request) {
	var rep protocol.SegmentReport
	if err := json.NewDecoder(r.Body).Decode(&rep); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var n int
	fmt.Sscan(r.PathValue("n"), &n)
	b.mu.Lock()
	b.reports[n] = rep
	b.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (b *backupAPI) progressHandler(w http.ResponseWriter, r *http.Request) {
	var p protocol.BackupProgress
	if err := json.NewDecoder(r.Body).Decode(&p); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	b.mu.Lock()
	b.progress = append(b.progress, p.EstimatedBytes)
	b.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (b *backupAPI) object(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("sig") != b.sig {
		http.Error(w, "bad signature", http.StatusForbidden)
		return
	}
	key := r.PathValue("id") + "/" + r.PathValue("n")
	switch r.Method {
	case http.MethodPut:
		if fmt.Sprint(r.ContentLength) != r.URL.Query().Get("size") {
			http.Error(w, "Content-Length is not the granted size", http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.mu.Lock()
		b.objects[key] = body
		b.mu.Unlock()
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet:
		b.mu.Lock()
		body, ok := b.objects[key]
		b.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		_, _ = w.Write(body)
	}
}

// segments returns the recorded segments of a backup, as the control plane
// hands them to a restore.
func (b *backupAPI) segments(t *testing.T, n int) []protocol.SegmentInfo {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.reports) != n {
		t.Fatalf("%d segments reported, result says %d", len(b.reports), n)
	}
	out := make([]protocol.SegmentInfo, n)
	for i := range n {
		r, ok := b.reports[i]
		if !ok {
			t.Fatalf("segment %d not reported", i)
		}
		out[i] = protocol.SegmentInfo{Size: r.Size, SHA256: r.SHA256}
	}
	return out
}

// backupDriver is fakeDriver plus driver.Backupper: Backup writes stream,
// Restore reads its chain into restored.
type backupDriver struct {
	*fakeDriver
	stream    []byte
	backupErr error // returned after writing half the stream
	point     protocol.BackupPoint

	mu          sync.Mutex
	writeErr    error // what Backup's writes returned
	restoreReqs []protocol.PrepareRequest
	restored    [][]byte
}

func (d *backupDriver) BackupSize(context.Context) (int64, error) {
	return int64(len(d.stream)), nil
}

func (d *backupDriver) Backup(ctx context.Context, kind string, parent *protocol.BackupPoint, w io.Writer) (protocol.BackupPoint, error) {
	data := d.stream
	if d.backupErr != nil {
		data = data[:len(data)/2]
	}
	for len(data) > 0 {
		k := min(len(data), 32<<10)
		if _, err := w.Write(data[:k]); err != nil {
			d.mu.Lock()
			d.writeErr = err
			d.mu.Unlock()
			return protocol.BackupPoint{}, fmt.Errorf("stream: %w", err)
		}
		data = data[k:]
	}
	if d.backupErr != nil {
		return protocol.BackupPoint{}, d.backupErr
	}
	return d.point, nil
}

func (d *backupDriver) Restore(ctx context.Context, req protocol.PrepareRequest, chain []driver.RestoreLayer) error {
	d.mu.Lock()
	d.restoreReqs = append(d.restoreReqs, req)
	d.mu.Unlock()
	for _, l := range chain {
		rc, err := l.Open(ctx)
		if err != nil {
			return err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("read layer: %w", err)
		}
		d.mu.Lock()
		d.restored = append(d.restored, b)
		d.mu.Unlock()
	}
	return nil
}

// newBackupAgent returns an agent for api and drv, logging into logs.
func newBackupAgent(t *testing.T, api *backupAPI, drv driver.Driver, logs *bytes.Buffer) *Agent {
	t.Helper()
	var logger *slog.Logger
	if logs != nil {
		logger = slog.New(slog.NewTextHandler(&lockedWriter{w: logs}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	} else {
		logger = testLogger(t)
	}
	a, err := New(api.config(), drv, logger)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	a.backoffMin = time.Millisecond
	a.backoffMax = 5 * time.Millisecond
	a.requestTimeout = 5 * time.Second
	return a
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// run executes one command the way the poll loop does.
func runCommand(t *testing.T, a *Agent, name string, payload any) protocol.Result {
	t.Helper()
	b, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	res, ok := a.execute(t.Context(), testLogger(t), protocol.Command{ID: rand.Text(), Name: name, Payload: b, LeaseSeconds: 60})
	if !ok {
		t.Fatal("command interrupted")
	}
	return res
}

func testStream(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "%d\t%d\t0\t%s\n", i, i/1000, strings.Repeat(" ", 84))
		if i%50 == 0 { // a page's worth of incompressible bytes
			noise := make([]byte, 1<<10)
			_, _ = rand.Read(noise)
			b.Write(noise)
		}
	}
	return b.Bytes()[:n]
}

func newDataKey() []byte {
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	return k
}

func TestBackupAndRestoreCommands(t *testing.T) {
	t.Parallel()
	api := newBackupAPI(t)
	var logs bytes.Buffer
	drv := &backupDriver{
		fakeDriver: newFakeDriver(),
		stream:     testStream(3 << 20),
		point:      protocol.BackupPoint{StartLSN: "0/2000028", EndLSN: "0/2000100", Timeline: 1},
	}
	a := newBackupAgent(t, api, drv, &logs)
	key := newDataKey()
	const id = "0b6f3b8e-4a57-4bd4-9d5e-6b1b0c7a1e11"

	res := runCommand(t, a, protocol.CommandBackup, protocol.BackupRequest{
		BackupID: id, Kind: protocol.BackupFull, DataKey: key, SegmentSize: 64 << 10, Parallel: 3,
	})
	if !res.OK {
		t.Fatalf("backup failed: %s", res.Error)
	}
	var out protocol.BackupResult
	if err := json.Unmarshal(res.Output, &out); err != nil {
		t.Fatalf("backup output %s: %v", res.Output, err)
	}
	if out.Point != drv.point || out.RawBytes != int64(len(drv.stream)) || out.Segments < 2 {
		t.Fatalf("backup result %+v, want point %+v, %d raw bytes, several segments", out, drv.point, len(drv.stream))
	}
	api.mu.Lock()
	progress := append([]int64(nil), api.progress...)
	api.mu.Unlock()
	if len(progress) != 1 || progress[0] != int64(len(drv.stream)) {
		t.Errorf("progress reports %v, want one with the driver's estimate %d", progress, len(drv.stream))
	}
	segs := api.segments(t, out.Segments)

	// Restore through Prepare; the driver's Restore gets the stream back
	// and never sees the data key, nor does Prepare.
	prep := protocol.PrepareRequest{Datastore: "postgresql", Restore: &protocol.RestoreRequest{Chain: []protocol.RestoreBackup{
		{BackupID: id, Kind: protocol.BackupFull, Point: out.Point, DataKey: key, Segments: segs},
	}}}
	res = runCommand(t, a, protocol.CommandPrepare, prep)
	if !res.OK {
		t.Fatalf("prepare with restore failed: %s", res.Error)
	}
	drv.mu.Lock()
	if len(drv.restored) != 1 || !bytes.Equal(drv.restored[0], drv.stream) {
		t.Errorf("restore read %d layers, first equal to the backup: %v", len(drv.restored), len(drv.restored) == 1 && bytes.Equal(drv.restored[0], drv.stream))
	}
	for _, r := range drv.restoreReqs {
		if r.Restore.Chain[0].DataKey != nil {
			t.Error("driver.Restore received the data key")
		}
	}
	drv.mu.Unlock()
	drv.locked(func() {
		if len(drv.prepares) != 1 || drv.prepares[0].Restore == nil || drv.prepares[0].Restore.Chain[0].DataKey != nil {
			t.Errorf("Prepare calls %d; want one, with the restore chain and without its data key", len(drv.prepares))
		}
	})

	// A corrupt segment fails the restore with the backup named.
	api.mu.Lock()
	obj := api.objects[id+"/1"]
	obj[10] ^= 0xff
	api.mu.Unlock()
	res = runCommand(t, a, protocol.CommandPrepare, prep)
	if want := "segment 1 of backup " + id + ": checksum mismatch"; res.OK || !strings.Contains(res.Error, want) {
		t.Errorf("restore of a corrupt segment: ok %v, error %q, want %q", res.OK, res.Error, want)
	}

	if strings.Contains(logs.String(), api.sig) {
		t.Error("the logs contain a grant's signature")
	}
}

func TestBackupFailures(t *testing.T) {
	t.Parallel()
	key := newDataKey()
	req := protocol.BackupRequest{BackupID: "b1", Kind: protocol.BackupFull, DataKey: key, SegmentSize: 32 << 10, Parallel: 2}

	t.Run("no backupper", func(t *testing.T) {
		t.Parallel()
		api := newBackupAPI(t)
		a := newBackupAgent(t, api, newFakeDriver(), nil)
		res := runCommand(t, a, protocol.CommandBackup, req)
		if res.OK || res.Error != "this datastore does not support backups" {
			t.Errorf("backup on a driver without Backupper: ok %v, error %q", res.OK, res.Error)
		}
		res = runCommand(t, a, protocol.CommandPrepare, protocol.PrepareRequest{Restore: &protocol.RestoreRequest{}})
		if res.OK || !strings.Contains(res.Error, "does not support backups") {
			t.Errorf("restore on a driver without Backupper: ok %v, error %q", res.OK, res.Error)
		}
	})

	t.Run("bad request", func(t *testing.T) {
		t.Parallel()
		api := newBackupAPI(t)
		a := newBackupAgent(t, api, &backupDriver{fakeDriver: newFakeDriver()}, nil)
		bad := req
		bad.DataKey = key[:16]
		res := runCommand(t, a, protocol.CommandBackup, bad)
		if res.OK || res.Error != "backup b1: data key is 16 bytes, want 32" {
			t.Errorf("short key: ok %v, error %q", res.OK, res.Error)
		}
		bad = req
		bad.Kind = protocol.BackupIncremental
		if res := runCommand(t, a, protocol.CommandBackup, bad); res.OK || !strings.Contains(res.Error, "parent") {
			t.Errorf("incremental without parent: ok %v, error %q", res.OK, res.Error)
		}
	})

	t.Run("driver fails", func(t *testing.T) {
		t.Parallel()
		api := newBackupAPI(t)
		drv := &backupDriver{fakeDriver: newFakeDriver(), stream: testStream(1 << 20), backupErr: errors.New("pg_basebackup exited with status 1")}
		a := newBackupAgent(t, api, drv, nil)
		res := runCommand(t, a, protocol.CommandBackup, req)
		if res.OK || res.Error != "backup b1: pg_basebackup exited with status 1" {
			t.Errorf("driver failure: ok %v, error %q", res.OK, res.Error)
		}
	})

	t.Run("upload refused", func(t *testing.T) {
		t.Parallel()
		api := newBackupAPI(t)
		api.grantStatus = http.StatusNotFound
		drv := &backupDriver{fakeDriver: newFakeDriver(), stream: testStream(4 << 20)}
		a := newBackupAgent(t, api, drv, nil)
		done := make(chan protocol.Result, 1)
		go func() { done <- runCommand(t, a, protocol.CommandBackup, req) }()
		var res protocol.Result
		select {
		case res = <-done:
		case <-time.After(30 * time.Second):
			t.Fatal("backup still running 30s after its grants were refused")
		}
		if res.OK || !regexp.MustCompile(`^backup b1: upload: segment \d+: grant: segment grant: agent API answered 404`).MatchString(res.Error) {
			t.Errorf("refused grant: ok %v, error %q", res.OK, res.Error)
		}
		drv.mu.Lock()
		defer drv.mu.Unlock()
		if drv.writeErr == nil {
			t.Error("the driver's writes did not fail when the upload did")
		}
	})
}
