package postgresql

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// startTime is the server's start time, as os_admin sees it.
func startTime(t *testing.T, ctx context.Context, d *Driver) time.Time {
	t.Helper()
	conn, err := connectTCP(ctx, d, AdminUser, mustState(t, d).SuperPassword, "postgres")
	if err != nil {
		t.Fatalf("connect as %s: %v", AdminUser, err)
	}
	defer conn.Close(ctx)
	var ts time.Time
	if err := conn.QueryRow(ctx, "SELECT pg_postmaster_start_time()").Scan(&ts); err != nil {
		t.Fatal(err)
	}
	return ts
}

func showSetting(t *testing.T, ctx context.Context, d *Driver, name string) string {
	t.Helper()
	conn, err := connectTCP(ctx, d, AdminUser, mustState(t, d).SuperPassword, "postgres")
	if err != nil {
		t.Fatalf("connect as %s: %v", AdminUser, err)
	}
	defer conn.Close(ctx)
	var v string
	if err := conn.QueryRow(ctx, "SHOW "+name).Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func countNotes(t *testing.T, ctx context.Context, d *Driver) int {
	t.Helper()
	conn, err := connectTCP(ctx, d, "alice", alicePassword, "app")
	if err != nil {
		t.Fatalf("connect as alice: %v", err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM notes").Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func prepareWithNotes(t *testing.T, ctx context.Context, d *Driver, volumeGB int) {
	t.Helper()
	req := prepareRequest(alicePassword)
	req.VolumeSizeGB = volumeGB
	if err := d.Prepare(ctx, req); err != nil {
		t.Fatalf("Prepare: %v", err)
	}
	conn, err := connectTCP(ctx, d, "alice", alicePassword, "app")
	if err != nil {
		t.Fatalf("connect as alice: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE TABLE notes (id serial PRIMARY KEY, body text); INSERT INTO notes (body) VALUES ('kept')"); err != nil {
		t.Fatal(err)
	}
}

func TestRestartAndResizeMemory(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDriver(t)

	if err := d.Restart(ctx); err == nil || !strings.Contains(err.Error(), "not prepared") {
		t.Errorf("Restart before Prepare = %v, want 'not prepared'", err)
	}
	if err := d.ResizeMemory(ctx, 1024); err == nil {
		t.Error("ResizeMemory before Prepare succeeded")
	}
	prepareWithNotes(t, ctx, d, 2)

	// Restart: a new postmaster, the data kept, healthy at once.
	before := startTime(t, ctx, d)
	pid := postmasterPID(t, d)
	if err := d.Restart(ctx); err != nil {
		t.Fatalf("Restart: %v", err)
	}
	if after := startTime(t, ctx, d); !after.After(before) {
		t.Errorf("postmaster start time %v → %v: not restarted", before, after)
	}
	if postmasterPID(t, d) == pid {
		t.Error("same postmaster pid after Restart")
	}
	if got := d.Status(ctx); got != protocol.ServiceHealthy {
		t.Errorf("Status after Restart = %s", got)
	}
	if n := countNotes(t, ctx, d); n != 1 {
		t.Errorf("%d rows after Restart, want 1", n)
	}

	// A stopped server is started by Restart.
	if err := d.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatalf("Restart of a stopped server: %v", err)
	}
	if got := d.Status(ctx); got != protocol.ServiceHealthy {
		t.Errorf("Status after restarting a stopped server = %s", got)
	}

	// Resize 512 MB → 2048 MB: memory settings re-derived, applied by a
	// restart, data kept.
	if got := showSetting(t, ctx, d, "shared_buffers"); got != "128MB" {
		t.Fatalf("shared_buffers before resize = %s", got)
	}
	before = startTime(t, ctx, d)
	if err := d.ResizeMemory(ctx, 2048); err != nil {
		t.Fatalf("ResizeMemory: %v", err)
	}
	for setting, want := range map[string]string{"shared_buffers": "512MB", "effective_cache_size": "1536MB", "max_connections": "100", "maintenance_work_mem": "128MB"} {
		if got := showSetting(t, ctx, d, setting); got != want {
			t.Errorf("after resize %s = %s, want %s", setting, got, want)
		}
	}
	resized := startTime(t, ctx, d)
	if !resized.After(before) {
		t.Error("ResizeMemory did not restart the server")
	}
	if n := countNotes(t, ctx, d); n != 1 {
		t.Errorf("%d rows after ResizeMemory, want 1", n)
	}
	// The same resize again (a redelivered command) does not restart.
	if err := d.ResizeMemory(ctx, 2048); err != nil {
		t.Fatalf("repeated ResizeMemory: %v", err)
	}
	if again := startTime(t, ctx, d); !again.Equal(resized) {
		t.Error("a repeated ResizeMemory restarted the server")
	}

	// A flavor the server cannot start with (a quarter of 4 TiB as shared
	// buffers) fails, and the previous settings are back and running.
	err := d.ResizeMemory(ctx, 4<<20)
	if err == nil {
		t.Fatal("ResizeMemory to 4 TiB succeeded")
	}
	if !strings.Contains(err.Error(), "previous settings are back") {
		t.Errorf("error = %v", err)
	}
	if got := d.Status(ctx); got != protocol.ServiceHealthy {
		t.Errorf("Status after a failed resize = %s", got)
	}
	if got := showSetting(t, ctx, d, "shared_buffers"); got != "512MB" {
		t.Errorf("shared_buffers after rollback = %s, want 512MB", got)
	}
	if n := countNotes(t, ctx, d); n != 1 {
		t.Errorf("%d rows after rollback, want 1", n)
	}
	if err := d.ResizeMemory(ctx, 0); err == nil {
		t.Error("ResizeMemory(0) succeeded")
	}
}

// insertNote tries a write as alice.
func insertNote(ctx context.Context, d *Driver) error {
	conn, err := connectTCP(ctx, d, "alice", alicePassword, "app")
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	_, err = conn.Exec(ctx, "INSERT INTO notes (body) VALUES ('more')")
	return err
}

func isReadOnlyError(err error) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == "25006" // read_only_sql_transaction
}

// waitWrites waits until a write as alice is refused as read-only
// (wantRefused) or succeeds: the setting reaches sessions with the
// server's reload, a moment after it is made.
func waitWrites(t *testing.T, ctx context.Context, d *Driver, wantRefused bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := insertNote(ctx, d)
		if wantRefused && isReadOnlyError(err) || !wantRefused && err == nil {
			return
		}
		if err != nil && !isReadOnlyError(err) {
			t.Fatalf("insert: %v", err)
		}
		if time.Now().After(deadline) {
			t.Fatalf("writes refused = %v, want %v (last error %v)", err != nil, wantRefused, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestVolumeLimit(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	d := newDriver(t)
	if err := d.ResizeVolume(ctx, 2); err == nil {
		t.Error("ResizeVolume before Prepare succeeded")
	}
	prepareWithNotes(t, ctx, d, 1)

	used, total, err := d.VolumeUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if total != 1<<30 || used <= 0 || used >= total {
		t.Fatalf("usage of a fresh 1 GB volume: %d of %d", used, total)
	}
	waitWrites(t, ctx, d, false)

	// Fill the volume: a sparse file counts with its full length, as the
	// walk adds up file sizes. The next reading makes the server read-only,
	// including sessions already connected.
	open, err := connectTCP(ctx, d, "alice", alicePassword, "app")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { open.Close(ctx) }()
	filler := filepath.Join(d.dataDir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(1 << 30); err != nil {
		t.Fatal(err)
	}
	f.Close()
	used, total, err = d.VolumeUsage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if used < total {
		t.Fatalf("filled volume: %d of %d", used, total)
	}
	waitWrites(t, ctx, d, true)
	if _, err := open.Exec(ctx, "INSERT INTO notes (body) VALUES ('open session')"); !isReadOnlyError(err) {
		t.Errorf("write on a session opened before the volume filled: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.dataDir, fullMarker)); err != nil {
		t.Errorf("full marker: %v", err)
	}
	// Reads still work ('kept' and the write that proved writes worked),
	// and the state survives a restart.
	if n := countNotes(t, ctx, d); n != 2 {
		t.Errorf("%d rows readable on a full volume, want 2", n)
	}
	if err := d.Restart(ctx); err != nil {
		t.Fatal(err)
	}
	waitWrites(t, ctx, d, true)
	open.Close(ctx)
	if open, err = connectTCP(ctx, d, "alice", alicePassword, "app"); err != nil {
		t.Fatal(err)
	}
	// A setting reset behind the driver's back is made again by the next
	// reading.
	admin, err := connectTCP(ctx, d, AdminUser, mustState(t, d).SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{"SET default_transaction_read_only = off", "ALTER SYSTEM RESET ALL", "SELECT pg_reload_conf()"} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	admin.Close(ctx)
	waitWrites(t, ctx, d, false)
	if _, _, err := d.VolumeUsage(ctx); err != nil {
		t.Fatal(err)
	}
	waitWrites(t, ctx, d, true)

	// Growing the volume lifts the limit at once and is reported.
	if err := d.ResizeVolume(ctx, 2); err != nil {
		t.Fatalf("ResizeVolume: %v", err)
	}
	if st := mustState(t, d); st.VolumeSizeGB != 2 {
		t.Errorf("state volume size = %d", st.VolumeSizeGB)
	}
	if _, total, _ := d.VolumeUsage(ctx); total != 2<<30 {
		t.Errorf("total after resize = %d, want 2 GiB", total)
	}
	waitWrites(t, ctx, d, false)
	if _, err := open.Exec(ctx, "INSERT INTO notes (body) VALUES ('open session')"); err != nil {
		t.Errorf("write on a session opened while full, after the resize: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d.dataDir, fullMarker)); !os.IsNotExist(err) {
		t.Errorf("full marker after resize: %v", err)
	}
	// Repeated (a redelivered command): nothing changes.
	if err := d.ResizeVolume(ctx, 2); err != nil {
		t.Fatalf("repeated ResizeVolume: %v", err)
	}

	// A read-only setting the driver did not make is not lifted by it.
	admin, err = connectTCP(ctx, d, AdminUser, mustState(t, d).SuperPassword, "postgres")
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(ctx)
	for _, sql := range []string{"ALTER SYSTEM SET default_transaction_read_only = on", "SELECT pg_reload_conf()"} {
		if _, err := admin.Exec(ctx, sql); err != nil {
			t.Fatalf("%s: %v", sql, err)
		}
	}
	waitWrites(t, ctx, d, true)
	if _, _, err := d.VolumeUsage(ctx); err != nil {
		t.Fatal(err)
	}
	waitWrites(t, ctx, d, true)
}
