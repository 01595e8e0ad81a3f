package keystonetest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/endpoints"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/projects"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/roles"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/services"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/users"
)

// AdminClient is an identity v3 client authenticated as the admin user.
func (k *Keystone) AdminClient(t testing.TB) *gophercloud.ServiceClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	provider, err := openstack.NewClient(k.AuthURL)
	if err != nil {
		t.Fatal(err)
	}
	if err := openstack.AuthenticateV3(ctx, provider, &tokens.AuthOptions{
		Username: k.Admin.Name, Password: k.Admin.Password, DomainName: "Default",
		Scope: tokens.Scope{ProjectID: k.Admin.ProjectID}, AllowReauth: true,
	}, gophercloud.EndpointOpts{}); err != nil {
		t.Fatalf("keystonetest: authenticate admin: %v", err)
	}
	client, err := openstack.NewIdentityV3(provider, gophercloud.EndpointOpts{})
	if err != nil {
		t.Fatal(err)
	}
	return client
}

// NewProject creates a project named prefix-<random> with a user of the
// same name holding roles on it (member when none are given).
func (k *Keystone) NewProject(t testing.TB, prefix string, roleNames ...string) User {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	admin := k.AdminClient(t)
	name := prefix + "-" + randomSuffix()
	p, err := projects.Create(ctx, admin, projects.CreateOpts{Name: name, DomainID: "default"}).Extract()
	if err != nil {
		t.Fatalf("keystonetest: create project %s: %v", name, err)
	}
	return k.newUser(t, admin, name, p.ID, p.Name, roleNames...)
}

// NewUser creates a user named prefix-<random> with roles (member when
// none are given) on an existing project.
func (k *Keystone) NewUser(t testing.TB, prefix string, project User, roleNames ...string) User {
	t.Helper()
	return k.newUser(t, k.AdminClient(t), prefix+"-"+randomSuffix(), project.ProjectID, project.ProjectName, roleNames...)
}

func (k *Keystone) newUser(t testing.TB, admin *gophercloud.ServiceClient, name, projectID, projectName string, roleNames ...string) User {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if len(roleNames) == 0 {
		roleNames = []string{"member"}
	}
	password := "pw-" + randomSuffix()
	u, err := users.Create(ctx, admin, users.CreateOpts{Name: name, DomainID: "default", Password: password, DefaultProjectID: projectID}).Extract()
	if err != nil {
		t.Fatalf("keystonetest: create user %s: %v", name, err)
	}
	for _, rn := range roleNames {
		pages, err := roles.List(admin, roles.ListOpts{Name: rn}).AllPages(ctx)
		if err != nil {
			t.Fatalf("keystonetest: find role %s: %v", rn, err)
		}
		found, err := roles.ExtractRoles(pages)
		if err != nil || len(found) == 0 {
			t.Fatalf("keystonetest: role %s not found (%v)", rn, err)
		}
		if err := roles.Assign(ctx, admin, found[0].ID, roles.AssignOpts{UserID: u.ID, ProjectID: projectID}).ExtractErr(); err != nil {
			t.Fatalf("keystonetest: grant %s on %s to %s: %v", rn, projectID, name, err)
		}
	}
	return User{Name: name, Password: password, ProjectName: projectName, ProjectID: projectID, UserID: u.ID}
}

// RegisterDatabaseEndpoint points the catalog's `database` service (created
// if missing, named trove) at base in the Keystone's own region: public,
// internal and admin endpoints base/v1.0/%(tenant_id)s, as Trove is
// registered. There is one such entry per region, so on the shared Keystone
// the last caller wins: tests that run the CLIs against an all-in-one of
// their own use RegisterDatabaseRegion instead.
func (k *Keystone) RegisterDatabaseEndpoint(t testing.TB, base string) {
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
	url := base + "/v1.0/%(tenant_id)s"
	pages, err := endpoints.List(admin, endpoints.ListOpts{ServiceID: serviceID, RegionID: k.Region}).AllPages(ctx)
	if err != nil {
		t.Fatalf("keystonetest: list endpoints: %v", err)
	}
	have, err := endpoints.ExtractEndpoints(pages)
	if err != nil {
		t.Fatal(err)
	}
	for _, iface := range []gophercloud.Availability{gophercloud.AvailabilityPublic, gophercloud.AvailabilityInternal, gophercloud.AvailabilityAdmin} {
		var existing *endpoints.Endpoint
		for i := range have {
			if have[i].Availability == iface {
				existing = &have[i]
			}
		}
		switch {
		case existing == nil:
			_, err = endpoints.Create(ctx, admin, endpoints.CreateOpts{Availability: iface, Region: k.Region, URL: url, ServiceID: serviceID}).Extract()
		case existing.URL != url:
			_, err = endpoints.Update(ctx, admin, existing.ID, endpoints.UpdateOpts{URL: url}).Extract()
		}
		if err != nil {
			t.Fatalf("keystonetest: %s endpoint of the database service: %v", iface, err)
		}
	}
}

// ensureService returns the id of the catalog's (first) service of type
// typ, creating it (named name) if there is none. Callers hold catalogMu,
// so parallel tests never create two.
func ensureService(ctx context.Context, admin *gophercloud.ServiceClient, typ, name, description string) (string, error) {
	id, err := serviceOfType(ctx, admin, typ)
	if !errors.Is(err, errNoService) {
		return id, err
	}
	s, err := services.Create(ctx, admin, services.CreateOpts{Type: typ, Name: name, Description: description}).Extract()
	if err != nil {
		return "", fmt.Errorf("create %s service: %w", typ, err)
	}
	return s.ID, nil
}

// databaseService is the `database` service (Trove's), created if missing.
func databaseService(ctx context.Context, admin *gophercloud.ServiceClient) (string, error) {
	return ensureService(ctx, admin, "database", "trove", "Database")
}

// RevokeToken revokes a token (as admin), e.g. Coffer's service token.
func (k *Keystone) RevokeToken(t testing.TB, token string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := tokens.Revoke(ctx, k.AdminClient(t), token).Err; err != nil {
		t.Fatalf("keystonetest: revoke token: %v", err)
	}
}

// String identifies the instance in test logs.
func (k *Keystone) String() string { return fmt.Sprintf("keystone %s (%s)", k.AuthURL, k.DataDir) }
