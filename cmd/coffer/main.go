// Command coffer is Coffer's all-in-one binary. `coffer run` brings up a
// complete DBaaS on one machine: an embedded control-plane PostgreSQL, the
// public API, the agent API (TLS), the workers and the local provider,
// whose instances run this same binary as their guest agent
// (`coffer agent`). `coffer openapi` prints the API's OpenAPI document.
package main

import (
	"fmt"
	"os"

	"github.com/coffer-dbaas/coffer/agent/agentcmd"
	"github.com/coffer-dbaas/coffer/functions"
	"github.com/coffer-dbaas/coffer/internal/controlplane"
)

const usage = `usage: coffer <command>

commands:
  run       all-in-one: API, agent API, workers and local provider (embedded default)
  api       public API and agent API only
  worker    River workers only
  agent     guest agent (started by providers on database hosts)
  openapi   print the OpenAPI document (YAML; -json for JSON, -3.0 for the 3.0 downgrade)
  version   print the version
Configuration comes from COFFER_* environment variables; see README.md.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "run":
		os.Exit(controlplane.Main(controlplane.Roles{API: true, Worker: true, Seed: true}))
	case "api":
		os.Exit(controlplane.Main(controlplane.Roles{API: true}))
	case "worker":
		os.Exit(controlplane.Main(controlplane.Roles{Worker: true}))
	case "agent":
		os.Exit(agentcmd.Main(args))
	case "openapi":
		os.Exit(printSpec(args))
	case "version":
		fmt.Println(functions.Version)
	default:
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
}

func printSpec(args []string) int {
	spec := functions.Spec()
	var out []byte
	var err error
	json, v30 := false, false
	for _, a := range args {
		switch a {
		case "-json":
			json = true
		case "-3.0":
			v30 = true
		default:
			fmt.Fprintf(os.Stderr, "openapi: unknown flag %s\n", a)
			return 2
		}
	}
	switch {
	case v30 && json:
		out, err = spec.Downgrade()
	case v30:
		out, err = spec.DowngradeYAML()
	case json:
		out, err = spec.MarshalJSON()
	default:
		out, err = spec.YAML()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "openapi:", err)
		return 1
	}
	os.Stdout.Write(out)
	return 0
}
