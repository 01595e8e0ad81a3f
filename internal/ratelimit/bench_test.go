package ratelimit_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/coffer-dbaas/coffer/internal/ratelimit"
	"github.com/coffer-dbaas/coffer/internal/testdb"
)

// BenchmarkTake is the cost the rate limiter adds to a request: one upsert
// of the project's bucket row. serial: one client; parallel-one-project:
// 8 goroutines per CPU on the same (hot, row-locked) row; parallel-projects:
// each goroutine its own project.
func BenchmarkTake(b *testing.B) {
	pool := testdb.New(b)
	l, err := ratelimit.New(pool, []ratelimit.Limit{{Verb: "GET", URI: "*", Regex: ".*", Value: 1e9, Unit: "MINUTE"}}, nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	take := func(b *testing.B, project string) {
		if d, err := l.Take(ctx, project, "GET", "/instances"); err != nil || !d.Allowed {
			b.Fatal(d, err)
		}
	}
	b.Run("serial", func(b *testing.B) {
		for b.Loop() {
			take(b, "p")
		}
	})
	b.Run("parallel-one-project", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				take(b, "hot")
			}
		})
	})
	var n atomic.Int64
	b.Run("parallel-projects", func(b *testing.B) {
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			project := fmt.Sprint("p-", n.Add(1))
			for pb.Next() {
				take(b, project)
			}
		})
	})
}
