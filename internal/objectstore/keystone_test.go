package objectstore_test

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/regions"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// The Swift store with Keystone auth, against a real Keystone and a Swift
// proxy that validates its tokens (authtoken + keystoneauth): the endpoint
// comes from the catalog (region of its own), the account is
// AUTH_<project id>, TempURLs go through the Keystone proxy, and a token
// that stops working is renewed.
func TestSwiftKeystone(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("-short: a Keystone and a Swift of its own take ~1 GB and 30-90 s")
	}
	objectstoretest.Skip(t, objectstoretest.KindSwift)
	k := keystonetest.Start(t)
	srv := objectstoretest.StartSwiftKeystone(t, objectstoretest.KeystoneAuth{
		URL: k.AuthURL, User: k.Service.Name, Password: k.Service.Password, Project: k.Service.ProjectName,
	})
	region := keystonetest.NewRegionID("swift")
	registerObjectStore(t, k, region, srv.Env["SWIFT_KEYSTONE_STORAGE_URL"]+"%(project_id)s")
	u := k.NewProject(t, "backups", "member")

	cfg := objectstore.Config{Name: "swift", Kind: "swift", Container: objectstore.DefaultContainer, Swift: objectstore.SwiftConfig{
		Auth: "keystone",
		Keystone: objectstore.KeystoneConfig{
			AuthURL: k.AuthURL, Username: u.Name, Password: objectstore.Secret(u.Password), ProjectName: u.ProjectName,
			UserDomainName: "Default", ProjectDomainName: "Default",
		},
		Region: region,
	}}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	st, err := objectstore.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	sw := st.(*objectstore.Swift)
	if want := srv.Env["SWIFT_KEYSTONE_STORAGE_URL"] + u.ProjectID; strings.TrimSuffix(sw.StorageURL(), "/") != want {
		t.Errorf("storage URL %s, want %s (from the catalog)", sw.StorageURL(), want)
	}
	c := cfg.Container
	if err := sw.Put(ctx, c, "k/obj", strings.NewReader("via keystone"), -1); err != nil {
		t.Fatal(err)
	}
	if got := read(t, sw, c, "k/obj"); got != "via keystone" {
		t.Errorf("get = %q", got)
	}

	data := randomBytes(1 << 20)
	g, err := sw.GrantPut(ctx, c, "k/seg", int64(len(data)), time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(g.URL, srv.Env["SWIFT_KEYSTONE_STORAGE_URL"]) {
		t.Errorf("grant URL %s is not on the Keystone proxy", g.URL)
	}
	if status, body := do(t, g.Method, g.URL, nil, data); !ok(status) {
		t.Fatalf("PUT through the TempURL: %d %s", status, body)
	}
	gg, err := sw.GrantGet(ctx, c, "k/seg", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if status, body := do(t, gg.Method, gg.URL, nil, nil); !ok(status) || !bytes.Equal(body, data) {
		t.Errorf("GET through the TempURL: %d, %d bytes", status, len(body))
	}

	// A token Swift no longer accepts is renewed (gophercloud's
	// AllowReauth).
	objectstore.BreakToken(sw)
	broken := objectstore.Token(sw)
	if info, err := sw.Stat(ctx, c, "k/seg"); err != nil || info.Size != int64(len(data)) {
		t.Errorf("stat with a broken token: %+v, %v", info, err)
	}
	if tok := objectstore.Token(sw); tok == broken || tok == "" {
		t.Errorf("the token was not renewed")
	}
}

// registerObjectStore puts an object-store endpoint (public, URL template
// with %(project_id)s) in a new region, removed at cleanup.
func registerObjectStore(t *testing.T, k *keystonetest.Keystone, region, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := k.AdminClient(t)
	if _, err := regions.Create(ctx, admin, regions.CreateOpts{ID: region}).Extract(); err != nil {
		t.Fatalf("create region %s: %v", region, err)
	}
	t.Cleanup(func() { // after the endpoint's (cleanups run last first)
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := regions.Delete(ctx, admin, region).ExtractErr(); err != nil {
			t.Logf("delete region: %v", err)
		}
	})
	k.RegisterEndpoint(t, region, "object-store", "swift", url)
}
