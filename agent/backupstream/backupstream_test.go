package backupstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

func newKey(t testing.TB) []byte {
	t.Helper()
	k := make([]byte, KeySize)
	if _, err := rand.Read(k); err != nil {
		t.Fatal(err)
	}
	return k
}

// randomData is incompressible.
func randomData(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := mrand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)})
	_, _ = r.Read(b)
	return b
}

// textData looks like a pgbench table dump: compressible, not trivially.
func textData(n int, seed uint64) []byte {
	r := mrand.New(mrand.NewPCG(seed, 1))
	var b bytes.Buffer
	for aid := 1; b.Len() < n; aid++ {
		fmt.Fprintf(&b, "%d\t%d\t%d\t%s\n", aid, 1+aid/100000, r.IntN(20001)-10000, strings.Repeat(" ", 84))
	}
	return b.Bytes()[:n]
}

// upload runs Upload of data and checks what it stored.
func upload(t *testing.T, s *objectServer, g *testGranter, key, data []byte, segSize int64, parallel int) Summary {
	t.Helper()
	sum, err := Upload(t.Context(), bytes.NewReader(data), UploadOptions{
		Key: key, SegmentSize: segSize, Parallel: parallel, RetryBackoff: time.Millisecond,
	}, g)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if sum.RawBytes != int64(len(data)) {
		t.Errorf("RawBytes = %d, want %d", sum.RawBytes, len(data))
	}
	if sum.Segments < 1 || s.count() != sum.Segments || len(g.reports) != sum.Segments {
		t.Fatalf("Segments = %d, stored %d objects, %d reports", sum.Segments, s.count(), len(g.reports))
	}
	var stored, maxRaw int64
	for n, info := range g.infos(t) {
		obj := s.object(n)
		stored += int64(len(obj))
		if int64(len(obj)) != info.Size {
			t.Errorf("segment %d: stored %d bytes, reported %d", n, len(obj), info.Size)
		}
		if n < sum.Segments-1 && info.Size != segSize {
			t.Errorf("segment %d of %d: %d bytes, want the segment size %d", n, sum.Segments, info.Size, segSize)
		}
		if got := sha(obj); got != info.SHA256 {
			t.Errorf("segment %d: reported sha %s, stored object has %s", n, info.SHA256, got)
		}
		r := g.reports[n]
		if r.ETag == "" || strings.Contains(r.ETag, `"`) {
			t.Errorf("segment %d: ETag %q, want the server's, unquoted", n, r.ETag)
		}
		maxRaw = max(maxRaw, r.RawBytesDone)
	}
	if stored != sum.StoredBytes {
		t.Errorf("StoredBytes = %d, objects hold %d", sum.StoredBytes, stored)
	}
	if maxRaw != int64(len(data)) {
		t.Errorf("highest raw_bytes_done = %d, want %d", maxRaw, len(data))
	}
	return sum
}

func sha(b []byte) string {
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

// restore reads the whole backup back.
func restore(ctx context.Context, key []byte, infos []protocol.SegmentInfo, g Granter) ([]byte, error) {
	rc := Open(ctx, key, infos, g)
	defer rc.Close()
	var out bytes.Buffer
	_, err := io.Copy(&out, rc)
	return out.Bytes(), err
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	type data struct {
		name string
		gen  func(n int, seed uint64) []byte
	}
	for _, d := range []data{{"random", randomData}, {"text", textData}} {
		for _, tc := range []struct {
			name    string
			size    int
			segSize int64
		}{
			{"empty", 0, 64 << 10},
			{"one byte", 1, 64 << 10},
			{"one segment", 100 << 10, 1 << 20},
			{"many segments", 1 << 20, 16 << 10},
			{"many tiny segments", 200 << 10, 4099},
		} {
			for _, parallel := range []int{1, 4} {
				t.Run(fmt.Sprintf("%s/%s/parallel=%d", d.name, tc.name, parallel), func(t *testing.T) {
					t.Parallel()
					s := newObjectServer(t)
					g := newGranter(s)
					key := newKey(t)
					in := d.gen(tc.size, uint64(tc.size))
					sum := upload(t, s, g, key, in, tc.segSize, parallel)
					if tc.segSize > int64(tc.size)+1024 && sum.Segments != 1 {
						t.Errorf("%d segments, want 1", sum.Segments)
					}
					out, err := restore(t.Context(), key, g.infos(t), g)
					if err != nil {
						t.Fatalf("restore: %v", err)
					}
					if !bytes.Equal(out, in) {
						t.Fatalf("restored %d bytes, differ from the %d uploaded", len(out), len(in))
					}
				})
			}
		}
	}
}

// TestSegmentBoundaries uploads a stream whose ciphertext is exactly one
// segment, then one byte more than a segment: the pipeline's size is
// deterministic (only the nonce is random), so the first upload measures it.
func TestSegmentBoundaries(t *testing.T) {
	t.Parallel()
	in := randomData(300<<10, 7)
	key := newKey(t)
	probe := newObjectServer(t)
	total := upload(t, probe, newGranter(probe), key, in, MaxSegmentSize, 1).StoredBytes

	for _, tc := range []struct {
		segSize  int64
		segments int
	}{
		{total, 1},
		{total - 1, 2},
		{total / 2, 2 + int(total%2)},
	} {
		t.Run(fmt.Sprint(tc.segSize), func(t *testing.T) {
			t.Parallel()
			s := newObjectServer(t)
			g := newGranter(s)
			sum := upload(t, s, g, key, in, tc.segSize, 2)
			if sum.StoredBytes != total || sum.Segments != tc.segments {
				t.Fatalf("%d segments of %d bytes in all, want %d of %d", sum.Segments, sum.StoredBytes, tc.segments, total)
			}
			out, err := restore(t.Context(), key, g.infos(t), g)
			if err != nil || !bytes.Equal(out, in) {
				t.Fatalf("restore: %v (%d bytes, equal %v)", err, len(out), bytes.Equal(out, in))
			}
		})
	}
}

// uploaded returns a server holding a backup of in in many segments.
func uploaded(t *testing.T, in []byte) (*objectServer, *testGranter, []byte) {
	t.Helper()
	s := newObjectServer(t)
	g := newGranter(s)
	key := newKey(t)
	sum := upload(t, s, g, key, in, 32<<10, 4)
	if sum.Segments < 5 {
		t.Fatalf("only %d segments; the test needs several", sum.Segments)
	}
	return s, g, key
}

func TestCorruptSegment(t *testing.T) {
	t.Parallel()
	in := randomData(256<<10, 3)
	for _, bad := range []int{0, 3} {
		t.Run(fmt.Sprint(bad), func(t *testing.T) {
			t.Parallel()
			s, g, key := uploaded(t, in)
			obj := s.object(bad)
			obj[len(obj)/2] ^= 0x01
			s.setObject(bad, obj)

			out, err := restore(t.Context(), key, g.infos(t), g)
			var se *SegmentError
			if !errors.As(err, &se) || se.Segment != bad || !errors.Is(err, ErrChecksumMismatch) {
				t.Fatalf("restore error = %v, want a checksum mismatch on segment %d", err, bad)
			}
			if want := fmt.Sprintf("segment %d: checksum mismatch", bad); err.Error() != want {
				t.Errorf("error %q, want %q", err, want)
			}
			// Only bytes of the verified segments before the bad one may
			// come out, and they are the backup's.
			if !bytes.HasPrefix(in, out) {
				t.Fatalf("restore produced %d bytes that are not a prefix of the backup", len(out))
			}
			if bad == 0 && len(out) != 0 {
				t.Fatalf("restore produced %d bytes from a corrupt first segment", len(out))
			}
			if n := s.getCount(bad + 1); n != 0 {
				t.Errorf("segment %d downloaded %d times after segment %d failed", bad+1, n, bad)
			}
			if n := s.getCount(bad); n != 1 {
				t.Errorf("corrupt segment downloaded %d times, want 1 (a mismatch is not retried)", n)
			}
		})
	}
}

func TestWrongSizeSegment(t *testing.T) {
	t.Parallel()
	in := randomData(256<<10, 4)
	s, g, key := uploaded(t, in)
	obj := s.object(1)
	s.setObject(1, obj[:len(obj)-1])
	_, err := restore(t.Context(), key, g.infos(t), g)
	if !errors.Is(err, ErrChecksumMismatch) || !strings.HasPrefix(err.Error(), "segment 1: checksum mismatch") {
		t.Fatalf("restore error = %v, want a checksum mismatch on segment 1", err)
	}
}

// TestTamperedChain covers a manifest that matches the objects but not the
// backup: segments reordered, dropped or repeated (with their recorded
// checksums) must fail to decrypt.
func TestTamperedChain(t *testing.T) {
	t.Parallel()
	in := textData(2<<20, 5)
	s, g, key := uploaded(t, in)
	infos := g.infos(t)
	last := len(infos) - 1
	seq := func(n int) []int {
		o := make([]int, n)
		for i := range o {
			o[i] = i
		}
		return o
	}
	for _, tc := range []struct {
		name  string
		order []int
	}{
		{"swapped", append([]int{1, 0}, seq(len(infos))[2:]...)},
		{"last dropped", seq(last)},
		{"first dropped", seq(len(infos))[1:]},
		{"repeated", append(seq(len(infos)), last)},
		{"middle repeated", append(append(seq(3), 2), seq(len(infos))[3:]...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tg := newGranter(s)
			tg.order = tc.order
			ti := make([]protocol.SegmentInfo, len(tc.order))
			for i, o := range tc.order {
				ti[i] = infos[o]
			}
			out, err := restore(t.Context(), key, ti, tg)
			if err == nil {
				t.Fatalf("restore of a tampered chain succeeded (%d bytes)", len(out))
			}
			if !strings.Contains(err.Error(), "decrypt") && !strings.Contains(err.Error(), "decompress") {
				t.Errorf("error %q does not say what failed", err)
			}
			if !bytes.HasPrefix(in, out) {
				t.Errorf("restore produced %d bytes that are not a prefix of the backup", len(out))
			}
		})
	}
}

func TestWrongKey(t *testing.T) {
	t.Parallel()
	in := textData(2<<20, 6)
	_, g, _ := uploaded(t, in)
	out, err := restore(t.Context(), newKey(t), g.infos(t), g)
	if err == nil || !strings.Contains(err.Error(), "decrypt: sio: authentication failed") {
		t.Fatalf("restore with another key: %v, want an authentication failure", err)
	}
	if len(out) != 0 {
		t.Fatalf("restore with another key produced %d bytes", len(out))
	}
	if _, err := restore(t.Context(), []byte("short"), g.infos(t), g); err == nil || !strings.Contains(err.Error(), "data key is 5 bytes") {
		t.Fatalf("restore with a short key: %v", err)
	}
	if _, err := restore(t.Context(), newKey(t), nil, g); err == nil {
		t.Fatal("restore of no segments succeeded")
	}
}

// TestUploadFailure: the store fails every PUT after a few; Upload must
// retry each with a fresh grant, then fail, stop the producer, and leave
// nothing running.
func TestUploadFailure(t *testing.T) {
	t.Parallel()
	s := newObjectServer(t)
	s.failPutsAfter = 3
	g := newGranter(s)
	key := newKey(t)

	// An endless producer behind a pipe, as the driver is.
	pr, pw := io.Pipe()
	producerDone := make(chan error, 1)
	var err error
	leakCheck(t, s.srv.Client(), func(ctx context.Context) {
		go func() {
			rng := mrand.NewChaCha8([32]byte{9})
			chunk := make([]byte, 64<<10)
			for {
				_, _ = rng.Read(chunk)
				if _, err := pw.Write(chunk); err != nil {
					producerDone <- err
					return
				}
			}
		}()
		_, err = Upload(ctx, pr, UploadOptions{Key: key, SegmentSize: 16 << 10, Parallel: 4, Retries: 2, RetryBackoff: time.Millisecond}, g)
		if d := time.Since(s.lastFailure()); d > 5*time.Second {
			t.Errorf("Upload returned %s after the store's last failure", d)
		}
		select {
		case perr := <-producerDone:
			if perr == nil {
				t.Error("producer's write did not fail")
			}
		case <-time.After(5 * time.Second):
			t.Error("producer still writing 5s after Upload failed")
		}
	})
	if err == nil {
		t.Fatal("Upload succeeded against a failing store")
	}
	msg := err.Error()
	if !strings.Contains(msg, "500 Internal Server Error: backend exploded") || !strings.Contains(msg, "after 3 attempts") {
		t.Errorf("error %q does not give the status, the body and the attempts", msg)
	}
	if strings.Contains(msg, s.sig) || strings.Contains(msg, "sig=") {
		t.Errorf("error %q contains the grant's query string", msg)
	}
	var se *SegmentError
	if !errors.As(err, &se) {
		t.Errorf("error %q is not a SegmentError", msg)
	}
	if s.count() != 3 {
		t.Errorf("%d objects stored, want 3", s.count())
	}
}

// TestUploadCancel: a cancelled upload returns promptly even when the
// producer has stalled (Upload is blocked reading the pipe).
func TestUploadCancel(t *testing.T) {
	t.Parallel()
	s := newObjectServer(t)
	g := newGranter(s)
	pr, pw := io.Pipe()
	defer pw.Close()
	var err error
	var took time.Duration
	leakCheck(t, s.srv.Client(), func(lctx context.Context) {
		ctx, cancel := context.WithCancel(lctx)
		defer cancel()
		go func() {
			_, _ = pw.Write(randomData(200<<10, 1)) // then nothing: a stalled driver
			time.Sleep(50 * time.Millisecond)
			cancel()
		}()
		start := time.Now()
		_, err = Upload(ctx, pr, UploadOptions{Key: newKey(t), SegmentSize: 32 << 10}, g)
		took = time.Since(start)
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Upload error = %v, want context.Canceled", err)
	}
	if took > 5*time.Second {
		t.Errorf("Upload took %s to return after cancellation", took)
	}
}

// TestErrorRedaction: an S3-style error body echoes the signature; the
// error must keep the code and message only.
func TestErrorRedaction(t *testing.T) {
	t.Parallel()
	s := newObjectServer(t)
	s.deny = true
	g := newGranter(s)
	_, err := Upload(t.Context(), bytes.NewReader([]byte("x")), UploadOptions{Key: newKey(t), Retries: 1, RetryBackoff: time.Millisecond}, g)
	if err == nil {
		t.Fatal("Upload succeeded against a denying store")
	}
	msg := err.Error()
	if !strings.Contains(msg, "403 Forbidden: SignatureDoesNotMatch: The request signature") {
		t.Errorf("error %q lacks the S3 code and message", msg)
	}
	if strings.Contains(msg, s.sig) || strings.Contains(msg, "?") {
		t.Errorf("error %q leaks the grant's query string", msg)
	}
	if ex := excerpt([]byte("denied: sig="+s.sig+" bad\x00"), queryValues("https://h/o?sig="+s.sig)); strings.Contains(ex, s.sig) {
		t.Errorf("excerpt %q keeps the signature", ex)
	}
}

func TestBadOptions(t *testing.T) {
	t.Parallel()
	s := newObjectServer(t)
	g := newGranter(s)
	for _, o := range []UploadOptions{
		{Key: make([]byte, 16)},
		{Key: make([]byte, 32), SegmentSize: MaxSegmentSize + 1},
		{Key: make([]byte, 32), Parallel: MaxParallel + 1},
	} {
		if _, err := Upload(t.Context(), strings.NewReader("x"), o, g); err == nil {
			t.Errorf("Upload with %d-byte key, segment size %d, parallel %d succeeded", len(o.Key), o.SegmentSize, o.Parallel)
		}
	}
	if s.count() != 0 {
		t.Errorf("bad options stored %d objects", s.count())
	}
}
