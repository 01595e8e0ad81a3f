package objectstore_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// One MinIO, one Swift and one Keystone for the whole package (started on
// first use), stopped when the tests end.
func TestMain(m *testing.M) {
	code := m.Run()
	objectstoretest.Shutdown()
	keystonetest.Shutdown()
	os.Exit(code)
}

// backend opens a store with a fresh container of its own.
type backend struct {
	name string
	open func(t testing.TB) (objectstore.Store, string)
}

var backends = []backend{
	{"file", openFile},
	{"s3", func(t testing.TB) (objectstore.Store, string) { return openServer(t, objectstoretest.MinIO(t)) }},
	{"swift", func(t testing.TB) (objectstore.Store, string) { return openServer(t, objectstoretest.Swift(t)) }},
}

// forEach runs f as a parallel subtest per backend.
func forEach(t *testing.T, f func(t *testing.T, st objectstore.Store, container string)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			st, c := b.open(t)
			f(t, st, c)
		})
	}
}

// openFile opens a file store through objectstore.Open, with its grant
// handler mounted on a real HTTP server the way the agent API mounts it.
func openFile(t testing.TB) (objectstore.Store, string) {
	t.Helper()
	cfg := objectstore.Config{Name: "file", Kind: "file", Container: "backups", File: objectstore.FileConfig{Dir: t.TempDir()}}
	st, err := objectstore.Open(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	f := st.(*objectstore.File)
	mux := http.NewServeMux()
	mux.Handle(objectstore.ObjectsPath, f.Handler())
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	if err := f.SetBaseURL(srv.URL); err != nil {
		t.Fatal(err)
	}
	return f, cfg.Container
}

func openServer(t testing.TB, srv *objectstoretest.Server) (objectstore.Store, string) {
	t.Helper()
	cfg := srv.NewContainer("t")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := objectstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st, cfg.Container
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

func randomName(prefix string) string { return prefix + "-" + hex.EncodeToString(randomBytes(4)) }

func read(t testing.TB, st objectstore.Store, container, key string) string {
	t.Helper()
	rc, err := st.Get(context.Background(), container, key)
	if err != nil {
		t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("read %s: %v", key, err)
	}
	return string(b)
}

func keys(infos []objectstore.ObjectInfo) []string {
	var k []string
	for _, i := range infos {
		k = append(k, i.Key)
	}
	return k
}

// nonSeeker hides a reader's other methods (Seek, WriteTo, ...).
type nonSeeker struct{ io.Reader }

func TestObjects(t *testing.T) {
	t.Parallel()
	forEach(t, func(t *testing.T, st objectstore.Store, c string) {
		ctx := t.Context()
		put := func(key, data string, size int64) {
			t.Helper()
			if err := st.Put(ctx, c, key, nonSeeker{strings.NewReader(data)}, size); err != nil {
				t.Fatalf("put %s: %v", key, err)
			}
		}
		put("b/2", "two", 3)
		put("a-c", "x", 1)
		put("a/b", "yy", 2)
		put("b/1", "one", 3)
		put("b/3", "three", -1) // unknown size: streamed

		if got := read(t, st, c, "b/1"); got != "one" {
			t.Errorf("get b/1 = %q", got)
		}
		if got := read(t, st, c, "b/3"); got != "three" {
			t.Errorf("get b/3 = %q", got)
		}
		info, err := st.Stat(ctx, c, "b/3")
		if err != nil || info.Key != "b/3" || info.Size != 5 {
			t.Errorf("stat b/3 = %+v, %v", info, err)
		}
		put("b/1", "uno!", 4) // overwrite
		if got := read(t, st, c, "b/1"); got != "uno!" {
			t.Errorf("get b/1 after overwrite = %q", got)
		}

		// Listings are by key as strings ("a-c" < "a/b"), whatever the
		// backend's own order.
		list := func(prefix string) []objectstore.ObjectInfo {
			t.Helper()
			infos, err := st.List(ctx, c, prefix)
			if err != nil {
				t.Fatalf("list %q: %v", prefix, err)
			}
			return infos
		}
		if got, want := keys(list("")), []string{"a-c", "a/b", "b/1", "b/2", "b/3"}; !slices.Equal(got, want) {
			t.Errorf("list all = %v, want %v", got, want)
		}
		if got := list("b/"); !slices.Equal(keys(got), []string{"b/1", "b/2", "b/3"}) || got[0].Size != 4 || got[2].Size != 5 {
			t.Errorf("list b/ = %+v", got)
		}
		if got := keys(list("a")); !slices.Equal(got, []string{"a-c", "a/b"}) {
			t.Errorf("list a = %v", got)
		}
		if got := list("zzz/"); len(got) != 0 {
			t.Errorf("list zzz/ = %v", got)
		}

		// Delete; deleting again (a missing object) is no error.
		for range 2 {
			if err := st.Delete(ctx, c, "b/2"); err != nil {
				t.Fatalf("delete b/2: %v", err)
			}
		}
		if _, err := st.Get(ctx, c, "b/2"); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("get deleted object: %v, want ErrNotFound", err)
		}
		if _, err := st.Stat(ctx, c, "b/2"); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("stat deleted object: %v, want ErrNotFound", err)
		}
		if got := keys(list("b/")); !slices.Equal(got, []string{"b/1", "b/3"}) {
			t.Errorf("list b/ after delete = %v", got)
		}

		// A missing container.
		missing := randomName("missing")
		if _, err := st.Get(ctx, missing, "x"); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("get from a missing container: %v, want ErrNotFound", err)
		}
		if _, err := st.Stat(ctx, missing, "x"); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("stat in a missing container: %v, want ErrNotFound", err)
		}
		if _, err := st.List(ctx, missing, ""); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("list a missing container: %v, want ErrNotFound", err)
		}
		if err := st.Put(ctx, missing, "x", strings.NewReader("x"), 1); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("put into a missing container: %v, want ErrNotFound", err)
		}
		if err := st.Delete(ctx, missing, "x"); err != nil {
			t.Errorf("delete from a missing container: %v", err)
		}

		// A reader shorter or longer than the announced size stores nothing.
		for _, tc := range []struct {
			key, data string
			size      int64
		}{{"short", "abc", 5}, {"long", "abcdef", 3}} {
			if err := st.Put(ctx, c, tc.key, nonSeeker{strings.NewReader(tc.data)}, tc.size); err == nil {
				t.Errorf("put %d bytes as %d succeeded", len(tc.data), tc.size)
			}
			if _, err := st.Stat(ctx, c, tc.key); !errors.Is(err, objectstore.ErrNotFound) {
				t.Errorf("after a put of the wrong size, stat %s: %v, want ErrNotFound", tc.key, err)
			}
		}

		// Keys that could leave the container are refused everywhere.
		for _, key := range []string{"../x", "a/../../x", "/abs", "a//b", "a/./b", `a\b`, "a\x00b", "a\nb", "", "a/"} {
			if err := st.Put(ctx, c, key, strings.NewReader("x"), 1); err == nil || errors.Is(err, objectstore.ErrNotFound) {
				t.Errorf("put %q: %v, want a validation error", key, err)
			}
		}
		if err := st.EnsureContainer(ctx, "../x"); err == nil {
			t.Error(`EnsureContainer("../x") succeeded`)
		}
		// EnsureContainer is idempotent.
		if err := st.EnsureContainer(ctx, c); err != nil {
			t.Errorf("EnsureContainer of an existing container: %v", err)
		}
	})
}

