package postgresql

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// Backups (driver.Backupper). The agent takes them compressed
// (backup_zstd.go: PostgreSQL compresses a full backup itself); what
// follows is the plain stream, which that path shares but for the
// compression and the manifest.
//
// A full backup is pg_basebackup's tar of PGDATA written to stdout, with
// the WAL from the backup's start to its end inside it (--wal-method
// fetch), so it restores on its own. Where it starts and ends is read from
// the stream itself as it passes: backup_label gives the start (LSN, WAL
// file, timeline), the backup_manifest that pg_basebackup appends to a tar
// on stdout gives the server's own record of the WAL range the backup
// needs (WAL-Ranges: timeline, start and end LSN). Both come from the
// server that took the backup; nothing is sampled before or after it, so
// nothing a concurrent writer does can shift them. The stream reaches w
// byte for byte as pg_basebackup wrote it.
//
// An incremental backup is a tar of archived WAL segments (archive.go):
// pg_switch_wal() completes the current segment, and once the archiver has
// copied it, every segment from the parent's EndWAL to that one goes into
// the tar, with the timeline history files. The parent's EndWAL is
// included although the parent holds a copy: a full backup's copy of its
// last segment was taken when the backup ended, the archived one is
// complete. The segment a switch completes ends with the switch, so
// replaying everything in a chain ends exactly at the last backup's
// EndLSN.

var _ driver.Backupper = (*Driver)(nil)

// backupLabel is the label pg_basebackup gives the server's backup.
const backupLabel = "coffer"

// maxManifest bounds the backup_manifest read from the stream: about 200
// bytes per file of the cluster.
const maxManifest = 1 << 30

// BackupSize estimates a full backup's stream: the files of PGDATA other
// than WAL and what pg_basebackup leaves out, plus a WAL segment.
func (d *Driver) BackupSize(ctx context.Context) (int64, error) {
	c, err := d.preparedCluster("backup size")
	if err != nil {
		return 0, err
	}
	var size int64 = 16 << 20
	skip := map[string]bool{"pg_wal": true, "pg_replslot": true, "pg_stat_tmp": true, "pg_dynshmem": true, "pg_notify": true, "pg_serial": true, "pg_snapshots": true, "pg_subtrans": true}
	err = filepath.WalkDir(c.DataDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // removed meanwhile (temp files)
			}
			return err
		}
		if e.IsDir() {
			if rel, _ := filepath.Rel(c.DataDir, path); skip[rel] {
				return filepath.SkipDir
			}
			return ctx.Err()
		}
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() {
			size += info.Size() + 512 // and its tar header
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("backup size: %w", err)
	}
	return size, nil
}

// Backup writes a full backup (parent nil) or the WAL since parent to w.
// It does not stop or slow the server beyond the I/O of reading it (and
// the fast checkpoint a full backup starts with); a failure, or ctx ending,
// stops pg_basebackup, and the server forgets the backup.
func (d *Driver) Backup(ctx context.Context, kind string, parent *protocol.BackupPoint, w io.Writer) (protocol.BackupPoint, error) {
	return d.backup(ctx, kind, parent, func(c *pgctl.Cluster) (protocol.BackupPoint, error) {
		if kind == protocol.BackupFull {
			return d.fullBackup(ctx, c, w, nil)
		}
		return d.incrementalBackup(ctx, c, *parent, w)
	})
}

