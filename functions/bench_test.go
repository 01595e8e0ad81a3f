package functions_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
)

// BenchmarkInstanceRead measures GET show and GET list (one page of 20)
// against a project holding 1,000 instances, over HTTP on loopback with
// built-in token auth. It reports p50/p99 latency and requests/s of a
// sequential client; run with -benchtime 1x (the sample size is fixed).
func BenchmarkInstanceRead(b *testing.B) {
	f := newAPI(b)
	ctx := context.Background()
	var some uuid.UUID
	// 1,000 ACTIVE instances written directly: provisioning is not measured here.
	for i := range 1000 {
		id := uuid.New()
		if i == 500 {
			some = id
		}
		if _, err := f.pool.Exec(ctx, `INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id,
			task, compute_status, service_status, heartbeat_at, address, port)
			SELECT $1, $2, $3, '1', 1, id, 'NONE', 'ACTIVE', 'healthy', now(), '127.10.0.2', 5432
			FROM datastore_version WHERE manager = 'postgresql' LIMIT 1`, id, f.projectA, fmt.Sprintf("bench-%04d", i)); err != nil {
			b.Fatal(err)
		}
	}
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}
	get := func(path string) time.Duration {
		req, _ := http.NewRequest("GET", f.srv.URL+path, nil)
		req.Header.Set("X-Auth-Token", f.tokenA)
		start := time.Now()
		resp, err := client.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			b.Fatalf("GET %s: %d", path, resp.StatusCode)
		}
		return time.Since(start)
	}
	const samples = 2000
	for _, c := range []struct{ name, path string }{
		{"show", "/v1.0/" + f.projectA + "/instances/" + some.String()},
		{"list", "/v1.0/" + f.projectA + "/instances"},
	} {
		b.Run(c.name, func(b *testing.B) {
			for range b.N {
				for range 50 { // warm up connections and plans
					get(c.path)
				}
				lat := make([]time.Duration, samples)
				start := time.Now()
				for i := range lat {
					lat[i] = get(c.path)
				}
				total := time.Since(start)
				slices.Sort(lat)
				b.ReportMetric(float64(lat[samples/2].Microseconds())/1000, "p50-ms")
				b.ReportMetric(float64(lat[samples*99/100].Microseconds())/1000, "p99-ms")
				b.ReportMetric(float64(samples)/total.Seconds(), "req/s")
			}
		})
	}
}
