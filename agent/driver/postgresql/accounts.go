package postgresql

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/driver"
	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/internal/pgctl"
)

// Databases, users, access and root (driver.Accounts).
//
// Conventions, after Trove's PostgreSQL guest where it has one:
//   - A user's databases are those it was granted: GRANT ALL ON DATABASE
//     plus ALL on its schema public (PostgreSQL 15 no longer lets PUBLIC
//     create there). Databases created through the API are closed to
//     PUBLIC (restrictDatabase), so access is exactly what was granted.
//   - PostgreSQL roles have no host part. Trove's guest ignores the host;
//     Coffer accepts only "%" (or none), so that a request for a
//     host-restricted user fails instead of silently creating an
//     unrestricted one.
//   - Root is the superuser "postgres" (RootUser), absent until root is
//     first enabled (the cluster is bootstrapped by os_admin). Enable sets
//     its password and lets it log in; disable takes the login away and
//     ends its sessions (Trove only resets the password to a random one).
//   - Hidden from the inventory, like Trove's ignore_users/ignore_dbs:
//     os_admin, postgres, root, PostgreSQL's own pg_* roles, the postgres
//     database and the templates.
//
// Every statement that carries a password runs in a quiet session (see
// quietSession) and errors name users and databases, never passwords.

// RootUser is the superuser root enable manages, Trove's for PostgreSQL.
const RootUser = "postgres"

var _ driver.Accounts = (*Driver)(nil)

// SQLSTATEs of objects that are missing.
const (
	undefinedObject = "42704" // e.g. the role
	invalidCatalog  = "3D000" // the database
	invalidSchema   = "3F000" // the schema
)

// hiddenDatabases are never listed (besides the templates).
var hiddenDatabases = []string{"postgres", AdminUser}

// hiddenUsers are never listed (besides pg_* roles).
var hiddenUsers = []string{AdminUser, RootUser, "root"}

// adminCluster returns the server, once Prepare has set it up.
func (d *Driver) adminCluster() (*pgctl.Cluster, error) {
	st, err := d.loadState()
	if err != nil {
		return nil, err
	}
	if !st.Prepared {
		return nil, errors.New("the datastore is not prepared yet")
	}
	return d.cluster(st.SuperPassword), nil
}

// adminConn connects as os_admin to database db in a quiet session.
func adminConn(ctx context.Context, c *pgctl.Cluster, db string) (*pgx.Conn, error) {
	conn, err := pgx.Connect(ctx, c.ConnString(db))
	if err != nil {
		return nil, fmt.Errorf("connect as %s to %s: %w", AdminUser, db, err)
	}
	if err := quietSession(ctx, conn); err != nil {
		conn.Close(context.WithoutCancel(ctx))
		return nil, err
	}
	return conn, nil
}

// withAdmin runs fn on an os_admin connection to the postgres database.
func (d *Driver) withAdmin(ctx context.Context, fn func(c *pgctl.Cluster, conn *pgx.Conn) error) error {
	c, err := d.adminCluster()
	if err != nil {
		return err
	}
	conn, err := adminConn(ctx, c, "postgres")
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return fn(c, conn)
}

// validateHost accepts the only host PostgreSQL users have: any ("%").
func validateHost(user, host string) error {
	if host != "" && host != "%" {
		return fmt.Errorf("user %s: PostgreSQL users cannot be limited to host %q; use %%", user, host)
	}
	return nil
}

func validateUserRef(u protocol.UserRef) error {
	if err := validateUserName(u.Name); err != nil {
		return err
	}
	return validateHost(u.Name, u.Host)
}

// CreateDatabases creates the databases that do not exist yet.
func (d *Driver) CreateDatabases(ctx context.Context, dbs []protocol.Database) error {
	req := protocol.PrepareRequest{Databases: dbs}
	if err := validateRequest(req); err != nil {
		return fmt.Errorf("create databases: %w", err)
	}
	c, err := d.adminCluster()
	if err != nil {
		return fmt.Errorf("create databases: %w", err)
	}
	if err := setupDatabasesAndUsers(ctx, c, req); err != nil {
		return fmt.Errorf("create databases: %w", err)
	}
	return nil
}

// DeleteDatabase drops a database, disconnecting its sessions. A database
// that does not exist is already deleted.
func (d *Driver) DeleteDatabase(ctx context.Context, name string) error {
	if err := validateDatabaseName(name); err != nil {
		return fmt.Errorf("delete database: %w", err)
	}
	return d.withAdmin(ctx, func(_ *pgctl.Cluster, conn *pgx.Conn) error {
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+ident(name)+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("delete database %s: %w", name, err)
		}
		return nil
	})
}

