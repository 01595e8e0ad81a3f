package objectstore

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/accounts"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/containers"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/objects"
	"github.com/gophercloud/gophercloud/v2/openstack/objectstorage/v1/swauth"
)

// Swift stores objects in an OpenStack Swift account through gophercloud,
// authenticated by tempauth/swauth (v1) or Keystone; an expired token is
// renewed on the first 401. Grants are TempURLs (HMAC-SHA256) signed with
// the container's (or account's) Temp-URL key. Swift also presents a
// backup's segments as one static large object (LargeObjectWriter), so
// `swift download` fetches a backup in one piece.
//
// A TempURL PUT does not bind the upload's size (the signature covers
// method, expiry and path only): Swift stores whatever the holder sends.
type Swift struct {
	client *gophercloud.ServiceClient

	// configKey is COFFER_SWIFT_TEMPURL_KEY; seed derives a container's key
	// when neither it nor the container or account has one.
	configKey string
	seed      []byte

	mu   sync.Mutex
	keys map[string]string // container → the Temp-URL key its grants are signed with

	// maxManifestSegments is Swift's max_manifest_segments (default 1000):
	// longer lists become manifests of manifests.
	maxManifestSegments int
}

var (
	_ Store             = (*Swift)(nil)
	_ LargeObjectWriter = (*Swift)(nil)
)

// NewSwift authenticates and finds the storage URL.
func NewSwift(ctx context.Context, cfg SwiftConfig) (*Swift, error) {
	s := &Swift{configKey: string(cfg.TempURLKey), keys: make(map[string]string), maxManifestSegments: 1000}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	// No client-wide timeout: uploads of big objects take long, and every
	// call is bounded by its context.
	httpClient := http.Client{Transport: transport}
	switch cfg.Auth {
	case "", "tempauth":
		base, err := swauthBase(cfg.AuthURL)
		if err != nil {
			return nil, fmt.Errorf("swift store: auth URL: %w", err)
		}
		pc := &gophercloud.ProviderClient{IdentityBase: base, IdentityEndpoint: cfg.AuthURL, HTTPClient: httpClient}
		pc.UseTokenLock()
		opts := swauth.AuthOpts{User: cfg.User, Key: string(cfg.Key)}
		if s.client, err = swauth.NewObjectStorageV1(ctx, pc, opts); err != nil {
			return nil, fmt.Errorf("swift store: authenticate %s at %s: %w", cfg.User, cfg.AuthURL, err)
		}
		// swauth sets no ReauthFunc: without one, requests fail with 401
		// once the token expires (tempauth: after 24 h by default). The
		// renewal goes through a token-less client of its own, as the
		// shared one blocks its requests while a renewal is under way.
		pc.ReauthFunc = func(ctx context.Context) error {
			authClient := &gophercloud.ProviderClient{IdentityBase: base, HTTPClient: httpClient}
			res, err := swauth.Auth(ctx, authClient, opts).Extract()
			if err != nil {
				return fmt.Errorf("swift store: re-authenticate %s: %w", cfg.User, err)
			}
			return pc.SetTokenAndAuthResult(swauthToken(res.Token))
		}
		s.seed = []byte(cfg.Key)
	case "keystone":
		k := cfg.Keystone
		pc, err := openstack.NewClient(k.AuthURL)
		if err != nil {
			return nil, fmt.Errorf("swift store: keystone URL %s: %w", k.AuthURL, err)
		}
		pc.HTTPClient = httpClient
		err = openstack.Authenticate(ctx, pc, gophercloud.AuthOptions{
			IdentityEndpoint: k.AuthURL,
			Username:         k.Username,
			Password:         string(k.Password),
			DomainName:       k.UserDomainName,
			Scope:            &gophercloud.AuthScope{ProjectName: k.ProjectName, DomainName: k.ProjectDomainName},
			AllowReauth:      true, // gophercloud renews the token itself
		})
		if err != nil {
			return nil, fmt.Errorf("swift store: authenticate %s in project %s at %s: %w", k.Username, k.ProjectName, k.AuthURL, err)
		}
		if s.client, err = openstack.NewObjectStorageV1(pc, gophercloud.EndpointOpts{Region: cfg.Region}); err != nil {
			return nil, fmt.Errorf("swift store: object-store endpoint in region %s: %w", cfg.Region, err)
		}
		s.seed = []byte(k.Password)
	default:
		return nil, fmt.Errorf("swift store: auth %q is not supported (supported: tempauth, keystone)", cfg.Auth)
	}
	return s, nil
}

