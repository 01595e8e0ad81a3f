package postgresql

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// Configuration groups reach the server as overrides.conf in PGDATA,
// included by postgresql.conf after coffer.conf, so a group's value wins
// over the setting the driver derives from the flavor, and the two files
// are written independently: a flavor resize rewrites coffer.conf and
// keeps the group's values. An empty overrides.conf restores the derived
// settings and PostgreSQL's defaults.
//
// Trove's validation rules accept values PostgreSQL refuses (an unknown
// unit, a parameter this major version no longer has), and a server whose
// configuration holds one refuses to start. So every new set of overrides
// is first checked by the server binary itself (postgres -C reads the
// whole configuration the way a starting server does) and only then
// written.
const (
	overridesName = "overrides.conf"
	checkName     = "coffer-check.conf"
	// overridesInclude is appended to postgresql.conf once, after the
	// include of coffer.conf that pgctl wrote when it created the cluster.
	overridesInclude = "include_if_exists = '" + overridesName + "'"
)

// reloadTimeout bounds waiting for the server to have read a reloaded
// configuration.
const reloadTimeout = 15 * time.Second

// DefaultSettings returns the settings the driver derives from a flavor's
// memory, as Prepare and a flavor resize write them. The API renders them
// as an instance's default configuration: one source of truth.
func DefaultSettings(ramMB int) map[string]string { return serverSettings(ramMB) }

// deniedSettings may not be overridden: configuration-file directives,
// what pgctl manages (addresses, port, socket, files) and settings that
// run shell commands as the server's OS user; archive_mode and wal_level
// because backups need the WAL archive (archive.go).
var deniedSettings = func(names ...string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}(
	"include", "include_if_exists", "include_dir",
	"data_directory", "config_file", "hba_file", "ident_file", "external_pid_file",
	"listen_addresses", "port", "unix_socket_directories", "unix_socket_group", "unix_socket_permissions",
	"archive_command", "archive_library", "restore_command", "archive_cleanup_command",
	"recovery_end_command", "ssl_passphrase_command",
	"archive_mode", "wal_level",
)

var settingName = regexp.MustCompile(`^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)?$`)

