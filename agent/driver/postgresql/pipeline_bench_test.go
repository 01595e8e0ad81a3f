package postgresql

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/backupstream"
	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// BenchmarkBackupPipelines is issue 4's comparison, on one PostgreSQL
// dataset of ≥ 1 GB (pgbench, scale COFFER_BENCH_PG_SCALE, default 70) in
// one run, each variant to the same object store (the file store behind
// its signed-URL handler over HTTPS, as a guest reaches it):
//
//   - raw: pg_basebackup -Ft to a local directory, and tar -x of that file;
//   - trove: Trove's pipeline, pg_basebackup -Ft | gzip -6 | openssl enc
//     -aes-256-cbc -pbkdf2, uploaded to the store; restore the reverse;
//   - coffer: what the agent does: Driver.BackupZstd (PostgreSQL compresses
//     with zstd as it reads) → AES-256-GCM → 64 MiB segments uploaded 4 at
//     a time through grants; restore downloads, verifies every segment's
//     SHA-256, decrypts, decompresses, extracts.
//
// Rates are MB (10^6 bytes) of the plain tar stream per second of wall
// time; each variant runs COFFER_BENCH_ROUNDS times (default 3, in rotated
// order, a CHECKPOINT before each) and the median is reported. The restore
// rates compare the stream → files part that all three share; the full
// Driver.Restore (that plus pg_verifybackup and recovery) is reported too.
// Each line also gives the CPU time the variant used (see clock). Run with
// -v: otherwise the testing package cuts the log after ten lines, before
// the summary.
func BenchmarkBackupPipelines(b *testing.B) {
	scale := envInt("COFFER_BENCH_PG_SCALE", 70)
	rounds := envInt("COFFER_BENCH_ROUNDS", 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Minute)
	defer cancel()

	d := newDriver(b)
	if err := d.Prepare(ctx, protocol.PrepareRequest{Datastore: "postgresql", FlavorRAMMB: 2048, VolumeSizeGB: 20}); err != nil {
		b.Fatal(err)
	}
	st := mustState(b, d)
	c := d.cluster(st.SuperPassword)
	bin, err := pgctl.FindBinDir()
	if err != nil {
		b.Fatal(err)
	}
	owner, err := dirOwner(c.DataDir)
	if err != nil {
		b.Fatal(err)
	}
	// pgCmd runs one of PostgreSQL's client programs as the server's user
	// against this instance.
	pgCmd := func(prog string, args ...string) *exec.Cmd {
		cmd := exec.CommandContext(ctx, filepath.Join(bin, prog), append([]string{"--host=" + c.SocketDir, "--port=" + strconv.Itoa(c.Port), "--username=" + AdminUser}, args...)...)
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=/usr/bin:/bin", "HOME=/", "PGPASSWORD=" + st.SuperPassword}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: owner.uid, Gid: owner.gid}}
		cmd.Stderr = os.Stderr
		return cmd
	}
	start := time.Now()
	load := pgCmd("pgbench", "--initialize", "--quiet", "--scale="+strconv.Itoa(scale), "postgres")
	var loadErr bytes.Buffer
	load.Stderr = &loadErr
	if err := load.Run(); err != nil {
		b.Fatalf("pgbench: %v: %s", err, loadErr.Bytes())
	}
	size, err := d.BackupSize(ctx)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("dataset: pgbench scale %d, %.0f MB, loaded in %s", scale, float64(size)/1e6, time.Since(start).Round(time.Second))
	admin := adminTCP(b, ctx, d, "postgres")
	checkpoint := func() {
		if _, err := admin.Exec(ctx, "CHECKPOINT"); err != nil {
			b.Fatal(err)
		}
	}

	// The server's user writes pg_basebackup's directory in here.
	work, err := os.MkdirTemp("", "pipebench")
	if err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(work)
	if err := os.Chmod(work, 0o755); err != nil {
		b.Fatal(err)
	}
	store, err := objectstore.NewFile(filepath.Join(work, "store"), "")
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(objectstore.ObjectsPath, store.Handler())
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	if err := store.SetBaseURL(srv.URL); err != nil {
		b.Fatal(err)
	}
	const container = "bench"
	if err := store.EnsureContainer(ctx, container); err != nil {
		b.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	extractDir := func(name string) string {
		dir := filepath.Join(work, name)
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o700); err != nil {
			b.Fatal(err)
		}
		return dir
	}
	// untar extracts a tar stream into a fresh directory with GNU tar,
	// the same program for every variant.
	untar := func(r io.Reader, name string) int64 {
		cmd := exec.CommandContext(ctx, "tar", "-x", "-f", "-", "-C", extractDir(name))
		cr := &countReader{r: r}
		cmd.Stdin, cmd.Stderr = cr, os.Stderr
		if err := cmd.Run(); err != nil {
			b.Fatalf("tar -x %s: %v", name, err)
		}
		return cr.n
	}

	results := map[string][]float64{}
	record := func(name string, n int64, took lap) {
		mbs := float64(n) / 1e6 / took.wall.Seconds()
		results[name] = append(results[name], mbs)
		b.Logf("%-16s %7.0f MB in %6.2fs = %7.1f MB/s (cpu %5.2fs = %6.1f MB/cpu-s)", name, float64(n)/1e6, took.wall.Seconds(), mbs,
			took.cpu.Seconds(), float64(n)/1e6/took.cpu.Seconds())
	}

	var cofferSegments []protocol.SegmentInfo
	var cofferPoint protocol.BackupPoint
	raw := func() {
		dir := extractDir("raw-backup")
		os.Chown(dir, int(owner.uid), int(owner.gid))
		start := startClock()
		if err := pgCmd("pg_basebackup", "--pgdata="+dir, "--format=tar", "--wal-method=fetch", "--checkpoint=fast").Run(); err != nil {
			b.Fatalf("pg_basebackup: %v", err)
		}
		took := start.stop()
		fi, err := os.Stat(filepath.Join(dir, "base.tar"))
		if err != nil {
			b.Fatal(err)
		}
		record("raw backup", fi.Size(), took)
		f, err := os.Open(filepath.Join(dir, "base.tar"))
		if err != nil {
			b.Fatal(err)
		}
		defer f.Close()
		start = startClock()
		n := untar(f, "raw-restore")
		record("raw restore", n, start.stop())
	}
	trove := func() {
		const object = "trove/base.tar.gz.enc"
		// pg_basebackup | gzip -6 | openssl enc -aes-256-cbc -pbkdf2 | upload
		basebackup := pgCmd("pg_basebackup", "--pgdata=-", "--format=tar", "--wal-method=fetch", "--checkpoint=fast")
		gzip := exec.CommandContext(ctx, "gzip", "-6")
		enc := exec.CommandContext(ctx, "openssl", "enc", "-aes-256-cbc", "-pbkdf2", "-salt", "-pass", "env:TROVE_KEY")
		enc.Env = []string{"TROVE_KEY=" + fmt.Sprintf("%x", key)}
		bbOut, _ := basebackup.StdoutPipe()
		counted := &countReader{r: bbOut}
		gzip.Stdin = counted
		gzOut, _ := gzip.StdoutPipe()
		enc.Stdin = gzOut
		encOut, _ := enc.StdoutPipe()
		gzip.Stderr, enc.Stderr = os.Stderr, os.Stderr
		start := startClock()
		for _, cmd := range []*exec.Cmd{basebackup, gzip, enc} {
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
		}
		if err := store.Put(ctx, container, object, encOut, -1); err != nil {
			b.Fatalf("trove upload: %v", err)
		}
		for _, cmd := range []*exec.Cmd{basebackup, gzip, enc} {
			if err := cmd.Wait(); err != nil {
				b.Fatalf("trove pipeline %s: %v", cmd.Path, err)
			}
		}
		record("trove backup", counted.n, start.stop())

		// download | openssl enc -d | gunzip | tar -x
		start = startClock()
		obj, err := store.Get(ctx, container, object)
		if err != nil {
			b.Fatal(err)
		}
		defer obj.Close()
		dec := exec.CommandContext(ctx, "openssl", "enc", "-d", "-aes-256-cbc", "-pbkdf2", "-pass", "env:TROVE_KEY")
		dec.Env = enc.Env
		dec.Stdin, dec.Stderr = obj, os.Stderr
		gunzip := exec.CommandContext(ctx, "gunzip", "-c")
		gunzip.Stdin, _ = dec.StdoutPipe()
		gunzip.Stderr = os.Stderr
		plain, _ := gunzip.StdoutPipe()
		for _, cmd := range []*exec.Cmd{dec, gunzip} {
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
		}
		n := untar(plain, "trove-restore")
		for _, cmd := range []*exec.Cmd{dec, gunzip} {
			if err := cmd.Wait(); err != nil {
				b.Fatalf("trove restore %s: %v", cmd.Path, err)
			}
		}
		record("trove restore", n, start.stop())
	}
	coffer := func() {
		g := &storeGranter{store: store, container: container, prefix: "coffer", client: srv.Client()}
		pr, pw := io.Pipe()
		start := startClock()
		var point protocol.BackupPoint
		var backupErr error
		done := make(chan struct{})
		// As the agent takes it: compressed by PostgreSQL (BackupZstd),
		// encrypted and cut by the pipeline.
		var plain atomic.Int64
		go func() {
			defer close(done)
			point, backupErr = d.BackupZstd(ctx, protocol.BackupFull, nil, pw, &plain)
			pw.CloseWithError(backupErr)
		}()
		sum, err := backupstream.Upload(ctx, pr, backupstream.UploadOptions{Key: key, Compressed: true, PlainBytes: &plain}, g)
		<-done
		if backupErr != nil || err != nil {
			b.Fatalf("coffer backup: %v / %v", backupErr, err)
		}
		record("coffer backup", sum.RawBytes, start.stop())
		b.Logf("  coffer: %d segments, %.0f MB stored (%.1fx smaller)", sum.Segments, float64(sum.StoredBytes)/1e6, float64(sum.RawBytes)/float64(sum.StoredBytes))
		cofferSegments, cofferPoint = g.segments(), point

		start = startClock()
		r := backupstream.Open(ctx, key, cofferSegments, g)
		defer r.Close()
		n := untar(r, "coffer-restore")
		record("coffer restore", n, start.stop())
	}

	b.ResetTimer()
	variants := []func(){raw, trove, coffer}
	for i := range rounds {
		for j := range variants {
			checkpoint()
			variants[(i+j)%len(variants)]()
		}
	}
	b.StopTimer()

	// The whole restore of the last Coffer backup onto a new volume:
	// download, verify, decrypt, decompress, extract, pg_verifybackup,
	// recovery — what an instance created from the backup goes through.
	g := &storeGranter{store: store, container: container, prefix: "coffer", client: srv.Client()}
	r := newDriver(b)
	start = time.Now()
	layer := driver.RestoreLayer{Kind: protocol.BackupFull, Point: cofferPoint, Open: func(ctx context.Context) (io.ReadCloser, error) {
		return backupstream.Open(ctx, key, cofferSegments, g), nil
	}}
	if err := r.Restore(ctx, protocol.PrepareRequest{FlavorRAMMB: 2048, VolumeSizeGB: 20}, []driver.RestoreLayer{layer}); err != nil {
		b.Fatal(err)
	}
	b.Logf("coffer Driver.Restore (full, incl. pg_verifybackup when the backup has a manifest, and recovery): %.0f MB in %.2fs = %.1f MB/s",
		float64(size)/1e6, time.Since(start).Seconds(), float64(size)/1e6/time.Since(start).Seconds())

	med := map[string]float64{}
	for name, v := range results {
		slices.Sort(v)
		med[name] = v[len(v)/2]
	}
	for _, name := range []string{"raw backup", "trove backup", "coffer backup", "raw restore", "trove restore", "coffer restore"} {
		b.ReportMetric(med[name], strings.ReplaceAll(name, " ", "_")+"_MB/s")
	}
	b.Logf("median of %d: backup coffer %.0f MB/s = %.1fx trove (%.0f), %.0f%% of raw (%.0f); restore coffer %.0f MB/s = %.1fx trove (%.0f), %.0f%% of raw (%.0f)",
		rounds,
		med["coffer backup"], med["coffer backup"]/med["trove backup"], med["trove backup"], 100*med["coffer backup"]/med["raw backup"], med["raw backup"],
		med["coffer restore"], med["coffer restore"]/med["trove restore"], med["trove restore"], 100*med["coffer restore"]/med["raw restore"], med["raw restore"])
}

