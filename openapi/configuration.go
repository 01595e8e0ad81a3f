package openapi

import (
	"encoding/json"
	"fmt"

	"github.com/danielgtaylor/huma/v2"
)

// ConfigValues are a configuration group's values as the user sent them:
// each kept as its raw JSON, so that 1 (an integer) and 1.0 (a float) stay
// apart as Trove's type rules need, and big numbers stay exact.
type ConfigValues map[string]json.RawMessage

func (ConfigValues) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{
		Type:                 huma.TypeObject,
		AdditionalProperties: true,
		Description:          "Parameter name → value (integer, string, boolean, float or list, as the parameter's type says).",
		Examples:             []any{map[string]any{"max_connections": 200, "work_mem": "16MB"}},
	}
}

// Number is a JSON number rendered exactly as stored (validation bounds
// may exceed int64).
type Number string

func (n Number) MarshalJSON() ([]byte, error) {
	if n == "" || !(n[0] == '-' || n[0] >= '0' && n[0] <= '9') || !json.Valid([]byte(n)) {
		return nil, fmt.Errorf("openapi.Number: %q is not a number", string(n))
	}
	return []byte(n), nil
}

func (Number) Schema(huma.Registry) *huma.Schema { return &huma.Schema{Type: huma.TypeNumber} }

// ConfigurationParameter is a parameter a configuration group may set, with
// its validation rule. Min and Max are absent when unset or 0 (Trove).
type ConfigurationParameter struct {
	Name               string  `json:"name"`
	DatastoreVersionID string  `json:"datastore_version_id"`
	RestartRequired    bool    `json:"restart_required" doc:"Setting it takes effect only after a restart"`
	Type               string  `json:"type" enum:"integer,string,boolean,float,list"`
	Min                *Number `json:"min,omitempty"`
	Max                *Number `json:"max,omitempty"`
}

// Configuration is a configuration group as listed.
type Configuration struct {
	ID                   string  `json:"id"`
	Name                 string  `json:"name"`
	Description          *string `json:"description"`
	Created              Time    `json:"created"`
	Updated              Time    `json:"updated"`
	DatastoreVersionID   string  `json:"datastore_version_id"`
	DatastoreName        string  `json:"datastore_name"`
	DatastoreVersionName string  `json:"datastore_version_name"`
	// Not in Trove's list view; the clients print it and would fetch every
	// listed group to find it.
	DatastoreVersionNumber string `json:"datastore_version_number"`
}

// ConfigurationDetail is a configuration group with its values (show,
// create).
type ConfigurationDetail struct {
	Configuration
	Values        ConfigValues `json:"values"`
	InstanceCount int64        `json:"instance_count"`
}

// ConfigurationCreate is the body of POST /configurations.
type ConfigurationCreate struct {
	Name        string         `json:"name" minLength:"1" maxLength:"255"`
	Description *string        `json:"description,omitempty" maxLength:"255"`
	Values      ConfigValues   `json:"values"`
	Datastore   *DatastoreSpec `json:"datastore,omitempty" doc:"Default: the default datastore and its default version"`
}

// ConfigurationUpdate is the body of PUT /configurations/{id} (all values
// are replaced; no values clears them) and of PATCH (values are merged).
type ConfigurationUpdate struct {
	Name        *string      `json:"name,omitempty" minLength:"1" maxLength:"255"`
	Description *string      `json:"description,omitempty" maxLength:"255"`
	Values      ConfigValues `json:"values,omitempty"`
}

// ConfigurationRef is the configuration group attached to an instance.
type ConfigurationRef struct {
	ID    string `json:"id"`
	Name  string `json:"name"`
	Links []Link `json:"links"`
}

// InstanceRef is an instance using a configuration group.
type InstanceRef struct {
	ID   string `json:"id"`
	Name string `json:"name"`
}

// QuotaUsage is one resource of a project's quota.
type QuotaUsage struct {
	Resource string `json:"resource" enum:"instances,ram,backups,volumes"`
	InUse    int64  `json:"in_use"`
	Reserved int64  `json:"reserved"`
	Limit    int64  `json:"limit" doc:"-1: unlimited"`
}

