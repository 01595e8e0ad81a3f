package backupstream

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// objectServer stands in for the grant URLs: an HTTPS server that stores
// PUT bodies in memory and serves them back, accepting a request only with
// the signature its granter put in the URL, and a PUT only with the
// Content-Length the grant was for (as the real stores do).
type objectServer struct {
	t   testing.TB
	srv *httptest.Server
	sig string // the grant URLs' secret

	mu      sync.Mutex
	objects map[string][]byte
	puts    int // successful PUTs
	gets    map[string]int
	// failPutsAfter, when >= 0, answers every PUT after that many
	// successful ones with 500.
	failPutsAfter int
	failedAt      time.Time // of the last such answer
	// deny answers every request with an S3-style 403 that echoes the
	// signature, as S3's SignatureDoesNotMatch does.
	deny bool
}

func newObjectServer(t testing.TB) *objectServer {
	t.Helper()
	s := &objectServer{
		t:             t,
		sig:           "SIG" + rand.Text(),
		objects:       map[string][]byte{},
		gets:          map[string]int{},
		failPutsAfter: -1,
	}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	t.Cleanup(s.srv.Close)
	return s
}

func (s *objectServer) serve(w http.ResponseWriter, r *http.Request) {
	key := strings.TrimPrefix(r.URL.Path, "/objects/")
	if r.URL.Query().Get("sig") != s.sig {
		http.Error(w, "bad signature", http.StatusForbidden)
		return
	}
	s.mu.Lock()
	deny := s.deny
	s.mu.Unlock()
	if deny {
		w.WriteHeader(http.StatusForbidden)
		fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message><SignatureProvided>%s</SignatureProvided><StringToSign>PUT %s</StringToSign></Error>`, s.sig, r.URL.RequestURI())
		return
	}
	switch r.Method {
	case http.MethodPut:
		size, err := strconv.ParseInt(r.URL.Query().Get("size"), 10, 64)
		if err != nil || r.ContentLength != size {
			http.Error(w, fmt.Sprintf("Content-Length %d, granted %q", r.ContentLength, r.URL.Query().Get("size")), http.StatusBadRequest)
			return
		}
		body, err := io.ReadAll(r.Body)
		if err != nil || int64(len(body)) != size {
			http.Error(w, "short body", http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.failPutsAfter >= 0 && s.puts >= s.failPutsAfter {
			s.failedAt = time.Now()
			http.Error(w, "backend exploded", http.StatusInternalServerError)
			return
		}
		s.puts++
		s.objects[key] = body
		sum := sha256.Sum256(body)
		w.Header().Set("ETag", `"`+hex.EncodeToString(sum[:8])+`"`)
		w.WriteHeader(http.StatusCreated)
	case http.MethodGet:
		s.mu.Lock()
		body, ok := s.objects[key]
		s.gets[key]++
		s.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		_, _ = w.Write(body)
	default:
		http.Error(w, "method", http.StatusMethodNotAllowed)
	}
}

func segmentKey(n int) string { return fmt.Sprintf("segment-%06d", n) }

func (s *objectServer) object(n int) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return bytes.Clone(s.objects[segmentKey(n)])
}

func (s *objectServer) setObject(n int, b []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.objects[segmentKey(n)] = b
}

func (s *objectServer) lastFailure() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.failedAt
}

func (s *objectServer) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.objects)
}

func (s *objectServer) getCount(n int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gets[segmentKey(n)]
}

// testGranter grants requests on objectServer and records the reports.
type testGranter struct {
	s *objectServer
	// order, if set, maps a segment index to the object it is read from
	// (restore tests that reorder, drop or repeat segments).
	order []int

	mu      sync.Mutex
	reports map[int]protocol.SegmentReport
	grants  int
}

func newGranter(s *objectServer) *testGranter {
	return &testGranter{s: s, reports: map[int]protocol.SegmentReport{}}
}

func (g *testGranter) Grant(ctx context.Context, n int, method string, size int64, sha string) (protocol.Grant, error) {
	if err := ctx.Err(); err != nil {
		return protocol.Grant{}, err
	}
	g.mu.Lock()
	g.grants++
	g.mu.Unlock()
	obj := n
	if g.order != nil {
		obj = g.order[n]
	}
	q := url.Values{"sig": {g.s.sig}}
	if method == http.MethodPut {
		if len(sha) != 64 {
			return protocol.Grant{}, fmt.Errorf("PUT grant without a SHA-256")
		}
		q.Set("size", strconv.FormatInt(size, 10))
	}
	return protocol.Grant{
		Method:  method,
		URL:     g.s.srv.URL + "/objects/" + segmentKey(obj) + "?" + q.Encode(),
		Expires: time.Now().Add(time.Minute),
	}, nil
}

func (g *testGranter) SegmentDone(_ context.Context, n int, r protocol.SegmentReport) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, dup := g.reports[n]; dup {
		return fmt.Errorf("segment %d reported twice", n)
	}
	g.reports[n] = r
	return nil
}

func (g *testGranter) Client() *http.Client { return g.s.srv.Client() }

// infos returns the segments as the control plane would record them from
// the reports, in order.
func (g *testGranter) infos(t testing.TB) []protocol.SegmentInfo {
	t.Helper()
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]protocol.SegmentInfo, len(g.reports))
	for n, r := range g.reports {
		if n >= len(out) {
			t.Fatalf("segment %d reported but only %d segments", n, len(out))
		}
		out[n] = protocol.SegmentInfo{Size: r.Size, SHA256: r.SHA256}
	}
	return out
}

// leakCheck runs fn with a goroutine label unique to the test, then waits
// until no goroutine carrying it is left: every goroutine fn starts,
// directly or not (zstd's, the HTTP transport's), inherits the label.
func leakCheck(t *testing.T, client *http.Client, fn func(ctx context.Context)) {
	t.Helper()
	label := "leakcheck-" + rand.Text()
	pprof.Do(context.Background(), pprof.Labels("leakcheck", label), fn)
	client.CloseIdleConnections()
	needle := fmt.Sprintf(`"leakcheck":%q`, label)
	deadline := time.Now().Add(5 * time.Second)
	for {
		var buf bytes.Buffer
		_ = pprof.Lookup("goroutine").WriteTo(&buf, 1)
		if !strings.Contains(buf.String(), needle) {
			return
		}
		if time.Now().After(deadline) {
			var stacks strings.Builder
			for rec := range strings.SplitSeq(buf.String(), "\n\n") {
				if strings.Contains(rec, needle) {
					stacks.WriteString(rec + "\n\n")
				}
			}
			t.Fatalf("goroutines left running 5s after return:\n%s", stacks.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
