// Package local is the provider that runs instances on this machine, for
// development and the all-in-one: an instance's "server" is a directory
// (its "volume") and the guest agent process, which starts the datastore
// itself. Each instance gets its own loopback address (127.10.x.y by
// default; all of 127.0.0.0/8 is routed to lo on Linux) and its datastore
// listens there on the engine's standard port, so clients connect exactly as
// they would to a VM.
//
// Layout of <Root>/<instance id>/:
//
//	agent.json  the agent's configuration (0600: it holds the credential)
//	agent.pid   the agent's pid, written by the provider and by the agent
//	agent.log   the agent's stdout and stderr
//	address     the instance's loopback address
//	volume/     the datastore's files (the agent's DataDir)
//
// Agents are started in their own session and are not tied to the worker
// that started them: they keep running when it exits or restarts, and any
// worker finds them again through agent.pid. (Under systemd the worker's
// unit needs KillMode=process, or stopping it kills every agent in its
// cgroup.)
//
// The agent must handle SIGHUP by re-reading its configuration (CreateServer
// sends it when an agent already runs, because the credential may have been
// rotated) and SIGTERM by exiting, leaving the datastore running; the
// provider stops the datastore itself on delete.
package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/provider"

	"github.com/coffer-dbaas/coffer/internal/atomicfile"
)

