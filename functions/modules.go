package functions

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/md5"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/coffer-dbaas/coffer/agent/protocol"
	"github.com/coffer-dbaas/coffer/db/store"
	"github.com/coffer-dbaas/coffer/jobs"
	"github.com/coffer-dbaas/coffer/openapi"
)

// Modules (Trove §10): named contents a project applies to its instances.
// The guest stores a module's contents on the volume and runs its type's
// driver (agent/dispatch_module.go). Applying queues a module_apply
// command and answers at once; the guest's report (status, message) is
// recorded when the command completes (jobs/module.go) and is what
// from_guest=true lists, so reads never wait for the guest.
//
// Trove's admin-only options (all_tenants, hidden, auto_apply,
// priority_apply, full_access) are refused to members with Trove's
// ModuleAccessForbidden (403). Members see their own modules and the
// visible all-tenant ones; admins see every module. Contents are sealed
// at rest under the owner project's key when the deployment has a master
// key (Deps.Keys).

func init() { register(Modules) }

// moduleTypes are Trove's default module_types.
var moduleTypes = []string{protocol.ModuleTypePing, protocol.ModuleTypeNewRelicLicense}

// maxModuleContents bounds a module's contents: they travel in an agent
// command payload.
const maxModuleContents = 1 << 20

// moduleLeaseSeconds bounds one apply or remove on the guest (file writes).
const moduleLeaseSeconds = 60

// moduleAppliedMessage is Trove's ModuleAppliedToInstance.
const moduleAppliedMessage = "A module cannot be deleted or its contents modified if it has been applied to a non-terminated instance, unless the module has been marked as 'live_update.' Please remove the module from all non-terminated instances and try again."

type moduleInput struct {
	TenantPath
	ModuleID string `path:"module_id" maxLength:"64"`
}

type moduleListInput struct {
	TenantPath
	Datastore string `query:"datastore" maxLength:"255" doc:"Datastore name or id, or 'all' for modules of every datastore"`
}

type moduleCreateInput struct {
	TenantPath
	Body struct {
		Module openapi.ModuleCreate `json:"module"`
	}
}

type moduleUpdateInput struct {
	TenantPath
	ModuleID string `path:"module_id" maxLength:"64"`
	Body     struct {
		Module openapi.ModuleUpdate `json:"module"`
	}
}

type moduleInstancesInput struct {
	TenantPath
	ModuleID         string `path:"module_id" maxLength:"64"`
	IncludeClustered string `query:"include_clustered" maxLength:"8"`
	CountOnly        string `query:"count_only" maxLength:"8"`
	Limit            int    `query:"limit" minimum:"0"`
	Marker           string `query:"marker" maxLength:"64"`
}

type moduleReapplyInput struct {
	TenantPath
	ModuleID string `path:"module_id" maxLength:"64"`
	Body     struct {
		Reapply openapi.ModuleReapply `json:"reapply"`
	}
}

type instanceModulesInput struct {
	TenantPath
	InstanceID      string `path:"instance_id" maxLength:"64"`
	FromGuest       string `query:"from_guest" maxLength:"8" doc:"true: the guest's report of its applied modules"`
	IncludeContents string `query:"include_contents" maxLength:"8" doc:"true: with each module's contents (base64)"`
}

type instanceModulesApplyInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	Body       struct {
		Modules []openapi.ModuleRef `json:"modules" maxItems:"64"`
	}
}

type instanceModuleInput struct {
	TenantPath
	InstanceID string `path:"instance_id" maxLength:"64"`
	ModuleID   string `path:"module_id" maxLength:"64"`
}

type moduleOutput struct {
	Body struct {
		Module openapi.Module `json:"module"`
	}
}

type moduleListOutput struct {
	Body struct {
		Modules []openapi.Module `json:"modules"`
	}
}

type guestModulesOutput struct {
	Body struct {
		Modules []openapi.GuestModule `json:"modules"`
	}
}

type moduleInstancesOutput struct {
	Body struct {
		Instances any            `json:"instances" doc:"Instance views, or with count_only one count per applied md5"`
		Links     []openapi.Link `json:"links,omitempty"`
	}
}

