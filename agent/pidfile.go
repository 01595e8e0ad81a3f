package agent

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

// writePIDFile records this process's id at path. It writes a temporary
// file and renames it so that a reader (the local provider checking whether
// the agent runs) never sees a partial file. A stale file from a crashed
// run is replaced.
func writePIDFile(path string) error {
	if err := atomicfile.Write(path, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("write PID file: %w", err)
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
