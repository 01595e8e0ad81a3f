package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// maxCommandBytes bounds a command's body. Commands carry settings and
// small files (configuration contents), never data.
const maxCommandBytes = 8 << 20

// pollLoop long-polls for commands and executes them one at a time until
// ctx ends. Polling stops while a command runs: the server leases one
// command per delivery and there is no second one to take meanwhile.
func (a *Agent) pollLoop(ctx context.Context) {
	bo := a.newBackoff()
	for ctx.Err() == nil {
		c := a.conn.Load()
		cmd, err := a.poll(ctx, c)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			var se *statusError
			if errors.As(err, &se) && se.unauthorized() {
				a.refreshCredential()
			}
			if a.conn.Load() != c {
				// Reloaded (here, by the heartbeat loop, or on SIGHUP)
				// while the request was out: try the new settings at once.
				a.logger.Info("poll for commands failed; retrying with the reloaded configuration", "error", err)
				continue
			}
			d := bo.next()
			a.logger.Warn("poll for commands failed; backing off", "error", err, "retry_in", d.Round(time.Millisecond))
			if !a.sleep(ctx, d) {
				return
			}
			continue
		}
		bo.reset()
		if cmd != nil {
			a.handle(ctx, *cmd)
		}
	}
}

// poll makes one long-poll request and returns the command delivered, or
// nil when the wait ran out without one.
func (a *Agent) poll(ctx context.Context, c *conn) (*protocol.Command, error) {
	wait := a.pollWait()
	ctx, cancel := context.WithTimeout(ctx, wait+a.pollTimeoutMargin)
	defer cancel()

	path := protocol.PathCommands + "?wait=" + strconv.Itoa(int(wait/time.Second))
	req, err := c.newRequest(ctx, http.MethodGet, path, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("poll commands: %w", err)
	}
	defer drainClose(resp.Body)

	switch resp.StatusCode {
	case http.StatusNoContent:
		return nil, nil
	case http.StatusOK:
		var cmd protocol.Command
		dec := json.NewDecoder(io.LimitReader(resp.Body, maxCommandBytes))
		if err := dec.Decode(&cmd); err != nil {
			return nil, fmt.Errorf("poll commands: decode command: %w", err)
		}
		if cmd.ID == "" || cmd.Name == "" {
			// Without an id there is nowhere to post a result; the lease
			// will expire and the server will try again.
			return nil, fmt.Errorf("poll commands: command without id or name (id %q, name %q)", cmd.ID, cmd.Name)
		}
		return &cmd, nil
	default:
		return nil, newStatusError("poll commands", resp)
	}
}

// pollWait picks the long-poll's wait: whole seconds, uniformly within the
// configured bounds, never above what the server grants.
func (a *Agent) pollWait() time.Duration {
	lo := int(min(a.pollWaitMin, protocol.MaxWait) / time.Second)
	hi := int(min(a.pollWaitMax, protocol.MaxWait) / time.Second)
	if hi <= lo {
		return time.Duration(lo) * time.Second
	}
	return time.Duration(lo+rand.IntN(hi-lo+1)) * time.Second
}

// uncachedResults are the commands whose results are not remembered: they
// only read, so running one again gives the same answer, and their results
// are large (a guest log chunk is up to 512 KiB).
var uncachedResults = map[string]bool{protocol.CommandGuestLogRead: true}

// handle executes cmd, or recalls its result if it already ran, and posts
// the result.
func (a *Agent) handle(ctx context.Context, cmd protocol.Command) {
	log := a.logger.With("command_id", cmd.ID, "command", cmd.Name, "attempt", cmd.Attempt)

	res, ok := a.results.get(cmd.ID)
	if ok {
		// Delivered again: the server did not get (or lost) the result, or
		// the lease ran out. Executing again is safe but may be slow; the
		// stored answer is the same.
		log.Info("command already completed; posting its result again")
	} else {
		res, ok = a.execute(ctx, log, cmd)
		if !ok {
			// Interrupted by shutdown: no result is better than a false
			// one. The lease will expire and the command come back.
			return
		}
		if !uncachedResults[cmd.Name] {
			a.results.put(cmd.ID, res)
		}
	}

	if err := a.postResult(ctx, log, cmd.ID, res); err != nil && ctx.Err() == nil {
		log.Error("result not delivered", "error", err)
	}
	select {
	case a.beatNow <- struct{}{}:
	default: // one is already due
	}
}

// postResult posts res until the server takes it, ctx ends, or the server
// says it never will (e.g. 404: the command was cancelled meanwhile). The
// server treats a repeated result as a no-op, so retrying is always safe.
func (a *Agent) postResult(ctx context.Context, log *slog.Logger, id string, res protocol.Result) error {
	path := strings.Replace(protocol.PathResult, "{id}", url.PathEscape(id), 1)
	bo := a.newBackoff()
	for {
		c := a.conn.Load()
		err := a.post(ctx, c, "post result", path, res)
		if err == nil {
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
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
		if a.conn.Load() != c {
			log.Info("post result failed; retrying with the reloaded configuration", "error", err)
			continue
		}
		d := bo.next()
		log.Warn("post result failed; backing off", "error", err, "retry_in", d.Round(time.Millisecond))
		if !a.sleep(ctx, d) {
			return ctx.Err()
		}
	}
}
