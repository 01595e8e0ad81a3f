package keystonetest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/endpoints"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/regions"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/services"
)

// catalogMu serialises this process's catalog writes: parallel tests
// registering their all-in-ones must not both create the database service,
// and Keystone's sqlite database takes one writer at a time anyway.
var catalogMu sync.Mutex

// NewRegionID returns a region id no other caller of this process gets:
// prefix-<random>.
func NewRegionID(prefix string) string { return prefix + "-" + randomSuffix() }

// RegisterDatabaseRegion gives the Trove API at base (http://host:port) a
// region of its own in the catalog: region (an id not yet in the catalog,
// e.g. from NewRegionID) is created, and the `database` service (created if
// missing, named trove) gets public, internal and admin endpoints
// base/v1.0/%(tenant_id)s in it (and the identity service a public
// endpoint, this Keystone's AuthURL). The CLIs reach that API with
// CLIEnvIn(u, region), so any number of all-in-ones share one Keystone —
// the way a cloud runs one Trove per region. The endpoints and the region
// are removed in t.Cleanup.
func (k *Keystone) RegisterDatabaseRegion(t testing.TB, region, base string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	catalogMu.Lock()
	defer catalogMu.Unlock()
	admin := k.AdminClient(t)
	serviceID, err := databaseService(ctx, admin)
	if err != nil {
		t.Fatalf("keystonetest: %v", err)
	}
	if _, err := regions.Create(ctx, admin, regions.CreateOpts{ID: region, Description: "Trove API at " + base}).Extract(); err != nil {
		t.Fatalf("keystonetest: create region %s: %v", region, err)
	}
	var ids []string
	t.Cleanup(func() { k.unregister(admin, region, ids) })
	add := func(opts endpoints.CreateOpts) {
		opts.Region = region
		e, err := endpoints.Create(ctx, admin, opts).Extract()
		if err != nil {
			t.Fatalf("keystonetest: %s endpoint %s in region %s: %v", opts.Availability, opts.URL, region, err)
		}
		ids = append(ids, e.ID)
	}
	for _, iface := range []gophercloud.Availability{gophercloud.AvailabilityPublic, gophercloud.AvailabilityInternal, gophercloud.AvailabilityAdmin} {
		add(endpoints.CreateOpts{Availability: iface, URL: base + "/v1.0/%(tenant_id)s", ServiceID: serviceID})
	}
	// The identity service too: `openstack database quota show <project
	// name>` looks the name up in Keystone through the catalog, in the
	// CLI's region.
	identityID, err := serviceOfType(ctx, admin, "identity")
	if err != nil {
		t.Fatalf("keystonetest: %v", err)
	}
	add(endpoints.CreateOpts{Availability: gophercloud.AvailabilityPublic, URL: k.AuthURL, ServiceID: identityID})
}

// RegisterEndpoint adds a public endpoint at url in region (one from
// RegisterDatabaseRegion) for the catalog's service of type typ, created
// (named name) if the catalog has none; the endpoint is removed in
// t.Cleanup, before the region. Keystone's sqlite takes one writer at a
// time and other tests of the process write users and projects without
// catalogMu, so a refused write is tried again.
func (k *Keystone) RegisterEndpoint(t testing.TB, region, typ, name, url string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	catalogMu.Lock()
	defer catalogMu.Unlock()
	admin := k.AdminClient(t)
	var serviceID string
	var e *endpoints.Endpoint
	var err error
	for i := 0; i < 5; i++ {
		if serviceID == "" {
			serviceID, err = ensureService(ctx, admin, typ, name, "")
		}
		if err == nil {
			e, err = endpoints.Create(ctx, admin, endpoints.CreateOpts{Availability: gophercloud.AvailabilityPublic,
				Region: region, URL: url, ServiceID: serviceID}).Extract()
		}
		if err == nil {
			break
		}
		time.Sleep(time.Duration(i+1) * 500 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("keystonetest: %s endpoint %s in region %s: %v", typ, url, region, err)
	}
	t.Cleanup(func() { k.unregister(admin, "", []string{e.ID}) })
}

// serviceOfType returns the id of the catalog's (first) service of type typ.
func serviceOfType(ctx context.Context, admin *gophercloud.ServiceClient, typ string) (string, error) {
	pages, err := services.List(admin, services.ListOpts{ServiceType: typ}).AllPages(ctx)
	if err != nil {
		return "", fmt.Errorf("list %s services: %w", typ, err)
	}
	found, err := services.ExtractServices(pages)
	if err != nil {
		return "", fmt.Errorf("list %s services: %w", typ, err)
	}
	if len(found) == 0 {
		return "", fmt.Errorf("%s service: %w", typ, errNoService)
	}
	return found[0].ID, nil
}

// errNoService is serviceOfType's answer for a type the catalog lacks.
var errNoService = errors.New("not in the catalog")

// unregister deletes a region's endpoints and then the region (Keystone
// refuses to delete a region that endpoints still refer to); region ""
// keeps the region. Failures are
// reported, not fatal: the Keystone of a test process is discarded anyway.
func (k *Keystone) unregister(admin *gophercloud.ServiceClient, region string, endpointIDs []string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	catalogMu.Lock()
	defer catalogMu.Unlock()
	for _, id := range endpointIDs {
		if err := endpoints.Delete(ctx, admin, id).ExtractErr(); err != nil {
			fmt.Fprintf(os.Stderr, "keystonetest: delete endpoint %s: %v\n", id, err)
		}
	}
	if region == "" {
		return
	}
	if err := regions.Delete(ctx, admin, region).ExtractErr(); err != nil {
		fmt.Fprintf(os.Stderr, "keystonetest: delete region %s: %v\n", region, err)
	}
}

// CLIEnvIn is CLIEnv with the CLIs looking up endpoints in region (one
// from RegisterDatabaseRegion) instead of the Keystone's own.
func (k *Keystone) CLIEnvIn(u User, region string) []string {
	env := k.CLIEnv(u)
	for i, e := range env {
		if strings.HasPrefix(e, "OS_REGION_NAME=") {
			env[i] = "OS_REGION_NAME=" + region
		}
	}
	return env
}
