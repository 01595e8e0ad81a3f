package postgresql

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// preparedDriver is a driver whose server runs, prepared with nothing but
// the cluster, and with every statement logged, so tests can check that no
// password reaches the server log.
func preparedDriver(t *testing.T, ctx context.Context) *Driver {
	t.Helper()
	d := newDriver(t)
	if err := d.Prepare(ctx, protocol.PrepareRequest{Datastore: "postgresql", FlavorRAMMB: 512, VolumeSizeGB: 1}); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	admin := adminTCP(t, ctx, d, "postgres")
	for _, sql := range []string{"ALTER SYSTEM SET log_statement = 'all'", "SELECT pg_reload_conf()"} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	// The reload reaches new sessions at once, this one at its next
	// statement; leave a mark in the log once it is on.
	for deadline := time.Now().Add(10 * time.Second); ; {
		var v string
		if err := admin.QueryRow(ctx, "SELECT current_setting('log_statement') || ' statement-logging-on'").Scan(&v); err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(v, "all") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("log_statement did not become all")
		}
		time.Sleep(20 * time.Millisecond)
	}
	return d
}

func adminTCP(t testing.TB, ctx context.Context, d *Driver, db string) *pgx.Conn {
	t.Helper()
	conn, err := connectTCP(ctx, d, AdminUser, mustState(t, d).SuperPassword, db)
	if err != nil {
		t.Fatalf("connect as %s: %v", AdminUser, err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// canWrite connects as user and creates a table in db.
func canWrite(ctx context.Context, d *Driver, user, password, db, table string) error {
	conn, err := connectTCP(ctx, d, user, password, db)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "CREATE TABLE "+ident(table)+" (id int)")
	return err
}

func mustInventory(t *testing.T, ctx context.Context, d *Driver) protocol.Inventory {
	t.Helper()
	inv, err := d.Inventory(ctx)
	if err != nil {
		t.Fatalf("Inventory: %v", err)
	}
	return inv
}

func userDatabases(inv protocol.Inventory, name string) ([]string, bool) {
	for _, u := range inv.Users {
		if u.Name == name {
			return u.Databases, true
		}
	}
	return nil, false
}

func dbNames(inv protocol.Inventory) []string {
	var names []string
	for _, db := range inv.Databases {
		names = append(names, db.Name)
	}
	return names
}

// waitGone waits until conn's session has been ended by the server.
func waitGone(t *testing.T, ctx context.Context, conn *pgx.Conn, what string) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); {
		if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Errorf("%s: session still open", what)
}

func TestAccounts(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := preparedDriver(t, ctx)
	const (
		alicePW  = `al'ice "pw" \ 1`
		newPW    = "rotated password 2"
		rootPW   = `r00t'pass\word`
		rootPW2  = "second root password"
		bobPW    = "bob-pw"
		notAUser = "nobody"
	)

	// Databases: created once however often asked, listed with their
	// encoding, closed to users without a grant.
	dbs := []protocol.Database{{Name: "sales"}, {Name: "hr.db", CharacterSet: "UTF8", Collate: "C"}}
	for range 2 {
		if err := d.CreateDatabases(ctx, dbs); err != nil {
			t.Fatalf("CreateDatabases: %v", err)
		}
	}
	inv := mustInventory(t, ctx, d)
	if got := dbNames(inv); !slices.Equal(got, []string{"hr.db", "sales"}) {
		t.Errorf("databases = %v, want hr.db, sales (postgres and templates hidden)", got)
	}
	for _, db := range inv.Databases {
		if db.Name == "hr.db" && (db.CharacterSet != "UTF8" || db.Collate != "C") {
			t.Errorf("hr.db = %+v", db)
		}
	}
	if inv.RootEnabled || len(inv.Users) != 0 {
		t.Errorf("fresh inventory: root %v, users %v", inv.RootEnabled, inv.Users)
	}

	// Users: access is exactly what was granted.
	users := []protocol.User{
		{Name: "alice", Password: alicePW, Host: "%", Databases: []string{"sales"}},
		{Name: "bob", Password: bobPW},
	}
	for range 2 {
		if err := d.CreateUsers(ctx, users); err != nil {
			t.Fatalf("CreateUsers: %v", err)
		}
	}
	if err := canWrite(ctx, d, "alice", alicePW, "sales", "a1"); err != nil {
		t.Errorf("alice in sales: %v", err)
	}
	if err := canWrite(ctx, d, "alice", alicePW, "hr.db", "a2"); err == nil {
		t.Error("alice reached hr.db without a grant")
	}
	if err := canWrite(ctx, d, "bob", bobPW, "sales", "b1"); err == nil {
		t.Error("bob reached sales without a grant")
	}
	inv = mustInventory(t, ctx, d)
	if got, _ := userDatabases(inv, "alice"); !slices.Equal(got, []string{"sales"}) {
		t.Errorf("alice's databases = %v", got)
	}
	if got, ok := userDatabases(inv, "bob"); !ok || len(got) != 0 {
		t.Errorf("bob = %v %v", got, ok)
	}
	if err := d.CreateUsers(ctx, []protocol.User{{Name: "carol", Password: "pw", Databases: []string{"missing"}}}); err == nil {
		t.Error("CreateUsers with a missing database succeeded")
	}

	// Grant: alice gets hr.db as well.
	for range 2 {
		if err := d.GrantAccess(ctx, protocol.UserRef{Name: "alice", Host: "%"}, []string{"hr.db"}); err != nil {
			t.Fatalf("GrantAccess: %v", err)
		}
	}
	if err := canWrite(ctx, d, "alice", alicePW, "hr.db", "a3"); err != nil {
		t.Errorf("alice in hr.db after grant: %v", err)
	}
	if got, _ := userDatabases(mustInventory(t, ctx, d), "alice"); !slices.Equal(got, []string{"hr.db", "sales"}) {
		t.Errorf("alice's databases after grant = %v", got)
	}
	if err := d.GrantAccess(ctx, protocol.UserRef{Name: notAUser}, []string{"sales"}); err == nil {
		t.Error("GrantAccess to a missing user succeeded")
	}
	if err := d.GrantAccess(ctx, protocol.UserRef{Name: "bob"}, []string{"missing"}); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("GrantAccess on a missing database: %v", err)
	}

	// Revoke: alice loses hr.db, including the session she has open there.
	open, err := connectTCP(ctx, d, "alice", alicePW, "hr.db")
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close(ctx)
	for range 2 {
		if err := d.RevokeAccess(ctx, protocol.UserRef{Name: "alice"}, "hr.db"); err != nil {
			t.Fatalf("RevokeAccess: %v", err)
		}
	}
	waitGone(t, ctx, open, "alice's session in hr.db after revoke")
	if err := canWrite(ctx, d, "alice", alicePW, "hr.db", "a4"); err == nil {
		t.Error("alice still reaches hr.db after revoke")
	}
	if err := canWrite(ctx, d, "alice", alicePW, "sales", "a5"); err != nil {
		t.Errorf("revoking hr.db took sales too: %v", err)
	}
	if got, _ := userDatabases(mustInventory(t, ctx, d), "alice"); !slices.Equal(got, []string{"sales"}) {
		t.Errorf("alice's databases after revoke = %v", got)
	}
	for _, ref := range []struct{ user, db string }{{notAUser, "sales"}, {"alice", "missing"}} {
		if err := d.RevokeAccess(ctx, protocol.UserRef{Name: ref.user}, ref.db); err != nil {
			t.Errorf("RevokeAccess(%s, %s) of nothing: %v", ref.user, ref.db, err)
		}
	}

	// Update: rename and new password together; repeating it is fine.
	update := protocol.UpdateUserRequest{UserRef: protocol.UserRef{Name: "alice", Host: "%"}, NewName: "alicia", NewPassword: newPW}
	for range 2 {
		if err := d.UpdateUser(ctx, update); err != nil {
			t.Fatalf("UpdateUser: %v", err)
		}
	}
	if err := canWrite(ctx, d, "alicia", newPW, "sales", "a6"); err != nil {
		t.Errorf("alicia with the new password: %v", err)
	}
	for _, old := range []struct{ user, pw string }{{"alicia", alicePW}, {"alice", newPW}} {
		if conn, err := connectTCP(ctx, d, old.user, old.pw, "sales"); err == nil {
			conn.Close(ctx)
			t.Errorf("%s logged in with an old name or password", old.user)
		}
	}
	if err := d.UpdateUser(ctx, protocol.UpdateUserRequest{UserRef: protocol.UserRef{Name: "bob"}, NewPassword: "bob-2"}); err != nil {
		t.Errorf("password-only update: %v", err)
	} else if conn, err := connectTCP(ctx, d, "bob", "bob-2", "postgres"); err != nil {
		t.Errorf("bob with his new password: %v", err)
	} else {
		conn.Close(ctx)
	}
	for name, bad := range map[string]protocol.UpdateUserRequest{
		"rename onto a user": {UserRef: protocol.UserRef{Name: "bob"}, NewName: "alicia"},
		"missing user":       {UserRef: protocol.UserRef{Name: notAUser}, NewPassword: "x"},
		"host":               {UserRef: protocol.UserRef{Name: "bob"}, NewHost: "10.0.0.1"},
		"reserved new name":  {UserRef: protocol.UserRef{Name: "bob"}, NewName: "postgres"},
	} {
		if err := d.UpdateUser(ctx, bad); err == nil {
			t.Errorf("UpdateUser %s succeeded", name)
		}
	}

	// Root: the superuser postgres, enabled, re-enabled with a new
	// password, disabled (sessions ended), hidden from the users.
	for _, pw := range []string{rootPW, rootPW2} {
		name, err := d.EnableRoot(ctx, pw)
		if err != nil || name != RootUser {
			t.Fatalf("EnableRoot: %q %v", name, err)
		}
	}
	rootConn, err := connectTCP(ctx, d, RootUser, rootPW2, "postgres")
	if err != nil {
		t.Fatalf("connect as root: %v", err)
	}
	defer rootConn.Close(ctx)
	var super bool
	if err := rootConn.QueryRow(ctx, "SELECT rolsuper FROM pg_roles WHERE rolname = current_user").Scan(&super); err != nil || !super {
		t.Errorf("root is not a superuser: %v %v", super, err)
	}
	if conn, err := connectTCP(ctx, d, RootUser, rootPW, "postgres"); err == nil {
		conn.Close(ctx)
		t.Error("the first root password still works")
	}
	inv = mustInventory(t, ctx, d)
	if !inv.RootEnabled {
		t.Error("inventory: root not enabled")
	}
	if _, ok := userDatabases(inv, RootUser); ok {
		t.Error("inventory lists the root user")
	}
	for range 2 {
		if err := d.DisableRoot(ctx); err != nil {
			t.Fatalf("DisableRoot: %v", err)
		}
	}
	waitGone(t, ctx, rootConn, "root's session after disable")
	if conn, err := connectTCP(ctx, d, RootUser, rootPW2, "postgres"); err == nil {
		conn.Close(ctx)
		t.Error("root logs in after disable")
	}
	if mustInventory(t, ctx, d).RootEnabled {
		t.Error("inventory: root still enabled")
	}

	// Delete a user that owns tables in two databases: they are kept,
	// owned by os_admin.
	if err := canWrite(ctx, d, "alicia", newPW, "sales", "owned_by_alicia"); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := d.DeleteUser(ctx, protocol.UserRef{Name: "alicia", Host: "%"}); err != nil {
			t.Fatalf("DeleteUser: %v", err)
		}
	}
	if _, ok := userDatabases(mustInventory(t, ctx, d), "alicia"); ok {
		t.Error("alicia still listed")
	}
	var owner string
	if err := adminTCP(t, ctx, d, "sales").QueryRow(ctx, "SELECT tableowner FROM pg_tables WHERE tablename = 'owned_by_alicia'").Scan(&owner); err != nil || owner != AdminUser {
		t.Errorf("alicia's table: owner %q, %v", owner, err)
	}

	// Delete a database with a session open in it.
	if err := d.GrantAccess(ctx, protocol.UserRef{Name: "bob"}, []string{"sales"}); err != nil {
		t.Fatal(err)
	}
	bobConn, err := connectTCP(ctx, d, "bob", "bob-2", "sales")
	if err != nil {
		t.Fatal(err)
	}
	defer bobConn.Close(ctx)
	for range 2 {
		if err := d.DeleteDatabase(ctx, "sales"); err != nil {
			t.Fatalf("DeleteDatabase: %v", err)
		}
	}
	inv = mustInventory(t, ctx, d)
	if got := dbNames(inv); !slices.Equal(got, []string{"hr.db"}) {
		t.Errorf("databases after delete = %v", got)
	}
	if got, _ := userDatabases(inv, "bob"); len(got) != 0 {
		t.Errorf("bob's databases after the delete = %v", got)
	}

	// No password reached the server log, though every statement is logged.
	logText, err := os.ReadFile(filepath.Join(d.dataDir, logName))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(logText), "statement-logging-on") {
		t.Error("statement logging was not on: the check below proves nothing")
	}
	for _, secret := range []string{alicePW, newPW, rootPW, rootPW2, bobPW, "bob-2"} {
		if strings.Contains(string(logText), secret) {
			t.Errorf("server log contains the password %q", secret)
		}
	}
}