// do sends one request the way the agent does: a plain net/http client,
// Content-Length set from the body.
func do(t testing.TB, method, url string, header http.Header, body []byte) (int, []byte) {
	t.Helper()
	var r io.Reader
	if body != nil {
		r = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, url, r)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, url, err)
	}
	return resp.StatusCode, b
}

func ok(status int) bool { return status >= 200 && status < 300 }

func TestGrantRoundTrip(t *testing.T) {
	t.Parallel()
	data := randomBytes(20 << 20)
	want := sha256.Sum256(data)
	forEach(t, func(t *testing.T, st objectstore.Store, c string) {
		ctx := t.Context()
		key := "backups/0001/segment-000000"
		before := time.Now()
		g, err := st.GrantPut(ctx, c, key, int64(len(data)), time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if g.Method != http.MethodPut || g.Expires.Before(before.Add(time.Minute-time.Second)) || g.Expires.After(time.Now().Add(time.Minute+time.Second)) {
			t.Errorf("grant = %s, expires %v (now %v)", g.Method, g.Expires, before)
		}
		if status, body := do(t, g.Method, g.URL, g.Header, data); !ok(status) {
			t.Fatalf("PUT through the grant: %d %s", status, body)
		}
		info, err := st.Stat(ctx, c, key)
		if err != nil || info.Size != int64(len(data)) {
			t.Fatalf("stat after the grant PUT: %+v, %v", info, err)
		}
		gg, err := st.GrantGet(ctx, c, key, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		status, body := do(t, gg.Method, gg.URL, gg.Header, nil)
		if !ok(status) {
			t.Fatalf("GET through the grant: %d", status)
		}
		if got := sha256.Sum256(body); got != want {
			t.Errorf("GET through the grant returned %d bytes with SHA-256 %x, want %d bytes %x", len(body), got, len(data), want)
		}
	})
}

func TestGrantExpired(t *testing.T) {
	t.Parallel()
	forEach(t, func(t *testing.T, st objectstore.Store, c string) {
		ctx := t.Context()
		if err := st.Put(ctx, c, "x", strings.NewReader("data"), 4); err != nil {
			t.Fatal(err)
		}
		gg, err := st.GrantGet(ctx, c, "x", time.Second)
		if err != nil {
			t.Fatal(err)
		}
		gp, err := st.GrantPut(ctx, c, "y", 4, time.Second)
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Until(gp.Expires.Add(1500 * time.Millisecond)))
		if status, _ := do(t, gg.Method, gg.URL, gg.Header, nil); ok(status) {
			t.Errorf("GET with an expired grant: %d", status)
		}
		if status, _ := do(t, gp.Method, gp.URL, gp.Header, []byte("data")); ok(status) {
			t.Errorf("PUT with an expired grant: %d", status)
		}
		if _, err := st.Stat(ctx, c, "y"); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("stat y after the refused PUT: %v, want ErrNotFound", err)
		}
		if _, err := st.GrantGet(ctx, c, "x", 0); err == nil {
			t.Error("a grant with ttl 0 was issued")
		}
	})
}

func TestGrantScope(t *testing.T) {
	t.Parallel()
	forEach(t, func(t *testing.T, st objectstore.Store, c string) {
		ctx := t.Context()
		g, err := st.GrantPut(ctx, c, "scope-a", 5, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(g.URL, "scope-a") {
			t.Fatalf("grant URL %s does not name the key", g.URL)
		}
		// The same grant, pointed at another key.
		other := strings.Replace(g.URL, "scope-a", "scope-b", 1)
		if status, _ := do(t, g.Method, other, g.Header, []byte("hello")); ok(status) {
			t.Errorf("PUT to scope-b with scope-a's grant: %d", status)
		}
		if _, err := st.Stat(ctx, c, "scope-b"); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("stat scope-b: %v, want ErrNotFound", err)
		}
		// ... into another container.
		otherC := strings.Replace(g.URL, "/"+c+"/", "/"+c+"x/", 1)
		if status, _ := do(t, g.Method, otherC, g.Header, []byte("hello")); ok(status) {
			t.Errorf("PUT to another container with the grant: %d", status)
		}
		// The grant itself works, for PUT only.
		if status, body := do(t, g.Method, g.URL, g.Header, []byte("hello")); !ok(status) {
			t.Fatalf("PUT with the grant: %d %s", status, body)
		}
		if status, _ := do(t, http.MethodGet, g.URL, nil, nil); ok(status) {
			t.Errorf("GET with a PUT grant: %d", status)
		}
		// A GET grant does not allow a PUT.
		gg, err := st.GrantGet(ctx, c, "scope-a", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if status, _ := do(t, http.MethodPut, gg.URL, nil, []byte("bye!!")); ok(status) {
			t.Errorf("PUT with a GET grant: %d", status)
		}
		if got := read(t, st, c, "scope-a"); got != "hello" {
			t.Errorf("scope-a = %q, want hello", got)
		}
	})
}

// A PUT grant is for exactly the granted size on the file store and S3
// (the signature covers Content-Length). Swift's TempURLs cannot bind it.
func TestGrantPutSize(t *testing.T) {
	t.Parallel()
	forEach(t, func(t *testing.T, st objectstore.Store, c string) {
		if st.Kind() == "swift" {
			t.Skip("Swift TempURLs do not bind the size (documented on objectstore.Swift)")
		}
		ctx := t.Context()
		g, err := st.GrantPut(ctx, c, "sized", 5, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		for _, body := range []string{"toolong", "shrt"} {
			status, msg := do(t, g.Method, g.URL, g.Header, []byte(body))
			if ok(status) {
				t.Errorf("PUT of %d bytes with a grant for 5: %d", len(body), status)
			}
			t.Logf("PUT of %d bytes with a grant for 5: %d %.120s", len(body), status, msg)
		}
		// Without Content-Length (chunked).
		req, _ := http.NewRequest(g.Method, g.URL, nonSeeker{strings.NewReader("12345")})
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if ok(resp.StatusCode) {
			t.Errorf("chunked PUT with a grant: %d", resp.StatusCode)
		}
		t.Logf("chunked PUT with a grant: %d", resp.StatusCode)
		if _, err := st.Stat(ctx, c, "sized"); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("stat after refused PUTs: %v, want ErrNotFound", err)
		}
		if status, _ := do(t, g.Method, g.URL, g.Header, []byte("12345")); !ok(status) {
			t.Errorf("PUT of the granted size: %d", status)
		}
	})
}
