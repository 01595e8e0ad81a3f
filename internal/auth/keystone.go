package auth

import (
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"golang.org/x/sync/singleflight"
)

// KeystoneConfig is how Coffer reaches Keystone and who it is there: a
// service user whose project-scoped token may validate other users' tokens
// (Keystone's identity:validate_token policy: role service, or admin).
type KeystoneConfig struct {
	// AuthURL is Keystone's v3 endpoint, e.g. http://keystone:5000/v3 (a
	// URL without the version is taken to mean its /v3).
	AuthURL           string
	Username          string
	Password          string
	ProjectName       string
	UserDomainName    string // default "Default"
	ProjectDomainName string // default "Default"
	// CacheTTL is how long a validation is reused (never beyond the token's
	// expires_at). Default 60 s; negative disables the cache. A token
	// revoked in Keystone stays usable here for up to this long — the same
	// trade-off as keystonemiddleware's token_cache_time (300 s there).
	CacheTTL time.Duration
	// CacheSize bounds the number of cached validations (least recently
	// used go first). Default 10,000.
	CacheSize int
	// Timeout bounds each request to Keystone. Default 10 s.
	Timeout time.Duration
	Logger  *slog.Logger
}

// Keystone authenticates X-Auth-Token values by asking Keystone v3
// (GET /v3/auth/tokens?nocatalog with X-Subject-Token), with its own
// service token, and caches the answers briefly. It maps the token's
// project id, user name and role names to a Principal.
//
// The service token is obtained on first use (so the API starts while
// Keystone is down, answering 503 until it is back), renewed shortly before
// it expires, and on any 401 (revoked, or Keystone's keys rotated) by
// gophercloud's re-authentication.
type Keystone struct {
	cfg      KeystoneConfig
	opts     *tokens.AuthOptions
	provider *gophercloud.ProviderClient
	identity *gophercloud.ServiceClient

	authMu  sync.Mutex  // serialises obtaining the first service token
	authed  atomic.Bool // the provider holds a token and its re-auth function
	svcMu   sync.Mutex
	svcTok  string    // the service token svcExp belongs to
	svcExp  time.Time // when the service token expires
	flights singleflight.Group
	cache   *tokenCache
	now     func() time.Time
}

const (
	defaultCacheTTL  = 60 * time.Second
	defaultCacheSize = 10000
	defaultTimeout   = 10 * time.Second
	// negativeTTL caps how long an unknown token's 404 is remembered: it
	// spares Keystone a client retrying a stale token, and a token never
	// becomes valid later.
	negativeTTL = 10 * time.Second
	// maxTokenLen: Keystone's own max_token_size is 255 (fernet tokens are
	// ~180 characters); anything far longer is not worth a round trip.
	maxTokenLen = 8192
	// renewBefore: the service token is renewed this long before it
	// expires, so validations never race its expiry.
	renewBefore = 2 * time.Minute
)

