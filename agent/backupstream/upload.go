package backupstream

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/minio/sio"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// UploadOptions configures Upload. Zero values take the defaults.
type UploadOptions struct {
	// Key is the backup's 32-byte data key. It is never logged.
	Key []byte
	// SegmentSize is the size of every segment but the last, in bytes of
	// ciphertext (default DefaultSegmentSize, at most MaxSegmentSize).
	SegmentSize int64
	// Parallel is how many segments upload at once (default
	// DefaultParallel, at most MaxParallel). Memory use is about
	// (Parallel+1) × SegmentSize.
	Parallel int
	// Level is the zstd level (default zstd.SpeedFastest: on a guest the
	// compressor, not the network, is usually the bottleneck; see the
	// benchmarks).
	Level zstd.EncoderLevel
	// concurrentBlocks compresses 16 MiB sections of the stream in
	// parallel (zstd.WithConcurrentBlocks, GOMAXPROCS at a time). Only
	// the benchmarks set it: on two cores it was measured slower than the
	// stream encoder, and it takes a whole section before the first
	// segment leaves, so backpressure and failures reach the driver late.
	concurrentBlocks bool
	// Retries is how many times a failed PUT is tried again, each time
	// with a fresh grant (default 3); RetryBackoff the first wait between
	// attempts, doubling each time (default 1s).
	Retries      int
	RetryBackoff time.Duration
	// Logger receives retry warnings (default: discard).
	Logger *slog.Logger
	// Compressed says src is a zstd stream already: the datastore
	// compressed it as it read its files (PostgreSQL's server-side zstd,
	// several threads, no copy of the plain stream through a pipe), so
	// Upload only encrypts and cuts it. PlainBytes is then kept by the
	// producer at the size of the stream before compression: it is what
	// progress reports and Summary.RawBytes give.
	Compressed bool
	PlainBytes *atomic.Int64
}

// Summary describes a finished upload.
type Summary struct {
	Segments    int
	StoredBytes int64 // ciphertext, the sum of the segments' sizes
	RawBytes    int64 // the plain stream read from src
}

func (o UploadOptions) withDefaults() (UploadOptions, error) {
	if err := checkKey(o.Key); err != nil {
		return o, err
	}
	if o.SegmentSize == 0 {
		o.SegmentSize = DefaultSegmentSize
	}
	if o.SegmentSize < 1 || o.SegmentSize > MaxSegmentSize {
		return o, fmt.Errorf("segment size %d out of range [1, %d]", o.SegmentSize, MaxSegmentSize)
	}
	if o.Parallel == 0 {
		o.Parallel = DefaultParallel
	}
	if o.Parallel < 1 || o.Parallel > MaxParallel {
		return o, fmt.Errorf("parallel uploads %d out of range [1, %d]", o.Parallel, MaxParallel)
	}
	if o.Compressed && o.PlainBytes == nil {
		return o, errors.New("a compressed stream needs its PlainBytes counter")
	}
	if o.Level == 0 {
		o.Level = zstd.SpeedFastest
	}
	if o.Retries == 0 {
		o.Retries = 3
	}
	if o.RetryBackoff == 0 {
		o.RetryBackoff = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o, nil
}

// Upload reads the plain backup stream from src until EOF and stores it as
// segments through g. It returns when every segment is stored and
// reported, or at the first error, which cancels everything in flight.
//
// If src has a CloseWithError method (an *io.PipeReader), a failing Upload
// calls it, so that a read blocked on a slow producer returns and the
// producer's next write fails. Segments uploaded before a failure stay
// where they are; a new attempt overwrites them.
func Upload(ctx context.Context, src io.Reader, opts UploadOptions, g Granter) (Summary, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Summary{}, err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if c, ok := src.(interface{ CloseWithError(error) error }); ok {
		stop := context.AfterFunc(ctx, func() { _ = c.CloseWithError(context.Cause(ctx)) })
		defer stop()
	}

	u := &uploader{opts: opts, g: g, client: clientOf(g)}
	segs := make(chan segment) // unbuffered: see segmenter
	var wg sync.WaitGroup
	for range opts.Parallel {
		wg.Go(func() {
			for seg := range segs {
				if ctx.Err() == nil {
					if err := u.upload(ctx, seg); err != nil {
						cancel(err)
					}
				}
				putBuf(seg.buf)
			}
		})
	}

	cr := &countingReader{r: src}
	plain := &cr.n
	if opts.Compressed {
		plain = opts.PlainBytes
	}
	sg := &segmenter{ctx: ctx, size: int(opts.SegmentSize), out: segs, raw: plain}
	err = compressEncrypt(sg, cr, opts, cancel)
	if err == nil {
		err = sg.flush()
	}
	if err != nil {
		cancel(err)
	}
	// After a failure zstd's Close may return while its writer goroutine
	// is still in sg.Write; close waits for it and fails any later call,
	// so that nothing sends on segs once it is closed.
	sg.close()
	close(segs)
	wg.Wait()

	// The first failure wins: a worker's error, or the producer's, or the
	// caller's cancellation. The others are its consequences.
	if ctx.Err() != nil {
		return Summary{}, context.Cause(ctx)
	}
	return Summary{Segments: sg.n, StoredBytes: sg.stored, RawBytes: plain.Load()}, nil
}

// compressEncrypt runs src through zstd and sio into dst. fail cancels the
// upload: a failed read must stop it before the encoder flushes what it
// holds into more segments.
func compressEncrypt(dst io.Writer, src io.Reader, opts UploadOptions, fail context.CancelCauseFunc) error {
	concurrency := 1 // see below
	if opts.concurrentBlocks {
		concurrency = runtime.GOMAXPROCS(0)
	}
	enc, err := sio.EncryptWriter(dst, sioConfig(opts.Key))
	if err != nil {
		return fmt.Errorf("start encryption: %w", err)
	}
	if opts.Compressed {
		if _, err := io.Copy(enc, src); err != nil {
			fail(err)
			return err
		}
		if err := enc.Close(); err != nil {
			return fmt.Errorf("encrypt: %w", err)
		}
		return nil
	}
	zw, err := NewEncoder(enc, opts.Level, concurrency, opts.concurrentBlocks)
	if err != nil {
		return fmt.Errorf("start compression: %w", err)
	}
	_, err = zw.ReadFrom(src)
	if err != nil {
		fail(err)
	}
	// Close even after an error: it waits for the encoder's goroutines.
	if cerr := zw.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("compress: %w", cerr)
	}
	if err != nil {
		return err
	}
	// sio's Close writes the final package; sg is not an io.Closer, so it
	// does not close anything else.
	if err := enc.Close(); err != nil {
		return fmt.Errorf("encrypt: %w", err)
	}
	return nil
}

