package agent

// The agent's calls for backups: segment grants, segment reports and
// progress on the agent API, and the HTTP client that uses the grants.
// Grant URLs carry their credential in the query string; nothing here logs
// a grant or puts its URL into an error.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-dbaas/coffer/agent/backupstream"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// backupCallAttempts bounds how often one backup call to the agent API is
// tried: a backup rides out a short API outage (the backoff grows to
// backoffMax), but a long one fails it rather than hold its segments in
// memory indefinitely. The command's deadline bounds it too.
const backupCallAttempts = 8

// backupGranter is backupstream.Granter for one backup, through the agent
// API.
type backupGranter struct {
	a        *Agent
	backupID string
	client   *http.Client
}

func (a *Agent) newBackupGranter(backupID string, client *http.Client) *backupGranter {
	return &backupGranter{a: a, backupID: backupID, client: client}
}

func (g *backupGranter) Grant(ctx context.Context, n int, method string, size int64, sha string) (protocol.Grant, error) {
	var grant protocol.Grant
	req := protocol.SegmentGrantRequest{Method: method, Size: size, SHA256: sha}
	if err := g.a.backupCall(ctx, "segment grant", backupPath(protocol.PathSegmentGrant, g.backupID, n), req, &grant); err != nil {
		return protocol.Grant{}, err
	}
	if grant.URL == "" || !strings.EqualFold(grant.Method, method) {
		return protocol.Grant{}, fmt.Errorf("segment grant: agent API answered a grant for %q without a URL or for another method than %s", grant.Method, method)
	}
	return grant, nil
}

func (g *backupGranter) SegmentDone(ctx context.Context, n int, r protocol.SegmentReport) error {
	return g.a.backupCall(ctx, "segment report", backupPath(protocol.PathSegmentDone, g.backupID, n), r, nil)
}

func (g *backupGranter) Client() *http.Client { return g.client }

// backupProgress reports the estimated size of a backup's stream.
func (a *Agent) backupProgress(ctx context.Context, backupID string, estimated int64) error {
	return a.backupCall(ctx, "backup progress", backupPath(protocol.PathBackupProgress, backupID, 0), protocol.BackupProgress{EstimatedBytes: estimated}, nil)
}

func backupPath(pattern, backupID string, n int) string {
	return strings.NewReplacer("{id}", url.PathEscape(backupID), "{n}", strconv.Itoa(n)).Replace(pattern)
}

// backupCall posts body to path and decodes the answer into out (when not
// nil), retrying what may succeed later: network errors, 5xx, 408, 429,
// and 401/403 after re-reading the credential. Another 4xx (404: the
// backup is no longer this instance's to take) fails at once.
func (a *Agent) backupCall(ctx context.Context, op, path string, body, out any) error {
	bo := a.newBackoff()
	for attempt := 1; ; attempt++ {
		c := a.conn.Load()
		err := a.postJSON(ctx, c, op, path, body, out)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return err
		}
		var se *statusError
		if errors.As(err, &se) {
			if se.permanent() {
				return err
			}
			if se.unauthorized() {
				a.refreshCredential()
			}
		}
		if attempt >= backupCallAttempts {
			return fmt.Errorf("%w (gave up after %d attempts)", err, attempt)
		}
		if a.conn.Load() != c {
			continue // reloaded: try the new settings at once
		}
		d := bo.next()
		a.logger.Warn(op+" failed; backing off", "error", err, "retry_in", d.Round(time.Millisecond))
		if !a.sleep(ctx, d) {
			return err
		}
	}
}

// postJSON is post that also decodes a JSON answer into out.
func (a *Agent) postJSON(ctx context.Context, c *conn, op, path string, body, out any) error {
	ctx, cancel := context.WithTimeout(ctx, a.requestTimeout)
	defer cancel()
	req, err := c.newRequest(ctx, http.MethodPost, path, body)
	if err != nil {
		return err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	defer drainClose(resp.Body)
	if resp.StatusCode/100 != 2 {
		return newStatusError(op, resp)
	}
	if out != nil {
		// The answer may hold a grant URL: the error names the problem,
		// never the content.
		if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(out); err != nil {
			return fmt.Errorf("%s: decode answer: %w", op, err)
		}
	}
	return nil
}

// objectClient returns the HTTP client for grant URLs. It trusts the
// system roots (S3 and Swift endpoints) and the agent API's CA (the
// embedded file store's grants point at the agent API). HTTP/2 stays off:
// parallel uploads then each get their own connection, instead of sharing
// one TCP connection's window.
func (a *Agent) objectClient(parallel int) (*http.Client, error) {
	cfg := a.conn.Load().cfg
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		a.logger.Warn("system certificate pool unavailable; grant URLs must use the agent API's CA", "error", err)
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM([]byte(cfg.CACert)) {
		return nil, errors.New("ca_cert: no valid PEM certificate found")
	}
	transport := &http.Transport{
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
		// Counted from the end of the request body: a store that takes a
		// whole segment and then says nothing is broken.
		ResponseHeaderTimeout: 2 * time.Minute,
		MaxIdleConnsPerHost:   max(parallel, 2),
		IdleConnTimeout:       90 * time.Second,
	}
	// No client Timeout: a segment on a slow link legitimately takes
	// long; the command's deadline bounds everything.
	return &http.Client{Transport: transport}, nil
}

// backupLogger is the logger for one backup's messages.
func (a *Agent) backupLogger(backupID string) *slog.Logger {
	return a.logger.With("backup_id", backupID)
}

var _ backupstream.Granter = (*backupGranter)(nil)
