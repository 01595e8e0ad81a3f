// Package postgresql is the guest agent's PostgreSQL driver: it sets up a
// cluster on the instance's volume, runs it with internal/pgctl, creates
// the databases and users a prepare command asks for, and reports the
// service's status and the volume's use.
//
// Layout of the volume (AgentConfig.DataDir):
//
//	pgdata/       the cluster (PGDATA)
//	run/          the server's Unix socket
//	postgres.log  the server log
//	state.json    the driver's own state: the internal superuser's password,
//	              whether Prepare completed, the volume's size (mode 0600)
//	wal_archive/  archived WAL, for backups (archive.go)
//	restore.json  on a volume built from backups: how far Restore got (restore.go)
//
// The driver administers the server as os_admin (Trove's name for it), a
// superuser whose random password exists only in state.json, over the Unix
// socket.
package postgresql

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/pgctl"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

// AdminUser is the internal superuser the agent administers the server as.
const AdminUser = "os_admin"

// Names within the volume.
const (
	pgdataDir = "pgdata"
	runDir    = "run"
	logName   = "postgres.log"
	stateName = "state.json"
)

// maxSocketPath is the longest Unix socket path Linux accepts.
const maxSocketPath = 107

// healthTimeout bounds waiting for a started server to answer, when the
// context has no deadline of its own.
const healthTimeout = 60 * time.Second

// probeTimeout bounds Status's connection attempt: a wedged server must
// not stall the heartbeat.
const probeTimeout = 5 * time.Second

var _ driver.Driver = (*Driver)(nil)

// Driver is the PostgreSQL driver for one instance. Status and VolumeUsage
// may run concurrently with the other methods (heartbeats go on during a
// long Prepare).
type Driver struct {
	cfg     protocol.AgentConfig
	dataDir string // absolute cfg.DataDir
	port    int

	// opMu serialises the methods that change the server: Prepare,
	// EnsureRunning and Stop.
	opMu sync.Mutex
	// stateMu guards state.json.
	stateMu sync.Mutex
	// noServerCompression makes BackupZstd compress full backups itself,
	// as for a server older than 15 (tests).
	noServerCompression bool
}

// state is state.json. Every field is written before it is relied on, so a
// crash between any two steps of Prepare is recovered by running it again.
type state struct {
	// SuperPassword is os_admin's password, generated on the first Prepare.
	SuperPassword string `json:"superuser_password"`
	// Prepared is set when Prepare last completed.
	Prepared bool `json:"prepared"`
	// VolumeSizeGB is the volume's size from the prepare request.
	VolumeSizeGB int `json:"volume_size_gb,omitempty"`
}

// New returns the driver for the instance cfg describes. It touches
// nothing on disk: the first Prepare does.
func New(cfg protocol.AgentConfig) (*Driver, error) {
	if cfg.Datastore != "" && cfg.Datastore != "postgresql" {
		return nil, fmt.Errorf("postgresql driver: configured for datastore %q", cfg.Datastore)
	}
	if cfg.DataDir == "" {
		return nil, errors.New("postgresql driver: data_dir is required")
	}
	dir, err := filepath.Abs(cfg.DataDir)
	if err != nil {
		return nil, fmt.Errorf("postgresql driver: data_dir %s: %w", cfg.DataDir, err)
	}
	port := cfg.Port
	if port == 0 {
		port = protocol.DefaultPort("postgresql")
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("postgresql driver: port %d out of range", port)
	}
	// Fail at agent start rather than at the first Prepare.
	if sock := filepath.Join(dir, runDir, ".s.PGSQL."+strconv.Itoa(port)); len(sock) > maxSocketPath {
		return nil, fmt.Errorf("postgresql driver: socket path %s is %d bytes, over the %d-byte limit of Unix sockets; use a shorter data_dir",
			sock, len(sock), maxSocketPath)
	}
	return &Driver{cfg: cfg, dataDir: dir, port: port}, nil
}

// cluster describes the server; password is os_admin's.
func (d *Driver) cluster(password string) *pgctl.Cluster {
	return &pgctl.Cluster{
		DataDir:         filepath.Join(d.dataDir, pgdataDir),
		SocketDir:       filepath.Join(d.dataDir, runDir),
		ListenAddresses: d.cfg.ListenAddress, // "" → the socket only
		Port:            d.port,
		SuperUser:       AdminUser,
		SuperPassword:   password,
		RunAs:           d.cfg.RunAsUser, // "" → pgctl's rule: postgres when root, else us
		LogFile:         filepath.Join(d.dataDir, logName),
		// The agent's own statements (health checks, inventory, every
		// heartbeat) stay out of the server log, which is the user's
		// `general` statement log: it is the user's activity that log is
		// for, and publishing it must not chase what reading it writes.
		SessionOptions: "-c log_statement=none -c log_min_duration_statement=-1",
	}
}

