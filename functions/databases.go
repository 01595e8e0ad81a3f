package functions

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strings"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/internal/status"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Databases, users, user access and root (Trove's instance extensions,
// API §6) share the machinery in this file.
//
// Mutations are asynchronous, as Trove's casts to the guest are: the
// handler validates, locks the tenant's instance, checks it against the
// inventory, queues the agent command (queueCommand) and answers 202. Reads
// answer from the inventory the agent reports with every heartbeat (and
// right after every command), never with a round trip to the guest.
//
// Existence checks (already exists → 400, not found → 404) run against the
// inventory as it will be once the agent has run the commands still open
// for the instance (projectedInventory), so a grant right after a create
// is accepted and a second create of the same name refused, however fast
// the requests come.

// accountsPageSize is Trove's databases_page_size and users_page_size.
const accountsPageSize = 20

// accountsLease is the lease of account commands: each is a few
// statements, but a database drop may wait for sessions to end.
const accountsLease = 120

// accountManagers are the datastore managers with databases and users
// (Trove's enabled_datastore for these extensions).
var accountManagers = map[string]bool{"postgresql": true, "mysql": true, "mariadb": true}

// accountCommands are the commands that change the inventory.
var accountCommands = []string{
	protocol.CommandCreateDatabases, protocol.CommandDeleteDatabase, protocol.CommandCreateUsers,
	protocol.CommandDeleteUser, protocol.CommandUpdateUser, protocol.CommandGrantAccess,
	protocol.CommandRevokeAccess, protocol.CommandEnableRoot, protocol.CommandDisableRoot,
}

// Names: what the PostgreSQL driver accepts (agent/driver/postgresql), so
// that a command the API queues never fails on a name: 1 to 63 letters,
// digits, '_', '.' or '-', starting with a letter or '_'.
var accountNamePattern = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_.-]{0,62}$`)

// Reserved names, compared case-insensitively: the internal and root
// superusers, Trove's ignore_users, PostgreSQL's role keywords (pg_* is
// checked apart), and the databases every cluster has (Trove's ignore_dbs
// and the templates).
var (
	accountReservedUsers     = []string{"postgres", "os_admin", "root", "public", "none", "current_user", "session_user", "current_role"}
	accountReservedDatabases = []string{"postgres", "template0", "template1", "os_admin"}
)

// postgresEncodings are PostgreSQL's server encodings and their aliases,
// normalised as PostgreSQL does (lower case, letters and digits only).
var postgresEncodings = func() map[string]bool {
	m := map[string]bool{}
	for _, e := range strings.Fields(`utf8 unicode sqlascii muleinternal euccn eucjp eucjis2004 euckr euctw
		koi8 koi8r koi8u alt win abc tcvn tcvn5712 vscii win866 win874 windows866 windows874
		latin1 latin2 latin3 latin4 latin5 latin6 latin7 latin8 latin9 latin10
		iso88591 iso88592 iso88593 iso88594 iso88595 iso88596 iso88597 iso88598 iso88599
		iso885910 iso885913 iso885914 iso885915 iso885916`) {
		m[e] = true
	}
	for n := 1250; n <= 1258; n++ {
		m[fmt.Sprint("win", n)], m[fmt.Sprint("windows", n)] = true, true
	}
	return m
}()

var collatePattern = regexp.MustCompile(`^[A-Za-z0-9_.@-]{1,64}$`)

func validDatabaseName(name string) *openapi.Fault {
	if !accountNamePattern.MatchString(name) {
		return openapi.BadRequest("'%s' is not a valid database name: use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or '_'.", name)
	}
	for _, r := range accountReservedDatabases {
		if strings.EqualFold(name, r) {
			return openapi.BadRequest("'%s' is not a valid database name: it is reserved.", name)
		}
	}
	return nil
}

// validDatabaseOptions checks a new database's character set and
// collation (each optional).
func validDatabaseOptions(charset, collate string) *openapi.Fault {
	if charset != "" && !postgresEncodings[normaliseEncoding(charset)] {
		return openapi.BadRequest("'%s' is not a valid character set.", charset)
	}
	if collate != "" && !collatePattern.MatchString(collate) {
		return openapi.BadRequest("'%s' is not a valid collation.", collate)
	}
	return nil
}

func validUserName(name string) *openapi.Fault {
	if !accountNamePattern.MatchString(name) {
		return openapi.BadRequest("'%s' is not a valid user name: use 1 to 63 letters, digits, '_', '.' or '-', starting with a letter or '_'.", name)
	}
	if reservedUserName(name) {
		return openapi.BadRequest("'%s' is not a valid user name: it is reserved.", name)
	}
	return nil
}

func reservedUserName(name string) bool {
	for _, r := range accountReservedUsers {
		if strings.EqualFold(name, r) {
			return true
		}
	}
	return strings.HasPrefix(strings.ToLower(name), "pg_")
}

// validPassword refuses what no datastore can store; it never echoes the
// password.
func validPassword(user, password string) *openapi.Fault {
	if password == "" {
		return openapi.BadRequest("The password of user '%s' is empty.", user)
	}
	if strings.ContainsRune(password, 0) {
		return openapi.BadRequest("The password of user '%s' contains a NUL character.", user)
	}
	return nil
}

// validHost checks a requested host. PostgreSQL roles have no host part:
// Trove's guest ignores the host, Coffer refuses anything but "%" so that
// nobody believes a user is limited to a host when it is not.
func validHost(manager, user, host string) *openapi.Fault {
	if host == "" || host == "%" {
		return nil
	}
	if manager == "postgresql" {
		return openapi.BadRequest("PostgreSQL users cannot be limited to a host: the host of user '%s' must be '%%' (any host) or omitted, not '%s'.", user, host)
	}
	if len(host) > 255 || strings.ContainsAny(host, "@'\"\\ /") {
		return openapi.BadRequest("'%s' is not a valid host.", host)
	}
	return nil
}

// userKey is Trove's user identity: name@host, host "%" when empty.
func userKey(name, host string) string {
	if host == "" {
		host = "%"
	}
	return name + "@" + host
}

// parseUserPath splits a {user} path segment (already percent-decoded by
// the router) as Trove does: a ".json" format suffix is dropped, the last
// '@' separates the host, and no host (no '@', or nothing after it) is "%".
func parseUserPath(seg string) (name, host string) {
	seg = strings.TrimSuffix(seg, ".json")
	i := strings.LastIndex(seg, "@")
	if i < 0 {
		return seg, "%"
	}
	if i == len(seg)-1 {
		return seg[:i], "%"
	}
	return seg[:i], seg[i+1:]
}

// parseDatabasePath drops a ".json" format suffix from a {database} path
// segment, as Trove's router does.
func parseDatabasePath(seg string) string { return strings.TrimSuffix(seg, ".json") }

// inventory is what an instance holds, as the agent reported it (or as it
// will be once the open commands ran).
type inventory struct {
	protocol.Inventory
}

func decodeInventory(b []byte) inventory {
	var inv inventory
	if len(b) > 0 {
		// Written by the agent API from a decoded heartbeat; if it were
		// ever unreadable, an empty inventory is the safe answer.
		_ = json.Unmarshal(b, &inv.Inventory)
	}
	return inv
}

func (v *inventory) hasDatabase(name string) bool {
	return slices.ContainsFunc(v.Databases, func(db protocol.Database) bool { return db.Name == name })
}

func (v *inventory) user(name, host string) *protocol.UserInfo {
	key := userKey(name, host)
	for i := range v.Users {
		if userKey(v.Users[i].Name, v.Users[i].Host) == key {
			return &v.Users[i]
		}
	}
	return nil
}

func (v *inventory) removeUser(name, host string) {
	key := userKey(name, host)
	v.Users = slices.DeleteFunc(v.Users, func(u protocol.UserInfo) bool { return userKey(u.Name, u.Host) == key })
}

// apply plays one open command onto the inventory. Each step is
// idempotent, so a command whose effect the last report already shows
// changes nothing.
func (v *inventory) apply(name string, payload []byte) {
	switch name {
	case protocol.CommandCreateDatabases:
		var p protocol.CreateDatabasesRequest
		if json.Unmarshal(payload, &p) == nil {
			for _, db := range p.Databases {
				if !v.hasDatabase(db.Name) {
					v.Databases = append(v.Databases, db)
				}
			}
		}
	case protocol.CommandDeleteDatabase:
		var p protocol.DeleteDatabaseRequest
		if json.Unmarshal(payload, &p) == nil {
			v.Databases = slices.DeleteFunc(v.Databases, func(db protocol.Database) bool { return db.Name == p.Name })
			for i := range v.Users {
				v.Users[i].Databases = slices.DeleteFunc(v.Users[i].Databases, func(db string) bool { return db == p.Name })
			}
		}
	case protocol.CommandCreateUsers:
		var p protocol.CreateUsersRequest
		if json.Unmarshal(payload, &p) == nil {
			for _, u := range p.Users {
				if v.user(u.Name, u.Host) == nil {
					v.Users = append(v.Users, protocol.UserInfo{Name: u.Name, Host: cmpOr(u.Host, "%")})
				}
				v.grant(u.Name, u.Host, u.Databases)
			}
		}
	case protocol.CommandDeleteUser:
		var p protocol.UserRef
		if json.Unmarshal(payload, &p) == nil {
			v.removeUser(p.Name, p.Host)
		}
	case protocol.CommandUpdateUser:
		var p protocol.UpdateUserRequest
		if json.Unmarshal(payload, &p) == nil && (p.NewName != "" || p.NewHost != "") {
			u := v.user(p.Name, p.Host)
			name, host := cmpOr(p.NewName, p.Name), cmpOr(p.NewHost, cmpOr(p.Host, "%"))
			if u != nil && v.user(name, host) == nil {
				u.Name, u.Host = name, host
			}
		}
	case protocol.CommandGrantAccess:
		var p protocol.GrantAccessRequest
		if json.Unmarshal(payload, &p) == nil {
			v.grant(p.Name, p.Host, p.Databases)
		}
	case protocol.CommandRevokeAccess:
		var p protocol.RevokeAccessRequest
		if json.Unmarshal(payload, &p) == nil {
			if u := v.user(p.Name, p.Host); u != nil {
				u.Databases = slices.DeleteFunc(u.Databases, func(db string) bool { return db == p.Database })
			}
		}
	case protocol.CommandEnableRoot:
		v.RootEnabled = true
	case protocol.CommandDisableRoot:
		v.RootEnabled = false
	}
}

func (v *inventory) grant(name, host string, dbs []string) {
	u := v.user(name, host)
	if u == nil {
		return
	}
	for _, db := range dbs {
		if !slices.Contains(u.Databases, db) {
			u.Databases = append(u.Databases, db)
		}
	}
}

func cmpOr(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// accountTarget is an instance an account request acts on.
type accountTarget struct {
	inst    store.Instance
	manager string
	q       *store.Queries // in the request's transaction, for mutations
}

// accountsReady is Trove's load_and_verify: the datastore has accounts
// and its service is running. Coffer also refuses while the instance is
// being built or deleted (its commands would never run).
func (d *Deps) accountsReady(inst store.Instance, manager string) *openapi.Fault {
	if !accountManagers[manager] {
		return openapi.Errorf(http.StatusUnprocessableEntity, "Operation not supported for datastore %s.", manager)
	}
	in := status.Instance{Task: inst.Task, ComputeStatus: inst.ComputeStatus, ServiceStatus: inst.ServiceStatus, HeartbeatAt: inst.HeartbeatAt}
	now := d.now()
	service := inst.ServiceStatus
	if status.HeartbeatStale(in, now) {
		service = protocol.ServiceGuestAgentError
	}
	busy := status.IsError(inst.Task) || inst.Task == status.TaskBuilding || inst.Task == status.TaskDeleting
	if !busy && (service == protocol.ServiceHealthy || service == protocol.ServiceRunning) {
		return nil
	}
	shown := status.OperatingStatus(in, now)
	if shown == "" {
		shown = status.Status(in)
	}
	return openapi.Errorf(http.StatusUnprocessableEntity, "Instance %s is not ready, status: %s.", inst.ID, shown)
}

// readAccounts loads the tenant's instance for a read and returns it with
// the inventory its agent last reported.
func (d *Deps) readAccounts(ctx context.Context, tenant, ref string) (accountTarget, inventory, error) {
	id, err := uuid.Parse(ref)
	if err != nil {
		return accountTarget{}, inventory{}, openapi.NotFound("Instance %s could not be found.", ref)
	}
	r, err := d.queries().GetInstance(ctx, store.GetInstanceParams{ID: id, ProjectID: tenant})
	if errors.Is(err, pgx.ErrNoRows) {
		return accountTarget{}, inventory{}, openapi.NotFound("Instance %s could not be found.", ref)
	}
	if err != nil {
		return accountTarget{}, inventory{}, d.internal(ctx, "read instance accounts", err)
	}
	if f := d.accountsReady(r.Instance, r.DatastoreManager); f != nil {
		return accountTarget{}, inventory{}, f
	}
	return accountTarget{inst: r.Instance, manager: r.DatastoreManager}, decodeInventory(r.Instance.Inventory), nil
}

// changeAccounts runs fn in a transaction that holds the tenant's instance
// locked, once Trove's checks pass. fn sees the projected inventory and
// queues its commands with t.q; a Fault it returns rolls everything back.
func (d *Deps) changeAccounts(ctx context.Context, tenant, ref, what string, fn func(t accountTarget, inv *inventory) error) error {
	id, err := uuid.Parse(ref)
	if err != nil {
		return openapi.NotFound("Instance %s could not be found.", ref)
	}
	err = pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		r, err := q.LockAccountInstance(ctx, store.LockAccountInstanceParams{ID: id, ProjectID: tenant})
		if errors.Is(err, pgx.ErrNoRows) {
			return openapi.NotFound("Instance %s could not be found.", ref)
		}
		if err != nil {
			return fmt.Errorf("lock instance: %w", err)
		}
		if f := d.accountsReady(r.Instance, r.DatastoreManager); f != nil {
			return f
		}
		inv := decodeInventory(r.Instance.Inventory)
		open, err := q.ListOpenAccountCommands(ctx, store.ListOpenAccountCommandsParams{InstanceID: id, Names: accountCommands})
		if err != nil {
			return fmt.Errorf("list open commands: %w", err)
		}
		for _, c := range open {
			inv.apply(c.Name, c.Payload)
		}
		return fn(accountTarget{inst: r.Instance, manager: r.DatastoreManager, q: q}, &inv)
	})
	var f *openapi.Fault
	if errors.As(err, &f) {
		return f
	}
	if err != nil {
		return d.internal(ctx, what, err)
	}
	return nil
}

// queue queues an account command for the target instance.
func (t accountTarget) queue(ctx context.Context, name string, payload any) error {
	_, err := jobs.QueueCommand(ctx, t.q, t.inst.ID, name, payload, accountsLease)
	return err
}

// accountsPage is one page of names sorted ascending, after marker.
func accountsPage(keys []string, marker string, limit int) (page []int, next string) {
	size := pageSize(limit, accountsPageSize)
	order := make([]int, len(keys))
	for i := range order {
		order[i] = i
	}
	slices.SortFunc(order, func(a, b int) int { return strings.Compare(keys[a], keys[b]) })
	for _, i := range order {
		if marker != "" && keys[i] <= marker {
			continue
		}
		if len(page) == size {
			return page, keys[page[len(page)-1]]
		}
		page = append(page, i)
	}
	return page, ""
}

func pageLinks(ctx context.Context, path string, limit int, next string) []openapi.Link {
	if next == "" {
		return nil
	}
	q := url.Values{}
	if limit > 0 {
		q.Set("limit", fmt.Sprint(limit))
	}
	return nextLink(ctx, path, q, next)
}

type accountListInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Limit      int    `query:"limit" minimum:"0" doc:"Page size (at most 20)"`
	Marker     string `query:"marker" maxLength:"400" doc:"Last name of the previous page (users: name@host)"`
}

type databaseListOutput struct {
	Body struct {
		Databases []openapi.DatabaseName `json:"databases"`
		Links     []openapi.Link         `json:"links,omitempty"`
	}
}

type databasesCreateInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       openapi.DatabasesCreate
}

type databaseInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Database   string `path:"database" maxLength:"255"`
}

func init() { register(Databases) }

// Databases serves the databases of an instance: list, create, delete.
func Databases(api huma.API, deps *Deps) {
	tags := []string{"Databases"}
	base := "/v1.0/{tenant_id}/instances/{instance_id}/databases"
	notReady := []int{http.StatusNotFound, http.StatusUnprocessableEntity}
	huma.Register(api, huma.Operation{
		OperationID: "list-databases", Method: http.MethodGet, Path: base,
		Summary:     "List databases",
		Description: "The databases the instance's agent last reported (it reports right after every change), by name; pages of at most 20 with a rel=next link.",
		Tags:        tags, Security: tokenSecurity, Errors: notReady,
	}, deps.listDatabases)
	huma.Register(api, huma.Operation{
		OperationID: "create-databases", Method: http.MethodPost, Path: base,
		Summary:     "Create databases",
		Description: "Accepted at once; the agent creates them. A name that exists (or is being created) answers 400.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity}, MaxBodyBytes: 64 << 10,
	}, deps.createDatabases)
	huma.Register(api, huma.Operation{
		OperationID: "show-database", Method: http.MethodGet, Path: base + "/{database}",
		Summary: "Show a database (not implemented, as in Trove)", Tags: tags, Security: tokenSecurity,
		Errors: []int{http.StatusNotFound, http.StatusNotImplemented},
	}, func(ctx context.Context, in *databaseInput) (*struct{}, error) {
		// Trove looks the instance up first: another project's is 404.
		if _, err := deps.getInstance(ctx, deps.queries(), in.TenantID, in.InstanceID); err != nil {
			return nil, err
		}
		return nil, openapi.Errorf(http.StatusNotImplemented, "The server has either erred or is incapable of performing the requested operation.")
	})
	huma.Register(api, huma.Operation{
		OperationID: "delete-database", Method: http.MethodDelete, Path: base + "/{database}",
		Summary:     "Delete a database",
		Description: "Accepted at once; the agent drops it, ending its sessions.",
		Tags:        tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity},
	}, deps.deleteDatabase)
}

func (d *Deps) listDatabases(ctx context.Context, in *accountListInput) (*databaseListOutput, error) {
	_, inv, err := d.readAccounts(ctx, in.TenantID, in.InstanceID)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(inv.Databases))
	for i, db := range inv.Databases {
		keys[i] = db.Name
	}
	page, next := accountsPage(keys, in.Marker, in.Limit)
	out := &databaseListOutput{}
	out.Body.Databases = make([]openapi.DatabaseName, 0, len(page))
	for _, i := range page {
		out.Body.Databases = append(out.Body.Databases, openapi.DatabaseName{Name: keys[i]})
	}
	out.Body.Links = pageLinks(ctx, "/v1.0/"+in.TenantID+"/instances/"+in.InstanceID+"/databases", in.Limit, next)
	return out, nil
}

func (d *Deps) createDatabases(ctx context.Context, in *databasesCreateInput) (*struct{}, error) {
	seen := map[string]bool{}
	dbs := make([]protocol.Database, 0, len(in.Body.Databases))
	for _, db := range in.Body.Databases {
		if f := validDatabaseName(db.Name); f != nil {
			return nil, f
		}
		if seen[db.Name] {
			return nil, openapi.BadRequest("Two or more databases share the name '%s' in the request.", db.Name)
		}
		seen[db.Name] = true
		if f := validDatabaseOptions(db.CharacterSet, db.Collate); f != nil {
			return nil, f
		}
		dbs = append(dbs, protocol.Database{Name: db.Name, CharacterSet: db.CharacterSet, Collate: db.Collate})
	}
	return nil, d.changeAccounts(ctx, in.TenantID, in.InstanceID, "create databases", func(t accountTarget, inv *inventory) error {
		for _, db := range dbs {
			if inv.hasDatabase(db.Name) {
				return openapi.BadRequest("A database with the name \"%s\" already exists.", db.Name)
			}
		}
		return t.queue(ctx, protocol.CommandCreateDatabases, protocol.CreateDatabasesRequest{Databases: dbs})
	})
}

// normaliseEncoding is PostgreSQL's rule for encoding names: case and
// punctuation do not matter ("UTF-8" is "utf8").
func normaliseEncoding(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func (d *Deps) deleteDatabase(ctx context.Context, in *databaseInput) (*struct{}, error) {
	name := parseDatabasePath(in.Database)
	if f := validDatabaseName(name); f != nil {
		return nil, f
	}
	return nil, d.changeAccounts(ctx, in.TenantID, in.InstanceID, "delete database", func(t accountTarget, inv *inventory) error {
		if !inv.hasDatabase(name) {
			return openapi.NotFound("Database %s cannot be found on the instance.", name)
		}
		return t.queue(ctx, protocol.CommandDeleteDatabase, protocol.DeleteDatabaseRequest{Name: name})
	})
}
