package protocol

// Commands beyond prepare. Each payload type below is the command's
// Payload; the agent executes every one idempotently (a database that
// exists is not created again, a user that is gone is not an error to
// delete, ...).
const (
	CommandCreateDatabases    = "create_databases"    // CreateDatabasesRequest
	CommandDeleteDatabase     = "delete_database"     // DeleteDatabaseRequest
	CommandCreateUsers        = "create_users"        // CreateUsersRequest
	CommandDeleteUser         = "delete_user"         // UserRef
	CommandUpdateUser         = "update_user"         // UpdateUserRequest
	CommandGrantAccess        = "grant_access"        // GrantAccessRequest
	CommandRevokeAccess       = "revoke_access"       // RevokeAccessRequest
	CommandEnableRoot         = "enable_root"         // EnableRootRequest; Output: EnableRootResult
	CommandDisableRoot        = "disable_root"        // no payload
	CommandApplyConfiguration = "apply_configuration" // ApplyConfigurationRequest
	CommandRestart            = "restart"             // no payload
	CommandResizeFlavor       = "resize_flavor"       // ResizeFlavorRequest
	CommandResizeVolume       = "resize_volume"       // ResizeVolumeRequest
)

// CreateDatabasesRequest creates databases.
type CreateDatabasesRequest struct {
	Databases []Database `json:"databases"`
}

// DeleteDatabaseRequest drops one database.
type DeleteDatabaseRequest struct {
	Name string `json:"name"`
}

// CreateUsersRequest creates users (with access to their Databases).
type CreateUsersRequest struct {
	Users []User `json:"users"`
}

// UserRef names a user: Trove's name@host, host "%" when unspecified.
type UserRef struct {
	Name string `json:"name"`
	Host string `json:"host,omitempty"`
}

// UpdateUserRequest renames a user, changes its password or host.
type UpdateUserRequest struct {
	UserRef
	NewName     string `json:"new_name,omitempty"`
	NewPassword string `json:"new_password,omitempty"`
	NewHost     string `json:"new_host,omitempty"`
}

// GrantAccessRequest gives a user access to databases.
type GrantAccessRequest struct {
	UserRef
	Databases []string `json:"databases"`
}

// RevokeAccessRequest takes a user's access to one database away.
type RevokeAccessRequest struct {
	UserRef
	Database string `json:"database"`
}

// EnableRootRequest enables the datastore's superuser with Password.
type EnableRootRequest struct {
	Password string `json:"password"`
}

// EnableRootResult names the superuser that was enabled.
type EnableRootResult struct {
	Name string `json:"name"`
}

// ApplyConfigurationRequest replaces the configuration overrides (an
// empty Values restores the defaults). With Restart false the datastore
// reloads; with Restart true the values are written for the next restart
// only (the control plane shows RESTART_REQUIRED).
type ApplyConfigurationRequest struct {
	Values  map[string]string `json:"values"`
	Restart bool              `json:"restart"`
}

// ResizeFlavorRequest re-derives memory settings for a new flavor and
// restarts the datastore.
type ResizeFlavorRequest struct {
	FlavorRAMMB int `json:"flavor_ram_mb"`
}

// ResizeVolumeRequest records the volume's new size (the provider has
// grown the volume; the guest grows its filesystem or limit).
type ResizeVolumeRequest struct {
	VolumeSizeGB int `json:"volume_size_gb"`
}

// Inventory is what the datastore holds, reported with heartbeats so the
// API lists real databases and users without a round trip to the guest.
type Inventory struct {
	Databases   []Database `json:"databases"`
	Users       []UserInfo `json:"users"`
	RootEnabled bool       `json:"root_enabled"`
	// Logs are the guest logs (mgmt.go), from drivers that have them.
	Logs []GuestLog `json:"logs,omitempty"`
}

// UserInfo is a user and the databases it may access.
type UserInfo struct {
	Name      string   `json:"name"`
	Host      string   `json:"host"`
	Databases []string `json:"databases"`
}
