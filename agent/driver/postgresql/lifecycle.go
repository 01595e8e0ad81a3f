package postgresql

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/internal/atomicfile"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// Restart, flavor resize and volume resize (driver.Configurable), and the
// volume's size limit.
//
// The volume's size is what the control plane says it is (state.json's
// VolumeSizeGB, from the prepare request and every volume resize). On a
// VM the filesystem enforces it; the local provider's volume is a plain
// directory, so the driver does: when the files on the volume reach its
// size, the server is made read-only (default_transaction_read_only = on,
// set with ALTER SYSTEM and a reload, so sessions already connected are
// read-only from their next transaction) until usage drops below the size
// again (a volume resize, or data removed by a session that chose
// SET default_transaction_read_only = off, which PostgreSQL lets any user
// do). It is a soft limit by nature, but it stops the usual workload, and
// it is reported: heartbeats carry used and total bytes, and the API shows
// volume.used next to volume.size. A hard limit would need a real
// filesystem of that size (a loop device), which the local provider, meant
// for development, does without.

// ApplyConfiguration is in configuration.go.
var _ driver.Configurable = (*Driver)(nil)

// fullMarker, in the volume, records that the driver made the server
// read-only because the volume was full; only then does it lift it again,
// so a read-only setting someone else made is left alone.
const fullMarker = "volume-full"

// liftBelow is the share of the volume (in percent) usage must fall under
// before a full volume's server takes writes again; the margin keeps it
// from flapping at the boundary.
const liftBelow = 98

// limitLocks serialises enforcement per volume: heartbeats and the
// resize command may check at once.
var limitLocks sync.Map // data directory → *sync.Mutex

// preparedCluster returns the server, once Prepare completed.
func (d *Driver) preparedCluster(op string) (*pgctl.Cluster, error) {
	st, err := d.loadState()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", op, err)
	}
	if !st.Prepared {
		return nil, fmt.Errorf("%s: the datastore is not prepared yet", op)
	}
	return d.cluster(st.SuperPassword), nil
}

// Restart stops the server (fast: sessions are disconnected, open
// transactions rolled back) and starts it again, which also applies
// settings that take effect only at start. It returns once the server
// answers again. A stopped or crashed server is simply started.
func (d *Driver) Restart(ctx context.Context) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	c, err := d.preparedCluster("restart")
	if err != nil {
		return err
	}
	if err := c.Restart(ctx); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	if err := waitHealthy(ctx, c); err != nil {
		return fmt.Errorf("restart: %w", err)
	}
	return nil
}

// ResizeMemory re-derives the memory settings (serverSettings, as Prepare
// does) for a flavor with ramMB of memory and restarts the server with
// them. Only coffer.conf is rewritten: a configuration group's values
// (overrides.conf, included after it) keep winning over derived ones. If the server does not come back, the previous settings are
// restored and the server started with them, and the error says so: the
// instance keeps its old flavor rather than staying down.
func (d *Driver) ResizeMemory(ctx context.Context, ramMB int) error {
	if ramMB <= 0 {
		return fmt.Errorf("resize memory: %d MB is not a flavor's memory", ramMB)
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	c, err := d.preparedCluster("resize memory")
	if err != nil {
		return err
	}
	path := filepath.Join(c.DataDir, "coffer.conf")
	before, err := readOwned(path)
	if err != nil {
		return fmt.Errorf("resize memory: %w", err)
	}
	changed, err := d.writeConfig(c, ramMB)
	if err != nil {
		return fmt.Errorf("resize memory: %w", err)
	}
	if !changed && c.Running() {
		// Already resized (a repeated command): the server runs with these
		// settings since the restart that followed the write. Make sure it
		// answers.
		if err := waitHealthy(ctx, c); err != nil {
			return fmt.Errorf("resize memory: %w", err)
		}
		return nil
	}
	err = c.Restart(ctx)
	if err == nil {
		err = waitHealthy(ctx, c)
	}
	if err == nil {
		return nil
	}
	// Roll back: the old settings, and the server running on them.
	if rerr := before.restore(path); rerr != nil {
		return fmt.Errorf("resize memory to %d MB: %w; restoring the previous settings failed too: %v", ramMB, err, rerr)
	}
	rctx := context.WithoutCancel(ctx)
	if rerr := c.Restart(rctx); rerr != nil {
		return fmt.Errorf("resize memory to %d MB: %w; the server did not start with the previous settings either: %v", ramMB, err, rerr)
	}
	return fmt.Errorf("resize memory to %d MB: %w (the previous settings are back in effect)", ramMB, err)
}

// ownedFile is a file's content with its owner and mode, to put back.
type ownedFile struct {
	data     []byte
	uid, gid int
	mode     fs.FileMode
}

func readOwned(path string) (ownedFile, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return ownedFile{}, fmt.Errorf("read %s: %w", path, err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ownedFile{}, fmt.Errorf("read %s: %w", path, err)
	}
	f := ownedFile{data: b, uid: -1, gid: -1, mode: fi.Mode().Perm()}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		f.uid, f.gid = int(st.Uid), int(st.Gid)
	}
	return f, nil
}

