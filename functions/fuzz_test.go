package functions_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
)

// FuzzCreateInstanceBody feeds arbitrary bodies to POST /instances: the
// answer is never a 5xx, always JSON, and every error is a single Trove
// fault whose code matches the status. (As a plain test it runs the seed
// corpus; `go test -fuzz FuzzCreateInstanceBody ./functions` explores.)
func FuzzCreateInstanceBody(f *testing.F) {
	for _, seed := range []string{
		validCreate,
		``, `{}`, `[]`, `null`, `"x"`, `{"instance": null}`, `{"instance": []}`,
		`{"instance": {"name": "x", "flavorRef": 1.5, "volume": {"size": 1}}}`,
		`{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": -1}}}`,
		`{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 99999999999999999999}}}`,
		`{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "users": [{"name": "u", "password": "p", "databases": [{"name": 7}]}]}}`,
		`{"instance": {"name": "` + strings.Repeat("a", 300) + `", "flavorRef": "1", "volume": {"size": 1}}}`,
		`{"instance": {"name": "x\u0000y", "flavorRef": "../../1", "volume": {"size": "1"}}}`,
		`{"instance": {"name": "x", "flavorRef": {"id": 1}, "volume": {"size": 1}, "datastore": "pg"}}`,
		`{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}, "nics": [{"net-id": "n"}], "access": {"is_public": "yes"}}}`,
		`{"instance": {"name": "x", "flavorRef": "1", "volume": {"size": 1}}, "instance": {"name": 2}}`,
		"{\"instance\": {\"name\": \"\xff\xfe\", \"flavorRef\": \"1\", \"volume\": {\"size\": 1}}}",
	} {
		f.Add(seed)
	}
	api := newAPI(f)
	path := "/v1.0/" + api.projectA + "/instances"
	f.Fuzz(func(t *testing.T, body string) {
		req, _ := http.NewRequestWithContext(context.Background(), "POST", api.srv.URL+path, strings.NewReader(body))
		req.Header.Set("X-Auth-Token", api.tokenA)
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 500 {
			t.Fatalf("body %q: %d %s", body, resp.StatusCode, raw)
		}
		var out map[string]json.RawMessage
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("body %q: answer not a JSON object: %q", body, raw)
		}
		if resp.StatusCode == 200 {
			if _, ok := out["instance"]; !ok {
				t.Fatalf("body %q: 200 without instance: %s", body, raw)
			}
			return
		}
		if len(out) != 1 {
			t.Fatalf("body %q: fault must have one key: %s", body, raw)
		}
		for name, v := range out {
			var fault struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if err := json.Unmarshal(v, &fault); err != nil || fault.Code != resp.StatusCode || fault.Message == "" || name == "" {
				t.Fatalf("body %q: bad fault %s (status %d)", body, raw, resp.StatusCode)
			}
		}
	})
}
