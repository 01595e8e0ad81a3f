package backupstream

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/klauspost/compress/zstd"
	"github.com/minio/sio"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Download retries: a failed GET (network, non-2xx) is tried again with a
// fresh grant; a checksum mismatch is not, the object will not change.
const (
	downloadRetries = 3
	downloadBackoff = 500 * time.Millisecond
)

var errClosed = errors.New("backup stream closed")

// Open returns the plain stream of a backup stored as segments (in order,
// with the size and hex SHA-256 the control plane recorded for each).
//
// Segments are fetched one after the other through g, the next one while
// the current one is being consumed; each is held in memory until its size
// and checksum are verified, so no byte of a bad segment reaches the
// decrypter. A failure surfaces as a Read error: a *SegmentError wrapping
// ErrChecksumMismatch for a segment that is not what was recorded, a
// decryption error for a wrong key or segments missing, repeated or out of
// order. Close stops the downloads; it must be called.
func Open(ctx context.Context, key []byte, segments []protocol.SegmentInfo, g Granter) io.ReadCloser {
	if err := checkKey(key); err != nil {
		return errReader{err}
	}
	if len(segments) == 0 {
		return errReader{errors.New("backup has no segments")}
	}
	maxSize := int64(0)
	for n, s := range segments {
		if s.Size <= 0 || s.Size > MaxSegmentSize {
			return errReader{&SegmentError{Segment: n, Err: fmt.Errorf("recorded size %d out of range [1, %d]", s.Size, MaxSegmentSize)}}
		}
		if _, err := hex.DecodeString(s.SHA256); err != nil || len(s.SHA256) != 2*sha256.Size {
			return errReader{&SegmentError{Segment: n, Err: errors.New("recorded checksum is not a hex SHA-256")}}
		}
		maxSize = max(maxSize, s.Size)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	f := &fetcher{g: g, client: clientOf(g), segments: segments, bufSize: int(maxSize), out: make(chan fetched), done: make(chan struct{})}
	sr := &segmentReader{ctx: ctx, in: f.out}
	go f.run(ctx)
	r := &reader{cancel: cancel, segs: sr, fetchDone: f.done}

	dr, err := sio.DecryptReader(sr, sioConfig(key))
	if err != nil {
		r.err = fmt.Errorf("start decryption: %w", err)
		return r
	}
	// One goroutine, decoding in Read: the default (GOMAXPROCS, at most
	// 4) decodes ahead in goroutines that hand every block over and also
	// hash the output for a checksum the stream does not have (see
	// Upload). Measured (BenchmarkRestore, a pg_basebackup tar, 2
	// cores): 1500-1700 cpu-MB/s instead of 940-1050, the same wall
	// time; in BenchmarkBackupPipelines the restore goes as fast or
	// faster.
	r.dec, err = zstd.NewReader(dr, zstd.WithDecoderConcurrency(1))
	if err != nil {
		r.err = fmt.Errorf("start decompression: %w", err)
	}
	return r
}

// errReader fails every Read.
type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }
func (e errReader) Close() error             { return nil }

// fetched is one verified segment, or the error that ends the stream.
type fetched struct {
	buf  *[]byte
	data []byte
	err  error
}

// fetcher downloads and verifies the segments in order. The hand-off is
// unbuffered: one segment is being consumed while the next one downloads
// and waits, so two buffers are in use at a time.
type fetcher struct {
	g        Granter
	client   *http.Client
	segments []protocol.SegmentInfo
	bufSize  int
	out      chan fetched
	done     chan struct{}
}

func (f *fetcher) run(ctx context.Context) {
	defer close(f.done)
	for n := range f.segments {
		buf := getBuf(f.bufSize)
		data, err := f.fetch(ctx, n, *buf)
		if err != nil {
			putBuf(buf)
			buf = nil
		}
		select {
		case f.out <- fetched{buf: buf, data: data, err: err}:
		case <-ctx.Done():
			putBuf(buf)
			return
		}
		if err != nil {
			return
		}
	}
	close(f.out)
}

// fetch downloads segment n into buf, retrying transient failures, and
// returns it once verified.
func (f *fetcher) fetch(ctx context.Context, n int, buf []byte) ([]byte, error) {
	info := f.segments[n]
	delay := downloadBackoff
	for attempt := 0; ; attempt++ {
		grant, err := f.g.Grant(ctx, n, http.MethodGet, 0, "")
		if err != nil {
			return nil, &SegmentError{Segment: n, Err: fmt.Errorf("grant: %w", err)}
		}
		data, sum, err := download(ctx, f.client, grant, buf[:info.Size])
		if err == nil {
			want, _ := hex.DecodeString(info.SHA256) // checked by Open
			if subtle.ConstantTimeCompare(sum[:], want) != 1 {
				return nil, &SegmentError{Segment: n, Err: ErrChecksumMismatch}
			}
			return data, nil
		}
		if errors.Is(err, ErrChecksumMismatch) {
			return nil, &SegmentError{Segment: n, Err: err}
		}
		if ctx.Err() != nil {
			return nil, context.Cause(ctx)
		}
		if attempt >= downloadRetries {
			return nil, &SegmentError{Segment: n, Err: fmt.Errorf("download failed after %d attempts: %w", attempt+1, err)}
		}
		if !sleep(ctx, delay) {
			return nil, context.Cause(ctx)
		}
		delay *= 2
	}
}

