package objectstore

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// File is the embedded default store: a directory per container under a
// root directory, one file per object (the key's slashes are
// subdirectories). Writes go to a temporary file that is synced and then
// renamed into place, so a reader sees either nothing or the whole object.
//
// Grants are URLs of the agent API (BaseURL + ObjectsPath) signed with
// HMAC-SHA256; Handler serves them. The signing key is 32 random bytes in
// root/.grant-key (0600), created by the first process that needs it, so
// every process sharing the directory (API and worker replicas on one
// host) signs and verifies alike.
type File struct {
	root string
	tmp  string // root/.tmp: same file system as the objects, so rename is atomic

	keyMu sync.Mutex
	key   []byte // loaded (or created) on first use

	mu      sync.RWMutex
	baseURL string
}

var (
	_ Store       = (*File)(nil)
	_ GrantServer = (*File)(nil)
)

// GrantServer is implemented by stores whose grants the control plane
// serves itself (the file store): mount Handler at ObjectsPath on the agent
// API and set the base URL the guests reach that API at.
type GrantServer interface {
	Handler() http.Handler
	SetBaseURL(base string) error
}

const (
	fileKeyName = ".grant-key"
	fileTmpName = ".tmp"
)

// NewFile opens (creating it if needed) the store rooted at root. baseURL
// is the agent API's base URL as guests reach it (e.g.
// https://10.0.0.1:8780); it may be empty and set later with SetBaseURL,
// but grants fail until it is set.
func NewFile(root, baseURL string) (*File, error) {
	if root == "" {
		return nil, errors.New("file store: no directory configured")
	}
	root, err := filepath.Abs(root)
	if err != nil {
		return nil, fmt.Errorf("file store %s: %w", root, err)
	}
	f := &File{root: root, tmp: filepath.Join(root, fileTmpName)}
	if err := os.MkdirAll(f.tmp, 0o700); err != nil {
		return nil, fmt.Errorf("file store: create %s: %w", f.tmp, err)
	}
	if err := f.SetBaseURL(baseURL); err != nil {
		return nil, err
	}
	f.removeStaleTemps(24 * time.Hour)
	return f, nil
}

// removeStaleTemps deletes temporary files that uploads cut short by a
// crash left behind. Only old ones: another process sharing the directory
// may be writing the young ones right now.
func (f *File) removeStaleTemps(age time.Duration) {
	entries, err := os.ReadDir(f.tmp)
	if err != nil {
		return
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && time.Since(info.ModTime()) > age {
			os.Remove(filepath.Join(f.tmp, e.Name()))
		}
	}
}

// Kind is "file".
func (f *File) Kind() string { return "file" }

// Root is the store's directory.
func (f *File) Root() string { return f.root }

// SetBaseURL sets the URL that grants are issued under (the agent API, as
// the guests reach it); the agent API's address is often known only once
// its listener is bound.
func (f *File) SetBaseURL(base string) error {
	if base != "" {
		var err error
		if base, err = checkBaseURL(base); err != nil {
			return fmt.Errorf("file store: base URL: %w", err)
		}
	}
	f.mu.Lock()
	f.baseURL = base
	f.mu.Unlock()
	return nil
}

func (f *File) base() string {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.baseURL
}

// containerDir is the directory of container (not checked for existence).
func (f *File) containerDir(container string) (string, error) {
	if err := checkContainer(container); err != nil {
		return "", err
	}
	return filepath.Join(f.root, container), nil
}

// paths returns the container's directory and the object's file. checkNames
// already rules out every way out of the container; the prefix test is a
// second line of defence.
func (f *File) paths(container, key string) (cdir, path string, err error) {
	if err := checkNames(container, key); err != nil {
		return "", "", err
	}
	cdir = filepath.Join(f.root, container)
	path = filepath.Join(cdir, filepath.FromSlash(key))
	if !strings.HasPrefix(path, cdir+string(filepath.Separator)) {
		return "", "", fmt.Errorf("object key %q leaves its container", key)
	}
	return cdir, path, nil
}

// EnsureContainer creates the container's directory.
func (f *File) EnsureContainer(ctx context.Context, container string) error {
	cdir, err := f.containerDir(container)
	if err != nil {
		return fmt.Errorf("file store: ensure container: %w", err)
	}
	if err := os.MkdirAll(cdir, 0o700); err != nil {
		return fmt.Errorf("file store: create container %s: %w", container, err)
	}
	return nil
}

