package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
)

// writePIDFile records this process's id at path. It writes a temporary
// file and renames it so that a reader (the local provider checking whether
// the agent runs) never sees a partial file. A stale file from a crashed
// run is replaced.
func writePIDFile(path string) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("write PID file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // no-op after the rename

	if _, err := tmp.WriteString(strconv.Itoa(os.Getpid()) + "\n"); err != nil {
		tmp.Close()
		return fmt.Errorf("write PID file %s: %w", path, err)
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return fmt.Errorf("write PID file %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write PID file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("write PID file %s: %w", path, err)
	}
	return nil
}

// removePIDFile removes the PID file if it still names this process: a
// newer agent started meanwhile owns it otherwise.
func removePIDFile(path string) error {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read PID file %s: %w", path, err)
	}
	if string(bytes.TrimSpace(b)) != strconv.Itoa(os.Getpid()) {
		return nil
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove PID file %s: %w", path, err)
	}
	return nil
}
