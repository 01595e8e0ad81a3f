package functions_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/functions"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/keystonetest"
	"github.com/coffer-dbaas/coffer/internal/ratelimit"
)

// BenchmarkInstanceReadAuth is BenchmarkInstanceRead (GET show and GET list
// of one page, 1,000 instances in the project, sequential client over
// loopback HTTP) once per authentication setup, in the same run:
//
//   - builtin: built-in tokens (one indexed lookup in Postgres per request)
//   - keystone: a real Keystone, validations cached (the default 60 s TTL;
//     the one miss is in the warm-up)
//   - keystone-nocache: every request validated by Keystone (200 samples)
//   - builtin+ratelimit, keystone+ratelimit: with Trove's per-project rate
//     limits counted in Postgres (limits high enough never to refuse), to
//     see what the counter upsert costs
//
// Run with -benchtime 1x (the sample size is fixed); p50/p99 in ms and
// req/s per sub-benchmark.
func BenchmarkInstanceReadAuth(b *testing.B) {
	f := newAPI(b)
	ks := keystonetest.Start(b)
	ctx := context.Background()
	if _, err := store.New(f.pool).UpsertProject(ctx, store.UpsertProjectParams{ID: ks.Demo.ProjectID, Name: "keystone-demo"}); err != nil {
		b.Fatal(err)
	}
	showA := benchInsertInstances(b, f.pool, f.projectA)
	showK := benchInsertInstances(b, f.pool, ks.Demo.ProjectID)
	// Fresh statistics, so the first variant does not run on stale plans.
	if _, err := f.pool.Exec(ctx, "ANALYZE instance"); err != nil {
		b.Fatal(err)
	}

	rc, err := river.NewClient(riverpgxv5.New(f.pool), &river.Config{})
	if err != nil {
		b.Fatal(err)
	}
	keystone := func(ttl time.Duration) auth.Authenticator {
		k, err := auth.NewKeystone(auth.KeystoneConfig{
			AuthURL: ks.AuthURL, Username: ks.Service.Name, Password: ks.Service.Password,
			ProjectName: ks.Service.ProjectName, CacheTTL: ttl,
		})
		if err != nil {
			b.Fatal(err)
		}
		return k
	}
	// Never refuses here: 10^9 a minute.
	limiter, err := ratelimit.New(f.pool, []ratelimit.Limit{{Verb: "GET", URI: "*", Regex: ".*", Value: 1e9, Unit: "MINUTE"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	serve := func(a auth.Authenticator, l *ratelimit.Limiter) string {
		srv := httptest.NewServer(functions.Handler(&functions.Deps{
			Pool: f.pool, River: rc, Auth: a, RateLimit: l, Region: "RegionOne",
			DefaultDatastore: "postgresql", MaxVolumeGB: 10, Logger: slog.New(slog.DiscardHandler),
		}))
		b.Cleanup(srv.Close)
		return srv.URL
	}
	demoToken := ks.Token(b, ks.Demo)
	builtin := &auth.Builtin{Queries: store.New(f.pool)}
	for _, v := range []struct {
		name, url, token, project string
		show                      uuid.UUID
		samples                   int
	}{
		{"builtin", serve(builtin, nil), f.tokenA, f.projectA, showA, 2000},
		{"keystone", serve(keystone(0), nil), demoToken, ks.Demo.ProjectID, showK, 2000},
		{"keystone-nocache", serve(keystone(-1), nil), demoToken, ks.Demo.ProjectID, showK, 200},
		{"builtin+ratelimit", serve(builtin, limiter), f.tokenA, f.projectA, showA, 2000},
		{"keystone+ratelimit", serve(keystone(0), limiter), demoToken, ks.Demo.ProjectID, showK, 2000},
	} {
		for _, c := range []struct{ name, path string }{
			{"show", "/v1.0/" + v.project + "/instances/" + v.show.String()},
			{"list", "/v1.0/" + v.project + "/instances"},
		} {
			b.Run(v.name+"/"+c.name, func(b *testing.B) {
				for range b.N {
					benchGets(b, v.url+c.path, v.token, v.samples)
				}
			})
		}
	}
}

// benchInsertInstances writes 1,000 ACTIVE instances of project directly
// (provisioning is not measured) and returns one of them.
func benchInsertInstances(b *testing.B, pool *pgxpool.Pool, project string) uuid.UUID {
	b.Helper()
	var some uuid.UUID
	for i := range 1000 {
		id := uuid.New()
		if i == 500 {
			some = id
		}
		if _, err := pool.Exec(context.Background(), `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id,
			task, compute_status, service_status, heartbeat_at, address, port)
			SELECT $1, $2, $3, '1', 1, id, 'NONE', 'ACTIVE', 'healthy', now(), '127.10.0.2', 5432
			FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, id, project, fmt.Sprintf("bench-%04d", i)); err != nil {
			b.Fatal(err)
		}
	}
	return some
}

// benchGets runs samples sequential GETs of url after a warm-up and
// reports p50, p99 and requests/s.
func benchGets(b *testing.B, url, token string, samples int) {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	get := func() time.Duration {
		req, _ := http.NewRequest("GET", url, nil)
		req.Header.Set("X-Auth-Token", token)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("GET %s: %d", url, resp.StatusCode)
		}
		return time.Since(start)
	}
	for range 50 { // warm up connections, plans and the token cache
		get()
	}
	lat := make([]time.Duration, samples)
	start := time.Now()
	for i := range lat {
		lat[i] = get()
	}
	total := time.Since(start)
	slices.Sort(lat)
	b.ReportMetric(float64(lat[samples/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(lat[samples*99/100].Microseconds())/1000, "p99-ms")
	b.ReportMetric(float64(samples)/total.Seconds(), "req/s")
}
