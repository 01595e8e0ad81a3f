// Package functions is Coffer's public HTTP API: stateless Huma handlers in
// Trove v1.0's URL layout (/v1.0/{tenant_id}/...), wrapped bodies and fault
// format. A mutating handler validates, writes its rows and inserts its
// River jobs in one transaction, commits and answers; nothing slow happens
// in a request. Each resource registers separately, so any subset can be
// served as its own http.Handler (a Knative or OpenFaaS function).
package functions

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
	"github.com/danielgtaylor/huma/v2/adapters/humago"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/backupkey"
	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/provider"
	"github.com/coffer-dbaas/coffer/internal/ratelimit"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Version is the API implementation version shown in the spec.
const Version = "0.1.0"

// Deps is what handlers need. All of it is safe for concurrent use.
type Deps struct {
	Pool *pgxpool.Pool
	// River inserts jobs; an insert-only client (no workers) is enough.
	River *river.Client[pgx.Tx]
	Auth  auth.Authenticator
	// RateLimit counts requests per project after authentication (Trove's
	// rate limits, 413 overLimit); nil: no limits.
	RateLimit *ratelimit.Limiter
	// Region is reported on instances.
	Region string
	// DefaultDatastore is used when a create request names none.
	DefaultDatastore string
	// MaxVolumeGB is the largest volume a create may ask for (Trove's
	// max_accepted_volume_size); larger answers 413.
	MaxVolumeGB int
	// Images, when set, checks on create that the datastore version's
	// image exists in the cloud (provider_wiring.go); nil: not checked.
	Images provider.ImageChecker
	Logger *slog.Logger
	// Keys wraps backup keys and Store holds backups (backups.go); without
	// them backups answer 501.
	Keys  *backupkey.Keyring
	Store objectstore.Store
	// Locations names every store a backup may be in or be copied to
	// (backup_copy.go); nil: Store only.
	Locations *objectstore.Registry
	// Now is the clock (tests may replace it).
	Now func() time.Time
}

func (d *Deps) now() time.Time {
	if d.Now != nil {
		return d.Now()
	}
	return time.Now()
}

func (d *Deps) queries() *store.Queries { return store.New(d.Pool) }

// Resource registers one resource's operations on an API.
type Resource func(api huma.API, deps *Deps)

// All is every public resource, in registration order (each resource's
// file registers it in init, so adding a resource touches no shared list).
var All []Resource

func register(r Resource) { All = append(All, r) }

func init() { register(Versions); register(Datastores); register(Flavors); register(Instances) }

// NewAPI returns a Huma API on mux configured for Trove compatibility.
func NewAPI(mux *http.ServeMux) huma.API {
	cfg := huma.DefaultConfig("Coffer Database-as-a-Service API (Trove v1.0 compatible)", Version)
	// Trove accepts unknown keys in most bodies (clients send extras).
	cfg.AllowAdditionalPropertiesByDefault = true
	// No "$schema" links in Trove bodies.
	cfg.CreateHooks = nil
	cfg.Info.Description = "Provision and manage PostgreSQL, MariaDB and Redis instances. Every path under /v1.0/{tenant_id} needs an X-Auth-Token whose project is {tenant_id}. Errors use Trove's fault body."
	// Request bodies with control characters in a string are refused (guards.go).
	cfg.Formats = textChecked(cfg.Formats)
	cfg.Components.SecuritySchemes = map[string]*huma.SecurityScheme{
		"token": {Type: "apiKey", In: "header", Name: "X-Auth-Token", Description: "Keystone or built-in API token"},
	}
	return humago.New(exactMux{mux}, cfg)
}

// exactMux makes a path ending in "/" match only itself ("/{$}"), as in
// the spec, instead of ServeMux's whole-subtree match.
type exactMux struct{ *http.ServeMux }

func (m exactMux) HandleFunc(pattern string, h func(http.ResponseWriter, *http.Request)) {
	if strings.HasSuffix(pattern, "/") {
		pattern += "{$}"
	}
	m.ServeMux.HandleFunc(pattern, h)
}