// backup checks the request, makes sure the server runs and archives, and
// calls run with the cluster, one backup (or prune) at a time.
func (d *Driver) backup(ctx context.Context, kind string, parent *protocol.BackupPoint, run func(*pgctl.Cluster) (protocol.BackupPoint, error)) (protocol.BackupPoint, error) {
	switch {
	case kind == protocol.BackupFull && parent != nil:
		return protocol.BackupPoint{}, errors.New("full backup: a full backup has no parent")
	case kind == protocol.BackupIncremental && parent == nil:
		return protocol.BackupPoint{}, errors.New("incremental backup: the parent backup's point is required")
	case kind != protocol.BackupFull && kind != protocol.BackupIncremental:
		return protocol.BackupPoint{}, fmt.Errorf("backup: unknown kind %q", kind)
	}
	defer d.lockBackups()()
	c, err := d.preparedCluster(kind + " backup")
	if err != nil {
		return protocol.BackupPoint{}, err
	}
	if !c.Running() {
		return protocol.BackupPoint{}, fmt.Errorf("%s backup: the server is not running", kind)
	}
	// Normally a no-op; it restarts the server once for an instance whose
	// agent had no chance to (EnsureRunning).
	d.opMu.Lock()
	err = d.ensureArchiving(ctx, c)
	d.opMu.Unlock()
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("%s backup: %w", kind, err)
	}
	pt, err := run(c)
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("%s backup: %w", kind, err)
	}
	return pt, nil
}

// fullBackup runs pg_basebackup into w. With plain nil the stream is the
// plain tar, read as it passes (forwardBaseBackup); else PostgreSQL
// compresses it (backup_zstd.go) and *plain follows its uncompressed size.
func (d *Driver) fullBackup(ctx context.Context, c *pgctl.Cluster, w io.Writer, plain *atomic.Int64) (protocol.BackupPoint, error) {
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("connect as %s: %w", AdminUser, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	segSize, err := querySegmentSize(ctx, conn)
	if err != nil {
		return protocol.BackupPoint{}, err
	}
	// --wal-method fetch collects the WAL at the end of the backup; the
	// server may recycle a segment meanwhile once it is archived. A
	// temporary slot of this session holds WAL from before the backup's
	// start until the session ends, however the backup ends.
	slot := make([]byte, 8)
	rand.Read(slot)
	if _, err := conn.Exec(ctx, "SELECT pg_create_physical_replication_slot($1, true, true)", "coffer_backup_"+hex.EncodeToString(slot)); err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("reserve WAL for the backup: %w", err)
	}

	bin, err := pgctl.FindBinDir()
	if err != nil {
		return protocol.BackupPoint{}, err
	}
	owner, err := dirOwner(c.DataDir)
	if err != nil {
		return protocol.BackupPoint{}, err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	args := []string{"--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast",
		"--label=" + backupLabel, "--no-password",
		"--host=" + c.SocketDir, "--port=" + strconv.Itoa(c.Port), "--username=" + AdminUser}
	if plain != nil {
		args = append(args, serverCompressionArgs()...)
	}
	cmd := serverCommand(cctx, owner, filepath.Join(bin, "pg_basebackup"), args...)
	// The password in the environment, never on the command line; the
	// environment of a process is readable only by its user and root.
	cmd.Env = append(cmd.Env, "PGSSLMODE=disable", "PGAPPNAME=coffer_backup", "PGPASSWORD="+c.SuperPassword)
	var stderr tailBuffer
	cmd.Stderr = &stderr
	var log *basebackupLog
	if plain != nil {
		log = &basebackupLog{tail: &stderr, plain: plain}
		cmd.Stderr = log
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return protocol.BackupPoint{}, err
	}
	growPipe(stdout)
	if err := cmd.Start(); err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("start pg_basebackup: %w", err)
	}
	var label, manifest []byte
	var ferr error
	if plain != nil {
		if _, err := io.Copy(w, stdout); err != nil {
			ferr = fmt.Errorf("write backup stream: %w", err)
		}
	} else {
		label, manifest, ferr = forwardBaseBackup(stdout, w)
	}
	if ferr != nil {
		cancel() // a failed writer or a bad stream: stop pg_basebackup
	}
	werr := cmd.Wait()
	switch {
	case ctx.Err() != nil:
		return protocol.BackupPoint{}, fmt.Errorf("pg_basebackup: %w", ctx.Err())
	case ferr != nil && werr != nil && stderr.Len() > 0:
		return protocol.BackupPoint{}, fmt.Errorf("pg_basebackup: %w (%s)", ferr, stderr.String())
	case ferr != nil:
		return protocol.BackupPoint{}, ferr
	case werr != nil:
		return protocol.BackupPoint{}, fmt.Errorf("pg_basebackup: %w: %s", werr, stderr.String())
	}
	if plain != nil {
		return log.point(segSize)
	}
	return basePoint(label, manifest, segSize)
}