// ApplyConfiguration replaces the configuration overrides with values (an
// empty map restores the defaults). With restart false the server reloads
// and the call returns once it has read the new configuration; with
// restart true the values are only written and take effect at the next
// restart. Invalid values are refused before anything changes.
func (d *Driver) ApplyConfiguration(ctx context.Context, values map[string]string, restart bool) error {
	content, err := renderOverrides(values)
	if err != nil {
		return fmt.Errorf("apply configuration: %w", err)
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()
	st, err := d.loadState()
	if err != nil {
		return fmt.Errorf("apply configuration: %w", err)
	}
	if !st.Prepared {
		return errors.New("apply configuration: the datastore is not prepared yet")
	}
	c := d.cluster(st.SuperPassword)
	owner, err := dirOwner(c.DataDir)
	if err != nil {
		return fmt.Errorf("apply configuration: %w", err)
	}
	if err := ensureOverridesInclude(c.DataDir); err != nil {
		return fmt.Errorf("apply configuration: %w", err)
	}
	if err := checkOverrides(ctx, c.DataDir, content, owner); err != nil {
		return fmt.Errorf("apply configuration: %w", err)
	}
	path := filepath.Join(c.DataDir, overridesName)
	if err := atomicfile.WriteWith(path, content, 0o600, owner.chown); err != nil {
		return fmt.Errorf("apply configuration: write %s: %w", path, err)
	}
	if restart || !c.Running() {
		return nil // read at the next (re)start
	}
	if err := reloadAndWait(ctx, c); err != nil {
		return fmt.Errorf("apply configuration: %w", err)
	}
	return nil
}

// renderOverrides formats values as postgresql.conf lines, names sorted,
// every value quoted (a quoted string is valid for a setting of any type,
// and cannot break out of its line).
func renderOverrides(values map[string]string) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString("# Configuration group overrides, written by the Coffer agent; do not edit.\n")
	names := make([]string, 0, len(values))
	lower := map[string]string{}
	for k, v := range values {
		name := strings.ToLower(k) // setting names are case-insensitive
		if !settingName.MatchString(name) {
			return nil, fmt.Errorf("invalid setting name %q", k)
		}
		if deniedSettings[name] {
			return nil, fmt.Errorf("setting %s is managed by Coffer and cannot be overridden", name)
		}
		if _, dup := lower[name]; dup {
			return nil, fmt.Errorf("setting %s is given twice", name)
		}
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, fmt.Errorf("setting %s: the value must not contain line breaks or NUL", name)
		}
		lower[name] = v
		names = append(names, name)
	}
	slices.Sort(names)
	for _, n := range names {
		v := strings.ReplaceAll(lower[n], `\`, `\\`)
		fmt.Fprintf(&b, "%s = '%s'\n", n, strings.ReplaceAll(v, "'", "''"))
	}
	return b.Bytes(), nil
}

// ensureOverridesInclude appends the include of overrides.conf to
// postgresql.conf unless it is there.
func ensureOverridesInclude(dataDir string) error {
	path := filepath.Join(dataDir, "postgresql.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	for line := range strings.Lines(string(b)) {
		if strings.TrimSpace(line) == overridesInclude {
			return nil
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	_, err = f.WriteString("\n# Configuration group overrides (Coffer agent); they override the above.\n" + overridesInclude + "\n")
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("append to %s: %w", path, err)
	}
	return nil
}

// checkOverrides has the server binary read the whole configuration with
// content in place of overrides.conf, without touching the live files: a
// check file includes postgresql.conf (and through it the current
// overrides) and then the candidate, whose values win.
func checkOverrides(ctx context.Context, dataDir string, content []byte, owner fileOwner) error {
	bin, err := pgctl.FindBinDir()
	if err != nil {
		return err
	}
	candidate := filepath.Join(dataDir, overridesName+".new")
	check := filepath.Join(dataDir, checkName)
	defer os.Remove(candidate)
	defer os.Remove(check)
	mainConf := "include '" + filepath.Join(dataDir, "postgresql.conf") + "'\ninclude '" + candidate + "'\n"
	for path, data := range map[string][]byte{candidate: content, check: []byte(mainConf)} {
		if err := atomicfile.WriteWith(path, data, 0o600, owner.chown); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, filepath.Join(bin, "postgres"), "-D", dataDir, "-c", "config_file="+check, "-C", "max_connections")
	cmd.Dir = "/"
	cmd.Env = []string{"PATH=/usr/bin:/bin", "LC_ALL=C"}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: owner.uid, Gid: owner.gid}}
	}
	out, err := cmd.CombinedOutput()
	if err == nil {
		return nil
	}
	if cctx.Err() != nil {
		return fmt.Errorf("check configuration: %w", cctx.Err())
	}
	if msg := serverComplaints(string(out)); msg != "" {
		return fmt.Errorf("PostgreSQL refuses the configuration: %s", msg)
	}
	return fmt.Errorf("check configuration: %w: %s", err, strings.TrimSpace(string(out)))
}

// serverComplaints extracts the server's messages about a configuration
// ("invalid value for parameter ...", "unrecognized configuration
// parameter ...", hints), without log prefixes, file paths and the final
// "contains errors".
func serverComplaints(out string) string {
	var msgs []string
	for line := range strings.Lines(out) {
		for _, level := range []string{"LOG:", "HINT:", "ERROR:", "FATAL:"} {
			_, msg, ok := strings.Cut(line, level)
			if !ok {
				continue
			}
			msg = strings.TrimSpace(msg)
			if strings.Contains(msg, "contains errors") {
				break
			}
			if i := strings.Index(msg, ` in file "`); i >= 0 {
				msg = msg[:i]
			}
			msgs = append(msgs, msg)
			break
		}
	}
	return strings.Join(msgs, "; ")
}

// reloadAndWait signals the server to reload and waits until a new session
// sees a configuration loaded after the signal, so that the caller's next
// connection has the new values.
func reloadAndWait(ctx context.Context, c *pgctl.Cluster) error {
	before, err := confLoadTime(ctx, c)
	if err != nil {
		return fmt.Errorf("read configuration load time: %w", err)
	}
	if err := c.Reload(ctx); err != nil {
		return err
	}
	deadline := time.Now().Add(reloadTimeout)
	for {
		after, err := confLoadTime(ctx, c)
		if err == nil && after.After(before) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the server did not reload its configuration within %s (last error: %v)", reloadTimeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func confLoadTime(ctx context.Context, c *pgctl.Cluster) (time.Time, error) {
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return time.Time{}, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var t time.Time
	err = conn.QueryRow(ctx, "SELECT pg_conf_load_time()").Scan(&t)
	return t, err
}

// fileOwner is the OS user owning PGDATA: the server's user, who must be
// able to read the files written for it.
type fileOwner struct{ uid, gid uint32 }

func dirOwner(dir string) (fileOwner, error) {
	fi, err := os.Stat(dir)
	if err != nil {
		return fileOwner{}, err
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return fileOwner{}, fmt.Errorf("owner of %s: unsupported platform", dir)
	}
	return fileOwner{uid: st.Uid, gid: st.Gid}, nil
}

// chown hands a file to the owner when we are root (otherwise we are the
// owner already).
func (o fileOwner) chown(path string) error {
	if os.Geteuid() != 0 {
		return nil
	}
	if err := os.Chown(path, int(o.uid), int(o.gid)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
