package pgctl

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// account is the OS user the server programs run as.
type account struct {
	name   string
	uid    uint32
	gid    uint32
	groups []uint32 // supplementary groups, for the traversal check and setgroups
	home   string
	// switchTo is set when the account differs from the current process's:
	// programs are then started with its credentials (we are root).
	switchTo bool
}

// resolveAccount turns Cluster.RunAs into an account. PostgreSQL refuses to
// run as root, so root defaults to the conventional "postgres" user.
func resolveAccount(name string) (*account, error) {
	euid := os.Geteuid()
	if name == "" {
		if euid == 0 {
			name = "postgres"
		} else {
			cur, err := user.Current()
			if err != nil {
				return nil, fmt.Errorf("look up current user: %w", err)
			}
			name = cur.Username
		}
	}
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up user %q to run postgres as: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: gid %q: %w", name, u.Gid, err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("cannot run postgres as %q: PostgreSQL refuses to run as root", name)
	}
	a := &account{name: name, uid: uint32(uid), gid: uint32(gid), home: u.HomeDir}
	if gids, err := u.GroupIds(); err == nil {
		for _, g := range gids {
			if n, err := strconv.ParseUint(g, 10, 32); err == nil {
				a.groups = append(a.groups, uint32(n))
			}
		}
	}
	if int(uid) != euid {
		if euid != 0 {
			return nil, fmt.Errorf("cannot run postgres as %q: switching users needs root (running as uid %d)", name, euid)
		}
		a.switchTo = true
	}
	return a, nil
}

// inGroup reports whether gid is the account's primary or a supplementary group.
func (a *account) inGroup(gid uint32) bool {
	return gid == a.gid || slices.Contains(a.groups, gid)
}

// credential is what exec needs to start a program as the account, or nil
// when no switch is needed.
func (a *account) credential() *syscall.SysProcAttr {
	if !a.switchTo {
		return nil
	}
	return &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid:    a.uid,
		Gid:    a.gid,
		Groups: a.groups,
	}}
}

// env is the environment of the server programs: ours without libpq's PG*
// variables (a stray PGPORT or PGDATA must not redirect pg_ctl), with the
// account's identity and home so nothing writes into root's.
func (a *account) env() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch {
		case strings.HasPrefix(k, "PG"), k == "HOME", k == "USER", k == "LOGNAME":
			continue
		}
		env = append(env, kv)
	}
	home := a.home
	if home == "" {
		home = "/"
	}
	return append(env, "HOME="+home, "USER="+a.name, "LOGNAME="+a.name)
}

// chown gives path to the account; a no-op without a user switch, where
// everything we create is already the account's.
func (a *account) chown(path string) error {
	if !a.switchTo {
		return nil
	}
	if err := os.Lchown(path, int(a.uid), int(a.gid)); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, a.name, err)
	}
	return nil
}

// canSearch reports whether the account may traverse dir, from its mode bits.
// (POSIX ACLs are not consulted; a directory opened up only by an ACL is
// reported as blocked.)
func (a *account) canSearch(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true // not a Unix file system view: nothing we can check
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == a.uid:
		return perm&0o100 != 0
	case a.inGroup(st.Gid):
		return perm&0o010 != 0
	default:
		return perm&0o001 != 0
	}
}

// canWrite reports whether the account may create files in dir.
func (a *account) canWrite(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return true
	}
	perm := fi.Mode().Perm()
	switch {
	case st.Uid == a.uid:
		return perm&0o300 == 0o300
	case a.inGroup(st.Gid):
		return perm&0o030 == 0o030
	default:
		return perm&0o003 == 0o003
	}
}

// checkReach fails, naming the directory, unless the account can traverse
// dir and every directory above it. The server resolves its data directory,
// socket directory and log file by path, so a single 0700 home directory on
// the way (a classic with temp dirs under /root) stops it with an error far
// less clear than this one. We do not chmod such directories: they are not
// ours to open up.
func (a *account) checkReach(dir string) error {
	for d := dir; ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Errorf("check %s can reach %s: %w", a.name, dir, err)
		}
		if !fi.IsDir() {
			return fmt.Errorf("check %s can reach %s: %s is not a directory", a.name, dir, d)
		}
		if !a.canSearch(fi) {
			return fmt.Errorf("user %s cannot reach %s: directory %s (mode %04o) is not searchable by it; grant it search permission (e.g. chmod o+x %s) or choose another location",
				a.name, dir, d, fi.Mode().Perm(), d)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}

// mkdirAll creates dir and any missing parents. The directories it creates
// get mode 0755 whatever the umask: the account must be able to traverse
// them, and they hold nothing secret (the data directory itself is 0700).
// It reports whether dir itself was created.
func mkdirAll(dir string) (created bool, err error) {
	fi, err := os.Stat(dir)
	if err == nil {
		if !fi.IsDir() {
			return false, fmt.Errorf("%s exists and is not a directory", dir)
		}
		return false, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return false, err
	}
	if parent := filepath.Dir(dir); parent != dir {
		if _, err := mkdirAll(parent); err != nil {
			return false, err
		}
	}
	if err := os.Mkdir(dir, 0o755); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil // created concurrently
		}
		return false, err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return true, err
	}
	return true, nil
}
