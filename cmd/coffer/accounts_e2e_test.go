package main_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// Databases, users, access and root end to end on the all-in-one: every
// request goes through the API to the agent and the real PostgreSQL of the
// instance, and every step is checked twice, in PostgreSQL (log in as the
// user, read pg_database as the internal administrator) and in what the
// API reports back from the agent's inventory.

// acctInstance creates an ACTIVE PostgreSQL instance named name and returns
// its id and address.
func acctInstance(t *testing.T, c *coffer, name string) (id, ip string) {
	t.Helper()
	code, body := c.api(t, "POST", "/instances", c.creds.MemberToken, `{"instance": {
		"name": "`+name+`", "flavorRef": "1", "volume": {"size": 1}, "datastore": {"type": "postgresql"}}}`)
	if code != 200 {
		t.Fatalf("create instance: %d %v", code, body)
	}
	id = body["instance"].(map[string]any)["id"].(string)
	inst := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	return id, inst["ip"].([]any)[0].(string)
}

// acctLogin connects to the instance as user and runs SELECT 1.
func acctLogin(ip, user, password, db string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=%s password='%s' dbname=%s sslmode=disable connect_timeout=5",
		ip, user, strings.ReplaceAll(password, "'", `\'`), db))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// acctAdmin connects as the instance's internal administrator (os_admin,
// whose password is in the agent's state on the volume) to read the truth.
func acctAdmin(t *testing.T, c *coffer, id, ip string) *pgx.Conn {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dataDir, "instances", id, "volume", "state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Password string `json:"superuser_password"`
	}
	if err := json.Unmarshal(b, &st); err != nil || st.Password == "" {
		t.Fatalf("agent state: %v", err)
	}
	conn, err := pgx.Connect(context.Background(), fmt.Sprintf("host=%s port=5432 user=os_admin password=%s dbname=postgres sslmode=disable", ip, st.Password))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// acctDatabases lists the databases PostgreSQL has (not templates).
