package driver

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Mount is the mounted filesystem that holds a directory, as the kernel
// reports it in /proc/self/mountinfo.
type Mount struct {
	Point  string // mount point
	FSType string // ext4, xfs, tmpfs, overlay, ...
	Source string // /dev/vdb, /dev/loop3; not a path for virtual filesystems
}

// mountInfo lists this process's mounts.
const mountInfo = "/proc/self/mountinfo"

// MountOf returns the mount that holds dir: the one whose mount point is
// the longest prefix of dir's real path (the last of equal ones, as a
// later mount hides an earlier one on the same point).
func MountOf(dir string) (Mount, error) {
	path, err := filepath.Abs(dir)
	if err == nil {
		path, err = filepath.EvalSymlinks(path)
	}
	if err != nil {
		return Mount{}, fmt.Errorf("mount of %s: %w", dir, err)
	}
	f, err := os.Open(mountInfo)
	if err != nil {
		return Mount{}, fmt.Errorf("mount of %s: %w", dir, err)
	}
	defer f.Close()
	var best Mount
	found := false
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m, ok := parseMountInfo(sc.Text())
		if !ok || !within(path, m.Point) {
			continue
		}
		if !found || len(m.Point) >= len(best.Point) {
			best, found = m, true
		}
	}
	if err := sc.Err(); err != nil {
		return Mount{}, fmt.Errorf("mount of %s: read %s: %w", dir, mountInfo, err)
	}
	if !found {
		return Mount{}, fmt.Errorf("mount of %s: no mount in %s holds it", dir, mountInfo)
	}
	return best, nil
}

// parseMountInfo parses one mountinfo line (proc(5)):
//
//	36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
//
// fields 5 (mount point) and, after the "-" separator, the type and source.
func parseMountInfo(line string) (Mount, bool) {
	before, after, ok := strings.Cut(line, " - ")
	if !ok {
		return Mount{}, false
	}
	f, g := strings.Fields(before), strings.Fields(after)
	if len(f) < 5 || len(g) < 2 {
		return Mount{}, false
	}
	return Mount{Point: unescapeMount(f[4]), FSType: g[0], Source: unescapeMount(g[1])}, true
}

// unescapeMount undoes the kernel's octal escapes (\040 for a space, \011,
// \012, \134) in mountinfo paths.
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// within reports whether path is point or below it.
func within(path, point string) bool {
	if point == "/" || path == point {
		return true
	}
	return strings.HasPrefix(path, point+"/")
}

// GrowFilesystem grows the filesystem holding dir to the size of its block
// device, online, after the provider has grown the device (a Cinder
// extend). ext2/3/4 grow with resize2fs, xfs with xfs_growfs; both only
// ever grow a mounted filesystem, and growing to the current size is a
// no-op. A directory that is not on a block device of its own (the local
// provider's volume is a plain directory on the host's filesystem, which
// is not the agent's to touch) has nothing to grow: grown is false and
// err nil.
func GrowFilesystem(ctx context.Context, dir string) (grown bool, err error) {
	m, err := MountOf(dir)
	if err != nil {
		return false, fmt.Errorf("grow filesystem: %w", err)
	}
	fi, err := os.Stat(m.Source)
	if m.Point == "/" || err != nil || fi.Mode()&os.ModeDevice == 0 || fi.Mode()&os.ModeCharDevice != 0 {
		return false, nil
	}
	var cmd *exec.Cmd
	switch m.FSType {
	case "ext2", "ext3", "ext4":
		cmd = exec.CommandContext(ctx, "resize2fs", m.Source)
	case "xfs":
		cmd = exec.CommandContext(ctx, "xfs_growfs", m.Point)
	default:
		return false, fmt.Errorf("grow filesystem: %s on %s (mounted at %s) is %s, which cannot be grown (ext2/3/4 and xfs can)",
			dir, m.Source, m.Point, m.FSType)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if errors.Is(err, exec.ErrNotFound) {
			msg = "install e2fsprogs (resize2fs) or xfsprogs (xfs_growfs)"
		}
		return false, fmt.Errorf("grow %s filesystem on %s (mounted at %s): %s: %w: %s",
			m.FSType, m.Source, m.Point, cmd.Args[0], err, msg)
	}
	return true, nil
}
