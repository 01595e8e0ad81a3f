package agent

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// conn is everything a request to the agent API needs. A reload replaces
// the whole conn atomically, so a request never mixes an old token with a
// new URL.
type conn struct {
	cfg    protocol.AgentConfig
	base   string // APIURL without a trailing slash
	client *http.Client
	// changed is closed when a reload replaces this conn.
	changed chan struct{}
}

func newConn(cfg protocol.AgentConfig) (*conn, error) {
	if err := validateConnection(cfg); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	pool, err := certPool(cfg.CACert)
	if err != nil {
		return nil, err
	}
	transport := &http.Transport{
		// Honour HTTP(S)_PROXY: some clouds only let guests out through a
		// proxy. Loopback addresses never go through it.
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   10 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		TLSClientConfig: &tls.Config{
			RootCAs:    pool,
			MinVersion: tls.VersionTLS12,
		},
		TLSHandshakeTimeout: 10 * time.Second,
		// A custom TLS config turns HTTP/2 off unless asked for; with it
		// the long-poll and heartbeats share one connection.
		ForceAttemptHTTP2: true,
		MaxIdleConns:      4,
		IdleConnTimeout:   90 * time.Second,
	}
	return &conn{
		cfg:  cfg,
		base: strings.TrimRight(cfg.APIURL, "/"),
		// No client-wide Timeout: every request carries its own deadline,
		// because a long-poll legitimately lasts close to a minute.
		client:  &http.Client{Transport: transport},
		changed: make(chan struct{}),
	}, nil
}

// newRequest builds a request to path (relative to the API URL) with the
// agent's identity on it. body, when not nil, is sent as JSON.
func (c *conn) newRequest(ctx context.Context, method, path string, body any) (*http.Request, error) {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s body: %w", method, path, err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, r)
	if err != nil {
		return nil, fmt.Errorf("build %s %s request: %w", method, path, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.cfg.Token)
	req.Header.Set("User-Agent", userAgent())
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	return req, nil
}

// statusError is an unexpected HTTP status from the agent API.
type statusError struct {
	op     string
	status int
	detail string // start of the response body, for diagnosis
}

func (e *statusError) Error() string {
	msg := fmt.Sprintf("%s: agent API answered %d %s", e.op, e.status, http.StatusText(e.status))
	if e.detail != "" {
		msg += ": " + e.detail
	}
	return msg
}

// unauthorized reports whether the API rejected the credential.
func (e *statusError) unauthorized() bool {
	return e.status == http.StatusUnauthorized || e.status == http.StatusForbidden
}

// permanent reports whether repeating the same request cannot succeed: a
// client error other than authentication, timeout or rate limiting.
func (e *statusError) permanent() bool {
	if e.status < 400 || e.status >= 500 || e.unauthorized() {
		return false
	}
	return e.status != http.StatusRequestTimeout && e.status != http.StatusTooManyRequests
}

func newStatusError(op string, resp *http.Response) *statusError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 256))
	return &statusError{op: op, status: resp.StatusCode, detail: strings.TrimSpace(string(b))}
}

// drainClose reads what is left of a small response body so that the
// connection can be reused, then closes it.
func drainClose(body io.ReadCloser) {
	_, _ = io.Copy(io.Discard, io.LimitReader(body, 64<<10))
	_ = body.Close()
}

// post sends body to path through c and expects a 2xx answer.
func (a *Agent) post(ctx context.Context, c *conn, op, path string, body any) error {
	return a.postJSON(ctx, c, op, path, body, nil)
}
