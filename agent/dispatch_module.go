package agent

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Modules on the guest (Trove's module manager): each applied module's
// contents live in <volume>/modules/<name>, readable by the agent only,
// and its type's driver runs on them. `ping` only checks that the module
// arrived intact; `new_relic_license` writes the license file a New Relic
// agent would read (no New Relic agent runs here). A driver failure is the
// module's ERROR status, not the command's failure: the other modules of
// the request are still applied and reported.

// moduleHandlers are the module commands, merged into defaultHandlers.
func (a *Agent) moduleHandlers() map[string]handler {
	return map[string]handler{
		protocol.CommandModuleApply:  commandHandler(a.moduleApply),
		protocol.CommandModuleRemove: commandHandler(a.moduleRemove),
	}
}

// newRelicLicenseFile is where new_relic_license writes the license,
// relative to the volume.
const newRelicLicenseFile = "newrelic/newrelic.cfg"

func (a *Agent) modulesDir() string {
	return filepath.Join(a.conn.Load().cfg.DataDir, "modules")
}

// moduleFile is the contents file of a module; names that would leave the
// modules directory are refused (the API refuses them too).
func (a *Agent) moduleFile(name string) (string, error) {
	if name == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\\x00") {
		return "", fmt.Errorf("module name %q cannot be a file name", name)
	}
	return filepath.Join(a.modulesDir(), name), nil
}

func (a *Agent) moduleApply(ctx context.Context, req protocol.ModuleApplyRequest) (any, error) {
	if err := os.MkdirAll(a.modulesDir(), 0o700); err != nil {
		return nil, fmt.Errorf("create modules directory: %w", err)
	}
	out := protocol.ModuleApplyResult{Modules: []protocol.ModuleResult{}}
	for _, m := range req.Modules {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		r := protocol.ModuleResult{ID: m.ID, Name: m.Name, MD5: m.MD5, Status: "OK"}
		msg, err := a.applyModule(m)
		if err != nil {
			r.Status, r.Message = "ERROR", err.Error()
		} else {
			r.Message = msg
		}
		a.logger.Info("module applied", "module", m.Name, "type", m.Type, "status", r.Status, "message", r.Message)
		out.Modules = append(out.Modules, r)
	}
	return out, nil
}

// applyModule stores one module's contents and runs its driver.
func (a *Agent) applyModule(m protocol.Module) (string, error) {
	sum := md5.Sum(m.Contents)
	if got := hex.EncodeToString(sum[:]); m.MD5 != "" && got != m.MD5 {
		return "", fmt.Errorf("contents md5 %s does not match %s", got, m.MD5)
	}
	path, err := a.moduleFile(m.Name)
	if err != nil {
		return "", err
	}
	if err := writeFileAtomic(path, m.Contents); err != nil {
		return "", fmt.Errorf("store module %s: %w", m.Name, err)
	}
	switch m.Type {
	case protocol.ModuleTypePing:
		return "Module applied", nil
	case protocol.ModuleTypeNewRelicLicense:
		license := strings.TrimSpace(string(m.Contents))
		if k, v, ok := strings.Cut(license, "="); ok && strings.TrimSpace(k) == "license_key" {
			license = strings.TrimSpace(v)
		}
		if license == "" || strings.ContainsAny(license, "\r\n") {
			return "", errors.New("contents must be one New Relic license key")
		}
		file := filepath.Join(a.conn.Load().cfg.DataDir, newRelicLicenseFile)
		if err := os.MkdirAll(filepath.Dir(file), 0o700); err != nil {
			return "", fmt.Errorf("write New Relic license: %w", err)
		}
		if err := writeFileAtomic(file, []byte("license_key = "+license+"\n")); err != nil {
			return "", fmt.Errorf("write New Relic license: %w", err)
		}
		return "New Relic license applied", nil
	default:
		return "", fmt.Errorf("module type %s is not supported on this guest", m.Type)
	}
}

func (a *Agent) moduleRemove(_ context.Context, req protocol.ModuleRemoveRequest) (any, error) {
	path, err := a.moduleFile(req.Name)
	if err != nil {
		return nil, err
	}
	if req.Type == protocol.ModuleTypeNewRelicLicense {
		file := filepath.Join(a.conn.Load().cfg.DataDir, newRelicLicenseFile)
		if err := os.Remove(file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("remove New Relic license: %w", err)
		}
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("remove module %s: %w", req.Name, err)
	}
	a.logger.Info("module removed", "module", req.Name)
	return nil, nil
}

// writeFileAtomic writes b to path (0600) through a temporary file, so a
// crash leaves the old contents or the new, never a torn file.
func writeFileAtomic(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
