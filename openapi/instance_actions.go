package openapi

import (
	"encoding/json"

	"github.com/danielgtaylor/huma/v2"
)

// Presence is a request field whose mere presence is the request, whatever
// its value (null included): Trove's `replica_of` / `slave_of` in an
// instance update, which clients send as null.
type Presence struct {
	Set bool
}

func (p *Presence) UnmarshalJSON([]byte) error {
	p.Set = true
	return nil
}

func (Presence) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{Description: "Any value, null included: the key's presence is the request."}
}

// NullableID is a request field that may be absent, null, or an id:
// `configuration` in an instance update, where null (and, for Trove
// compatibility, an update with no key at all) detaches the group.
type NullableID struct {
	Set   bool   // the key was present
	Value string // "" when the value was null
}

func (n *NullableID) UnmarshalJSON(b []byte) error {
	n.Set = true
	if string(b) == "null" {
		n.Value = ""
		return nil
	}
	return json.Unmarshal(b, &n.Value)
}

func (NullableID) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{Type: huma.TypeString, Format: "uuid", Nullable: true,
		Description: "Configuration group id to attach, or null to detach the attached one."}
}

// AccessUpdate is the network access an instance update asks for (Trove
// allows no other keys here).
type AccessUpdate struct {
	_            struct{} `additionalProperties:"false"`
	IsPublic     *bool    `json:"is_public,omitempty" doc:"Reachable from public networks (default false)"`
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty" maxItems:"100" doc:"IPv4 networks allowed to connect (default: all)"`
}

// InstanceUpdate is the body of PUT /instances/{id}: a new name and at
// most one other attribute. An empty object detaches the configuration
// group (Trove's legacy client sends it for configuration-detach).
type InstanceUpdate struct {
	_                struct{}      `additionalProperties:"false"`
	Name             string        `json:"name,omitempty" minLength:"1" maxLength:"255" doc:"New name (applied at once)"`
	ReplicaOf        Presence      `json:"replica_of,omitempty" doc:"Detach this replica from its source (value ignored; clients send null)"`
	Configuration    NullableID    `json:"configuration,omitempty"`
	DatastoreVersion string        `json:"datastore_version,omitempty" minLength:"1" maxLength:"255" doc:"Upgrade to this datastore version (name or id)"`
	Access           *AccessUpdate `json:"access,omitempty"`
}

// InstanceEdit is the body of PATCH /instances/{id} (Trove's deprecated
// "edit"): like InstanceUpdate, with `slave_of` as an alias of
// `replica_of`, and without `access`.
type InstanceEdit struct {
	_                struct{}   `additionalProperties:"false"`
	Name             string     `json:"name,omitempty" minLength:"1" maxLength:"255" doc:"New name (applied at once)"`
	ReplicaOf        Presence   `json:"replica_of,omitempty" doc:"Detach this replica from its source (value ignored)"`
	SlaveOf          Presence   `json:"slave_of,omitempty" doc:"Deprecated alias of replica_of"`
	Configuration    NullableID `json:"configuration,omitempty"`
	DatastoreVersion string     `json:"datastore_version,omitempty" minLength:"1" maxLength:"255" doc:"Upgrade to this datastore version (name or id); the client's upgrade command sends only this key"`
}

// EmptyAction is the value of an action that takes no arguments.
type EmptyAction struct{}

// ResizeVolumeSpec is the new size of an instance's volume.
type ResizeVolumeSpec struct {
	Size StringOrInt `json:"size" required:"true" doc:"GB, larger than the current size (or its string form)"`
}

// ResizeAction resizes either the flavor or the volume, not both.
type ResizeAction struct {
	FlavorRef *StringOrInt      `json:"flavorRef,omitempty" doc:"New flavor id (or href)"`
	Volume    *ResizeVolumeSpec `json:"volume,omitempty"`
}

// ResetStatusAction is reset_status's argument. Trove checks the
// instance:force_delete rule instead of instance:reset_status when the
// key force_delete is present; the 8.0.0 clients never send it.
type ResetStatusAction struct {
	ForceDelete any `json:"force_delete,omitempty"`
}

// InstanceAction is the body of POST /instances/{id}/action: exactly one
// recognised key. Unknown keys are ignored, as Trove does.
type InstanceAction struct {
	Restart                *EmptyAction       `json:"restart,omitempty" doc:"Restart the datastore"`
	Resize                 *ResizeAction      `json:"resize,omitempty" doc:"Resize the flavor ({\"flavorRef\"}) or the volume ({\"volume\": {\"size\"}})"`
	ResetStatus            *ResetStatusAction `json:"reset_status,omitempty" doc:"Admin: clear the task and mark the datastore status unknown (force delete = reset_status, then DELETE)"`
	PromoteToReplicaSource *EmptyAction       `json:"promote_to_replica_source,omitempty" doc:"Not available: Coffer has no replication yet"`
	EjectReplicaSource     *EmptyAction       `json:"eject_replica_source,omitempty" doc:"Not available: Coffer has no replication yet"`
	ResetPassword          *EmptyAction       `json:"reset_password,omitempty" doc:"Not implemented (as in Trove)"`
}
