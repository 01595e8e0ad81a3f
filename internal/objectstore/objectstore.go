// Package objectstore is where backups live: one interface over three real
// backends — a directory on the control plane's host (the embedded default),
// S3 (minio-go) and Swift (gophercloud). The control plane holds the
// credentials; the guest only ever gets a Grant: a short-lived URL for one
// request on one object.
package objectstore

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"
)

// ErrNotFound is returned (wrapped) for an object or container that does
// not exist.
var ErrNotFound = errors.New("object not found")

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key  string
	Size int64
	ETag string
}

// Grant is a short-lived permission to do one HTTP request on one object:
// send Method to URL with Header (and Content-Length for PUT).
type Grant struct {
	Method  string
	URL     string
	Header  http.Header
	Expires time.Time
}

// Store is one object storage location. Keys are slash-separated paths
// inside Container (an S3 bucket, a Swift container, a directory).
// Implementations are safe for concurrent use.
type Store interface {
	// Kind is "file", "s3" or "swift".
	Kind() string
	// EnsureContainer creates container if it does not exist.
	EnsureContainer(ctx context.Context, container string) error
	// Put writes an object of size bytes (-1: unknown) from r.
	Put(ctx context.Context, container, key string, r io.Reader, size int64) error
	// Get opens an object for reading.
	Get(ctx context.Context, container, key string) (io.ReadCloser, error)
	// Stat describes an object (ErrNotFound if missing).
	Stat(ctx context.Context, container, key string) (ObjectInfo, error)
	// List returns the objects whose key starts with prefix, by key.
	List(ctx context.Context, container, prefix string) ([]ObjectInfo, error)
	// Delete removes an object; a missing object is not an error.
	Delete(ctx context.Context, container, key string) error
	// GrantPut lets the holder upload exactly one object of size bytes
	// to key until ttl passes.
	GrantPut(ctx context.Context, container, key string, size int64, ttl time.Duration) (Grant, error)
	// GrantGet lets the holder download key until ttl passes.
	GrantGet(ctx context.Context, container, key string, ttl time.Duration) (Grant, error)
}

// LargeObjectWriter is implemented by stores that can present uploaded
// segments as one object (Swift static large objects), so that the native
// tools download a backup in one piece.
type LargeObjectWriter interface {
	PutLargeObject(ctx context.Context, container, key string, segments []ObjectInfo) error
	// DeleteLargeObject removes the manifest, not the segments.
	DeleteLargeObject(ctx context.Context, container, key string) error
}
