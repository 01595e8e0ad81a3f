package openapi

// BackupCopy is the body of POST /backups/{backup_id}/copy: copy a
// COMPLETED backup to another configured storage location.
type BackupCopy struct {
	_        struct{} `additionalProperties:"false"`
	Location string   `json:"location" minLength:"1" maxLength:"64" doc:"The location to copy to (a store kind configured in COFFER_BACKUP_COPY_STORES, or the default store's)"`
	Name     *string  `json:"name,omitempty" maxLength:"255" doc:"The copy's name (default: the source's)"`
}
