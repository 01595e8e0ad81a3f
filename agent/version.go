package agent

import "runtime/debug"

// Version is the agent's version, reported in heartbeats and in the
// User-Agent header. Release builds set it with
//
//	-ldflags "-X github.com/coffer-dbaas/coffer/agent.Version=v1.2.3"
//
// Left empty, the module version from the build information is used, so
// that the control plane can still tell agent builds apart.
var Version = ""

func agentVersion() string {
	if Version != "" {
		return Version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

func userAgent() string {
	return "coffer-agent/" + agentVersion()
}