// Limit is an element of GET /limits: the first is the absolute limits
// (verb ABSOLUTE), the others rate limits per HTTP verb.
type Limit struct {
	Verb string `json:"verb"`
	// ABSOLUTE
	MaxInstances *int64 `json:"max_instances,omitempty"`
	MaxRAM       *int64 `json:"max_ram,omitempty" doc:"MB"`
	MaxBackups   *int64 `json:"max_backups,omitempty"`
	MaxVolumes   *int64 `json:"max_volumes,omitempty" doc:"GB"`
	// Rate limits
	URI           string `json:"uri,omitempty"`
	Regex         string `json:"regex,omitempty"`
	Value         *int64 `json:"value,omitempty"`
	Unit          string `json:"unit,omitempty" enum:"SECOND,MINUTE,HOUR,DAY"`
	Remaining     *int64 `json:"remaining,omitempty"`
	NextAvailable string `json:"nextAvailable,omitempty" doc:"UTC, YYYY-MM-DDTHH:MM:SSZ"`
}

// MgmtDatastoreVersion is a datastore version as the management API shows
// it. Empty lists render as [""] (Trove).
type MgmtDatastoreVersion struct {
	ID               string   `json:"id"`
	Name             string   `json:"name"`
	Version          string   `json:"version"`
	DatastoreID      string   `json:"datastore_id"`
	DatastoreName    string   `json:"datastore_name"`
	DatastoreManager string   `json:"datastore_manager"`
	Image            string   `json:"image"`
	ImageTags        []string `json:"image_tags"`
	Packages         []string `json:"packages"`
	Active           bool     `json:"active"`
	RegistryExt      string   `json:"registry_ext"`
	ReplStrategy     string   `json:"repl_strategy"`
	Default          bool     `json:"default"`
}

// MgmtDatastoreVersionCreate is the body of POST /mgmt/datastore-versions.
type MgmtDatastoreVersionCreate struct {
	_                struct{} `additionalProperties:"false"`
	Name             string   `json:"name" minLength:"1" maxLength:"255"`
	DatastoreName    string   `json:"datastore_name" minLength:"1" maxLength:"255"`
	DatastoreManager string   `json:"datastore_manager" minLength:"1" maxLength:"255"`
	Active           bool     `json:"active"`
	Image            string   `json:"image,omitempty" maxLength:"255" doc:"Image id (required unless image_tags are given)"`
	ImageTags        []string `json:"image_tags,omitempty" maxItems:"5" doc:"At most 5 tags of at most 20 characters"`
	Packages         []string `json:"packages,omitempty" maxItems:"100"`
	Default          bool     `json:"default,omitempty" doc:"Make it the datastore's default version"`
	Version          string   `json:"version,omitempty" maxLength:"255" doc:"Version number (default: the name)"`
	RegistryExt      string   `json:"registry_ext,omitempty" maxLength:"255"`
	ReplStrategy     string   `json:"repl_strategy,omitempty" maxLength:"255"`
}

// MgmtDatastoreVersionPatch is the (unwrapped) body of PATCH
// /mgmt/datastore-versions/{id}.
type MgmtDatastoreVersionPatch struct {
	_                struct{} `additionalProperties:"false"`
	DatastoreManager *string  `json:"datastore_manager,omitempty" minLength:"1" maxLength:"255"`
	Image            *string  `json:"image,omitempty" maxLength:"255"`
	ImageTags        []string `json:"image_tags,omitempty" maxItems:"5"`
	Packages         []string `json:"packages,omitempty" maxItems:"100"`
	RegistryExt      *string  `json:"registry_ext,omitempty" maxLength:"255"`
	ReplStrategy     *string  `json:"repl_strategy,omitempty" maxLength:"255"`
	Active           *bool    `json:"active,omitempty"`
	Default          *bool    `json:"default,omitempty"`
	Name             *string  `json:"name,omitempty" minLength:"1" maxLength:"255"`
}