// download reads the object a GET grant points at into buf, which has the
// recorded size, and returns it with its SHA-256. An object of another
// size is ErrChecksumMismatch; a body cut short by the network is a plain
// (retried) error.
//
// The hash is computed as the body arrives, each piece while it is still
// in the cache, rather than in a second pass over the whole segment once
// it is in: the first segment is on the critical path of every restore.
func download(ctx context.Context, client *http.Client, g protocol.Grant, buf []byte) ([]byte, [sha256.Size]byte, error) {
	var sum [sha256.Size]byte
	want := int64(len(buf))
	req, err := newRequest(ctx, g, http.MethodGet, nil)
	if err != nil {
		return nil, sum, err
	}
	resp, err := do(client, req, g.URL)
	if err != nil {
		return nil, sum, err
	}
	defer resp.Body.Close()
	if resp.ContentLength >= 0 && resp.ContentLength != want {
		return nil, sum, fmt.Errorf("%w: object is %d bytes, want %d", ErrChecksumMismatch, resp.ContentLength, want)
	}
	h := sha256.New()
	n, err := io.ReadFull(io.TeeReader(resp.Body, h), buf)
	if err != nil {
		if resp.ContentLength < 0 && (err == io.EOF || err == io.ErrUnexpectedEOF) {
			return nil, sum, fmt.Errorf("%w: object is %d bytes, want %d", ErrChecksumMismatch, n, want)
		}
		return nil, sum, fmt.Errorf("GET %s: read body: %w", redactURL(g.URL), err)
	}
	var extra [1]byte
	if k, _ := io.ReadFull(resp.Body, extra[:]); k > 0 {
		return nil, sum, fmt.Errorf("%w: object is longer than %d bytes", ErrChecksumMismatch, want)
	}
	h.Sum(sum[:0])
	return buf, sum, nil
}

// segmentReader presents the verified segments as one stream to the
// decrypter. Only one goroutine reads it at a time (zstd's or the
// caller's).
type segmentReader struct {
	ctx context.Context
	in  <-chan fetched
	buf *[]byte
	cur []byte
	err error // sticky

	mu      sync.Mutex
	failure error // a fetch error, for reader to report as is
}

func (s *segmentReader) Read(p []byte) (int, error) {
	for len(s.cur) == 0 {
		if s.err != nil {
			return 0, s.err
		}
		// The decrypter has copied what it read; the buffer can go.
		putBuf(s.buf)
		s.buf = nil
		select {
		case f, ok := <-s.in:
			switch {
			case !ok:
				s.err = io.EOF
			case f.err != nil:
				s.err = f.err
				s.mu.Lock()
				s.failure = f.err
				s.mu.Unlock()
			default:
				s.buf, s.cur = f.buf, f.data
			}
		case <-s.ctx.Done():
			s.err = context.Cause(s.ctx)
		}
	}
	n := copy(p, s.cur)
	s.cur = s.cur[n:]
	return n, nil
}

func (s *segmentReader) fetchFailure() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failure
}

// reader is what Open returns.
type reader struct {
	cancel    context.CancelCauseFunc
	segs      *segmentReader
	dec       *zstd.Decoder
	fetchDone <-chan struct{}
	err       error // sticky
	closeOnce sync.Once
}

func (r *reader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	n, err := r.dec.Read(p)
	if err != nil && err != io.EOF {
		err = r.explain(err)
		r.err = err
	}
	return n, err
}

// explain names the stage that failed. A fetch failure (checksum, grant,
// download) is reported as is, whatever the decrypter or decompressor made
// of the stream ending early.
func (r *reader) explain(err error) error {
	if fe := r.segs.fetchFailure(); fe != nil {
		return fe
	}
	var se sio.Error
	if errors.As(err, &se) {
		return fmt.Errorf("decrypt: %w (wrong data key, or segments missing, repeated or out of order)", err)
	}
	if errors.Is(err, errClosed) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("decompress: %w", err)
}

// Close stops the downloads and waits for them to end.
func (r *reader) Close() error {
	r.closeOnce.Do(func() {
		r.cancel(errClosed)
		if r.dec != nil {
			r.dec.Close()
		}
		<-r.fetchDone
		// Nothing reads segs any more.
		putBuf(r.segs.buf)
		r.segs.buf = nil
	})
	return nil
}