// Prepare initialises the cluster, starts it and creates the requested
// databases and users. Every step checks what is already there, so Prepare
// can be repeated: after a crash at any point it finishes the job, and with
// the same request once done it changes nothing (a user's password is
// set again, to the request's).
func (d *Driver) Prepare(ctx context.Context, req protocol.PrepareRequest) error {
	if req.Datastore != "" && req.Datastore != "postgresql" {
		return fmt.Errorf("prepare: request is for datastore %q, this agent runs postgresql", req.Datastore)
	}
	if err := validateRequest(req); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	d.opMu.Lock()
	defer d.opMu.Unlock()

	if err := mkdirVolume(d.dataDir); err != nil {
		return fmt.Errorf("prepare: create data directory %s: %w", d.dataDir, err)
	}
	st, err := d.loadState()
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if st.SuperPassword == "" {
		if _, err := os.Stat(filepath.Join(d.dataDir, pgdataDir, "PG_VERSION")); err == nil {
			// The cluster was initialised with a password we no longer have.
			return fmt.Errorf("prepare: %s has a cluster but %s holds no %s password; cannot administer it",
				d.dataDir, stateName, AdminUser)
		}
		// Persisted before initdb uses it, so a crash cannot separate the
		// cluster from its password.
		st.SuperPassword = randomPassword()
		if err := d.saveState(st); err != nil {
			return fmt.Errorf("prepare: %w", err)
		}
	}

	c := d.cluster(st.SuperPassword)
	if err := c.Init(ctx); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	changed, err := d.writeConfig(c, req.FlavorRAMMB)
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if changed && c.Running() {
		// Memory settings take effect only at server start.
		err = c.Restart(ctx)
	} else {
		err = c.Start(ctx)
	}
	if err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if err := waitHealthy(ctx, c); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	if err := setupDatabasesAndUsers(ctx, c, req); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}

	st.Prepared = true
	st.VolumeSizeGB = req.VolumeSizeGB
	if err := d.saveState(st); err != nil {
		return fmt.Errorf("prepare: %w", err)
	}
	return nil
}

// writeConfig writes the server settings and reports whether they changed.
func (d *Driver) writeConfig(c *pgctl.Cluster, ramMB int) (bool, error) {
	path := filepath.Join(c.DataDir, "coffer.conf")
	before, _ := os.ReadFile(path)
	// WAL archiving for backups (archive.go): its settings and directory.
	settings := serverSettings(ramMB)
	maps.Copy(settings, d.archiveSettings())
	owner, err := dirOwner(c.DataDir)
	if err != nil {
		return false, err
	}
	if err := d.makeArchiveDir(owner); err != nil {
		return false, err
	}
	if err := c.WriteConfig(settings); err != nil {
		return false, err
	}
	after, err := os.ReadFile(path)
	if err != nil {
		return false, fmt.Errorf("read back %s: %w", path, err)
	}
	return string(before) != string(after), nil
}

// serverSettings derives the server's settings from the flavor's memory
// with the usual rules of thumb: a quarter for shared buffers, three
// quarters assumed available for caching, and work_mem sized so that every
// connection running a sort at once stays within a quarter of memory. An
// unknown size (0) leaves PostgreSQL's defaults.
func serverSettings(ramMB int) map[string]string {
	maxConn := 100
	if ramMB > 0 && ramMB < 1024 {
		maxConn = 50
	}
	s := map[string]string{
		"max_connections":     strconv.Itoa(maxConn),
		"password_encryption": "scram-sha-256",
	}
	if ramMB > 0 {
		s["shared_buffers"] = strconv.Itoa(max(ramMB/4, 1)) + "MB"
		s["effective_cache_size"] = strconv.Itoa(max(ramMB*3/4, 1)) + "MB"
		s["maintenance_work_mem"] = strconv.Itoa(min(max(ramMB/16, 1), 2048)) + "MB"
		s["work_mem"] = strconv.Itoa(max(ramMB*1024/(4*maxConn), 1024)) + "kB"
	}
	return s
}

