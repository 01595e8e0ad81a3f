package agentcmd

import (
	"testing"

	"github.com/coffer-dbaas/coffer/agent/protocol"
)

func TestNewDriverUnsupported(t *testing.T) {
	t.Parallel()
	d, err := NewDriver(protocol.AgentConfig{Datastore: "mariadb"})
	if d != nil || err == nil || err.Error() != "datastore mariadb not supported yet" {
		t.Errorf("NewDriver(mariadb) = %v, %v; want the not-supported error", d, err)
	}
}
