package ratelimit

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"github.com/coffer-dbaas/coffer/internal/auth"
)

// Middleware counts every authenticated request (the principal in the
// request's context, so it goes after authentication) against the caller's
// project and answers Trove's 413 overLimit when a limit is exhausted:
//
//	Retry-After: 12
//	{"overLimit": {"code": 413, "message": "This request was rate-limited.",
//	  "details": "Only 200 GET request(s) can be made to * every minute.", "retryAfter": "12"}}
//
// Requests without a principal (the version document at /) pass. When the
// counters cannot be read (Postgres unavailable) the request passes and the
// failure is logged: rate limiting protects the service, it must not take
// it down.
func (l *Limiter) Middleware(next http.Handler) http.Handler {
	if l == nil || len(l.rules) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := auth.FromContext(r.Context())
		if p == nil {
			next.ServeHTTP(w, r)
			return
		}
		d, err := l.Take(r.Context(), p.ProjectID, r.Method, apiPath(r.URL.Path))
		if err != nil {
			l.logger.WarnContext(r.Context(), "rate limit unavailable, request let through", "err", err)
		}
		if !d.Allowed {
			writeOverLimit(w, d)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// apiPath is the part of a request path that limits' regexes see: below
// /v1.0/{tenant_id} (so "^/mgmt" matches the management routes), "/" for
// the version document itself.
func apiPath(path string) string {
	rest, ok := strings.CutPrefix(path, "/v1.0")
	if !ok {
		return path
	}
	rest = strings.TrimPrefix(rest, "/")
	if _, below, found := strings.Cut(rest, "/"); found {
		return "/" + below
	}
	return "/"
}

type overLimitBody struct {
	Code       int    `json:"code"`
	Message    string `json:"message"`
	Details    string `json:"details"`
	RetryAfter string `json:"retryAfter"`
}

// writeOverLimit writes Trove's OverLimitFault.
func writeOverLimit(w http.ResponseWriter, d Decision) {
	secs := strconv.Itoa(retryAfterSeconds(d.RetryAfter))
	body, _ := json.Marshal(map[string]overLimitBody{"overLimit": {
		Code: http.StatusRequestEntityTooLarge, Message: "This request was rate-limited.",
		Details: d.Details, RetryAfter: secs,
	}})
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Retry-After", secs)
	w.WriteHeader(http.StatusRequestEntityTooLarge)
	_, _ = w.Write(body)
}
