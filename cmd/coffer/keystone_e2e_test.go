package main_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
)

// Coffer behind a real Keystone, driven by the real CLIs the way an
// OpenStack user drives Trove: password authentication, the `database`
// endpoint from Keystone's catalog, tokens validated by Coffer with its
// service user (COFFER_AUTH=keystone). Two projects (demo, alt) each see
// only their own instances; Trove's policy statuses for members on admin
// routes; 401 for a wrong token; 503 — not 500 — while Keystone is down.

// ksAPI calls the API directly with a token; tenant is the {tenant_id}.
func ksAPI(t *testing.T, c *coffer, method, tenant, path, token, body string) (int, http.Header, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, c.url+"/v1.0/"+tenant+path, strings.NewReader(body))
	req.Header.Set("X-Auth-Token", token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(bytes.TrimSpace(raw)) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			t.Fatalf("%s %s: %d, not JSON: %q", method, path, resp.StatusCode, raw)
		}
	}
	return resp.StatusCode, resp.Header, out
}

// ksFault asserts a Trove fault of the given status.
func ksFault(t *testing.T, what string, code int, body map[string]any, want int, name string) {
	t.Helper()
	f, ok := body[name].(map[string]any)
	if code != want || !ok || f["code"] != float64(want) || f["message"] == "" {
		t.Errorf("%s: %d %v, want %d %s", what, code, body, want, name)
	}
}

