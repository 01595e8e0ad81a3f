package functions

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
)

// knownProjects remembers which projects this process has already made
// sure of, per Deps (tests run several APIs on different databases in one
// process), so the insert runs once per project and process, not per
// request. Bounded: past maxKnownProjects it starts over, which costs one
// cheap insert per project again.
var (
	knownProjects    sync.Map // projectKey → struct{}
	knownProjectsLen atomic.Int64
)

const maxKnownProjects = 100000

type projectKey struct {
	deps *Deps
	id   string
}

// ensureProject makes sure the caller's project has its row. With Keystone
// a project is first seen when one of its users calls the API; rows
// (instances, quotas, ...) reference project.id. With built-in tokens the
// row exists already and the insert does nothing.
func (d *Deps) ensureProject(ctx context.Context, id string) error {
	key := projectKey{d, id}
	if _, ok := knownProjects.Load(key); ok {
		return nil
	}
	if err := d.queries().EnsureProject(ctx, id); err != nil {
		return fmt.Errorf("record project %s: %w", id, err)
	}
	if knownProjectsLen.Add(1) > maxKnownProjects {
		knownProjects.Clear()
		knownProjectsLen.Store(1)
	}
	knownProjects.Store(key, struct{}{})
	return nil
}
