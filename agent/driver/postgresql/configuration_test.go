package postgresql

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// show reads settings in a new session, as a client connecting after a
// change would.
func show(t *testing.T, ctx context.Context, d *Driver, settings ...string) map[string]string {
	t.Helper()
	conn, err := connectTCP(ctx, d, AdminUser, mustState(t, d).SuperPassword, "postgres")
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	defer conn.Close(ctx)
	got := map[string]string{}
	for _, s := range settings {
		var v string
		if err := conn.QueryRow(ctx, "SHOW "+s).Scan(&v); err != nil {
			t.Fatalf("SHOW %s: %v", s, err)
		}
		got[s] = v
	}
	return got
}

func TestApplyConfiguration(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDriver(t)

	if err := d.ApplyConfiguration(ctx, map[string]string{"work_mem": "16MB"}, false); err == nil {
		t.Fatal("ApplyConfiguration before Prepare succeeded")
	}
	req := prepareRequest(alicePassword)
	req.Databases, req.Users = nil, nil
	if err := d.Prepare(ctx, req); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	derived := DefaultSettings(req.FlavorRAMMB)
	if got := show(t, ctx, d, "work_mem", "max_connections"); got["work_mem"] != derived["work_mem"] || got["max_connections"] != derived["max_connections"] {
		t.Fatalf("after Prepare %v, want the derived %v", got, derived)
	}
	pid := postmasterPID(t, d)

	// A dynamic value is live when the call returns, without a restart.
	if err := d.ApplyConfiguration(ctx, map[string]string{"work_mem": "16MB", "Random_Page_Cost": "2"}, false); err != nil {
		t.Fatalf("apply dynamic: %v", err)
	}
	if got := show(t, ctx, d, "work_mem", "random_page_cost"); got["work_mem"] != "16MB" || got["random_page_cost"] != "2" {
		t.Errorf("after a live apply: %v", got)
	}
	if postmasterPID(t, d) != pid {
		t.Error("a live apply restarted the server")
	}

	// Restart-required values are written, not applied: the running server
	// keeps its values (dynamic ones too) until it restarts.
	if err := d.ApplyConfiguration(ctx, map[string]string{"max_connections": "77", "work_mem": "8MB"}, true); err != nil {
		t.Fatalf("apply with restart: %v", err)
	}
	if got := show(t, ctx, d, "work_mem", "max_connections"); got["work_mem"] != "16MB" || got["max_connections"] != derived["max_connections"] {
		t.Errorf("before the restart: %v", got)
	}
	c := d.cluster(mustState(t, d).SuperPassword)
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitHealthy(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got := show(t, ctx, d, "work_mem", "max_connections", "random_page_cost"); got["work_mem"] != "8MB" || got["max_connections"] != "77" || got["random_page_cost"] != "4" {
		t.Errorf("after the restart: %v (random_page_cost is no longer overridden)", got)
	}

	// Values PostgreSQL refuses change nothing, and the error says why.
	overrides := filepath.Join(d.dataDir, pgdataDir, overridesName)
	before, err := os.ReadFile(overrides)
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []struct {
		values map[string]string
		want   string
	}{
		{map[string]string{"work_mem": "banana"}, `invalid value for parameter "work_mem": "banana"`},
		{map[string]string{"password_encryption": "on"}, "Available values: md5, scram-sha-256"},
		{map[string]string{"sql_inheritance": "on"}, `unrecognized configuration parameter "sql_inheritance"`},
		{map[string]string{"max_connections": "-5"}, "max_connections"},
		{map[string]string{"port": "6543"}, "managed by Coffer"},
		{map[string]string{"include": "/etc/passwd"}, "managed by Coffer"},
		{map[string]string{"work_mem": "1MB'\ninclude '/etc/passwd"}, "line breaks"},
		{map[string]string{"bad name": "1"}, "invalid setting name"},
	} {
		err := d.ApplyConfiguration(ctx, bad.values, false)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("apply %v: error %v, want one containing %q", bad.values, err, bad.want)
		}
	}
	after, err := os.ReadFile(overrides)
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Errorf("refused values changed %s:\n%s", overridesName, after)
	}
	if leftovers, _ := filepath.Glob(filepath.Join(d.dataDir, pgdataDir, "*.new")); len(leftovers) > 0 {
		t.Errorf("check files left behind: %v", leftovers)
	}
	// The server still starts: nothing invalid reached its configuration.
	if err := c.Restart(ctx); err != nil {
		t.Fatalf("restart after refused values: %v", err)
	}
	if err := waitHealthy(ctx, c); err != nil {
		t.Fatal(err)
	}

	// Values with quotes and backslashes arrive intact.
	if err := d.ApplyConfiguration(ctx, map[string]string{"application_name": `it's a \ test`}, false); err != nil {
		t.Fatalf("apply quoted: %v", err)
	}
	if got := show(t, ctx, d, "application_name"); got["application_name"] != `it's a \ test` {
		t.Errorf("application_name = %q", got["application_name"])
	}

	// Empty values restore the defaults; the include is written once.
	for range 2 {
		if err := d.ApplyConfiguration(ctx, nil, true); err != nil {
			t.Fatalf("restore defaults: %v", err)
		}
	}
	if err := c.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	if err := waitHealthy(ctx, c); err != nil {
		t.Fatal(err)
	}
	if got := show(t, ctx, d, "work_mem", "max_connections"); got["work_mem"] != derived["work_mem"] || got["max_connections"] != derived["max_connections"] {
		t.Errorf("after restoring defaults: %v, want %v", got, derived)
	}
	conf, err := os.ReadFile(filepath.Join(d.dataDir, pgdataDir, "postgresql.conf"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(conf), overridesInclude); n != 1 {
		t.Errorf("postgresql.conf includes %s %d times", overridesName, n)
	}
	if got := d.Status(ctx); got != protocol.ServiceHealthy {
		t.Errorf("status = %s", got)
	}
}

func TestRenderOverrides(t *testing.T) {
	t.Parallel()
	got, err := renderOverrides(map[string]string{"Work_Mem": "16MB", "search_path": `"$user", public`, "x.y": `a\b'c`})
	if err != nil {
		t.Fatal(err)
	}
	want := "# Configuration group overrides, written by the Coffer agent; do not edit.\n" +
		"search_path = '\"$user\", public'\n" +
		"work_mem = '16MB'\n" +
		`x.y = 'a\\b''c'` + "\n"
	if string(got) != want {
		t.Errorf("got\n%s\nwant\n%s", got, want)
	}
	if _, err := renderOverrides(map[string]string{"work_mem": "1", "WORK_MEM": "2"}); err == nil {
		t.Error("a name given twice (in two cases) was accepted")
	}
}
