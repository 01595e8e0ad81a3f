package postgresql

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// TestResizeVolumeGrowsFilesystem: on a VM the volume is a block device of
// its own; after the provider grew it, ResizeVolume grows the filesystem
// on it. Here the device is a loop device over a sparse image, with xfs
// (the ext4 path needs CAP_SYS_RESOURCE, which containers often withhold;
// agent/driver's TestGrowFilesystem covers both).
func TestResizeVolumeGrowsFilesystem(t *testing.T) {
	t.Parallel()
	skip := func(format string, args ...any) {
		t.Helper()
		if os.Getenv("CI") != "" {
			t.Fatalf(format, args...)
		}
		t.Skipf("SKIPPING: "+format, args...)
	}
	if os.Geteuid() != 0 {
		skip("loop devices need root")
	}
	for _, tool := range []string{"losetup", "mkfs.xfs", "xfs_growfs"} {
		if _, err := exec.LookPath(tool); err != nil {
			skip("%s is not installed (mount, xfsprogs)", tool)
		}
	}
	run := func(name string, args ...string) string {
		t.Helper()
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	// Not t.TempDir: its parent is not searchable by postgres.
	dir, err := os.MkdirTemp("", "pgvol")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	img, mnt := filepath.Join(dir, "volume.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	run("truncate", "-s", "320M", img)
	run("mkfs.xfs", "-q", "-f", img)
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		skip("no loop device available: losetup --find --show: %v: %s", err, out)
	}
	dev := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("cleanup: losetup -d %s: %v: %s", dev, err, out)
		}
	})
	run("mount", dev, mnt)
	t.Cleanup(func() {
		// pg_ctl stop returns once postmaster.pid is gone, which the
		// postmaster removes on its way out, while it still holds
		// postgres.log (its stderr) on the volume: CI once saw "target is
		// busy". The unmount is retried for a while before it counts.
		var out []byte
		var err error
		for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
			if out, err = exec.Command("umount", mnt).CombinedOutput(); err == nil {
				return
			}
			if time.Now().After(deadline) {
				break
			}
		}
		holders, _ := exec.Command("fuser", "-vm", mnt).CombinedOutput()
		t.Errorf("cleanup: umount %s: %v: %s\nholders (fuser -vm): %s", mnt, err, out, holders)
		exec.Command("umount", "-l", mnt).Run()
	})
	// The server runs as postgres when the tests run as root.
	if err := os.Chmod(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	d, err := New(protocol.AgentConfig{Datastore: "postgresql", DataDir: mnt, ListenAddress: "127.0.0.1", Port: freePort(t)})
	if err != nil {
		t.Fatal(err)
	}
	// Registered after the unmount, so it runs before it.
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := d.Stop(ctx); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	prepareWithNotes(t, ctx, d, 1)

	size := func() int64 {
		var st syscall.Statfs_t
		if err := syscall.Statfs(mnt, &st); err != nil {
			t.Fatal(err)
		}
		return int64(st.Blocks) * st.Bsize
	}
	before := size()
	if err := os.Truncate(img, 640<<20); err != nil {
		t.Fatal(err)
	}
	run("losetup", "-c", dev)
	for range 2 { // the second time: nothing to grow, still a success
		if err := d.ResizeVolume(ctx, 2); err != nil {
			t.Fatalf("ResizeVolume: %v", err)
		}
	}
	after := size()
	if after < before+300<<20 {
		t.Fatalf("the filesystem is %d bytes after ResizeVolume, was %d, on a device grown by 320 MiB", after, before)
	}
	if _, total, err := d.VolumeUsage(ctx); err != nil || total != 2<<30 {
		t.Errorf("volume total after ResizeVolume: %d, %v; want 2 GiB", total, err)
	}
	t.Logf("xfs on %s: %d -> %d bytes", dev, before, after)
}