// backupPipeSize is the capacity asked for pg_basebackup's stdout pipe
// (Linux's default limit for an unprivileged process, fs.pipe-max-size).
const backupPipeSize = 1 << 20

// growPipe enlarges the pipe r reads from, so that pg_basebackup (and the
// walsender behind it) can run ahead of the compressor by more than the
// default 64 KiB instead of stopping and starting in lockstep with it. It is
// only an optimisation: a failure leaves the pipe as it was.
func growPipe(r io.Reader) {
	f, ok := r.(*os.File)
	if !ok {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_, _, _ = syscall.Syscall(syscall.SYS_FCNTL, fd, syscall.F_SETPIPE_SZ, backupPipeSize)
	})
}

// serverCommand runs a PostgreSQL program as the server's user (when we
// are root), with a minimal environment; ctx ending kills it.
func serverCommand(ctx context.Context, owner fileOwner, prog string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C", "HOME=/"}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: owner.uid, Gid: owner.gid}}
	}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// forwardBaseBackup copies pg_basebackup's tar from r to w unchanged and
// picks backup_label and backup_manifest out of it on the way.
func forwardBaseBackup(r io.Reader, w io.Writer) (label, manifest []byte, err error) {
	fr := &forwardReader{r: r, w: bufio.NewWriterSize(w, 1<<20)}
	tr := tar.NewReader(fr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read pg_basebackup's stream: %w", err)
		}
		switch h.Name {
		case "backup_label":
			label, err = io.ReadAll(io.LimitReader(tr, 1<<20))
		case "backup_manifest":
			manifest, err = io.ReadAll(io.LimitReader(tr, maxManifest))
		}
		if err != nil {
			return nil, nil, fmt.Errorf("read pg_basebackup's stream: %s: %w", h.Name, err)
		}
	}
	// What follows the tar's end marker (padding to a full record).
	if _, err := fr.w.ReadFrom(r); err != nil {
		return nil, nil, fmt.Errorf("read pg_basebackup's stream: %w", err)
	}
	if err := fr.w.Flush(); err != nil {
		return nil, nil, fmt.Errorf("write backup stream: %w", err)
	}
	return label, manifest, nil
}

// forwardReader reads r for the tar reader and writes everything read to
// w. The tar reader skips file contents by seeking forward (it uses Seek
// when its reader has it), which forwardReader does by copying straight
// from r to w in large pieces, instead of the tar reader's small reads.
type forwardReader struct {
	r   io.Reader
	w   *bufio.Writer
	pos int64
}

func (f *forwardReader) Read(p []byte) (int, error) {
	n, err := f.r.Read(p)
	if n > 0 {
		if _, werr := f.w.Write(p[:n]); werr != nil {
			return 0, fmt.Errorf("write backup stream: %w", werr)
		}
		f.pos += int64(n)
	}
	return n, err
}

func (f *forwardReader) Seek(offset int64, whence int) (int64, error) {
	if whence != io.SeekCurrent || offset < 0 {
		return f.pos, errors.New("forward reader: only forward seeks")
	}
	n, err := f.w.ReadFrom(io.LimitReader(f.r, offset))
	f.pos += n
	if err == nil && n < offset {
		err = io.ErrUnexpectedEOF
	}
	return f.pos, err
}

var (
	labelStart    = regexp.MustCompile(`(?m)^START WAL LOCATION: ([0-9A-F]+/[0-9A-F]+) \(file ([0-9A-F]{24})\)$`)
	labelTimeline = regexp.MustCompile(`(?m)^START TIMELINE: ([0-9]+)$`)
)

