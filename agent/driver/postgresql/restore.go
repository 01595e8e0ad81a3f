package postgresql

import (
	"archive/tar"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"os/user"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/atomicfile"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// Restore builds an instance's volume from a chain of backups: the full
// backup's tar becomes PGDATA, the incrementals' WAL goes to
// <volume>/restore_wal, and the server replays it in archive recovery
// (restore_command copies from restore_wal; no recovery target, so it
// replays everything there is and then promotes). The chain's last backup
// ends with a segment switch, so "everything" is exactly up to its EndLSN,
// which Restore checks the server reached.
//
// The cluster is the source instance's: its databases, users and their
// passwords come back as they were. Its os_admin has the source's password,
// which this agent does not know, so recovery runs with a private socket
// (a 0700 directory of the server's user; no TCP) and trust
// authentication, long enough to give os_admin a new password that
// state.json records. The settings are this instance's: coffer.conf is
// written for this volume, flavor, addresses and archive; the source's
// configuration group (overrides.conf) is dropped, as a new instance has
// none until the control plane applies one; a read-only setting the
// source's full volume left (lifecycle.go) is reset.
//
// Restore leaves the server stopped with state.json holding the new
// password and not prepared; Prepare (which the agent runs next) then finds
// a cluster (Init does nothing), writes the same configuration, starts the
// server and creates the requested databases and users that are missing.
//
// <volume>/restore.json records progress: "restoring" while Restore runs,
// so a restore interrupted by a crash is removed and started over, and
// "done", so that a repeated command does not restore twice.

// Names within the volume, during a restore.
const (
	restoreWALDir    = "restore_wal"
	restoreSockDir   = "rst" // as long as runDir: the socket path limit holds
	restoreStateName = "restore.json"
)

// restoreStartTimeout bounds recovery (pg_ctl start waits for all the WAL
// to be replayed) when the context has no deadline.
const restoreStartTimeout = 12 * time.Hour

// restoreState is restore.json.
type restoreState struct {
	State string               `json:"state"` // restoring, done
	Point protocol.BackupPoint `json:"point"`
}

// Restore builds the volume from chain (a full backup, then incrementals,
// each the child of the one before). See the comment at the top of the file.
func (d *Driver) Restore(ctx context.Context, req protocol.PrepareRequest, chain []driver.RestoreLayer) error {
	if req.Datastore != "" && req.Datastore != "postgresql" {
		return fmt.Errorf("restore: request is for datastore %q, this agent runs postgresql", req.Datastore)
	}
	if err := validateChain(chain); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()

	if err := mkdirVolume(d.dataDir); err != nil {
		return fmt.Errorf("restore: create data directory %s: %w", d.dataDir, err)
	}
	rs, err := d.loadRestoreState()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	switch rs.State {
	case "done":
		return nil // a repeated command
	case "restoring":
		// Interrupted: what it wrote goes, and the restore starts over.
		if err := d.removeRestore(ctx); err != nil {
			return fmt.Errorf("restore: remove an interrupted restore: %w", err)
		}
	default:
		if err := d.checkRestorable(); err != nil {
			return fmt.Errorf("restore: %w", err)
		}
	}
	if err := d.restore(ctx, req, chain); err != nil {
		if rerr := d.removeRestore(context.WithoutCancel(ctx)); rerr != nil {
			return fmt.Errorf("restore: %w (and removing what it wrote failed: %v)", err, rerr)
		}
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

func validateChain(chain []driver.RestoreLayer) error {
	if len(chain) == 0 {
		return errors.New("the chain of backups is empty")
	}
	for i, l := range chain {
		want := protocol.BackupIncremental
		if i == 0 {
			want = protocol.BackupFull
		}
		if l.Kind != want {
			return fmt.Errorf("backup %d of the chain is %q, want %s", i, l.Kind, want)
		}
		if l.Open == nil {
			return fmt.Errorf("backup %d of the chain has no stream", i)
		}
		if i == 0 {
			continue
		}
		prev := chain[i-1].Point
		if l.Point.StartWAL != prev.EndWAL || l.Point.Timeline != prev.Timeline {
			return fmt.Errorf("backup %d of the chain does not continue backup %d (it starts at %s on timeline %d, the other ends at %s on timeline %d)",
				i, i-1, l.Point.StartWAL, l.Point.Timeline, prev.EndWAL, prev.Timeline)
		}
	}
	return nil
}

// checkRestorable refuses a volume that holds an instance.
func (d *Driver) checkRestorable() error {
	for _, name := range []string{stateName, pgdataDir, archiveDir, restoreWALDir} {
		entries, err := os.ReadDir(filepath.Join(d.dataDir, name))
		if errors.Is(err, fs.ErrNotExist) || (err == nil && len(entries) == 0) {
			continue
		}
		return fmt.Errorf("the volume %s is not empty (%s exists): a restore needs a new volume", d.dataDir, name)
	}
	return nil
}

// removeRestore stops the server a restore started and removes everything
// a restore writes to the volume.
func (d *Driver) removeRestore(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	c := d.cluster("")
	if err := c.Stop(ctx); err != nil {
		return err
	}
	var errs []error
	// The state file last: until it is gone, a new attempt knows to clean up.
	for _, name := range []string{pgdataDir, restoreWALDir, restoreSockDir, archiveDir, runDir, logName, fullMarker, stateName, restoreStateName} {
		if err := os.RemoveAll(filepath.Join(d.dataDir, name)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (d *Driver) loadRestoreState() (restoreState, error) {
	var rs restoreState
	path := filepath.Join(d.dataDir, restoreStateName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return rs, nil
	}
	if err != nil {
		return rs, fmt.Errorf("read restore state: %w", err)
	}
	if err := json.Unmarshal(b, &rs); err != nil {
		return rs, fmt.Errorf("read restore state %s: %w", path, err)
	}
	return rs, nil
}

func (d *Driver) saveRestoreState(rs restoreState) error {
	b, err := json.Marshal(rs)
	if err != nil {
		return err
	}
	if err := atomicfile.Write(filepath.Join(d.dataDir, restoreStateName), append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save restore state: %w", err)
	}
	return nil
}

func (d *Driver) restore(ctx context.Context, req protocol.PrepareRequest, chain []driver.RestoreLayer) error {
	if err := d.saveRestoreState(restoreState{State: "restoring"}); err != nil {
		return err
	}
	owner, err := d.serverOwner()
	if err != nil {
		return err
	}
	pgdata := filepath.Join(d.dataDir, pgdataDir)
	walDir := filepath.Join(d.dataDir, restoreWALDir)
	sockDir := filepath.Join(d.dataDir, restoreSockDir)
	for _, dir := range []string{pgdata, walDir, sockDir} {
		// Empty ones may be there (checkRestorable); fresh ones are ours.
		if err := os.Remove(dir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		if err := os.Mkdir(dir, 0o700); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
		if err := owner.chown(dir); err != nil {
			return fmt.Errorf("create %s: %w", dir, err)
		}
	}

	// The layers, in order: PGDATA, then WAL (a later copy of a segment
	// replaces an earlier one: it is the more complete).
	for i, l := range chain {
		err := func() error {
			r, err := l.Open(ctx)
			if err != nil {
				return err
			}
			defer r.Close()
			if i == 0 {
				err = extractBase(r, pgdata, owner)
			} else {
				err = extractWAL(r, walDir, owner)
			}
			if err != nil {
				return err
			}
			// To the end: the pipeline verifies (checksums, the
			// authenticated end of the stream) only what is read.
			if _, err := io.Copy(io.Discard, r); err != nil {
				return fmt.Errorf("read the end of the stream: %w", err)
			}
			if i == 0 && !l.Point.NoManifest {
				return verifyBase(ctx, pgdata, owner)
			}
			return nil
		}()
		if err != nil {
			return fmt.Errorf("backup %d of the chain (%s): %w", i, l.Kind, err)
		}
	}

	// Recovery with a private socket and trust; the backup's pg_hba.conf
	// goes back afterwards.
	hbaPath := filepath.Join(pgdata, "pg_hba.conf")
	hba, err := readOwned(hbaPath)
	if err != nil {
		return fmt.Errorf("the full backup has no pg_hba.conf: %w", err)
	}
	if err := atomicfile.WriteWith(hbaPath, []byte("# Coffer agent: restore in progress\nlocal all all trust\n"), 0o600, owner.chown); err != nil {
		return err
	}
	// The source's configuration group is not this instance's.
	if err := os.Remove(filepath.Join(pgdata, overridesName)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := atomicfile.WriteWith(filepath.Join(pgdata, "recovery.signal"), nil, 0o600, owner.chown); err != nil {
		return err
	}

	// os_admin's new password, persisted before the server has it (as in
	// Prepare); this restore is removed if it fails after.
	password := randomPassword()
	if err := d.saveState(state{SuperPassword: password}); err != nil {
		return err
	}
	rc := d.cluster(password)
	rc.SocketDir, rc.ListenAddresses = sockDir, ""
	settings := serverSettings(req.FlavorRAMMB)
	maps.Copy(settings, d.archiveSettings())
	maps.Copy(settings, map[string]string{
		"restore_command":          "cp " + confPercent(shellQuote(walDir)) + `/%f "%p"`,
		"recovery_target_timeline": "latest",
		"recovery_target_action":   "promote",
		// No read-only sessions during recovery: nobody may connect, and
		// hot standby would pause the replay of a source with more
		// max_connections than this flavor has.
		"hot_standby": "off",
	})
	if err := d.makeArchiveDir(owner); err != nil {
		return err
	}
	if err := rc.WriteConfig(settings); err != nil {
		return err
	}

	sctx := ctx
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		sctx, cancel = context.WithTimeout(ctx, restoreStartTimeout)
		defer cancel()
	}
	// pg_ctl start returns once recovery has started; the server takes
	// connections when it is over and the server promoted.
	logStart := fileSize(rc.LogFile)
	if err := rc.Start(sctx); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	conn, err := waitRecovered(sctx, rc)
	if err != nil {
		if tail := readTail(rc.LogFile, logStart); tail != "" {
			return fmt.Errorf("recover: %w\nserver log:\n%s", err, tail)
		}
		return fmt.Errorf("recover: %w", err)
	}
	last := chain[len(chain)-1].Point
	err = finishRecovery(ctx, conn, password, last)
	conn.Close(context.WithoutCancel(ctx))
	if err != nil {
		return err
	}
	if err := rc.Stop(ctx); err != nil {
		return err
	}

	// This instance's configuration, without the recovery settings.
	if _, err := d.writeConfig(d.cluster(password), req.FlavorRAMMB); err != nil {
		return err
	}
	if err := hba.restore(hbaPath); err != nil {
		return err
	}
	for _, dir := range []string{walDir, sockDir} {
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	return d.saveRestoreState(restoreState{State: "done", Point: last})
}

// waitRecovered waits until the server has finished recovery and
// promoted, and returns a connection to it. A server that exits meanwhile
// (recovery failed) ends the wait at once.
func waitRecovered(ctx context.Context, c *pgctl.Cluster) (*pgx.Conn, error) {
	for {
		if !c.Running() {
			return nil, errors.New("the server stopped during recovery")
		}
		conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
		if err == nil {
			var inRecovery bool
			err = conn.QueryRow(ctx, "SELECT pg_is_in_recovery()").Scan(&inRecovery)
			if err == nil && !inRecovery {
				return conn, nil
			}
			conn.Close(context.WithoutCancel(ctx))
		}
		// Refused while recovering (57P03), or still in recovery.
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("wait for the end of recovery: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// finishRecovery checks that recovery reached the end of the chain, gives
// os_admin its new password and undoes a read-only setting the source's
// volume limit made.
func finishRecovery(ctx context.Context, conn *pgx.Conn, password string, last protocol.BackupPoint) error {
	if last.EndLSN != "" {
		want, err := parseLSN(last.EndLSN)
		if err != nil {
			return fmt.Errorf("the chain's end point: %w", err)
		}
		var replayed string
		if err := conn.QueryRow(ctx, "SELECT coalesce(pg_last_wal_replay_lsn()::text, '0/0')").Scan(&replayed); err != nil {
			return fmt.Errorf("read the end of recovery: %w", err)
		}
		got, err := parseLSN(replayed)
		if err != nil {
			return err
		}
		if got < want {
			return fmt.Errorf("recovery ended at %s, before the end of the backup chain at %s: WAL is missing", replayed, last.EndLSN)
		}
	}
	if err := quietSession(ctx, conn); err != nil {
		return err
	}
	var super bool
	if err := conn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = $1", AdminUser).Scan(&super); err != nil || !super {
		return fmt.Errorf("the backup has no superuser %s (%v): not a backup of a Coffer instance", AdminUser, err)
	}
	for _, sql := range []string{"SET default_transaction_read_only = off", "ALTER SYSTEM RESET default_transaction_read_only"} {
		if _, err := conn.Exec(ctx, sql); err != nil {
			return fmt.Errorf("%s: %w", sql, err)
		}
	}
	if err := setRole(ctx, conn, "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)", protocol.User{Name: AdminUser, Password: password}); err != nil {
		return fmt.Errorf("set %s's password: %w", AdminUser, err)
	}
	return nil
}

// serverOwner is the OS user the server runs as, as pgctl picks it:
// RunAsUser, else postgres when we are root, else ourselves.
func (d *Driver) serverOwner() (fileOwner, error) {
	name := d.cfg.RunAsUser
	if name == "" {
		if os.Geteuid() != 0 {
			return fileOwner{uid: uint32(os.Getuid()), gid: uint32(os.Getgid())}, nil
		}
		name = "postgres"
	}
	u, err := user.Lookup(name)
	if err != nil {
		return fileOwner{}, fmt.Errorf("look up the server's user %s: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return fileOwner{}, fmt.Errorf("user %s: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return fileOwner{}, fmt.Errorf("user %s: gid %q: %w", name, u.Gid, err)
	}
	return fileOwner{uid: uint32(uid), gid: uint32(gid)}, nil
}

// extractBase unpacks a full backup (pg_basebackup's tar) into dir, owned
// by the server's user. Only directories and regular files within dir:
// tablespace links (pg_basebackup cannot write those to one tar anyway)
// and anything else are refused.
func extractBase(r io.Reader, dir string, owner fileOwner) error {
	tr := tar.NewReader(r)
	label := false
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return fmt.Errorf("read the full backup: %w", err)
		}
		name := path.Clean(h.Name)
		if !filepath.IsLocal(name) {
			return fmt.Errorf("the full backup holds %q, outside the data directory", h.Name)
		}
		target := filepath.Join(dir, filepath.FromSlash(name))
		switch h.Typeflag {
		case tar.TypeDir:
			if err := mkdirOwned(target, owner); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := mkdirOwned(filepath.Dir(target), owner); err != nil {
				return err
			}
			if err := writeOwned(target, tr, fs.FileMode(h.Mode).Perm()&0o770, owner); err != nil {
				return fmt.Errorf("restore %s: %w", name, err)
			}
			label = label || name == "backup_label"
		default:
			return fmt.Errorf("the full backup holds %q of type %q, which a restore does not support", h.Name, h.Typeflag)
		}
	}
	if !label {
		return errors.New("the full backup has no backup_label: not a pg_basebackup stream")
	}
	if _, err := os.Stat(filepath.Join(dir, "PG_VERSION")); err != nil {
		return fmt.Errorf("the full backup has no PG_VERSION: %w", err)
	}
	return nil
}

// verifyBase checks the unpacked full backup against its backup_manifest
// (pg_verifybackup): every file there with its size and CRC-32C, none
// missing or extra, and the WAL the backup needs present and parseable.
// A backup that PostgreSQL compressed has none (BackupPoint.NoManifest,
// backup_zstd.go) and is not looked at here: the stream's checksums and
// authentication, then recovery reaching the backup's end, vouch for it.
func verifyBase(ctx context.Context, pgdata string, owner fileOwner) error {
	bin, err := pgctl.FindBinDir()
	if err != nil {
		return err
	}
	cmd := serverCommand(ctx, owner, filepath.Join(bin, "pg_verifybackup"), "--quiet", "--exit-on-error", pgdata)
	var out tailBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("the full backup does not match its manifest: %w: %s", err, out.String())
	}
	return nil
}

// extractWAL unpacks an incremental backup's WAL files into dir.
func extractWAL(r io.Reader, dir string, owner fileOwner) error {
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read the incremental backup: %w", err)
		}
		if h.Typeflag != tar.TypeReg || (!walSegmentName.MatchString(h.Name) && !walHistoryName.MatchString(h.Name)) {
			return fmt.Errorf("the incremental backup holds %q, not a WAL file", h.Name)
		}
		if err := writeOwned(filepath.Join(dir, h.Name), tr, 0o600, owner); err != nil {
			return fmt.Errorf("restore WAL file %s: %w", h.Name, err)
		}
	}
}

// mkdirOwned creates dir (and missing parents) mode 0700 for owner.
func mkdirOwned(dir string, owner fileOwner) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := mkdirOwned(filepath.Dir(dir), owner); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return owner.chown(dir)
}

// copyBufs holds the buffers writeOwned copies through: 1 MiB writes
// instead of io.Copy's 32 KiB take a restore far fewer system calls.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// writeOwned writes r to path (replacing it) with mode perm for owner.
func writeOwned(path string, r io.Reader, perm fs.FileMode, owner fileOwner) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	buf := copyBufs.Get().(*[]byte)
	// Hide f's ReadFrom and r's WriteTo: both would copy through 32 KiB
	// (one write system call each) instead of buf.
	_, err = io.CopyBuffer(struct{ io.Writer }{f}, struct{ io.Reader }{r}, *buf)
	copyBufs.Put(buf)
	if err == nil {
		err = f.Chmod(perm)
	}
	if err == nil && os.Geteuid() == 0 {
		err = f.Chown(int(owner.uid), int(owner.gid))
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// readTail returns the end (at most 4 KiB) of what was written to path
// after offset: the server's complaints about a failed recovery.
func readTail(path string, offset int64) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	size := fileSize(path)
	start := max(offset, size-4<<10)
	if start >= size {
		return ""
	}
	b := make([]byte, size-start)
	n, _ := f.ReadAt(b, start)
	return strings.TrimSpace(string(b[:n]))
}
