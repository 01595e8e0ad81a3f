package openapi

// Backup schedules (Coffer's own API: Trove has none, its client drives
// Mistral cron triggers instead, which Coffer also serves under /v2).

// ScheduleCreate is the body of a schedule create.
type ScheduleCreate struct {
	Name        string `json:"name" minLength:"1" maxLength:"255" doc:"Name of the backups the schedule takes"`
	Description string `json:"description,omitempty" maxLength:"255" doc:"Description of the backups the schedule takes"`
	Pattern     string `json:"pattern" minLength:"1" maxLength:"255" doc:"When backups are taken, in UTC: a cron expression of five fields (minute hour day-of-month month day-of-week, e.g. \"30 2 * * *\"), a descriptor (@hourly, @daily, @weekly, @monthly, @yearly) or @every <duration> of at least one minute; CRON_TZ=<zone> in front selects another time zone" example:"30 2 * * *"`
	Incremental bool   `json:"incremental,omitempty" doc:"Take incremental backups, each on top of the instance's last completed backup"`
	KeepLast    int    `json:"keep_last,omitempty" minimum:"0" maximum:"10000" doc:"Retention: keep the last N completed backups of the schedule (0: no such limit). Applied after each completed backup; the last completed backup is always kept, and so is every backup a kept one needs (the parents of an incremental)."`
	// MaxAge is parsed by the handler (functions/schedules.go).
	MaxAge  *StringOrInt `json:"max_age,omitempty" doc:"Retention: keep the backups younger than this: whole seconds (604800) or a duration (\"168h\", \"90m\", \"30d\"); 0 or absent: no such limit. With keep_last too, a backup either rule keeps is kept."`
	Enabled *bool        `json:"enabled,omitempty" doc:"Whether the schedule runs (default true)"`
}

// ScheduleUpdate is the body of a schedule update: the fields to change.
type ScheduleUpdate struct {
	Name        *string      `json:"name,omitempty" minLength:"1" maxLength:"255"`
	Description *string      `json:"description,omitempty" maxLength:"255"`
	Pattern     *string      `json:"pattern,omitempty" minLength:"1" maxLength:"255" doc:"A new cron expression; the next run is computed from now"`
	Incremental *bool        `json:"incremental,omitempty"`
	Enabled     *bool        `json:"enabled,omitempty" doc:"false pauses the schedule; true resumes it from the next tick after now (missed ticks are not run)"`
	KeepLast    *int         `json:"keep_last,omitempty" minimum:"0" maximum:"10000"`
	MaxAge      *StringOrInt `json:"max_age,omitempty" doc:"Seconds or a duration string, as on create; 0 removes the limit"`
}

// Schedule is a backup schedule.
type Schedule struct {
	ID          string `json:"id"`
	Name        string `json:"name"`
	Description string `json:"description"`
	InstanceID  string `json:"instance_id"`
	Pattern     string `json:"pattern"`
	Incremental bool   `json:"incremental"`
	Enabled     bool   `json:"enabled"`
	KeepLast    int    `json:"keep_last" doc:"0: no limit on the number of backups kept"`
	MaxAge      int64  `json:"max_age" doc:"Seconds; 0: no limit on the age of backups kept"`
	NextRun     Time   `json:"next_run_at" doc:"The next tick (UTC); while disabled, the one it would have been"`
	Created     Time   `json:"created"`
	Updated     Time   `json:"updated"`
	Links       []Link `json:"links"`
}

// ScheduleExecution is one tick of a schedule: RUNNING until its backup
// ends, then SUCCESS, or ERROR with the reason (also when the backup could
// not start, e.g. the instance was busy or over its backup quota).
type ScheduleExecution struct {
	ID          string  `json:"id"`
	ScheduleID  string  `json:"schedule_id"`
	ScheduledAt Time    `json:"scheduled_at"`
	State       string  `json:"state" enum:"RUNNING,SUCCESS,ERROR"`
	StateInfo   string  `json:"state_info"`
	BackupID    *string `json:"backup_id"`
	Created     Time    `json:"created"`
	Updated     Time    `json:"updated"`
}
