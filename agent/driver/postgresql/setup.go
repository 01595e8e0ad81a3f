package postgresql

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// Names are quoted wherever they reach SQL; the strict pattern is on top of
// that, to keep names portable and free of surprises (no spaces, no case
// folding games beyond what the user typed, at most 63 bytes, PostgreSQL's
// limit, beyond which it silently truncates).
var (
	namePattern    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,62}$`)
	charsetPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,32}$`)
	collatePattern = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)
)

// reservedUsers are role names a request may not create or take over: the
// internal superuser, the superuser root enable manages (RootUser), "root"
// (hidden like Trove's ignore_users), and names PostgreSQL reserves
// (besides the pg_ prefix, checked separately).
var reservedUsers = []string{RootUser, AdminUser, "root", "public", "none", "current_user", "session_user", "current_role"}

// reservedDatabases exist in every cluster and belong to the operator, or
// are hidden like Trove's ignore_dbs (os_admin).
var reservedDatabases = []string{"postgres", "template0", "template1", AdminUser}

// validateRequest checks every name in req before anything is touched.
// Errors name the offending database or user, never a password.
func validateRequest(req protocol.PrepareRequest) error {
	dbs := map[string]bool{}
	for _, db := range req.Databases {
		if err := validateDatabaseName(db.Name); err != nil {
			return err
		}
		if db.CharacterSet != "" && !charsetPattern.MatchString(db.CharacterSet) {
			return fmt.Errorf("database %s: invalid character set %q", db.Name, db.CharacterSet)
		}
		if db.Collate != "" && !collatePattern.MatchString(db.Collate) {
			return fmt.Errorf("database %s: invalid collation %q", db.Name, db.Collate)
		}
		dbs[db.Name] = true
	}
	users := map[string]bool{}
	for _, u := range req.Users {
		if err := validateUserName(u.Name); err != nil {
			return err
		}
		if users[u.Name] {
			return fmt.Errorf("user %s is listed twice", u.Name)
		}
		users[u.Name] = true
		if u.Password == "" {
			return fmt.Errorf("user %s: a password is required", u.Name)
		}
		if strings.ContainsRune(u.Password, 0) {
			return fmt.Errorf("user %s: the password contains a NUL character", u.Name)
		}
		for _, db := range u.Databases {
			if err := validateDatabaseName(db); err != nil {
				return fmt.Errorf("user %s: %w", u.Name, err)
			}
		}
	}
	return nil
}

func validateDatabaseName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("invalid database name %q: use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or '_'", name)
	}
	for _, r := range reservedDatabases {
		if strings.EqualFold(name, r) {
			return fmt.Errorf("database name %q is reserved", name)
		}
	}
	return nil
}

func validateUserName(name string) error {
	if !namePattern.MatchString(name) {
		return fmt.Errorf("invalid user name %q: use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or '_'", name)
	}
	for _, r := range reservedUsers {
		if strings.EqualFold(name, r) {
			return fmt.Errorf("user name %q is reserved", name)
		}
	}
	if strings.HasPrefix(strings.ToLower(name), "pg_") {
		return fmt.Errorf("user name %q is reserved: names starting with pg_ belong to PostgreSQL", name)
	}
	return nil
}

// SQLSTATEs that mean "someone else just created it": a concurrent or
// half-finished earlier Prepare. Not an error for an idempotent setup.
const (
	duplicateDatabase = "42P04"
	duplicateObject   = "42710"
)

// setupDatabasesAndUsers creates what req asks for and is missing, sets
// the users' passwords, and grants each user its databases.
func setupDatabasesAndUsers(ctx context.Context, c *pgctl.Cluster, req protocol.PrepareRequest) error {
	if len(req.Databases) == 0 && len(req.Users) == 0 {
		return nil
	}
	conn, err := pgx.Connect(ctx, c.ConnString("postgres"))
	if err != nil {
		return fmt.Errorf("connect as %s: %w", AdminUser, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := quietSession(ctx, conn); err != nil {
		return err
	}

	for _, db := range req.Databases {
		if err := createDatabase(ctx, conn, db); err != nil {
			return err
		}
	}
	for _, u := range req.Users {
		if err := createOrUpdateUser(ctx, conn, u); err != nil {
			return err
		}
		for _, db := range u.Databases {
			sql := "GRANT ALL ON DATABASE " + ident(db) + " TO " + ident(u.Name)
			if _, err := conn.Exec(ctx, sql); err != nil {
				return fmt.Errorf("grant user %s database %s: %w", u.Name, db, err)
			}
		}
	}
	return grantSchemas(ctx, c, req.Users)
}

// quietSession keeps this session's statements out of the server log:
// CREATE/ALTER ROLE carry a password in their text, which an operator's
// log_statement = 'ddl', a slow statement, or a failing one would
// otherwise write to postgres.log. os_admin is a superuser, so it may.
func quietSession(ctx context.Context, conn *pgx.Conn) error {
	for _, set := range []string{
		"SET log_statement = 'none'",
		"SET log_min_error_statement = 'panic'",
		"SET log_min_duration_statement = -1",
		"SET log_min_duration_sample = -1",
	} {
		// undefined_object: a server too old for the setting.
		if _, err := conn.Exec(ctx, set); err != nil && !isCode(err, "42704") {
			return fmt.Errorf("configure admin session (%s): %w", set, err)
		}
	}
	return nil
}

func createDatabase(ctx context.Context, conn *pgx.Conn, db protocol.Database) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", db.Name).Scan(&exists); err != nil {
		return fmt.Errorf("look up database %s: %w", db.Name, err)
	}
	if exists {
		return restrictDatabase(ctx, conn, db.Name)
	}
	sql := "CREATE DATABASE " + ident(db.Name)
	if db.CharacterSet != "" || db.Collate != "" {
		// template1 may have a different encoding or locale; template0
		// is the one any combination can be copied from.
		sql += " TEMPLATE template0"
	}
	if db.CharacterSet != "" {
		sql += " ENCODING " + literal(db.CharacterSet)
	}
	if db.Collate != "" {
		// Like Trove: one locale for sorting and character classes.
		sql += " LC_COLLATE " + literal(db.Collate) + " LC_CTYPE " + literal(db.Collate)
	}
	if _, err := conn.Exec(ctx, sql); err != nil && !isCode(err, duplicateDatabase) {
		return fmt.Errorf("create database %s: %w", db.Name, err)
	}
	return restrictDatabase(ctx, conn, db.Name)
}

