package local

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// A rebuild ends the server's processes and starts a new agent on the
// same volume and configuration; the image is recorded.
func TestRebuildServer(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	p := newProvider(t)
	const id = "4e6f1a0c-0000-4000-8000-0000000000r1"
	srv := create(t, p, testSpec(id, "postgresql", "one"))
	dir := filepath.Join(p.root, id)
	agent := readPIDFile(t, filepath.Join(dir, "agent.pid"))
	datastorePID := filepath.Join(dir, "volume", "datastore0.pid")
	datastore := readPIDFile(t, datastorePID)
	if err := os.WriteFile(filepath.Join(dir, "volume", "data"), []byte("kept"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(datastorePID); err != nil {
		t.Fatal(err)
	}

	got, err := p.RebuildServer(ctx, id, "img-7")
	if err != nil || got != srv {
		t.Fatalf("RebuildServer = %+v, %v; want %+v", got, err, srv)
	}
	if alive(agent) || alive(datastore) {
		t.Errorf("old agent %d (alive %v) or datastore %d (alive %v) survived the rebuild", agent, alive(agent), datastore, alive(datastore))
	}
	newAgent := readPIDFile(t, filepath.Join(dir, "agent.pid"))
	newDatastore := readPIDFile(t, datastorePID)
	if newAgent == agent || !alive(newAgent) || newDatastore == datastore || !alive(newDatastore) {
		t.Errorf("after the rebuild: agent %d → %d, datastore %d → %d", agent, newAgent, datastore, newDatastore)
	}
	if got := readFile(t, filepath.Join(dir, "volume", "data")); got != "kept" {
		t.Errorf("volume data after the rebuild: %q", got)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(dir, "image"))); got != "img-7" {
		t.Errorf("recorded image %q", got)
	}
	if got := strings.TrimSpace(readFile(t, filepath.Join(dir, "token"))); got != id+".one" {
		t.Errorf("the new agent's token %q: want the configuration kept", got)
	}
	if s, err := p.GetServer(ctx, id); err != nil || s.Status != provider.StatusActive {
		t.Errorf("GetServer after the rebuild: %+v, %v", s, err)
	}

	if _, err := p.RebuildServer(ctx, "4e6f1a0c-0000-4000-8000-0000000000r2", "img"); !errors.Is(err, provider.ErrNotFound) {
		t.Errorf("rebuild of an unknown server: %v, want ErrNotFound", err)
	}
	if _, err := p.RebuildServer(ctx, "../x", "img"); err == nil {
		t.Error("rebuild of an invalid id succeeded")
	}
}
