-- Configuration groups and their validation rules, quotas, and the
-- datastore-version fields the management API exposes.

-- Validation rules for configuration values, per datastore version (Trove's
-- datastore_configuration_parameters, loaded from validation-rules/*.json).
-- min_size and max_size are numeric because some rules (MySQL's) exceed
-- the range of bigint.
CREATE TABLE configuration_parameter (
    datastore_version_id uuid NOT NULL REFERENCES datastore_version (id) ON DELETE CASCADE,
    name                 text NOT NULL,
    data_type            text NOT NULL CHECK (data_type IN ('integer', 'string', 'boolean', 'float', 'list')),
    restart_required     boolean NOT NULL DEFAULT false,
    min_size             numeric,
    max_size             numeric,
    PRIMARY KEY (datastore_version_id, name)
);

-- A configuration group: named overrides for one datastore version. items
-- holds the values as the user sent them (JSON types kept, so they render
-- back unchanged); the agent receives them as strings.
CREATE TABLE configuration (
    id                   uuid PRIMARY KEY,
    project_id           text NOT NULL,
    name                 text NOT NULL,
    description          text,
    datastore_version_id uuid NOT NULL REFERENCES datastore_version (id),
    items                jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(items) = 'object'),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX configuration_project_idx ON configuration (project_id, id);

-- Deleted instances keep their rows; a group they referenced may still be
-- deleted (live instances block that in the API).
ALTER TABLE instance ADD COLUMN configuration_id uuid REFERENCES configuration (id) ON DELETE SET NULL;

CREATE INDEX instance_configuration_idx ON instance (configuration_id, id) WHERE deleted_at IS NULL;

-- One row per apply_configuration command: what the completion needs once
-- the agent answers (command payloads are cleared on completion).
CREATE TABLE configuration_apply (
    command_id       uuid PRIMARY KEY REFERENCES agent_command (id) ON DELETE CASCADE,
    instance_id      uuid NOT NULL REFERENCES instance (id),
    configuration_id uuid, -- the group applied; NULL: detached (defaults restored)
    restart          boolean NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX configuration_apply_instance_idx ON configuration_apply (instance_id, created_at);

-- Per-project quota limits that differ from the defaults (Trove's quotas
-- table). -1 means unlimited.
CREATE TABLE quota (
    project_id text NOT NULL,
    resource   text NOT NULL CHECK (resource IN ('instances', 'ram', 'backups', 'volumes')),
    hard_limit integer NOT NULL CHECK (hard_limit >= -1),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (project_id, resource)
);

-- Management fields of a datastore version (Trove's mgmt datastore-versions).
ALTER TABLE datastore_version ADD COLUMN image_tags text[] NOT NULL DEFAULT '{}';
ALTER TABLE datastore_version ADD COLUMN packages text[] NOT NULL DEFAULT '{}';
ALTER TABLE datastore_version ADD COLUMN registry_ext text NOT NULL DEFAULT '';
ALTER TABLE datastore_version ADD COLUMN repl_strategy text NOT NULL DEFAULT '';

---- create above / drop below ----

ALTER TABLE datastore_version DROP COLUMN repl_strategy;
ALTER TABLE datastore_version DROP COLUMN registry_ext;
ALTER TABLE datastore_version DROP COLUMN packages;
ALTER TABLE datastore_version DROP COLUMN image_tags;
DROP TABLE quota;
DROP TABLE configuration_apply;
ALTER TABLE instance DROP COLUMN configuration_id;
DROP TABLE configuration;
DROP TABLE configuration_parameter;
