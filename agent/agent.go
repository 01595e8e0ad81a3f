// Package agent is the guest agent's runtime: the process that runs next to
// one datastore (on its VM, or on this host under the local provider),
// pulls commands from the control plane's agent API and executes them
// through a datastore driver.
//
// The agent only ever makes outbound HTTPS requests (see package protocol):
// it long-polls for its next command, posts each command's result, and
// posts a heartbeat with the datastore's status and volume usage every
// interval. It trusts only the CA named in its configuration and identifies
// itself with its per-instance bearer token.
//
// Delivery is at least once. The agent executes one command at a time,
// remembers the results of recently completed commands so that a command
// delivered again is answered without being executed again, and retries a
// result until the server takes it. Stopping the agent never stops the
// datastore: an agent restart or upgrade must not take the database down.
package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Defaults of the timing knobs. Each lives in an unexported Agent field so
// that tests can shrink it.
const (
	// A fleet of agents restarted together (a control plane upgrade, a
	// network blip) must not keep polling in lockstep, so every long-poll
	// asks for a random wait in this range, within protocol.MaxWait.
	defaultPollWaitMin = 25 * time.Second
	defaultPollWaitMax = 55 * time.Second
	// The long-poll's client timeout is its wait plus this margin, for the
	// server's own lateness and the network.
	defaultPollTimeoutMargin = 15 * time.Second

	defaultBackoffMin = 250 * time.Millisecond
	defaultBackoffMax = 30 * time.Second

	defaultHeartbeatSeconds = 15
	// Timeout of one heartbeat or result request.
	defaultRequestTimeout = 15 * time.Second
	// Timeout of the driver's Status and VolumeUsage calls: a heartbeat
	// must go out even when the datastore is wedged.
	defaultProbeTimeout = 10 * time.Second
	// Bounds the start-up EnsureRunning; crash recovery of a big database
	// can take minutes, but not forever.
	defaultEnsureRunningTimeout = 10 * time.Minute

	// Deadline of a command whose lease is unknown (LeaseSeconds <= 0).
	defaultCommandTimeout = 5 * time.Minute
	// A command must end, and its result be on its way, before its lease
	// expires and the server hands it out again: the deadline is the lease
	// minus a tenth of it, at most this much.
	maxLeaseMargin = 10 * time.Second

	// How many completed commands the agent remembers. Redeliveries come
	// soon after the first delivery (lease expiry, a lost result), so a
	// short memory is enough.
	defaultResultCacheSize = 100
)

// ConfigSource returns the agent's current configuration. The agent calls
// it when the API rejects its credential (401/403): the provider may have
// rotated the token in the configuration file.
type ConfigSource func() (protocol.AgentConfig, error)

// Option configures an Agent.
type Option func(*Agent)

// WithConfigSource makes the agent re-read its configuration from src when
// the agent API answers 401 or 403, and apply it as Reload does. Without a
// source the agent keeps its credential and only backs off. Main passes a
// source that re-reads the configuration file.
func WithConfigSource(src ConfigSource) Option {
	return func(a *Agent) { a.source = src }
}

// Agent is the guest agent. Create it with New and start it with Run.
type Agent struct {
	drv    driver.Driver
	logger *slog.Logger
	source ConfigSource

	// reloadMu serialises Reload; conn is read without it.
	reloadMu sync.Mutex
	conn     atomic.Pointer[conn]

	running atomic.Bool

	// handlers maps a command name to the code that executes it.
	handlers map[string]handler
	// results remembers recently completed commands; only the poll loop
	// touches it.
	results *resultCache
	// beatNow asks for a heartbeat at once: after a command, the status
	// and volume use it changed should not wait for the next interval.
	beatNow chan struct{}

	// Timing knobs; see the defaults above. Tests set them before Run.
	pollWaitMin          time.Duration
	pollWaitMax          time.Duration
	pollTimeoutMargin    time.Duration
	backoffMin           time.Duration
	backoffMax           time.Duration
	heartbeatInterval    time.Duration // when > 0, overrides the config's HeartbeatSeconds
	requestTimeout       time.Duration
	probeTimeout         time.Duration
	ensureRunningTimeout time.Duration
}

// New returns an agent that reaches the agent API described by cfg and
// executes commands with drv. The driver must tolerate Status and
// VolumeUsage (heartbeats) running concurrently with the command at hand.
func New(cfg protocol.AgentConfig, drv driver.Driver, logger *slog.Logger, opts ...Option) (*Agent, error) {
	if drv == nil {
		return nil, errors.New("agent: driver is nil")
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	c, err := newConn(cfg)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}

	a := &Agent{
		beatNow:              make(chan struct{}, 1),
		drv:                  drv,
		logger:               logger.With("instance_id", cfg.InstanceID),
		results:              newResultCache(defaultResultCacheSize),
		pollWaitMin:          defaultPollWaitMin,
		pollWaitMax:          defaultPollWaitMax,
		pollTimeoutMargin:    defaultPollTimeoutMargin,
		backoffMin:           defaultBackoffMin,
		backoffMax:           defaultBackoffMax,
		requestTimeout:       defaultRequestTimeout,
		probeTimeout:         defaultProbeTimeout,
		ensureRunningTimeout: defaultEnsureRunningTimeout,
	}
	a.conn.Store(c)
	a.handlers = a.defaultHandlers()
	for _, opt := range opts {
		opt(a)
	}
	return a, nil
}

