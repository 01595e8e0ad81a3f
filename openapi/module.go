package openapi

import (
	"encoding/json"
	"fmt"

	"github.com/danielgtaylor/huma/v2"
)

// Flag is a module option, sent by troveclient as 0/1 and by others as a
// JSON boolean; both are accepted.
type Flag bool

func (f *Flag) UnmarshalJSON(b []byte) error {
	var v bool
	if err := json.Unmarshal(b, &v); err == nil {
		*f = Flag(v)
		return nil
	}
	var n int
	if err := json.Unmarshal(b, &n); err != nil || (n != 0 && n != 1) {
		return fmt.Errorf("must be a boolean, 0 or 1")
	}
	*f = n == 1
	return nil
}

func (Flag) Schema(huma.Registry) *huma.Schema {
	zero, one := 0.0, 1.0
	return &huma.Schema{OneOf: []*huma.Schema{{Type: huma.TypeBoolean}, {Type: huma.TypeInteger, Minimum: &zero, Maximum: &one}}}
}

// ModuleDatastore restricts a module to a datastore (and version).
type ModuleDatastore struct {
	Type    string `json:"type,omitempty" maxLength:"255"`
	Version string `json:"version,omitempty" maxLength:"255"`
}

// ModuleCreate is the body of POST /modules.
type ModuleCreate struct {
	Name        string           `json:"name" minLength:"1" maxLength:"255"`
	ModuleType  string           `json:"module_type" minLength:"1" maxLength:"255"`
	Contents    string           `json:"contents" minLength:"1" doc:"Base64 of the module's contents"`
	Description *string          `json:"description,omitempty" maxLength:"255"`
	Datastore   *ModuleDatastore `json:"datastore,omitempty"`
	AutoApply   *Flag            `json:"auto_apply,omitempty" doc:"Admin only"`
	AllTenants  *Flag            `json:"all_tenants,omitempty" doc:"Admin only"`
	Visible     *Flag            `json:"visible,omitempty" doc:"false is admin only"`
	LiveUpdate  *Flag            `json:"live_update,omitempty"`
	Priority    *Flag            `json:"priority_apply,omitempty" doc:"Admin only"`
	ApplyOrder  *int             `json:"apply_order,omitempty" minimum:"0" maximum:"9"`
	FullAccess  *Flag            `json:"full_access,omitempty" doc:"Admin only"`
}

// ModuleUpdate is the body of PUT /modules/{id}; absent keys keep their
// value. troveclient sends the type under "type" (Trove ignores it, and
// so does Coffer).
type ModuleUpdate struct {
	Name                 *string          `json:"name,omitempty" minLength:"1" maxLength:"255"`
	ModuleType           *string          `json:"module_type,omitempty" minLength:"1" maxLength:"255"`
	Contents             *string          `json:"contents,omitempty" minLength:"1"`
	Description          *string          `json:"description,omitempty" maxLength:"255"`
	Datastore            *ModuleDatastore `json:"datastore,omitempty"`
	AllDatastores        *Flag            `json:"all_datastores,omitempty"`
	AllDatastoreVersions *Flag            `json:"all_datastore_versions,omitempty"`
	AutoApply            *Flag            `json:"auto_apply,omitempty"`
	AllTenants           *Flag            `json:"all_tenants,omitempty"`
	Visible              *Flag            `json:"visible,omitempty"`
	LiveUpdate           *Flag            `json:"live_update,omitempty"`
	Priority             *Flag            `json:"priority_apply,omitempty"`
	ApplyOrder           *int             `json:"apply_order,omitempty" minimum:"0" maximum:"9"`
	FullAccess           *Flag            `json:"full_access,omitempty"`
}

// Module is Trove's module view.
type Module struct {
	ID                 string  `json:"id"`
	Name               string  `json:"name"`
	Type               string  `json:"type"`
	Description        string  `json:"description"`
	TenantID           *string `json:"tenant_id"`
	Tenant             string  `json:"tenant" doc:"Owner project, or 'all'"`
	DatastoreID        *string `json:"datastore_id"`
	Datastore          string  `json:"datastore" doc:"Name, or 'all'"`
	DatastoreVersionID *string `json:"datastore_version_id"`
	DatastoreVersion   string  `json:"datastore_version" doc:"Name, or 'all'"`
	AutoApply          bool    `json:"auto_apply"`
	PriorityApply      bool    `json:"priority_apply"`
	ApplyOrder         int     `json:"apply_order"`
	IsAdmin            bool    `json:"is_admin"`
	MD5                string  `json:"md5"`
	Visible            bool    `json:"visible"`
	LiveUpdate         bool    `json:"live_update"`
	Created            Time    `json:"created"`
	Updated            Time    `json:"updated"`
	InstanceCount      *int64  `json:"instance_count,omitempty"`
}

// GuestModule is a module as applied to an instance (Trove's
// GUEST_MODULE): status and message are the guest's report.
type GuestModule struct {
	ID               string  `json:"id"`
	Name             string  `json:"name"`
	Type             string  `json:"type"`
	Datastore        string  `json:"datastore"`
	DatastoreVersion string  `json:"datastore_version"`
	Tenant           string  `json:"tenant"`
	MD5              string  `json:"md5"`
	Status           *string `json:"status" doc:"OK or ERROR; null until the guest reported"`
	Message          string  `json:"message"`
	Created          Time    `json:"created"`
	Updated          Time    `json:"updated"`
	Removed          *Time   `json:"removed"`
	AutoApply        bool    `json:"auto_apply"`
	Visible          bool    `json:"visible"`
	IsAdmin          bool    `json:"is_admin"`
	Contents         *string `json:"contents,omitempty" doc:"Base64, with include_contents"`
}

// ModuleRef names a module to apply.
type ModuleRef struct {
	ID string `json:"id" minLength:"1" maxLength:"64"`
}

// ModuleReapply is the body of PUT /modules/{id}/instances.
type ModuleReapply struct {
	MD5              string `json:"md5,omitempty" maxLength:"64"`
	IncludeClustered *Flag  `json:"include_clustered,omitempty"`
	BatchSize        *int   `json:"batch_size,omitempty" minimum:"0"`
	BatchDelay       *int   `json:"batch_delay,omitempty" minimum:"0"`
	Force            *Flag  `json:"force,omitempty"`
}

// ModuleInstanceCount is one row of GET /modules/{id}/instances?count_only=true.
type ModuleInstanceCount struct {
	ModuleName     string `json:"module_name"`
	ModuleID       string `json:"module_id"`
	ModuleMD5      string `json:"module_md5"`
	InstanceCount  int64  `json:"instance_count"`
	Current        bool   `json:"current"`
	MinUpdatedDate Time   `json:"min_updated_date"`
	MaxUpdatedDate Time   `json:"max_updated_date"`
}