// NewKeystone returns a Keystone authenticator. It does not contact
// Keystone: the service user authenticates on the first validation.
func NewKeystone(cfg KeystoneConfig) (*Keystone, error) {
	if cfg.AuthURL == "" || cfg.Username == "" || cfg.Password == "" || cfg.ProjectName == "" {
		return nil, errors.New("keystone: the auth URL, username, password and project name of the service user are required")
	}
	if cfg.UserDomainName == "" {
		cfg.UserDomainName = "Default"
	}
	if cfg.ProjectDomainName == "" {
		cfg.ProjectDomainName = "Default"
	}
	if cfg.CacheTTL == 0 {
		cfg.CacheTTL = defaultCacheTTL
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = defaultCacheSize
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultTimeout
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	provider, err := openstack.NewClient(cfg.AuthURL)
	if err != nil {
		return nil, fmt.Errorf("keystone: auth URL %q: %w", cfg.AuthURL, err)
	}
	provider.HTTPClient = http.Client{Timeout: cfg.Timeout}
	identity, err := openstack.NewIdentityV3(provider, gophercloud.EndpointOpts{})
	if err != nil {
		return nil, fmt.Errorf("keystone: identity client for %s: %w", cfg.AuthURL, err)
	}
	return &Keystone{
		cfg: cfg,
		opts: &tokens.AuthOptions{
			Username: cfg.Username, Password: cfg.Password, DomainName: cfg.UserDomainName,
			Scope:       tokens.Scope{ProjectName: cfg.ProjectName, DomainName: cfg.ProjectDomainName},
			AllowReauth: true,
		},
		provider: provider,
		identity: identity,
		cache:    newTokenCache(cfg.CacheSize),
		now:      time.Now,
	}, nil
}

// Authenticate implements Authenticator. An unknown, expired or revoked
// token, or one not scoped to a project, is ErrInvalidToken; Keystone being
// unreachable or refusing the service user is another error.
func (k *Keystone) Authenticate(ctx context.Context, token string) (*Principal, error) {
	if token == "" || len(token) > maxTokenLen {
		return nil, ErrInvalidToken
	}
	key := sha256Sum(token)
	if p, ok := k.cache.get(key, k.now()); ok {
		if p == nil {
			return nil, ErrInvalidToken
		}
		return p.clone(), nil
	}
	// Concurrent first requests with one token share one validation. It
	// runs detached from the caller that started it, so one client giving
	// up does not fail the others.
	v, err, _ := k.flights.Do(string(key[:]), func() (any, error) {
		ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*k.cfg.Timeout)
		defer cancel()
		return k.validate(ctx, key, token)
	})
	if err != nil {
		return nil, err
	}
	return v.(*Principal).clone(), nil
}

// validate asks Keystone about token and caches the answer.
func (k *Keystone) validate(ctx context.Context, key [32]byte, token string) (*Principal, error) {
	if err := k.ensureServiceToken(ctx); err != nil {
		return nil, err
	}
	var r tokens.GetResult
	// tokens.Get without the catalog, which can be large and is not needed.
	resp, err := k.identity.Get(ctx, k.identity.ServiceURL("auth", "tokens")+"?nocatalog", &r.Body, &gophercloud.RequestOpts{
		MoreHeaders: map[string]string{"X-Subject-Token": token},
		OkCodes:     []int{200, 203},
	})
	_, r.Header, r.Err = gophercloud.ParseResponse(resp, err)
	now := k.now()
	if r.Err != nil {
		if responseCode(r.Err) == http.StatusNotFound {
			k.rememberInvalid(key, now)
			return nil, ErrInvalidToken
		}
		return nil, fmt.Errorf("keystone: validate token: %w", r.Err)
	}
	p, expires, err := principalOf(r)
	if err != nil {
		return nil, fmt.Errorf("keystone: validate token: %w", err)
	}
	if p == nil {
		// Unscoped, domain- or system-scoped: Trove needs a project.
		k.rememberInvalid(key, now)
		return nil, ErrInvalidToken
	}
	if until := now.Add(k.cfg.CacheTTL); k.cfg.CacheTTL > 0 {
		if expires.Before(until) {
			until = expires
		}
		k.cache.put(key, p, until)
	}
	return p, nil
}

func (k *Keystone) rememberInvalid(key [32]byte, now time.Time) {
	if k.cfg.CacheTTL > 0 {
		k.cache.put(key, nil, now.Add(min(negativeTTL, k.cfg.CacheTTL)))
	}
}

// principalOf maps a validation answer; nil without a project scope.
func principalOf(r tokens.GetResult) (*Principal, time.Time, error) {
	tok, err := r.ExtractToken()
	if err != nil {
		return nil, time.Time{}, err
	}
	project, err := r.ExtractProject()
	if err != nil {
		return nil, time.Time{}, err
	}
	if project == nil || project.ID == "" {
		return nil, tok.ExpiresAt, nil
	}
	user, err := r.ExtractUser()
	if err != nil {
		return nil, time.Time{}, err
	}
	roles, err := r.ExtractRoles()
	if err != nil {
		return nil, time.Time{}, err
	}
	p := &Principal{ProjectID: project.ID, UserName: user.Name, Roles: make([]string, 0, len(roles))}
	for _, role := range roles {
		p.Roles = append(p.Roles, role.Name)
	}
	return p, tok.ExpiresAt, nil
}

