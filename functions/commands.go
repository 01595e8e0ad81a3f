package functions

import (
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// actionable is Trove's "action-able" check (API §5.4), shared with the
// jobs that start backups (jobs.Actionable).
func actionable(i store.Instance) *openapi.Fault { return jobs.Actionable(i) }