// CreateUsers creates users (or sets the password of existing ones) and
// grants them their databases, which must exist.
func (d *Driver) CreateUsers(ctx context.Context, users []protocol.User) error {
	req := protocol.PrepareRequest{Users: users}
	if err := validateRequest(req); err != nil {
		return fmt.Errorf("create users: %w", err)
	}
	for _, u := range users {
		if err := validateHost(u.Name, u.Host); err != nil {
			return fmt.Errorf("create users: %w", err)
		}
	}
	c, err := d.adminCluster()
	if err != nil {
		return fmt.Errorf("create users: %w", err)
	}
	if err := setupDatabasesAndUsers(ctx, c, req); err != nil {
		return fmt.Errorf("create users: %w", err)
	}
	return nil
}

// DeleteUser drops a user. Its sessions are ended; what it owns in any
// database is handed to os_admin (data is kept, as with Trove's MySQL
// DROP USER) and its privileges are revoked, since PostgreSQL refuses to
// drop a role that still owns or may use objects. A missing user is
// already deleted.
func (d *Driver) DeleteUser(ctx context.Context, user protocol.UserRef) error {
	if err := validateUserRef(user); err != nil {
		return fmt.Errorf("delete user: %w", err)
	}
	return d.withAdmin(ctx, func(c *pgctl.Cluster, conn *pgx.Conn) error {
		exists, err := roleExists(ctx, conn, user.Name)
		if err != nil || !exists {
			return err
		}
		if err := terminateSessions(ctx, conn, user.Name, ""); err != nil {
			return err
		}
		dbs, err := connectableDatabases(ctx, conn)
		if err != nil {
			return err
		}
		for _, db := range dbs {
			if err := disownInDatabase(ctx, c, db, user.Name); err != nil {
				return err
			}
		}
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+ident(user.Name)); err != nil {
			return fmt.Errorf("delete user %s: %w", user.Name, err)
		}
		return nil
	})
}

