package jobs

import (
	"strings"

	"github.com/coffer-dbaas/coffer/internal/objectstore"
)

// StoreAt returns the store of the backup location named location: from
// reg when the process has one, else def when location is the deployment's
// (Backups().Location) — a process with one store, as before copy
// locations existed.
func StoreAt(reg *objectstore.Registry, def objectstore.Store, location string) (objectstore.Store, bool) {
	if reg != nil {
		l, ok := reg.Get(location)
		return l.Store, ok
	}
	if def == nil || location != Backups().Location {
		return nil, false
	}
	return def, true
}

// locationNames lists the configured locations for messages.
func locationNames(reg *objectstore.Registry) string {
	if reg == nil {
		return Backups().Location
	}
	return strings.Join(reg.Names(), ", ")
}