// Modules serves /modules and an instance's modules.
func Modules(api huma.API, deps *Deps) {
	tags := []string{"Modules"}
	base := "/v1.0/{tenant_id}/modules"
	one := base + "/{module_id}"
	inst := "/v1.0/{tenant_id}/instances/{instance_id}/modules"
	huma.Register(api, huma.Operation{
		OperationID: "list-modules", Method: http.MethodGet, Path: base,
		Summary: "List modules", Description: "The project's modules and the visible all-tenant ones; admins see every module.",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.listModules)
	huma.Register(api, huma.Operation{
		OperationID: "create-module", Method: http.MethodPost, Path: base,
		Summary: "Create a module", Description: "contents is base64. all_tenants, visible=false, auto_apply, priority_apply and full_access are admin only (403).",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusOK, MaxBodyBytes: maxModuleContents * 3 / 2,
		Errors: []int{http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound},
	}, deps.createModule)
	huma.Register(api, huma.Operation{
		OperationID: "show-module", Method: http.MethodGet, Path: one,
		Summary: "Show a module", Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.showModule)
	huma.Register(api, huma.Operation{
		OperationID: "update-module", Method: http.MethodPut, Path: one,
		Summary: "Update a module", Description: "Contents of a module applied to live instances change only when it is live_update (403 otherwise).",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusOK, MaxBodyBytes: maxModuleContents * 3 / 2,
		Errors: []int{http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound},
	}, deps.updateModule)
	huma.Register(api, huma.Operation{
		OperationID: "delete-module", Method: http.MethodDelete, Path: one,
		Summary: "Delete a module", Description: "Refused (403) while the module is applied to a live instance.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusOK,
		Errors: []int{http.StatusForbidden, http.StatusNotFound},
	}, deps.deleteModule)
	huma.Register(api, huma.Operation{
		OperationID: "list-module-instances", Method: http.MethodGet, Path: one + "/instances",
		Summary: "List the instances a module is applied to", Description: "count_only=true: one row per applied md5 with its instance count.",
		Tags: tags, Security: tokenSecurity, Errors: []int{http.StatusBadRequest, http.StatusNotFound},
	}, deps.listModuleInstances)
	huma.Register(api, huma.Operation{
		OperationID: "reapply-module", Method: http.MethodPut, Path: one + "/instances",
		Summary: "Apply a module again to the instances it is applied to", Description: "Instances already at the module's md5 are skipped unless force; md5 limits it to instances applied with that md5.",
		Tags: tags, Security: tokenSecurity, DefaultStatus: http.StatusAccepted, MaxBodyBytes: 16 << 10,
		Errors: []int{http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound},
	}, deps.reapplyModule)
	huma.Register(api, huma.Operation{
		OperationID: "list-instance-modules", Method: http.MethodGet, Path: inst,
		Summary: "List an instance's modules", Description: "from_guest=true: the guest's report (status, message) of the modules it applied; include_contents=true adds their contents.",
		Tags: []string{"Instances"}, Security: tokenSecurity, Errors: []int{http.StatusNotFound},
	}, deps.listInstanceModules)
	huma.Register(api, huma.Operation{
		OperationID: "apply-instance-modules", Method: http.MethodPost, Path: inst,
		Summary: "Apply modules to an instance", Description: "Queues the apply on the guest and answers at once: status is null until the guest reports (see from_guest).",
		Tags: []string{"Instances"}, Security: tokenSecurity, DefaultStatus: http.StatusOK, MaxBodyBytes: 16 << 10,
		Errors: []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnprocessableEntity},
	}, deps.applyInstanceModules)
	huma.Register(api, huma.Operation{
		OperationID: "remove-instance-module", Method: http.MethodDelete, Path: inst + "/{module_id}",
		Summary: "Remove a module from an instance", Description: "The guest deletes the module's contents and undoes its driver.",
		Tags: []string{"Instances"}, Security: tokenSecurity, DefaultStatus: http.StatusOK,
		Errors: []int{http.StatusNotFound, http.StatusUnprocessableEntity},
	}, deps.removeInstanceModule)
}

// --- views and access ----------------------------------------------------

func moduleNotFound(ref string) *openapi.Fault {
	return openapi.NotFound("Module with ID %s could not be found.", ref)
}

func moduleView(m store.Module, datastore, version string) openapi.Module {
	v := openapi.Module{ID: m.ID.String(), Name: m.Name, Type: m.Type, Description: m.Description,
		Tenant: "all", Datastore: datastore, DatastoreVersion: version, AutoApply: m.AutoApply,
		PriorityApply: m.PriorityApply, ApplyOrder: int(m.ApplyOrder), IsAdmin: m.IsAdmin, MD5: m.Md5,
		Visible: m.Visible, LiveUpdate: m.LiveUpdate, Created: openapi.Time(m.CreatedAt), Updated: openapi.Time(m.UpdatedAt)}
	if !m.AllTenants {
		t := m.ProjectID
		v.TenantID, v.Tenant = &t, t
	}
	if m.DatastoreID.Valid {
		s := m.DatastoreID.UUID.String()
		v.DatastoreID = &s
	}
	if m.DatastoreVersionID.Valid {
		s := m.DatastoreVersionID.UUID.String()
		v.DatastoreVersionID = &s
	}
	return v
}

// visibleModule reports whether the caller may see (and apply) m.
func visibleModule(ctx context.Context, tenant string, m store.Module) bool {
	return principal(ctx).IsAdmin() || ((m.ProjectID == tenant || m.AllTenants) && m.Visible)
}

// getModule reads a module the caller may see; anything else is 404.
func (d *Deps) getModule(ctx context.Context, q *store.Queries, tenant, ref string) (store.GetModuleRow, error) {
	id, err := uuid.Parse(ref)
	if err != nil {
		return store.GetModuleRow{}, moduleNotFound(ref)
	}
	row, err := q.GetModule(ctx, id)
	if errors.Is(err, pgx.ErrNoRows) || (err == nil && !visibleModule(ctx, tenant, row.Module)) {
		return store.GetModuleRow{}, moduleNotFound(ref)
	}
	if err != nil {
		return row, d.internal(ctx, "load module", err)
	}
	return row, nil
}

// modifiable is Trove's check before a member changes or deletes a module:
// admin modules (and other projects' all-tenant ones) are the admins'.
func modifiable(ctx context.Context, tenant, action string, m store.Module) *openapi.Fault {
	if principal(ctx).IsAdmin() {
		return nil
	}
	if m.IsAdmin || m.ProjectID != tenant {
		return openapi.Errorf(http.StatusForbidden,
			"You must be admin to %s a module with these options. (Module is an admin module)", action)
	}
	return nil
}

// moduleOptions is the option set Trove's validate_action checks.
type moduleOptions struct {
	allTenants, autoApply, visible, priority bool
	fullAccess                               *bool
}

// adminOptions returns Trove's admin options string ("" when none) or
// the fault for an invalid or forbidden combination.
func (o moduleOptions) adminOptions(ctx context.Context, action string) (string, *openapi.Fault) {
	var opts []string
	if o.allTenants {
		opts = append(opts, "Tenant: all")
	}
	if o.autoApply {
		opts = append(opts, "Auto: True")
	}
	if !o.visible {
		opts = append(opts, "Visible: False")
	}
	if o.priority {
		opts = append(opts, "Priority: True")
	}
	if o.fullAccess != nil {
		if *o.fullAccess && len(opts) > 0 {
			return "", openapi.BadRequest("You cannot set full access and any admin options (%s).", strings.Join(opts, ", "))
		}
		opts = append(opts, "Full Access: "+pyBool(*o.fullAccess))
	}
	if len(opts) == 0 {
		return "", nil
	}
	s := "(" + strings.Join(opts, ", ") + ")"
	if !principal(ctx).IsAdmin() {
		return "", openapi.Errorf(http.StatusForbidden, "You must be admin to %s a module with these options. %s", action, s)
	}
	return s, nil
}

func pyBool(b bool) string {
	if b {
		return "True"
	}
	return "False"
}

// isAdminModule is Trove's is_admin: set by admin options, unless the admin
// asked for full access.
func (o moduleOptions) isAdminModule(adminOpts string) bool {
	return adminOpts != "" && (o.fullAccess == nil || !*o.fullAccess)
}

func flag(f *openapi.Flag, def bool) bool {
	if f == nil {
		return def
	}
	return bool(*f)
}

// validModuleName refuses names the guest could not use as a file name.
func validModuleName(name string) *openapi.Fault {
	if strings.TrimSpace(name) == "" || name == "." || name == ".." || strings.ContainsAny(name, "/\\") ||
		strings.ContainsFunc(name, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
		return openapi.BadRequest("Module name '%s' is invalid: it must be a file name (no '/', '\\', control characters, '.' or '..').", name)
	}
	return nil
}

func validModuleType(t string) *openapi.Fault {
	if !slices.Contains(moduleTypes, strings.ToLower(t)) {
		return openapi.NotFound("Module type '%s' was not found.", t)
	}
	return nil
}

// decodeContents decodes base64 contents and returns them with their md5.
func decodeContents(s string) ([]byte, string, *openapi.Fault) {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil, "", openapi.BadRequest("Module contents must be base64 encoded.")
	}
	if len(b) == 0 {
		return nil, "", openapi.BadRequest("Module contents must not be empty.")
	}
	if len(b) > maxModuleContents {
		return nil, "", openapi.BadRequest("Module contents must be at most %d bytes.", maxModuleContents)
	}
	sum := md5.Sum(b)
	return b, hex.EncodeToString(sum[:]), nil
}

