package objectstore_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
	"github.com/coffer-dbaas/coffer/internal/objectstoretest"
)

// BenchmarkGrantPutGet moves 64 MiB segments (the pipeline's default
// segment size) through grants with a plain net/http client, as the agent
// does: PUT with Content-Length, then GET. It reports upload and download
// MB/s (10^6 bytes) per backend. The file store is served over TLS by
// httptest, as the agent API always is; MinIO and Swift are plain HTTP on
// loopback.
//
//	go test -run '^$' -bench GrantPutGet -benchtime 3x ./internal/objectstore/
func BenchmarkGrantPutGet(b *testing.B) {
	const size = 64 << 20
	data := randomBytes(size)
	for _, kind := range []string{"file", "s3", "swift"} {
		b.Run(kind, func(b *testing.B) {
			st, c, client := benchStore(b, kind)
			ctx := context.Background()
			var putTime, getTime time.Duration
			b.SetBytes(size)
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				key := fmt.Sprintf("bench/segment-%06d", i)
				g, err := st.GrantPut(ctx, c, key, size, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				start := time.Now()
				req, _ := http.NewRequest(g.Method, g.URL, bytes.NewReader(data))
				resp, err := client.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					b.Fatalf("PUT: %d", resp.StatusCode)
				}
				putTime += time.Since(start)

				gg, err := st.GrantGet(ctx, c, key, time.Minute)
				if err != nil {
					b.Fatal(err)
				}
				start = time.Now()
				resp, err = client.Get(gg.URL)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if err != nil || n != size || resp.StatusCode != 200 {
					b.Fatalf("GET: %d, %d bytes, %v", resp.StatusCode, n, err)
				}
				getTime += time.Since(start)
				b.StopTimer()
				st.Delete(ctx, c, key)
				b.StartTimer()
			}
			mb := float64(size) * float64(b.N) / 1e6
			b.ReportMetric(mb/putTime.Seconds(), "put-MB/s")
			b.ReportMetric(mb/getTime.Seconds(), "get-MB/s")
			b.Logf("%s: %d × 64 MiB: upload %.0f MB/s, download %.0f MB/s", kind, b.N, mb/putTime.Seconds(), mb/getTime.Seconds())
		})
	}
}

func benchStore(b *testing.B, kind string) (objectstore.Store, string, *http.Client) {
	b.Helper()
	switch kind {
	case "file":
		f, err := objectstore.NewFile(b.TempDir(), "")
		if err != nil {
			b.Fatal(err)
		}
		mux := http.NewServeMux()
		mux.Handle(objectstore.ObjectsPath, f.Handler())
		srv := httptest.NewTLSServer(mux)
		b.Cleanup(srv.Close)
		if err := f.SetBaseURL(srv.URL); err != nil {
			b.Fatal(err)
		}
		if err := f.EnsureContainer(context.Background(), "bench"); err != nil {
			b.Fatal(err)
		}
		return f, "bench", srv.Client()
	case "s3":
		st, c := openServer(b, objectstoretest.MinIO(b))
		return st, c, http.DefaultClient
	default:
		st, c := openServer(b, objectstoretest.Swift(b))
		return st, c, http.DefaultClient
	}
}
