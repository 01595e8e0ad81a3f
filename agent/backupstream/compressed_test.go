package backupstream

import (
	"bytes"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// A stream the producer compressed (a datastore's own zstd, here the
// pipeline's encoder standing in for it) is only encrypted and cut, and
// Open gives back the plain data; progress and RawBytes are the
// producer's plain count, not the compressed bytes read.
func TestUploadCompressed(t *testing.T) {
	t.Parallel()
	in := textData(3<<20, 7)
	var z bytes.Buffer
	enc, err := NewEncoder(&z, 0, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := enc.Write(in); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	s := newObjectServer(t)
	g := newGranter(s)
	key := newKey(t)
	var plain atomic.Int64
	plain.Store(int64(len(in))) // the producer counted as it compressed
	sum, err := Upload(t.Context(), bytes.NewReader(z.Bytes()), UploadOptions{
		Key: key, SegmentSize: 64 << 10, RetryBackoff: time.Millisecond, Compressed: true, PlainBytes: &plain,
	}, g)
	if err != nil {
		t.Fatalf("Upload: %v", err)
	}
	if sum.RawBytes != int64(len(in)) || sum.Segments != s.count() {
		t.Errorf("Summary %+v for %d plain bytes, %d objects", sum, len(in), s.count())
	}
	// Encryption only: the stored size is the compressed stream's plus
	// sio's overhead (32 bytes per 64 KiB package), not compressed again.
	if over := sum.StoredBytes - int64(z.Len()); over < 0 || over > int64(z.Len()/(64<<10)+1)*32 {
		t.Errorf("stored %d bytes for a %d-byte compressed stream", sum.StoredBytes, z.Len())
	}
	for n, r := range g.reports {
		if r.RawBytesDone != int64(len(in)) {
			t.Errorf("segment %d reported raw_bytes_done %d, want the producer's %d", n, r.RawBytesDone, len(in))
		}
	}
	out, err := restore(t.Context(), key, g.infos(t), g)
	if err != nil || !bytes.Equal(out, in) {
		t.Fatalf("restore: %d bytes (%v), want the %d plain bytes", len(out), err, len(in))
	}
	if _, err := Upload(t.Context(), strings.NewReader("x"), UploadOptions{Key: key, Compressed: true}, g); err == nil {
		t.Error("a compressed upload without its plain counter succeeded")
	}
}
