package functions_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const usersInventory = `{"databases": [{"name": "orders"}, {"name": "stock"}],
  "users": [{"name": "app", "host": "%", "databases": ["orders"]}, {"name": "ro.user", "host": "%", "databases": []}]}`

func TestUsers(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	id := f.acctInstance(t, usersInventory)
	base := "/v1.0/" + f.projectA + "/instances/" + id + "/users"

	code, body := f.do(t, "GET", base, f.tokenA, "")
	if code != 200 || body["links"] != nil {
		t.Fatalf("list: %d %v", code, body)
	}
	users := body["users"].([]any)
	if len(users) != 2 {
		t.Fatalf("users = %v", users)
	}
	app := users[0].(map[string]any)
	if app["name"] != "app" || app["host"] != "%" || !slices.Equal(acctNames(t, app, "databases"), []string{"orders"}) {
		t.Errorf("app = %v", app)
	}

	// Show, by every spelling of name@host the clients send.
	for _, path := range []string{"/app", "/app%40%25", "/app@%25", "/app@", "/app.json", "/ro%2euser", "/ro.user%40%25"} {
		code, body := f.do(t, "GET", base+path, f.tokenA, "")
		if code != 200 {
			t.Errorf("show %s: %d %v", path, code, body)
			continue
		}
		u := body["user"].(map[string]any)
		if u["host"] != "%" || (u["name"] != "app" && u["name"] != "ro.user") {
			t.Errorf("show %s = %v", path, u)
		}
	}
	for path, want := range map[string]int{
		"/nobody":               404,
		"/app%4010%2e0%2e0%2e1": 404, // PostgreSQL users are at % only
		"/postgres":             404, // hidden, as in the list
		"/os_admin":             404,
		"/a%27b":                400,
	} {
		code, body := f.do(t, "GET", base+path, f.tokenA, "")
		if code != want {
			t.Errorf("show %s: %d, want %d (%v)", path, code, want, body)
		}
	}
	code, body = f.do(t, "GET", base+"/app/databases", f.tokenA, "")
	if code != 200 || !slices.Equal(acctNames(t, body, "databases"), []string{"orders"}) {
		t.Errorf("show access: %d %v", code, body)
	}

	// Create: the databases must exist (or be on their way), the user not.
	code, body = f.do(t, "POST", base, f.tokenA, `{"users": [{"name": "clerk", "password": "pw-1", "databases": [{"name": "orders"}, {"name": "stock"}]},
		{"name": "audit", "password": "pw-2", "host": "%"}]}`)
	if code != 202 || body != nil {
		t.Fatalf("create: %d %v", code, body)
	}
	cmds := f.acctCommands(t, id)
	if len(cmds) != 1 || cmds[0].Name != "create_users" || !strings.Contains(cmds[0].Raw, `"pw-1"`) || !strings.Contains(cmds[0].Raw, `"stock"`) {
		t.Fatalf("queued = %+v", cmds)
	}
	for name, c := range map[string]struct {
		body, fault string
		code        int
	}{
		"queued already": {`{"users": [{"name": "clerk", "password": "p"}]}`, "badRequest", 400},
		"exists":         {`{"users": [{"name": "app", "password": "p"}]}`, "badRequest", 400},
		"unknown db":     {`{"users": [{"name": "u1", "password": "p", "databases": [{"name": "nope"}]}]}`, "itemNotFound", 404},
		"host":           {`{"users": [{"name": "u1", "password": "p", "host": "10.0.0.1"}]}`, "badRequest", 400},
		"reserved":       {`{"users": [{"name": "postgres", "password": "p"}]}`, "badRequest", 400},
		"reserved root":  {`{"users": [{"name": "ROOT", "password": "p"}]}`, "badRequest", 400},
		"pg_ prefix":     {`{"users": [{"name": "pg_x", "password": "p"}]}`, "badRequest", 400},
		"bad name":       {`{"users": [{"name": "a b", "password": "p"}]}`, "badRequest", 400},
		"no password":    {`{"users": [{"name": "u1"}]}`, "badRequest", 400},
		"empty password": {`{"users": [{"name": "u1", "password": ""}]}`, "badRequest", 400},
		"NUL password":   {`{"users": [{"name": "u1", "password": "a\u0000b"}]}`, "badRequest", 400},
		"duplicate":      {`{"users": [{"name": "u1", "password": "p"}, {"name": "u1", "password": "q", "host": "%"}]}`, "badRequest", 400},
		"empty":          {`{"users": []}`, "badRequest", 400},
		"wrong type":     {`{"users": {"name": "u1"}}`, "badRequest", 400},
		"bad db name":    {`{"users": [{"name": "u1", "password": "p", "databases": [{"name": "x;y"}]}]}`, "badRequest", 400},
	} {
		code, body := f.do(t, "POST", base, f.tokenA, c.body)
		if code != c.code {
			t.Errorf("create %s: %d, want %d (%v)", name, code, c.code, body)
			continue
		}
		if msg := fault(t, body, c.fault, c.code); strings.Contains(msg, "a\x00b") {
			t.Errorf("create %s: fault echoes the password", name)
		}
	}
	if n := len(f.acctCommands(t, id)); n != 1 {
		t.Fatalf("refused creates queued commands: %d open", n)
	}
	// The agent runs it; clerk is listed with both databases.
	f.acctRun(t, id, `{"databases": [{"name": "orders"}, {"name": "stock"}],
	  "users": [{"name": "app", "host": "%", "databases": ["orders"]}, {"name": "audit", "host": "%", "databases": []},
	            {"name": "clerk", "host": "%", "databases": ["stock", "orders"]}, {"name": "ro.user", "host": "%", "databases": []}]}`)
	code, body = f.do(t, "GET", base+"/clerk", f.tokenA, "")
	if code != 200 || !slices.Equal(acctNames(t, body["user"].(map[string]any), "databases"), []string{"orders", "stock"}) {
		t.Errorf("show clerk: %d %v", code, body)
	}

	// Grant, revoke.
	if code, body = f.do(t, "PUT", base+"/audit/databases", f.tokenA, `{"databases": [{"name": "orders"}, {"name": "stock"}]}`); code != 202 {
		t.Fatalf("grant: %d %v", code, body)
	}
	cmds = f.acctCommands(t, id)
	if len(cmds) != 1 || cmds[0].Name != "grant_access" || cmds[0].Payload["name"] != "audit" || len(cmds[0].Payload["databases"].([]any)) != 2 {
		t.Errorf("queued = %+v", cmds)
	}
	// Revoking what the queued grant gives is fine at once.
	if code, body = f.do(t, "DELETE", base+"/audit/databases/stock", f.tokenA, ""); code != 202 {
		t.Errorf("revoke right after grant: %d %v", code, body)
	}
	for path, want := range map[string]int{
		"/app/databases/stock":             404, // not granted
		"/nobody/databases/x":              404,
		"/app/databases/a'b":               400,
		"/app%40%25/databases/orders.json": 202,
	} {
		if code, body := f.do(t, "DELETE", base+path, f.tokenA, ""); code != want {
			t.Errorf("revoke %s: %d, want %d (%v)", path, code, want, body)
		}
	}
	for body, want := range map[string]int{
		`{"databases": [{"name": "nope"}]}`: 404,
		`{"databases": []}`:                 400,
		`{"databases": [{"name": 1}]}`:      400,
	} {
		if code, got := f.do(t, "PUT", base+"/app/databases", f.tokenA, body); code != want {
			t.Errorf("grant %s: %d, want %d (%v)", body, code, want, got)
		}
	}
	if code, _ = f.do(t, "PUT", base+"/nobody/databases", f.tokenA, `{"databases": [{"name": "orders"}]}`); code != 404 {
		t.Errorf("grant to nobody: %d", code)
	}
	f.acctRun(t, id, `{"databases": [{"name": "orders"}, {"name": "stock"}],
	  "users": [{"name": "app", "host": "%", "databases": []}, {"name": "audit", "host": "%", "databases": ["orders"]},
	            {"name": "clerk", "host": "%", "databases": ["orders", "stock"]}, {"name": "ro.user", "host": "%", "databases": []}]}`)

	// Update attributes: rename with a new password.
	if code, body = f.do(t, "PUT", base+"/clerk", f.tokenA, `{"user": {"name": "cashier", "password": "pw-3"}}`); code != 202 {
		t.Fatalf("update: %d %v", code, body)
	}
	cmds = f.acctCommands(t, id)
	if len(cmds) != 1 || cmds[0].Name != "update_user" || cmds[0].Payload["new_name"] != "cashier" || cmds[0].Payload["new_password"] != "pw-3" {
		t.Errorf("queued = %+v", cmds)
	}
	for name, c := range map[string]struct {
		path, body string
		code       int
	}{
		"old name gone":     {"/clerk", `{"user": {"password": "x"}}`, 404},
		"onto existing":     {"/app", `{"user": {"name": "audit"}}`, 400},
		"onto queued name":  {"/app", `{"user": {"name": "cashier"}}`, 400},
		"host":              {"/app", `{"user": {"host": "192.168.0.1"}}`, 400},
		"nothing to change": {"/app", `{"user": {}}`, 400},
		"no user key":       {"/app", `{}`, 400},
		"reserved name":     {"/app", `{"user": {"name": "os_admin"}}`, 400},
		"missing user":      {"/nobody", `{"user": {"password": "x"}}`, 404},
		"empty password":    {"/app", `{"user": {"password": ""}}`, 400},
	} {
		if code, body := f.do(t, "PUT", base+c.path, f.tokenA, c.body); code != c.code {
			t.Errorf("update %s: %d, want %d (%v)", name, code, c.code, body)
		}
	}
	// Host % (the only one) is a valid no-op change.
	if code, body = f.do(t, "PUT", base+"/app", f.tokenA, `{"user": {"host": "%"}}`); code != 202 {
		t.Errorf("update host to %%: %d %v", code, body)
	}

	// Change passwords of several users at once; every one must exist.
	if code, body = f.do(t, "PUT", base, f.tokenA, `{"users": [{"name": "app", "password": "newpw-1"}, {"name": "ro.user", "password": "newpw-2", "host": "%"}]}`); code != 202 {
		t.Fatalf("change passwords: %d %v", code, body)
	}
	if code, body = f.do(t, "PUT", base, f.tokenA, `{"users": [{"name": "app", "password": "newpw-1"}, {"name": "ghost", "password": "newpw-2"}]}`); code != 404 {
		t.Errorf("change passwords with a missing user: %d %v", code, body)
	}
	// One command per user (queued in one transaction, in no set order).
	cmds = f.acctCommands(t, id)
	changed := map[string]any{}
	for _, c := range cmds[min(2, len(cmds)):] {
		changed[c.Payload["name"].(string)] = c.Payload["new_password"]
	}
	if len(cmds) != 4 || changed["app"] != "newpw-1" || changed["ro.user"] != "newpw-2" {
		t.Errorf("queued = %+v", cmds)
	}

	// Delete.
	if code, body = f.do(t, "DELETE", base+"/ro.user", f.tokenA, ""); code != 202 {
		t.Fatalf("delete: %d %v", code, body)
	}
	for path, want := range map[string]int{"/ro.user": 404, "/nobody": 404, "/postgres": 404, "/x%20y": 400} {
		if code, body := f.do(t, "DELETE", base+path, f.tokenA, ""); code != want {
			t.Errorf("delete %s: %d, want %d (%v)", path, code, want, body)
		}
	}

	// Passwords live only in the open commands: never in jobs or events.
	for _, table := range []string{"river_job", "event"} {
		var n int
		if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM "+table+" WHERE "+table+"::text LIKE '%pw-%'").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows of %s hold a password", n, table)
		}
	}
	// Completing clears them.
	f.acctRun(t, id, usersInventory)
	var n int
	if err := f.pool.QueryRow(context.Background(), "SELECT count(*) FROM agent_command WHERE instance_id = $1 AND payload::text LIKE '%pw-%'", id).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d completed commands hold a password (%v)", n, err)
	}
}