// ksWait polls the instance as token until its status is want ("" = gone).
func ksWait(t *testing.T, c *coffer, tenant, id, token, want string) map[string]any {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	var last map[string]any
	for time.Now().Before(deadline) {
		code, _, body := ksAPI(t, c, "GET", tenant, "/instances/"+id, token, "")
		if code == 404 && want == "" {
			return nil
		}
		if code == 200 {
			last = body["instance"].(map[string]any)
			if last["status"] == want {
				return last
			}
			if last["status"] == "ERROR" {
				t.Fatalf("instance %s went to ERROR: %v", id, last)
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("instance %s not %q in time; last %v", id, want, last)
	return nil
}

func TestKeystoneCLIs(t *testing.T) {
	t.Parallel()
	requireCLIs(t)
	start := time.Now()
	step := func(what string) { t.Logf("%6.1fs %s", time.Since(start).Seconds(), what) }
	ks := keystonetest.StartPrivate(t) // stopped below: not the shared one
	step("keystone up")
	// GET and POST generous for the CLIs; PUT on /mgmt tiny, to see 413.
	// A 10-minute validation cache: the outage check below needs a token
	// validated before Keystone stops to still be in the cache, however
	// long a loaded machine takes to stop it (the default 60 s was not
	// always enough in CI).
	cl := startKeystoneCofferOn(t, ks, "COFFER_KEYSTONE_CACHE_TTL=10m", "COFFER_RATE_LIMITS=(GET, *, .*, 2000, MINUTE);(POST, *, .*, 200, MINUTE);(DELETE, *, .*, 200, MINUTE);(PUT, */mgmt, ^/mgmt, 2, MINUTE)")
	c := cl.coffer
	step("coffer up, database endpoint registered in its region")
	demo, alt := ks.Demo, ks.Alt
	demoTok, altTok, adminTok := ks.Token(t, demo), ks.Token(t, alt), ks.Token(t, ks.Admin)

	// demo creates with openstack, alt with trove; both through the catalog.
	var created map[string]any
	cl.oscJSON(t, demo, &created, "database", "instance", "create", "ks-demo", "--flavor", "1", "--size", "1",
		"--datastore", "postgresql", "--databases", "shop", "--users", "clerk:clerk-pass")
	demoID, _ := created["id"].(string)
	if demoID == "" || created["name"] != "ks-demo" {
		t.Fatalf("openstack database instance create = %v", created)
	}
	cl.troveJSON(t, alt, &created, "create", "ks-alt", "1", "--size", "1", "--datastore", "postgresql")
	altID, _ := created["id"].(string)
	if altID == "" || created["name"] != "ks-alt" {
		t.Fatalf("trove create = %v", created)
	}
	step("created with both CLIs")
	// The instances belong to the Keystone projects, recorded on first use.
	db := c.controlDB(t)
	for id, project := range map[string]string{demoID: demo.ProjectID, altID: alt.ProjectID} {
		var owner string
		if err := db.QueryRow(t.Context(), "SELECT project_id FROM instance WHERE id = $1", id).Scan(&owner); err != nil || owner != project {
			t.Errorf("instance %s owned by %q (%v), want Keystone project %s", id, owner, err, project)
		}
	}
	inst := ksWait(t, c, demo.ProjectID, demoID, demoTok, "ACTIVE")
	ksWait(t, c, alt.ProjectID, altID, altTok, "ACTIVE")
	// The real effect: the user asked for exists on demo's instance.
	if ip := inst["ip"].([]any)[0].(string); acctLogin(ip, "clerk", "clerk-pass", "shop") != nil {
		t.Errorf("clerk cannot log in to %s: %v", ip, acctLogin(ip, "clerk", "clerk-pass", "shop"))
	}

	step("both ACTIVE")
	// Each project sees its own instance only, with either CLI; alt with
	// demo's instance id gets not found (the CLI falls back to a name lookup
	// after the 404, so it says so) and cannot delete it. Independent
	// reads: issued at once.
	checks := []check{
		{"trove show as demo", func(t testing.TB) {
			var shown map[string]any
			cl.troveJSON(t, demo, &shown, "show", demoID)
			if shown["id"] != demoID || shown["status"] != "ACTIVE" || shown["name"] != "ks-demo" {
				t.Errorf("trove show as demo = %v", shown)
			}
		}},
		{"openstack show by name as alt", func(t testing.TB) {
			var shown map[string]any
			cl.oscJSON(t, alt, &shown, "database", "instance", "show", "ks-alt")
			if shown["id"] != altID {
				t.Errorf("openstack database instance show ks-alt as alt = %v", shown)
			}
		}},
		{"openstack show of demo's instance as alt", func(t testing.TB) {
			if out, err := cl.try(alt, "openstack", "database", "instance", "show", demoID); err == nil || !strings.Contains(out, "No instance with a name or ID of '"+demoID+"' exists") {
				t.Errorf("openstack show of demo's instance as alt: %v\n%s", err, out)
			}
		}},
		{"trove show of demo's instance as alt", func(t testing.TB) {
			if out, err := cl.try(alt, "trove", "--json", "show", demoID); err == nil || strings.Contains(out, "ks-demo") {
				t.Errorf("trove show of demo's instance as alt: %v\n%s", err, out)
			}
		}},
		{"openstack delete of demo's instance as alt", func(t testing.TB) {
			if out, err := cl.try(alt, "openstack", "database", "instance", "delete", demoID); err == nil {
				t.Errorf("openstack delete of demo's instance as alt succeeded:\n%s", out)
			}
		}},
		// Member tokens on admin routes get Trove's statuses: reset_status
		// is policy (403).
		{"reset status as a member", func(t testing.TB) {
			if out, err := cl.try(demo, "openstack", "database", "instance", "reset", "status", demoID); err == nil || !strings.Contains(out, "403") {
				t.Errorf("reset status as a member: %v\n%s", err, out)
			}
		}},
	}
	for _, tc := range []struct {
		u    keystonetest.User
		want string
	}{{demo, demoID}, {alt, altID}} {
		checks = append(checks, check{"openstack list as " + tc.u.Name, func(t testing.TB) {
			var list []map[string]any
			cl.oscJSON(t, tc.u, &list, "database", "instance", "list")
			if len(list) != 1 || list[0]["ID"] != tc.want || list[0]["Status"] != "ACTIVE" {
				t.Errorf("openstack database instance list as %s = %v, want only %s", tc.u.Name, list, tc.want)
			}
		}}, check{"trove list as " + tc.u.Name, func(t testing.TB) {
			var list []map[string]any
			cl.troveJSON(t, tc.u, &list, "list")
			if len(list) != 1 || list[0]["id"] != tc.want {
				t.Errorf("trove list as %s = %v, want only %s", tc.u.Name, list, tc.want)
			}
		}})
	}
	together(t, "lists, shows and isolation", checks...)
	step("lists, shows and isolation with the CLIs")

	code, _, body := ksAPI(t, c, "GET", alt.ProjectID, "/instances/"+demoID, altTok, "")
	ksFault(t, "GET demo's instance as alt", code, body, 404, "itemNotFound")
	// demo's token on alt's tenant URL: Trove's 403.
	code, _, body = ksAPI(t, c, "GET", alt.ProjectID, "/instances", demoTok, "")
	ksFault(t, "demo token on alt's tenant", code, body, 403, "forbidden")
	// A wrong token: 401.
	code, _, body = ksAPI(t, c, "GET", demo.ProjectID, "/instances", "gAAAAAB-not-a-token", "")
	ksFault(t, "wrong token", code, body, 401, "unauthorized")

	// Member tokens on admin routes get Trove's statuses: reset_status is
	// policy (403), the mgmt routes are admin_context (401). The Keystone
	// admin role passes.
	code, _, body = ksAPI(t, c, "POST", demo.ProjectID, "/instances/"+demoID+"/action", demoTok, `{"reset_status": {}}`)
	ksFault(t, "reset_status as a member", code, body, 403, "forbidden")
	code, _, body = ksAPI(t, c, "PUT", demo.ProjectID, "/mgmt/quotas/"+demo.ProjectID, demoTok, `{"quotas": {"instances": 20}}`)
	ksFault(t, "PUT /mgmt/quotas as a member", code, body, 401, "unauthorized")
	code, _, body = ksAPI(t, c, "PUT", ks.Admin.ProjectID, "/mgmt/quotas/"+demo.ProjectID, adminTok, `{"quotas": {"instances": 20}}`)
	if q, _ := body["quotas"].(map[string]any); code != 200 || q["instances"] != float64(20) {
		t.Errorf("PUT /mgmt/quotas as the Keystone admin: %d %v", code, body)
	}
	// Rate limits are per project and shared by every verb's path: the
	// member's refused PUT and the admin's count in their own projects; the
	// admin's third PUT in a minute is over the (test's) limit of 2.
	code, _, _ = ksAPI(t, c, "PUT", ks.Admin.ProjectID, "/mgmt/quotas/"+demo.ProjectID, adminTok, `{"quotas": {"instances": 10}}`)
	if code != 200 {
		t.Errorf("second admin PUT: %d", code)
	}
	code, hdr, body := ksAPI(t, c, "PUT", ks.Admin.ProjectID, "/mgmt/quotas/"+demo.ProjectID, adminTok, `{"quotas": {"instances": 30}}`)
	ksFault(t, "third admin PUT in a minute", code, body, 413, "overLimit")
	if secs, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || secs < 1 || secs > 60 {
		t.Errorf("Retry-After %q", hdr.Get("Retry-After"))
	} else if f, _ := body["overLimit"].(map[string]any); f["retryAfter"] != hdr.Get("Retry-After") {
		t.Errorf("overLimit body %v, Retry-After %q", f, hdr.Get("Retry-After"))
	}

	step("isolation, policy and rate limit checks")
	// Delete with each CLI, then the projects' lists are empty.
	cl.osc(t, demo, "database", "instance", "delete", demoID)
	cl.run(t, alt, "trove", "delete", altID)
	ksWait(t, c, demo.ProjectID, demoID, demoTok, "")
	ksWait(t, c, alt.ProjectID, altID, altTok, "")

	step("deleted")
	// Keystone down: a token validated within the cache's TTL still works;
	// one never seen cannot be checked: 503 serviceUnavailable,
	// which the clients report as a retryable error, not a 500.
	fresh := ks.Token(t, demo)
	ks.Stop(t)
	if code, _, body := ksAPI(t, c, "GET", demo.ProjectID, "/instances", demoTok, ""); code != 200 {
		t.Errorf("cached token with Keystone down: %d %v", code, body)
	}
	code, _, body = ksAPI(t, c, "GET", demo.ProjectID, "/instances", fresh, "")
	ksFault(t, "new token with Keystone down", code, body, 503, "serviceUnavailable")
	ks.Restart(t)
	if code, _, body := ksAPI(t, c, "GET", demo.ProjectID, "/instances", fresh, ""); code != 200 || len(body["instances"].([]any)) != 0 {
		t.Errorf("after Keystone is back: %d %v", code, body)
	}
	step("Keystone outage and recovery")
	if strings.Contains(c.log.String(), demo.Password) || strings.Contains(c.log.String(), ks.Service.Password) || strings.Contains(c.log.String(), fresh) {
		t.Error("the log shows a password or a token")
	}
}
