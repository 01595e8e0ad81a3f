package objectstore_test

import (
	"bufio"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
)

// newFileServer is a file store whose handler is the whole HTTP server
// (no ServeMux in front to clean paths: the handler must hold on its own).
func newFileServer(t *testing.T, root string) (*objectstore.File, *httptest.Server) {
	t.Helper()
	f, err := objectstore.NewFile(root, "")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(f.Handler())
	t.Cleanup(srv.Close)
	if err := f.SetBaseURL(srv.URL + "/"); err != nil {
		t.Fatal(err)
	}
	if err := f.EnsureContainer(t.Context(), "c"); err != nil {
		t.Fatal(err)
	}
	return f, srv
}

// rawRequest sends a request line exactly as given (net/http would clean
// or escape some of these paths) and returns the status code.
func rawRequest(t *testing.T, srv *httptest.Server, method, target string, body string) int {
	t.Helper()
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", method, target, len(body), body)
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("%s %s: %v", method, target, err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func TestFileHandlerRefuses(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	f, srv := newFileServer(t, root)
	ctx := t.Context()
	// Something worth stealing outside the container, and a good object.
	if err := os.WriteFile(filepath.Join(root, "secret"), []byte("secret"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := f.Put(ctx, "c", "obj", strings.NewReader("hello"), 5); err != nil {
		t.Fatal(err)
	}
	g, err := f.GrantGet(ctx, "c", "obj", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.URL, srv.URL+objectstore.ObjectsPath+"c/obj?expires=") || strings.Contains(g.URL, "//agent") {
		t.Errorf("grant URL %s is not under %s", g.URL, srv.URL+objectstore.ObjectsPath)
	}
	u, _ := url.Parse(g.URL)
	query := "?" + u.RawQuery
	if status, body := do(t, "GET", g.URL, nil, nil); status != 200 || string(body) != "hello" {
		t.Fatalf("GET with a good grant: %d %q", status, body)
	}

	// Paths that try to leave the container are refused even with a valid
	// signature for exactly that path (forged here with the store's key;
	// GrantGet/GrantPut refuse to sign them).
	sk, err := os.ReadFile(filepath.Join(root, ".grant-key"))
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Minute).Unix()
	forge := func(method, container, key string, size int64) string {
		m := hmac.New(sha256.New, sk)
		fmt.Fprintf(m, "%s\n%s\n%s\n%d\n", method, container, key, exp)
		if method == "PUT" {
			fmt.Fprintf(m, "%d", size)
		}
		return fmt.Sprintf("?expires=%d&sig=%x", exp, m.Sum(nil))
	}
	// The signature format is what the file store's grants carry: a forged
	// one for a valid key works.
	if status := rawRequest(t, srv, "GET", "/agent/v1/objects/c/obj"+forge("GET", "c", "obj", -1), ""); status != 200 {
		t.Fatalf("GET with a signature computed from the documented format: %d", status)
	}
	for _, tc := range []struct{ target, container, key string }{
		{"/agent/v1/objects/c/../secret", "c", "../secret"},
		{"/agent/v1/objects/c/%2e%2e/secret", "c", "../secret"},
		{"/agent/v1/objects/c/..%2fsecret", "c", "../secret"},
		{"/agent/v1/objects/c/a/../../secret", "c", "a/../../secret"},
		{"/agent/v1/objects/../secret", "..", "secret"},
		{"/agent/v1/objects/c//etc/passwd", "c", "/etc/passwd"},
		{"/agent/v1/objects/c/%2fetc/passwd", "c", "/etc/passwd"},
		{"/agent/v1/objects/c/a%5c..%5c..%5csecret", "c", `a\..\..\secret`},
		{"/agent/v1/objects/c/a%00b", "c", "a\x00b"},
		{"/agent/v1/objects/.tmp/x", ".tmp", "x"},
		{"/agent/v1/objects/c/", "c", ""},
		{"/agent/v1/objects/c", "c", ""},
	} {
		for _, method := range []string{"GET", "PUT"} {
			for _, q := range []string{query, forge(method, tc.container, tc.key, 1)} {
				status := rawRequest(t, srv, method, tc.target+q, "x")
				if status != http.StatusBadRequest && status != http.StatusForbidden && status != http.StatusNotFound {
					t.Errorf("%s %s: %d, want 400, 403 or 404", method, tc.target, status)
				}
				if q != query && status == http.StatusForbidden {
					t.Errorf("%s %s with a valid signature: 403, want the path refused (400/404)", method, tc.target)
				}
			}
		}
	}
	if b, _ := os.ReadFile(filepath.Join(root, "secret")); string(b) != "secret" {
		t.Errorf("the file outside the container changed: %q", b)
	}

	// Bad, missing, tampered and expired signatures: 403.
	expired := url.Values{"expires": {fmt.Sprint(time.Now().Add(-time.Minute).Unix())}, "sig": {u.Query().Get("sig")}}
	for name, q := range map[string]string{
		"no signature":       "?expires=" + u.Query().Get("expires"),
		"no expiry":          "?sig=" + u.Query().Get("sig"),
		"malformed sig":      "?expires=" + u.Query().Get("expires") + "&sig=zz",
		"other sig":          "?expires=" + u.Query().Get("expires") + "&sig=" + strings.Repeat("ab", 32),
		"longer expiry":      "?expires=" + fmt.Sprint(time.Now().Add(time.Hour).Unix()) + "&sig=" + u.Query().Get("sig"),
		"expired, same sig":  "?" + expired.Encode(),
		"good sig, PUT only": query, // method is part of the signature: PUT below
	} {
		method := "GET"
		if name == "good sig, PUT only" {
			method = "PUT"
		}
		if status := rawRequest(t, srv, method, "/agent/v1/objects/c/obj"+q, "x"); status != http.StatusForbidden {
			t.Errorf("%s: %s → %d, want 403", name, method, status)
		}
	}
	// An expired grant, properly signed.
	short, err := f.GrantGet(ctx, "c", "obj", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(short.Expires.Add(1100 * time.Millisecond)))
	if status, body := do(t, "GET", short.URL, nil, nil); status != http.StatusForbidden || !strings.Contains(string(body), "expired") {
		t.Errorf("expired grant: %d %s", status, body)
	}

	// Other methods: 405.
	for _, method := range []string{"POST", "DELETE", "HEAD", "PATCH"} {
		if status := rawRequest(t, srv, method, "/agent/v1/objects/c/obj"+query, ""); status != http.StatusMethodNotAllowed {
			t.Errorf("%s: %d, want 405", method, status)
		}
	}
	// Outside the objects path: 404.
	if status := rawRequest(t, srv, "GET", "/agent/v1/other"+query, ""); status != http.StatusNotFound {
		t.Errorf("GET outside %s: %d, want 404", objectstore.ObjectsPath, status)
	}
	// A good grant of a missing object: 404.
	gm, _ := f.GrantGet(ctx, "c", "missing", time.Minute)
	if status, _ := do(t, "GET", gm.URL, nil, nil); status != http.StatusNotFound {
		t.Errorf("GET of a missing object: %d, want 404", status)
	}
	// A PUT grant into a missing container: 404, nothing created.
	gp, _ := f.GrantPut(ctx, "nope", "x", 1, time.Minute)
	if status, _ := do(t, "PUT", gp.URL, nil, []byte("x")); status != http.StatusNotFound {
		t.Errorf("PUT into a missing container: %d, want 404", status)
	}
	if _, err := os.Stat(filepath.Join(root, "nope")); !os.IsNotExist(err) {
		t.Errorf("PUT into a missing container created it: %v", err)
	}
	// Nothing left behind in the temporary directory by refused or failed PUTs.
	if left, _ := os.ReadDir(filepath.Join(root, ".tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// A PUT whose client goes away mid-body stores nothing, and a reader never
// sees a partial object.
func TestFileHandlerPartialPut(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	f, srv := newFileServer(t, root)
	g, err := f.GrantPut(t.Context(), "c", "seg", 1000, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(g.URL)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n%s", u.RequestURI(), strings.Repeat("x", 400))
	time.Sleep(200 * time.Millisecond)
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		left, _ := os.ReadDir(filepath.Join(root, ".tmp"))
		if len(left) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := f.Stat(t.Context(), "c", "seg"); err == nil {
		t.Error("a partial PUT stored the object")
	}
	if left, _ := os.ReadDir(filepath.Join(root, ".tmp")); len(left) != 0 {
		t.Errorf("temporary files left: %v", left)
	}
}

// Processes sharing the directory share the signing key: a grant issued by
// one is honoured by another's handler. The key file is 0600.
func TestFileSharedKey(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	a, _ := newFileServer(t, root)
	b, srvB := newFileServer(t, root)
	if err := a.SetBaseURL(srvB.URL); err != nil { // a's grants, served by b
		t.Fatal(err)
	}
	g, err := a.GrantPut(t.Context(), "c", "from-a", 3, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := do(t, g.Method, g.URL, nil, []byte("abc")); status != http.StatusCreated {
		t.Fatalf("PUT with a's grant on b: %d %s", status, body)
	}
	if got := read(t, b, "c", "from-a"); got != "abc" {
		t.Errorf("b reads %q", got)
	}
	st, err := os.Stat(filepath.Join(root, ".grant-key"))
	if err != nil || st.Mode().Perm() != 0o600 || st.Size() != 32 {
		t.Errorf("grant key file: %v, %v", st.Mode(), err)
	}
	// Another store on another directory has another key.
	c, srvC := newFileServer(t, t.TempDir())
	_ = c
	forged := srvC.URL + strings.TrimPrefix(g.URL, srvB.URL)
	if status, _ := do(t, g.Method, forged, nil, []byte("abc")); status != http.StatusForbidden {
		t.Errorf("a's grant on a store with another key: %d, want 403", status)
	}
}

func TestFileGrantNeedsBaseURL(t *testing.T) {
	t.Parallel()
	f, err := objectstore.NewFile(t.TempDir(), "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.GrantGet(t.Context(), "c", "k", time.Minute); err == nil || !strings.Contains(err.Error(), "base URL") {
		t.Errorf("grant without a base URL: %v", err)
	}
	for _, bad := range []string{"ftp://x", "not a url", "http://", "http://h/?q=1"} {
		if err := f.SetBaseURL(bad); err == nil {
			t.Errorf("SetBaseURL(%q) succeeded", bad)
		}
	}
	if err := f.SetBaseURL("https://10.0.0.1:8780/prefix/"); err != nil {
		t.Fatal(err)
	}
	g, err := f.GrantPut(t.Context(), "c", "a b/c%d", 1, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.URL, "https://10.0.0.1:8780/prefix/agent/v1/objects/c/a%20b/c%25d?expires=") {
		t.Errorf("grant URL %s", g.URL)
	}
}

// Temporary files of uploads that a crash cut short are removed when the
// store opens, once they are a day old (younger ones may be another
// process's uploads in progress).
func TestFileRemovesStaleTemps(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	if _, err := objectstore.NewFile(root, ""); err != nil {
		t.Fatal(err)
	}
	old, young := filepath.Join(root, ".tmp", "put-old"), filepath.Join(root, ".tmp", "put-young")
	for _, p := range []string{old, young} {
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	twoDaysAgo := time.Now().Add(-48 * time.Hour)
	if err := os.Chtimes(old, twoDaysAgo, twoDaysAgo); err != nil {
		t.Fatal(err)
	}
	if _, err := objectstore.NewFile(root, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); !os.IsNotExist(err) {
		t.Errorf("stale temporary file: %v", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young temporary file: %v", err)
	}
}
