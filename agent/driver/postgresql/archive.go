package postgresql

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// WAL archiving, the ground backups stand on. Every prepared server runs
// with wal_level = replica, archive_mode = on and an archive_command that
// copies each completed WAL segment (and timeline history file) into
// <volume>/wal_archive. A full backup is pg_basebackup's copy of PGDATA
// (backup.go); an incremental one is the archived WAL written since its
// parent; a restore replays the WAL of a chain onto its full backup
// (restore.go).
//
// The archive grows with every segment the server completes. The driver
// removes nothing on its own: only the control plane knows which backups
// are still kept and which may still become the parent of an incremental,
// so it calls PruneWAL (protocol.CommandPruneWAL, periodically) with the
// oldest point it may still use, or with none when there is no backup.

// archiveDir is the WAL archive's directory within the volume.
const archiveDir = "wal_archive"

// archiveWaitTimeout bounds waiting for a switched-out segment to be
// archived when the context has no deadline of its own.
const archiveWaitTimeout = 10 * time.Minute

// backupLocks serialises backups and pruning per volume: an incremental
// reads the archive segment by segment, and two incrementals at once
// would each switch segments under the other.
var backupLocks sync.Map // data directory → *sync.Mutex

func (d *Driver) lockBackups() func() {
	mu, _ := backupLocks.LoadOrStore(d.dataDir, new(sync.Mutex))
	mu.(*sync.Mutex).Lock()
	return mu.(*sync.Mutex).Unlock
}

func (d *Driver) archivePath() string { return filepath.Join(d.dataDir, archiveDir) }

// archiveSettings are the settings that turn archiving on, part of the
// configuration the driver writes (coffer.conf).
//
// The archive_command is atomic and idempotent: the segment is copied to a
// hidden temporary name, synced, renamed into place and the directory
// synced, so the archive never holds half a segment, and PostgreSQL
// removes its own copy only once ours is durable. A file already archived
// (the archiver may repeat a segment whose success it did not record
// before a crash) succeeds if identical and fails otherwise, so a
// different history never overwrites an archived one.
func (d *Driver) archiveSettings() map[string]string {
	dir := confPercent(shellQuote(d.archivePath()))
	return map[string]string{
		"wal_level":    "replica",
		"archive_mode": "on",
		"archive_command": "f=" + dir + "/%f; t=" + dir + "/.%f.tmp; " +
			`if test -f "$f"; then cmp -s "%p" "$f"; ` +
			`else cp "%p" "$t" && sync "$t" && mv "$t" "$f" && sync ` + dir + "; fi",
	}
}

// shellQuote quotes s for /bin/sh: in single quotes, each quote within
// closing them, escaped, and opening them again.
func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// confPercent escapes % for archive_command and restore_command, where
// PostgreSQL substitutes %p, %f and %%.
func confPercent(s string) string { return strings.ReplaceAll(s, "%", "%%") }

// makeArchiveDir creates the archive directory, mode 0700, for the
// server's user (the owner of PGDATA), which writes into it.
func (d *Driver) makeArchiveDir(owner fileOwner) error {
	dir := d.archivePath()
	if err := os.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("create WAL archive %s: %w", dir, err)
	}
	if err := owner.chown(dir); err != nil {
		return fmt.Errorf("create WAL archive %s: %w", dir, err)
	}
	return nil
}

