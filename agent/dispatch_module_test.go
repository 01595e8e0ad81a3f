package agent

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

func moduleMD5(b string) string {
	s := md5.Sum([]byte(b))
	return hex.EncodeToString(s[:])
}

// The module handlers through the dispatch table: contents stored 0600
// under <volume>/modules, the New Relic license written, a bad module
// reported ERROR without failing the others, removal idempotent.
func TestModuleCommands(t *testing.T) {
	t.Parallel()
	api := newFakeAPI(t)
	cfg := api.config()
	cfg.DataDir = t.TempDir()
	a := newTestAgent(t, cfg, newFakeDriver())
	ctx := context.Background()

	req := protocol.ModuleApplyRequest{Modules: []protocol.Module{
		{ID: "1", Name: "pinger", Type: "ping", MD5: moduleMD5("hi"), Contents: []byte("hi")},
		{ID: "2", Name: "nr", Type: "new_relic_license", MD5: moduleMD5("license_key=abc123\n"), Contents: []byte("license_key=abc123\n")},
		{ID: "3", Name: "torn", Type: "ping", MD5: moduleMD5("other"), Contents: []byte("hi")},
		{ID: "4", Name: "../escape", Type: "ping", Contents: []byte("x")},
		{ID: "5", Name: "odd", Type: "nosuch", Contents: []byte("x")},
	}}
	payload, _ := json.Marshal(req)
	out, err := a.handlers[protocol.CommandModuleApply](ctx, payload)
	if err != nil {
		t.Fatal(err)
	}
	var res protocol.ModuleApplyResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	want := []string{"OK", "OK", "ERROR", "ERROR", "ERROR"}
	for i, r := range res.Modules {
		if r.Status != want[i] || r.ID != req.Modules[i].ID {
			t.Errorf("module %s: %+v, want %s", req.Modules[i].Name, r, want[i])
		}
	}
	if len(res.Modules) != len(want) || res.Modules[0].Message != "Module applied" {
		t.Fatalf("results: %+v", res.Modules)
	}
	file := filepath.Join(cfg.DataDir, "modules", "pinger")
	if b, err := os.ReadFile(file); err != nil || string(b) != "hi" {
		t.Errorf("pinger contents %q, %v", b, err)
	}
	if fi, err := os.Stat(file); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("pinger mode %v, %v", fi, err)
	}
	lic := filepath.Join(cfg.DataDir, newRelicLicenseFile)
	if b, err := os.ReadFile(lic); err != nil || string(b) != "license_key = abc123\n" {
		t.Errorf("license file %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "escape")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a module name left the modules directory: %v", err)
	}

	for _, m := range []protocol.ModuleRemoveRequest{{ID: "2", Name: "nr", Type: "new_relic_license"}, {ID: "1", Name: "pinger", Type: "ping"}, {ID: "1", Name: "pinger", Type: "ping"}} {
		p, _ := json.Marshal(m)
		if _, err := a.handlers[protocol.CommandModuleRemove](ctx, p); err != nil {
			t.Errorf("remove %s: %v", m.Name, err)
		}
	}
	for _, f := range []string{file, lic, filepath.Join(cfg.DataDir, "modules", "nr")} {
		if _, err := os.Stat(f); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s after remove: %v", f, err)
		}
	}
}
