package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"time"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// handler executes one kind of command. Its error text goes to the control
// plane verbatim, so it must not contain secrets: handlers never wrap the
// payload into an error.
type handler func(ctx context.Context, payload json.RawMessage) (output json.RawMessage, err error)

// defaultHandlers is the dispatch table: one entry per protocol command.
func (a *Agent) defaultHandlers() map[string]handler {
	h := a.extendedHandlers()
	maps.Copy(h, a.mgmtHandlers())
	maps.Copy(h, a.moduleHandlers())
	h[protocol.CommandPrepare] = a.prepare
	h[protocol.CommandBackup] = commandHandler(a.backup)
	h[protocol.CommandPruneWAL] = commandHandler(a.pruneWAL)
	return h
}

func (a *Agent) prepare(ctx context.Context, payload json.RawMessage) (json.RawMessage, error) {
	var req protocol.PrepareRequest
	if err := decodePayload(payload, &req); err != nil {
		return nil, err
	}
	if req.Restore != nil {
		if err := a.restore(ctx, req); err != nil {
			return nil, err
		}
	}
	return nil, a.drv.Prepare(ctx, withoutDataKeys(req))
}

// decodePayload unmarshals a command's payload. encoding/json's errors
// name types, fields and offsets, not values, so they are safe to report.
func decodePayload(payload json.RawMessage, v any) error {
	if len(payload) == 0 {
		payload = json.RawMessage("{}")
	}
	if err := json.Unmarshal(payload, v); err != nil {
		return fmt.Errorf("decode payload: %w", err)
	}
	return nil
}

// commandTimeout is the deadline of a command with the given lease: the
// command must finish and its result leave before the lease expires, or
// the server would hand it out again while it still runs.
func commandTimeout(leaseSeconds int) time.Duration {
	lease := time.Duration(leaseSeconds) * time.Second
	if lease <= 0 {
		return defaultCommandTimeout
	}
	return lease - min(lease/10, maxLeaseMargin)
}

// execute runs cmd and returns its result. ok is false when the agent is
// shutting down and the command was interrupted: that outcome says nothing
// about the command and must not be reported.
func (a *Agent) execute(ctx context.Context, log *slog.Logger, cmd protocol.Command) (res protocol.Result, ok bool) {
	timeout := commandTimeout(cmd.LeaseSeconds)
	log.Info("executing command", "timeout", timeout)
	start := time.Now()

	var output json.RawMessage
	var err error
	h, known := a.handlers[cmd.Name]
	if !known {
		err = fmt.Errorf("unknown command %s", cmd.Name)
	} else {
		cctx, cancel := context.WithTimeout(ctx, timeout)
		output, err = runHandler(cctx, log, cmd.Name, h, cmd.Payload)
		if err != nil && errors.Is(cctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil {
			err = fmt.Errorf("%s did not finish within %s (lease %ds): %w", cmd.Name, timeout, cmd.LeaseSeconds, err)
		}
		cancel()
	}
	if ctx.Err() != nil {
		log.Info("command interrupted by shutdown; the server will deliver it again")
		return protocol.Result{}, false
	}

	res = protocol.Result{
		OK:            err == nil,
		Output:        output,
		ServiceStatus: a.serviceStatus(ctx),
	}
	if err != nil {
		res.Error = err.Error()
		log.Warn("command failed", "duration", time.Since(start).Round(time.Millisecond), "error", res.Error, "service_status", res.ServiceStatus)
	} else {
		log.Info("command succeeded", "duration", time.Since(start).Round(time.Millisecond), "service_status", res.ServiceStatus)
	}
	return res, true
}

// runHandler calls h, turning a panic into a failed command: a bug in one
// driver operation must not take the agent, and so the instance's
// heartbeats, down with it.
func runHandler(ctx context.Context, log *slog.Logger, name string, h handler, payload json.RawMessage) (output json.RawMessage, err error) {
	defer func() {
		if p := recover(); p != nil {
			log.Error("command handler panicked", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
			output, err = nil, fmt.Errorf("internal error: %s handler panicked", name)
		}
	}()
	return h(ctx, payload)
}

// resultCache remembers the results of the last size completed commands,
// evicting the oldest first.
type resultCache struct {
	size  int
	order []string // ids, oldest first
	byID  map[string]protocol.Result
}

func newResultCache(size int) *resultCache {
	return &resultCache{size: size, byID: make(map[string]protocol.Result, size)}
}

func (c *resultCache) get(id string) (protocol.Result, bool) {
	r, ok := c.byID[id]
	return r, ok
}

func (c *resultCache) put(id string, r protocol.Result) {
	if _, ok := c.byID[id]; !ok {
		if len(c.order) >= c.size {
			delete(c.byID, c.order[0])
			c.order = c.order[1:]
		}
		c.order = append(c.order, id)
	}
	c.byID[id] = r
}
