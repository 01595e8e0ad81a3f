package backupstream

import (
	"bytes"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

// The benchmarks run 256 MiB of PostgreSQL data through the pipeline and,
// for comparison, through Trove's (gzip -6 | openssl enc -aes-256-cbc). The
// data is the file named by COFFER_BENCH_DATA (e.g. base.tar from
// pg_basebackup -Ft of a pgbench -i -s 20 database), else a synthetic
// stand-in: pgbench-like rows mixed with incompressible blocks.
//
//	go test -run '^$' -bench . -benchtime 3x ./agent/backupstream/
//
// On a shared machine wall-clock MB/s depends on the neighbours, so each
// benchmark also reports cpu-MB/s: bytes per CPU second used by this
// process and its children (the in-process HTTPS object server included).

const benchSize = 256 << 20

var benchData = sync.OnceValues(func() ([]byte, string) {
	if path := os.Getenv("COFFER_BENCH_DATA"); path != "" {
		f, err := os.Open(path)
		if err == nil {
			defer f.Close()
			b := make([]byte, benchSize)
			n, err := io.ReadFull(f, b)
			if err == nil || err == io.ErrUnexpectedEOF {
				for n < benchSize { // repeat a smaller file
					n += copy(b[n:], b[:n])
				}
				return b, path
			}
		}
	}
	var buf bytes.Buffer
	buf.Grow(benchSize)
	for i := uint64(0); buf.Len() < benchSize; i++ {
		buf.Write(textData(3<<20, i))
		buf.Write(randomData(1<<20, i))
	}
	return buf.Bytes()[:benchSize], "synthetic"
})

func loadBenchData(b *testing.B) []byte {
	b.Helper()
	data, src := benchData()
	b.Logf("data: %s", src)
	return data
}

func BenchmarkUpload(b *testing.B) {
	data := loadBenchData(b)
	key := newKey(b)
	for _, bc := range []struct {
		name  string
		level zstd.EncoderLevel
		jobs  bool
		http  bool
	}{
		{"fastest/stream", zstd.SpeedFastest, false, true},
		{"fastest/concurrent-blocks", zstd.SpeedFastest, true, true},
		{"default/stream", zstd.SpeedDefault, false, true},
		{"default/concurrent-blocks", zstd.SpeedDefault, true, true},
		// Compression and encryption only, no segments or HTTPS.
		{"fastest/stream/no-upload", zstd.SpeedFastest, false, false},
		{"fastest/concurrent-blocks/no-upload", zstd.SpeedFastest, true, false},
		{"default/stream/no-upload", zstd.SpeedDefault, false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			opts := UploadOptions{Key: key, Level: bc.level, concurrentBlocks: bc.jobs, Parallel: 4}
			b.SetBytes(benchSize)
			var stored int64
			cpu := cpuTime()
			if !bc.http {
				opts, _ = opts.withDefaults()
				for b.Loop() {
					cw := &countingWriter{}
					if err := compressEncrypt(cw, bytes.NewReader(data), opts, func(error) {}); err != nil {
						b.Fatal(err)
					}
					stored = cw.n
				}
			} else {
				s := newObjectServer(b)
				g := newGranter(s)
				for b.Loop() {
					clear(g.reports)
					sum, err := Upload(context.Background(), bytes.NewReader(data), opts, g)
					if err != nil {
						b.Fatal(err)
					}
					stored = sum.StoredBytes
				}
			}
			reportCPU(b, cpu)
			b.ReportMetric(float64(benchSize)/float64(stored), "ratio")
		})
	}
}

// cpuTime is the CPU time used so far by this process and by its
// children that have been waited for.
func cpuTime() time.Duration {
	var self, children syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &self)
	_ = syscall.Getrusage(syscall.RUSAGE_CHILDREN, &children)
	tv := func(t syscall.Timeval) time.Duration { return time.Duration(t.Nano()) }
	return tv(self.Utime) + tv(self.Stime) + tv(children.Utime) + tv(children.Stime)
}

// reportCPU reports bytes per CPU second since start.
func reportCPU(b *testing.B, start time.Duration) {
	used := cpuTime() - start
	if used > 0 {
		b.ReportMetric(float64(int64(b.N)*benchSize)/used.Seconds()/1e6, "cpu-MB/s")
	}
}

type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) {
	w.n += int64(len(p))
	return len(p), nil
}

func BenchmarkRestore(b *testing.B) {
	data := loadBenchData(b)
	key := newKey(b)
	s := newObjectServer(b)
	g := newGranter(s)
	if _, err := Upload(context.Background(), bytes.NewReader(data), UploadOptions{Key: key}, g); err != nil {
		b.Fatal(err)
	}
	infos := g.infos(b)
	b.SetBytes(benchSize)
	cpu := cpuTime()
	for b.Loop() {
		rc := Open(context.Background(), key, infos, g)
		n, err := io.Copy(io.Discard, rc)
		rc.Close()
		if err != nil || n != benchSize {
			b.Fatalf("restored %d bytes: %v", n, err)
		}
	}
	reportCPU(b, cpu)
}

// BenchmarkTrove runs the same data through Trove's guest pipeline.
func BenchmarkTrove(b *testing.B) {
	for _, tool := range []string{"sh", "gzip", "openssl"} {
		if _, err := exec.LookPath(tool); err != nil {
			b.Skipf("%s not installed", tool)
		}
	}
	data := loadBenchData(b)
	enc := filepath.Join(b.TempDir(), "backup.gz.enc")
	run := func(b *testing.B, script string, stdin io.Reader) {
		cmd := exec.Command("sh", "-c", script)
		cmd.Stdin = stdin
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("%s: %v: %s", script, err, out)
		}
	}
	b.Run("backup", func(b *testing.B) {
		b.SetBytes(benchSize)
		cpu := cpuTime()
		for b.Loop() {
			run(b, "gzip -6 | openssl enc -aes-256-cbc -pbkdf2 -pass pass:x > "+enc, bytes.NewReader(data))
		}
		reportCPU(b, cpu)
		if st, err := os.Stat(enc); err == nil {
			b.ReportMetric(float64(benchSize)/float64(st.Size()), "ratio")
		}
	})
	b.Run("restore", func(b *testing.B) {
		if _, err := os.Stat(enc); err != nil {
			run(b, "gzip -6 | openssl enc -aes-256-cbc -pbkdf2 -pass pass:x > "+enc, bytes.NewReader(data))
		}
		b.SetBytes(benchSize)
		cpu := cpuTime()
		for b.Loop() {
			run(b, "openssl enc -d -aes-256-cbc -pbkdf2 -pass pass:x < "+enc+" | gzip -d > /dev/null", nil)
		}
		reportCPU(b, cpu)
	})
}