func TestUsersPaginate(t *testing.T) {
	t.Parallel()
	f := newAPI(t)
	var users []string
	for i := range 23 {
		users = append(users, fmt.Sprintf(`{"name": "u%02d", "host": "%%", "databases": []}`, 22-i))
	}
	id := f.acctInstance(t, `{"databases": [], "users": [`+strings.Join(users, ",")+`]}`)
	base := "/v1.0/" + f.projectA + "/instances/" + id + "/users"
	code, body := f.do(t, "GET", base, f.tokenA, "")
	page := acctNames(t, body, "users")
	if code != 200 || len(page) != 20 || page[0] != "u00" || page[19] != "u19" {
		t.Fatalf("first page: %d %v", code, page)
	}
	href := body["links"].([]any)[0].(map[string]any)["href"].(string)
	if !strings.Contains(href, "marker=u19%40%25") {
		t.Errorf("next link %s, want marker u19@%%", href)
	}
	code, body = f.do(t, "GET", href[strings.Index(href, "/v1.0/"):], f.tokenA, "")
	if page = acctNames(t, body, "users"); code != 200 || !slices.Equal(page, []string{"u20", "u21", "u22"}) || body["links"] != nil {
		t.Errorf("second page: %d %v %v", code, page, body["links"])
	}
}
