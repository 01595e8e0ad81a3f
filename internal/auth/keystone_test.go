package auth

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
)

func TestMain(m *testing.M) { keystonetest.Main(m) }

func newKeystone(t *testing.T, ks *keystonetest.Keystone, cfg KeystoneConfig) *Keystone {
	t.Helper()
	cfg.AuthURL = ks.AuthURL
	cfg.Username, cfg.Password, cfg.ProjectName = ks.Service.Name, ks.Service.Password, ks.Service.ProjectName
	k, err := NewKeystone(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestKeystoneMapsProjectUserAndRoles(t *testing.T) {
	t.Parallel()
	ks := keystonetest.Start(t)
	k := newKeystone(t, ks, KeystoneConfig{})
	ctx := context.Background()

	p, err := k.Authenticate(ctx, ks.Token(t, ks.Demo))
	if err != nil {
		t.Fatal(err)
	}
	if p.ProjectID != ks.Demo.ProjectID || p.UserName != "demo" || !slices.Contains(p.Roles, "member") || p.IsAdmin() {
		t.Errorf("demo = %+v, want project %s, user demo, role member, not admin", p, ks.Demo.ProjectID)
	}
	// The implied role is there too, as Keystone expands it.
	if !slices.Contains(p.Roles, "reader") {
		t.Errorf("demo roles = %v, want the implied reader", p.Roles)
	}
	p, err = k.Authenticate(ctx, ks.Token(t, ks.Admin))
	if err != nil {
		t.Fatal(err)
	}
	if p.ProjectID != ks.Admin.ProjectID || !p.IsAdmin() {
		t.Errorf("admin = %+v", p)
	}
	// A project created now is known at once.
	u := ks.NewProject(t, "fresh")
	if p, err = k.Authenticate(ctx, ks.Token(t, u)); err != nil || p.ProjectID != u.ProjectID || p.UserName != u.Name {
		t.Errorf("fresh project: %+v %v", p, err)
	}
	// Callers get their own copy: changing it does not change the cache.
	p, _ = k.Authenticate(ctx, ks.Token(t, ks.Alt))
	p.Roles[0], p.ProjectID = "admin", "x"
	if p2, _ := k.Authenticate(ctx, ks.Token(t, ks.Alt)); p2.IsAdmin() || p2.ProjectID != ks.Alt.ProjectID {
		t.Errorf("cached principal changed through a returned copy: %+v", p2)
	}
}

func TestKeystoneInvalidTokens(t *testing.T) {
	t.Parallel()
	ks := keystonetest.Start(t)
	k := newKeystone(t, ks, KeystoneConfig{})
	ctx := context.Background()
	valid := ks.Token(t, ks.Demo)
	for name, tok := range map[string]string{
		"empty":     "",
		"garbage":   "not-a-token",
		"truncated": valid[:len(valid)/2],
		"tampered":  valid[:len(valid)-4] + "AAAA",
		"huge":      strings.Repeat("x", 100000),
	} {
		if p, err := k.Authenticate(ctx, tok); err != ErrInvalidToken {
			t.Errorf("%s token: %+v, %v; want ErrInvalidToken", name, p, err)
		}
	}
	// Revoked in Keystone: invalid once the cache forgets it (here: never
	// validated before).
	revoked := ks.Token(t, ks.Demo)
	ks.RevokeToken(t, revoked)
	if _, err := k.Authenticate(ctx, revoked); err != ErrInvalidToken {
		t.Errorf("revoked token: %v", err)
	}

	// A token without a project scope (user without a default project).
	admin := ks.AdminClient(t)
	name := "unscoped-" + time.Now().Format("150405.000000")
	if _, err := users.Create(ctx, admin, users.CreateOpts{Name: name, DomainID: "default", Password: "pw-unscoped"}).Extract(); err != nil {
		t.Fatal(err)
	}
	provider, _ := openstack.NewClient(ks.AuthURL)
	idc, _ := openstack.NewIdentityV3(provider, gophercloud.EndpointOpts{})
	unscoped, err := tokens.Create(ctx, idc, &tokens.AuthOptions{Username: name, Password: "pw-unscoped", DomainName: "Default"}).ExtractTokenID()
	if err != nil {
		t.Fatal(err)
	}
	if p, err := k.Authenticate(ctx, unscoped); err != ErrInvalidToken {
		t.Errorf("unscoped token: %+v, %v; want ErrInvalidToken", p, err)
	}
}

// A validation is reused for CacheTTL, never beyond the token's expiry;
// while cached, a token works with Keystone down, and a new one fails with
// an error that is not ErrInvalidToken (the API answers 503).
func TestKeystoneCacheAndOutage(t *testing.T) {
	t.Parallel()
	ks := keystonetest.StartPrivate(t)
	k := newKeystone(t, ks, KeystoneConfig{CacheTTL: time.Minute})
	clock := time.Now()
	var clockMu sync.Mutex
	k.now = func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return clock }
	advance := func(d time.Duration) { clockMu.Lock(); clock = clock.Add(d); clockMu.Unlock() }
	ctx := context.Background()

	cached, fresh := ks.Token(t, ks.Demo), ks.Token(t, ks.Alt)
	if _, err := k.Authenticate(ctx, cached); err != nil {
		t.Fatal(err)
	}
	if _, err := k.Authenticate(ctx, "bad-token"); err != ErrInvalidToken {
		t.Fatal(err)
	}
	ks.Stop(t)
	if p, err := k.Authenticate(ctx, cached); err != nil || p.ProjectID != ks.Demo.ProjectID {
		t.Errorf("cached token with Keystone down: %+v %v", p, err)
	}
	if _, err := k.Authenticate(ctx, "bad-token"); err != ErrInvalidToken {
		t.Errorf("remembered invalid token with Keystone down: %v", err)
	}
	_, err := k.Authenticate(ctx, fresh)
	if err == nil || errors.Is(err, ErrInvalidToken) {
		t.Errorf("uncached token with Keystone down: %v, want an unavailability error", err)
	}
	advance(61 * time.Second)
	if _, err := k.Authenticate(ctx, cached); err == nil || errors.Is(err, ErrInvalidToken) {
		t.Errorf("token after the TTL with Keystone down: %v, want an unavailability error", err)
	}

	ks.Restart(t)
	if _, err := k.Authenticate(ctx, fresh); err != nil {
		t.Fatalf("after Keystone is back: %v", err)
	}
	// A token's cache entry ends with the token.
	key := hashKey(cached)
	expires := time.Now().Add(30 * time.Second)
	k.cache.put(key, &Principal{ProjectID: "p"}, expires)
	if _, ok := k.cache.get(key, expires.Add(-time.Second)); !ok {
		t.Error("entry gone before it expired")
	}
	if _, ok := k.cache.get(key, expires); ok {
		t.Error("entry alive at its expiry")
	}
	// validate caps the entry at expires_at: seen from one second before the
	// token expires, the entry lives one second, not the TTL.
	tok, err := tokenExpiry(ks, fresh)
	if err != nil {
		t.Fatal(err)
	}
	clockMu.Lock()
	clock = tok.Add(-time.Second)
	clockMu.Unlock()
	k.cache = newTokenCache(10)
	if _, err := k.Authenticate(ctx, fresh); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.cache.get(hashKey(fresh), tok.Add(-time.Millisecond)); !ok {
		t.Error("entry gone before the token expired")
	}
	if _, ok := k.cache.get(hashKey(fresh), tok); ok {
		t.Error("entry outlives the token")
	}
}

func TestKeystoneCacheIsBounded(t *testing.T) {
	t.Parallel()
	ks := keystonetest.Start(t)
	k := newKeystone(t, ks, KeystoneConfig{CacheSize: 2})
	ctx := context.Background()
	for _, u := range []keystonetest.User{ks.Demo, ks.Alt, ks.Admin, ks.Demo} {
		if _, err := k.Authenticate(ctx, ks.Token(t, u)); err != nil {
			t.Fatal(err)
		}
	}
	if n := k.cache.len(); n != 2 {
		t.Errorf("cache holds %d entries, want 2", n)
	}
}

// The service token is renewed when Keystone rejects it (401: revoked,
// expired, keys rotated) and shortly before it expires.
func TestKeystoneServiceTokenRenewal(t *testing.T) {
	t.Parallel()
	ks := keystonetest.Start(t)
	k := newKeystone(t, ks, KeystoneConfig{})
	ctx := context.Background()
	if _, err := k.Authenticate(ctx, ks.Token(t, ks.Demo)); err != nil {
		t.Fatal(err)
	}
	first := k.provider.Token()
	ks.RevokeToken(t, first)
	p, err := k.Authenticate(ctx, ks.Token(t, ks.Alt))
	if err != nil || p.ProjectID != ks.Alt.ProjectID {
		t.Fatalf("after the service token was revoked: %+v %v", p, err)
	}
	second := k.provider.Token()
	if second == first {
		t.Fatal("service token not renewed after a 401")
	}
	// Invalid tokens are still told apart after a renewal.
	ks.RevokeToken(t, second)
	if _, err := k.Authenticate(ctx, "bad-token-after-401"); err != ErrInvalidToken {
		t.Errorf("invalid token after a renewal: %v", err)
	}
	third := k.provider.Token()

	// About to expire: renewed before use.
	k.svcMu.Lock()
	k.svcTok, k.svcExp = third, time.Now().Add(time.Minute)
	k.svcMu.Unlock()
	if _, err := k.Authenticate(ctx, ks.Token(t, ks.Demo)); err != nil {
		t.Fatal(err)
	}
	if k.provider.Token() == third {
		t.Error("service token not renewed before its expiry")
	}
}

// Many first requests with one token: all succeed (one validation).
func TestKeystoneConcurrent(t *testing.T) {
	t.Parallel()
	ks := keystonetest.Start(t)
	k := newKeystone(t, ks, KeystoneConfig{})
	toks := []string{ks.Token(t, ks.Demo), ks.Token(t, ks.Alt)}
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 40 {
		wg.Go(func() {
			ctx, cancel := context.WithCancel(context.Background())
			if i%7 == 0 {
				cancel() // a caller giving up must not fail the others
			} else {
				defer cancel()
			}
			p, err := k.Authenticate(ctx, toks[i%2])
			if i%7 != 0 && (err != nil || p.ProjectID == "") {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("concurrent validation: %v", err)
	}
}

// Keystone that never was reachable: the authenticator is created (the API
// starts) and every validation is an unavailability error.
func TestKeystoneUnreachable(t *testing.T) {
	t.Parallel()
	k, err := NewKeystone(KeystoneConfig{AuthURL: "http://127.0.0.1:1/v3", Username: "u", Password: "p", ProjectName: "service", Timeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	_, err = k.Authenticate(context.Background(), "some-token")
	if err == nil || errors.Is(err, ErrInvalidToken) {
		t.Fatalf("unreachable Keystone: %v", err)
	}
	if strings.Contains(err.Error(), "some-token") {
		t.Errorf("error shows the token: %v", err)
	}
	if _, err := NewKeystone(KeystoneConfig{AuthURL: "http://127.0.0.1:1/v3"}); err == nil {
		t.Error("NewKeystone without service credentials succeeded")
	}
}

func hashKey(token string) [32]byte { return sha256Sum(token) }

// tokenExpiry asks Keystone (as admin) when a token expires.
func tokenExpiry(ks *keystonetest.Keystone, token string) (time.Time, error) {
	ctx := context.Background()
	provider, err := openstack.NewClient(ks.AuthURL)
	if err != nil {
		return time.Time{}, err
	}
	if err := openstack.AuthenticateV3(ctx, provider, &tokens.AuthOptions{Username: ks.Admin.Name, Password: ks.Admin.Password,
		DomainName: "Default", Scope: tokens.Scope{ProjectID: ks.Admin.ProjectID}}, gophercloud.EndpointOpts{}); err != nil {
		return time.Time{}, err
	}
	idc, err := openstack.NewIdentityV3(provider, gophercloud.EndpointOpts{})
	if err != nil {
		return time.Time{}, err
	}
	tok, err := tokens.Get(ctx, idc, token).ExtractToken()
	if err != nil {
		return time.Time{}, err
	}
	return tok.ExpiresAt, nil
}
