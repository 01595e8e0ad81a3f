package main_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/coffer-dbaas/coffer/internal/keystonetest"
)

// actionsStatusWatch records the statuses an instance shows, polling every
// 20 ms, until stopped: the transitions an action goes through.
type actionsStatusWatch struct {
	stop chan struct{}
	done chan []string
}

func (c *coffer) watchStatuses(id string) *actionsStatusWatch {
	w := &actionsStatusWatch{stop: make(chan struct{}), done: make(chan []string, 1)}
	go func() {
		var seen []string
		for {
			if s := c.peekStatus(id); s != "" && (len(seen) == 0 || seen[len(seen)-1] != s) {
				seen = append(seen, s)
			}
			select {
			case <-w.stop:
				// One last look: the caller stops the watch once it saw the
				// final status itself, possibly before this loop did.
				if s := c.peekStatus(id); s != "" && (len(seen) == 0 || seen[len(seen)-1] != s) {
					seen = append(seen, s)
				}
				w.done <- seen
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return w
}

func (w *actionsStatusWatch) end() []string {
	close(w.stop)
	return <-w.done
}

// peekStatus reads an instance's status without failing the test (it
// runs in the watcher's goroutine).
func (c *coffer) peekStatus(id string) string {
	req, _ := http.NewRequest("GET", c.url+"/v1.0/"+c.creds.ProjectID+"/instances/"+id, nil)
	req.Header.Set("X-Auth-Token", c.creds.MemberToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	var body struct {
		Instance struct {
			Status string `json:"status"`
		} `json:"instance"`
	}
	b, _ := io.ReadAll(resp.Body)
	if json.Unmarshal(b, &body) != nil {
		return ""
	}
	return body.Instance.Status
}

// transitioned reports whether seen goes through want and ends ACTIVE.
func transitioned(seen []string, want string) bool {
	for i, s := range seen {
		if s == want {
			return seen[len(seen)-1] == "ACTIVE" && i < len(seen)-1
		}
	}
	return false
}

// TestInstanceActionsCLI drives update, restart, resize (flavor, volume),
// reset status, force delete and delete --force through the real
// `openstack database` CLI, through Keystone's catalog (cli_test.go), and
// checks each one's effect on the database the instance runs. The
// replication and upgrade commands reach the API too and get Trove's
// refusals (one PostgreSQL version, no replicas).
func TestInstanceActionsCLI(t *testing.T) {
	t.Parallel()
	c := startKeystoneCoffer(t)
	ctx := context.Background()
	member, admin := c.demo, c.admin
	// The member's token for the direct API calls (c.creds is demo's).
	memberToken := c.creds.MemberToken
	run := func(u keystonetest.User, args ...string) string {
		t.Helper()
		return c.osc(t, u, append([]string{"database"}, args...)...)
	}
	try := func(u keystonetest.User, args ...string) (string, error) {
		return c.try(u, append([]string{"openstack", "database"}, args...)...)
	}
	show := func(ref string) map[string]any {
		t.Helper()
		var m map[string]any
		c.oscJSON(t, member, &m, "database", "instance", "show", ref)
		return m
	}

	code, body := c.api(t, "POST", "/instances", memberToken, `{"instance": {
		"name": "acts", "flavorRef": "1", "volume": {"size": 1},
		"databases": [{"name": "orders"}],
		"users": [{"name": "app", "password": "app-pass-1", "databases": [{"name": "orders"}]}]}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	inst := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	ip := inst["ip"].([]any)[0].(string)
	verName := inst["datastore"].(map[string]any)["version"].(string)
	dsn := fmt.Sprintf("host=%s port=5432 user=app password=app-pass-1 dbname=orders sslmode=disable connect_timeout=5", ip)
	// query runs one statement as the instance's user on a new session.
	query := func(sql string, dest ...any) error {
		conn, err := pgx.Connect(ctx, dsn)
		if err != nil {
			return err
		}
		defer conn.Close(ctx)
		if len(dest) == 0 {
			_, err = conn.Exec(ctx, sql)
			return err
		}
		return conn.QueryRow(ctx, sql).Scan(dest...)
	}
	mustQuery := func(sql string, dest ...any) {
		t.Helper()
		if err := query(sql, dest...); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	rows := func() int {
		t.Helper()
		var n int
		mustQuery("SELECT count(*) FROM t", &n)
		return n
	}
	startedAt := func() time.Time {
		t.Helper()
		var ts time.Time
		mustQuery("SELECT pg_postmaster_start_time()", &ts)
		return ts
	}
	setting := func(name string) string {
		t.Helper()
		var v string
		mustQuery("SHOW "+name, &v)
		return v
	}
	mustQuery("CREATE TABLE t (x text)")
	mustQuery("INSERT INTO t VALUES ('before actions')")

	// update --name, by name: renamed at once, everywhere.
	run(member, "instance", "update", "acts", "--name", "acts-renamed")
	if s := show("acts-renamed"); s["id"] != id || s["name"] != "acts-renamed" {
		t.Errorf("show after rename = %v", s)
	}
	// update --is-public --allowed-cidr: stored and shown (the local
	// provider listens on loopback only, so it is not enforced there).
	run(member, "instance", "update", id, "--is-public", "--allowed-cidr", "10.20.0.0/16")
	if s := show(id); s["public"] != true || fmt.Sprint(s["allowed_cidrs"]) != "[10.20.0.0/16]" {
		t.Errorf("show after access update: public %v allowed_cidrs %v", s["public"], s["allowed_cidrs"])
	}
	// update with no option: Trove's detach of the configuration (none).
	run(member, "instance", "update", id)

	// restart: REBOOT → ACTIVE, a new postmaster, the data kept.
	before := startedAt()
	w := c.watchStatuses(id)
	began := time.Now()
	run(member, "instance", "restart", "acts-renamed")
	c.waitStatus(t, id, "ACTIVE", time.Minute)
	t.Logf("restart: CLI to ACTIVE in %v", time.Since(began).Round(time.Millisecond))
	if seen := w.end(); !transitioned(seen, "REBOOT") {
		t.Errorf("restart statuses = %v, want REBOOT then ACTIVE", seen)
	}
	if after := startedAt(); !after.After(before) {
		t.Errorf("postmaster start time %v → %v: not restarted", before, after)
	}
	if n := rows(); n != 1 {
		t.Errorf("%d rows after restart", n)
	}
	if s := show(id); s["operating_status"] != "HEALTHY" {
		t.Errorf("operating_status after restart = %v", s["operating_status"])
	}

	// resize flavor 1 (512 MB) → 2 (1024 MB): RESIZE → ACTIVE, shared
	// buffers re-derived (a quarter of memory), the data kept.
	if got := setting("shared_buffers"); got != "128MB" {
		t.Errorf("shared_buffers on flavor 1 = %s", got)
	}
	before = startedAt()
	w = c.watchStatuses(id)
	began = time.Now()
	run(member, "instance", "resize", "flavor", "acts-renamed", "2")
	c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	t.Logf("resize flavor: CLI to ACTIVE in %v", time.Since(began).Round(time.Millisecond))
	if seen := w.end(); !transitioned(seen, "RESIZE") {
		t.Errorf("resize flavor statuses = %v, want RESIZE then ACTIVE", seen)
	}
	if got := setting("shared_buffers"); got != "256MB" {
		t.Errorf("shared_buffers on flavor 2 = %s, want 256MB", got)
	}
	if after := startedAt(); !after.After(before) {
		t.Error("the flavor resize did not restart the server")
	}
	if s := show(id); s["flavor"] != "2" {
		t.Errorf("flavor after resize = %v", s["flavor"])
	}
	if n := rows(); n != 1 {
		t.Errorf("%d rows after flavor resize", n)
	}
	// Resizing to the flavor it has is refused with Trove's message.
	if out, err := try(member, "instance", "resize", "flavor", id, "2"); err == nil || !strings.Contains(out, "must be different than the current flavor") {
		t.Errorf("resize to the same flavor: %v %s", err, out)
	}

	// The 1 GB volume's limit is enforced: fill it (a sparse file counts
	// with its length) and the server turns read-only at the agent's next
	// reading; the API reports the use.
	filler := filepath.Join(c.dataDir, "instances", id, "volume", "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	filled := time.Now()
	readOnly := func(err error) bool {
		var pgErr *pgconn.PgError
		return errors.As(err, &pgErr) && pgErr.Code == "25006"
	}
	deadline := time.Now().Add(45 * time.Second)
	for {
		// The probe's row is rolled back in the same statement: a second
		// one to delete it could meet the switch to read-only itself.
		err := query("BEGIN; INSERT INTO t VALUES ('full?'); ROLLBACK")
		if readOnly(err) {
			break
		}
		if err != nil {
			t.Fatalf("insert on a filling volume: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatal("the server still takes writes on a full volume")
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Logf("volume limit: read-only %v after the volume filled", time.Since(filled).Round(time.Millisecond))
	if s := show(id); s["volume"] != float64(1) || s["volume_used"].(float64) < 1 {
		t.Errorf("full volume shown as size %v used %v", s["volume"], s["volume_used"])
	}
	if n := rows(); n != 1 {
		t.Errorf("%d rows readable on the full volume", n)
	}

	// resize volume 1 → 2: RESIZE → ACTIVE, the new size reported, and
	// writes are taken again.
	w = c.watchStatuses(id)
	began = time.Now()
	run(member, "instance", "resize", "volume", "acts-renamed", "2")
	c.waitStatus(t, id, "ACTIVE", time.Minute)
	t.Logf("resize volume: CLI to ACTIVE in %v", time.Since(began).Round(time.Millisecond))
	if seen := w.end(); !transitioned(seen, "RESIZE") {
		t.Errorf("resize volume statuses = %v, want RESIZE then ACTIVE", seen)
	}
	s := show(id)
	if s["volume"] != float64(2) {
		t.Errorf("volume after resize = %v", s["volume"])
	}
	if used, _ := s["volume_used"].(float64); used < 1 || used >= 2 {
		t.Errorf("volume_used after resize = %v", s["volume_used"])
	}
	deadline = time.Now().Add(10 * time.Second)
	for err := query("INSERT INTO t VALUES ('after resize')"); err != nil; err = query("INSERT INTO t VALUES ('after resize')") {
		if !readOnly(err) || time.Now().After(deadline) {
			t.Fatalf("write after the volume resize: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if n := rows(); n != 2 {
		t.Errorf("%d rows after the volume resize, want 2", n)
	}
	// Refused, each with Trove's message, changing nothing (the events
	// below say so): independent, so issued at once. Reset status is admin
	// only (Trove's policy message for members).
	var refusals []check
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"instance", "resize", "volume", id, "2"}, "must be larger than the current volume size"},
		{[]string{"instance", "resize", "volume", id, "11"}, "cannot exceed maximum"},
		{[]string{"instance", "upgrade", id, verName}, "already runs datastore version"},
		{[]string{"instance", "upgrade", "acts-renamed", "99"}, "cannot be found"},
		{[]string{"instance", "detach", "acts-renamed"}, "is not a replica."},
		{[]string{"instance", "promote", id}, "is not a replica."},
		{[]string{"instance", "eject", id}, "is not a replica source."},
		{[]string{"instance", "reset", "status", id}, "Policy doesn't allow instance:reset_status to be performed."},
	} {
		refusals = append(refusals, check{strings.Join(tc.args, " "), func(t testing.TB) {
			if out, err := try(member, tc.args...); err == nil || !strings.Contains(out, tc.want) {
				t.Errorf("openstack database %s: %v %s (want an error saying %q)", strings.Join(tc.args, " "), err, out, tc.want)
			}
		}})
	}
	together(t, "refused", refusals...)

	// reset status by the admin: the task is cleared and the datastore
	// status unknown (operating_status ERROR) until the agent's next
	// heartbeat reports it again.
	resetAt := time.Now().UTC().Truncate(time.Second)
	run(admin, "instance", "reset", "status", "acts-renamed")
	_, body = c.api(t, "GET", "/instances/"+id, memberToken, "")
	i := body["instance"].(map[string]any)
	var beat time.Time
	_ = json.Unmarshal([]byte(`"`+i["service_status_updated"].(string)+`Z"`), &beat)
	if i["status"] != "ACTIVE" || (i["operating_status"] != "ERROR" && !beat.After(resetAt)) {
		t.Errorf("after reset status: %v / %v (last heartbeat %v, reset %v)", i["status"], i["operating_status"], beat, resetAt)
	}
	if n := rows(); n != 2 {
		t.Errorf("%d rows after reset status", n)
	}

	// force delete of an instance that is still building (plain delete is
	// refused then): reset_status + DELETE, and it is gone.
	code, body = c.api(t, "POST", "/instances", memberToken, `{"instance": {"name": "stuck", "flavorRef": "1", "volume": {"size": 1}}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	stuck := body["instance"].(map[string]any)["id"].(string)
	if code, body := c.api(t, "DELETE", "/instances/"+stuck, memberToken, ""); code != 422 {
		t.Errorf("delete while building: %d %v", code, body)
	}
	run(admin, "instance", "force", "delete", stuck)
	c.waitStatus(t, stuck, "", time.Minute)
	if procs := processesUnder(filepath.Join(c.dataDir, "instances", stuck)); len(procs) > 0 {
		t.Errorf("force delete left processes: %v", procs)
	}

	// delete --force: a member cannot (reset_status is admin only), the
	// admin can; the instance, its server and its processes are gone.
	if out, err := try(member, "instance", "delete", "--force", "acts-renamed"); err == nil || !strings.Contains(out, "Policy doesn't allow") {
		t.Errorf("member delete --force: %v %s", err, out)
	}
	run(admin, "instance", "delete", "--force", "acts-renamed")
	c.waitStatus(t, id, "", time.Minute)
	instDir := filepath.Join(c.dataDir, "instances", id)
	if _, err := os.Stat(instDir); !os.IsNotExist(err) {
		t.Errorf("instance directory after delete --force: %v", err)
	}
	if procs := processesUnder(instDir); len(procs) > 0 {
		t.Errorf("delete --force left processes: %v", procs)
	}
	if err := query("SELECT 1"); err == nil {
		t.Error("the deleted instance still answers")
	}

	// The control plane's record of it all.
	db := c.controlDB(t)
	evRows, err := db.Query(ctx, "SELECT kind FROM event WHERE resource_id = $1 ORDER BY id", id)
	if err != nil {
		t.Fatal(err)
	}
	kinds, err := pgx.CollectRows(evRows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	want := "instance.created,instance.active,instance.updated,instance.updated," +
		"instance.restarting,instance.restarted,instance.resizing,instance.resized,instance.resizing,instance.resized," +
		"instance.status_reset,instance.status_reset,instance.deleting,instance.deleted"
	if got := strings.Join(kinds, ","); got != want {
		t.Errorf("events:\n got %s\nwant %s", got, want)
	}
	// How long each action took on the control plane's clock: from the
	// request's transaction to the completer's.
	var timing []string
	var started time.Time
	tRows, err := db.Query(ctx, "SELECT kind, created_at FROM event WHERE resource_id = $1 AND kind ~ '(restart|resiz)' ORDER BY id", id)
	if err != nil {
		t.Fatal(err)
	}
	for tRows.Next() {
		var kind string
		var at time.Time
		if err := tRows.Scan(&kind, &at); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(kind, "ing") {
			started = at
		} else {
			timing = append(timing, fmt.Sprintf("%s %v", kind, at.Sub(started).Round(time.Millisecond)))
		}
	}
	t.Logf("request to completion: %s", strings.Join(timing, ", "))
	var outcomes []string
	actRows, err := db.Query(ctx, "SELECT action || ':' || outcome FROM instance_action WHERE instance_id = $1 ORDER BY created_at", id)
	if err != nil {
		t.Fatal(err)
	}
	if outcomes, err = pgx.CollectRows(actRows, pgx.RowTo[string]); err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(outcomes, ","); got != "restart:succeeded,resize_flavor:succeeded,resize_volume:succeeded" {
		t.Errorf("actions = %s", got)
	}
}

// TestInstanceActionsTroveCLI drives the same actions through the legacy
// `trove` CLI (8.0.0), through Keystone's catalog (cli_test.go): restart,
// resize-instance, resize-volume, reset-status, upgrade, promote/eject and
// force-delete. (`trove update` and `trove detach-replica` crash in 8.0.0
// before sending anything.)
func TestInstanceActionsTroveCLI(t *testing.T) {
	t.Parallel()
	c := startKeystoneCoffer(t)
	run := func(u keystonetest.User, args ...string) {
		t.Helper()
		c.run(t, u, append([]string{"trove"}, args...)...)
	}
	code, body := c.api(t, "POST", "/instances", c.creds.MemberToken, `{"instance": {
		"name": "legacy", "flavorRef": "1", "volume": {"size": 1},
		"databases": [{"name": "d"}], "users": [{"name": "u", "password": "u-pass-1", "databases": [{"name": "d"}]}]}}`)
	if code != 200 {
		t.Fatalf("create: %d %v", code, body)
	}
	id := body["instance"].(map[string]any)["id"].(string)
	inst := c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	dsn := fmt.Sprintf("host=%s port=5432 user=u password=u-pass-1 dbname=d sslmode=disable connect_timeout=5", inst["ip"].([]any)[0])
	scalar := func(sql string) string {
		t.Helper()
		conn, err := pgx.Connect(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close(context.Background())
		var v string
		if err := conn.QueryRow(context.Background(), sql).Scan(&v); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
		return v
	}

	before := scalar("SELECT pg_postmaster_start_time()::text")
	w := c.watchStatuses(id)
	run(c.demo, "restart", "legacy")
	c.waitStatus(t, id, "ACTIVE", time.Minute)
	if seen := w.end(); !transitioned(seen, "REBOOT") {
		t.Errorf("trove restart statuses = %v", seen)
	}
	if after := scalar("SELECT pg_postmaster_start_time()::text"); after == before {
		t.Error("trove restart did not restart the server")
	}

	w = c.watchStatuses(id)
	run(c.demo, "resize-instance", "legacy", "3") // m1.medium, 2048 MB
	c.waitStatus(t, id, "ACTIVE", 2*time.Minute)
	if seen := w.end(); !transitioned(seen, "RESIZE") {
		t.Errorf("trove resize-instance statuses = %v", seen)
	}
	if got := scalar("SHOW shared_buffers"); got != "512MB" {
		t.Errorf("shared_buffers after resize-instance to 2048 MB = %s", got)
	}

	run(c.demo, "resize-volume", "legacy", "3")
	inst = c.waitStatus(t, id, "ACTIVE", time.Minute)
	for deadline := time.Now().Add(30 * time.Second); inst["volume"].(map[string]any)["size"] != float64(3); {
		if time.Now().After(deadline) {
			t.Fatalf("volume after trove resize-volume: %v", inst["volume"])
		}
		time.Sleep(50 * time.Millisecond)
		_, body := c.api(t, "GET", "/instances/"+id, c.creds.MemberToken, "")
		inst = body["instance"].(map[string]any)
	}

	var refusals []check
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"upgrade", id, inst["datastore"].(map[string]any)["version"].(string)}, "already runs datastore version"},
		{[]string{"upgrade", id, "99"}, "cannot be found"},
		{[]string{"promote-to-replica-source", id}, "is not a replica."},
		{[]string{"eject-replica-source", id}, "is not a replica source."},
		{[]string{"reset-status", id}, "Policy doesn't allow instance:reset_status to be performed."},
	} {
		refusals = append(refusals, check{strings.Join(tc.args, " "), func(t testing.TB) {
			c.fails(t, c.demo, tc.want, append([]string{"trove"}, tc.args...)...)
		}})
	}
	together(t, "refused", refusals...)
	run(c.admin, "reset-status", id)
	run(c.admin, "force-delete", "legacy")
	c.waitStatus(t, id, "", time.Minute)
}