// swauthToken is a v1 token as a gophercloud.AuthResult.
type swauthToken string

func (t swauthToken) ExtractTokenID() (string, error) { return string(t), nil }

// swauthBase is the root that swauth's "auth/v1.0" is appended to: the
// auth URL without its auth/v1.0 suffix (tempauth's usual
// http://host:8080/auth/v1.0), or a bare root URL.
func swauthBase(authURL string) (string, error) {
	u, err := url.Parse(authURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.RawQuery != "" {
		return "", fmt.Errorf("%q is not an http(s) URL", authURL)
	}
	p := strings.TrimSuffix(u.Path, "/")
	switch {
	case strings.HasSuffix(p, "/auth/v1.0"):
		u.Path = strings.TrimSuffix(p, "auth/v1.0")
	case p == "":
		u.Path = "/"
	default:
		return "", fmt.Errorf("%q does not end in /auth/v1.0", authURL)
	}
	return u.String(), nil
}

// Kind is "swift".
func (s *Swift) Kind() string { return "swift" }

// StorageURL is the account's URL (for the swift CLI: --os-storage-url).
func (s *Swift) StorageURL() string { return s.client.Endpoint }

// swiftError wraps ErrNotFound into 404 errors.
func swiftError(err error) error {
	if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

// EnsureContainer creates the container if it is missing and makes sure
// grants can be signed for it: with COFFER_SWIFT_TEMPURL_KEY when set
// (stored on the container if neither it nor the account has that key
// yet; the container's previous key moves to Temp-URL-Key-2 so that grants
// already handed out keep working), else with the container's or the
// account's key, else with one generated and stored on the container.
func (s *Swift) EnsureContainer(ctx context.Context, container string) error {
	if err := checkContainer(container); err != nil {
		return fmt.Errorf("swift store: ensure container: %w", err)
	}
	_, err := containers.Get(ctx, s.client, container, nil).Extract()
	if gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		_, err = containers.Create(ctx, s.client, container, nil).Extract()
	}
	if err != nil {
		return fmt.Errorf("swift store: container %s: %w", container, err)
	}
	if _, err := s.setupTempURLKey(ctx, container); err != nil {
		return fmt.Errorf("swift store: container %s: %w", container, err)
	}
	return nil
}

// tempURLKey is the key to sign container's grants with.
func (s *Swift) tempURLKey(ctx context.Context, container string) (string, error) {
	s.mu.Lock()
	k, ok := s.keys[container]
	s.mu.Unlock()
	if ok {
		return k, nil
	}
	return s.setupTempURLKey(ctx, container)
}

// setupTempURLKey finds (or puts in place) the container's key, see
// EnsureContainer.
func (s *Swift) setupTempURLKey(ctx context.Context, container string) (string, error) {
	ch, err := containers.Get(ctx, s.client, container, nil).Extract()
	if err != nil {
		return "", fmt.Errorf("read Temp-URL keys: %w", swiftError(err))
	}
	key := ""
	switch {
	case s.configKey != "" && (ch.TempURLKey == s.configKey || ch.TempURLKey2 == s.configKey):
		key = s.configKey
	case s.configKey == "" && ch.TempURLKey != "":
		key = ch.TempURLKey
	}
	if key == "" {
		ah, err := accounts.Get(ctx, s.client, nil).Extract()
		if err != nil {
			return "", fmt.Errorf("read the account's Temp-URL keys: %w", err)
		}
		switch {
		case s.configKey != "" && (ah.TempURLKey == s.configKey || ah.TempURLKey2 == s.configKey):
			key = s.configKey
		case s.configKey == "" && ah.TempURLKey != "":
			key = ah.TempURLKey
		}
	}
	if key == "" {
		key = s.configKey
		if key == "" {
			// Derived, not random: every replica of the control plane
			// that finds the container without a key puts the same one.
			key = s.derivedKey(container)
		}
		opts := containers.UpdateOpts{TempURLKey: key, TempURLKey2: ch.TempURLKey}
		if _, err := containers.Update(ctx, s.client, container, opts).Extract(); err != nil {
			return "", fmt.Errorf("set the container's Temp-URL key: %w", err)
		}
	}
	s.mu.Lock()
	s.keys[container] = key
	s.mu.Unlock()
	return key, nil
}

// derivedKey is a Temp-URL key for container derived from the account's
// credential (a one-way function of it: the key reveals nothing).
func (s *Swift) derivedKey(container string) string {
	m := hmac.New(sha256.New, s.seed)
	fmt.Fprintf(m, "coffer swift temp-url key\x00%s\x00%s", s.client.Endpoint, container)
	return hex.EncodeToString(m.Sum(nil))
}

// Put streams the object (chunked transfer encoding, no client-side MD5:
// NoETag). With size >= 0 a reader of another length aborts the upload.
func (s *Swift) Put(ctx context.Context, container, key string, r io.Reader, size int64) error {
	if err := checkNames(container, key); err != nil {
		return fmt.Errorf("swift store: put %s/%s: %w", container, key, err)
	}
	body, err := newResendable(r, size)
	if err == nil {
		_, err = objects.Create(ctx, s.client, container, key, objects.CreateOpts{
			Content:     body,
			NoETag:      true,
			ContentType: "application/octet-stream",
		}).Extract()
	}
	if err != nil {
		return fmt.Errorf("swift store: put %s/%s: %w", container, key, swiftError(err))
	}
	return nil
}

// resendable is an upload body for gophercloud, which sends a body again
// after renewing an expired token (on a 401) if it can seek to its start.
// A reader that is an io.Seeker goes back to where it was; any other
// can be "rewound" only while nothing has been read from it: a stream
// partly sent cannot be sent again (the object would hold its rest only),
// so that upload fails instead.
type resendable struct {
	src   io.Reader
	start int64 // src's offset at the start, when it is an io.Seeker
	seek  bool
	size  int64
	r     io.Reader // src, or an exactReader over it
	read  bool
}

func newResendable(src io.Reader, size int64) (*resendable, error) {
	b := &resendable{src: src, size: size}
	if sk, ok := src.(io.Seeker); ok {
		start, err := sk.Seek(0, io.SeekCurrent)
		if err != nil {
			return nil, err
		}
		b.start, b.seek = start, true
	}
	b.reset()
	return b, nil
}

func (b *resendable) reset() {
	b.r, b.read = b.src, false
	if b.size >= 0 {
		b.r = newExactReader(b.src, b.size)
	}
}

func (b *resendable) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if n > 0 {
		b.read = true
	}
	return n, err
}

