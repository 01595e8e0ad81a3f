-- Configuration parameters (validation rules) ------------------------------

-- name: UpsertConfigurationParameter :exec
INSERT INTO configuration_parameter (datastore_version_id, name, data_type, restart_required, min_size, max_size)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (datastore_version_id, name) DO UPDATE
SET data_type = EXCLUDED.data_type, restart_required = EXCLUDED.restart_required,
    min_size = EXCLUDED.min_size, max_size = EXCLUDED.max_size;

-- name: ListConfigurationParameters :many
SELECT * FROM configuration_parameter WHERE datastore_version_id = $1 ORDER BY name;

-- name: GetConfigurationParameter :one
-- Names are case-insensitive, as PostgreSQL's and MySQL's settings are.
SELECT * FROM configuration_parameter
WHERE datastore_version_id = $1 AND lower(name) = lower(@name::text)
ORDER BY name
LIMIT 1;

-- Configuration groups ------------------------------------------------------

-- name: InsertConfiguration :one
INSERT INTO configuration (id, project_id, name, description, datastore_version_id, items)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: GetConfiguration :one
SELECT sqlc.embed(c), dv.name AS version_name, dv.version AS version_number, dv.manager AS datastore_manager,
       d.name AS datastore_name
FROM configuration c
JOIN datastore_version dv ON dv.id = c.datastore_version_id
JOIN datastore d ON d.id = dv.datastore_id
WHERE c.id = $1;

-- name: LockConfiguration :one
SELECT * FROM configuration WHERE id = $1 FOR UPDATE;

-- name: ShareConfiguration :one
-- Holds a group for an attach: a delete (FOR UPDATE) waits until the
-- attach commits and then counts it.
SELECT * FROM configuration WHERE id = $1 FOR KEY SHARE;

-- name: ListConfigurations :many
-- One page of groups ordered by id; a NULL project lists every project's
-- (admins).
SELECT sqlc.embed(c), dv.name AS version_name, dv.version AS version_number, d.name AS datastore_name
FROM configuration c
JOIN datastore_version dv ON dv.id = c.datastore_version_id
JOIN datastore d ON d.id = dv.datastore_id
WHERE (sqlc.narg(project_id)::text IS NULL OR c.project_id = sqlc.narg(project_id)::text)
  AND (sqlc.narg(marker)::uuid IS NULL OR c.id > sqlc.narg(marker)::uuid)
ORDER BY c.id
LIMIT @max_rows;

-- name: UpdateConfiguration :one
UPDATE configuration
SET name = @name, description = @description, items = @items, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: DeleteConfiguration :exec
DELETE FROM configuration WHERE id = $1;

-- name: CountConfigurationInstances :one
SELECT count(*) FROM instance WHERE configuration_id = $1 AND deleted_at IS NULL;

-- name: ListConfigurationInstances :many
SELECT id, name FROM instance
WHERE configuration_id = @configuration_id AND deleted_at IS NULL
  AND (sqlc.narg(marker)::uuid IS NULL OR id > sqlc.narg(marker)::uuid)
ORDER BY id
LIMIT @max_rows;

-- name: LockConfigurationInstances :many
-- The live instances a group is attached to, locked so that a re-apply
-- and an attach, detach or command completion on them take turns.
SELECT * FROM instance
WHERE configuration_id = $1 AND deleted_at IS NULL
ORDER BY id
FOR UPDATE;

-- name: SetInstanceConfiguration :exec
UPDATE instance SET configuration_id = $2, updated_at = now() WHERE id = $1;

-- name: SetInstanceServiceStatus :exec
UPDATE instance SET service_status = $2, updated_at = now() WHERE id = $1;

-- name: ClearInstanceFault :exec
UPDATE instance SET fault_message = '', fault_details = '', fault_at = NULL, updated_at = now()
WHERE id = $1;

-- name: InsertConfigurationApply :exec
INSERT INTO configuration_apply (command_id, instance_id, configuration_id, restart)
VALUES ($1, $2, $3, $4);

-- name: GetConfigurationApply :one
SELECT * FROM configuration_apply WHERE command_id = $1;

-- name: ConfigurationApplySuperseded :one
-- Whether a command queued after this one decides the configuration state
-- instead: a later apply replaces the overrides, a restart or flavor
-- resize restarts the server (so nothing is pending any more).
SELECT EXISTS (
    SELECT FROM agent_command later, agent_command this
    WHERE this.id = @command_id AND later.instance_id = this.instance_id
      AND later.id <> this.id
      AND later.name IN ('apply_configuration', 'restart', 'resize_flavor')
      AND later.state <> 'cancelled'
      AND later.created_at > this.created_at
)::boolean AS superseded;

-- Datastore version management (admin) ------------------------------------

-- name: InsertDatastoreVersion :one
INSERT INTO datastore_version (id, datastore_id, name, version, manager, active, image,
                               image_tags, packages, registry_ext, repl_strategy)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
RETURNING *;

-- name: UpdateDatastoreVersion :one
UPDATE datastore_version
SET name = @name, manager = @manager, active = @active, image = @image, image_tags = @image_tags,
    packages = @packages, registry_ext = @registry_ext, repl_strategy = @repl_strategy
WHERE id = @id
RETURNING *;

-- name: DeleteDatastoreVersion :exec
DELETE FROM datastore_version WHERE id = $1;

-- name: DatastoreVersionInUse :one
-- Instances (deleted ones too: their rows keep the reference) and
-- configuration groups that use a version.
SELECT (EXISTS (SELECT FROM instance i WHERE i.datastore_version_id = @id::uuid)
    OR EXISTS (SELECT FROM configuration c WHERE c.datastore_version_id = @id::uuid))::boolean AS in_use;

-- name: GetMgmtDatastoreVersion :one
SELECT sqlc.embed(dv), d.name AS datastore_name,
       coalesce(d.default_version_id = dv.id, false)::boolean AS is_default
FROM datastore_version dv
JOIN datastore d ON d.id = dv.datastore_id
WHERE dv.id = $1;

-- name: ListMgmtDatastoreVersions :many
SELECT sqlc.embed(dv), d.name AS datastore_name,
       coalesce(d.default_version_id = dv.id, false)::boolean AS is_default
FROM datastore_version dv
JOIN datastore d ON d.id = dv.datastore_id
ORDER BY d.name, dv.name;

-- name: LockDatastore :one
SELECT * FROM datastore WHERE id = $1 FOR UPDATE;

-- name: CountDatastoreVersions :one
SELECT count(*) FROM datastore_version WHERE datastore_id = $1;

-- name: DeleteDatastore :exec
DELETE FROM datastore WHERE id = $1;
