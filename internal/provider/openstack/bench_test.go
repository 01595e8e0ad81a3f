package openstack

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/provider"
)

// Benchmarks with fixed samples; run with -benchtime 1x, e.g.
//
//	COFFER_TEST_OPENSTACK_DIR=/tmp/os go test -run '^$' -bench . -benchtime 1x ./internal/provider/openstack/
//
// Each iteration creates its instances, measures, checks and deletes them.

// BenchmarkCreateToActive: CreateServer called → it returns with Nova
// reporting ACTIVE, for instances created one after another.
func BenchmarkCreateToActive(b *testing.B) {
	const sample = 5
	p := newProvider(b)
	for b.Loop() {
		var times []time.Duration
		for range sample {
			id := newInstanceID()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			t0 := time.Now()
			srv, err := p.CreateServer(ctx, testSpec(id))
			d := time.Since(t0)
			cancel()
			if err != nil || srv.Status != provider.StatusActive {
				b.Fatalf("CreateServer = %+v, %v", srv, err)
			}
			times = append(times, d)
			b.StopTimer()
			deleteAndCheck(b, p, id)
			b.StartTimer()
		}
		slices.Sort(times)
		b.ReportMetric(times[len(times)/2].Seconds(), "p50-s/create")
		b.ReportMetric(times[len(times)-1].Seconds(), "max-s/create")
		b.Logf("create → ACTIVE, %d sequential: %v", sample, times)
	}
}

// BenchmarkConcurrentCreate10: ten instances created at once (as ten
// workers would): the time until all are ACTIVE, each ending with exactly
// one server, volume, port and security group; then deleted at once.
func BenchmarkConcurrentCreate10(b *testing.B) {
	const n = 10
	p := newProvider(b)
	for b.Loop() {
		ids := make([]string, n)
		times := make([]time.Duration, n)
		errs := make([]error, n)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		t0 := time.Now()
		var wg sync.WaitGroup
		for i := range n {
			ids[i] = newInstanceID()
			wg.Go(func() {
				srv, err := p.CreateServer(ctx, testSpec(ids[i]))
				if err == nil && srv.Status != provider.StatusActive {
					err = &statusError{srv}
				}
				times[i], errs[i] = time.Since(t0), err
			})
		}
		wg.Wait()
		total := time.Since(t0)
		cancel()
		b.StopTimer()
		for i, id := range ids {
			if errs[i] != nil {
				b.Errorf("instance %d: %v", i, errs[i])
			}
			if inv := takeInventory(b, p.projectID, id); !inv.oneSet() {
				b.Errorf("instance %d: %s, want one of each", i, inv)
			}
		}
		t1 := time.Now()
		for _, id := range ids {
			wg.Go(func() { deleteChecked(b, p, id) })
		}
		wg.Wait()
		deleted := time.Since(t1)
		b.StartTimer()
		slices.Sort(times)
		b.ReportMetric(total.Seconds(), "total-s")
		b.ReportMetric(times[n/2].Seconds(), "p50-s/create")
		b.ReportMetric(deleted.Seconds(), "delete-all-s")
		b.Logf("%d concurrent creates: all ACTIVE after %s (p50 %s); all deleted in %s",
			n, total.Round(time.Millisecond), times[n/2].Round(time.Millisecond), deleted.Round(time.Millisecond))
	}
}

type statusError struct{ srv provider.Server }

func (e *statusError) Error() string { return "server is " + e.srv.Status + ": " + e.srv.Fault }
