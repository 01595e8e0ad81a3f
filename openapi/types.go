package openapi

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/danielgtaylor/huma/v2"
)

// Time renders as Trove does: naive UTC "YYYY-MM-DDTHH:MM:SS".
type Time time.Time

const timeLayout = "2006-01-02T15:04:05"

func (t Time) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Time(t).UTC().Format(timeLayout))
}

func (t *Time) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := time.Parse(timeLayout, strings.TrimSuffix(s, "Z"))
	if err != nil {
		return err
	}
	*t = Time(v)
	return nil
}

func (Time) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{Type: huma.TypeString, Description: "UTC time, YYYY-MM-DDTHH:MM:SS", Examples: []any{"2026-11-22T10:00:00"}}
}

// StringOrInt is a request field that Trove accepts as a JSON string or
// integer (flavorRef, volume size), kept as its string form.
type StringOrInt string

func (s *StringOrInt) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err == nil {
		*s = StringOrInt(str)
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("must be a string or an integer")
	}
	*s = StringOrInt(n.String())
	return nil
}

func (StringOrInt) Schema(huma.Registry) *huma.Schema {
	return &huma.Schema{OneOf: []*huma.Schema{{Type: huma.TypeString}, {Type: huma.TypeInteger}}}
}

// Int parses the value as a positive integer.
func (s StringOrInt) Int() (int, bool) {
	n, err := strconv.Atoi(strings.TrimSpace(string(s)))
	return n, err == nil
}

// Link is a Trove resource link.
type Link struct {
	Href string `json:"href"`
	Rel  string `json:"rel"`
}

// Version is an API version (GET /).
type Version struct {
	ID      string `json:"id" example:"v1.0"`
	Status  string `json:"status" example:"CURRENT"`
	Updated string `json:"updated" example:"2012-08-01T00:00:00Z"`
	Links   []Link `json:"links"`
}

// Flavor is a Trove flavor. ID is the integer form of StrID when that is all
// digits (null otherwise), as Trove renders Nova ids.
type Flavor struct {
	ID        *int   `json:"id"`
	StrID     string `json:"str_id"`
	Name      string `json:"name"`
	RAM       int    `json:"ram" doc:"Memory in MB"`
	VCPUs     int    `json:"vcpus"`
	Disk      int    `json:"disk"`
	Ephemeral int    `json:"ephemeral"`
	Links     []Link `json:"links"`
}

// DatastoreVersion as listed under a datastore and on its own.
type DatastoreVersion struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Version   string `json:"version"`
	Datastore string `json:"datastore,omitempty" doc:"Datastore id"`
	Links     []Link `json:"links"`
	// Admin-only fields.
	Active *bool   `json:"active,omitempty"`
	Image  *string `json:"image,omitempty"`
}

// Datastore is a database engine with its versions.
type Datastore struct {
	ID             string             `json:"id"`
	Name           string             `json:"name"`
	Links          []Link             `json:"links"`
	Versions       []DatastoreVersion `json:"versions"`
	DefaultVersion string             `json:"default_version,omitempty"`
}

// InstanceFlavor is the flavor reference on an instance.
type InstanceFlavor struct {
	ID    string `json:"id"`
	Links []Link `json:"links"`
}

// InstanceDatastore names an instance's engine and version.
type InstanceDatastore struct {
	Type          string `json:"type"`
	Version       string `json:"version"`
	VersionNumber string `json:"version_number,omitempty"`
}

// InstanceVolume is the instance's volume; Used (GB) only on show.
type InstanceVolume struct {
	Size int      `json:"size" doc:"GB"`
	Used *float64 `json:"used,omitempty" doc:"GB in use, reported by the guest"`
}

// Address is a reachable address of an instance.
type Address struct {
	Address string `json:"address"`
	Type    string `json:"type" enum:"private,public"`
}

// Fault on an instance (the last failed task).
type InstanceFault struct {
	Message string  `json:"message"`
	Created Time    `json:"created"`
	Details *string `json:"details"`
}

// Access is the instance's network access setting.
type Access struct {
	IsPublic     bool     `json:"is_public"`
	AllowedCIDRs []string `json:"allowed_cidrs,omitempty"`
}

