package postgresql

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

// Guest logs (driver.GuestLogger), as Trove defines them for PostgreSQL:
// one USER log, `general`, the statement log. Enabling it sets
// log_statement = 'all' (every statement) and log_min_duration_statement
// (the duration of statements slower than a second, Trove's
// guest_log_long_query_time), disabling it removes both again.
//
// Trove's guest turns on logging_collector for it, which needs a restart;
// this driver keeps PostgreSQL's one server log (postgres.log on the
// volume, where pg_ctl sends the server's stderr) and changes only
// settings a reload applies, so enable and disable take effect at once.
// The statements therefore land in the server log, which is the `general`
// log's file: it is also the datastore's own log (start-up, errors), so
// what the log shows is the whole server log.
//
// The settings live in guestlogs.conf in PGDATA, included by
// postgresql.conf after the configuration group's overrides.conf: while
// the log is enabled its settings win over a group's. Like a group's, new
// settings are first checked by the server binary (checkOverrides).
//
// Publishing (uploading the unread part to object storage) is not done by
// this driver: Published stays 0 and a discard has nothing to remove.

var _ driver.GuestLogger = (*Driver)(nil)

const (
	// GeneralLog is the name of the statement log.
	GeneralLog = "general"
	// guestLogsName is the include file of the guest logs' settings.
	guestLogsName = "guestlogs.conf"
	// longQueryMS is Trove's guest_log_long_query_time (milliseconds).
	longQueryMS = "1000"
)

var guestLogsInclude = "include_if_exists = '" + guestLogsName + "'"

// GuestLogs lists the guest logs: their state and file size.
func (d *Driver) GuestLogs(ctx context.Context) ([]protocol.GuestLog, error) {
	l, err := d.generalLog()
	if err != nil {
		return nil, err
	}
	return []protocol.GuestLog{l}, nil
}

func (d *Driver) generalLog() (protocol.GuestLog, error) {
	l := protocol.GuestLog{Name: GeneralLog, Type: protocol.GuestLogUser, File: logName}
	b, err := os.ReadFile(filepath.Join(d.dataDir, pgdataDir, guestLogsName))
	switch {
	case err == nil:
		l.Enabled = strings.Contains(string(b), "log_statement")
	case !errors.Is(err, fs.ErrNotExist):
		return l, fmt.Errorf("guest log %s: %w", GeneralLog, err)
	}
	fi, err := os.Stat(filepath.Join(d.dataDir, logName))
	switch {
	case err == nil:
		l.Size = fi.Size()
	case !errors.Is(err, fs.ErrNotExist):
		return l, fmt.Errorf("guest log %s: %w", GeneralLog, err)
	}
	return l, nil
}

// GuestLogAction enables or disables a log (a reload applies it) and
// returns the log's state afterwards. Discard has nothing to remove (no
// log is published). Repeating an action changes nothing.
func (d *Driver) GuestLogAction(ctx context.Context, req protocol.GuestLogActionRequest) (protocol.GuestLog, error) {
	if req.Name != GeneralLog {
		return protocol.GuestLog{}, fmt.Errorf("guest log %q: no such log (PostgreSQL has %q)", req.Name, GeneralLog)
	}
	if req.Enable && req.Disable {
		return protocol.GuestLog{}, fmt.Errorf("guest log %s: enable and disable at once", req.Name)
	}
	if req.Enable || req.Disable {
		if err := d.setStatementLog(ctx, req.Enable); err != nil {
			return protocol.GuestLog{}, fmt.Errorf("guest log %s: %w", req.Name, err)
		}
	}
	return d.generalLog()
}

// setStatementLog writes guestlogs.conf with the statement log on or off
// and has a running server reload it.
func (d *Driver) setStatementLog(ctx context.Context, on bool) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	st, err := d.loadState()
	if err != nil {
		return err
	}
	if !st.Prepared {
		return errors.New("the datastore is not prepared yet")
	}
	c := d.cluster(st.SuperPassword)
	owner, err := dirOwner(c.DataDir)
	if err != nil {
		return err
	}
	content := "# Guest log settings, written by the Coffer agent; do not edit.\n"
	if on {
		content += "log_statement = 'all'\nlog_min_duration_statement = '" + longQueryMS + "'\n"
	}
	path := filepath.Join(c.DataDir, guestLogsName)
	if cur, err := os.ReadFile(path); err == nil && string(cur) == content {
		return nil // already so; the server read it when it was written
	}
	// overrides.conf's include first, so that ours comes after it.
	if err := ensureOverridesInclude(c.DataDir); err != nil {
		return err
	}
	if err := ensureInclude(c.DataDir, guestLogsInclude, "Guest log settings (Coffer agent); they override the above."); err != nil {
		return err
	}
	if err := checkOverrides(ctx, c.DataDir, []byte(content), owner); err != nil {
		return err
	}
	if err := atomicfile.WriteWith(path, []byte(content), 0o600, owner.chown); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if !c.Running() {
		return nil // read at the next start
	}
	return reloadAndWait(ctx, c)
}

// ensureInclude appends line (an include) to postgresql.conf unless it is
// there, with a comment above it.
func ensureInclude(dataDir, line, comment string) error {
	path := filepath.Join(dataDir, "postgresql.conf")
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	for l := range strings.Lines(string(b)) {
		if strings.TrimSpace(l) == line {
			return nil
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	_, err = f.WriteString("\n# " + comment + "\n" + line + "\n")
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
