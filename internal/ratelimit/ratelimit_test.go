package ratelimit_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/ratelimit"
	"github.com/coffer-dbaas/coffer/internal/testdb"
)

func TestMain(m *testing.M) { testdb.Main(m) }

func newLimiter(t *testing.T, pool *pgxpool.Pool, spec string) *ratelimit.Limiter {
	t.Helper()
	limits, err := ratelimit.ParseLimits(spec)
	if err != nil {
		t.Fatal(err)
	}
	l, err := ratelimit.New(pool, limits, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func TestParseLimits(t *testing.T) {
	t.Parallel()
	def, err := ratelimit.ParseLimits("default")
	if err != nil || len(def) != 5 || def[4] != (ratelimit.Limit{Verb: "POST", URI: "*/mgmt", Regex: "^/mgmt", Value: 200, Unit: "MINUTE"}) {
		t.Errorf("default = %v %v", def, err)
	}
	if off, err := ratelimit.ParseLimits(" off "); err != nil || off != nil {
		t.Errorf("off = %v %v", off, err)
	}
	got, err := ratelimit.ParseLimits("(get, *, .*, 1000, minute); (POST, */mgmt, ^/mgmt, 5, HOUR);")
	if err != nil || len(got) != 2 || got[0] != (ratelimit.Limit{Verb: "GET", URI: "*", Regex: ".*", Value: 1000, Unit: "MINUTE"}) || got[1].Unit != "HOUR" {
		t.Errorf("parsed = %v %v", got, err)
	}
	for _, bad := range []string{"", "GET, *, .*, 1, MINUTE", "(GET, *, .*, 1)", "(GET, *, .*, x, MINUTE)", ";",
		"(GET, *, .*, 10, WEEK)", "(GET, *, .*, 0, MINUTE)", "(GET, *, (, 1, MINUTE)", "(GET, *, .*, 1, MINUTE);(GET, x, .*, 2, HOUR)"} {
		if l, err := ratelimit.ParseLimits(bad); err == nil {
			t.Errorf("ParseLimits(%q) = %v, want an error", bad, l)
		}
	}
	for _, bad := range [][]ratelimit.Limit{
		{{Verb: "GET", URI: "*", Regex: ".*", Value: 0, Unit: "MINUTE"}},
		{{Verb: "GET", URI: "*", Regex: ".*", Value: 1, Unit: "WEEK"}},
		{{Verb: "GET", URI: "*", Regex: "(", Value: 1, Unit: "MINUTE"}},
		{{Verb: "GET", URI: "*", Regex: ".*", Value: 1, Unit: "MINUTE"}, {Verb: "GET", URI: "all", Regex: ".*", Value: 2, Unit: "MINUTE"}},
	} {
		if _, err := ratelimit.New(nil, bad, nil); err == nil {
			t.Errorf("New(%v) accepted", bad)
		}
	}
}

// Trove's arithmetic: a bucket of one unit, each request adds unit/value;
// a full bucket refuses with the time until one request fits; the refused
// request is not counted; projects and verbs have their own buckets.
func TestTakeLeakyBucket(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	l := newLimiter(t, pool, "(GET, *, .*, 3, MINUTE);(POST, *, .*, 2, MINUTE);(POST, */mgmt, ^/mgmt, 1, MINUTE)")
	ctx := context.Background()
	take := func(project, method, path string) ratelimit.Decision {
		t.Helper()
		d, err := l.Take(ctx, project, method, path)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	for i := range 3 {
		if d := take("p1", "GET", "/instances"); !d.Allowed {
			t.Fatalf("GET %d refused: %+v", i+1, d)
		}
	}
	d := take("p1", "GET", "/flavors")
	if d.Allowed || d.RetryAfter <= 19*time.Second || d.RetryAfter > 20*time.Second {
		t.Fatalf("4th GET = %+v, want refused for ~20 s", d)
	}
	if d.Details != "Only 3 GET request(s) can be made to * every minute." || d.Limit.Verb != "GET" {
		t.Errorf("refusal = %+v", d)
	}
	// Refusals do not fill the bucket further.
	if d2 := take("p1", "GET", "/instances"); d2.Allowed || d2.RetryAfter > d.RetryAfter {
		t.Errorf("5th GET = %+v (4th waited %v)", d2, d.RetryAfter)
	}
	// Another project, another verb: their own buckets; unlimited verbs pass.
	if d := take("p2", "GET", "/instances"); !d.Allowed {
		t.Error("p2's GET refused")
	}
	if d := take("p1", "PATCH", "/instances/x"); !d.Allowed {
		t.Error("PATCH (no limit) refused")
	}
	// POST /mgmt counts against both POST limits.
	if d := take("p1", "POST", "/mgmt/quotas/x"); !d.Allowed {
		t.Fatal("first mgmt POST refused")
	}
	if d := take("p1", "POST", "/mgmt/quotas/x"); d.Allowed || d.Limit.URI != "*/mgmt" {
		t.Errorf("second mgmt POST = %+v, want refused by */mgmt", d)
	}
	// ... and the refused one still took the general POST bucket's last
	// slot, as in Trove.
	if d := take("p1", "POST", "/instances"); d.Allowed || d.Limit.URI != "*" {
		t.Errorf("POST after two mgmt POSTs = %+v, want refused by *", d)
	}

	limits, err := l.Limits(ctx, "p1")
	if err != nil {
		t.Fatal(err)
	}
	if len(limits) != 3 || limits[0].Verb != "GET" || limits[0].Remaining != 0 || time.Until(limits[0].NextAvailable) < 18*time.Second {
		t.Errorf("p1 limits = %+v", limits)
	}
	fresh, err := l.Limits(ctx, "never-seen")
	if err != nil || len(fresh) != 3 || fresh[0].Remaining != 3 || fresh[1].Remaining != 2 || time.Until(fresh[0].NextAvailable) > time.Second {
		t.Errorf("unused project limits = %+v %v", fresh, err)
	}
}

// The bucket drains with time: a per-second limit lets requests through
// again after unit/value.
func TestTakeRefills(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	l := newLimiter(t, pool, "(GET, *, .*, 4, SECOND)")
	ctx := context.Background()
	for range 4 {
		if d, err := l.Take(ctx, "p", "GET", "/"); err != nil || !d.Allowed {
			t.Fatalf("%+v %v", d, err)
		}
	}
	d, _ := l.Take(ctx, "p", "GET", "/")
	if d.Allowed || d.RetryAfter > 250*time.Millisecond {
		t.Fatalf("5th = %+v, want refused for <= 250 ms", d)
	}
	time.Sleep(d.RetryAfter + 20*time.Millisecond)
	if d, _ := l.Take(ctx, "p", "GET", "/"); !d.Allowed {
		t.Errorf("after %v: still refused: %+v", d.RetryAfter, d)
	}
	before, _ := l.Limits(ctx, "p")
	time.Sleep(600 * time.Millisecond)
	if after, _ := l.Limits(ctx, "p"); after[0].Remaining < before[0].Remaining+2 || after[0].Remaining > 4 {
		t.Errorf("remaining %d, 0.6 s later %d: want 2 more (at most 4)", before[0].Remaining, after[0].Remaining)
	}
}

// Two API replicas (two limiters, two pools) on one database share the
// limit exactly, under concurrency.
func TestTakeAcrossReplicas(t *testing.T) {
	t.Parallel()
	url := testdb.NewURL(t)
	var limiters []*ratelimit.Limiter
	for range 2 {
		pool, err := pgxpool.New(context.Background(), url)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(pool.Close)
		limiters = append(limiters, newLimiter(t, pool, "(POST, *, .*, 25, HOUR)"))
	}
	var allowed atomic.Int32
	var wg sync.WaitGroup
	for i := range 80 {
		wg.Go(func() {
			d, err := limiters[i%2].Take(context.Background(), "shared", "POST", "/instances")
			if err != nil {
				t.Error(err)
			}
			if d.Allowed {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 25 {
		t.Errorf("%d of 80 concurrent requests allowed across two replicas, want exactly 25", n)
	}
}

func TestMiddleware(t *testing.T) {
	t.Parallel()
	pool := testdb.New(t)
	l := newLimiter(t, pool, "(GET, *, .*, 1, MINUTE);(POST, */mgmt, ^/mgmt, 1, MINUTE)")
	var served atomic.Int32
	h := l.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { served.Add(1) }))
	call := func(method, path, project string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(method, path, nil)
		if project != "" {
			r = r.WithContext(auth.WithPrincipal(r.Context(), &auth.Principal{ProjectID: project}))
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	if w := call("GET", "/v1.0/p/instances", "p"); w.Code != 200 {
		t.Fatalf("first GET: %d", w.Code)
	}
	w := call("GET", "/v1.0/p/flavors", "p")
	if w.Code != 413 || w.Header().Get("Content-Type") != "application/json" {
		t.Fatalf("second GET: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	var body map[string]struct {
		Code       int    `json:"code"`
		Message    string `json:"message"`
		Details    string `json:"details"`
		RetryAfter string `json:"retryAfter"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || len(body) != 1 {
		t.Fatalf("body %s: %v", w.Body, err)
	}
	f := body["overLimit"]
	secs, _ := strconv.Atoi(w.Header().Get("Retry-After"))
	if f.Code != 413 || f.Message == "" || f.Details != "Only 1 GET request(s) can be made to * every minute." ||
		f.RetryAfter != w.Header().Get("Retry-After") || secs < 59 || secs > 60 {
		t.Errorf("fault %+v, Retry-After %q", f, w.Header().Get("Retry-After"))
	}
	// No principal (the version document): not counted.
	for range 3 {
		if w := call("GET", "/", ""); w.Code != 200 {
			t.Errorf("unauthenticated GET /: %d", w.Code)
		}
	}
	// The mgmt regex sees the path below the tenant.
	if w := call("POST", "/v1.0/p/mgmt/instances/x/action", "p"); w.Code != 200 {
		t.Errorf("first mgmt POST: %d", w.Code)
	}
	if w := call("POST", "/v1.0/p/mgmt/instances/x/action", "p"); w.Code != 413 {
		t.Errorf("second mgmt POST: %d", w.Code)
	}
	if w := call("POST", "/v1.0/p/instances", "p"); w.Code != 200 {
		t.Errorf("non-mgmt POST: %d", w.Code)
	}
	if n := served.Load(); n != 6 {
		t.Errorf("handler ran %d times, want 6", n)
	}

	// Counters unavailable: let through.
	broken, err := pgxpool.New(context.Background(), testdb.NewURL(t))
	if err != nil {
		t.Fatal(err)
	}
	broken.Close()
	bl := newLimiter(t, broken, "(GET, *, .*, 1, MINUTE)")
	bh := bl.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for range 2 {
		r := httptest.NewRequest("GET", "/v1.0/p/instances", nil)
		r = r.WithContext(auth.WithPrincipal(r.Context(), &auth.Principal{ProjectID: "p"}))
		rec := httptest.NewRecorder()
		bh.ServeHTTP(rec, r)
		if rec.Code != 200 {
			t.Errorf("with the database down: %d", rec.Code)
		}
	}
	// No limits: no middleware at all.
	var nl *ratelimit.Limiter
	if d, err := nl.Take(context.Background(), "p", "GET", "/"); err != nil || !d.Allowed {
		t.Errorf("nil limiter: %+v %v", d, err)
	}
}
