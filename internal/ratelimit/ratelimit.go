// Package ratelimit limits API requests per project the way Trove's
// RateLimitingMiddleware does: each configured limit (verb, regex on the
// path below /v1.0/{tenant_id}, value per unit) is a leaky bucket per
// project that holds one unit of time, each request adds unit/value
// seconds, and a request that would overflow it is refused with 413
// overLimit and a Retry-After header. Default: 200 requests per minute for
// each of GET, POST, PUT and DELETE, plus 200 POSTs per minute on /mgmt.
//
// Trove keeps its buckets in each API process's memory, so N replicas allow
// N times the limit. Here a bucket is one row in Postgres (table
// rate_limit, a GCRA timestamp updated by one upsert per request), so the
// limit holds across replicas; see db/query/ratelimit.sql.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
)

// Limit is one configured rate limit and, as returned by Limits, a
// project's standing against it (GET /limits shows these after the
// absolute limits).
type Limit struct {
	Verb  string // HTTP method it counts
	URI   string // human-readable scope, e.g. "*" or "*/mgmt"
	Regex string // matched (anchored at the start) against the path below /v1.0/{tenant_id}
	Value int    // requests per Unit
	Unit  string // SECOND, MINUTE, HOUR or DAY
	// Remaining is how many more requests the project may make right now;
	// NextAvailable when the next one will be allowed (now if Remaining > 0).
	// Both are zero in configuration.
	Remaining     int
	NextAvailable time.Time
}

// units are Trove's Limit.UNITS.
var units = map[string]time.Duration{
	"SECOND": time.Second,
	"MINUTE": time.Minute,
	"HOUR":   time.Hour,
	"DAY":    24 * time.Hour,
}

// DefaultLimits are Trove's defaults (http_{get,post,put,delete}_rate and
// http_mgmt_post_rate, 200 per minute each).
func DefaultLimits() []Limit {
	return []Limit{
		{Verb: "POST", URI: "*", Regex: ".*", Value: 200, Unit: "MINUTE"},
		{Verb: "PUT", URI: "*", Regex: ".*", Value: 200, Unit: "MINUTE"},
		{Verb: "DELETE", URI: "*", Regex: ".*", Value: 200, Unit: "MINUTE"},
		{Verb: "GET", URI: "*", Regex: ".*", Value: 200, Unit: "MINUTE"},
		{Verb: "POST", URI: "*/mgmt", Regex: "^/mgmt", Value: 200, Unit: "MINUTE"},
	}
}

// ParseLimits reads limits in Trove's (and Nova's) configuration syntax:
// semicolon-separated groups "(VERB, URI, REGEX, VALUE, UNIT)", e.g.
//
//	(GET, *, .*, 1000, MINUTE);(POST, *, .*, 100, MINUTE);(POST, */mgmt, ^/mgmt, 50, MINUTE)
//
// "default" gives DefaultLimits, "off" (or "none") no limits at all.
func ParseLimits(s string) ([]Limit, error) {
	s = strings.TrimSpace(s)
	switch strings.ToLower(s) {
	case "default":
		return DefaultLimits(), nil
	case "off", "none":
		return nil, nil
	case "":
		return nil, errors.New("rate limits: empty (use \"default\", \"off\" or (VERB, URI, REGEX, VALUE, UNIT);...)")
	}
	var out []Limit
	for group := range strings.SplitSeq(s, ";") {
		group = strings.TrimSpace(group)
		if group == "" {
			continue
		}
		if !strings.HasPrefix(group, "(") || !strings.HasSuffix(group, ")") {
			return nil, fmt.Errorf("rate limit %q: must be surrounded by parentheses", group)
		}
		args := strings.Split(group[1:len(group)-1], ",")
		if len(args) != 5 {
			return nil, fmt.Errorf("rate limit %q: want verb, uri, regex, value, unit", group)
		}
		for i := range args {
			args[i] = strings.TrimSpace(args[i])
		}
		value, err := strconv.Atoi(args[3])
		if err != nil {
			return nil, fmt.Errorf("rate limit %q: value %q is not an integer", group, args[3])
		}
		out = append(out, Limit{Verb: strings.ToUpper(args[0]), URI: args[1], Regex: args[2], Value: value, Unit: strings.ToUpper(args[4])})
	}
	if len(out) == 0 {
		return nil, errors.New("rate limits: no limit given")
	}
	// Units, values, regexes and duplicates: checked now, at configuration.
	if _, err := New(nil, out, nil); err != nil {
		return nil, err
	}
	return out, nil
}

// rule is a validated Limit with what checking it needs.
type rule struct {
	Limit
	re       *regexp.Regexp
	key      string        // the bucket's name in rate_limit.limit_key
	capacity time.Duration // one unit: the bucket's size
	emission time.Duration // unit/value: what one request adds
	message  string        // Trove's details text for a refusal
}

// Limiter checks requests against the configured limits. It is safe for
// concurrent use; all state is in Postgres.
type Limiter struct {
	q      *store.Queries
	rules  []rule
	logger *slog.Logger
}

