// Package auth identifies API callers: a token becomes a Principal (project,
// user, roles). The built-in authenticator serves the embedded default with
// tokens stored hashed in Postgres; Keystone validation plugs in behind the
// same interface for OpenStack deployments.
package auth

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/db/store"
)

// ErrInvalidToken means the token is unknown or expired.
var ErrInvalidToken = errors.New("invalid token")

// RoleAdmin is the role Trove's default policy treats as admin.
const RoleAdmin = "admin"

// Principal is an authenticated caller.
type Principal struct {
	ProjectID string
	UserName  string
	Roles     []string
}

// IsAdmin reports whether the caller has the admin role.
func (p *Principal) IsAdmin() bool { return slices.Contains(p.Roles, RoleAdmin) }

// Authenticator turns a token into a Principal.
type Authenticator interface {
	Authenticate(ctx context.Context, token string) (*Principal, error)
}

type ctxKey struct{}

// WithPrincipal returns ctx carrying p.
func WithPrincipal(ctx context.Context, p *Principal) context.Context {
	return context.WithValue(ctx, ctxKey{}, p)
}

// FromContext returns the caller, or nil outside an authenticated request.
func FromContext(ctx context.Context) *Principal {
	p, _ := ctx.Value(ctxKey{}).(*Principal)
	return p
}

// Hash is how tokens are stored: SHA-256 (tokens are 256-bit random, so a
// slow hash adds nothing).
func Hash(token string) []byte {
	h := sha256.Sum256([]byte(token))
	return h[:]
}

// NewToken returns a random 256-bit token, URL-safe.
func NewToken() string {
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Builtin authenticates against the api_token table.
type Builtin struct {
	Queries *store.Queries
}

// Authenticate implements Authenticator.
func (b *Builtin) Authenticate(ctx context.Context, token string) (*Principal, error) {
	if token == "" {
		return nil, ErrInvalidToken
	}
	row, err := b.Queries.GetAPIToken(ctx, Hash(token))
	if errors.Is(err, pgx.ErrNoRows) {
		return nil, ErrInvalidToken
	}
	if err != nil {
		return nil, fmt.Errorf("look up token: %w", err)
	}
	return &Principal{ProjectID: row.ProjectID, UserName: row.UserName, Roles: row.Roles}, nil
}

// IssueToken stores a new built-in token for a project user and returns it.
func IssueToken(ctx context.Context, q *store.Queries, projectID, user string, roles []string, ttl time.Duration) (string, error) {
	token := NewToken()
	var expires *time.Time
	if ttl > 0 {
		t := time.Now().Add(ttl)
		expires = &t
	}
	if err := q.InsertAPIToken(ctx, store.InsertAPITokenParams{
		TokenHash: Hash(token), ProjectID: projectID, UserName: user, Roles: roles, ExpiresAt: expires,
	}); err != nil {
		return "", fmt.Errorf("issue token for %s/%s: %w", projectID, user, err)
	}
	return token, nil
}
