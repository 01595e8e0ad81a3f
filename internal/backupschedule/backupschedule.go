// Package backupschedule holds the rules of backup schedules that the API
// and the scheduler share: what a cron pattern may be and when it fires
// next, how a retention age is written, and which backups retention keeps.
//
// Patterns are robfig/cron's standard ones, evaluated in UTC (as Mistral
// evaluates its cron triggers' patterns): five fields, a descriptor
// (@hourly, @daily, ...) or @every <duration>; CRON_TZ=<zone> in front
// selects another zone.
package backupschedule

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/robfig/cron/v3"
)

// MinInterval is the shortest @every a user may ask for; five-field
// patterns cannot fire more often anyway.
const MinInterval = time.Minute

// MaxAge bounds a retention age (a hundred years).
const MaxAge = 100 * 365 * 24 * time.Hour

// Parse parses a stored pattern. It accepts whatever robfig/cron's
// standard parser accepts, so that the scheduler never fails on a pattern
// the API let in (Validate is stricter).
func Parse(pattern string) (s cron.Schedule, err error) {
	// robfig/cron slices "CRON_TZ=zone" up to the first space and panics
	// when there is none; any other panic of the parser is a bad pattern
	// too, never a crashed request or scheduler.
	if (strings.HasPrefix(pattern, "TZ=") || strings.HasPrefix(pattern, "CRON_TZ=")) && !strings.Contains(pattern, " ") {
		return nil, fmt.Errorf("a time zone must be followed by a pattern")
	}
	defer func() {
		if p := recover(); p != nil {
			s, err = nil, fmt.Errorf("cannot parse it: %v", p)
		}
	}()
	return cron.ParseStandard(pattern)
}

// Validate checks a pattern a user sent and returns its schedule: it must
// parse, fire at all (not "0 0 30 2 *"), and not more often than once a
// minute. The error says what is wrong, for a 400.
func Validate(pattern string, now time.Time) (cron.Schedule, error) {
	s, err := Parse(pattern)
	if err != nil {
		return nil, err
	}
	if d, ok := s.(cron.ConstantDelaySchedule); ok && d.Delay < MinInterval {
		return nil, fmt.Errorf("it fires every %s, more often than once a minute", d.Delay)
	}
	if Next(s, now).IsZero() {
		return nil, fmt.Errorf("it never fires")
	}
	return s, nil
}

// Next is the first tick of s strictly after t, in UTC (zero: never).
func Next(s cron.Schedule, t time.Time) time.Time {
	n := s.Next(t.UTC())
	if n.IsZero() {
		return n
	}
	return n.UTC()
}

// ParseAge parses a retention age: whole seconds ("604800"), a Go
// duration ("168h", "90m") or whole days ("30d"). 0 means no limit.
func ParseAge(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	var d time.Duration
	switch {
	case s == "":
		return 0, fmt.Errorf("it is empty")
	case strings.Trim(s, "0123456789") == "":
		n, err := strconv.ParseInt(s, 10, 64)
		if err != nil || n > int64(MaxAge/time.Second) {
			return 0, fmt.Errorf("it is longer than 100 years")
		}
		d = time.Duration(n) * time.Second
	case strings.HasSuffix(s, "d") && strings.Trim(s[:len(s)-1], "0123456789") == "":
		n, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
		if err != nil || n > int64(MaxAge/(24*time.Hour)) {
			return 0, fmt.Errorf("it is longer than 100 years")
		}
		d = time.Duration(n) * 24 * time.Hour
	default:
		var err error
		if d, err = time.ParseDuration(s); err != nil {
			return 0, fmt.Errorf("use whole seconds or a duration such as 168h, 90m or 30d")
		}
	}
	switch {
	case d < 0:
		return 0, fmt.Errorf("it is negative")
	case d > MaxAge:
		return 0, fmt.Errorf("it is longer than 100 years")
	case d%time.Second != 0:
		return 0, fmt.Errorf("it is not a whole number of seconds")
	}
	return d, nil
}

// Interval is a retention age as stored (NULL: no limit).
func Interval(d time.Duration) pgtype.Interval {
	return pgtype.Interval{Microseconds: d.Microseconds(), Valid: d > 0}
}

// AgeOf reads a stored retention age. Only microseconds are ever stored;
// days and months (someone's manual UPDATE) count as 24 hours and 30 days.
func AgeOf(i pgtype.Interval) time.Duration {
	if !i.Valid {
		return 0
	}
	return time.Duration(i.Microseconds)*time.Microsecond + time.Duration(i.Days)*24*time.Hour +
		time.Duration(i.Months)*30*24*time.Hour
}

// Backup is a completed backup of a schedule, as retention sees it.
type Backup struct {
	ID          uuid.UUID
	CreatedAt   time.Time // its age counts from here (when its data was read)
	CompletedAt time.Time // the order of "the last N"
}

// Kept returns the ids of the backups the retention rules keep: the
// keepLast last completed, and those younger than maxAge at now; a backup
// either rule keeps is kept. The last completed backup is always kept (a
// schedule paused for longer than maxAge does not lose every backup, and
// an incremental schedule's next backup has its parent). With no rule
// (both 0) every backup is kept. The chain rule (a kept incremental keeps
// its ancestors) is the caller's: it needs the project's other backups.
func Kept(backups []Backup, keepLast int, maxAge time.Duration, now time.Time) []uuid.UUID {
	sorted := slices.Clone(backups)
	slices.SortStableFunc(sorted, func(a, b Backup) int {
		if c := b.CompletedAt.Compare(a.CompletedAt); c != 0 {
			return c
		}
		return b.CreatedAt.Compare(a.CreatedAt)
	})
	var kept []uuid.UUID
	for i, b := range sorted {
		switch {
		case i == 0,
			keepLast == 0 && maxAge == 0,
			keepLast > 0 && i < keepLast,
			maxAge > 0 && now.Sub(b.CreatedAt) < maxAge:
			kept = append(kept, b.ID)
		}
	}
	return kept
}