// moduleDatastore resolves a module's datastore restriction.
func (d *Deps) moduleDatastore(ctx context.Context, q *store.Queries, ds *openapi.ModuleDatastore) (uuid.NullUUID, uuid.NullUUID, error) {
	if ds == nil || (ds.Type == "" && ds.Version == "") {
		return uuid.NullUUID{}, uuid.NullUUID{}, nil
	}
	if ds.Type == "" {
		return uuid.NullUUID{}, uuid.NullUUID{}, openapi.BadRequest("Cannot specify version without datastore.")
	}
	store, err := findDatastore(ctx, q, ds.Type)
	if err != nil {
		return uuid.NullUUID{}, uuid.NullUUID{}, d.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", ds.Type))
	}
	dsID := uuid.NullUUID{UUID: store.ID, Valid: true}
	if ds.Version == "" {
		return dsID, uuid.NullUUID{}, nil
	}
	v, err := findVersion(ctx, q, store, ds.Version)
	if err != nil {
		return uuid.NullUUID{}, uuid.NullUUID{}, d.lookupError(ctx, err, openapi.NotFound("Datastore version '%s' cannot be found.", ds.Version))
	}
	return dsID, uuid.NullUUID{UUID: v.ID, Valid: true}, nil
}

func moduleWriteError(err error, name string) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "23505" {
		return openapi.BadRequest("A module with the name '%s' already exists.", name)
	}
	return err
}

// --- contents at rest ----------------------------------------------------

// sealContents encrypts a module's contents under a fresh data key wrapped
// by the owner project's key; without a keyring they are stored as given.
func (d *Deps) sealContents(ctx context.Context, q *store.Queries, project string, id uuid.UUID, plain []byte) (sealed, wrapped []byte, err error) {
	if d.Keys == nil {
		return plain, nil, nil
	}
	pk, err := d.Keys.ProjectKey(ctx, q, project)
	if err != nil {
		return nil, nil, fmt.Errorf("seal module %s: %w", id, err)
	}
	key, wrapped, err := d.Keys.NewDataKey(pk, id)
	if err != nil {
		return nil, nil, fmt.Errorf("seal module %s: %w", id, err)
	}
	aead, err := moduleAEAD(key)
	if err != nil {
		return nil, nil, fmt.Errorf("seal module %s: %w", id, err)
	}
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plain)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return nil, nil, fmt.Errorf("seal module %s: %w", id, err)
	}
	return aead.Seal(nonce, nonce, plain, id[:]), wrapped, nil
}

