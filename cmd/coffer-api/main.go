// Command coffer-api serves the public API and the agent API. Run any
// number of replicas against one control-plane database.
package main

import (
	"os"

	"github.com/coffer-dbaas/coffer/internal/controlplane"
)

func main() { os.Exit(controlplane.Main(controlplane.Roles{API: true})) }
