-- Backups: encrypted, segmented copies of an instance's data in object
-- storage, full or incremental (a chain through parent_id); the keys that
-- encrypt them; schedules that take them and the runs of those schedules.

-- A project's backup key, wrapped (AES-256-GCM) by the platform's master key.
-- Each backup's data key is in turn wrapped by its project's key, so neither
-- key is ever stored in plain text, and never next to the data.
-- key_id names the key in manifests (never the key itself), so that a
-- rotation can tell which project key wrapped a backup's data key.
CREATE TABLE project_key (
    project_id  text PRIMARY KEY REFERENCES project (id),
    key_id      uuid NOT NULL UNIQUE,
    wrapped_key bytea NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- status: Trove's NEW → BUILDING → SAVING → COMPLETED / FAILED (plus
-- DELETE_FAILED). `location` names the object store (COFFER_BACKUP_STORE's
-- name) and `prefix` the key prefix of its segments and manifest there.
-- `point` is the engine's position after the backup (PostgreSQL: LSNs,
-- timeline and last WAL file), which the child of an incremental chain starts
-- from. Progress: bytes_done of estimated_bytes (before compression).
-- command_id is the agent command taking the backup; progress_at the last
-- sign of life from it (grant, segment, progress), which the backup's
-- watchdog job reads to fail a backup whose agent died. delete_requested_at
-- is set when a delete is accepted: from then on the backup is no restore
-- source, parent or copy source, and its objects are being removed.
CREATE TABLE backup (
    id                   uuid PRIMARY KEY,
    project_id           text NOT NULL REFERENCES project (id),
    instance_id          uuid REFERENCES instance (id),
    datastore_version_id uuid NOT NULL REFERENCES datastore_version (id),
    parent_id            uuid REFERENCES backup (id),
    schedule_id          uuid,
    name                 text NOT NULL,
    description          text NOT NULL DEFAULT '',
    incremental          boolean NOT NULL DEFAULT false,
    status               text NOT NULL DEFAULT 'NEW'
                         CHECK (status IN ('NEW', 'BUILDING', 'SAVING', 'COMPLETED', 'FAILED',
                                           'DELETE_FAILED', 'RESTORED')),
    fail_reason          text NOT NULL DEFAULT '',
    location             text NOT NULL,
    container            text NOT NULL DEFAULT '',
    prefix               text NOT NULL,
    key_id               uuid NOT NULL,
    wrapped_key          bytea NOT NULL,
    command_id           uuid,
    progress_at          timestamptz,
    delete_requested_at  timestamptz,
    point                jsonb NOT NULL DEFAULT '{}',
    segment_size         bigint NOT NULL,
    segment_count        integer NOT NULL DEFAULT 0,
    stored_bytes         bigint NOT NULL DEFAULT 0,
    bytes_done           bigint NOT NULL DEFAULT 0,
    estimated_bytes      bigint NOT NULL DEFAULT 0,
    volume_size_gb       integer NOT NULL DEFAULT 0,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    completed_at         timestamptz,
    deleted_at           timestamptz
);
CREATE INDEX backup_project_idx ON backup (project_id, updated_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX backup_instance_idx ON backup (instance_id, created_at DESC) WHERE deleted_at IS NULL;
CREATE INDEX backup_parent_idx ON backup (parent_id) WHERE deleted_at IS NULL;

-- Trove's backup strategies: which container a project's (or one instance's)
-- backups go to. instance_id '' is the project-wide strategy.
CREATE TABLE backup_strategy (
    project_id  text NOT NULL REFERENCES project (id),
    instance_id text NOT NULL DEFAULT '',
    container   text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, instance_id)
);

-- One uploaded segment: its stored (encrypted) size and SHA-256 as the agent
-- computed them while uploading; restore verifies every one.
CREATE TABLE backup_segment (
    backup_id  uuid NOT NULL REFERENCES backup (id),
    index      integer NOT NULL CHECK (index >= 0),
    size       bigint NOT NULL CHECK (size >= 0),
    sha256     text NOT NULL,
    etag       text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (backup_id, index)
);

-- An instance restored from a backup: the chain it was built from. The
-- backups are protected from deletion while such an instance is building.
ALTER TABLE instance ADD COLUMN restore_backup_id uuid REFERENCES backup (id);

-- The backup an instance is taking (NEW, BUILDING or SAVING), set and
-- cleared in the transactions that move the backup in and out of those
-- states: the instance shows status BACKUP and refuses actions (Trove
-- §5.2, §5.4) from the row alone, without a join on every read.
ALTER TABLE instance ADD COLUMN running_backup_id uuid REFERENCES backup (id);

-- A backup schedule: a cron expression (robfig/cron, standard five fields or
-- descriptors like @hourly), full or incremental, and retention (keep the last
-- keep_last backups and/or those younger than max_age; 0 = no limit).
-- next_run_at is the next tick; the tick job is unique per (schedule, tick).
CREATE TABLE backup_schedule (
    id            uuid PRIMARY KEY,
    project_id    text NOT NULL REFERENCES project (id),
    instance_id   uuid NOT NULL REFERENCES instance (id),
    name          text NOT NULL,
    description   text NOT NULL DEFAULT '',
    pattern       text NOT NULL,
    incremental   boolean NOT NULL DEFAULT false,
    keep_last     integer NOT NULL DEFAULT 0 CHECK (keep_last >= 0),
    max_age       interval,
    enabled       boolean NOT NULL DEFAULT true,
    next_run_at   timestamptz NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    deleted_at    timestamptz
);
CREATE INDEX backup_schedule_due_idx ON backup_schedule (next_run_at)
    WHERE deleted_at IS NULL AND enabled;
CREATE INDEX backup_schedule_instance_idx ON backup_schedule (instance_id) WHERE deleted_at IS NULL;

-- One tick of a schedule. UNIQUE (schedule_id, scheduled_at) makes a tick run
-- once however many workers see it.
CREATE TABLE schedule_execution (
    id           uuid PRIMARY KEY,
    schedule_id  uuid NOT NULL REFERENCES backup_schedule (id),
    project_id   text NOT NULL REFERENCES project (id),
    scheduled_at timestamptz NOT NULL,
    backup_id    uuid REFERENCES backup (id),
    state        text NOT NULL DEFAULT 'RUNNING'
                 CHECK (state IN ('RUNNING', 'SUCCESS', 'ERROR')),
    state_info   text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    updated_at   timestamptz NOT NULL DEFAULT now(),
    deleted_at   timestamptz,
    UNIQUE (schedule_id, scheduled_at)
);
CREATE INDEX schedule_execution_schedule_idx ON schedule_execution (schedule_id, scheduled_at DESC);

---- create above / drop below ----

DROP TABLE schedule_execution;
DROP TABLE backup_schedule;
ALTER TABLE instance DROP COLUMN running_backup_id;
ALTER TABLE instance DROP COLUMN restore_backup_id;
DROP TABLE backup_segment;
DROP TABLE backup_strategy;
DROP TABLE backup;
DROP TABLE project_key;