func (b *resendable) Seek(offset int64, whence int) (int64, error) {
	if offset != 0 || whence != io.SeekStart {
		return 0, errors.New("upload body: only a rewind to the start is supported")
	}
	if !b.read {
		return 0, nil
	}
	if !b.seek {
		return 0, errors.New("the upload was refused (expired token?) after part of it was sent, and a stream cannot be sent again")
	}
	if _, err := b.src.(io.Seeker).Seek(b.start, io.SeekStart); err != nil {
		return 0, err
	}
	b.reset()
	return 0, nil
}

// Get opens the object (a static large object reads as its segments'
// concatenation).
func (s *Swift) Get(ctx context.Context, container, key string) (io.ReadCloser, error) {
	if err := checkNames(container, key); err != nil {
		return nil, fmt.Errorf("swift store: get %s/%s: %w", container, key, err)
	}
	res := objects.Download(ctx, s.client, container, key, nil)
	if res.Err != nil {
		return nil, fmt.Errorf("swift store: get %s/%s: %w", container, key, swiftError(res.Err))
	}
	return res.Body, nil
}

// Stat describes the object.
func (s *Swift) Stat(ctx context.Context, container, key string) (ObjectInfo, error) {
	if err := checkNames(container, key); err != nil {
		return ObjectInfo{}, fmt.Errorf("swift store: stat %s/%s: %w", container, key, err)
	}
	h, err := objects.Get(ctx, s.client, container, key, nil).Extract()
	if err != nil {
		return ObjectInfo{}, fmt.Errorf("swift store: stat %s/%s: %w", container, key, swiftError(err))
	}
	return ObjectInfo{Key: key, Size: h.ContentLength, ETag: strings.Trim(h.ETag, `"`)}, nil
}

