package agent

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadLogChunk(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "postgres.log")
	if err := os.WriteFile(path, []byte("a\nbb\nccc"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		offset int64
		max    int
		want   string
	}{
		{"complete lines only", 0, 100, "a\nbb\n"},
		{"from an offset", 2, 100, "bb\n"},
		{"cut at the last newline within max", 0, 4, "a\n"},
		{"the line being written waits", 5, 100, ""},
		{"a line longer than max comes in pieces", 5, 2, "cc"},
		{"past the end", 8, 100, ""},
		{"beyond the end (a truncated file)", 50, 100, ""},
	} {
		c, err := readLogChunk(path, tc.offset, tc.max)
		if err != nil || string(c.Data) != tc.want || c.Offset != tc.offset || c.Size != 8 {
			t.Errorf("%s: readLogChunk(%d, %d) = {offset %d, %q, size %d}, %v; want %q, size 8", tc.name, tc.offset, tc.max, c.Offset, c.Data, c.Size, err, tc.want)
		}
	}
	if c, err := readLogChunk(filepath.Join(t.TempDir(), "none.log"), 0, 100); err != nil || c.Size != 0 || len(c.Data) != 0 {
		t.Errorf("no file yet: %+v, %v", c, err)
	}
}
