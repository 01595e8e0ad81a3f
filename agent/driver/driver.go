// Package driver defines what the guest agent needs from a datastore: one
// interface, one implementation per engine (agent/driver/postgresql, later
// mariadb and redis). Every method must be idempotent: the agent receives
// commands at least once and may itself restart at any point.
package driver

import (
	"context"
	"io"
	"sync/atomic"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Driver manages one datastore on one volume.
type Driver interface {
	// Prepare initialises the datastore on an empty volume (or finishes an
	// interrupted initialisation), starts it, waits until it accepts
	// connections and creates the requested databases and users.
	Prepare(ctx context.Context, req protocol.PrepareRequest) error
	// EnsureRunning starts a prepared datastore that is not running (after
	// an agent or host restart). It does nothing before Prepare.
	EnsureRunning(ctx context.Context) error
	// Status reports the datastore's service status (protocol.Service*).
	Status(ctx context.Context) string
	// Stop shuts the datastore down.
	Stop(ctx context.Context) error
	// VolumeUsage returns the bytes used on the volume and its size.
	VolumeUsage(ctx context.Context) (used, total int64, err error)
}

// Accounts is implemented by drivers whose datastore has databases, users
// and a superuser (PostgreSQL, MariaDB). Names are validated by the driver.
type Accounts interface {
	CreateDatabases(ctx context.Context, dbs []protocol.Database) error
	DeleteDatabase(ctx context.Context, name string) error
	CreateUsers(ctx context.Context, users []protocol.User) error
	DeleteUser(ctx context.Context, user protocol.UserRef) error
	UpdateUser(ctx context.Context, req protocol.UpdateUserRequest) error
	GrantAccess(ctx context.Context, user protocol.UserRef, databases []string) error
	RevokeAccess(ctx context.Context, user protocol.UserRef, database string) error
	// EnableRoot enables the superuser with password and returns its name.
	EnableRoot(ctx context.Context, password string) (string, error)
	DisableRoot(ctx context.Context) error
	// Inventory lists databases and users (not the internal ones).
	Inventory(ctx context.Context) (protocol.Inventory, error)
}

// Configurable is implemented by drivers that take configuration overrides
// and can be restarted and resized.
type Configurable interface {
	// ApplyConfiguration replaces the overrides; see
	// protocol.ApplyConfigurationRequest.
	ApplyConfiguration(ctx context.Context, values map[string]string, restart bool) error
	Restart(ctx context.Context) error
	// ResizeMemory re-derives memory settings for ramMB and restarts.
	ResizeMemory(ctx context.Context, ramMB int) error
	// ResizeVolume records the new volume size (limit and usage reports).
	ResizeVolume(ctx context.Context, sizeGB int) error
}

// Backupper is implemented by drivers that take and restore backups. The
// agent owns the pipeline around them (compression, encryption, segments,
// upload); the driver only produces and consumes the plain backup stream.
type Backupper interface {
	// BackupSize estimates the plain stream size of a full backup, for
	// progress.
	BackupSize(ctx context.Context) (int64, error)
	// Backup writes a backup stream to w: a full backup when parent is
	// nil, else what changed since parent. It returns where the backup
	// ends. A failed Backup leaves the datastore serving as before.
	Backup(ctx context.Context, kind string, parent *protocol.BackupPoint, w io.Writer) (protocol.BackupPoint, error)
	// Restore builds the datastore on an empty volume from a chain of
	// backup streams (full first), leaving it ready for Prepare to start.
	// It removes what it wrote when it fails, so that a retry starts
	// clean.
	Restore(ctx context.Context, req protocol.PrepareRequest, chain []RestoreLayer) error
}

// ZstdBackupper is a Backupper that writes its streams zstd-compressed
// (a datastore that compresses as it reads its files), so that the agent
// only encrypts them. The restore side is unchanged: the stream is
// decompressed as every stream is.
type ZstdBackupper interface {
	// BackupZstd is Backup with the stream compressed; *plain follows the
	// size of the stream before compression, for progress, and holds it
	// at the end.
	BackupZstd(ctx context.Context, kind string, parent *protocol.BackupPoint, w io.Writer, plain *atomic.Int64) (protocol.BackupPoint, error)
}

// WALPruner is a Backupper whose incremental backups read an archive on
// the volume that only the control plane knows when to shorten.
type WALPruner interface {
	// PruneWAL removes what no backup from keep on needs (keep nil: what
	// was archived before now) and returns how many files it removed.
	PruneWAL(ctx context.Context, keep *protocol.BackupPoint) (int, error)
}

// RestoreLayer is one backup of a restore chain. Open returns its plain
// stream (decrypted, decompressed, every segment's checksum verified as it
// is read; a mismatch surfaces as a read error).
type RestoreLayer struct {
	Kind  string
	Point protocol.BackupPoint
	Open  func(ctx context.Context) (io.ReadCloser, error)
}