// Run runs the agent until ctx is cancelled, then returns nil. It returns
// an error only when it cannot start (a second Run, an unwritable PID
// file). Failures to reach the API are logged and retried, never returned.
//
// Run does not stop the datastore when it returns.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errors.New("agent: Run called more than once")
	}

	cfg := a.conn.Load().cfg
	if cfg.PIDFile != "" {
		if err := writePIDFile(cfg.PIDFile); err != nil {
			return fmt.Errorf("agent: %w", err)
		}
		defer func() {
			if err := removePIDFile(cfg.PIDFile); err != nil {
				a.logger.Warn("remove PID file", "path", cfg.PIDFile, "error", err)
			}
		}()
	}

	a.logger.Info("agent starting", "version", agentVersion(), "api_url", cfg.APIURL, "datastore", cfg.Datastore)

	// Heartbeats start at once and run beside everything else: liveness
	// must not wait for a slow datastore start or a long command.
	var wg sync.WaitGroup
	wg.Go(func() { a.heartbeatLoop(ctx) })

	// Bring a prepared datastore back up (host or agent restart) before
	// taking commands, so the two never act on the datastore at once.
	a.ensureRunning(ctx)
	a.pollLoop(ctx)

	wg.Wait()
	a.logger.Info("agent stopped; the datastore keeps running")
	return nil
}

func (a *Agent) ensureRunning(ctx context.Context) {
	ctx, cancel := context.WithTimeout(ctx, a.ensureRunningTimeout)
	defer cancel()
	if err := a.drv.EnsureRunning(ctx); err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			return // shutting down
		}
		a.logger.Error("ensure datastore running", "error", err)
	}
}

// Reload applies a new configuration: the token, the CA and the API URL
// take effect from the next request (a long-poll in flight finishes with
// the old ones), the heartbeat interval from the next tick. Main calls it
// on SIGHUP. Other fields (datastore, data directory, listen address…)
// belong to the driver and take effect when the agent restarts.
//
// A configuration for another instance, or one that does not validate, is
// refused and the current one stays.
func (a *Agent) Reload(cfg protocol.AgentConfig) error {
	_, err := a.reload(cfg)
	return err
}

// reload is Reload that also reports whether the connection settings
// changed (an identical configuration replaces nothing and wakes no one).
func (a *Agent) reload(cfg protocol.AgentConfig) (changed bool, err error) {
	a.reloadMu.Lock()
	defer a.reloadMu.Unlock()

	old := a.conn.Load()
	if cfg.InstanceID != old.cfg.InstanceID {
		return false, fmt.Errorf("agent: reload: configuration is for instance %q, this agent serves %q", cfg.InstanceID, old.cfg.InstanceID)
	}
	if !sameConnection(old.cfg, cfg) {
		c, err := newConn(cfg)
		if err != nil {
			return false, fmt.Errorf("agent: reload: %w", err)
		}
		a.conn.Store(c)
		old.client.CloseIdleConnections()
		// Wake loops sleeping in a backoff: the new settings may work.
		close(old.changed)
		changed = true
		// Say what changed, never to what: one of these is the token.
		a.logger.Info("configuration reloaded",
			"api_url_changed", old.cfg.APIURL != cfg.APIURL,
			"ca_changed", old.cfg.CACert != cfg.CACert,
			"token_changed", old.cfg.Token != cfg.Token,
			"heartbeat_seconds", cfg.HeartbeatSeconds)
	}
	if restartOnlyChanged(old.cfg, cfg) {
		a.logger.Warn("configuration changes to the datastore settings take effect when the agent restarts")
	}
	return changed, nil
}

// refreshCredential re-reads the configuration after the API rejected the
// credential. Callers see whether it changed by comparing a.conn.
func (a *Agent) refreshCredential() {
	if a.source == nil {
		return
	}
	cfg, err := a.source()
	if err != nil {
		a.logger.Error("re-read configuration after authentication failure", "error", err)
		return
	}
	if _, err := a.reload(cfg); err != nil {
		a.logger.Error("apply configuration after authentication failure", "error", err)
	}
}

func sameConnection(x, y protocol.AgentConfig) bool {
	return x.APIURL == y.APIURL && x.CACert == y.CACert && x.Token == y.Token &&
		x.HeartbeatSeconds == y.HeartbeatSeconds
}

func restartOnlyChanged(x, y protocol.AgentConfig) bool {
	return x.Datastore != y.Datastore || x.DataDir != y.DataDir ||
		x.ListenAddress != y.ListenAddress || x.Port != y.Port ||
		x.RunAsUser != y.RunAsUser || x.PIDFile != y.PIDFile
}

// heartbeatEvery is the interval between heartbeats.
func (a *Agent) heartbeatEvery() time.Duration {
	if a.heartbeatInterval > 0 {
		return a.heartbeatInterval
	}
	if s := a.conn.Load().cfg.HeartbeatSeconds; s > 0 {
		return time.Duration(s) * time.Second
	}
	return defaultHeartbeatSeconds * time.Second
}
