package postgresql

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// TestMeasureFullBackup measures a full backup of a pgbench database of
// scale COFFER_PG_BENCH_SCALE (e.g. 50, about 750 MB) through Backup to a
// discarding writer, against pg_basebackup writing the same tar itself. It
// only logs: run it by hand with COFFER_PG_BENCH_SCALE set.
func TestMeasureFullBackup(t *testing.T) {
	scale := os.Getenv("COFFER_PG_BENCH_SCALE")
	if scale == "" {
		t.Skip("set COFFER_PG_BENCH_SCALE (e.g. 50) to measure full backups")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	d := newDriver(t)
	if err := d.Prepare(ctx, protocol.PrepareRequest{Datastore: "postgresql", FlavorRAMMB: 2048, VolumeSizeGB: 10}); err != nil {
		t.Fatal(err)
	}
	st := mustState(t, d)
	c := d.cluster(st.SuperPassword)
	bin, err := pgctl.FindBinDir()
	if err != nil {
		t.Fatal(err)
	}
	owner, err := dirOwner(c.DataDir)
	if err != nil {
		t.Fatal(err)
	}
	run := func(stdout io.Writer, prog string, args ...string) time.Duration {
		t.Helper()
		cmd := exec.CommandContext(ctx, filepath.Join(bin, prog), append([]string{"--host=" + c.SocketDir, "--port=" + strconv.Itoa(c.Port), "--username=" + AdminUser}, args...)...)
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "PGPASSWORD=" + st.SuperPassword}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: owner.uid, Gid: owner.gid}}
		cmd.Stdout, cmd.Stderr = stdout, os.Stderr
		start := time.Now()
		if err := cmd.Run(); err != nil {
			t.Fatalf("%s: %v", prog, err)
		}
		return time.Since(start)
	}
	t.Logf("pgbench -i -s %s: %s", scale, run(io.Discard, "pgbench", "--initialize", "--quiet", "--scale="+scale, "postgres"))
	size, err := d.BackupSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("BackupSize estimate: %.0f MB", float64(size)/1e6)

	rate := func(what string, n int64, took time.Duration) {
		t.Logf("%-60s %7.0f MB in %6.2fs = %6.1f MB/s", what, float64(n)/1e6, took.Seconds(), float64(n)/1e6/took.Seconds())
	}
	admin := adminTCP(t, ctx, d, "postgres")
	checkpoint := func() {
		t.Helper()
		// Each run then measures the copy, not pgbench's dirty pages.
		if _, err := admin.Exec(ctx, "CHECKPOINT"); err != nil {
			t.Fatal(err)
		}
	}
	rounds := 5
	if n, err := strconv.Atoi(os.Getenv("COFFER_PG_BENCH_ROUNDS")); err == nil {
		rounds = n
	}
	ours := func() {
		var cw countWriter
		cpu := selfCPU()
		start := time.Now()
		if _, err := d.Backup(ctx, protocol.BackupFull, nil, &cw); err != nil {
			t.Fatal(err)
		}
		rate("Backup (full) to io.Discard", cw.n, time.Since(start))
		t.Logf("  agent-side CPU (Go, excl. pg_basebackup): %.2fs", (selfCPU() - cpu).Seconds())
	}
	rawStdout := func() {
		var raw countWriter
		took := run(&raw, "pg_basebackup", "--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast")
		rate("pg_basebackup -D - -Ft -X fetch > discard", raw.n, took)
	}
	rawDir := func() {
		dir := filepath.Join(d.dataDir, "raw")
		os.RemoveAll(dir)
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(dir, int(owner.uid), int(owner.gid)); err != nil {
			t.Fatal(err)
		}
		took := run(io.Discard, "pg_basebackup", "--pgdata="+dir, "--format=tar", "--wal-method=fetch", "--checkpoint=fast")
		fi, err := os.Stat(filepath.Join(dir, "base.tar"))
		if err != nil {
			t.Fatal(err)
		}
		rate("pg_basebackup -Ft -D <dir> -X fetch (incl. its fsync)", fi.Size(), took)
		os.RemoveAll(dir)
	}
	runs := []func(){ours, rawStdout, rawDir}
	for i := range rounds {
		// Each round in another order: no variant always goes first.
		for j := range runs {
			checkpoint()
			runs[(i+j)%len(runs)]()
		}
	}

	// Restore: a full backup from a file onto a new volume, then Prepare.
	f, err := os.CreateTemp(d.dataDir, "full-*.tar")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pt, err := d.Backup(ctx, protocol.BackupFull, nil, f)
	if err != nil {
		t.Fatal(err)
	}
	fi, _ := f.Stat()
	r := newDriver(t)
	start := time.Now()
	layer := driver.RestoreLayer{Kind: protocol.BackupFull, Point: pt, Open: func(context.Context) (io.ReadCloser, error) {
		return os.Open(f.Name())
	}}
	if err := r.Restore(ctx, protocol.PrepareRequest{FlavorRAMMB: 2048}, []driver.RestoreLayer{layer}); err != nil {
		t.Fatal(err)
	}
	rate("Restore (full, incl. pg_verifybackup and recovery)", fi.Size(), time.Since(start))
	start = time.Now()
	if err := r.Prepare(ctx, protocol.PrepareRequest{FlavorRAMMB: 2048, VolumeSizeGB: 10}); err != nil {
		t.Fatal(err)
	}
	t.Logf("Prepare after the restore: %.2fs", time.Since(start).Seconds())
}

// selfCPU is this process's user+system CPU time so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

type countWriter struct{ n int64 }

func (w *countWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }
