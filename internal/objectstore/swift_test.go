package objectstore_test

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// openSwift opens a Swift store of its own (its own client and token) on
// the shared server, with a fresh container.
func openSwift(t *testing.T, tweak func(*objectstore.Config)) (*objectstore.Swift, string, *objectstoretest.Server) {
	t.Helper()
	srv := objectstoretest.Swift(t)
	cfg := srv.NewContainer("t")
	if tweak != nil {
		tweak(&cfg)
	}
	st, err := objectstore.Open(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	return st.(*objectstore.Swift), cfg.Container, srv
}

// A backup's segments as one static large object: Get, a TempURL GET and
// the swift CLI all return the concatenation; deleting it leaves the
// segments.
func TestSwiftLargeObject(t *testing.T) {
	t.Parallel()
	sw, c, srv := openSwift(t, nil)
	ctx := t.Context()
	var (
		all  []byte
		segs []objectstore.ObjectInfo
	)
	for i, size := range []int{100_000, 250_000, 7} {
		data := randomBytes(size)
		key := "bk/segment-00000" + string(rune('0'+i))
		if err := sw.Put(ctx, c, key, bytes.NewReader(data), int64(size)); err != nil {
			t.Fatal(err)
		}
		info, err := sw.Stat(ctx, c, key)
		if err != nil {
			t.Fatal(err)
		}
		if info.ETag == "" {
			t.Errorf("stat %s: no ETag", key)
		}
		all = append(all, data...)
		segs = append(segs, info)
	}
	if err := sw.PutLargeObject(ctx, c, "bk/backup", segs); err != nil {
		t.Fatal(err)
	}
	if got := read(t, sw, c, "bk/backup"); got != string(all) {
		t.Errorf("SLO content: %d bytes, want the %d bytes of the segments", len(got), len(all))
	}
	if info, err := sw.Stat(ctx, c, "bk/backup"); err != nil || info.Size != int64(len(all)) {
		t.Errorf("stat SLO = %+v, %v; want size %d", info, err, len(all))
	}
	g, err := sw.GrantGet(ctx, c, "bk/backup", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := do(t, g.Method, g.URL, g.Header, nil); !ok(status) || !bytes.Equal(body, all) {
		t.Errorf("GET SLO through a TempURL: %d, %d bytes (want %d)", status, len(body), len(all))
	}

	// Native tools download it in one piece.
	if _, err := exec.LookPath("swift"); err == nil {
		out := filepath.Join(t.TempDir(), "backup")
		cmd := exec.Command("swift", "-A", srv.Env["ST_AUTH"], "-U", srv.Env["ST_USER"], "-K", srv.Env["ST_KEY"],
			"download", c, "bk/backup", "-o", out)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("swift download: %v\n%s", err, b)
		} else if got, _ := os.ReadFile(out); !bytes.Equal(got, all) {
			t.Errorf("swift download: %d bytes, want %d", len(got), len(all))
		}
	} else {
		t.Log("no swift CLI (python3-swiftclient): native download not checked")
	}

	// More segments than a manifest may list: a manifest of manifests.
	objectstore.SetMaxManifestSegments(sw, 2)
	if err := sw.PutLargeObject(ctx, c, "bk/nested", segs); err != nil {
		t.Fatal(err)
	}
	if got := read(t, sw, c, "bk/nested"); got != string(all) {
		t.Errorf("nested SLO content: %d bytes, want %d", len(got), len(all))
	}
	parts, err := sw.List(ctx, c, "bk/nested.part-")
	if err != nil || len(parts) != 2 {
		t.Errorf("sub-manifests = %v, %v; want 2", keys(parts), err)
	}

	for _, key := range []string{"bk/nested", "bk/backup"} {
		if err := sw.DeleteLargeObject(ctx, c, key); err != nil {
			t.Fatalf("delete large object %s: %v", key, err)
		}
		if _, err := sw.Stat(ctx, c, key); !errors.Is(err, objectstore.ErrNotFound) {
			t.Errorf("stat %s after delete: %v, want ErrNotFound", key, err)
		}
	}
	left, err := sw.List(ctx, c, "bk/")
	if err != nil {
		t.Fatal(err)
	}
	if got, want := keys(left), keys(segs); !slices.Equal(got, want) {
		t.Errorf("after deleting the large objects: %v, want only the segments %v", got, want)
	}
	// Deleting a missing large object is no error.
	if err := sw.DeleteLargeObject(ctx, c, "bk/backup"); err != nil {
		t.Errorf("delete a missing large object: %v", err)
	}
	if err := sw.PutLargeObject(ctx, c, "bk/empty", nil); err == nil {
		t.Error("a large object of no segments was written")
	}
}

// An expired (here: invalid) token is renewed on the first 401.
func TestSwiftReauth(t *testing.T) {
	t.Parallel()
	sw, c, _ := openSwift(t, nil)
	ctx := t.Context()
	if err := sw.Put(ctx, c, "r", strings.NewReader("one"), 3); err != nil {
		t.Fatal(err)
	}
	good := objectstore.Token(sw)

	objectstore.BreakToken(sw)
	if info, err := sw.Stat(ctx, c, "r"); err != nil || info.Size != 3 {
		t.Fatalf("stat with an expired token: %+v, %v", info, err)
	}
	// (tempauth may hand out the same token again while it is valid.)
	if tok := objectstore.Token(sw); tok != good && (tok == "" || strings.HasPrefix(tok, "AUTH_tk0000")) {
		t.Errorf("token after re-authentication: %q", tok)
	}

	// A seekable body is sent again after the renewal.
	objectstore.BreakToken(sw)
	if err := sw.Put(ctx, c, "r", strings.NewReader("two!"), 4); err != nil {
		t.Fatalf("put (seekable) with an expired token: %v", err)
	}
	if got := read(t, sw, c, "r"); got != "two!" {
		t.Errorf("after the put: %q", got)
	}

	// A stream cannot be: the put fails or stores everything, never a part.
	objectstore.BreakToken(sw)
	err := sw.Put(ctx, c, "r", nonSeeker{strings.NewReader("three")}, 5)
	got := read(t, sw, c, "r")
	switch {
	case err == nil && got != "three":
		t.Errorf("put (stream) with an expired token succeeded but stored %q", got)
	case err != nil && got != "two!":
		t.Errorf("put (stream) with an expired token failed (%v) and left %q", err, got)
	}
	t.Logf("put of a stream with an expired token: %v", err)
}

// Temp-URL keys: a configured key is put on the container; a new one
// replaces it while grants signed with the old one keep working (it moves
// to Temp-URL-Key-2); without configuration every client derives the same
// key, so replicas agree.
func TestSwiftTempURLKey(t *testing.T) {
	t.Parallel()
	c := randomName("keys")
	open := func(key string) *objectstore.Swift {
		t.Helper()
		sw, _, _ := openSwift(t, func(cfg *objectstore.Config) {
			cfg.Container = c
			cfg.Swift.TempURLKey = objectstore.Secret(key)
		})
		return sw
	}
	works := func(sw *objectstore.Swift, what string) {
		t.Helper()
		g, err := sw.GrantGet(t.Context(), c, "obj", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if status, body := do(t, g.Method, g.URL, nil, nil); !ok(status) || string(body) != "content" {
			t.Errorf("%s: GET through the grant: %d %q", what, status, body)
		}
	}
	first := open("")
	if err := first.Put(t.Context(), c, "obj", strings.NewReader("content"), 7); err != nil {
		t.Fatal(err)
	}
	second := open("")
	works(first, "derived key, first client")
	works(second, "derived key, second client")

	k1 := open("key-one-" + randomName("k"))
	works(k1, "configured key 1")
	k2 := open("key-two-" + randomName("k"))
	works(k2, "configured key 2")
	works(k1, "configured key 1 after key 2 replaced it")
}
