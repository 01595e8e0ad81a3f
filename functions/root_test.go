package functions_test

import (
	"context"
	"regexp"
	"strings"
	"testing"
)

func TestRoot(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.acctInstance(t, `{"databases": [], "users": []}`)
	path := "/v1.0/" + f.projectA + "/instances/" + id + "/root"
	mgmt := "/v1.0/" + f.projectA + "/mgmt/instances/" + id + "/root"

	code, body := f.do(t, "GET", path, f.tokenA, "")
	if code != 200 || body["rootEnabled"] != false || len(body) != 1 {
		t.Fatalf("show before enable: %d %v", code, body)
	}
	code, body = f.do(t, "DELETE", path, f.tokenA, "")
	if code != 404 {
		t.Fatalf("disable before enable: %d %v", code, body)
	}
	if msg := fault(t, body, "itemNotFound", 404); !strings.Contains(msg, "never been enabled") {
		t.Errorf("disable before enable: %q", msg)
	}
	code, body = f.do(t, "GET", mgmt, f.admin, "")
	if h := body["root_history"].(map[string]any); code != 200 || h["enabled"] != "Never" || h["user"] != "Nobody" || h["id"] != id {
		t.Errorf("mgmt history before enable: %d %v", code, body)
	}

	// Enable without a body (as the CLI sends it): a generated password.
	code, body = f.do(t, "POST", path, f.tokenA, "")
	if code != 200 {
		t.Fatalf("enable: %d %v", code, body)
	}
	user := body["user"].(map[string]any)
	generated, _ := user["password"].(string)
	if user["name"] != "postgres" || !regexp.MustCompile(`^[A-Za-z0-9]{36}$`).MatchString(generated) {
		t.Errorf("enable answer = %v", body)
	}
	cmds := f.acctCommands(t, id)
	if len(cmds) != 1 || cmds[0].Name != "enable_root" || cmds[0].Payload["password"] != generated {
		t.Fatalf("queued = %+v", cmds)
	}
	if code, body = f.do(t, "GET", path, f.tokenA, ""); body["rootEnabled"] != true {
		t.Errorf("show after enable: %d %v", code, body)
	}

	// With a password in the body, that one; an empty one is generated.
	code, body = f.do(t, "POST", path, f.tokenA, `{"password": "My own root pw"}`)
	if code != 200 || body["user"].(map[string]any)["password"] != "My own root pw" {
		t.Errorf("enable with a password: %d %v", code, body)
	}
	code, body = f.do(t, "POST", path, f.tokenA, `{"password": ""}`)
	if pw, _ := body["user"].(map[string]any)["password"].(string); code != 200 || len(pw) != 36 || pw == generated {
		t.Errorf("enable with an empty password: %d %v", code, body)
	}
	for _, bad := range []string{`{"password": 5}`, `{"password": "a\u0000b"}`, `{"password": "` + strings.Repeat("p", 256) + `"}`, `[`} {
		if code, body = f.do(t, "POST", path, f.tokenA, bad); code != 400 {
			t.Errorf("enable with %.20s: %d %v", bad, code, body)
		}
	}
	if n := len(f.acctCommands(t, id)); n != 3 {
		t.Errorf("%d commands open, want 3 enables", n)
	}

	// Mgmt history: admins only; Trove answers 401 to members.
	code, body = f.do(t, "GET", mgmt, f.admin, "")
	if h := body["root_history"].(map[string]any); code != 200 || h["user"] != "alice" || !regexp.MustCompile(`^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$`).MatchString(h["enabled"].(string)) {
		t.Errorf("mgmt history: %d %v", code, body)
	}
	code, body = f.do(t, "GET", mgmt, f.tokenA, "")
	if code != 401 {
		t.Errorf("mgmt history as member: %d", code)
	}
	fault(t, body, "unauthorized", 401)
	if code, _ = f.do(t, "GET", "/v1.0/"+f.projectA+"/mgmt/instances/0b6f1d3a-8c1e-4b0e-9d55-2f6a3c1b7e90/root", f.admin, ""); code != 404 {
		t.Errorf("mgmt history of an unknown instance: %d", code)
	}

	// Disable: 204, no body; show says false; a second disable is fine.
	for range 2 {
		if code, body = f.do(t, "DELETE", path, f.tokenA, ""); code != 204 || body != nil {
			t.Fatalf("disable: %d %v", code, body)
		}
	}
	if code, body = f.do(t, "GET", path, f.tokenA, ""); body["rootEnabled"] != false {
		t.Errorf("show after disable: %d %v", code, body)
	}
	if cmds = f.acctCommands(t, id); len(cmds) != 5 || cmds[4].Name != "disable_root" {
		t.Errorf("queued = %+v", cmds)
	}

	// The other project sees none of it.
	if code, _ = f.do(t, "GET", "/v1.0/"+f.projectB+"/instances/"+id+"/root", f.tokenB, ""); code != 404 {
		t.Errorf("other project's root show: %d", code)
	}
	// Root's password is in the open command only, not in jobs or events,
	// and gone once the agent ran it.
	f.acctRun(t, id, `{"databases": [], "users": [], "root_enabled": false}`)
	for _, table := range []string{"river_job", "event", "agent_command", "root_history"} {
		var n int
		err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table+" t WHERE t::text LIKE '%"+generated+"%' OR t::text LIKE '%My own root pw%'").Scan(&n)
		if err != nil || n != 0 {
			t.Errorf("%s: %d rows hold a root password (%v)", table, n, err)
		}
	}
}