// disownInDatabase hands what user owns in db to os_admin and revokes its
// privileges there (and on shared objects: databases).
func disownInDatabase(ctx context.Context, c *pgctl.Cluster, db, user string) error {
	conn, err := adminConn(ctx, c, db)
	if isCode(err, invalidCatalog) {
		return nil // dropped meanwhile
	}
	if err != nil {
		return fmt.Errorf("delete user %s: %w", user, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, sql := range []string{
		"REASSIGN OWNED BY " + ident(user) + " TO " + ident(AdminUser),
		"DROP OWNED BY " + ident(user),
	} {
		if _, err := conn.Exec(ctx, sql); err != nil && !isCode(err, undefinedObject) {
			return fmt.Errorf("delete user %s: release its objects in database %s: %w", user, db, err)
		}
	}
	return nil
}

// UpdateUser renames a user and/or sets its password. Repeating a rename
// that happened (the old name is gone, the new one exists) is not an
// error, so a redelivered command succeeds.
func (d *Driver) UpdateUser(ctx context.Context, req protocol.UpdateUserRequest) error {
	if err := validateUserRef(req.UserRef); err != nil {
		return fmt.Errorf("update user: %w", err)
	}
	if req.NewName != "" {
		if err := validateUserName(req.NewName); err != nil {
			return fmt.Errorf("update user %s: %w", req.Name, err)
		}
	}
	if err := validateHost(req.Name, req.NewHost); err != nil {
		return fmt.Errorf("update user: %w", err)
	}
	if strings.ContainsRune(req.NewPassword, 0) {
		return fmt.Errorf("update user %s: the password contains a NUL character", req.Name)
	}
	return d.withAdmin(ctx, func(_ *pgctl.Cluster, conn *pgx.Conn) error {
		target := req.Name
		oldExists, err := roleExists(ctx, conn, req.Name)
		if err != nil {
			return err
		}
		if req.NewName != "" && req.NewName != req.Name {
			target = req.NewName
			newExists, err := roleExists(ctx, conn, req.NewName)
			if err != nil {
				return err
			}
			switch {
			case oldExists && newExists:
				return fmt.Errorf("update user %s: user %s already exists", req.Name, req.NewName)
			case oldExists:
				// SCRAM secrets survive a rename (only MD5 ones are salted
				// with the name and cleared).
				if _, err := conn.Exec(ctx, "ALTER ROLE "+ident(req.Name)+" RENAME TO "+ident(req.NewName)); err != nil {
					return fmt.Errorf("update user %s: rename to %s: %w", req.Name, req.NewName, err)
				}
			case !newExists:
				return fmt.Errorf("update user %s: user does not exist", req.Name)
			}
		} else if !oldExists {
			return fmt.Errorf("update user %s: user does not exist", req.Name)
		}
		if req.NewPassword != "" {
			err := setRole(ctx, conn, "SELECT format('ALTER ROLE %I WITH PASSWORD %L', $1::text, $2::text)",
				protocol.User{Name: target, Password: req.NewPassword})
			if err != nil {
				return fmt.Errorf("update user %s: set password: %w", target, err)
			}
		}
		return nil
	})
}

// GrantAccess gives user all privileges on each database and its schema
// public. The user and the databases must exist.
func (d *Driver) GrantAccess(ctx context.Context, user protocol.UserRef, databases []string) error {
	if err := validateUserRef(user); err != nil {
		return fmt.Errorf("grant access: %w", err)
	}
	for _, db := range databases {
		if err := validateDatabaseName(db); err != nil {
			return fmt.Errorf("grant access to user %s: %w", user.Name, err)
		}
	}
	return d.withAdmin(ctx, func(c *pgctl.Cluster, conn *pgx.Conn) error {
		if exists, err := roleExists(ctx, conn, user.Name); err != nil {
			return err
		} else if !exists {
			return fmt.Errorf("grant access: user %s does not exist", user.Name)
		}
		for _, db := range databases {
			if _, err := conn.Exec(ctx, "GRANT ALL ON DATABASE "+ident(db)+" TO "+ident(user.Name)); err != nil {
				if isCode(err, invalidCatalog) {
					return fmt.Errorf("grant user %s access: database %s does not exist", user.Name, db)
				}
				return fmt.Errorf("grant user %s database %s: %w", user.Name, db, err)
			}
		}
		return grantSchemas(ctx, c, []protocol.User{{Name: user.Name, Databases: databases}})
	})
}

// RevokeAccess takes user's privileges on database and its schema public
// away and ends the user's sessions there. A missing user or database has
// no access to revoke.
func (d *Driver) RevokeAccess(ctx context.Context, user protocol.UserRef, database string) error {
	if err := validateUserRef(user); err != nil {
		return fmt.Errorf("revoke access: %w", err)
	}
	if err := validateDatabaseName(database); err != nil {
		return fmt.Errorf("revoke access of user %s: %w", user.Name, err)
	}
	return d.withAdmin(ctx, func(c *pgctl.Cluster, conn *pgx.Conn) error {
		if exists, err := roleExists(ctx, conn, user.Name); err != nil || !exists {
			return err
		}
		_, err := conn.Exec(ctx, "REVOKE ALL ON DATABASE "+ident(database)+" FROM "+ident(user.Name))
		if isCode(err, invalidCatalog) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("revoke user %s database %s: %w", user.Name, database, err)
		}
		dbConn, err := adminConn(ctx, c, database)
		if isCode(err, invalidCatalog) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("revoke user %s database %s: %w", user.Name, database, err)
		}
		defer dbConn.Close(context.WithoutCancel(ctx))
		if _, err := dbConn.Exec(ctx, "REVOKE ALL ON SCHEMA public FROM "+ident(user.Name)); err != nil && !isCode(err, invalidSchema) {
			return fmt.Errorf("revoke user %s schema public in database %s: %w", user.Name, database, err)
		}
		// CONNECT is checked at connection start only: end what is open.
		return terminateSessions(ctx, conn, user.Name, database)
	})
}

