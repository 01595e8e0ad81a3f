package openstack

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"time"
)

// Metadata keys and tags the provider sets (see the package doc).
const (
	metaInstanceID   = "coffer_instance_id"
	metaInstanceName = "coffer_instance_name"
	metaDatastore    = "coffer_datastore"
	metaPort         = "coffer_port"
	metaTokenHash    = "coffer_agent_token_sha256"
	tagCoffer        = "coffer"
)

// safeName is what an instance id (and the name prefix) may contain: it
// becomes part of resource names, a Nova tag and an anchored regular
// expression for Nova's name filter, so nothing there needs escaping.
var safeName = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// name is the name of each of the instance's resources.
func (p *Provider) name(instanceID string) (string, error) {
	if !safeName.MatchString(instanceID) {
		return "", fmt.Errorf("invalid instance id %q", instanceID)
	}
	return p.cfg.NamePrefix + instanceID, nil
}

// oldest orders look-up results so that every caller picks the same one
// when duplicates exist (a crashed or concurrent creator in another
// process): the first created, ties broken by id.
func oldest[T any](items []T, created func(T) time.Time, id func(T) string) []T {
	slices.SortStableFunc(items, func(a, b T) int {
		if c := created(a).Compare(created(b)); c != 0 {
			return c
		}
		return cmp.Compare(id(a), id(b))
	})
	return items
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence
// (Nova metadata values are limited to 255).
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && s[n]&0xC0 == 0x80 {
		n--
	}
	return s[:n]
}
