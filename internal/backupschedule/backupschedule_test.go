package backupschedule

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 10, 17, 30, 0, time.UTC)
	for _, c := range []struct {
		pattern string
		next    time.Time
	}{
		{"* * * * *", time.Date(2026, 11, 22, 10, 18, 0, 0, time.UTC)},
		{"30 2 * * *", time.Date(2026, 11, 23, 2, 30, 0, 0, time.UTC)},
		{"@hourly", time.Date(2026, 11, 22, 11, 0, 0, 0, time.UTC)},
		{"@daily", time.Date(2026, 11, 23, 0, 0, 0, 0, time.UTC)},
		{"@weekly", time.Date(2026, 11, 29, 0, 0, 0, 0, time.UTC)},
		{"0 0 1 * *", time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)},
		{"@every 90m", time.Date(2026, 11, 22, 11, 47, 30, 0, time.UTC)},
		{"0 9-17 * * mon-fri", time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)}, // the 22nd is a Sunday
		{"CRON_TZ=Europe/Berlin 0 3 * * *", time.Date(2026, 11, 23, 2, 0, 0, 0, time.UTC)},
		{"0 0 29 2 *", time.Date(2028, 2, 29, 0, 0, 0, 0, time.UTC)},
	} {
		s, err := Validate(c.pattern, now)
		if err != nil {
			t.Errorf("%q: %v", c.pattern, err)
			continue
		}
		if got := Next(s, now); !got.Equal(c.next) || got.Location() != time.UTC {
			t.Errorf("%q: next %v, want %v", c.pattern, got, c.next)
		}
	}
	for _, c := range []struct{ pattern, says string }{
		{"", "empty"},
		{"* * * *", "expected exactly 5 fields"},
		{"0 0 * * * *", "expected exactly 5 fields"},
		{"61 * * * *", "above maximum"},
		{"0 0 30 2 *", "never fires"},
		{"@every 30s", "more often than once a minute"},
		{"@every 1s", "more often than once a minute"},
		{"@fortnightly", "unrecognized descriptor"},
		{"CRON_TZ=Mars/Olympus 0 3 * * *", "bad location"},
		{"CRON_TZ=UTC", "time zone must be followed"},
		{"TZ=", "time zone must be followed"},
		{"*/0 * * * *", ""},
	} {
		if _, err := Validate(c.pattern, now); err == nil || !strings.Contains(err.Error(), c.says) {
			t.Errorf("%q: error %v, want one saying %q", c.pattern, err, c.says)
		}
	}
	// The scheduler accepts what robfig/cron does (tests tick every second).
	if _, err := Parse("@every 1s"); err != nil {
		t.Errorf("Parse(@every 1s): %v", err)
	}
}

// FuzzParse: no pattern makes the parser panic (robfig/cron does on some).
func FuzzParse(f *testing.F) {
	for _, s := range []string{"* * * * *", "TZ=", "CRON_TZ=UTC 0 0 * * *", "@every 1m", "0 0 ? * mon", "1-5/2 * * * *"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if sched, err := Parse(s); err == nil {
			_ = Next(sched, time.Now())
		}
	})
}

func TestParseAge(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]time.Duration{
		"604800": 7 * 24 * time.Hour, "168h": 7 * 24 * time.Hour, "90m": 90 * time.Minute, "30d": 30 * 24 * time.Hour,
		"0": 0, "1h30m": 90 * time.Minute, " 3600 ": time.Hour, "36500d": 36500 * 24 * time.Hour,
	} {
		if got, err := ParseAge(in); err != nil || got != want {
			t.Errorf("ParseAge(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"", "abc", "-1h", "1.5s", "500ms", "1000000h", "36501d", "99999999999999999999", "1e3", "d", "7 d"} {
		if got, err := ParseAge(in); err == nil {
			t.Errorf("ParseAge(%q) = %v, want an error", in, got)
		}
	}
	if Interval(0).Valid || AgeOf(Interval(0)) != 0 {
		t.Error("0 is stored as NULL (no limit)")
	}
	if d := 36500 * 24 * time.Hour; AgeOf(Interval(d)) != d {
		t.Error("an age does not survive storing")
	}
}

func TestKept(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	var backups []Backup
	ids := map[uuid.UUID]int{}
	for day := range 10 { // backup n: n days old, completed an hour after it started
		b := Backup{ID: uuid.New(), CreatedAt: now.Add(-time.Duration(day) * 24 * time.Hour)}
		b.CompletedAt = b.CreatedAt.Add(time.Hour)
		ids[b.ID] = day
		backups = append(backups, b)
	}
	slices.Reverse(backups) // order of the input does not matter
	ages := func(kept []uuid.UUID) []int {
		var out []int
		for _, id := range kept {
			out = append(out, ids[id])
		}
		slices.Sort(out)
		return out
	}
	for _, c := range []struct {
		keepLast int
		maxAge   time.Duration
		want     []int
	}{
		{0, 0, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
		{3, 0, []int{0, 1, 2}},
		{1, 0, []int{0}},
		{0, 72 * time.Hour, []int{0, 1, 2}},                     // younger than 3 days
		{2, 5*24*time.Hour - time.Second, []int{0, 1, 2, 3, 4}}, // union
		{6, 24 * time.Hour, []int{0, 1, 2, 3, 4, 5}},
		{20, 0, []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}},
	} {
		if got := ages(Kept(backups, c.keepLast, c.maxAge, now)); !slices.Equal(got, c.want) {
			t.Errorf("keep_last %d, max_age %v: kept ages %v, want %v", c.keepLast, c.maxAge, got, c.want)
		}
	}
	// The last completed backup stays even when every rule would drop it.
	if got := ages(Kept(backups, 0, time.Hour, now.Add(30*24*time.Hour))); !slices.Equal(got, []int{0}) {
		t.Errorf("all too old: kept %v, want the last one", got)
	}
	if Kept(nil, 2, time.Hour, now) != nil {
		t.Error("nothing to keep of nothing")
	}
}