// ensureArchiving makes a prepared server archive its WAL: an instance
// prepared before the driver archived has neither the settings nor the
// directory. The settings are added to coffer.conf (its other settings are
// kept: they were derived from the flavor, which the driver does not
// remember). A stopped server picks them up when it starts; a running one
// without them is reloaded, and restarted when archive_mode or wal_level
// is what differs, since those take effect only at server start.
func (d *Driver) ensureArchiving(ctx context.Context, c *pgctl.Cluster) error {
	owner, err := dirOwner(c.DataDir)
	if err != nil {
		return fmt.Errorf("enable WAL archiving: %w", err)
	}
	if err := d.makeArchiveDir(owner); err != nil {
		return fmt.Errorf("enable WAL archiving: %w", err)
	}
	path := filepath.Join(c.DataDir, "coffer.conf")
	current, err := readConf(path)
	if err != nil {
		return fmt.Errorf("enable WAL archiving: %w", err)
	}
	want := d.archiveSettings()
	if !containsSettings(current, want) {
		settings := map[string]string{}
		for k, v := range current {
			switch k {
			case "listen_addresses", "port", "unix_socket_directories":
				// pgctl writes these from the Cluster's fields.
			default:
				settings[k] = v
			}
		}
		maps.Copy(settings, want)
		if err := c.WriteConfig(settings); err != nil {
			return fmt.Errorf("enable WAL archiving: %w", err)
		}
	}
	if !c.Running() {
		return nil
	}

	active, err := archiveState(ctx, c)
	if err != nil {
		return fmt.Errorf("enable WAL archiving: %w", err)
	}
	if active.ok(want) {
		return nil
	}
	if err := reloadAndWait(ctx, c); err != nil {
		return fmt.Errorf("enable WAL archiving: %w", err)
	}
	if active, err = archiveState(ctx, c); err != nil {
		return fmt.Errorf("enable WAL archiving: %w", err)
	}
	if !active.ok(want) && active.pendingRestart {
		if err := c.Restart(ctx); err != nil {
			return fmt.Errorf("enable WAL archiving: %w", err)
		}
		if err := waitHealthy(ctx, c); err != nil {
			return fmt.Errorf("enable WAL archiving: %w", err)
		}
		if active, err = archiveState(ctx, c); err != nil {
			return fmt.Errorf("enable WAL archiving: %w", err)
		}
	}
	if !active.ok(want) {
		// The files say otherwise: a configuration group's value wins over
		// coffer.conf (only archive_command is protected from overrides).
		return fmt.Errorf("enable WAL archiving: the server runs with wal_level = %s and archive_mode = %s; "+
			"backups need wal_level replica or logical and archive_mode on (does a configuration group turn them off?)",
			active.walLevel, active.archiveMode)
	}
	return nil
}

func containsSettings(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

// archiving is what the running server uses.
type archiving struct {
	walLevel, archiveMode, archiveCommand string
	// pendingRestart: archive_mode or wal_level differ in the files.
	pendingRestart bool
}

func (a archiving) ok(want map[string]string) bool {
	return (a.walLevel == "replica" || a.walLevel == "logical") &&
		(a.archiveMode == "on" || a.archiveMode == "always") &&
		a.archiveCommand == want["archive_command"]
}

func archiveState(ctx context.Context, c *pgctl.Cluster) (archiving, error) {
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return archiving{}, fmt.Errorf("connect as %s: %w", AdminUser, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	rows, err := conn.Query(ctx, "SELECT name, setting, pending_restart FROM pg_settings WHERE name IN ('wal_level', 'archive_mode', 'archive_command')")
	if err != nil {
		return archiving{}, fmt.Errorf("read archive settings: %w", err)
	}
	var a archiving
	for rows.Next() {
		var name, setting string
		var pending bool
		if err := rows.Scan(&name, &setting, &pending); err != nil {
			return archiving{}, fmt.Errorf("read archive settings: %w", err)
		}
		switch name {
		case "wal_level":
			a.walLevel = setting
		case "archive_mode":
			a.archiveMode = setting
		case "archive_command":
			a.archiveCommand = setting
		}
		if name != "archive_command" && pending {
			a.pendingRestart = true
		}
	}
	if err := rows.Err(); err != nil {
		return archiving{}, fmt.Errorf("read archive settings: %w", err)
	}
	return a, nil
}

// readConf reads a file in pgctl's coffer.conf format (key = 'value', one
// per line, quotes doubled and backslashes escaped inside the quotes). A
// missing file is empty.
func readConf(path string) (map[string]string, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return map[string]string{}, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	settings := map[string]string{}
	for line := range strings.Lines(string(b)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("read %s: unexpected line %q", path, line)
		}
		v, ok := unquoteConf(strings.TrimSpace(val))
		if !ok {
			return nil, fmt.Errorf("read %s: unexpected value for %s", path, strings.TrimSpace(key))
		}
		settings[strings.ToLower(strings.TrimSpace(key))] = v
	}
	return settings, nil
}

// unquoteConf undoes pgctl's quoteConf.
func unquoteConf(s string) (string, bool) {
	if len(s) < 2 || s[0] != '\'' {
		return "", false
	}
	var b strings.Builder
	for i := 1; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '\\' && i+1 < len(s):
			i++
			b.WriteByte(s[i])
		case ch == '\'' && i+1 < len(s) && s[i+1] == '\'':
			i++
			b.WriteByte('\'')
		case ch == '\'':
			return b.String(), i == len(s)-1
		default:
			b.WriteByte(ch)
		}
	}
	return "", false
}

