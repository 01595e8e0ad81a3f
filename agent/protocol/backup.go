package protocol

import "time"

// Backups go straight from the guest to object storage: the agent streams
// the datastore's backup through zstd and AES-256-GCM (minio/sio, DARE 2.0)
// into fixed-size segments and uploads each through a grant — a short-lived
// URL for exactly one object (S3 presigned PUT, Swift TempURL, or a signed URL
// of the control plane's file store) — that it asks the agent API for just
// before the upload. It never holds storage credentials. The control plane
// records each segment's size and SHA-256 as the agent reports them and
// writes the manifest itself when the backup command succeeds.
//
// Restore runs the other way inside CommandPrepare (PrepareRequest.Restore):
// per segment a download grant, SHA-256 verified before a byte is used.

// Agent API paths for backups. {id} is the backup id, {n} the segment index
// (0-based). The agent may only ask for backups its instance is taking or
// restoring from (anything else → 404).
const (
	// PathSegmentGrant: POST SegmentGrantRequest → 200 Grant.
	PathSegmentGrant = "/agent/v1/backups/{id}/segments/{n}/grant"
	// PathSegmentDone: POST SegmentReport → 204, after the segment's upload
	// succeeded. Idempotent for the same index and checksum.
	PathSegmentDone = "/agent/v1/backups/{id}/segments/{n}"
	// PathBackupProgress: POST BackupProgress → 204.
	PathBackupProgress = "/agent/v1/backups/{id}/progress"
)

// Command names for backups.
const (
	CommandBackup = "backup"
	// CommandPruneWAL removes what the datastore archived for backups and
	// no backup needs any more (PruneWALRequest); Output: PruneWALResult.
	CommandPruneWAL = "prune_wal"
)

// PruneWALRequest names the oldest point the control plane may still use:
// the earliest of the instance's backups, which may be restored or become
// an incremental's parent. Nil: the instance has no backup, and whatever
// was archived before now is not needed.
type PruneWALRequest struct {
	Keep *BackupPoint `json:"keep,omitempty"`
}

// PruneWALResult is Result.Output of CommandPruneWAL.
type PruneWALResult struct {
	Removed int `json:"removed"`
}

// Backup kinds.
const (
	BackupFull        = "full"
	BackupIncremental = "incremental"
)

// BackupRequest is the payload of CommandBackup.
type BackupRequest struct {
	BackupID string `json:"backup_id"`
	Kind     string `json:"kind"` // BackupFull or BackupIncremental
	// Parent is the parent's point (incremental only): the backup holds
	// what changed after it.
	Parent *BackupPoint `json:"parent,omitempty"`
	// DataKey is this backup's 32-byte AES-256 key (base64 in JSON). It is
	// a secret: the command payload is cleared when the command completes.
	DataKey []byte `json:"data_key"`
	// SegmentSize is the size of every segment but the last (bytes of
	// ciphertext). Parallel is how many segments upload at once.
	SegmentSize int64 `json:"segment_size"`
	Parallel    int   `json:"parallel"`
}

// BackupPoint is where in the datastore's history a backup ends (and an
// incremental child begins). PostgreSQL: LSNs, timeline, WAL file names.
type BackupPoint struct {
	StartLSN string `json:"start_lsn,omitempty"`
	EndLSN   string `json:"end_lsn,omitempty"`
	Timeline int    `json:"timeline,omitempty"`
	// StartWAL / EndWAL: the first and last WAL segment files the backup
	// needs to be consistent (PostgreSQL).
	StartWAL string `json:"start_wal,omitempty"`
	EndWAL   string `json:"end_wal,omitempty"`
	// NoManifest: the full backup carries no backup_manifest to verify
	// its files against (PostgreSQL compressed it; the stream's checksums
	// and recovery vouch for it). A full backup without it must have one.
	NoManifest bool `json:"no_manifest,omitempty"`
}

// BackupResult is Result.Output of a successful CommandBackup.
type BackupResult struct {
	Point BackupPoint `json:"point"`
	// Segments uploaded (each also reported through PathSegmentDone).
	Segments int `json:"segments"`
	// StoredBytes is the total ciphertext size; RawBytes the backup stream
	// before compression.
	StoredBytes int64 `json:"stored_bytes"`
	RawBytes    int64 `json:"raw_bytes"`
}

// SegmentGrantRequest asks for a grant for one segment.
type SegmentGrantRequest struct {
	// Method is "PUT" (upload) or "GET" (restore).
	Method string `json:"method"`
	// Size of the segment to upload (PUT): S3 presigned parts need
	// Content-Length, so segments are buffered and their size is known.
	Size int64 `json:"size,omitempty"`
	// SHA256 (hex) of the segment to upload; the grant may bind it.
	SHA256 string `json:"sha256,omitempty"`
}

// Grant is a short-lived permission to do one request on one object. The
// agent sends Method to URL with Header (and Content-Length for PUT); any
// other status than 2xx is an error.
type Grant struct {
	Method  string              `json:"method"`
	URL     string              `json:"url"`
	Header  map[string][]string `json:"header,omitempty"`
	Expires time.Time           `json:"expires"`
}

// SegmentReport tells the control plane one segment is stored.
type SegmentReport struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"` // hex, of the stored (encrypted) bytes
	ETag   string `json:"etag,omitempty"`
	// RawBytesDone is how many bytes of the backup stream (before
	// compression) the segments so far hold, for progress.
	RawBytesDone int64 `json:"raw_bytes_done,omitempty"`
}

// BackupProgress reports an estimate of the backup stream's size, sent once
// when the backup starts.
type BackupProgress struct {
	EstimatedBytes int64 `json:"estimated_bytes"`
}

// RestoreRequest is PrepareRequest.Restore: build the volume from a chain
// of backups (a full backup and then its incremental children, in order)
// instead of initialising an empty datastore.
type RestoreRequest struct {
	Chain []RestoreBackup `json:"chain"`
}

// RestoreBackup is one link of a restore chain.
type RestoreBackup struct {
	BackupID string      `json:"backup_id"`
	Kind     string      `json:"kind"`
	Point    BackupPoint `json:"point"`
	DataKey  []byte      `json:"data_key"` // secret, as in BackupRequest
	// Segments lists each segment's stored size and SHA-256 (hex), in
	// order. A segment whose bytes do not match fails the restore.
	Segments []SegmentInfo `json:"segments"`
}

// SegmentInfo is one stored segment of a backup.
type SegmentInfo struct {
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}