// ensureServiceToken authenticates the service user on first use and
// renews its token shortly before it expires. (Renewal on a 401 is
// gophercloud's: the provider re-authenticates and retries once.)
func (k *Keystone) ensureServiceToken(ctx context.Context) error {
	if !k.authed.Load() {
		k.authMu.Lock()
		defer k.authMu.Unlock()
		if !k.authed.Load() {
			if err := openstack.AuthenticateV3(ctx, k.provider, k.opts, gophercloud.EndpointOpts{}); err != nil {
				return fmt.Errorf("keystone: authenticate service user %s: %w", k.cfg.Username, err)
			}
			k.authed.Store(true)
			return nil
		}
	}
	tok := k.provider.Token()
	if exp := k.serviceTokenExpiry(tok); !exp.IsZero() && k.now().Add(renewBefore).After(exp) {
		// Reauthenticate is a no-op when another request already renewed tok.
		if err := k.provider.Reauthenticate(ctx, tok); err != nil {
			return fmt.Errorf("keystone: renew service token of %s: %w", k.cfg.Username, err)
		}
	}
	return nil
}

// serviceTokenExpiry returns when the service token tok expires (zero if
// unknown), parsing the provider's auth result once per token.
func (k *Keystone) serviceTokenExpiry(tok string) time.Time {
	k.svcMu.Lock()
	defer k.svcMu.Unlock()
	if tok == k.svcTok {
		return k.svcExp
	}
	k.svcTok, k.svcExp = tok, time.Time{}
	if r, ok := k.provider.GetAuthResult().(tokens.CreateResult); ok {
		if t, err := r.ExtractToken(); err == nil && t.ID == tok {
			k.svcExp = t.ExpiresAt
		}
	}
	return k.svcExp
}

// responseCode is the HTTP status of a gophercloud error, 0 if none.
func responseCode(err error) int {
	var v gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &v) {
		return v.Actual
	}
	var p *gophercloud.ErrUnexpectedResponseCode
	if errors.As(err, &p) {
		return p.Actual
	}
	return 0
}

// sha256Sum keys the cache: the tokens themselves are not kept.
func sha256Sum(token string) [32]byte { return sha256.Sum256([]byte(token)) }

func (p *Principal) clone() *Principal {
	c := *p
	c.Roles = append([]string(nil), p.Roles...)
	return &c
}

// tokenCache is a bounded LRU of validations keyed by the token's SHA-256
// (the tokens themselves are not kept). A nil principal records an invalid
// token.
type tokenCache struct {
	mu    sync.Mutex
	size  int
	order *list.List // front: most recently used; values are *cacheEntry
	items map[[32]byte]*list.Element
}

type cacheEntry struct {
	key     [32]byte
	p       *Principal
	expires time.Time
}

func newTokenCache(size int) *tokenCache {
	return &tokenCache{size: size, order: list.New(), items: make(map[[32]byte]*list.Element)}
}

func (c *tokenCache) get(key [32]byte, now time.Time) (*Principal, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return nil, false
	}
	e := el.Value.(*cacheEntry)
	if !now.Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return nil, false
	}
	c.order.MoveToFront(el)
	return e.p, true
}

func (c *tokenCache) put(key [32]byte, p *Principal, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		el.Value = &cacheEntry{key: key, p: p, expires: expires}
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&cacheEntry{key: key, p: p, expires: expires})
	for c.order.Len() > c.size {
		oldest := c.order.Back()
		c.order.Remove(oldest)
		delete(c.items, oldest.Value.(*cacheEntry).key)
	}
}

func (c *tokenCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
