// Package atomicfile replaces files so that a reader never sees a partial
// one and a crash leaves either the old or the new content: configuration
// an agent re-reads on SIGHUP, keys, pid files, a driver's state.
package atomicfile

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Write replaces path with data, mode perm. See WriteWith.
func Write(path string, data []byte, perm fs.FileMode) error {
	return WriteWith(path, data, perm, nil)
}

// WriteWith replaces path with data: a temporary file in the same directory
// (created 0600, so a secret is never readable by others even briefly) is
// written, given mode perm, passed to prepare (e.g. to chown it) when not
// nil, synced and renamed over path, and the directory is synced.
func WriteWith(path string, data []byte, perm fs.FileMode, prepare func(tmp string) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil && prepare != nil {
		err = prepare(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write %s: sync directory: %w", path, err)
	}
	return nil
}