// List lists the objects under prefix (all pages).
func (s *Swift) List(ctx context.Context, container, prefix string) ([]ObjectInfo, error) {
	if err := checkContainer(container); err != nil {
		return nil, fmt.Errorf("swift store: list %s/%s: %w", container, prefix, err)
	}
	if err := checkPrefix(prefix); err != nil {
		return nil, fmt.Errorf("swift store: list %s/%s: %w", container, prefix, err)
	}
	pages, err := objects.List(s.client, container, objects.ListOpts{Prefix: prefix}).AllPages(ctx)
	var objs []objects.Object
	if err == nil {
		objs, err = objects.ExtractInfo(pages)
	}
	if err != nil {
		return nil, fmt.Errorf("swift store: list %s/%s: %w", container, prefix, swiftError(err))
	}
	infos := make([]ObjectInfo, 0, len(objs))
	for _, o := range objs {
		infos = append(infos, ObjectInfo{Key: o.Name, Size: o.Bytes, ETag: o.Hash})
	}
	// Swift sorts by UTF-8 bytes already, as strings.Compare does.
	slices.SortFunc(infos, func(a, b ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	return infos, nil
}

// Delete removes the object (of a static large object: the manifest only).
func (s *Swift) Delete(ctx context.Context, container, key string) error {
	if err := checkNames(container, key); err != nil {
		return fmt.Errorf("swift store: delete %s/%s: %w", container, key, err)
	}
	_, err := objects.Delete(ctx, s.client, container, key, nil).Extract()
	if err != nil && !gophercloud.ResponseCodeIs(err, http.StatusNotFound) {
		return fmt.Errorf("swift store: delete %s/%s: %w", container, key, err)
	}
	return nil
}

// GrantPut makes a PUT TempURL for the object. Swift does not bind the
// size; the holder still has to send Content-Length (see Grant).
func (s *Swift) GrantPut(ctx context.Context, container, key string, size int64, ttl time.Duration) (Grant, error) {
	if size < 0 {
		return Grant{}, fmt.Errorf("swift store: grant put %s/%s: size %d < 0", container, key, size)
	}
	g, err := s.grant(ctx, objects.PUT, container, key, ttl)
	if err != nil {
		return Grant{}, fmt.Errorf("swift store: grant put %s/%s: %w", container, key, err)
	}
	return g, nil
}

// GrantGet makes a GET TempURL for the object.
func (s *Swift) GrantGet(ctx context.Context, container, key string, ttl time.Duration) (Grant, error) {
	g, err := s.grant(ctx, objects.GET, container, key, ttl)
	if err != nil {
		return Grant{}, fmt.Errorf("swift store: grant get %s/%s: %w", container, key, err)
	}
	return g, nil
}

func (s *Swift) grant(ctx context.Context, method objects.HTTPMethod, container, key string, ttl time.Duration) (Grant, error) {
	if err := checkNames(container, key); err != nil {
		return Grant{}, err
	}
	if ttl <= 0 {
		return Grant{}, fmt.Errorf("ttl %v is not positive", ttl)
	}
	tk, err := s.tempURLKey(ctx, container)
	if err != nil {
		return Grant{}, err
	}
	now := time.Now().Truncate(time.Second)
	secs := int((ttl + time.Second - 1) / time.Second)
	u, err := objects.CreateTempURL(ctx, s.client, container, key, objects.CreateTempURLOpts{
		Method:     method,
		TTL:        secs,
		Timestamp:  now,
		TempURLKey: tk,
		Digest:     "sha256",
	})
	if err != nil {
		return Grant{}, err
	}
	return Grant{Method: string(method), URL: u, Header: make(http.Header), Expires: now.Add(time.Duration(secs) * time.Second)}, nil
}

// sloSegment is one entry of a static large object's manifest. A nil ETag
// is not checked.
type sloSegment struct {
	Path      string  `json:"path"`
	ETag      *string `json:"etag"`
	SizeBytes int64   `json:"size_bytes"`
}

// PutLargeObject writes a static large object manifest at key whose
// content is segments (objects of the same container) in order. More
// segments than one manifest may list go into sub-manifests
// key.part-NNNNNN (manifests of up to maxManifestSegments segments each),
// which the manifest at key lists.
func (s *Swift) PutLargeObject(ctx context.Context, container, key string, segments []ObjectInfo) error {
	if err := s.putLargeObject(ctx, container, key, segments); err != nil {
		return fmt.Errorf("swift store: put large object %s/%s: %w", container, key, err)
	}
	return nil
}

func (s *Swift) putLargeObject(ctx context.Context, container, key string, segments []ObjectInfo) error {
	if err := checkNames(container, key); err != nil {
		return err
	}
	if len(segments) == 0 {
		return errors.New("no segments")
	}
	for _, seg := range segments {
		if err := checkKey(seg.Key); err != nil {
			return err
		}
		if seg.Size <= 0 {
			return fmt.Errorf("segment %s has size %d (Swift needs at least 1 byte)", seg.Key, seg.Size)
		}
	}
	max := s.maxManifestSegments
	if len(segments) <= max {
		return s.putManifest(ctx, container, key, segments)
	}
	if len(segments) > max*max {
		return fmt.Errorf("%d segments are more than %d manifests of %d", len(segments), max, max)
	}
	var parts []ObjectInfo
	for i := 0; i*max < len(segments); i++ {
		chunk := segments[i*max : min((i+1)*max, len(segments))]
		part := ObjectInfo{Key: fmt.Sprintf("%s.part-%06d", key, i)}
		for _, seg := range chunk {
			part.Size += seg.Size
		}
		if err := s.putManifest(ctx, container, part.Key, chunk); err != nil {
			return err
		}
		parts = append(parts, part)
	}
	return s.putManifest(ctx, container, key, parts)
}

func (s *Swift) putManifest(ctx context.Context, container, key string, segments []ObjectInfo) error {
	manifest := make([]sloSegment, len(segments))
	for i, seg := range segments {
		manifest[i] = sloSegment{Path: "/" + container + "/" + seg.Key, SizeBytes: seg.Size}
		if seg.ETag != "" {
			manifest[i].ETag = &seg.ETag
		}
	}
	body, err := json.Marshal(manifest)
	if err != nil {
		return err
	}
	_, err = objects.Create(ctx, s.client, container, key, objects.CreateOpts{
		Content:           bytes.NewReader(body),
		MultipartManifest: "put",
		NoETag:            true,
		ContentType:       "application/octet-stream",
	}).Extract()
	if err != nil {
		return fmt.Errorf("manifest %s: %w", key, swiftError(err))
	}
	return nil
}

// DeleteLargeObject deletes the manifest at key (and the sub-manifests
// PutLargeObject may have written), never the segments. It deliberately
// avoids ?multipart-manifest=delete, which would delete the segments too
// (and which gophercloud v2.15 reports as failed on success: Swift answers
// 200 with a report, gophercloud expects 202/204).
func (s *Swift) DeleteLargeObject(ctx context.Context, container, key string) error {
	if err := s.Delete(ctx, container, key); err != nil {
		return err
	}
	parts, err := s.List(ctx, container, key+".part-")
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := s.Delete(ctx, container, p.Key); err != nil {
			return err
		}
	}
	return nil
}