// basePoint reads a full backup's point from its backup_label and
// backup_manifest.
func basePoint(label, manifest []byte, segSize uint64) (protocol.BackupPoint, error) {
	if label == nil {
		return protocol.BackupPoint{}, errors.New("pg_basebackup's stream has no backup_label")
	}
	if manifest == nil {
		return protocol.BackupPoint{}, errors.New("pg_basebackup's stream has no backup_manifest")
	}
	m := labelStart.FindSubmatch(label)
	t := labelTimeline.FindSubmatch(label)
	if m == nil || t == nil {
		return protocol.BackupPoint{}, fmt.Errorf("unexpected backup_label: %q", label)
	}
	startLSN, err := parseLSN(string(m[1]))
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("backup_label: %w", err)
	}
	startWAL := string(m[2])
	tli, err := strconv.ParseUint(string(t[1]), 10, 32)
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("backup_label: timeline: %w", err)
	}

	var mf struct {
		WALRanges []struct {
			Timeline uint32 `json:"Timeline"`
			StartLSN string `json:"Start-LSN"`
			EndLSN   string `json:"End-LSN"`
		} `json:"WAL-Ranges"`
	}
	if err := json.Unmarshal(manifest, &mf); err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("backup_manifest: %w", err)
	}
	// Several ranges only for a backup of a standby whose timeline
	// changed during the backup; the driver backs up primaries.
	if len(mf.WALRanges) != 1 {
		return protocol.BackupPoint{}, fmt.Errorf("backup_manifest: %d WAL ranges, want 1", len(mf.WALRanges))
	}
	wr := mf.WALRanges[0]
	mStart, err := parseLSN(wr.StartLSN)
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("backup_manifest: %w", err)
	}
	endLSN, err := parseLSN(wr.EndLSN)
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("backup_manifest: %w", err)
	}
	if mStart != startLSN || uint64(wr.Timeline) != tli || endLSN < startLSN {
		return protocol.BackupPoint{}, fmt.Errorf("backup_label (start %s, timeline %d) and backup_manifest (%s–%s, timeline %d) disagree",
			formatLSN(startLSN), tli, wr.StartLSN, wr.EndLSN, wr.Timeline)
	}
	if f, err := parseWALName(startWAL, segSize); err != nil || f != (walFile{tli: uint32(tli), segno: startLSN / segSize}) {
		return protocol.BackupPoint{}, fmt.Errorf("backup_label: start WAL file %s does not hold %s on timeline %d", startWAL, formatLSN(startLSN), tli)
	}
	return protocol.BackupPoint{
		StartLSN: formatLSN(startLSN),
		EndLSN:   formatLSN(endLSN),
		Timeline: int(tli),
		StartWAL: startWAL,
		EndWAL:   endSegment(uint32(tli), endLSN, segSize).name(segSize),
	}, nil
}

