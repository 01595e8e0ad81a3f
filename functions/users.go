package functions

import (
	"context"
	"net/http"
	"slices"

	"github.com/danielgtaylor/huma/v2"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Users: list, create, show, update (rename, password, host), change
// passwords, delete; and user access: show, grant, revoke. Shared
// machinery (validation, inventory, locking) is in databases.go.

type userInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	User       string `path:"user" maxLength:"400" doc:"name, or name@host (URL-quoted; host % when absent)"`
}

type userDatabaseInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	User       string `path:"user" maxLength:"400" doc:"name, or name@host (URL-quoted; host % when absent)"`
	Database   string `path:"database" maxLength:"255"`
}

type usersCreateInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       openapi.UsersCreate
}

type usersPasswordsInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       openapi.UsersPasswords
}

type userUpdateInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	User       string `path:"user" maxLength:"400" doc:"name, or name@host (URL-quoted; host % when absent)"`
	Body       struct {
		User openapi.DBUserUpdate `json:"user"`
	}
}

type userGrantInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	User       string `path:"user" maxLength:"400" doc:"name, or name@host (URL-quoted; host % when absent)"`
	Body       openapi.DatabaseAccess
}

type userListOutput struct {
	Body struct {
		Users []openapi.DBUser `json:"users"`
		Links []openapi.Link   `json:"links,omitempty"`
	}
}

type userOutput struct {
	Body struct {
		User openapi.DBUser `json:"user"`
	}
}

type userAccessOutput struct {
	Body struct {
		Databases []openapi.DatabaseName `json:"databases"`
	}
}

func init() { register(Users) }

// Users serves the users of an instance and their access to databases.
func Users(api huma.API, deps *Deps) {
	tags := []string{"Users"}
	base := "/v1.0/{tenant_id}/instances/{instance_id}/users"
	mutation := []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity}
	read := []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity}
	huma.Register(api, huma.Operation{
		OperationID: "list-users", Method: http.MethodGet, Path: base,
		Summary:     "List users",
		Description: "The users the instance's agent last reported, with the databases each may access; ordered by name@host, pages of at most 20 with a rel=next link. Internal users (os_admin, the root superuser) are hidden.",
		Tags:        tags, Security: tokenSecurity, Errors: read,
	}, deps.listUsers)
	huma.Register(api, huma.Operation{
		OperationID: "create-users", Method: http.MethodPost, Path: base,
		Summary:     "Create users",
		Description: "Accepted at once; the agent creates the users and grants them their databases, which must exist. A user that exists answers 400. PostgreSQL users have no host: host must be % or omitted.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: mutation, MaxBodyBytes: 64 << 10,
	}, deps.createUsers)
	huma.Register(api, huma.Operation{
		OperationID: "change-user-passwords", Method: http.MethodPut, Path: base,
		Summary: "Change users' passwords", Description: "Accepted at once; every user must exist.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: mutation, MaxBodyBytes: 64 << 10,
	}, deps.changePasswords)
	huma.Register(api, huma.Operation{
		OperationID: "show-user", Method: http.MethodGet, Path: base + "/{user}",
		Summary: "Show a user", Tags: tags, Security: tokenSecurity, Errors: read,
	}, deps.showUser)
	huma.Register(api, huma.Operation{
		OperationID: "update-user", Method: http.MethodPut, Path: base + "/{user}",
		Summary:     "Update a user's name, password or host",
		Description: "Accepted at once. The new name@host must not exist.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: mutation, MaxBodyBytes: 64 << 10,
	}, deps.updateUser)
	huma.Register(api, huma.Operation{
		OperationID: "delete-user", Method: http.MethodDelete, Path: base + "/{user}",
		Summary:     "Delete a user",
		Description: "Accepted at once; the agent ends the user's sessions and drops it. What it owns is kept, owned by the internal administrator.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: mutation,
	}, deps.deleteUser)
	huma.Register(api, huma.Operation{
		OperationID: "show-user-access", Method: http.MethodGet, Path: base + "/{user}/databases",
		Summary: "Show the databases a user may access", Tags: tags, Security: tokenSecurity, Errors: read,
	}, deps.showUserAccess)
	huma.Register(api, huma.Operation{
		OperationID: "grant-user-access", Method: http.MethodPut, Path: base + "/{user}/databases",
		Summary:     "Grant a user access to databases",
		Description: "Accepted at once; the user and the databases must exist.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: mutation, MaxBodyBytes: 64 << 10,
	}, deps.grantAccess)
	huma.Register(api, huma.Operation{
		OperationID: "revoke-user-access", Method: http.MethodDelete, Path: base + "/{user}/databases/{database}",
		Summary:     "Revoke a user's access to a database",
		Description: "Accepted at once; the agent also ends the user's sessions in that database. A database the user has no access to answers 404.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, Errors: mutation,
	}, deps.revokeAccess)
}