// openContents returns a module's plain contents.
func (d *Deps) openContents(ctx context.Context, q *store.Queries, m store.Module) ([]byte, error) {
	if m.ContentsKey == nil {
		return m.Contents, nil
	}
	if d.Keys == nil {
		return nil, fmt.Errorf("module %s is sealed and this process has no master key", m.ID)
	}
	pk, err := d.Keys.ProjectKey(ctx, q, m.ProjectID)
	if err != nil {
		return nil, fmt.Errorf("open module %s: %w", m.ID, err)
	}
	key, err := d.Keys.Unwrap(pk, m.ID, m.ContentsKey)
	if err != nil {
		return nil, fmt.Errorf("open module %s: %w", m.ID, err)
	}
	aead, err := moduleAEAD(key)
	if err != nil {
		return nil, fmt.Errorf("open module %s: %w", m.ID, err)
	}
	if len(m.Contents) < aead.NonceSize() {
		return nil, fmt.Errorf("open module %s: contents too short", m.ID)
	}
	plain, err := aead.Open(nil, m.Contents[:aead.NonceSize()], m.Contents[aead.NonceSize():], m.ID[:])
	if err != nil {
		return nil, fmt.Errorf("open module %s: %w", m.ID, err)
	}
	return plain, nil
}

func moduleAEAD(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// --- modules ---------------------------------------------------------------

func (d *Deps) listModules(ctx context.Context, in *moduleListInput) (*moduleListOutput, error) {
	q := d.queries()
	var project pgtype.Text
	if !principal(ctx).IsAdmin() {
		project = pgtype.Text{String: in.TenantID, Valid: true}
	}
	var filter *uuid.NullUUID
	if in.Datastore != "" {
		filter = &uuid.NullUUID{}
		if strings.ContainsFunc(in.Datastore, unicode.IsControl) {
			return nil, openapi.NotFound("Datastore cannot be found.")
		}
		if !strings.EqualFold(in.Datastore, "all") {
			ds, err := findDatastore(ctx, q, in.Datastore)
			if err != nil {
				return nil, d.lookupError(ctx, err, openapi.NotFound("Datastore '%s' cannot be found.", in.Datastore))
			}
			*filter = uuid.NullUUID{UUID: ds.ID, Valid: true}
		}
	}
	rows, err := q.ListModules(ctx, project)
	if err != nil {
		return nil, d.internal(ctx, "list modules", err)
	}
	out := &moduleListOutput{}
	out.Body.Modules = []openapi.Module{}
	for _, r := range rows {
		if filter != nil && *filter != r.Module.DatastoreID {
			continue
		}
		out.Body.Modules = append(out.Body.Modules, moduleView(r.Module, r.DatastoreName, r.VersionName))
	}
	return out, nil
}

func (d *Deps) createModule(ctx context.Context, in *moduleCreateInput) (*moduleOutput, error) {
	req := in.Body.Module
	if f := validModuleName(req.Name); f != nil {
		return nil, f
	}
	if f := validModuleType(req.ModuleType); f != nil {
		return nil, f
	}
	contents, sum, f := decodeContents(req.Contents)
	if f != nil {
		return nil, f
	}
	opts := moduleOptions{allTenants: flag(req.AllTenants, false), autoApply: flag(req.AutoApply, false),
		visible: flag(req.Visible, true), priority: flag(req.Priority, false)}
	if req.FullAccess != nil {
		fa := bool(*req.FullAccess)
		opts.fullAccess = &fa
	}
	adminOpts, f := opts.adminOptions(ctx, "create")
	if f != nil {
		return nil, f
	}
	order := 5
	if req.ApplyOrder != nil {
		order = *req.ApplyOrder
	}
	desc := ""
	if req.Description != nil {
		desc = *req.Description
	}
	out := &moduleOutput{}
	err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		dsID, verID, err := d.moduleDatastore(ctx, q, req.Datastore)
		if err != nil {
			return err
		}
		id := uuid.New()
		sealed, key, err := d.sealContents(ctx, q, in.TenantID, id, contents)
		if err != nil {
			return err
		}
		m, err := q.InsertModule(ctx, store.InsertModuleParams{ID: id, ProjectID: in.TenantID, AllTenants: opts.allTenants,
			Name: req.Name, Type: strings.ToLower(req.ModuleType), Description: desc, Contents: sealed, ContentsKey: key, Md5: sum,
			DatastoreID: dsID, DatastoreVersionID: verID, AutoApply: opts.autoApply, Visible: opts.visible,
			LiveUpdate: flag(req.LiveUpdate, false), PriorityApply: opts.priority, ApplyOrder: int32(order),
			IsAdmin: opts.isAdminModule(adminOpts)})
		if err != nil {
			return moduleWriteError(err, req.Name)
		}
		row, err := q.GetModule(ctx, m.ID)
		if err != nil {
			return fmt.Errorf("read created module: %w", err)
		}
		out.Body.Module = moduleView(row.Module, row.DatastoreName, row.VersionName)
		return nil
	})
	if err != nil {
		return nil, d.faultOr(ctx, "create module", err)
	}
	return out, nil
}

