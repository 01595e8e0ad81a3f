// Package backupstream is the guest agent's backup pipeline: what happens to
// a datastore's backup stream between the driver and object storage.
//
// Upload compresses the plain stream (zstd), encrypts it (minio/sio, DARE
// 2.0, AES-256-GCM only, with the backup's data key), cuts the ciphertext
// into fixed-size segments and uploads each one, several at a time, through
// a grant: a short-lived URL for that one object that the control plane
// hands out just before the request. Open runs the other way: it downloads
// the segments one after the other (prefetching the next), checks each
// one's size and SHA-256 against what the control plane recorded before a
// byte of it reaches the decrypter, then decrypts and decompresses.
//
// Segments are ciphertext, so a segment's checksum says nothing about the
// data and the store never sees plaintext. DARE authenticates every 64 KiB
// package and its position in the stream, and marks the final one, so a
// segment that is missing, repeated, reordered or cut short fails to
// decrypt even when its checksum was recorded wrongly.
package backupstream

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"

	"github.com/minio/sio"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Limits and defaults.
const (
	// KeySize is the size of a backup's data key (AES-256).
	KeySize = 32
	// DefaultSegmentSize is the segment size when the request names none.
	DefaultSegmentSize = 64 << 20
	// MaxSegmentSize bounds a segment: every segment in flight is held in
	// memory, on a guest that also runs the datastore.
	MaxSegmentSize = 1 << 30
	// DefaultParallel is how many segments upload at once by default;
	// MaxParallel bounds it for the same reason as MaxSegmentSize.
	DefaultParallel = 4
	MaxParallel     = 16
)

// Granter is the control plane's side of one backup's transfers. The
// agent's implementation talks to the agent API (protocol.PathSegmentGrant,
// PathSegmentDone) for one backup id; tests use an in-process object server.
type Granter interface {
	// Grant returns a grant for one request on segment n: method "PUT"
	// with the segment's size and hex SHA-256, or "GET" (size 0, sha "").
	Grant(ctx context.Context, n int, method string, size int64, sha256 string) (protocol.Grant, error)
	// SegmentDone reports that segment n is stored.
	SegmentDone(ctx context.Context, n int, r protocol.SegmentReport) error
	// Client is the HTTP client that grant URLs are fetched with. It
	// trusts whatever the grants point at (the system roots for S3 and
	// Swift, the agent API's CA for the file store).
	Client() *http.Client
}

func clientOf(g Granter) *http.Client {
	if c := g.Client(); c != nil {
		return c
	}
	return http.DefaultClient
}

// ErrChecksumMismatch is wrapped by the error of a downloaded segment whose
// size or SHA-256 is not what the control plane recorded.
var ErrChecksumMismatch = errors.New("checksum mismatch")

// SegmentError is a failure that concerns one segment. Its message is
// "segment N: ..."; callers that know the backup add its id.
type SegmentError struct {
	Segment int
	Err     error
}

func (e *SegmentError) Error() string { return fmt.Sprintf("segment %d: %v", e.Segment, e.Err) }

func (e *SegmentError) Unwrap() error { return e.Err }

// sioConfig is the only DARE configuration the pipeline writes or accepts:
// version 2.0 and AES-256-GCM, so that a stream can never be downgraded to
// another format or cipher.
func sioConfig(key []byte) sio.Config {
	return sio.Config{
		MinVersion:   sio.Version20,
		MaxVersion:   sio.Version20,
		CipherSuites: []byte{sio.AES_256_GCM},
		Key:          key,
	}
}

func checkKey(key []byte) error {
	if len(key) != KeySize {
		return fmt.Errorf("data key is %d bytes, want %d", len(key), KeySize)
	}
	return nil
}

// bufPool recycles segment buffers between segments and backups. It does
// not bound memory; the pipelines do, by how many buffers they hold at once.
var bufPool sync.Pool

// getBuf returns a buffer of length size, reusing a pooled one when it is
// big enough.
func getBuf(size int) *[]byte {
	if p, ok := bufPool.Get().(*[]byte); ok && cap(*p) >= size {
		*p = (*p)[:size]
		return p
	}
	b := make([]byte, size)
	return &b
}

func putBuf(p *[]byte) {
	if p != nil {
		bufPool.Put(p)
	}
}