func userView(u protocol.UserInfo) openapi.DBUser {
	v := openapi.DBUser{Name: u.Name, Host: cmpOr(u.Host, "%"), Databases: make([]openapi.DatabaseName, 0, len(u.Databases))}
	dbs := slices.Clone(u.Databases)
	slices.Sort(dbs)
	for _, db := range dbs {
		v.Databases = append(v.Databases, openapi.DatabaseName{Name: db})
	}
	return v
}

func userNotFound(seg string) error {
	return openapi.NotFound("User %s cannot be found on the instance.", seg)
}

// userRef parses and validates a {user} path segment.
func userRef(seg string) (protocol.UserRef, *openapi.Fault) {
	name, host := parseUserPath(seg)
	if f := validUserPathName(name); f != nil {
		return protocol.UserRef{}, f
	}
	return protocol.UserRef{Name: name, Host: host}, nil
}

// validUserPathName checks a name in a path. A reserved name is simply not
// found (those users are hidden), as in a list.
func validUserPathName(name string) *openapi.Fault {
	if !accountNamePattern.MatchString(name) {
		return openapi.BadRequest("'%s' is not a valid user name.", name)
	}
	return nil
}

func (d *Deps) listUsers(ctx context.Context, in *accountListInput) (*userListOutput, error) {
	_, inv, err := d.readAccounts(ctx, in.TenantID, in.InstanceID)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(inv.Users))
	for i, u := range inv.Users {
		keys[i] = userKey(u.Name, u.Host)
	}
	page, next := accountsPage(keys, in.Marker, in.Limit)
	out := &userListOutput{}
	out.Body.Users = make([]openapi.DBUser, 0, len(page))
	for _, i := range page {
		out.Body.Users = append(out.Body.Users, userView(inv.Users[i]))
	}
	out.Body.Links = pageLinks(ctx, "/v1.0/"+in.TenantID+"/instances/"+in.InstanceID+"/users", in.Limit, next)
	return out, nil
}

// findUser reads a user of the tenant's instance from its inventory.
func (d *Deps) findUser(ctx context.Context, tenant, instance, seg string) (protocol.UserInfo, error) {
	ref, f := userRef(seg)
	if f != nil {
		return protocol.UserInfo{}, f
	}
	_, inv, err := d.readAccounts(ctx, tenant, instance)
	if err != nil {
		return protocol.UserInfo{}, err
	}
	u := inv.user(ref.Name, ref.Host)
	if u == nil || reservedUserName(ref.Name) {
		return protocol.UserInfo{}, userNotFound(seg)
	}
	return *u, nil
}

func (d *Deps) showUser(ctx context.Context, in *userInput) (*userOutput, error) {
	u, err := d.findUser(ctx, in.TenantID, in.InstanceID, in.User)
	if err != nil {
		return nil, err
	}
	out := &userOutput{}
	out.Body.User = userView(u)
	return out, nil
}

func (d *Deps) showUserAccess(ctx context.Context, in *userInput) (*userAccessOutput, error) {
	u, err := d.findUser(ctx, in.TenantID, in.InstanceID, in.User)
	if err != nil {
		return nil, err
	}
	out := &userAccessOutput{}
	out.Body.Databases = userView(u).Databases
	return out, nil
}

func (d *Deps) createUsers(ctx context.Context, in *usersCreateInput) (*struct{}, error) {
	seen := map[string]bool{}
	users := make([]protocol.User, 0, len(in.Body.Users))
	for _, u := range in.Body.Users {
		if f := validUserName(u.Name); f != nil {
			return nil, f
		}
		if f := validPassword(u.Name, u.Password); f != nil {
			return nil, f
		}
		key := userKey(u.Name, u.Host)
		if seen[key] {
			return nil, openapi.BadRequest("Two or more users share the name and host '%s' in the request.", key)
		}
		seen[key] = true
		pu := protocol.User{Name: u.Name, Password: u.Password, Host: cmpOr(u.Host, "%")}
		for _, db := range u.Databases {
			if f := validDatabaseName(db.Name); f != nil {
				return nil, f
			}
			if !slices.Contains(pu.Databases, db.Name) {
				pu.Databases = append(pu.Databases, db.Name)
			}
		}
		users = append(users, pu)
	}
	return nil, d.changeAccounts(ctx, in.TenantID, in.InstanceID, "create users", func(t accountTarget, inv *inventory) error {
		for _, u := range users {
			if f := validHost(t.manager, u.Name, u.Host); f != nil {
				return f
			}
			if inv.user(u.Name, u.Host) != nil {
				return openapi.BadRequest("A user with the name \"%s\" already exists.", userKey(u.Name, u.Host))
			}
			for _, db := range u.Databases {
				if !inv.hasDatabase(db) {
					return openapi.NotFound("Database %s cannot be found on the instance.", db)
				}
			}
		}
		return t.queue(ctx, protocol.CommandCreateUsers, protocol.CreateUsersRequest{Users: users})
	})
}

