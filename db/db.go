// Package db holds Coffer's schema migrations (migration/), its SQL queries
// (query/, compiled by sqlc into package store) and the sqlc configuration.
package db

import "embed"

// Migrations are the application schema migrations, in tern's format.
//
//go:embed migration/*.sql
var Migrations embed.FS