// NewEncoder is the zstd encoder of backup streams, writing to w: the
// settings below, at level (zstd.SpeedFastest when 0) with concurrency
// goroutines (1 unless a benchmark says otherwise). Drivers that compress
// part of their streams themselves use it too.
func NewEncoder(w io.Writer, level zstd.EncoderLevel, concurrency int, concurrentBlocks bool) (*zstd.Encoder, error) {
	if level == 0 {
		level = zstd.SpeedFastest
	}
	if concurrency < 1 {
		concurrency = 1
	}
	return zstd.NewWriter(w,
		zstd.WithEncoderLevel(level),
		// One goroutine, which reads, encodes and encrypts each 128 KiB
		// block in turn. With more, the stream encoder hands every block
		// to two new goroutines, to encode one while the next fills; on a
		// guest the other core is busy with the datastore's side of the
		// backup (walsender, pg_basebackup), and the hand-offs only cost
		// CPU. Measured on 2 cores, paired runs of BenchmarkBackupPipelines:
		// with busy neighbours (load 5-15, pgbench scale 20, 354 MB) 1
		// goroutine 197-227 MB/s using 1.1-1.6 CPU s, 2 goroutines
		// 154-200 MB/s using 1.3-1.7 CPU s; on an idle box (scale 70) 1
		// goroutine 244-300 MB/s, 2 goroutines 235-345 MB/s using 10-25 %
		// more CPU. BenchmarkUpload no-upload: 1.2-1.5x the cpu-MB/s. A
		// guest's datastore keeps serving during a backup, so the cheaper.
		zstd.WithEncoderConcurrency(concurrency),
		zstd.WithConcurrentBlocks(concurrentBlocks),
		// No xxhash of the content: every 64 KiB package is already
		// authenticated by AES-GCM, and the checksum cost about a tenth
		// of the encoder's CPU time.
		zstd.WithEncoderCRC(false),
		// The window of the reference zstd's level 1 (windowLog 19)
		// instead of 8 MiB: the fastest level finds few matches that far
		// back (same ratio on pg_basebackup tars), and the smaller history
		// stays in cache. Measured about 5-10 % less CPU per byte.
		zstd.WithWindowSize(encoderWindow),
		// An empty stream still becomes a frame, so that every backup
		// has at least one segment and an empty download is an error.
		zstd.WithZeroFrames(true),
	)
}

// encoderWindow is the zstd window (the longest back-reference).
const encoderWindow = 512 << 10