// Handler serves the given resources (all of them when none are given)
// behind authentication and Trove's fault handling.
func Handler(deps *Deps, resources ...Resource) http.Handler {
	if len(resources) == 0 {
		resources = All
	}
	mux := http.NewServeMux()
	api := NewAPI(mux)
	for _, r := range resources {
		r(api, deps)
	}
	return deps.recoverPanics(deps.authenticate(deps.RateLimit.Middleware(faultForUnrouted(mux))))
}

// Spec returns the OpenAPI document of the full API.
func Spec() *huma.OpenAPI {
	mux := http.NewServeMux()
	api := NewAPI(mux)
	deps := &Deps{}
	for _, r := range All {
		r(api, deps)
	}
	return api.OpenAPI()
}

var tokenSecurity = []map[string][]string{{"token": {}}}

// authenticate resolves X-Auth-Token for every path under /v1.0 and checks
// that the tenant in the URL is the token's project (Trove: 403 otherwise).
func (d *Deps) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		r = r.WithContext(context.WithValue(r.Context(), baseURLKey{}, requestBaseURL(r)))
		rest, ok := strings.CutPrefix(r.URL.Path, "/v1.0")
		if !ok || (rest != "" && rest[0] != '/') {
			next.ServeHTTP(w, r)
			return
		}
		p, err := d.Auth.Authenticate(r.Context(), r.Header.Get("X-Auth-Token"))
		if err != nil {
			if err != auth.ErrInvalidToken {
				d.Logger.ErrorContext(r.Context(), "authenticate", "err", err)
				openapi.WriteFault(w, openapi.Errorf(http.StatusServiceUnavailable, "Authentication is unavailable, try again."))
				return
			}
			openapi.WriteFault(w, openapi.Errorf(http.StatusUnauthorized, "The request you have made requires authentication."))
			return
		}
		tenant, _, _ := strings.Cut(strings.TrimPrefix(rest, "/"), "/")
		if tenant != "" && tenant != p.ProjectID {
			openapi.WriteFault(w, openapi.Errorf(http.StatusForbidden, "User with tenant id %s cannot access this resource.", p.ProjectID))
			return
		}
		if err := d.ensureProject(r.Context(), p.ProjectID); err != nil {
			d.Logger.ErrorContext(r.Context(), "authenticate", "err", err)
			openapi.WriteFault(w, openapi.Errorf(http.StatusServiceUnavailable, "Authentication is unavailable, try again."))
			return
		}
		ctx := auth.WithPrincipal(r.Context(), p)
		next.ServeHTTP(w, r.WithContext(auth.WithToken(ctx, r.Header.Get("X-Auth-Token"))))
	})
}

// faultForUnrouted turns the mux's plain-text 404 and 405 into Trove faults.
func faultForUnrouted(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h, pattern := mux.Handler(r); pattern == "" {
			rec := &statusRecorder{header: http.Header{}}
			h.ServeHTTP(rec, r)
			if rec.status == http.StatusMethodNotAllowed {
				w.Header().Set("Allow", rec.header.Get("Allow"))
				openapi.WriteFault(w, openapi.Errorf(http.StatusMethodNotAllowed, "The method %s is not allowed for this resource.", r.Method))
				return
			}
			openapi.WriteFault(w, openapi.NotFound("The resource could not be found."))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// statusRecorder captures what the mux would answer to an unrouted request.
type statusRecorder struct {
	header http.Header
	status int
}

func (s *statusRecorder) Header() http.Header         { return s.header }
func (s *statusRecorder) Write(b []byte) (int, error) { return len(b), nil }
func (s *statusRecorder) WriteHeader(code int)        { s.status = code }

// principal returns the authenticated caller of a request.
func principal(ctx context.Context) *auth.Principal {
	if p := auth.FromContext(ctx); p != nil {
		return p
	}
	return &auth.Principal{}
}

// TenantPath is the {tenant_id} every resource path starts with.
type TenantPath struct {
	TenantID string `path:"tenant_id" doc:"Project id; must be the token's project" maxLength:"255"`
}

type baseURLKey struct{}

// baseURL is the scheme and host links point to, as the client reached us.
func baseURL(ctx context.Context) string {
	if u, ok := ctx.Value(baseURLKey{}).(string); ok {
		return u
	}
	return ""
}

func requestBaseURL(r *http.Request) string {
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "https" || p == "http" {
		scheme = p
	}
	return scheme + "://" + r.Host
}