// restrictDatabase takes PostgreSQL's default CONNECT and TEMPORARY
// privileges away from PUBLIC, so that only users granted the database
// (Trove's user access) reach it, and revoking access means something.
// Run on every create, also of a database that exists: an earlier attempt
// may have stopped between CREATE and REVOKE.
func restrictDatabase(ctx context.Context, conn *pgx.Conn, name string) error {
	if _, err := conn.Exec(ctx, "REVOKE CONNECT, TEMPORARY ON DATABASE "+ident(name)+" FROM PUBLIC"); err != nil {
		return fmt.Errorf("restrict database %s to granted users: %w", name, err)
	}
	return nil
}

// createOrUpdateUser creates the role with its password, or sets the
// password of an existing one. The statement is composed by the server
// (format's %I and %L quote correctly whatever the password holds) and
// runs over the simple protocol so it is neither prepared nor cached.
// Errors name the user only.
func createOrUpdateUser(ctx context.Context, conn *pgx.Conn, u protocol.User) error {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", u.Name).Scan(&exists); err != nil {
		return fmt.Errorf("look up user %s: %w", u.Name, err)
	}
	if !exists {
		err := setRole(ctx, conn, "SELECT format('CREATE ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)", u)
		if err == nil {
			return nil
		}
		if !isCode(err, duplicateObject) {
			return fmt.Errorf("create user %s: %w", u.Name, err)
		}
		// Created meanwhile: fall through to setting its password.
	}
	if err := setRole(ctx, conn, "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)", u); err != nil {
		return fmt.Errorf("update user %s: %w", u.Name, err)
	}
	return nil
}

func setRole(ctx context.Context, conn *pgx.Conn, compose string, u protocol.User) error {
	var sql string
	if err := conn.QueryRow(ctx, compose, u.Name, u.Password).Scan(&sql); err != nil {
		return err
	}
	_, err := conn.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
	return err
}

// grantSchemas lets each user create tables in its databases. Since
// PostgreSQL 15 PUBLIC may no longer CREATE in schema public, and the
// grant lives in each database, so it needs a connection to each.
func grantSchemas(ctx context.Context, c *pgctl.Cluster, users []protocol.User) error {
	byDB := map[string][]string{}
	var order []string
	for _, u := range users {
		for _, db := range u.Databases {
			if _, seen := byDB[db]; !seen {
				order = append(order, db)
			}
			byDB[db] = append(byDB[db], u.Name)
		}
	}
	for _, db := range order {
		if err := grantSchema(ctx, c, db, byDB[db]); err != nil {
			return err
		}
	}
	return nil
}

func grantSchema(ctx context.Context, c *pgctl.Cluster, db string, users []string) error {
	conn, err := pgx.Connect(ctx, c.ConnString(db))
	if err != nil {
		return fmt.Errorf("connect to database %s: %w", db, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, u := range users {
		if _, err := conn.Exec(ctx, "GRANT ALL ON SCHEMA public TO "+ident(u)); err != nil {
			return fmt.Errorf("grant user %s schema public in database %s: %w", u, db, err)
		}
	}
	return nil
}

func isCode(err error, code string) bool {
	var pgErr *pgconn.PgError
	return errors.As(err, &pgErr) && pgErr.Code == code
}

func ident(name string) string { return pgx.Identifier{name}.Sanitize() }

// literal quotes a string constant. Only for values already checked
// against a strict pattern (character sets, collations).
func literal(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }
