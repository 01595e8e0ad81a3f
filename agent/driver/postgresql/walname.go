package postgresql

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// WAL positions and file names, as PostgreSQL spells them: an LSN is
// "hi/lo" in hex (a 64-bit byte position), a WAL segment file is named by
// its timeline and segment number, 24 upper-case hex digits.

var (
	// walSegmentName matches a WAL segment file (TTTTTTTTXXXXXXXXYYYYYYYY).
	walSegmentName = regexp.MustCompile(`^[0-9A-F]{24}$`)
	// walHistoryName matches a timeline history file (TTTTTTTT.history).
	walHistoryName = regexp.MustCompile(`^[0-9A-F]{8}\.history$`)
	// walOtherName matches the archive's other files: backup history
	// files (segment.offset.backup) and the last segment of a timeline
	// that ended in a promotion (segment.partial).
	walOtherName = regexp.MustCompile(`^[0-9A-F]{24}(\.[0-9A-F]{8}\.backup|\.partial)$`)
)

// parseLSN parses "hi/lo".
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("invalid LSN %q", s)
	}
	return h<<32 | l, nil
}

func formatLSN(lsn uint64) string {
	return fmt.Sprintf("%X/%X", lsn>>32, lsn&0xFFFFFFFF)
}

// walFile is a segment: its timeline and number (byte position divided by
// the segment size).
type walFile struct {
	tli   uint32
	segno uint64
}

// segmentsPerID is how many segments of segSize make one "xlogid" (4 GiB),
// the middle part of a file name.
func segmentsPerID(segSize uint64) uint64 { return 0x100000000 / segSize }

func (f walFile) name(segSize uint64) string {
	per := segmentsPerID(segSize)
	return fmt.Sprintf("%08X%08X%08X", f.tli, f.segno/per, f.segno%per)
}

// parseWALName parses a segment file name.
func parseWALName(name string, segSize uint64) (walFile, error) {
	if !walSegmentName.MatchString(name) {
		return walFile{}, fmt.Errorf("invalid WAL file name %q", name)
	}
	tli, _ := strconv.ParseUint(name[0:8], 16, 32)
	hi, _ := strconv.ParseUint(name[8:16], 16, 32)
	lo, _ := strconv.ParseUint(name[16:24], 16, 32)
	per := segmentsPerID(segSize)
	if lo >= per {
		return walFile{}, fmt.Errorf("invalid WAL file name %q for %d-byte segments", name, segSize)
	}
	return walFile{tli: uint32(tli), segno: hi*per + lo}, nil
}

// walTimeline returns the timeline of a segment file name.
func walTimeline(name string) (uint32, error) {
	if !walSegmentName.MatchString(name) {
		return 0, fmt.Errorf("invalid WAL file name %q", name)
	}
	tli, _ := strconv.ParseUint(name[0:8], 16, 32)
	return uint32(tli), nil
}

// endSegment is the segment holding the last byte before lsn, an end
// position: PostgreSQL's XLByteToPrevSeg (pg_walfile_name's rule), so an
// end exactly at a segment boundary belongs to the segment it completes.
func endSegment(tli uint32, lsn, segSize uint64) walFile {
	if lsn == 0 {
		return walFile{tli: tli}
	}
	return walFile{tli: tli, segno: (lsn - 1) / segSize}
}