// storeGranter hands out grants of an object store directly, as the
// control plane's agent API does, and remembers the reported segments.
type storeGranter struct {
	store     objectstore.Store
	container string
	prefix    string
	client    *http.Client

	mu   sync.Mutex
	segs map[int]protocol.SegmentInfo
}

func (g *storeGranter) key(n int) string { return fmt.Sprintf("%s/segment-%06d", g.prefix, n) }

func (g *storeGranter) Grant(ctx context.Context, n int, method string, size int64, sha string) (protocol.Grant, error) {
	var gr objectstore.Grant
	var err error
	if method == http.MethodPut {
		gr, err = g.store.GrantPut(ctx, g.container, g.key(n), size, 15*time.Minute)
	} else {
		gr, err = g.store.GrantGet(ctx, g.container, g.key(n), 15*time.Minute)
	}
	return protocol.Grant{Method: gr.Method, URL: gr.URL, Header: gr.Header, Expires: gr.Expires}, err
}

func (g *storeGranter) SegmentDone(_ context.Context, n int, r protocol.SegmentReport) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.segs == nil {
		g.segs = map[int]protocol.SegmentInfo{}
	}
	g.segs[n] = protocol.SegmentInfo{Size: r.Size, SHA256: r.SHA256}
	return nil
}

func (g *storeGranter) Client() *http.Client { return g.client }

func (g *storeGranter) segments() []protocol.SegmentInfo {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]protocol.SegmentInfo, len(g.segs))
	for n, s := range g.segs {
		out[n] = s
	}
	return out
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// clock measures a variant's wall time and the CPU time of this process
// and of the children it waited for (pg_basebackup, gzip, openssl, tar;
// not the walsender, which serves every variant alike). On a shared
// machine the wall time depends on the neighbours; the CPU time much less.
type clock struct {
	wall time.Time
	cpu  time.Duration
}

type lap struct{ wall, cpu time.Duration }

func startClock() clock { return clock{wall: time.Now(), cpu: cpuTime()} }

func (c clock) stop() lap { return lap{wall: time.Since(c.wall), cpu: cpuTime() - c.cpu} }

func cpuTime() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil && n > 0 {
		return n
	}
	return def
}