func (d *Deps) changePasswords(ctx context.Context, in *usersPasswordsInput) (*struct{}, error) {
	reqs := make([]protocol.UpdateUserRequest, 0, len(in.Body.Users))
	for _, u := range in.Body.Users {
		if f := validUserPathName(u.Name); f != nil {
			return nil, f
		}
		if f := validPassword(u.Name, u.Password); f != nil {
			return nil, f
		}
		reqs = append(reqs, protocol.UpdateUserRequest{UserRef: protocol.UserRef{Name: u.Name, Host: cmpOr(u.Host, "%")}, NewPassword: u.Password})
	}
	return nil, d.changeAccounts(ctx, in.TenantID, in.InstanceID, "change passwords", func(t accountTarget, inv *inventory) error {
		for _, r := range reqs {
			if inv.user(r.Name, r.Host) == nil || reservedUserName(r.Name) {
				return userNotFound(userKey(r.Name, r.Host))
			}
		}
		for _, r := range reqs {
			if err := t.queue(ctx, protocol.CommandUpdateUser, r); err != nil {
				return err
			}
		}
		return nil
	})
}

func (d *Deps) updateUser(ctx context.Context, in *userUpdateInput) (*struct{}, error) {
	ref, f := userRef(in.User)
	if f != nil {
		return nil, f
	}
	attrs := in.Body.User
	if attrs.Name == nil && attrs.Password == nil && attrs.Host == nil {
		return nil, openapi.BadRequest("Validation error: user must set at least one of name, password and host.")
	}
	req := protocol.UpdateUserRequest{UserRef: ref}
	if attrs.Name != nil {
		if f := validUserName(*attrs.Name); f != nil {
			return nil, f
		}
		req.NewName = *attrs.Name
	}
	if attrs.Password != nil {
		if f := validPassword(ref.Name, *attrs.Password); f != nil {
			return nil, f
		}
		req.NewPassword = *attrs.Password
	}
	if attrs.Host != nil {
		if *attrs.Host == "" {
			return nil, openapi.BadRequest("Validation error: user host must not be empty.")
		}
		req.NewHost = *attrs.Host
	}
	return nil, d.changeAccounts(ctx, in.TenantID, in.InstanceID, "update user", func(t accountTarget, inv *inventory) error {
		if inv.user(ref.Name, ref.Host) == nil || reservedUserName(ref.Name) {
			return userNotFound(in.User)
		}
		if f := validHost(t.manager, cmpOr(req.NewName, ref.Name), req.NewHost); f != nil {
			return f
		}
		name, host := cmpOr(req.NewName, ref.Name), cmpOr(req.NewHost, ref.Host)
		if userKey(name, host) != userKey(ref.Name, ref.Host) && inv.user(name, host) != nil {
			return openapi.BadRequest("A user with the name \"%s\" already exists.", userKey(name, host))
		}
		return t.queue(ctx, protocol.CommandUpdateUser, req)
	})
}

func (d *Deps) deleteUser(ctx context.Context, in *userInput) (*struct{}, error) {
	ref, f := userRef(in.User)
	if f != nil {
		return nil, f
	}
	return nil, d.changeAccounts(ctx, in.TenantID, in.InstanceID, "delete user", func(t accountTarget, inv *inventory) error {
		if inv.user(ref.Name, ref.Host) == nil || reservedUserName(ref.Name) {
			return userNotFound(in.User)
		}
		return t.queue(ctx, protocol.CommandDeleteUser, ref)
	})
}

func (d *Deps) grantAccess(ctx context.Context, in *userGrantInput) (*struct{}, error) {
	ref, f := userRef(in.User)
	if f != nil {
		return nil, f
	}
	var dbs []string
	for _, db := range in.Body.Databases {
		if f := validDatabaseName(db.Name); f != nil {
			return nil, f
		}
		if !slices.Contains(dbs, db.Name) {
			dbs = append(dbs, db.Name)
		}
	}
	return nil, d.changeAccounts(ctx, in.TenantID, in.InstanceID, "grant access", func(t accountTarget, inv *inventory) error {
		if inv.user(ref.Name, ref.Host) == nil || reservedUserName(ref.Name) {
			return userNotFound(in.User)
		}
		for _, db := range dbs {
			if !inv.hasDatabase(db) {
				return openapi.NotFound("Database %s cannot be found on the instance.", db)
			}
		}
		return t.queue(ctx, protocol.CommandGrantAccess, protocol.GrantAccessRequest{UserRef: ref, Databases: dbs})
	})
}

func (d *Deps) revokeAccess(ctx context.Context, in *userDatabaseInput) (*struct{}, error) {
	ref, f := userRef(in.User)
	if f != nil {
		return nil, f
	}
	db := parseDatabasePath(in.Database)
	if f := validDatabaseName(db); f != nil {
		return nil, f
	}
	return nil, d.changeAccounts(ctx, in.TenantID, in.InstanceID, "revoke access", func(t accountTarget, inv *inventory) error {
		u := inv.user(ref.Name, ref.Host)
		if u == nil || reservedUserName(ref.Name) {
			return userNotFound(in.User)
		}
		if !slices.Contains(u.Databases, db) {
			return openapi.NotFound("Database %s cannot be found on the instance.", db)
		}
		return t.queue(ctx, protocol.CommandRevokeAccess, protocol.RevokeAccessRequest{UserRef: ref, Database: db})
	})
}