// PruneWAL removes archived WAL that no backup still needs: every segment
// (and backup history or .partial file) before keep.StartWAL, on keep's
// timeline or an earlier one. keep is the oldest point the control plane
// may still use, as a backup to restore or as the parent of a future
// incremental; a full backup carries the WAL it needs itself, an
// incremental child needs everything from its parent's EndWAL on, which is
// at or after the StartWAL of that parent. Timeline history files are
// kept: they are tiny, and recovery reads them to follow timelines. It
// returns how many files it removed.
//
// With keep nil (no backup exists) everything before the server's current
// segment goes: a later incremental needs a parent, which a full backup
// taken after this call will be.
//
// The driver never calls it itself: an archive pruned too eagerly would
// silently turn the next incremental into an error.
func (d *Driver) PruneWAL(ctx context.Context, keep *protocol.BackupPoint) (int, error) {
	defer d.lockBackups()()
	c, err := d.preparedCluster("prune WAL archive")
	if err != nil {
		return 0, err
	}
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return 0, fmt.Errorf("prune WAL archive: connect as %s: %w", AdminUser, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	segSize, err := querySegmentSize(ctx, conn)
	if err != nil {
		return 0, fmt.Errorf("prune WAL archive: %w", err)
	}
	keepWAL := ""
	if keep != nil {
		keepWAL = keep.StartWAL
	} else if err := conn.QueryRow(ctx, "SELECT pg_walfile_name(pg_current_wal_lsn())").Scan(&keepWAL); err != nil {
		return 0, fmt.Errorf("prune WAL archive: current WAL file: %w", err)
	}
	from, err := parseWALName(keepWAL, segSize)
	if err != nil {
		return 0, fmt.Errorf("prune WAL archive: keep point: %w", err)
	}
	entries, err := os.ReadDir(d.archivePath())
	if err != nil {
		return 0, fmt.Errorf("prune WAL archive: %w", err)
	}
	removed := 0
	for _, e := range entries {
		name := e.Name()
		if !walSegmentName.MatchString(name) && !walOtherName.MatchString(name) {
			continue
		}
		f, err := parseWALName(name[:24], segSize)
		if err != nil || f.tli > from.tli || f.segno >= from.segno {
			continue
		}
		if err := os.Remove(filepath.Join(d.archivePath(), name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return removed, fmt.Errorf("prune WAL archive: %w", err)
		}
		removed++
	}
	return removed, nil
}

func querySegmentSize(ctx context.Context, conn *pgx.Conn) (uint64, error) {
	var size int64
	if err := conn.QueryRow(ctx, "SELECT pg_size_bytes(current_setting('wal_segment_size'))").Scan(&size); err != nil {
		return 0, fmt.Errorf("read wal_segment_size: %w", err)
	}
	if size <= 0 || size&(size-1) != 0 {
		return 0, fmt.Errorf("unexpected wal_segment_size %d", size)
	}
	return uint64(size), nil
}