// checkContainerExists returns ErrNotFound (wrapped) when the container's
// directory is missing.
func checkContainerExists(cdir, container string) error {
	st, err := os.Stat(cdir)
	if errors.Is(err, fs.ErrNotExist) || (err == nil && !st.IsDir()) {
		return fmt.Errorf("container %s: %w", container, ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("container %s: %w", container, err)
	}
	return nil
}

// Put writes the object atomically. With size >= 0 the reader must hold
// exactly size bytes; otherwise nothing is stored.
func (f *File) Put(ctx context.Context, container, key string, r io.Reader, size int64) error {
	if err := f.put(ctx, container, key, r, size); err != nil {
		return fmt.Errorf("file store: put %s/%s: %w", container, key, err)
	}
	return nil
}

func (f *File) put(ctx context.Context, container, key string, r io.Reader, size int64) error {
	cdir, path, err := f.paths(container, key)
	if err != nil {
		return err
	}
	if err := checkContainerExists(cdir, container); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(f.tmp, "put-*")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if size >= 0 {
		r = newExactReader(r, size)
	}
	if _, err := io.Copy(tmp, ctxReader{ctx, r}); err != nil {
		return err
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	// A concurrent Delete prunes empty directories: if it removes ours
	// between MkdirAll and Rename, make it again.
	for attempt := 0; ; attempt++ {
		if err = os.MkdirAll(filepath.Dir(path), 0o700); err == nil {
			err = os.Rename(tmp.Name(), path)
		}
		if err == nil || attempt == 4 || !errors.Is(err, fs.ErrNotExist) {
			break
		}
	}
	if err != nil {
		return err
	}
	done = true
	return syncDir(filepath.Dir(path))
}

// ctxReader stops a copy when ctx ends.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Get opens the object's file.
func (f *File) Get(ctx context.Context, container, key string) (io.ReadCloser, error) {
	file, _, err := f.open(container, key)
	if err != nil {
		return nil, fmt.Errorf("file store: get %s/%s: %w", container, key, err)
	}
	return file, nil
}

// open opens a regular file of an object.
func (f *File) open(container, key string) (*os.File, fs.FileInfo, error) {
	cdir, path, err := f.paths(container, key)
	if err != nil {
		return nil, nil, err
	}
	file, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			if cerr := checkContainerExists(cdir, container); cerr != nil {
				return nil, nil, cerr
			}
			return nil, nil, ErrNotFound
		}
		return nil, nil, err
	}
	st, err := file.Stat()
	if err != nil {
		file.Close()
		return nil, nil, err
	}
	if !st.Mode().IsRegular() {
		file.Close()
		return nil, nil, ErrNotFound
	}
	return file, st, nil
}

// Stat describes the object.
func (f *File) Stat(ctx context.Context, container, key string) (ObjectInfo, error) {
	cdir, path, err := f.paths(container, key)
	if err == nil {
		var st fs.FileInfo
		if st, err = os.Stat(path); err == nil && st.Mode().IsRegular() {
			return ObjectInfo{Key: key, Size: st.Size()}, nil
		}
		if err == nil || errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) {
			err = checkContainerExists(cdir, container)
			if err == nil {
				err = ErrNotFound
			}
		}
	}
	return ObjectInfo{}, fmt.Errorf("file store: stat %s/%s: %w", container, key, err)
}

// List walks the directory of the prefix's last complete segment.
func (f *File) List(ctx context.Context, container, prefix string) ([]ObjectInfo, error) {
	infos, err := f.list(ctx, container, prefix)
	if err != nil {
		return nil, fmt.Errorf("file store: list %s/%s: %w", container, prefix, err)
	}
	return infos, nil
}

func (f *File) list(ctx context.Context, container, prefix string) ([]ObjectInfo, error) {
	cdir, err := f.containerDir(container)
	if err != nil {
		return nil, err
	}
	if err := checkPrefix(prefix); err != nil {
		return nil, err
	}
	if err := checkContainerExists(cdir, container); err != nil {
		return nil, err
	}
	start := cdir
	if i := strings.LastIndex(prefix, "/"); i > 0 {
		start = filepath.Join(cdir, filepath.FromSlash(prefix[:i]))
	}
	var infos []ObjectInfo
	err = filepath.WalkDir(start, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil // the prefix's directory does not exist, or a concurrent Delete
			}
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(cdir, path)
		if err != nil {
			return err
		}
		key := filepath.ToSlash(rel)
		if !strings.HasPrefix(key, prefix) {
			return nil
		}
		st, err := d.Info()
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		if err != nil {
			return err
		}
		infos = append(infos, ObjectInfo{Key: key, Size: st.Size()})
		return nil
	})
	if err != nil {
		return nil, err
	}
	// WalkDir's order is by path component, not by key: "a/b" sorts before
	// "a-c" there but after it as a string.
	slices.SortFunc(infos, func(a, b ObjectInfo) int { return strings.Compare(a.Key, b.Key) })
	return infos, nil
}