// countingReader counts the plain stream's bytes for progress reports.
type countingReader struct {
	r io.Reader
	n atomic.Int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n.Add(int64(n))
	if err != nil && err != io.EOF {
		err = fmt.Errorf("read backup stream: %w", err)
	}
	return n, err
}

// segment is one piece of ciphertext on its way to storage.
type segment struct {
	n    int
	buf  *[]byte // pooled; data aliases it
	data []byte
	raw  int64 // plain bytes read when the segment was cut
}

// segmenter cuts the ciphertext into segments and hands each to an upload
// worker. The hand-off channel is unbuffered, so the segmenter holds at
// most one buffer (the one it fills, or a full one waiting for a worker)
// and the workers Parallel: memory stays at (Parallel+1) × SegmentSize.
type segmenter struct {
	ctx  context.Context
	size int
	out  chan<- segment
	raw  *atomic.Int64

	// mu is held for a whole Write (zstd calls it from its own
	// goroutine), so that close can wait for one in progress.
	mu     sync.Mutex
	closed bool
	buf    *[]byte
	fill   int
	n      int   // segments handed off
	stored int64 // their bytes
}

var errSegmenterClosed = errors.New("backup stream: write after the upload ended")

func (s *segmenter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return 0, errSegmenterClosed
	}
	written := 0
	for len(p) > 0 {
		if s.buf == nil {
			s.buf, s.fill = getBuf(s.size), 0
		}
		k := copy((*s.buf)[s.fill:], p)
		s.fill += k
		written += k
		p = p[k:]
		if s.fill == s.size {
			if err := s.emit(); err != nil {
				return written, err
			}
		}
	}
	return written, nil
}

// flush hands off the last, shorter segment.
func (s *segmenter) flush() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.buf == nil || s.fill == 0 {
		return nil
	}
	return s.emit()
}

func (s *segmenter) emit() error {
	seg := segment{n: s.n, buf: s.buf, data: (*s.buf)[:s.fill], raw: s.raw.Load()}
	select {
	case s.out <- seg:
	case <-s.ctx.Done():
		return context.Cause(s.ctx)
	}
	s.n++
	s.stored += int64(s.fill)
	s.buf, s.fill = nil, 0
	return nil
}

// close waits for a Write in progress, makes later ones fail and returns
// a buffer left behind by a failure.
func (s *segmenter) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	putBuf(s.buf)
	s.buf = nil
}

// uploader stores segments.
type uploader struct {
	opts   UploadOptions
	g      Granter
	client *http.Client
	// rawDone is the highest raw byte count reported so far: segments
	// finish out of order, and progress should not go backwards.
	rawDone atomic.Int64
}

// upload stores one segment: grant, PUT (retried with a fresh grant), then
// the report.
func (u *uploader) upload(ctx context.Context, seg segment) error {
	sum := sha256.Sum256(seg.data)
	sha := hex.EncodeToString(sum[:])
	size := int64(len(seg.data))

	var etag string
	var err error
	delay := u.opts.RetryBackoff
	for attempt := 0; ; attempt++ {
		var grant protocol.Grant
		grant, err = u.g.Grant(ctx, seg.n, http.MethodPut, size, sha)
		if err != nil {
			// The granter retries what is worth retrying itself.
			return &SegmentError{Segment: seg.n, Err: fmt.Errorf("grant: %w", err)}
		}
		etag, err = put(ctx, u.client, grant, seg.data)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		if attempt >= u.opts.Retries {
			return &SegmentError{Segment: seg.n, Err: fmt.Errorf("upload failed after %d attempts: %w", attempt+1, err)}
		}
		u.opts.Logger.Warn("segment upload failed; retrying with a fresh grant",
			"segment", seg.n, "attempt", attempt+1, "retry_in", delay, "error", err)
		if !sleep(ctx, delay) {
			return context.Cause(ctx)
		}
		delay *= 2
	}

	rep := protocol.SegmentReport{Size: size, SHA256: sha, ETag: etag, RawBytesDone: u.raiseRawDone(seg.raw)}
	if err := u.g.SegmentDone(ctx, seg.n, rep); err != nil {
		return &SegmentError{Segment: seg.n, Err: fmt.Errorf("report: %w", err)}
	}
	return nil
}

func (u *uploader) raiseRawDone(v int64) int64 {
	for {
		cur := u.rawDone.Load()
		if v <= cur {
			return cur
		}
		if u.rawDone.CompareAndSwap(cur, v) {
			return v
		}
	}
}

// sleep waits for d or for ctx to end; it reports whether d passed.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
