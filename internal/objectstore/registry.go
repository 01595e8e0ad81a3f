package objectstore

import (
	"fmt"
	"sort"
)

// Location is one named object storage location: a store and the container
// backups go to in it.
type Location struct {
	// Name is recorded with each backup stored there (backup.location).
	Name      string
	Container string
	Store     Store
}

// Registry is every location a deployment can read and write backups in:
// the default one, where new backups go, and the copy locations backups may
// be copied to (COFFER_BACKUP_COPY_STORES). A backup's objects are always
// read through the location named by its backup.location.
type Registry struct {
	Default Location
	copies  map[string]Location
}

// NewRegistry makes a registry of def and copies; names must be distinct.
func NewRegistry(def Location, copies ...Location) (*Registry, error) {
	if def.Store == nil || def.Name == "" {
		return nil, fmt.Errorf("backup location registry: the default location needs a name and a store")
	}
	r := &Registry{Default: def, copies: map[string]Location{}}
	for _, c := range copies {
		if c.Store == nil || c.Name == "" {
			return nil, fmt.Errorf("backup location registry: copy location %q needs a name and a store", c.Name)
		}
		if _, dup := r.copies[c.Name]; dup || c.Name == def.Name {
			return nil, fmt.Errorf("backup location registry: location %q is configured twice", c.Name)
		}
		r.copies[c.Name] = c
	}
	return r, nil
}

// Get returns the location called name. A nil registry has none.
func (r *Registry) Get(name string) (Location, bool) {
	if r == nil {
		return Location{}, false
	}
	if name == r.Default.Name {
		return r.Default, true
	}
	l, ok := r.copies[name]
	return l, ok
}

// Names lists the locations, the default first, then the copies by name.
func (r *Registry) Names() []string {
	if r == nil {
		return nil
	}
	names := make([]string, 0, len(r.copies))
	for n := range r.copies {
		names = append(names, n)
	}
	sort.Strings(names)
	return append([]string{r.Default.Name}, names...)
}
