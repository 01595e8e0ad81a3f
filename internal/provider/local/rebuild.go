package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/atomicfile"
	"github.com/coffer-dbaas/coffer/internal/provider"
)

// A local "server" has no image: it is the agent process and the
// datastore it starts, both from binaries on this machine. Rebuilding it
// is what a rebuild of a VM amounts to for the instance: every process of
// the server ends (the agent, then the datastore, as a VM's shutdown
// would stop them) and a fresh agent starts on the same volume with the
// same configuration, bringing the datastore up from the data it finds
// there. The image asked for is recorded in the instance directory
// (image), for the operator's information; nothing else uses it.

var _ provider.Rebuilder = (*Provider)(nil)

// RebuildServer stops the instance's agent and datastore, records image,
// and starts the agent again.
func (p *Provider) RebuildServer(ctx context.Context, instanceID, image string) (provider.Server, error) {
	srv, err := p.rebuildServer(ctx, instanceID, image)
	if err != nil {
		return provider.Server{}, fmt.Errorf("rebuild server %s: %w", instanceID, err)
	}
	return srv, nil
}

func (p *Provider) rebuildServer(ctx context.Context, instanceID, image string) (provider.Server, error) {
	dir, err := p.dir(instanceID)
	if err != nil {
		return provider.Server{}, err
	}
	lock, err := lockInstance(ctx, dir, false)
	if err != nil {
		return provider.Server{}, err
	}
	if lock == nil {
		return provider.Server{}, provider.ErrNotFound
	}
	defer lock.unlock()
	b, err := os.ReadFile(filepath.Join(dir, "agent.json"))
	if errors.Is(err, fs.ErrNotExist) {
		return provider.Server{}, provider.ErrNotFound // never created
	}
	if err != nil {
		return provider.Server{}, fmt.Errorf("read agent configuration: %w", err)
	}
	var cfg protocol.AgentConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return provider.Server{}, fmt.Errorf("decode agent configuration: %w", err)
	}

	if err := p.stopAgent(ctx, dir); err != nil {
		return provider.Server{}, fmt.Errorf("stop agent: %w", err)
	}
	if err := p.stopProcesses(ctx, dir); err != nil {
		return provider.Server{}, fmt.Errorf("stop instance processes: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, "image"), []byte(image+"\n"), 0o644); err != nil {
		return provider.Server{}, fmt.Errorf("record image: %w", err)
	}
	pid, err := p.startAgent(dir)
	if err != nil {
		return provider.Server{}, err
	}
	p.logger.InfoContext(ctx, "local provider: server rebuilt", "instance_id", instanceID, "image", image, "pid", pid)
	return provider.Server{ID: instanceID, Status: provider.StatusActive, Address: cfg.ListenAddress, Port: cfg.Port}, nil
}