func (d *Driver) incrementalBackup(ctx context.Context, c *pgctl.Cluster, parent protocol.BackupPoint, w io.Writer) (protocol.BackupPoint, error) {
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("connect as %s: %w", AdminUser, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	segSize, err := querySegmentSize(ctx, conn)
	if err != nil {
		return protocol.BackupPoint{}, err
	}
	from, err := parseWALName(parent.EndWAL, segSize)
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("parent point: %w", err)
	}
	parentEnd, err := parseLSN(parent.EndLSN)
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("parent point: %w", err)
	}

	// Complete the current segment; the position returned is where this
	// backup ends (without writes since the last switch, the start of the
	// current segment, and the segment before it is the last one).
	var lsnText, endName string
	if err := conn.QueryRow(ctx, "SELECT lsn::text, pg_walfile_name(lsn) FROM pg_switch_wal() AS lsn").Scan(&lsnText, &endName); err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("switch WAL segment: %w", err)
	}
	endLSN, err := parseLSN(lsnText)
	if err != nil {
		return protocol.BackupPoint{}, err
	}
	end, err := parseWALName(endName, segSize)
	if err != nil {
		return protocol.BackupPoint{}, err
	}
	if end.tli != from.tli {
		return protocol.BackupPoint{}, fmt.Errorf("the parent backup ends on timeline %d, the server is on timeline %d (restored since?): take a full backup", from.tli, end.tli)
	}
	if endLSN < parentEnd || end.segno < from.segno {
		return protocol.BackupPoint{}, fmt.Errorf("the parent backup ends at %s, after the server's current position %s: it is not a backup of this instance", parent.EndLSN, lsnText)
	}
	if err := d.waitArchived(ctx, conn, endName); err != nil {
		return protocol.BackupPoint{}, err
	}

	var names []string
	entries, err := os.ReadDir(d.archivePath())
	if err != nil {
		return protocol.BackupPoint{}, fmt.Errorf("read WAL archive: %w", err)
	}
	for _, e := range entries {
		if walHistoryName.MatchString(e.Name()) {
			if tli, _ := strconv.ParseUint(e.Name()[:8], 16, 32); uint32(tli) <= end.tli {
				names = append(names, e.Name())
			}
		}
	}
	slices.Sort(names)
	for seg := from.segno; seg <= end.segno; seg++ {
		name := walFile{tli: end.tli, segno: seg}.name(segSize)
		if _, err := os.Stat(filepath.Join(d.archivePath(), name)); err != nil {
			return protocol.BackupPoint{}, fmt.Errorf("WAL segment %s, needed after the parent backup, is not in the archive (pruned, or archived elsewhere): take a full backup: %w", name, err)
		}
		names = append(names, name)
	}
	if err := writeWALTar(ctx, w, d.archivePath(), names); err != nil {
		return protocol.BackupPoint{}, err
	}
	return protocol.BackupPoint{
		StartLSN: parent.EndLSN,
		EndLSN:   lsnText,
		Timeline: int(end.tli),
		StartWAL: parent.EndWAL,
		EndWAL:   endName,
	}, nil
}

// waitArchived waits until name is in the archive (archive_command renames
// a segment into place once it is durable).
func (d *Driver) waitArchived(ctx context.Context, conn *pgx.Conn, name string) error {
	ctx, cancel := context.WithTimeout(ctx, archiveWaitTimeout)
	defer cancel()
	path := filepath.Join(d.archivePath(), name)
	for {
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			var failed int64
			var lastFailed string
			_ = conn.QueryRow(context.WithoutCancel(ctx), "SELECT failed_count, coalesce(last_failed_wal, '') FROM pg_stat_archiver").Scan(&failed, &lastFailed)
			return fmt.Errorf("WAL segment %s was not archived: %w (archiver failures: %d, last failed: %q; see the server log)", name, ctx.Err(), failed, lastFailed)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// writeWALTar writes the named archive files to w as a tar.
func writeWALTar(ctx context.Context, w io.Writer, dir string, names []string) error {
	bw := bufio.NewWriterSize(w, 1<<20)
	tw := tar.NewWriter(bw)
	for _, name := range names {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := addFile(tw, filepath.Join(dir, name), name); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("write backup stream: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write backup stream: %w", err)
	}
	return nil
}

func addFile(tw *tar.Writer, path, name string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read WAL archive: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("read WAL archive: %w", err)
	}
	h := &tar.Header{Typeflag: tar.TypeReg, Name: name, Size: fi.Size(), Mode: 0o600, ModTime: fi.ModTime(), Format: tar.FormatPAX}
	if err := tw.WriteHeader(h); err != nil {
		return fmt.Errorf("write backup stream: %w", err)
	}
	// Archived files are never rewritten (archive_command refuses), so
	// the size read above is the size copied.
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("write backup stream: %s: %w", name, err)
	}
	return nil
}

// tailBuffer keeps the last 4 KiB written to it: a program's error output
// for an error message.
type tailBuffer struct{ b []byte }

func (t *tailBuffer) Write(p []byte) (int, error) {
	const keep = 4 << 10
	t.b = append(t.b, p...)
	if len(t.b) > keep {
		t.b = t.b[len(t.b)-keep:]
	}
	return len(p), nil
}

func (t *tailBuffer) Len() int { return len(t.b) }

func (t *tailBuffer) String() string {
	return strings.TrimSpace(string(bytes.ToValidUTF8(t.b, []byte("?"))))
}
