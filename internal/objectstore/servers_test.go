package objectstore_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// Wrong credentials fail at Open with an error that names the problem but
// not the secret.
func TestOpenBadCredentials(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{objectstoretest.KindMinIO, objectstoretest.KindSwift} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var srv *objectstoretest.Server
			if kind == objectstoretest.KindMinIO {
				srv = objectstoretest.MinIO(t)
			} else {
				srv = objectstoretest.Swift(t)
			}
			cfg := srv.NewContainer("bad")
			secret := "wrong-secret-" + randomName("s")
			cfg.S3.SecretKey = objectstore.Secret(secret)
			cfg.Swift.Key = objectstore.Secret(secret)
			ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
			defer cancel()
			_, err := objectstore.Open(ctx, cfg)
			if err == nil {
				t.Fatal("Open with a wrong secret succeeded")
			}
			if strings.Contains(err.Error(), secret) {
				t.Errorf("the error holds the secret: %v", err)
			}
			t.Logf("Open with a wrong secret: %v", err)
		})
	}
}

// objectstoretest's private servers can be stopped and restarted (fault
// tests: the store going away mid-backup); a stopped store fails calls
// quickly, and works again after a restart, with its data.
func TestStoppedServer(t *testing.T) {
	t.Parallel()
	for _, kind := range []string{objectstoretest.KindMinIO, objectstoretest.KindSwift} {
		t.Run(kind, func(t *testing.T) {
			t.Parallel()
			var srv *objectstoretest.Server
			if kind == objectstoretest.KindMinIO {
				srv = objectstoretest.StartMinIO(t)
			} else {
				if testing.Short() {
					t.Skip("-short: a Swift of its own takes ~650 MB and 5-50 s")
				}
				srv = objectstoretest.StartSwift(t)
			}
			cfg := srv.NewContainer("stop")
			st, err := objectstore.Open(t.Context(), cfg)
			if err != nil {
				t.Fatal(err)
			}
			ctx := t.Context()
			if err := st.Put(ctx, cfg.Container, "x", strings.NewReader("x"), 1); err != nil {
				t.Fatal(err)
			}
			g, err := st.GrantGet(ctx, cfg.Container, "x", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			srv.Stop(t)
			ctx2, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			start := time.Now()
			if _, err := st.Stat(ctx2, cfg.Container, "x"); err == nil {
				t.Error("stat with the server stopped succeeded")
			} else {
				t.Logf("stat with the server stopped failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
			}
			req, _ := http.NewRequest(g.Method, g.URL, nil)
			if resp, err := http.DefaultClient.Do(req); err == nil {
				resp.Body.Close()
				t.Errorf("GET through a grant with the server stopped: %d", resp.StatusCode)
			}
			srv.Restart(t)
			if got := read(t, st, cfg.Container, "x"); got != "x" {
				t.Errorf("after restart: %q", got)
			}
			if status, body := do(t, g.Method, g.URL, nil, nil); !ok(status) || string(body) != "x" {
				t.Errorf("GET through the grant after restart: %d %q", status, body)
			}
		})
	}
}