// waitHealthy waits until the server answers SELECT 1 as os_admin.
func waitHealthy(ctx context.Context, c *pgctl.Cluster) error {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, healthTimeout)
		defer cancel()
	}
	for {
		err := ping(ctx, c)
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for postgres to answer: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ping connects as os_admin over the socket and runs SELECT 1.
func ping(ctx context.Context, c *pgctl.Cluster) error {
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// EnsureRunning starts the server if Prepare completed and it is not
// running; before Prepare it does nothing.
func (d *Driver) EnsureRunning(ctx context.Context) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	st, err := d.loadState()
	if err != nil {
		return fmt.Errorf("ensure running: %w", err)
	}
	if !st.Prepared {
		return nil
	}
	c := d.cluster(st.SuperPassword)
	// WAL archiving (archive.go) for an instance prepared before the
	// driver archived: written into its configuration before the server
	// starts, or a running server restarted with it. A failure must not
	// keep the server down.
	archErr := d.ensureArchiving(ctx, c)
	if !c.Running() {
		if err := c.Start(ctx); err != nil {
			return fmt.Errorf("ensure running: %w", errors.Join(err, archErr))
		}
	}
	if archErr != nil {
		return fmt.Errorf("ensure running: %w", archErr)
	}
	return nil
}

// Status reports the service status: new or building before Prepare
// completed; then healthy when the server answers, shutdown when it is
// stopped, crashed when a postmaster.pid says it should run but it does not
// answer (or the postmaster is gone without removing its pid file).
func (d *Driver) Status(ctx context.Context) string {
	st, err := d.loadState()
	if err != nil {
		return protocol.ServiceUnknown
	}
	c := d.cluster(st.SuperPassword)
	if !st.Prepared {
		if _, err := os.Stat(filepath.Join(c.DataDir, "PG_VERSION")); err == nil {
			return protocol.ServiceBuilding
		}
		return protocol.ServiceNew
	}
	if _, err := os.Stat(filepath.Join(c.DataDir, "postmaster.pid")); errors.Is(err, fs.ErrNotExist) {
		return protocol.ServiceShutdown
	}
	pctx, cancel := context.WithTimeout(ctx, probeTimeout)
	defer cancel()
	if ping(pctx, c) == nil {
		return protocol.ServiceHealthy
	}
	return protocol.ServiceCrashed
}

// Stop shuts the server down (fast: sessions are disconnected). Stopping a
// stopped server succeeds.
func (d *Driver) Stop(ctx context.Context) error {
	d.opMu.Lock()
	defer d.opMu.Unlock()
	st, err := d.loadState()
	if err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	if err := d.cluster(st.SuperPassword).Stop(ctx); err != nil {
		return fmt.Errorf("stop: %w", err)
	}
	return nil
}

// VolumeUsage returns the bytes of the files under the data directory and
// the volume's size from the prepare request (0 before Prepare).
func (d *Driver) VolumeUsage(ctx context.Context) (used, total int64, err error) {
	st, err := d.loadState()
	if err != nil {
		return 0, 0, fmt.Errorf("volume usage: %w", err)
	}
	total = int64(st.VolumeSizeGB) << 30
	err = filepath.WalkDir(d.dataDir, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			// The server removes files as it goes (WAL segments, temp files).
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if e.IsDir() {
			return ctx.Err()
		}
		info, err := e.Info()
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if info.Mode().IsRegular() {
			used += info.Size()
		}
		return nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return 0, total, nil // nothing on the volume yet
	}
	if err != nil {
		return 0, 0, fmt.Errorf("volume usage of %s: %w", d.dataDir, err)
	}
	// Every reading enforces the size limit (lifecycle.go); a failure is
	// retried with the next one and must not hide the usage.
	_ = d.enforceVolumeLimit(ctx, used, total)
	return used, total, nil
}

func (d *Driver) loadState() (state, error) {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	var st state
	path := filepath.Join(d.dataDir, stateName)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return st, nil
	}
	if err != nil {
		return st, fmt.Errorf("read driver state: %w", err)
	}
	if err := json.Unmarshal(b, &st); err != nil {
		return st, fmt.Errorf("read driver state %s: %w", path, err)
	}
	return st, nil
}

// saveState replaces state.json atomically (temp file, fsync, rename,
// fsync directory): it holds the only copy of os_admin's password.
func (d *Driver) saveState(st state) error {
	d.stateMu.Lock()
	defer d.stateMu.Unlock()
	b, err := json.MarshalIndent(st, "", "  ")
	if err != nil {
		return err
	}
	path := filepath.Join(d.dataDir, stateName)
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return fmt.Errorf("save driver state: %w", err)
	}
	return nil
}

// mkdirVolume creates the data directory if the provider did not. Mode
// 0755: the server's user must traverse it to reach pgdata and run.
func mkdirVolume(dir string) error {
	if _, err := os.Stat(dir); err == nil {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.Chmod(dir, 0o755)
}

// randomPassword returns 192 random bits, base64url-encoded (32 characters).
func randomPassword() string {
	b := make([]byte, 24)
	rand.Read(b) // never fails (crypto/rand since Go 1.24)
	return base64.RawURLEncoding.EncodeToString(b)
}