// Delete removes the object and then the directories it leaves empty.
func (f *File) Delete(ctx context.Context, container, key string) error {
	cdir, path, err := f.paths(container, key)
	if err != nil {
		return fmt.Errorf("file store: delete %s/%s: %w", container, key, err)
	}
	st, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR) || (err == nil && st.IsDir()) {
		return nil
	}
	if err == nil {
		err = os.Remove(path)
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("file store: delete %s/%s: %w", container, key, err)
	}
	for dir := filepath.Dir(path); dir != cdir && strings.HasPrefix(dir, cdir); dir = filepath.Dir(dir) {
		if os.Remove(dir) != nil {
			break // not empty (or already gone): stop pruning
		}
	}
	return nil
}

// signingKey loads root/.grant-key, creating it on first use. Creation
// links a fully written temporary file into place, so concurrent processes
// never see a partial key and all end up with the first one written.
func (f *File) signingKey() ([]byte, error) {
	f.keyMu.Lock()
	defer f.keyMu.Unlock()
	if f.key == nil {
		key, err := f.loadKey() // a failure is retried on the next call
		if err != nil {
			return nil, err
		}
		f.key = key
	}
	return f.key, nil
}

func (f *File) loadKey() ([]byte, error) {
	path := filepath.Join(f.root, fileKeyName)
	for attempt := 0; attempt < 2; attempt++ {
		b, err := os.ReadFile(path)
		if err == nil {
			if len(b) != 32 {
				return nil, fmt.Errorf("file store: %s holds %d bytes, want 32", path, len(b))
			}
			return b, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("file store: read grant key: %w", err)
		}
		key := make([]byte, 32)
		rand.Read(key)
		tmp, err := os.CreateTemp(f.tmp, "key-*")
		if err != nil {
			return nil, fmt.Errorf("file store: create grant key: %w", err)
		}
		_, err = tmp.Write(key)
		if err == nil {
			err = tmp.Sync()
		}
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Link(tmp.Name(), path) // fails if another process won
		}
		os.Remove(tmp.Name())
		if err == nil {
			if err := syncDir(f.root); err != nil {
				return nil, fmt.Errorf("file store: create grant key: %w", err)
			}
			return key, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("file store: create grant key: %w", err)
		}
	}
	return nil, errors.New("file store: grant key keeps disappearing")
}

// GrantPut signs a PUT of exactly size bytes to key.
func (f *File) GrantPut(ctx context.Context, container, key string, size int64, ttl time.Duration) (Grant, error) {
	if size < 0 {
		return Grant{}, fmt.Errorf("file store: grant put %s/%s: size %d < 0", container, key, size)
	}
	g, err := f.grant("PUT", container, key, size, ttl)
	if err != nil {
		return Grant{}, fmt.Errorf("file store: grant put %s/%s: %w", container, key, err)
	}
	return g, nil
}

// GrantGet signs a GET of key.
func (f *File) GrantGet(ctx context.Context, container, key string, ttl time.Duration) (Grant, error) {
	g, err := f.grant("GET", container, key, -1, ttl)
	if err != nil {
		return Grant{}, fmt.Errorf("file store: grant get %s/%s: %w", container, key, err)
	}
	return g, nil
}

func (f *File) grant(method, container, key string, size int64, ttl time.Duration) (Grant, error) {
	if err := checkNames(container, key); err != nil {
		return Grant{}, err
	}
	if ttl <= 0 {
		return Grant{}, fmt.Errorf("ttl %v is not positive", ttl)
	}
	base := f.base()
	if base == "" {
		return Grant{}, errors.New("no base URL configured (the agent API's URL)")
	}
	sk, err := f.signingKey()
	if err != nil {
		return Grant{}, err
	}
	// Rounded up to whole seconds: a grant never ends before ttl.
	expires := time.Now().Add(ttl + time.Second - 1).Truncate(time.Second)
	sig := fileSignature(sk, method, container, key, expires.Unix(), size)
	u := base + ObjectsPath + escapePath(container) + "/" + escapePath(key) +
		fmt.Sprintf("?expires=%d&sig=%s", expires.Unix(), sig)
	return Grant{Method: method, URL: u, Header: make(map[string][]string), Expires: expires}, nil
}

// escapePath escapes each segment of a slash-separated path.
func escapePath(p string) string {
	segs := strings.Split(p, "/")
	for i, s := range segs {
		segs[i] = url.PathEscape(s)
	}
	return strings.Join(segs, "/")
}
