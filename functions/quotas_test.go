package functions_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/functions"
	"github.com/coffer-dbaas/coffer/internal/auth"
	"github.com/coffer-dbaas/coffer/internal/ratelimit"
)

func quotaMap(t *testing.T, body map[string]any) map[string]map[string]any {
	t.Helper()
	out := map[string]map[string]any{}
	for _, q := range body["quotas"].([]any) {
		m := q.(map[string]any)
		out[m["resource"].(string)] = m
	}
	return out
}

func TestQuotasAndLimits(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	a, b := "/v1.0/"+f.projectA, "/v1.0/"+f.projectB

	code, body := f.do(t, "GET", a+"/mgmt/quotas/"+f.projectA, f.tokenA, "")
	if code != 200 {
		t.Fatalf("show own quotas: %d %v", code, body)
	}
	q := quotaMap(t, body)
	for r, want := range map[string]float64{"instances": 10, "ram": -1, "backups": 50, "volumes": 40} {
		if q[r]["limit"] != want || q[r]["in_use"] != 0.0 || q[r]["reserved"] != 0.0 {
			t.Errorf("%s = %v, want limit %v", r, q[r], want)
		}
	}
	code, body = f.do(t, "GET", a+"/limits", f.tokenA, "")
	if code != 200 {
		t.Fatalf("limits: %d %v", code, body)
	}
	abs := body["limits"].([]any)[0].(map[string]any)
	if abs["verb"] != "ABSOLUTE" || abs["max_instances"] != 10.0 || abs["max_ram"] != -1.0 || abs["max_backups"] != 50.0 || abs["max_volumes"] != 40.0 {
		t.Errorf("absolute limits = %v", abs)
	}

	// Another project's quotas: admins only (403); setting: admins only,
	// with Trove's 401.
	code, body = f.do(t, "GET", b+"/mgmt/quotas/"+f.projectA, f.tokenB, "")
	if code != 403 {
		t.Errorf("show another project's quotas: %d", code)
	}
	fault(t, body, "forbidden", 403)
	code, body = f.do(t, "PUT", a+"/mgmt/quotas/"+f.projectA, f.tokenA, `{"quotas": {"instances": 100}}`)
	if code != 401 {
		t.Errorf("member sets quotas: %d", code)
	}
	fault(t, body, "unauthorized", 401)
	for _, c := range []struct {
		body, fault string
		code        int
	}{
		{`{"quotas": {"flavors": 3}}`, "itemNotFound", 404},
		{`{"quotas": {"instances": -2}}`, "badRequest", 400},
		{`{"quotas": {"instances": "many"}}`, "badRequest", 400},
		{`{"quotas": {"instances": 1.5}}`, "badRequest", 400},
		{`{"quotas": {"instances": 5, "flavors": 3}}`, "itemNotFound", 404},
		{`{}`, "badRequest", 400},
	} {
		code, body := f.do(t, "PUT", a+"/mgmt/quotas/"+f.projectB, f.admin, c.body)
		if code != c.code {
			t.Errorf("%s: %d, want %d (%v)", c.body, code, c.code, body)
			continue
		}
		fault(t, body, c.fault, c.code)
	}
	if n := f.count(t, "quota"); n != 0 {
		t.Errorf("refused updates stored %d quotas", n)
	}
	code, body = f.do(t, "PUT", a+"/mgmt/quotas/"+f.projectB, f.admin, `{"quotas": {"instances": 2, "volumes": 3, "ram": null}}`)
	if code != 200 {
		t.Fatalf("admin sets quotas: %d %v", code, body)
	}
	if set := body["quotas"].(map[string]any); len(set) != 2 || set["instances"] != 2.0 || set["volumes"] != 3.0 {
		t.Errorf("update answer = %v", body)
	}
	code, body = f.do(t, "GET", a+"/mgmt/quotas/"+f.projectB, f.admin, "")
	if q := quotaMap(t, body); code != 200 || q["instances"]["limit"] != 2.0 || q["volumes"]["limit"] != 3.0 || q["ram"]["limit"] != -1.0 {
		t.Errorf("admin reads b's quotas: %d %v", code, body)
	}
	if code, body = f.do(t, "GET", b+"/limits", f.tokenB, ""); body["limits"].([]any)[0].(map[string]any)["max_instances"] != 2.0 {
		t.Errorf("b's limits = %v", body)
	}

	// Exceeding a quota: 413 with Trove's message, nothing written.
	create := func() (int, map[string]any) {
		return f.do(t, "POST", b+"/instances", f.tokenB, `{"instance": {"name": "q", "flavorRef": "1", "volume": {"size": 1}}}`)
	}
	for range 2 {
		if code, body := create(); code != 200 {
			t.Fatalf("create within quota: %d %v", code, body)
		}
	}
	code, body = create()
	if code != 413 {
		t.Fatalf("create over quota: %d %v", code, body)
	}
	if msg := fault(t, body, "overLimit", 413); msg != "Quota exceeded for resources: ['instances']." {
		t.Errorf("message %q", msg)
	}
	code, body = f.do(t, "GET", b+"/mgmt/quotas/"+f.projectB, f.tokenB, "")
	if q := quotaMap(t, body); q["instances"]["in_use"] != 2.0 || q["ram"]["in_use"] != 1024.0 || q["volumes"]["in_use"] != 2.0 {
		t.Errorf("usage = %v", body)
	}
	// Several resources at once; a deleting instance frees its share.
	if code, body = f.do(t, "PUT", a+"/mgmt/quotas/"+f.projectB, f.admin, `{"quotas": {"instances": 3, "volumes": 2}}`); code != 200 {
		t.Fatalf("%d %v", code, body)
	}
	code, body = create()
	if msg := fault(t, body, "overLimit", 413); msg != "Quota exceeded for resources: ['volumes']." {
		t.Errorf("volumes over: %q", msg)
	}
	if _, err := f.pool.Exec(context.Background(), "UPDATE instance SET task = 'DELETING' WHERE id = (SELECT id FROM instance WHERE project_id = $1 LIMIT 1)", f.projectB); err != nil {
		t.Fatal(err)
	}
	if code, body = create(); code != 200 {
		t.Errorf("create after a delete freed quota: %d %v", code, body)
	}
}