// restore writes the file back atomically, owned as it was (the server's
// user must read it).
func (f ownedFile) restore(path string) error {
	return atomicfile.WriteWith(path, f.data, f.mode, func(tmp string) error {
		if f.uid < 0 {
			return nil
		}
		return os.Chown(tmp, f.uid, f.gid)
	})
}

// ResizeVolume records the volume's new size: heartbeats report it as the
// volume's total, and the size limit follows it at once (a server made
// read-only by a full volume takes writes again when the new size leaves
// room). The volume is a directory under the local provider, so nothing
// else grows; on a VM the provider has grown the block device, and the
// filesystem on it is grown here (driver.GrowFilesystem).
func (d *Driver) ResizeVolume(ctx context.Context, sizeGB int) error {
	if sizeGB < 1 {
		return fmt.Errorf("resize volume: %d GB is not a volume size", sizeGB)
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	st, err := d.loadState()
	if err != nil {
		return fmt.Errorf("resize volume: %w", err)
	}
	if !st.Prepared {
		return errors.New("resize volume: the datastore is not prepared yet")
	}
	// On a VM the provider has grown the block device: grow the filesystem
	// first, so that the recorded size is never ahead of it (a no-op for
	// the local provider's plain directory).
	if _, err := driver.GrowFilesystem(ctx, d.dataDir); err != nil {
		return fmt.Errorf("resize volume to %d GB: %w", sizeGB, err)
	}
	if st.VolumeSizeGB != sizeGB {
		st.VolumeSizeGB = sizeGB
		if err := d.saveState(st); err != nil {
			return fmt.Errorf("resize volume: %w", err)
		}
	}
	used, total, err := d.VolumeUsage(ctx)
	if err != nil {
		return fmt.Errorf("resize volume: %w", err)
	}
	if err := d.enforceVolumeLimit(ctx, used, total); err != nil {
		return fmt.Errorf("resize volume to %d GB: %w", sizeGB, err)
	}
	return nil
}

// enforceVolumeLimit makes the server read-only when used reaches total,
// and takes writes again once used is below liftBelow percent of total.
// It runs with every heartbeat's usage reading; an error (the server is
// restarting, say) leaves things as they are until the next reading.
func (d *Driver) enforceVolumeLimit(ctx context.Context, used, total int64) error {
	if total <= 0 {
		return nil // no size known yet (before Prepare)
	}
	mu, _ := limitLocks.LoadOrStore(d.dataDir, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	defer mu.(*sync.Mutex).Unlock()

	marker := filepath.Join(d.dataDir, fullMarker)
	_, err := os.Stat(marker)
	marked := err == nil
	switch {
	case used >= total:
		// The marker first: if the driver stops between the two steps,
		// the next reading still knows the read-only setting is its own.
		if !marked {
			msg := fmt.Sprintf("volume full: %d of %d bytes used; the server is read-only until it has room again\n", used, total)
			if err := atomicfile.Write(marker, []byte(msg), 0o644); err != nil {
				return fmt.Errorf("volume limit: %w", err)
			}
		}
		// Checked on every reading while full: a configuration change
		// may have reset the setting meanwhile.
		return d.setReadOnly(ctx, true)
	case marked && used*100 < total*liftBelow:
		if err := d.setReadOnly(ctx, false); err != nil {
			return err
		}
		if err := os.Remove(marker); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("volume limit: %w", err)
		}
	}
	return nil
}

// setReadOnly switches the server-wide default_transaction_read_only with
// ALTER SYSTEM (postgresql.auto.conf, which no other writer of coffer.conf
// touches) and a reload.
func (d *Driver) setReadOnly(ctx context.Context, on bool) error {
	c, err := d.preparedCluster("volume limit")
	if err != nil {
		return err
	}
	if !c.Running() {
		return nil // set when it runs again: the next reading checks
	}
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return fmt.Errorf("volume limit: connect as %s: %w", AdminUser, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var current string
	if err := conn.QueryRow(ctx, "SELECT setting FROM pg_settings WHERE name = 'default_transaction_read_only'").Scan(&current); err != nil {
		return fmt.Errorf("volume limit: read default_transaction_read_only: %w", err)
	}
	if (current == "on") == on {
		return nil
	}
	stmt := "ALTER SYSTEM RESET default_transaction_read_only"
	if on {
		stmt = "ALTER SYSTEM SET default_transaction_read_only = on"
	}
	// The admin session itself must not be read-only for this.
	if _, err := conn.Exec(ctx, "SET default_transaction_read_only = off"); err != nil {
		return fmt.Errorf("volume limit: %w", err)
	}
	if _, err := conn.Exec(ctx, stmt); err != nil {
		return fmt.Errorf("volume limit: %s: %w", stmt, err)
	}
	if _, err := conn.Exec(ctx, "SELECT pg_reload_conf()"); err != nil {
		return fmt.Errorf("volume limit: reload: %w", err)
	}
	return nil
}
