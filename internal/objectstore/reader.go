package objectstore

import (
	"errors"
	"fmt"
	"io"
)

// errSize is wrapped by the errors of uploads whose reader did not hold
// exactly the announced number of bytes.
var errSize = errors.New("object size does not match")

// exactReader passes on exactly size bytes of r. Instead of ending early
// or late it fails, so that a backend streaming the body aborts the upload
// rather than storing a truncated or overlong object.
type exactReader struct {
	r    io.Reader
	size int64
	left int64
}

func newExactReader(r io.Reader, size int64) *exactReader {
	return &exactReader{r: r, size: size, left: size}
}

func (e *exactReader) Read(p []byte) (int, error) {
	if e.left == 0 {
		var b [1]byte
		n, err := io.ReadFull(e.r, b[:])
		switch {
		case n > 0:
			return 0, fmt.Errorf("%w: reader holds more than %d bytes", errSize, e.size)
		case err == io.EOF:
			return 0, io.EOF
		default:
			return 0, err
		}
	}
	if int64(len(p)) > e.left {
		p = p[:e.left]
	}
	n, err := e.r.Read(p)
	e.left -= int64(n)
	if err == io.EOF {
		if e.left > 0 {
			return n, fmt.Errorf("%w: reader ended after %d of %d bytes", errSize, e.size-e.left, e.size)
		}
		err = nil
	}
	return n, err
}