// Concurrent creates against a quota of N: exactly N succeed, whatever the
// interleaving.
func TestQuotaConcurrentCreates(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	const quota, attempts = 3, 24
	if code, body := f.do(t, "PUT", "/v1.0/"+f.projectA+"/mgmt/quotas/"+f.projectA, f.admin, `{"quotas": {"instances": 3}}`); code != 200 {
		t.Fatalf("set quota: %d %v", code, body)
	}
	var wg sync.WaitGroup
	codes := make([]int, attempts)
	start := make(chan struct{})
	for i := range attempts {
		wg.Go(func() {
			<-start
			codes[i], _ = f.do(t, "POST", "/v1.0/"+f.projectA+"/instances", f.tokenA,
				`{"instance": {"name": "race", "flavorRef": "1", "volume": {"size": 1}}}`)
		})
	}
	close(start)
	wg.Wait()
	count := map[int]int{}
	for _, c := range codes {
		count[c]++
	}
	if count[200] != quota || count[413] != attempts-quota {
		t.Errorf("answers %v, want %d × 200 and %d × 413", count, quota, attempts-quota)
	}
	var rows int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM instance WHERE project_id = $1", f.projectA).Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if rows != quota {
		t.Errorf("%d instances exist, quota %d", rows, quota)
	}
}

// With rate limiting on, GET /limits lists each configured limit after the
// absolute block, with the project's standing.
func TestLimitsListRateLimits(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	limiter, err := ratelimit.New(f.pool, []ratelimit.Limit{
		{Verb: "GET", URI: "*", Regex: ".*", Value: 50, Unit: "MINUTE"},
		{Verb: "POST", URI: "*/mgmt", Regex: "^/mgmt", Value: 5, Unit: "HOUR"},
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := river.NewClient(riverpgxv5.New(f.pool), &river.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(functions.Handler(&functions.Deps{
		Pool: f.pool, River: rc, Auth: &auth.Builtin{Queries: store.New(f.pool)}, RateLimit: limiter,
		DefaultDatastore: "postgresql", MaxVolumeGB: 10, Logger: slog.New(slog.DiscardHandler),
	}))
	defer srv.Close()
	var body struct {
		Limits []map[string]any `json:"limits"`
	}
	for range 3 {
		req, _ := http.NewRequest("GET", srv.URL+"/v1.0/"+f.projectA+"/limits", nil)
		req.Header.Set("X-Auth-Token", f.tokenA)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body.Limits = nil
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 {
			t.Fatalf("limits: %d %v", resp.StatusCode, err)
		}
		resp.Body.Close()
	}
	if len(body.Limits) != 3 || body.Limits[0]["verb"] != "ABSOLUTE" {
		t.Fatalf("limits = %v", body.Limits)
	}
	get, post := body.Limits[1], body.Limits[2]
	if get["verb"] != "GET" || get["value"] != 50.0 || get["unit"] != "MINUTE" || get["remaining"] != 47.0 || get["uri"] != "*" {
		t.Errorf("GET limit after 3 requests = %v", get)
	}
	if post["verb"] != "POST" || post["remaining"] != 5.0 || post["regex"] != "^/mgmt" {
		t.Errorf("POST limit = %v", post)
	}
	if next, _ := get["nextAvailable"].(string); len(next) != len("2006-01-02T15:04:05Z") || !strings.HasSuffix(next, "Z") {
		t.Errorf("nextAvailable = %q", get["nextAvailable"])
	}
}