// EnableRoot creates the superuser postgres or resets it, with password
// and the right to log in, and returns its name.
func (d *Driver) EnableRoot(ctx context.Context, password string) (string, error) {
	if password == "" {
		return "", errors.New("enable root: a password is required")
	}
	if strings.ContainsRune(password, 0) {
		return "", errors.New("enable root: the password contains a NUL character")
	}
	err := d.withAdmin(ctx, func(_ *pgctl.Cluster, conn *pgx.Conn) error {
		exists, err := roleExists(ctx, conn, RootUser)
		if err != nil {
			return err
		}
		const attrs = "SUPERUSER CREATEDB CREATEROLE REPLICATION BYPASSRLS INHERIT LOGIN"
		u := protocol.User{Name: RootUser, Password: password}
		if !exists {
			err := setRole(ctx, conn, "SELECT format('CREATE ROLE %I WITH "+attrs+" PASSWORD %L', $1::text, $2::text)", u)
			if err == nil {
				return nil
			}
			if !isCode(err, duplicateObject) {
				return fmt.Errorf("enable root: create %s: %w", RootUser, err)
			}
			// Created meanwhile: fall through to resetting it.
		}
		if err := setRole(ctx, conn, "SELECT format('ALTER ROLE %I WITH "+attrs+" PASSWORD %L', $1::text, $2::text)", u); err != nil {
			return fmt.Errorf("enable root: update %s: %w", RootUser, err)
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return RootUser, nil
}

// DisableRoot takes the superuser's login and password away and ends its
// sessions. Without a superuser there is nothing to disable.
func (d *Driver) DisableRoot(ctx context.Context) error {
	return d.withAdmin(ctx, func(_ *pgctl.Cluster, conn *pgx.Conn) error {
		exists, err := roleExists(ctx, conn, RootUser)
		if err != nil || !exists {
			return err
		}
		if _, err := conn.Exec(ctx, "ALTER ROLE "+ident(RootUser)+" WITH NOLOGIN PASSWORD NULL"); err != nil {
			return fmt.Errorf("disable root: %w", err)
		}
		return terminateSessions(ctx, conn, RootUser, "")
	})
}

// Inventory lists the databases and users (with the databases each was
// granted or owns) and whether root is enabled.
func (d *Driver) Inventory(ctx context.Context) (protocol.Inventory, error) {
	inv := protocol.Inventory{Databases: []protocol.Database{}, Users: []protocol.UserInfo{}}
	err := d.withAdmin(ctx, func(_ *pgctl.Cluster, conn *pgx.Conn) error {
		rows, err := conn.Query(ctx, `
			SELECT datname, pg_encoding_to_char(encoding), datcollate
			FROM pg_database
			WHERE NOT datistemplate AND datname <> ALL ($1::text[])
			ORDER BY datname`, hiddenDatabases)
		if err != nil {
			return fmt.Errorf("inventory: list databases: %w", err)
		}
		inv.Databases, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (protocol.Database, error) {
			var db protocol.Database
			err := r.Scan(&db.Name, &db.CharacterSet, &db.Collate)
			return db, err
		})
		if err != nil {
			return fmt.Errorf("inventory: list databases: %w", err)
		}
		rows, err = conn.Query(ctx, `
			SELECT r.rolname, ARRAY(
			    SELECT d.datname FROM pg_database d
			    WHERE NOT d.datistemplate AND d.datname <> ALL ($1::text[])
			      AND (d.datdba = r.oid OR EXISTS (
			          SELECT FROM aclexplode(d.datacl) a
			          WHERE a.grantee = r.oid AND a.privilege_type = 'CONNECT'))
			    ORDER BY d.datname)
			FROM pg_roles r
			WHERE r.rolcanlogin AND r.rolname <> ALL ($2::text[]) AND r.rolname NOT LIKE 'pg\_%'
			ORDER BY r.rolname`, hiddenDatabases, hiddenUsers)
		if err != nil {
			return fmt.Errorf("inventory: list users: %w", err)
		}
		inv.Users, err = pgx.CollectRows(rows, func(r pgx.CollectableRow) (protocol.UserInfo, error) {
			u := protocol.UserInfo{Host: "%"}
			err := r.Scan(&u.Name, &u.Databases)
			return u, err
		})
		if err != nil {
			return fmt.Errorf("inventory: list users: %w", err)
		}
		err = conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1 AND rolcanlogin)", RootUser).Scan(&inv.RootEnabled)
		if err != nil {
			return fmt.Errorf("inventory: root: %w", err)
		}
		return nil
	})
	return inv, err
}

func roleExists(ctx context.Context, conn *pgx.Conn, name string) (bool, error) {
	var exists bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_roles WHERE rolname = $1)", name).Scan(&exists); err != nil {
		return false, fmt.Errorf("look up user %s: %w", name, err)
	}
	return exists, nil
}

// connectableDatabases lists every database os_admin can connect to.
func connectableDatabases(ctx context.Context, conn *pgx.Conn) ([]string, error) {
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datallowconn ORDER BY datname")
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	dbs, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("list databases: %w", err)
	}
	return dbs, nil
}

// terminateSessions ends user's sessions (in database db, or everywhere
// when db is "").
func terminateSessions(ctx context.Context, conn *pgx.Conn, user, db string) error {
	_, err := conn.Exec(ctx, `
		SELECT pg_terminate_backend(pid) FROM pg_stat_activity
		WHERE usename = $1::text AND ($2::text = '' OR datname = $2::text) AND pid <> pg_backend_pid()`, user, db)
	if err != nil {
		return fmt.Errorf("end the sessions of user %s: %w", user, err)
	}
	return nil
}
