package openapi

import (
	"encoding/json"
	"sort"
)

// MgmtServer is the compute server of an instance in the management view.
type MgmtServer struct {
	ID       string `json:"id"`
	Name     string `json:"name"`
	Status   string `json:"status" doc:"The provider's view: BUILD, ACTIVE, ERROR, SHUTDOWN"`
	TenantID string `json:"tenant_id"`
}

// GuestStatus is the datastore status the guest reported, as it said it.
type GuestStatus struct {
	StateDescription string `json:"state_description" example:"healthy"`
}

// MgmtInstance is an instance in the management API (admin): the detail
// view with its server, its raw datastore status and whether it is
// deleted. The show adds root_enabled(_by) and guest_status.
type MgmtInstance struct {
	Instance
	Server          *MgmtServer `json:"server" doc:"null when the instance has no server (yet)"`
	ServiceStatus   string      `json:"service_status" doc:"The datastore status the guest last reported (API name), whatever the task"`
	Deleted         bool        `json:"deleted"`
	DeletedAt       *Time       `json:"deleted_at"`
	TaskDescription string      `json:"task_description" example:"No tasks for the instance."`
	// Show only.
	RootEnabled   *string      `json:"root_enabled,omitempty" doc:"When root was last enabled (show only)"`
	RootEnabledBy *string      `json:"root_enabled_by,omitempty" doc:"Who enabled it (show only)"`
	GuestStatus   *GuestStatus `json:"guest_status,omitempty"`
}

// MigrateAction is Trove's mgmt migrate (not supported: 501).
type MigrateAction struct {
	Host string `json:"host,omitempty" maxLength:"255"`
}

// RebuildAction rebuilds the instance's server from an image.
type RebuildAction struct {
	ImageID string `json:"image_id" minLength:"1" maxLength:"255" doc:"Image to rebuild the server from (the local provider has no images: any id is recorded)"`
}

// MgmtInstanceAction is the body of POST /mgmt/instances/{id}/action:
// exactly one of its keys. Any other key is Trove's 400 "Invalid instance
// action", which is why the body keeps the keys it was given.
type MgmtInstanceAction struct {
	Stop            *EmptyAction   `json:"stop,omitempty" doc:"Stop the datastore (it stays down until a restart or reboot)"`
	Reboot          *EmptyAction   `json:"reboot,omitempty" doc:"Restart the datastore (the instance shows REBOOT)"`
	Migrate         *MigrateAction `json:"migrate,omitempty" doc:"Move the server to another host: not supported (501)"`
	ResetTaskStatus *EmptyAction   `json:"reset-task-status,omitempty" doc:"Set the task to NONE and fail running backups"`
	Rebuild         *RebuildAction `json:"rebuild,omitempty" doc:"Rebuild the server on its volume (the instance shows BUILD)"`
	// Keys are the body's top-level keys, sorted.
	Keys []string `json:"-"`
}

func (a *MgmtInstanceAction) UnmarshalJSON(b []byte) error {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return err
	}
	type plain MgmtInstanceAction
	var p plain
	if err := json.Unmarshal(b, &p); err != nil {
		return err
	}
	*a = MgmtInstanceAction(p)
	a.Keys = make([]string, 0, len(raw))
	for k := range raw {
		a.Keys = append(a.Keys, k)
	}
	sort.Strings(a.Keys)
	return nil
}

// GuestLog is a guest log (Trove's LOG).
type GuestLog struct {
	Name      string `json:"name" example:"general"`
	Type      string `json:"type" enum:"USER,SYS" doc:"USER logs can be enabled and disabled; SYS logs only published"`
	Status    string `json:"status" enum:"Disabled,Enabled,Unavailable,Ready,Published,Partial,Rotated,Restart Required,Restart Completed"`
	Published int64  `json:"published" doc:"Bytes published"`
	Pending   int64  `json:"pending" doc:"Bytes written and not published"`
	Container string `json:"container" doc:"Object storage container, or \"None\" before anything was published"`
	Prefix    string `json:"prefix" doc:"Object name prefix, or \"None\" before anything was published"`
	Metafile  string `json:"metafile"`
}

// GuestLogAction is the body of POST /instances/{id}/log: the log, and at
// most one of enable/disable (0 or 1, as Trove's clients send them),
// publish, discard. No flag: show the log.
type GuestLogAction struct {
	Name    string `json:"name" minLength:"1" maxLength:"64"`
	Enable  int    `json:"enable,omitempty" minimum:"0" maximum:"1"`
	Disable int    `json:"disable,omitempty" minimum:"0" maximum:"1"`
	Publish int    `json:"publish,omitempty" minimum:"0" maximum:"1"`
	Discard int    `json:"discard,omitempty" minimum:"0" maximum:"1"`
}