// faultOr passes a fault through and hides anything else behind a 500.
func (d *Deps) faultOr(ctx context.Context, what string, err error) error {
	var f *openapi.Fault
	if errors.As(err, &f) {
		return f
	}
	return d.internal(ctx, what, err)
}

func (d *Deps) showModule(ctx context.Context, in *moduleInput) (*moduleOutput, error) {
	q := d.queries()
	row, err := d.getModule(ctx, q, in.TenantID, in.ModuleID)
	if err != nil {
		return nil, err
	}
	n, err := d.moduleInstanceCount(ctx, q, in.TenantID, row.Module.ID)
	if err != nil {
		return nil, d.internal(ctx, "show module", err)
	}
	out := &moduleOutput{}
	out.Body.Module = moduleView(row.Module, row.DatastoreName, row.VersionName)
	out.Body.Module.InstanceCount = &n
	return out, nil
}

// moduleInstanceCount counts the live instances with the module that the
// caller may know about (an admin: all).
func (d *Deps) moduleInstanceCount(ctx context.Context, q *store.Queries, tenant string, id uuid.UUID) (int64, error) {
	rows, err := q.ModuleInstanceCounts(ctx, store.ModuleInstanceCountsParams{ModuleID: id, ProjectID: scopeOf(ctx, tenant)})
	var n int64
	for _, r := range rows {
		n += r.InstanceCount
	}
	return n, err
}

// scopeOf is the project filter of a read: none for admins.
func scopeOf(ctx context.Context, tenant string) pgtype.Text {
	if principal(ctx).IsAdmin() {
		return pgtype.Text{}
	}
	return pgtype.Text{String: tenant, Valid: true}
}

func (d *Deps) updateModule(ctx context.Context, in *moduleUpdateInput) (*moduleOutput, error) {
	req := in.Body.Module
	out := &moduleOutput{}
	err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		row, err := d.getModule(ctx, q, in.TenantID, in.ModuleID)
		if err != nil {
			return err
		}
		m := row.Module
		if f := modifiable(ctx, in.TenantID, "update", m); f != nil {
			return f
		}
		p := store.UpdateModuleParams{ID: m.ID, AllTenants: flag(req.AllTenants, m.AllTenants), Name: m.Name, Type: m.Type,
			Description: m.Description, Contents: m.Contents, ContentsKey: m.ContentsKey, Md5: m.Md5,
			DatastoreID: m.DatastoreID, DatastoreVersionID: m.DatastoreVersionID, AutoApply: flag(req.AutoApply, m.AutoApply),
			Visible: flag(req.Visible, m.Visible), LiveUpdate: flag(req.LiveUpdate, m.LiveUpdate),
			PriorityApply: flag(req.Priority, m.PriorityApply), ApplyOrder: m.ApplyOrder}
		if req.Name != nil {
			if f := validModuleName(*req.Name); f != nil {
				return f
			}
			p.Name = *req.Name
		}
		if req.ModuleType != nil {
			if f := validModuleType(*req.ModuleType); f != nil {
				return f
			}
			p.Type = strings.ToLower(*req.ModuleType)
		}
		if req.Description != nil {
			p.Description = *req.Description
		}
		if req.ApplyOrder != nil {
			p.ApplyOrder = int32(*req.ApplyOrder)
		}
		if req.Datastore != nil && req.Datastore.Type != "" {
			if p.DatastoreID, p.DatastoreVersionID, err = d.moduleDatastore(ctx, q, req.Datastore); err != nil {
				return err
			}
		} else if req.Datastore != nil && req.Datastore.Version != "" {
			return openapi.BadRequest("Cannot specify version without datastore.")
		}
		if flag(req.AllDatastores, false) {
			p.DatastoreID, p.DatastoreVersionID = uuid.NullUUID{}, uuid.NullUUID{}
		}
		if flag(req.AllDatastoreVersions, false) {
			p.DatastoreVersionID = uuid.NullUUID{}
		}
		opts := moduleOptions{allTenants: p.AllTenants, autoApply: p.AutoApply, visible: p.Visible, priority: p.PriorityApply}
		if req.FullAccess != nil {
			fa := bool(*req.FullAccess)
			opts.fullAccess = &fa
		} else if !m.IsAdmin && principal(ctx).IsAdmin() && (m.AllTenants || m.AutoApply || !m.Visible || m.PriorityApply) {
			fa := true // a full-access module stays one
			opts.fullAccess = &fa
		}
		adminOpts, f := opts.adminOptions(ctx, "update")
		if f != nil {
			return f
		}
		p.IsAdmin = opts.isAdminModule(adminOpts)
		if req.Contents != nil {
			contents, sum, f := decodeContents(*req.Contents)
			if f != nil {
				return f
			}
			if sum != m.Md5 {
				if !p.LiveUpdate {
					n, err := q.CountModuleLiveInstances(ctx, m.ID)
					if err != nil {
						return fmt.Errorf("count module instances: %w", err)
					}
					if n > 0 {
						return openapi.Errorf(http.StatusForbidden, "%s", moduleAppliedMessage)
					}
				}
				if p.Contents, p.ContentsKey, err = d.sealContents(ctx, q, m.ProjectID, m.ID, contents); err != nil {
					return err
				}
				p.Md5 = sum
			}
		}
		if _, err := q.UpdateModule(ctx, p); err != nil {
			return moduleWriteError(err, p.Name)
		}
		row, err = q.GetModule(ctx, m.ID)
		if err != nil {
			return fmt.Errorf("read updated module: %w", err)
		}
		out.Body.Module = moduleView(row.Module, row.DatastoreName, row.VersionName)
		return nil
	})
	if err != nil {
		return nil, d.faultOr(ctx, "update module", err)
	}
	return out, nil
}

