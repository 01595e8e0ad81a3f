package agent

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// readGuestLog serves protocol.CommandGuestLogRead: the complete lines of
// a log's file from an offset. The file is the one the driver names for
// the log (relative to the data dir), never a path from the request.
func (a *Agent) readGuestLog(ctx context.Context, p protocol.GuestLogReadRequest) (protocol.GuestLogChunk, error) {
	gl, ok := a.drv.(driver.GuestLogger)
	if !ok {
		return protocol.GuestLogChunk{}, errors.New("this datastore has no guest logs")
	}
	if p.Offset < 0 || p.Max < 1 || p.Max > protocol.GuestLogReadMax {
		return protocol.GuestLogChunk{}, fmt.Errorf("guest log %s: offset %d / max %d out of range", p.Name, p.Offset, p.Max)
	}
	logs, err := gl.GuestLogs(ctx)
	if err != nil {
		return protocol.GuestLogChunk{}, err
	}
	for _, l := range logs {
		if l.Name == p.Name && l.File != "" {
			return readLogChunk(filepath.Join(a.conn.Load().cfg.DataDir, l.File), p.Offset, p.Max)
		}
	}
	return protocol.GuestLogChunk{}, fmt.Errorf("guest log %q: no such log", p.Name)
}

// readLogChunk reads at most max bytes of path from offset and keeps the
// complete lines: a line still being written is left for the next read.
// Only a line longer than max comes in pieces, so that a read always
// makes progress.
func readLogChunk(path string, offset int64, max int) (protocol.GuestLogChunk, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return protocol.GuestLogChunk{Offset: offset}, nil // no file yet: size 0
	}
	if err != nil {
		return protocol.GuestLogChunk{}, fmt.Errorf("read guest log: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return protocol.GuestLogChunk{}, fmt.Errorf("read guest log: %w", err)
	}
	c := protocol.GuestLogChunk{Offset: offset, Size: fi.Size()}
	if offset >= c.Size {
		return c, nil
	}
	buf := make([]byte, min(int64(max), c.Size-offset))
	n, err := f.ReadAt(buf, offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return protocol.GuestLogChunk{}, fmt.Errorf("read guest log: %w", err)
	}
	buf = buf[:n]
	if i := bytes.LastIndexByte(buf, '\n'); i >= 0 {
		buf = buf[:i+1]
	} else if len(buf) < max {
		buf = buf[:0] // the start of a line still being written
	}
	c.Data = buf
	return c, nil
}