// Config configures the local provider.
type Config struct {
	// Root is where instance directories live. It is created 0755: a
	// datastore may run as another OS user and must traverse it.
	Root string
	// AgentCommand is the argv prefix that starts an agent; the provider
	// appends "-config", "<dir>/agent.json". E.g.
	// {"/usr/local/bin/coffer-agent"} or {os.Executable(), "agent"}.
	AgentCommand []string
	// Env is added to the provider's own environment for the agent.
	Env []string
	// AddressPrefix is the loopback /16 addresses are allocated from
	// (default "127.10": 127.10.0.2 … 127.10.255.254).
	AddressPrefix string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Provider runs instances as processes on this machine. It keeps no state
// in memory: everything lives under Root, so any number of Providers, in
// any number of processes, may work on the same Root.
type Provider struct {
	root    string
	command []string
	env     []string
	prefix  [2]byte
	logger  *slog.Logger
}

var _ provider.Provider = (*Provider)(nil)

// New checks cfg and creates Root.
func New(cfg Config) (*Provider, error) {
	if cfg.Root == "" {
		return nil, errors.New("local provider: Root is required")
	}
	if len(cfg.AgentCommand) == 0 || cfg.AgentCommand[0] == "" {
		return nil, errors.New("local provider: AgentCommand is required")
	}
	if cfg.AddressPrefix == "" {
		cfg.AddressPrefix = "127.10"
	}
	prefix, err := parsePrefix(cfg.AddressPrefix)
	if err != nil {
		return nil, fmt.Errorf("local provider: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if err := os.MkdirAll(cfg.Root, 0o755); err != nil {
		return nil, fmt.Errorf("local provider: create root: %w", err)
	}
	// MkdirAll is subject to the umask, and Root may have existed.
	if err := os.Chmod(cfg.Root, 0o755); err != nil {
		return nil, fmt.Errorf("local provider: create root: %w", err)
	}
	// /proc reports working directories with symlinks resolved; compare
	// like with like.
	root, err := absDir(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("local provider: resolve root: %w", err)
	}
	if err := os.MkdirAll(filepath.Join(root, addressesDir), 0o755); err != nil {
		return nil, fmt.Errorf("local provider: create address claims: %w", err)
	}
	return &Provider{
		root:    root,
		command: append([]string(nil), cfg.AgentCommand...),
		env:     append([]string(nil), cfg.Env...),
		prefix:  prefix,
		logger:  cfg.Logger,
	}, nil
}

// Name is "local".
func (p *Provider) Name() string { return "local" }

// dir returns the instance's directory, refusing ids that are not a plain
// file name (the id becomes a path, and "." names are the provider's own).
func (p *Provider) dir(instanceID string) (string, error) {
	if instanceID == "" || len(instanceID) > 128 || strings.HasPrefix(instanceID, ".") ||
		strings.IndexFunc(instanceID, func(r rune) bool {
			return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.')
		}) >= 0 {
		return "", fmt.Errorf("invalid instance id %q", instanceID)
	}
	return filepath.Join(p.root, instanceID), nil
}

// CreateServer makes the instance's directory, address and configuration
// and makes sure its agent runs with that configuration: a running agent is
// told to reload it, a missing one is started. Safe to call again, and
// concurrently, from any worker.
func (p *Provider) CreateServer(ctx context.Context, spec provider.ServerSpec) (provider.Server, error) {
	srv, err := p.createServer(ctx, spec)
	if err != nil {
		return provider.Server{}, fmt.Errorf("create server %s: %w", spec.InstanceID, err)
	}
	return srv, nil
}

func (p *Provider) createServer(ctx context.Context, spec provider.ServerSpec) (provider.Server, error) {
	dir, err := p.dir(spec.InstanceID)
	if err != nil {
		return provider.Server{}, err
	}
	datastore := spec.Datastore
	if datastore == "" {
		datastore = spec.Agent.Datastore
	}
	port := protocol.DefaultPort(datastore)
	if port == 0 {
		return provider.Server{}, fmt.Errorf("no standard port for datastore %q", datastore)
	}
	if spec.Agent.InstanceID != "" && spec.Agent.InstanceID != spec.InstanceID {
		return provider.Server{}, fmt.Errorf("agent configuration is for instance %s", spec.Agent.InstanceID)
	}

	lock, err := lockInstance(ctx, dir, true)
	if err != nil {
		return provider.Server{}, err
	}
	defer lock.unlock()

	volume := filepath.Join(dir, "volume")
	if err := os.Mkdir(volume, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return provider.Server{}, fmt.Errorf("create volume: %w", err)
	}
	if err := os.Chmod(volume, 0o755); err != nil {
		return provider.Server{}, fmt.Errorf("create volume: %w", err)
	}
	ip, err := p.allocate(spec.InstanceID, dir, port)
	if err != nil {
		return provider.Server{}, err
	}

	cfg := spec.Agent
	cfg.InstanceID = spec.InstanceID
	cfg.Datastore = datastore
	cfg.DataDir = volume
	cfg.ListenAddress = ip
	cfg.Port = port
	cfg.PIDFile = filepath.Join(dir, "agent.pid")
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return provider.Server{}, fmt.Errorf("encode agent configuration: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "agent.json"), append(b, '\n'), 0o600); err != nil {
		return provider.Server{}, fmt.Errorf("write agent configuration: %w", err)
	}

	pid, started, err := p.ensureAgent(ctx, dir)
	if err != nil {
		return provider.Server{}, err
	}
	if started {
		p.logger.InfoContext(ctx, "local provider: agent started", "instance_id", spec.InstanceID, "pid", pid, "address", ip, "port", port)
	} else {
		p.logger.InfoContext(ctx, "local provider: agent reloaded", "instance_id", spec.InstanceID, "pid", pid)
	}
	return provider.Server{ID: spec.InstanceID, Status: provider.StatusActive, Address: ip, Port: port}, nil
}

// GetServer reports the instance's address and whether its agent runs
// (ACTIVE) or not (SHUTDOWN).
func (p *Provider) GetServer(ctx context.Context, instanceID string) (provider.Server, error) {
	dir, err := p.dir(instanceID)
	if err != nil {
		return provider.Server{}, fmt.Errorf("get server %s: %w", instanceID, err)
	}
	if _, err := os.Stat(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return provider.Server{}, fmt.Errorf("get server %s: %w", instanceID, provider.ErrNotFound)
		}
		return provider.Server{}, fmt.Errorf("get server %s: %w", instanceID, err)
	}
	srv := provider.Server{ID: instanceID, Status: provider.StatusShutdown}
	// The configuration is absent while a first CreateServer is half done;
	// the server then has no address yet.
	if b, err := os.ReadFile(filepath.Join(dir, "agent.json")); err == nil {
		var cfg protocol.AgentConfig
		if err := json.Unmarshal(b, &cfg); err != nil {
			return provider.Server{}, fmt.Errorf("get server %s: decode agent configuration: %w", instanceID, err)
		}
		srv.Address, srv.Port = cfg.ListenAddress, cfg.Port
	}
	pid, err := p.runningAgent(dir)
	if err != nil {
		return provider.Server{}, fmt.Errorf("get server %s: %w", instanceID, err)
	}
	if pid != 0 {
		srv.Status = provider.StatusActive
	}
	return srv, nil
}

// DeleteServer stops the agent and every process of the instance, removes
// its directory and releases its address. Deleting an instance that has no
// directory succeeds.
func (p *Provider) DeleteServer(ctx context.Context, instanceID string) error {
	if err := p.deleteServer(ctx, instanceID); err != nil {
		return fmt.Errorf("delete server %s: %w", instanceID, err)
	}
	return nil
}

func (p *Provider) deleteServer(ctx context.Context, instanceID string) error {
	dir, err := p.dir(instanceID)
	if err != nil {
		return err
	}
	lock, err := lockInstance(ctx, dir, false)
	if err != nil || lock == nil {
		return err
	}
	defer lock.unlock()

	if err := p.stopAgent(ctx, dir); err != nil {
		return fmt.Errorf("stop agent: %w", err)
	}
	if err := p.stopProcesses(ctx, dir); err != nil {
		return fmt.Errorf("stop instance processes: %w", err)
	}
	// Release before removing: a crash in between leaves the directory, so
	// a retried delete still knows the instance exists and finishes.
	if err := p.release(instanceID); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("remove directory: %w", err)
	}
	p.logger.InfoContext(ctx, "local provider: server deleted", "instance_id", instanceID)
	return nil
}