// New returns a Limiter keeping its buckets in db (a pool). No limits
// means every request is allowed.
func New(db store.DBTX, limits []Limit, logger *slog.Logger) (*Limiter, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	l := &Limiter{q: store.New(db), logger: logger}
	seen := map[string]bool{}
	for _, lim := range limits {
		unit, ok := units[lim.Unit]
		if !ok {
			return nil, fmt.Errorf("rate limit %s %s: unit %q is not SECOND, MINUTE, HOUR or DAY", lim.Verb, lim.URI, lim.Unit)
		}
		if lim.Value <= 0 {
			return nil, fmt.Errorf("rate limit %s %s: value must be > 0, got %d", lim.Verb, lim.URI, lim.Value)
		}
		if lim.Verb == "" || strings.ContainsAny(lim.Verb, " \t") {
			return nil, fmt.Errorf("rate limit %q: bad verb", lim.Verb)
		}
		// Python's re.match, which Trove uses, anchors at the start only.
		re, err := regexp.Compile(`^(?:` + lim.Regex + `)`)
		if err != nil {
			return nil, fmt.Errorf("rate limit %s %s: regex %q: %w", lim.Verb, lim.URI, lim.Regex, err)
		}
		key := lim.Verb + " " + lim.Regex
		if seen[key] {
			return nil, fmt.Errorf("rate limit %s %s: configured twice", lim.Verb, lim.Regex)
		}
		seen[key] = true
		lim.Remaining, lim.NextAvailable = 0, time.Time{}
		l.rules = append(l.rules, rule{
			Limit: lim, re: re, key: key, capacity: unit,
			// Whole microseconds (Postgres's resolution), rounded down so that
			// value requests always fit in one unit.
			emission: (unit / time.Duration(lim.Value)).Truncate(time.Microsecond),
			message: fmt.Sprintf("Only %d %s request(s) can be made to %s every %s.",
				lim.Value, lim.Verb, lim.URI, strings.ToLower(lim.Unit)),
		})
	}
	return l, nil
}

// Configured returns the limits without a project's standing.
func (l *Limiter) Configured() []Limit {
	if l == nil {
		return nil
	}
	out := make([]Limit, len(l.rules))
	for i, r := range l.rules {
		out[i] = r.Limit
	}
	return out
}

// Decision is the outcome of Take.
type Decision struct {
	Allowed bool
	// For a refused request: how long until it would be allowed, and the
	// limit that refused it.
	RetryAfter time.Duration
	Limit      Limit
	Details    string // Trove's text, e.g. "Only 200 GET request(s) can be made to * every minute."
}

// Take counts a request of project (method, path below /v1.0/{tenant_id})
// against every limit it matches. Like Trove, every matching limit that
// has room counts it even when another refuses it; unlike Trove, which
// reports the shortest wait, the longest is reported, so a client that
// honours Retry-After is then let through.
func (l *Limiter) Take(ctx context.Context, project, method, path string) (Decision, error) {
	d := Decision{Allowed: true}
	if l == nil {
		return d, nil
	}
	for _, r := range l.rules {
		if r.Verb != method || !r.re.MatchString(path) {
			continue
		}
		_, err := l.q.TakeRateLimit(ctx, store.TakeRateLimitParams{
			ProjectID: project, LimitKey: r.key,
			EmissionSeconds: r.emission.Seconds(), CapacitySeconds: r.capacity.Seconds(),
		})
		if err == nil {
			continue
		}
		if !errors.Is(err, pgx.ErrNoRows) {
			return Decision{Allowed: true}, fmt.Errorf("rate limit %s for project %s: %w", r.key, project, err)
		}
		wait, err := l.wait(ctx, project, r)
		if err != nil {
			return Decision{Allowed: true}, err
		}
		if d.Allowed || wait > d.RetryAfter {
			d = Decision{RetryAfter: wait, Limit: r.Limit, Details: r.message}
		}
	}
	return d, nil
}

// wait is how long until the bucket of a refused request has room.
func (l *Limiter) wait(ctx context.Context, project string, r rule) (time.Duration, error) {
	rows, err := l.q.ProjectRateLimits(ctx, store.ProjectRateLimitsParams{LimitKeys: []string{r.key}, ProjectID: project})
	if err != nil {
		return 0, fmt.Errorf("rate limit %s for project %s: read bucket: %w", r.key, project, err)
	}
	if len(rows) != 1 || rows[0].Tat == nil {
		return 0, nil
	}
	_, wait := r.standing(*rows[0].Tat, rows[0].Now)
	return wait, nil
}

// standing is how many requests the bucket (tat at now) has room for, and
// how long until it has room for one.
func (r rule) standing(tat, now time.Time) (remaining int, wait time.Duration) {
	water := max(tat.Sub(now), 0)
	remaining = int((r.capacity - water) / r.emission)
	remaining = min(max(remaining, 0), r.Value)
	if remaining == 0 {
		wait = water + r.emission - r.capacity
	}
	return remaining, max(wait, 0)
}

// Limits returns the configured limits with project's standing against
// each (Remaining, NextAvailable), for GET /limits.
func (l *Limiter) Limits(ctx context.Context, project string) ([]Limit, error) {
	if l == nil || len(l.rules) == 0 {
		return nil, nil
	}
	keys := make([]string, len(l.rules))
	for i, r := range l.rules {
		keys[i] = r.key
	}
	rows, err := l.q.ProjectRateLimits(ctx, store.ProjectRateLimitsParams{LimitKeys: keys, ProjectID: project})
	if err != nil {
		return nil, fmt.Errorf("rate limits of project %s: %w", project, err)
	}
	byKey := make(map[string]store.ProjectRateLimitsRow, len(rows))
	now := time.Now()
	for _, row := range rows {
		byKey[row.LimitKey] = row
		now = row.Now
	}
	out := make([]Limit, len(l.rules))
	for i, r := range l.rules {
		out[i] = r.Limit
		tat := now
		if row, ok := byKey[r.key]; ok && row.Tat != nil {
			tat = *row.Tat
		}
		remaining, wait := r.standing(tat, now)
		out[i].Remaining = remaining
		out[i].NextAvailable = now.Add(wait).UTC()
	}
	return out, nil
}

// retryAfterSeconds is Trove's Retry-After: the wait rounded up, in whole
// seconds (at least 1 for a refusal).
func retryAfterSeconds(d time.Duration) int {
	return max(int(math.Ceil(d.Seconds())), 1)
}
