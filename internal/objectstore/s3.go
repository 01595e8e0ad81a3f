package objectstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// S3 stores objects in an S3 bucket through minio-go. Grants are presigned
// URLs (SigV4) for one object: a PUT grant also signs Content-Length, so it
// uploads exactly the granted size; segments are separate objects, so no
// multipart upload is involved.
type S3 struct {
	client *minio.Client
	region string
}

var _ Store = (*S3)(nil)

// s3PartSize is the part size of uploads of unknown size. Without it
// minio-go sizes parts for a 5 TiB object and buffers ~537 MiB per part.
const s3PartSize = 16 << 20

// NewS3 makes a client for the endpoint (no request is sent).
func NewS3(cfg S3Config) (*S3, error) {
	c, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, string(cfg.SecretKey), ""),
		Secure: cfg.Secure,
		Region: cfg.Region,
		// minio-go's default (10 attempts with backoff) keeps a call
		// hanging for long when the store is down; the caller retries.
		MaxRetries: 3,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 store: endpoint %s: %w", cfg.Endpoint, err)
	}
	return &S3{client: c, region: cfg.Region}, nil
}

// Kind is "s3".
func (s *S3) Kind() string { return "s3" }

// s3Error wraps ErrNotFound into errors that say the bucket or the object
// does not exist.
func s3Error(err error) error {
	var er minio.ErrorResponse
	if errors.As(err, &er) {
		switch er.Code {
		case "NoSuchKey", "NoSuchBucket", "NotFound", "NoSuchVersion":
			return fmt.Errorf("%w (%s)", ErrNotFound, er.Code)
		}
	}
	return err
}

// EnsureContainer makes the bucket if it does not exist.
func (s *S3) EnsureContainer(ctx context.Context, container string) error {
	if err := checkContainer(container); err != nil {
		return fmt.Errorf("s3 store: ensure bucket: %w", err)
	}
	ok, err := s.client.BucketExists(ctx, container)
	if err != nil {
		return fmt.Errorf("s3 store: bucket %s: %w", container, err)
	}
	if ok {
		return nil
	}
	err = s.client.MakeBucket(ctx, container, minio.MakeBucketOptions{Region: s.region})
	var er minio.ErrorResponse
	if errors.As(err, &er) && (er.Code == "BucketAlreadyOwnedByYou" || er.Code == "BucketAlreadyExists") {
		// Made concurrently (by us: BucketExists just said it was not
		// there, and a name taken by someone else fails the next call).
		err = nil
	}
	if err != nil {
		return fmt.Errorf("s3 store: make bucket %s: %w", container, err)
	}
	return nil
}

// Put uploads the object; size -1 streams it in 16 MiB parts.
func (s *S3) Put(ctx context.Context, container, key string, r io.Reader, size int64) error {
	if err := checkNames(container, key); err != nil {
		return fmt.Errorf("s3 store: put %s/%s: %w", container, key, err)
	}
	var exact *exactReader
	if size >= 0 {
		exact = newExactReader(r, size)
		r = exact
	}
	_, err := s.client.PutObject(ctx, container, key, r, size, minio.PutObjectOptions{
		ContentType: "application/octet-stream",
		PartSize:    s3PartSize,
	})
	if err == nil && exact != nil {
		// minio-go stops reading at size: a longer reader would go
		// unnoticed.
		var b [1]byte
		if _, perr := exact.Read(b[:]); perr != io.EOF {
			s.client.RemoveObject(context.WithoutCancel(ctx), container, key, minio.RemoveObjectOptions{})
			err = fmt.Errorf("%w: reader holds more than %d bytes", errSize, size)
		}
	}
	if err != nil {
		return fmt.Errorf("s3 store: put %s/%s: %w", container, key, s3Error(err))
	}
	return nil
}

// Get opens the object; a missing one fails here, not at the first Read.
func (s *S3) Get(ctx context.Context, container, key string) (io.ReadCloser, error) {
	if err := checkNames(container, key); err != nil {
		return nil, fmt.Errorf("s3 store: get %s/%s: %w", container, key, err)
	}
	obj, err := s.client.GetObject(ctx, container, key, minio.GetObjectOptions{})
	if err == nil {
		// Stat sends the GET and reads the response's headers.
		if _, err = obj.Stat(); err != nil {
			obj.Close()
		}
	}
	if err != nil {
		return nil, fmt.Errorf("s3 store: get %s/%s: %w", container, key, s3Error(err))
	}
	return obj, nil
}

