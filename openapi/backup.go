package openapi

// Backup is Trove's backup view (API §7.1) with Coffer's progress and
// failure reason added (clients print or ignore extra keys).
type Backup struct {
	ID          string  `json:"id"`
	Name        string  `json:"name"`
	Description *string `json:"description" doc:"null when none was given"`
	// LocationRef is where the backup's manifest is; null until COMPLETED.
	LocationRef *string         `json:"locationRef" doc:"The backup's manifest object; null until the backup is COMPLETED"`
	InstanceID  *string         `json:"instance_id"`
	Created     Time            `json:"created"`
	Updated     Time            `json:"updated"`
	Size        *float64        `json:"size" doc:"Stored (compressed, encrypted) size in GB; null until COMPLETED"`
	Status      string          `json:"status" enum:"NEW,BUILDING,SAVING,COMPLETED,FAILED,DELETE_FAILED,RESTORED"`
	ParentID    *string         `json:"parent_id"`
	ProjectID   string          `json:"project_id"`
	Datastore   BackupDatastore `json:"datastore"`
	// Progress while it runs: bytes of the backup stream (before
	// compression) done, of the agent's estimate.
	BytesDone      int64  `json:"bytes_done" doc:"Bytes of the datastore's backup stream (before compression) uploaded so far"`
	EstimatedBytes int64  `json:"estimated_bytes" doc:"The guest's estimate of the backup stream's size (0: not known yet)"`
	FailReason     string `json:"fail_reason,omitempty" doc:"Why a FAILED or DELETE_FAILED backup failed"`
}

// BackupDatastore is the datastore a backup was taken of.
type BackupDatastore struct {
	Type      string `json:"type"`
	Version   string `json:"version"`
	VersionID string `json:"version_id"`
}

// BackupCreate is the body of POST /backups (Trove's schema, no other keys).
type BackupCreate struct {
	_           struct{} `additionalProperties:"false"`
	Name        string   `json:"name" minLength:"1" maxLength:"255" doc:"Required"`
	Instance    string   `json:"instance,omitempty" maxLength:"64" doc:"Id of the instance to back up (required)"`
	Description *string  `json:"description,omitempty" maxLength:"1024"`
	ParentID    *string  `json:"parent_id,omitempty" maxLength:"64" doc:"Take an incremental backup over this COMPLETED backup of the same instance"`
	Incremental *int     `json:"incremental,omitempty" minimum:"0" maximum:"1" doc:"1: incremental over the instance's last COMPLETED backup (a full backup if it has none)"`
	// SwiftContainer is Trove's name for the container in any store.
	SwiftContainer *string `json:"swift_container,omitempty" maxLength:"255" doc:"Container (bucket) to store the backup in; default from the backup strategies"`
	StorageDriver  *string `json:"storage_driver,omitempty" maxLength:"64" doc:"Accepted for compatibility: the deployment's object store (e.g. swift) or omitted"`
	// RestoreFrom (importing an existing backup object) is not supported.
	RestoreFrom any `json:"restore_from,omitempty" doc:"Not supported by Coffer (400)"`
}

// BackupStrategy is Trove's backup strategy view.
type BackupStrategy struct {
	ProjectID      string `json:"project_id"`
	InstanceID     string `json:"instance_id" doc:"\"\" for the project-wide strategy"`
	Backend        string `json:"backend"`
	SwiftContainer string `json:"swift_container"`
}

// BackupStrategyCreate is the body of POST /backup_strategies.
type BackupStrategyCreate struct {
	_              struct{} `additionalProperties:"false"`
	InstanceID     *string  `json:"instance_id,omitempty" maxLength:"64"`
	SwiftContainer string   `json:"swift_container" minLength:"1" maxLength:"255"`
}