func acctDatabases(t *testing.T, admin *pgx.Conn) []string {
	t.Helper()
	rows, err := admin.Query(context.Background(), "SELECT datname FROM pg_database WHERE NOT datistemplate AND datname <> 'postgres' ORDER BY datname")
	if err != nil {
		t.Fatal(err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	return dbs
}

// acctEventually retries check until it returns nil, for up to 15 s: the
// agent runs a command within moments of the API accepting it.
func acctEventually(t *testing.T, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// acctNames lists the "name" of every item of body[key].
func acctNames(body map[string]any, key string) []string {
	items, _ := body[key].([]any)
	out := []string{}
	for _, it := range items {
		if m, ok := it.(map[string]any); ok {
			out = append(out, fmt.Sprint(m["name"]))
		}
	}
	return out
}

// acctAPIList waits until GET path lists exactly want under key, and logs
// how long that took (the time from the API's 202 to the agent's report).
func acctAPIList(t *testing.T, c *coffer, path, key string, want ...string) {
	t.Helper()
	start := time.Now()
	defer func() { t.Logf("GET %s lists %v after %v", path, want, time.Since(start).Round(time.Millisecond)) }()
	acctEventually(t, "GET "+path, func() error {
		code, body := c.api(t, "GET", path, c.creds.MemberToken, "")
		if got := acctNames(body, key); code != 200 || !slices.Equal(got, want) {
			return fmt.Errorf("%d %v, want %v", code, got, want)
		}
		return nil
	})
}

func refused(err error) error {
	if err == nil {
		return fmt.Errorf("login succeeded, want refused")
	}
	return nil
}

func TestEndToEndAccounts(t *testing.T) {
	t.Parallel()
	c := startCoffer(t)
	ctx := context.Background()
	id, ip := acctInstance(t, c, "accounts")
	admin := acctAdmin(t, c, id, ip)
	inst := "/instances/" + id
	accepted := func(method, path, body string) {
		t.Helper()
		if code, resp := c.api(t, method, inst+path, c.creds.MemberToken, body); code != 202 || resp != nil {
			t.Fatalf("%s %s: %d %v", method, path, code, resp)
		}
	}

	// Databases.
	accepted("POST", "/databases", `{"databases": [{"name": "shop"}, {"name": "hr.db", "character_set": "UTF8", "collate": "C"}]}`)
	acctAPIList(t, c, inst+"/databases", "databases", "hr.db", "shop")
	if got := acctDatabases(t, admin); !slices.Equal(got, []string{"hr.db", "shop"}) {
		t.Errorf("PostgreSQL has %v", got)
	}
	var collate string
	if err := admin.QueryRow(ctx, "SELECT datcollate FROM pg_database WHERE datname = 'hr.db'").Scan(&collate); err != nil || collate != "C" {
		t.Errorf("hr.db collation %q %v", collate, err)
	}
	if code, body := c.api(t, "POST", inst+"/databases", c.creds.MemberToken, `{"databases": [{"name": "shop"}]}`); code != 400 {
		t.Errorf("create existing: %d %v", code, body)
	}

	// A user with access to shop only.
	accepted("POST", "/users", `{"users": [{"name": "app", "password": "app pw '1", "databases": [{"name": "shop"}]}]}`)
	acctAPIList(t, c, inst+"/users/app/databases", "databases", "shop")
	code, body := c.api(t, "GET", inst+"/users/app", c.creds.MemberToken, "")
	if u, _ := body["user"].(map[string]any); code != 200 || u["name"] != "app" || u["host"] != "%" || !slices.Equal(acctNames(u, "databases"), []string{"shop"}) {
		t.Errorf("user show: %d %v", code, body)
	}
	if err := acctLogin(ip, "app", "app pw '1", "shop"); err != nil {
		t.Errorf("app into shop: %v", err)
	}
	if err := refused(acctLogin(ip, "app", "app pw '1", "hr.db")); err != nil {
		t.Errorf("app into hr.db without a grant: %v", err)
	}

	// Grant and revoke hr.db.
	accepted("PUT", "/users/app/databases", `{"databases": [{"name": "hr.db"}]}`)
	acctAPIList(t, c, inst+"/users/app%40%25/databases", "databases", "hr.db", "shop")
	if err := acctLogin(ip, "app", "app pw '1", "hr.db"); err != nil {
		t.Errorf("app into hr.db after the grant: %v", err)
	}
	accepted("DELETE", "/users/app/databases/hr.db", "")
	acctAPIList(t, c, inst+"/users/app/databases", "databases", "shop")
	if err := refused(acctLogin(ip, "app", "app pw '1", "hr.db")); err != nil {
		t.Errorf("app into hr.db after the revoke: %v", err)
	}

	// New password: the new one works, the old one does not.
	accepted("PUT", "/users/app", `{"user": {"password": "app-pw-2"}}`)
	acctEventually(t, "login with the new password", func() error { return acctLogin(ip, "app", "app-pw-2", "shop") })
	if err := refused(acctLogin(ip, "app", "app pw '1", "shop")); err != nil {
		t.Errorf("old password: %v", err)
	}
	// Rename: the password and the grants go along.
	accepted("PUT", "/users/app", `{"user": {"name": "app2"}}`)
	acctAPIList(t, c, inst+"/users", "users", "app2")
	if err := acctLogin(ip, "app2", "app-pw-2", "shop"); err != nil {
		t.Errorf("renamed user: %v", err)
	}
	if err := refused(acctLogin(ip, "app", "app-pw-2", "shop")); err != nil {
		t.Errorf("old name: %v", err)
	}
	if code, _ := c.api(t, "GET", inst+"/users/app", c.creds.MemberToken, ""); code != 404 {
		t.Errorf("show the old name: %d", code)
	}

	// Root: enable returns the superuser and a password that works.
	code, body = c.api(t, "POST", inst+"/root", c.creds.MemberToken, "")
	if code != 200 {
		t.Fatalf("root enable: %d %v", code, body)
	}
	root := body["user"].(map[string]any)
	rootName, rootPW := root["name"].(string), root["password"].(string)
	if rootName != "postgres" || len(rootPW) < 32 {
		t.Errorf("root enable = %v", root)
	}
	acctEventually(t, "login as root", func() error { return acctLogin(ip, rootName, rootPW, "shop") })
	rootConn, err := pgx.Connect(ctx, fmt.Sprintf("host=%s port=5432 user=%s password=%s dbname=postgres sslmode=disable", ip, rootName, rootPW))
	if err != nil {
		t.Fatal(err)
	}
	var super bool
	if err := rootConn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil || !super {
		t.Errorf("root is superuser: %v %v", super, err)
	}
	rootConn.Close(ctx)
	if code, body = c.api(t, "GET", inst+"/root", c.creds.MemberToken, ""); code != 200 || body["rootEnabled"] != true {
		t.Errorf("root show: %d %v", code, body)
	}
	code, body = c.api(t, "GET", "/mgmt/instances/"+id+"/root", c.creds.AdminToken, "")
	if h, _ := body["root_history"].(map[string]any); code != 200 || h["enabled"] == "Never" {
		t.Errorf("mgmt root history: %d %v", code, body)
	}
	// The superuser is not one of the users.
	acctAPIList(t, c, inst+"/users", "users", "app2")
	if code, resp := c.api(t, "DELETE", inst+"/root", c.creds.MemberToken, ""); code != 204 || resp != nil {
		t.Fatalf("root disable: %d %v", code, resp)
	}
	acctEventually(t, "root refused after disable", func() error { return refused(acctLogin(ip, rootName, rootPW, "postgres")) })
	if code, body = c.api(t, "GET", inst+"/root", c.creds.MemberToken, ""); body["rootEnabled"] != false {
		t.Errorf("root show after disable: %d %v", code, body)
	}

	// Delete the database and the user.
	accepted("DELETE", "/databases/hr.db", "")
	acctAPIList(t, c, inst+"/databases", "databases", "shop")
	if got := acctDatabases(t, admin); !slices.Equal(got, []string{"shop"}) {
		t.Errorf("PostgreSQL has %v after the delete", got)
	}
	accepted("DELETE", "/users/app2", "")
	acctAPIList(t, c, inst+"/users", "users")
	if err := refused(acctLogin(ip, "app2", "app-pw-2", "shop")); err != nil {
		t.Errorf("deleted user: %v", err)
	}
	var roles int
	if err := admin.QueryRow(ctx, "SELECT count(*) FROM pg_roles WHERE rolname IN ('app', 'app2')").Scan(&roles); err != nil || roles != 0 {
		t.Errorf("roles left: %d %v", roles, err)
	}

	// Every command succeeded and none keeps a password; no job ever held one.
	db := c.controlDB(t)
	var failed, secrets int
	if err := db.QueryRow(ctx, "SELECT count(*) FILTER (WHERE state <> 'succeeded'), count(*) FILTER (WHERE payload::text ~ 'app pw|app-pw-2|"+rootPW+"') FROM agent_command WHERE instance_id = $1", id).Scan(&failed, &secrets); err != nil {
		t.Fatal(err)
	}
	if failed != 0 || secrets != 0 {
		t.Errorf("commands: %d not succeeded, %d holding a password", failed, secrets)
	}
	if err := db.QueryRow(ctx, "SELECT count(*) FROM river_job WHERE args::text ~ 'app pw|app-pw-2|"+rootPW+"'").Scan(&secrets); err != nil || secrets != 0 {
		t.Errorf("%d jobs hold a password (%v)", secrets, err)
	}
	// Nor did the instance's server log record one.
	logText, err := os.ReadFile(filepath.Join(c.dataDir, "instances", id, "volume", "postgres.log"))
	if err != nil {
		t.Fatal(err)
	}
	for _, pw := range []string{"app pw '1", "app-pw-2", rootPW} {
		if strings.Contains(string(logText), pw) {
			t.Errorf("the instance's server log holds a password")
		}
	}
}

// The real OpenStack client drives the same operations, through Keystone's
// catalog as project demo's member (cli_test.go); both its output and the
// effect in PostgreSQL are checked. Commands address the instance by name,
// so the client's name resolution is exercised too.
func TestOpenStackCLIAccounts(t *testing.T) {
	t.Parallel()
	c := startKeystoneCoffer(t)
	id, ip := acctInstance(t, c.coffer, "cli-accounts")
	admin := acctAdmin(t, c.coffer, id, ip)
	inst := "/instances/" + id
	const name = "cli-accounts"
	osc := func(args ...string) (string, error) {
		return c.try(c.demo, append([]string{"openstack", "database"}, args...)...)
	}
	run := func(args ...string) string {
		t.Helper()
		return c.osc(t, c.demo, append([]string{"database"}, args...)...)
	}
	jsonOut := func(t testing.TB, v any, args ...string) {
		t.Helper()
		c.oscJSON(t, c.demo, v, append([]string{"database"}, args...)...)
	}

	// db create / list
	run("db", "create", name, "shop")
	run("db", "create", name, "hr", "--character_set", "UTF8", "--collate", "C")
	acctAPIList(t, c.coffer, inst+"/databases", "databases", "hr", "shop")
	if got := acctDatabases(t, admin); !slices.Equal(got, []string{"hr", "shop"}) {
		t.Errorf("PostgreSQL has %v", got)
	}
	together(t, "databases created",
		check{"db list", func(t testing.TB) {
			var rows []map[string]any
			jsonOut(t, &rows, "db", "list", name)
			if got := column(rows, "Name"); !slices.Equal(got, []string{"hr", "shop"}) {
				t.Errorf("db list = %v", rows)
			}
		}},
		check{"db create of an existing database", func(t testing.TB) {
			if out, err := osc("db", "create", name, "shop"); err == nil || !strings.Contains(out, "already exists") {
				t.Errorf("db create of an existing database: %v %s", err, out)
			}
		}},
	)

	// user create / list / show
	run("user", "create", name, "clerk", "clerk pw 1", "--databases", "shop")
	acctAPIList(t, c.coffer, inst+"/users", "users", "clerk")
	if err := acctLogin(ip, "clerk", "clerk pw 1", "shop"); err != nil {
		t.Errorf("clerk into shop: %v", err)
	}
	if err := refused(acctLogin(ip, "clerk", "clerk pw 1", "hr")); err != nil {
		t.Errorf("clerk into hr before the grant: %v", err)
	}
	together(t, "user created",
		check{"user list", func(t testing.TB) {
			var rows []map[string]any
			jsonOut(t, &rows, "user", "list", name)
			if len(rows) != 1 || rows[0]["Name"] != "clerk" || rows[0]["Host"] != "%" || rows[0]["Databases"] != "shop" {
				t.Errorf("user list = %v", rows)
			}
		}},
		check{"user show", func(t testing.TB) {
			var shown map[string]any
			jsonOut(t, &shown, "user", "show", name, "clerk")
			if shown["name"] != "clerk" || shown["host"] != "%" || !strings.Contains(fmt.Sprint(shown["databases"]), "shop") {
				t.Errorf("user show = %v", shown)
			}
		}},
		check{"user show --host", func(t testing.TB) {
			var shown map[string]any
			jsonOut(t, &shown, "user", "show", name, "clerk", "--host", "%")
			if shown["name"] != "clerk" {
				t.Errorf("user show --host %% = %v", shown)
			}
		}},
		check{"user create --host", func(t testing.TB) {
			if out, err := osc("user", "create", name, "limited", "pw", "--host", "10.1.2.3"); err == nil || !strings.Contains(out, "host") {
				t.Errorf("user create --host 10.1.2.3: %v %s", err, out)
			}
		}},
		check{"user update attributes --new_host", func(t testing.TB) {
			if out, err := osc("user", "update", "attributes", name, "clerk", "--new_host", "10.0.0.1"); err == nil || !strings.Contains(out, "must be '%'") {
				t.Errorf("user update attributes --new_host 10.0.0.1: %v %s", err, out)
			}
		}},
		check{"user show of a missing user", func(t testing.TB) {
			if out, err := osc("user", "show", name, "nobody"); err == nil || !strings.Contains(out, "cannot be found") {
				t.Errorf("user show of a missing user: %v %s", err, out)
			}
		}},
	)

	// user grant access / show access / revoke access
	var rows []map[string]any
	run("user", "grant", "access", name, "clerk", "hr")
	acctAPIList(t, c.coffer, inst+"/users/clerk/databases", "databases", "hr", "shop")
	jsonOut(t, &rows, "user", "show", "access", name, "clerk")
	if got := column(rows, "Name"); !slices.Equal(got, []string{"hr", "shop"}) {
		t.Errorf("user show access = %v", rows)
	}
	if err := acctLogin(ip, "clerk", "clerk pw 1", "hr"); err != nil {
		t.Errorf("clerk into hr after the grant: %v", err)
	}
	run("user", "revoke", "access", name, "clerk", "hr")
	acctAPIList(t, c.coffer, inst+"/users/clerk/databases", "databases", "shop")
	jsonOut(t, &rows, "user", "show", "access", name, "clerk")
	if got := column(rows, "Name"); !slices.Equal(got, []string{"shop"}) {
		t.Errorf("user show access after revoke = %v", rows)
	}
	if err := refused(acctLogin(ip, "clerk", "clerk pw 1", "hr")); err != nil {
		t.Errorf("clerk into hr after the revoke: %v", err)
	}

	// user update attributes: password, then name (a new host is refused,
	// above: PostgreSQL users are not tied to a host).
	run("user", "update", "attributes", name, "clerk", "--new_password", "clerk-pw-2")
	acctEventually(t, "login with the new password", func() error { return acctLogin(ip, "clerk", "clerk-pw-2", "shop") })
	if err := refused(acctLogin(ip, "clerk", "clerk pw 1", "shop")); err != nil {
		t.Errorf("old password: %v", err)
	}
	run("user", "update", "attributes", name, "clerk", "--new_name", "cashier")
	acctAPIList(t, c.coffer, inst+"/users", "users", "cashier")
	jsonOut(t, &rows, "user", "list", name)
	if got := column(rows, "Name"); !slices.Equal(got, []string{"cashier"}) {
		t.Errorf("user list after rename = %v", rows)
	}
	if err := acctLogin(ip, "cashier", "clerk-pw-2", "shop"); err != nil {
		t.Errorf("renamed user: %v", err)
	}

	// root enable / show / disable
	var rootCreds map[string]any
	jsonOut(t, &rootCreds, "root", "enable", name)
	rootPW, _ := rootCreds["password"].(string)
	if rootCreds["name"] != "postgres" || len(rootPW) < 32 {
		t.Errorf("root enable = %v", rootCreds)
	}
	acctEventually(t, "login as root", func() error { return acctLogin(ip, "postgres", rootPW, "postgres") })
	jsonOut(t, &rootCreds, "root", "enable", name, "--root_password", "chosen-root-pw")
	if rootCreds["password"] != "chosen-root-pw" {
		t.Errorf("root enable --root_password = %v", rootCreds)
	}
	acctEventually(t, "login as root with the chosen password", func() error { return acctLogin(ip, "postgres", "chosen-root-pw", "shop") })
	var rootShow map[string]any
	jsonOut(t, &rootShow, "root", "show", name)
	if rootShow["is_root_enabled"] != true {
		t.Errorf("root show = %v", rootShow)
	}
	run("root", "disable", name)
	acctEventually(t, "root refused after disable", func() error { return refused(acctLogin(ip, "postgres", "chosen-root-pw", "postgres")) })
	jsonOut(t, &rootShow, "root", "show", name)
	if rootShow["is_root_enabled"] != false {
		t.Errorf("root show after disable = %v", rootShow)
	}

	// user delete / db delete
	run("user", "delete", name, "cashier")
	run("db", "delete", name, "hr")
	acctAPIList(t, c.coffer, inst+"/users", "users")
	acctAPIList(t, c.coffer, inst+"/databases", "databases", "shop")
	if err := refused(acctLogin(ip, "cashier", "clerk-pw-2", "shop")); err != nil {
		t.Errorf("deleted user: %v", err)
	}
	if got := acctDatabases(t, admin); !slices.Equal(got, []string{"shop"}) {
		t.Errorf("PostgreSQL has %v after the delete", got)
	}
	together(t, "user and database deleted",
		check{"user list", func(t testing.TB) {
			var rows []map[string]any
			jsonOut(t, &rows, "user", "list", name)
			if len(rows) != 0 {
				t.Errorf("user list after delete = %v", rows)
			}
		}},
		check{"db list", func(t testing.TB) {
			var rows []map[string]any
			jsonOut(t, &rows, "db", "list", name)
			if got := column(rows, "Name"); !slices.Equal(got, []string{"shop"}) {
				t.Errorf("db list after delete = %v", rows)
			}
		}},
		check{"db delete of a deleted database", func(t testing.TB) {
			if out, err := osc("db", "delete", name, "hr"); err == nil {
				t.Errorf("db delete of a deleted database succeeded: %s", out)
			}
		}},
	)
}