// Invalid requests are refused before the server is touched (no server
// runs here at all), and errors never carry a password.
func TestAccountsReject(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	d := newDriver(t)
	const secret = "hunter2-secret"
	user := func(name string) []protocol.User { return []protocol.User{{Name: name, Password: secret}} }
	errs := map[string]error{}
	for _, name := range []string{"postgres", "os_admin", "Root", "pg_x", "a b", `a"b`, strings.Repeat("n", 64), ""} {
		errs["create user "+name] = d.CreateUsers(ctx, user(name))
		errs["delete user "+name] = d.DeleteUser(ctx, protocol.UserRef{Name: name})
		errs["grant "+name] = d.GrantAccess(ctx, protocol.UserRef{Name: name}, []string{"db"})
	}
	for _, name := range []string{"postgres", "template1", "TEMPLATE0", "os_admin", "1db", "a;b", ""} {
		errs["create db "+name] = d.CreateDatabases(ctx, []protocol.Database{{Name: name}})
		errs["delete db "+name] = d.DeleteDatabase(ctx, name)
		errs["revoke db "+name] = d.RevokeAccess(ctx, protocol.UserRef{Name: "u"}, name)
	}
	errs["host"] = d.CreateUsers(ctx, []protocol.User{{Name: "u", Password: secret, Host: "10.0.0.1"}})
	errs["no password"] = d.CreateUsers(ctx, []protocol.User{{Name: "u"}})
	errs["NUL password"] = d.UpdateUser(ctx, protocol.UpdateUserRequest{UserRef: protocol.UserRef{Name: "u"}, NewPassword: secret + "\x00"})
	errs["root without password"] = func() error { _, err := d.EnableRoot(ctx, ""); return err }()
	errs["bad charset"] = d.CreateDatabases(ctx, []protocol.Database{{Name: "x", CharacterSet: "UTF8'"}})
	// Well-formed, but nothing is prepared.
	errs["before prepare"] = d.CreateDatabases(ctx, []protocol.Database{{Name: "fine"}})
	_, errs["inventory before prepare"] = d.Inventory(ctx)
	for what, err := range errs {
		if err == nil {
			t.Errorf("%s: accepted", what)
		} else if strings.Contains(err.Error(), secret) {
			t.Errorf("%s: error contains the password: %v", what, err)
		}
	}
	if _, err := os.Stat(filepath.Join(d.dataDir, pgdataDir)); !os.IsNotExist(err) {
		t.Errorf("a rejected request created a cluster: %v", err)
	}
}
