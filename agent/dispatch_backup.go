package agent

// Backups and restores: the agent runs the driver's plain backup stream
// through backupstream (zstd, AES-256-GCM, segments uploaded through
// grants) and back. The datastore keeps serving while a backup runs: the
// driver streams from the running server, and heartbeats go on beside the
// command. Neither the data key nor a grant URL is ever logged or put into
// an error.

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/coffer-dbaas/coffer/agent/backupstream"
	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

func (a *Agent) backupper() (driver.Backupper, error) {
	if b, ok := a.drv.(driver.Backupper); ok {
		return b, nil
	}
	return nil, errors.New("this datastore does not support backups")
}

// backup runs CommandBackup. A redelivered command runs again from the
// start: its segments overwrite the first run's, and the result counts
// this run's.
func (a *Agent) backup(ctx context.Context, p protocol.BackupRequest) (any, error) {
	bk, err := a.backupper()
	if err != nil {
		return nil, err
	}
	if err := validateBackupRequest(p); err != nil {
		return nil, fmt.Errorf("backup %s: %w", p.BackupID, err)
	}
	log := a.backupLogger(p.BackupID)
	parallel := p.Parallel
	if parallel == 0 {
		parallel = backupstream.DefaultParallel
	}
	client, err := a.objectClient(parallel)
	if err != nil {
		return nil, fmt.Errorf("backup %s: %w", p.BackupID, err)
	}
	defer client.CloseIdleConnections()
	g := a.newBackupGranter(p.BackupID, client)

	// Progress is cosmetic: a failed estimate or report does not fail the
	// backup. The driver estimates full backups only.
	if p.Kind == protocol.BackupFull {
		if est, err := bk.BackupSize(ctx); err != nil {
			log.Warn("estimate backup size", "error", err)
		} else if err := a.backupProgress(ctx, p.BackupID, est); err != nil {
			log.Warn("report backup progress", "error", err)
		}
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	pr, pw := io.Pipe()
	var point protocol.BackupPoint
	var backupErr error
	produced := make(chan struct{})
	// A driver that compresses its streams itself (driver.ZstdBackupper)
	// does it faster than the pipeline: Upload then only encrypts.
	zb, compressed := bk.(driver.ZstdBackupper)
	var plain atomic.Int64
	go func() {
		defer close(produced)
		if compressed {
			point, backupErr = zb.BackupZstd(ctx, p.Kind, p.Parent, pw, &plain)
		} else {
			point, backupErr = bk.Backup(ctx, p.Kind, p.Parent, pw)
		}
		// nil: EOF for Upload. An error: Upload's read fails with it.
		_ = pw.CloseWithError(backupErr)
	}()

	sum, uploadErr := backupstream.Upload(ctx, pr, backupstream.UploadOptions{
		Key:         p.DataKey,
		SegmentSize: p.SegmentSize,
		Parallel:    parallel,
		Logger:      log,
		Compressed:  compressed,
		PlainBytes:  &plain,
	}, g)
	if uploadErr != nil {
		// Upload closed the pipe, so the driver's next write fails; the
		// cancellation stops a driver that is not writing.
		cancel()
	}
	<-produced

	switch {
	case backupErr != nil && (uploadErr == nil || errors.Is(uploadErr, backupErr)):
		// The driver failed first (Upload failed reading its stream).
		return nil, fmt.Errorf("backup %s: %w", p.BackupID, backupErr)
	case uploadErr != nil:
		return nil, fmt.Errorf("backup %s: upload: %w", p.BackupID, uploadErr)
	}
	log.Info("backup uploaded", "kind", p.Kind, "segments", sum.Segments, "raw_bytes", sum.RawBytes, "stored_bytes", sum.StoredBytes)
	return protocol.BackupResult{
		Point:       point,
		Segments:    sum.Segments,
		StoredBytes: sum.StoredBytes,
		RawBytes:    sum.RawBytes,
	}, nil
}

// validateBackupRequest checks what the driver and the pipeline cannot
// check themselves. Its errors never quote the payload.
func validateBackupRequest(p protocol.BackupRequest) error {
	switch {
	case p.BackupID == "":
		return errors.New("backup_id is empty")
	case p.Kind != protocol.BackupFull && p.Kind != protocol.BackupIncremental:
		return fmt.Errorf("kind %q is neither %q nor %q", p.Kind, protocol.BackupFull, protocol.BackupIncremental)
	case p.Kind == protocol.BackupIncremental && p.Parent == nil:
		return errors.New("an incremental backup needs its parent's point")
	case len(p.DataKey) != backupstream.KeySize:
		return fmt.Errorf("data key is %d bytes, want %d", len(p.DataKey), backupstream.KeySize)
	case p.SegmentSize < 0 || p.SegmentSize > backupstream.MaxSegmentSize:
		return fmt.Errorf("segment size %d out of range [1, %d]", p.SegmentSize, backupstream.MaxSegmentSize)
	case p.Parallel < 0 || p.Parallel > backupstream.MaxParallel:
		return fmt.Errorf("parallel %d out of range [1, %d]", p.Parallel, backupstream.MaxParallel)
	}
	return nil
}

// restore builds the volume from req.Restore's chain of backups, before
// Prepare starts the datastore. The driver sees the chain without the data
// keys: only the layers' readers, which hold them, need them.
func (a *Agent) restore(ctx context.Context, req protocol.PrepareRequest) error {
	bk, err := a.backupper()
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	chain := req.Restore.Chain
	if len(chain) == 0 {
		return errors.New("restore: the chain of backups is empty")
	}
	if chain[0].Kind != protocol.BackupFull {
		return fmt.Errorf("restore: the chain starts with a %s backup, not a full one", chain[0].Kind)
	}
	for _, b := range chain {
		if len(b.DataKey) != backupstream.KeySize {
			return fmt.Errorf("restore: backup %s: data key is %d bytes, want %d", b.BackupID, len(b.DataKey), backupstream.KeySize)
		}
		if len(b.Segments) == 0 {
			return fmt.Errorf("restore: backup %s has no segments", b.BackupID)
		}
	}
	client, err := a.objectClient(2)
	if err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	defer client.CloseIdleConnections()

	layers := make([]driver.RestoreLayer, len(chain))
	for i, b := range chain {
		g := a.newBackupGranter(b.BackupID, client)
		layers[i] = driver.RestoreLayer{
			Kind:  b.Kind,
			Point: b.Point,
			Open: func(ctx context.Context) (io.ReadCloser, error) {
				return &layerReader{backupID: b.BackupID, rc: backupstream.Open(ctx, b.DataKey, b.Segments, g)}, nil
			},
		}
	}
	a.backupLogger(chain[len(chain)-1].BackupID).Info("restoring from backups", "chain_length", len(chain))
	if err := bk.Restore(ctx, withoutDataKeys(req), layers); err != nil {
		return fmt.Errorf("restore: %w", err)
	}
	return nil
}

// withoutDataKeys returns req with a copy of its restore chain that holds
// no data keys, for code that has no use for them.
func withoutDataKeys(req protocol.PrepareRequest) protocol.PrepareRequest {
	if req.Restore == nil {
		return req
	}
	chain := make([]protocol.RestoreBackup, len(req.Restore.Chain))
	for i, b := range req.Restore.Chain {
		b.DataKey = nil
		chain[i] = b
	}
	req.Restore = &protocol.RestoreRequest{Chain: chain}
	return req
}

// layerReader names the backup in its errors: "segment 3 of backup X:
// checksum mismatch".
type layerReader struct {
	backupID string
	rc       io.ReadCloser
}

func (l *layerReader) Read(p []byte) (int, error) {
	n, err := l.rc.Read(p)
	if err != nil && err != io.EOF {
		var se *backupstream.SegmentError
		if errors.As(err, &se) {
			err = fmt.Errorf("segment %d of backup %s: %w", se.Segment, l.backupID, se.Err)
		} else {
			err = fmt.Errorf("backup %s: %w", l.backupID, err)
		}
	}
	return n, err
}

func (l *layerReader) Close() error { return l.rc.Close() }

// pruneWAL runs CommandPruneWAL. A datastore without a WAL archive has
// nothing to prune.
func (a *Agent) pruneWAL(ctx context.Context, p protocol.PruneWALRequest) (any, error) {
	pr, ok := a.drv.(driver.WALPruner)
	if !ok {
		return protocol.PruneWALResult{}, nil
	}
	n, err := pr.PruneWAL(ctx, p.Keep)
	if err != nil {
		return nil, err
	}
	return protocol.PruneWALResult{Removed: n}, nil
}