func (d *Deps) deleteModule(ctx context.Context, in *moduleInput) (*struct{}, error) {
	err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		row, err := d.getModule(ctx, q, in.TenantID, in.ModuleID)
		if err != nil {
			return err
		}
		if f := modifiable(ctx, in.TenantID, "delete", row.Module); f != nil {
			return f
		}
		n, err := q.CountModuleLiveInstances(ctx, row.Module.ID)
		if err != nil {
			return fmt.Errorf("count module instances: %w", err)
		}
		if n > 0 {
			return openapi.Errorf(http.StatusForbidden, "%s", moduleAppliedMessage)
		}
		return q.DeleteModule(ctx, row.Module.ID)
	})
	if err != nil {
		return nil, d.faultOr(ctx, "delete module", err)
	}
	return nil, nil
}

// queryTrue reads a Python-style boolean query value ("True", "true", "1").
func queryTrue(s string) bool {
	b, err := strconv.ParseBool(s)
	return err == nil && b
}

func (d *Deps) listModuleInstances(ctx context.Context, in *moduleInstancesInput) (*moduleInstancesOutput, error) {
	q := d.queries()
	row, err := d.getModule(ctx, q, in.TenantID, in.ModuleID)
	if err != nil {
		return nil, err
	}
	m := row.Module
	out := &moduleInstancesOutput{}
	if queryTrue(in.CountOnly) {
		counts, err := q.ModuleInstanceCounts(ctx, store.ModuleInstanceCountsParams{ModuleID: m.ID, ProjectID: scopeOf(ctx, in.TenantID)})
		if err != nil {
			return nil, d.internal(ctx, "count module instances", err)
		}
		list := []openapi.ModuleInstanceCount{}
		for _, c := range counts {
			list = append(list, openapi.ModuleInstanceCount{ModuleName: m.Name, ModuleID: m.ID.String(), ModuleMD5: c.Md5,
				InstanceCount: c.InstanceCount, Current: c.Md5 == m.Md5,
				MinUpdatedDate: openapi.Time(c.MinUpdated), MaxUpdatedDate: openapi.Time(c.MaxUpdated)})
		}
		out.Body.Instances = list
		return out, nil
	}
	size := pageSize(in.Limit, instancesPageSize)
	params := store.ListModuleInstancesParams{ModuleID: m.ID, ProjectID: scopeOf(ctx, in.TenantID), MaxRows: int32(size + 1)}
	if params.Marker, err = idMarker(in.Marker); err != nil {
		return nil, err
	}
	rows, err := q.ListModuleInstances(ctx, params)
	if err != nil {
		return nil, d.internal(ctx, "list module instances", err)
	}
	if len(rows) > size {
		rows = rows[:size]
		qs := url.Values{}
		if in.Limit > 0 {
			qs.Set("limit", strconv.Itoa(in.Limit))
		}
		out.Body.Links = nextLink(ctx, "/v1.0/"+in.TenantID+"/modules/"+m.ID.String()+"/instances", qs, rows[len(rows)-1].Instance.ID.String())
	}
	list := make([]openapi.Instance, 0, len(rows))
	for _, r := range rows {
		list = append(list, d.instanceView(ctx, instanceRow{Instance: r.Instance, FlavorName: r.FlavorName,
			VersionName: r.VersionName, VersionNumber: r.VersionNumber, DatastoreName: r.DatastoreName}, false, false))
	}
	out.Body.Instances = list
	return out, nil
}

