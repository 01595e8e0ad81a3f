// Command coffer-worker runs the River workers that carry out lifecycle
// jobs. Scale it on queue depth (see deploy/).
package main

import (
	"os"

	"github.com/coffer-dbaas/coffer/internal/controlplane"
)

func main() { os.Exit(controlplane.Main(controlplane.Roles{Worker: true})) }
