// Command coffer-agent is the guest agent: it runs next to one datastore,
// pulls commands from the control plane over HTTPS and reports heartbeats.
//
//	coffer-agent [-config /etc/coffer/agent.json] [-log-level info] [-version]
//
// SIGINT and SIGTERM stop the agent and leave the datastore running; SIGHUP
// re-reads the configuration file (e.g. after a credential rotation).
package main

import (
	"os"

	"github.com/coffer-dbaas/coffer/agent/agentcmd"
)

func main() {
	os.Exit(agentcmd.Main(os.Args[1:]))
}