// Instance is Trove's instance view (list items and detail).
type Instance struct {
	ID              string            `json:"id"`
	Name            string            `json:"name"`
	Status          string            `json:"status" enum:"BUILD,ACTIVE,ERROR,SHUTDOWN,REBOOT,RESIZE,UPGRADE,RESTART_REQUIRED,PROMOTE,EJECT,LOGGING,DETACH,BACKUP,UNKNOWN"`
	OperatingStatus string            `json:"operating_status"`
	Links           []Link            `json:"links"`
	Flavor          InstanceFlavor    `json:"flavor"`
	Datastore       InstanceDatastore `json:"datastore"`
	Region          string            `json:"region"`
	Access          Access            `json:"access"`
	Volume          InstanceVolume    `json:"volume"`
	IP              []string          `json:"ip"`
	Addresses       []Address         `json:"addresses"`
	// Detail fields.
	Created              *Time          `json:"created,omitempty"`
	Updated              *Time          `json:"updated,omitempty"`
	ServiceStatusUpdated *Time          `json:"service_status_updated,omitempty"`
	Fault                *InstanceFault `json:"fault,omitempty"`

	// Configuration is the attached configuration group (detail only).
	Configuration *ConfigurationRef `json:"configuration,omitempty"`

	// Admin-only fields.
	TenantID string `json:"tenant_id,omitempty"`
	ServerID string `json:"server_id,omitempty"`
}

// DatabaseSpec is a database to create.
type DatabaseSpec struct {
	Name         string `json:"name" minLength:"1" maxLength:"63" pattern:"^[A-Za-z_][A-Za-z0-9_.-]*$" patternDescription:"a letter or _, then letters, digits, _ . -"`
	CharacterSet string `json:"character_set,omitempty" maxLength:"64"`
	Collate      string `json:"collate,omitempty" maxLength:"64"`
}

// UserDatabase names a database a user gets access to.
type UserDatabase struct {
	Name string `json:"name" minLength:"1" maxLength:"63"`
}

// UserSpec is a user to create.
type UserSpec struct {
	Name      string         `json:"name" minLength:"1" maxLength:"63" pattern:"^[A-Za-z_][A-Za-z0-9_.-]*$" patternDescription:"a letter or _, then letters, digits, _ . -"`
	Password  string         `json:"password" minLength:"1" maxLength:"255"`
	Host      string         `json:"host,omitempty" maxLength:"255"`
	Databases []UserDatabase `json:"databases,omitempty"`
}

// VolumeSpec is the requested volume.
type VolumeSpec struct {
	Size StringOrInt `json:"size" doc:"GB, an integer ≥ 1 (or its string form)"`
	Type *string     `json:"type,omitempty"`
}

// DatastoreSpec selects an engine and version (names or ids).
type DatastoreSpec struct {
	Type          string `json:"type,omitempty"`
	Version       string `json:"version,omitempty"`
	VersionNumber string `json:"version_number,omitempty"`
}

// InstanceCreate is the body of POST /instances. Fields Coffer does not
// support yet are declared so that a request using them gets a clear 400
// rather than being silently ignored.
type InstanceCreate struct {
	Name             string         `json:"name" minLength:"1" maxLength:"255"`
	FlavorRef        StringOrInt    `json:"flavorRef" doc:"Flavor id (or href)"`
	Volume           *VolumeSpec    `json:"volume,omitempty"`
	Datastore        *DatastoreSpec `json:"datastore,omitempty"`
	Databases        []DatabaseSpec `json:"databases,omitempty" maxItems:"100"`
	Users            []UserSpec     `json:"users,omitempty" maxItems:"100"`
	Access           *Access        `json:"access,omitempty"`
	AvailabilityZone string         `json:"availability_zone,omitempty"`
	RegionName       string         `json:"region_name,omitempty"`
	RestorePoint     any            `json:"restorePoint,omitempty"`
	ReplicaOf        any            `json:"replica_of,omitempty"`
	ReplicaCount     any            `json:"replica_count,omitempty"`
	Configuration    any            `json:"configuration,omitempty"`
	Modules          any            `json:"modules,omitempty"`
	Locality         any            `json:"locality,omitempty"`
	Nics             any            `json:"nics,omitempty"`
}
