package auth

import (
	"context"
	"errors"
	"fmt"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack"
	"github.com/gophercloud/gophercloud/v2/openstack/identity/v3/tokens"
)

// Catalog finds the services a token's user may call on their own behalf.
// Only Keystone has one; the built-in tokens have no catalog.
type Catalog interface {
	// UserEndpoint returns the URL of the public endpoint of serviceType
	// in region, from the catalog Keystone issues with token: a URL that
	// names the token's project where the service's does (Swift's
	// AUTH_<project id>). ErrNoEndpoint when the catalog has none.
	UserEndpoint(ctx context.Context, token, serviceType, region string) (string, error)
}

// ErrNoEndpoint is returned by Catalog.UserEndpoint when the catalog has
// no such service in the region.
var ErrNoEndpoint = errors.New("no such endpoint in the catalog")

var _ Catalog = (*Keystone)(nil)

// UserEndpoint asks Keystone for token's catalog (the validation answer
// with the catalog, which Authenticate leaves out) and picks the endpoint.
// It is not cached: it serves rare operations (publishing guest logs).
func (k *Keystone) UserEndpoint(ctx context.Context, token, serviceType, region string) (string, error) {
	if token == "" || len(token) > maxTokenLen {
		return "", ErrInvalidToken
	}
	if err := k.ensureServiceToken(ctx); err != nil {
		return "", err
	}
	r := tokens.Get(ctx, k.identity, token)
	if r.Err != nil {
		if responseCode(r.Err) == 404 {
			return "", ErrInvalidToken
		}
		return "", fmt.Errorf("keystone: catalog: %w", r.Err)
	}
	catalog, err := r.ExtractServiceCatalog()
	if err != nil {
		return "", fmt.Errorf("keystone: catalog: %w", err)
	}
	url, err := openstack.V3EndpointURL(catalog, gophercloud.EndpointOpts{Type: serviceType, Region: region, Availability: gophercloud.AvailabilityPublic})
	if err != nil {
		var nf *gophercloud.ErrEndpointNotFound
		if errors.As(err, &nf) {
			return "", ErrNoEndpoint
		}
		return "", fmt.Errorf("keystone: catalog: %w", err)
	}
	return url, nil
}

type tokenKey struct{}

// WithToken returns ctx carrying the caller's own token, for the few
// operations that act in another service as the caller (publishing guest
// logs into the caller's Swift account). It is never stored or logged.
func WithToken(ctx context.Context, token string) context.Context {
	return context.WithValue(ctx, tokenKey{}, token)
}

// TokenFrom returns the caller's token carried by ctx ("" if none).
func TokenFrom(ctx context.Context) string {
	s, _ := ctx.Value(tokenKey{}).(string)
	return s
}
