package local

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// instanceLock serialises CreateServer and DeleteServer of one instance
// across goroutines and worker processes: an exclusive flock on <dir>/.lock.
// The lock lives inside the instance directory so that deleting the
// directory leaves nothing behind; a waiter that wakes up holding a lock on
// a file DeleteServer has since removed notices (the path no longer names
// the file it locked) and starts over.
type instanceLock struct{ f *os.File }

// lockInstance locks dir. With create, it makes dir first (0755: a
// datastore running as another user must traverse it to reach its volume);
// without, it returns (nil, nil) if dir does not exist.
func lockInstance(ctx context.Context, dir string, create bool) (*instanceLock, error) {
	path := filepath.Join(dir, ".lock")
	for {
		if create {
			if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
				return nil, fmt.Errorf("create directory: %w", err)
			}
			// Mkdir is subject to the umask.
			if err := os.Chmod(dir, 0o755); err != nil {
				return nil, fmt.Errorf("create directory: %w", err)
			}
		}
		flags := os.O_RDWR
		if create {
			flags |= os.O_CREATE
		}
		f, err := os.OpenFile(path, flags, 0o600)
		if err != nil {
			if !create && errors.Is(err, fs.ErrNotExist) {
				return nil, nil
			}
			return nil, fmt.Errorf("open lock: %w", err)
		}
		if err := flock(ctx, f); err != nil {
			f.Close()
			return nil, err
		}
		held, err := f.Stat()
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("stat lock: %w", err)
		}
		current, err := os.Stat(path)
		if err == nil && os.SameFile(held, current) {
			return &instanceLock{f: f}, nil
		}
		// The holder we waited for deleted the instance.
		f.Close()
		if !create {
			return nil, nil
		}
	}
}

// flock takes an exclusive lock on f, giving up when ctx ends. Polling with
// LOCK_NB keeps a cancelled job from hanging in a blocking flock.
func flock(ctx context.Context, f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("lock: %w", err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("lock: %w", context.Cause(ctx))
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// unlock releases the lock (closing the file drops the flock).
func (l *instanceLock) unlock() {
	if l != nil {
		l.f.Close()
	}
}
