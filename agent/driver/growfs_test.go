package driver

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// skipOrFail skips loudly outside CI and fails in CI, where loop devices
// and the filesystem tools must be available.
func skipOrFail(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv("CI") != "" {
		t.Fatalf(format, args...)
	}
	t.Skipf("SKIPPING: "+format, args...)
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// loopVolume makes a real block device: a sparse 64 MiB image with a
// filesystem of type fstype, attached to a loop device and mounted on a
// temporary directory. It returns the image, the device and the mount
// point; everything is undone in t.Cleanup.
func loopVolume(t *testing.T, fstype string) (img, dev, mnt string) {
	t.Helper()
	if os.Geteuid() != 0 {
		skipOrFail(t, "loop devices need root")
	}
	mkfs := "mkfs." + fstype
	for _, tool := range []string{"losetup", mkfs} {
		if _, err := exec.LookPath(tool); err != nil {
			skipOrFail(t, "%s is not installed (e2fsprogs, xfsprogs, mount)", tool)
		}
	}
	dir := t.TempDir()
	img, mnt = filepath.Join(dir, "volume.img"), filepath.Join(dir, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	// xfs needs at least 300 MiB nowadays.
	size := "64M"
	if fstype == "xfs" {
		size = "320M"
	}
	run(t, "truncate", "-s", size, img)
	args := []string{"-q", "-F", img}
	if fstype == "xfs" {
		args = []string{"-q", "-f", img}
	}
	run(t, mkfs, args...)
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		skipOrFail(t, "no loop device available: losetup --find --show: %v: %s", err, out)
	}
	dev = strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", dev).CombinedOutput(); err != nil {
			t.Errorf("cleanup: losetup -d %s: %v: %s", dev, err, out)
		}
	})
	run(t, "mount", dev, mnt)
	t.Cleanup(func() {
		// A lazy unmount as a last resort: a test's failure must not
		// leave the loop device busy forever.
		if out, err := exec.Command("umount", mnt).CombinedOutput(); err != nil {
			t.Errorf("cleanup: umount %s: %v: %s", mnt, err, out)
			exec.Command("umount", "-l", mnt).Run()
		}
	})
	return img, dev, mnt
}

// hasCapSysResource reports whether this process may resize an ext4
// filesystem online (capability 24, CAP_SYS_RESOURCE).
func hasCapSysResource(t *testing.T) bool {
	t.Helper()
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatalf("CapEff %q: %v", v, err)
			}
			return caps&(1<<24) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

func fsSize(t *testing.T, dir string) int64 {
	t.Helper()
	var st syscall.Statfs_t
	if err := syscall.Statfs(dir, &st); err != nil {
		t.Fatal(err)
	}
	return int64(st.Blocks) * st.Bsize
}

func TestGrowFilesystem(t *testing.T) {
	t.Parallel()
	for _, fstype := range []string{"ext4", "xfs"} {
		t.Run(fstype, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			img, dev, mnt := loopVolume(t, fstype)
			vol := filepath.Join(mnt, "volume", "pgdata")
			if err := os.MkdirAll(vol, 0o755); err != nil {
				t.Fatal(err)
			}

			m, err := MountOf(vol)
			if err != nil {
				t.Fatal(err)
			}
			if m.Point != mnt || m.Source != dev || m.FSType != fstype {
				t.Fatalf("MountOf(%s) = %+v, want %s on %s (%s)", vol, m, dev, mnt, fstype)
			}

			// Nothing to grow yet: a no-op success.
			before := fsSize(t, mnt)
			if grown, err := GrowFilesystem(ctx, vol); err != nil || !grown {
				t.Fatalf("GrowFilesystem at the device's size = %v, %v; want true, nil", grown, err)
			}
			if got := fsSize(t, mnt); got != before {
				t.Fatalf("growing to the same size changed the filesystem from %d to %d bytes", before, got)
			}

			// The provider extends the volume: the device doubles.
			fi, err := os.Stat(img)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 2*fi.Size()); err != nil {
				t.Fatal(err)
			}
			run(t, "losetup", "-c", dev)
			if fstype != "xfs" && !hasCapSysResource(t) {
				// The kernel's online ext4 resize needs CAP_SYS_RESOURCE
				// (xfs's needs only CAP_SYS_ADMIN); a container may withhold
				// it. The refusal must be a clear error, not a silent no-op.
				grown, err := GrowFilesystem(ctx, vol)
				if err == nil || grown || !strings.Contains(err.Error(), "resize2fs") || !strings.Contains(err.Error(), "Permission denied") {
					t.Fatalf("GrowFilesystem without CAP_SYS_RESOURCE = %v, %v; want an error with resize2fs's refusal", grown, err)
				}
				t.Skipf("SKIPPING the ext4 online grow: this process lacks CAP_SYS_RESOURCE, which the kernel requires "+
					"(the refusal was reported clearly: %v)", err)
			}
			if grown, err := GrowFilesystem(ctx, vol); err != nil || !grown {
				t.Fatalf("GrowFilesystem = %v, %v; want true, nil", grown, err)
			}
			after := fsSize(t, mnt)
			if after < before+fi.Size()*9/10 {
				t.Fatalf("filesystem is %d bytes after growing from %d on a device grown by %d", after, before, fi.Size())
			}
			t.Logf("%s on %s: %d -> %d bytes", fstype, dev, before, after)

			// Again: idempotent.
			if grown, err := GrowFilesystem(ctx, vol); err != nil || !grown {
				t.Fatalf("repeated GrowFilesystem = %v, %v; want true, nil", grown, err)
			}
			if got := fsSize(t, mnt); got != after {
				t.Fatalf("repeated grow changed the filesystem from %d to %d bytes", after, got)
			}
		})
	}
}

// TestGrowFilesystemPlainDirectory: the local provider's volume is a
// directory on the host's filesystem, which is not the agent's to grow.
func TestGrowFilesystemPlainDirectory(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m, err := MountOf(dir)
	if err != nil {
		t.Fatal(err)
	}
	grown, err := GrowFilesystem(context.Background(), dir)
	if err != nil || grown {
		t.Fatalf("GrowFilesystem(%s) on %+v = %v, %v; want false, nil", dir, m, grown, err)
	}
}

func TestParseMountInfo(t *testing.T) {
	t.Parallel()
	m, ok := parseMountInfo(`36 35 98:0 /mnt1 /srv/my\040volume rw,noatime master:1 shared:7 - ext4 /dev/vdb rw,errors=continue`)
	want := Mount{Point: "/srv/my volume", FSType: "ext4", Source: "/dev/vdb"}
	if !ok || m != want {
		t.Fatalf("parseMountInfo = %+v, %v; want %+v", m, ok, want)
	}
	for path, point := range map[string]bool{"/srv/my volume": true, "/srv/my volume/x": true, "/srv/my volumes": false} {
		if within(path, m.Point) != point {
			t.Errorf("within(%q, %q) = %v", path, m.Point, !point)
		}
	}
}
