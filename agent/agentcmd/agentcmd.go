// Package agentcmd is the guest agent's command line with the datastore
// drivers wired in. It is separate from package agent so that the agent
// runtime does not depend on any driver; both the coffer-agent binary and
// the all-in-one binary's "agent" subcommand call Main.
package agentcmd

import (
	"fmt"

	"github.com/coffer-dbaas/coffer/agent"
	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/driver/postgresql"
	"github.com/coffer-dbaas/coffer/agent/protocol"
)

// Main runs the agent with args (the arguments after the program or
// subcommand name) and returns the process exit code. See agent.Main.
func Main(args []string) int {
	return agent.Main(args, NewDriver)
}

// NewDriver builds the driver for cfg.Datastore.
func NewDriver(cfg protocol.AgentConfig) (driver.Driver, error) {
	switch cfg.Datastore {
	case "postgresql":
		d, err := postgresql.New(cfg)
		if err != nil {
			// Not "return d, err": a nil *Driver in a non-nil interface.
			return nil, fmt.Errorf("postgresql driver: %w", err)
		}
		return d, nil
	default:
		return nil, fmt.Errorf("datastore %s not supported yet", cfg.Datastore)
	}
}