func (d *Deps) reapplyModule(ctx context.Context, in *moduleReapplyInput) (*struct{}, error) {
	req := in.Body.Reapply
	err := pgx.BeginFunc(ctx, d.Pool, func(tx pgx.Tx) error {
		q := store.New(tx)
		row, err := d.getModule(ctx, q, in.TenantID, in.ModuleID)
		if err != nil {
			return err
		}
		m := row.Module
		// A member reapplies only to its own instances (scopeOf), so any
		// module it can see it may reapply.
		rows, err := q.ListModuleInstances(ctx, store.ListModuleInstancesParams{ModuleID: m.ID, ProjectID: scopeOf(ctx, in.TenantID), MaxRows: 1 << 20})
		if err != nil {
			return fmt.Errorf("list module instances: %w", err)
		}
		applied, err := d.appliedMD5s(ctx, q, rows, m.ID)
		if err != nil {
			return err
		}
		for _, r := range rows {
			md5 := applied[r.Instance.ID]
			if (req.MD5 != "" && md5 != req.MD5) || (md5 == m.Md5 && !flag(req.Force, false)) || actionable(r.Instance) != nil {
				continue
			}
			if err := d.queueModuleApply(ctx, q, r.Instance.ID, []store.Module{m}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, d.faultOr(ctx, "reapply module", err)
	}
	return nil, nil
}

// appliedMD5s maps each instance to the md5 of the module it was applied with.
func (d *Deps) appliedMD5s(ctx context.Context, q *store.Queries, rows []store.ListModuleInstancesRow, module uuid.UUID) (map[uuid.UUID]string, error) {
	out := make(map[uuid.UUID]string, len(rows))
	for _, r := range rows {
		mods, err := q.ListInstanceModules(ctx, r.Instance.ID)
		if err != nil {
			return nil, fmt.Errorf("list modules of %s: %w", r.Instance.ID, err)
		}
		for _, im := range mods {
			if im.Module.ID == module {
				out[r.Instance.ID] = im.AppliedMd5
			}
		}
	}
	return out, nil
}

// --- an instance's modules -------------------------------------------------

// queueModuleApply queues one module_apply command carrying mods (in
// Trove's apply order) and records them as applied with that command.
func (d *Deps) queueModuleApply(ctx context.Context, q *store.Queries, instance uuid.UUID, mods []store.Module) error {
	slices.SortStableFunc(mods, func(a, b store.Module) int {
		switch {
		case a.PriorityApply != b.PriorityApply && a.PriorityApply:
			return -1
		case a.PriorityApply != b.PriorityApply:
			return 1
		case a.ApplyOrder != b.ApplyOrder:
			return int(a.ApplyOrder - b.ApplyOrder)
		}
		return strings.Compare(a.Name, b.Name)
	})
	req := protocol.ModuleApplyRequest{}
	for _, m := range mods {
		plain, err := d.openContents(ctx, q, m)
		if err != nil {
			return err
		}
		req.Modules = append(req.Modules, protocol.Module{ID: m.ID.String(), Name: m.Name, Type: m.Type, MD5: m.Md5, Contents: plain})
	}
	cmd, err := jobs.QueueCommand(ctx, q, instance, protocol.CommandModuleApply, req, moduleLeaseSeconds)
	if err != nil {
		return err
	}
	for _, m := range mods {
		if err := q.UpsertInstanceModule(ctx, store.UpsertInstanceModuleParams{InstanceID: instance, ModuleID: m.ID,
			Md5: m.Md5, CommandID: uuid.NullUUID{UUID: cmd, Valid: true}}); err != nil {
			return fmt.Errorf("record module %s on %s: %w", m.ID, instance, err)
		}
	}
	return nil
}

// moduleFitsInstance is Trove's datastore check before an apply.
func moduleFitsInstance(m store.Module, inst store.Instance, datastoreID uuid.UUID) *openapi.Fault {
	if (m.DatastoreID.Valid && m.DatastoreID.UUID != datastoreID) ||
		(m.DatastoreVersionID.Valid && m.DatastoreVersionID.UUID != inst.DatastoreVersionID) {
		return openapi.BadRequest("Module '%s' cannot be applied to instance %s: its datastore or version differs.", m.Name, inst.ID)
	}
	return nil
}

// instanceDatastoreID is the datastore of an instance's version.
func instanceDatastoreID(ctx context.Context, q *store.Queries, inst store.Instance) (uuid.UUID, error) {
	v, err := q.GetDatastoreVersion(ctx, inst.DatastoreVersionID)
	if err != nil {
		return uuid.Nil, fmt.Errorf("datastore version of %s: %w", inst.ID, err)
	}
	return v.DatastoreID, nil
}

// resolveModules reads the modules a request names (each visible to the
// caller and fitting the instance), without duplicates.
func (d *Deps) resolveModules(ctx context.Context, q *store.Queries, tenant string, inst store.Instance, refs []openapi.ModuleRef) ([]store.Module, error) {
	dsID, err := instanceDatastoreID(ctx, q, inst)
	if err != nil {
		return nil, err
	}
	var mods []store.Module
	seen := map[uuid.UUID]bool{}
	for _, ref := range refs {
		row, err := d.getModule(ctx, q, tenant, ref.ID)
		if err != nil {
			return nil, err
		}
		if seen[row.Module.ID] {
			continue
		}
		seen[row.Module.ID] = true
		if f := moduleFitsInstance(row.Module, inst, dsID); f != nil {
			return nil, f
		}
		mods = append(mods, row.Module)
	}
	return mods, nil
}

func guestModuleView(m store.Module, datastore, version string) openapi.GuestModule {
	v := openapi.GuestModule{ID: m.ID.String(), Name: m.Name, Type: m.Type, Datastore: datastore, DatastoreVersion: version,
		Tenant: "all", MD5: m.Md5, Created: openapi.Time(m.CreatedAt), Updated: openapi.Time(m.UpdatedAt),
		AutoApply: m.AutoApply, Visible: m.Visible, IsAdmin: m.IsAdmin}
	if !m.AllTenants {
		v.Tenant = m.ProjectID
	}
	return v
}

func (d *Deps) listInstanceModules(ctx context.Context, in *instanceModulesInput) (*guestModulesOutput, error) {
	id, err := uuid.Parse(in.InstanceID)
	if err != nil {
		return nil, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	}
	q := d.queries()
	if _, err := q.GetInstance(ctx, store.GetInstanceParams{ID: id, ProjectID: in.TenantID}); errors.Is(err, pgx.ErrNoRows) {
		return nil, openapi.NotFound("Instance %s could not be found.", in.InstanceID)
	} else if err != nil {
		return nil, d.internal(ctx, "list instance modules", err)
	}
	rows, err := q.ListInstanceModules(ctx, id)
	if err != nil {
		return nil, d.internal(ctx, "list instance modules", err)
	}
	fromGuest, withContents := queryTrue(in.FromGuest), queryTrue(in.IncludeContents)
	out := &guestModulesOutput{}
	out.Body.Modules = []openapi.GuestModule{}
	for _, r := range rows {
		if fromGuest && !r.Status.Valid {
			continue // the guest has not reported this module yet
		}
		v := guestModuleView(r.Module, r.DatastoreName, r.VersionName)
		v.MD5 = r.AppliedMd5
		if fromGuest {
			s := r.Status.String
			v.Status, v.Message = &s, r.Message
			v.Created, v.Updated = openapi.Time(r.AppliedAt), openapi.Time(r.ReportedAt)
		}
		if fromGuest && withContents {
			plain, err := d.openContents(ctx, q, r.Module)
			if err != nil {
				return nil, d.internal(ctx, "module contents", err)
			}
			s := base64.StdEncoding.EncodeToString(plain)
			v.Contents = &s
		}
		out.Body.Modules = append(out.Body.Modules, v)
	}
	return out, nil
}

func (d *Deps) applyInstanceModules(ctx context.Context, in *instanceModulesApplyInput) (*guestModulesOutput, error) {
	if len(in.Body.Modules) == 0 {
		return nil, openapi.BadRequest("No modules specified.")
	}
	out := &guestModulesOutput{}
	out.Body.Modules = []openapi.GuestModule{}
	err := d.withInstance(ctx, in.TenantID, in.InstanceID, func(_ pgx.Tx, q *store.Queries, inst store.Instance) error {
		if f := actionable(inst); f != nil {
			return f
		}
		mods, err := d.resolveModules(ctx, q, in.TenantID, inst, in.Body.Modules)
		if err != nil {
			return err
		}
		if err := d.queueModuleApply(ctx, q, inst.ID, slices.Clone(mods)); err != nil {
			return err
		}
		for _, m := range mods {
			row, err := q.GetModule(ctx, m.ID)
			if err != nil {
				return fmt.Errorf("read module %s: %w", m.ID, err)
			}
			v := guestModuleView(m, row.DatastoreName, row.VersionName)
			v.Message = "Apply queued on the guest"
			out.Body.Modules = append(out.Body.Modules, v)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (d *Deps) removeInstanceModule(ctx context.Context, in *instanceModuleInput) (*struct{}, error) {
	err := d.withInstance(ctx, in.TenantID, in.InstanceID, func(_ pgx.Tx, q *store.Queries, inst store.Instance) error {
		row, err := d.getModule(ctx, q, in.TenantID, in.ModuleID)
		if err != nil {
			return err
		}
		// As Trove, removing a module that is not applied is no error; the
		// guest's removal is idempotent, so it runs anyway (and clears any
		// leftover contents).
		if _, err := q.DeleteInstanceModule(ctx, store.DeleteInstanceModuleParams{InstanceID: inst.ID, ModuleID: row.Module.ID}); err != nil {
			return fmt.Errorf("remove module %s: %w", row.Module.ID, err)
		}
		_, err = jobs.QueueCommand(ctx, q, inst.ID, protocol.CommandModuleRemove,
			protocol.ModuleRemoveRequest{ID: row.Module.ID.String(), Name: row.Module.Name, Type: row.Module.Type}, moduleLeaseSeconds)
		return err
	})
	if err != nil {
		return nil, err
	}
	return nil, nil
}

// createModules applies, after prepare, the modules a create request
// names plus the auto-apply modules of the project and datastore version;
// q is the create's transaction.
func (d *Deps) createModules(ctx context.Context, q *store.Queries, inst store.Instance, requested any) error {
	var refs []openapi.ModuleRef
	if requested != nil && !isEmptyJSON(requested) {
		b, err := json.Marshal(requested)
		if err != nil || json.Unmarshal(b, &refs) != nil {
			return openapi.BadRequest("Validation error: instance modules must be a list of {\"id\": <module id>}.")
		}
	}
	mods, err := d.resolveModules(ctx, q, inst.ProjectID, inst, refs)
	if err != nil {
		return err
	}
	dsID, err := instanceDatastoreID(ctx, q, inst)
	if err != nil {
		return err
	}
	auto, err := q.ListAutoApplyModules(ctx, store.ListAutoApplyModulesParams{ProjectID: inst.ProjectID,
		DatastoreID: uuid.NullUUID{UUID: dsID, Valid: true}, DatastoreVersionID: uuid.NullUUID{UUID: inst.DatastoreVersionID, Valid: true}})
	if err != nil {
		return fmt.Errorf("auto-apply modules: %w", err)
	}
	for _, m := range auto {
		if !slices.ContainsFunc(mods, func(x store.Module) bool { return x.ID == m.ID }) {
			mods = append(mods, m)
		}
	}
	if len(mods) == 0 {
		return nil
	}
	return d.queueModuleApply(ctx, q, inst.ID, mods)
}