// Stat describes the object.
func (s *S3) Stat(ctx context.Context, container, key string) (ObjectInfo, error) {
	if err := checkNames(container, key); err != nil {
		return ObjectInfo{}, fmt.Errorf("s3 store: stat %s/%s: %w", container, key, err)
	}
	info, err := s.client.StatObject(ctx, container, key, minio.StatObjectOptions{})
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("s3 store: stat %s/%s: %w", container, key, s3Error(err))
	}
	return ObjectInfo{Key: key, Size: info.Size, ETag: strings.Trim(info.ETag, `"`)}, nil
}

// List lists the objects under prefix (recursively, S3 returns them by key).
func (s *S3) List(ctx context.Context, container, prefix string) ([]ObjectInfo, error) {
	if err := checkContainer(container); err != nil {
		return nil, fmt.Errorf("s3 store: list %s/%s: %w", container, prefix, err)
	}
	if err := checkPrefix(prefix); err != nil {
		return nil, fmt.Errorf("s3 store: list %s/%s: %w", container, prefix, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops minio-go's listing goroutine if we return early
	var infos []ObjectInfo
	for obj := range s.client.ListObjects(ctx, container, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if obj.Err != nil {
			return nil, fmt.Errorf("s3 store: list %s/%s: %w", container, prefix, s3Error(obj.Err))
		}
		infos = append(infos, ObjectInfo{Key: obj.Key, Size: obj.Size, ETag: strings.Trim(obj.ETag, `"`)})
	}
	slices.SortFunc(infos, func(a, b ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	return infos, nil
}

// Delete removes the object; a missing object or bucket is not an error.
func (s *S3) Delete(ctx context.Context, container, key string) error {
	if err := checkNames(container, key); err != nil {
		return fmt.Errorf("s3 store: delete %s/%s: %w", container, key, err)
	}
	err := s.client.RemoveObject(ctx, container, key, minio.RemoveObjectOptions{})
	if err != nil && !errors.Is(s3Error(err), ErrNotFound) {
		return fmt.Errorf("s3 store: delete %s/%s: %w", container, key, err)
	}
	return nil
}

// presignTTL rounds ttl up to whole seconds (S3 expiries are seconds, at
// least 1 and at most 7 days).
func presignTTL(ttl time.Duration) (time.Duration, error) {
	if ttl <= 0 || ttl > 7*24*time.Hour {
		return 0, fmt.Errorf("ttl %v is not in (0, 7 days]", ttl)
	}
	return (ttl + time.Second - 1).Truncate(time.Second), nil
}

// GrantPut presigns a PUT of the object that signs Content-Length: the
// holder must send exactly size bytes (with that Content-Length).
func (s *S3) GrantPut(ctx context.Context, container, key string, size int64, ttl time.Duration) (Grant, error) {
	g, err := s.grant(ctx, http.MethodPut, container, key, size, ttl)
	if err != nil {
		return Grant{}, fmt.Errorf("s3 store: grant put %s/%s: %w", container, key, err)
	}
	return g, nil
}

// GrantGet presigns a GET of the object.
func (s *S3) GrantGet(ctx context.Context, container, key string, ttl time.Duration) (Grant, error) {
	g, err := s.grant(ctx, http.MethodGet, container, key, -1, ttl)
	if err != nil {
		return Grant{}, fmt.Errorf("s3 store: grant get %s/%s: %w", container, key, err)
	}
	return g, nil
}

func (s *S3) grant(ctx context.Context, method, container, key string, size int64, ttl time.Duration) (Grant, error) {
	if err := checkNames(container, key); err != nil {
		return Grant{}, err
	}
	ttl, err := presignTTL(ttl)
	if err != nil {
		return Grant{}, err
	}
	var signed http.Header
	if method == http.MethodPut {
		if size < 0 {
			return Grant{}, fmt.Errorf("size %d < 0", size)
		}
		// net/http sends Content-Length from the request's length, not
		// from headers: nothing for the holder to set but the body.
		signed = http.Header{"Content-Length": {strconv.FormatInt(size, 10)}}
	}
	// The signature's date has whole seconds: start counting from there.
	signedAt := time.Now().Truncate(time.Second)
	u, err := s.client.PresignHeader(ctx, method, container, key, ttl, nil, signed)
	if err != nil {
		return Grant{}, s3Error(err)
	}
	return Grant{Method: method, URL: u.String(), Header: make(http.Header), Expires: signedAt.Add(ttl)}, nil
}
