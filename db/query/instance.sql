-- name: InsertInstance :one
INSERT INTO instance (id, project_id, name, flavor_id, volume_size_gb, datastore_version_id)
VALUES ($1, $2, $3, $4, $5, $6)
RETURNING *;

-- name: GetInstance :one
-- Reads a live instance of one project; another project's instance is not found.
SELECT sqlc.embed(i), f.name AS flavor_name, f.ram_mb AS flavor_ram_mb,
       dv.name AS version_name, dv.version AS version_number, dv.manager AS datastore_manager,
       d.name AS datastore_name
FROM instance i
JOIN flavor f ON f.id = i.flavor_id
JOIN datastore_version dv ON dv.id = i.datastore_version_id
JOIN datastore d ON d.id = dv.datastore_id
WHERE i.id = $1 AND i.project_id = $2 AND i.deleted_at IS NULL;

-- name: GetInstanceAnyProject :one
-- For workers and the agent API, which act on behalf of the platform.
SELECT sqlc.embed(i), f.name AS flavor_name, f.ram_mb AS flavor_ram_mb, f.vcpus AS flavor_vcpus,
       dv.name AS version_name, dv.version AS version_number, dv.manager AS datastore_manager,
       dv.image AS version_image, d.name AS datastore_name
FROM instance i
JOIN flavor f ON f.id = i.flavor_id
JOIN datastore_version dv ON dv.id = i.datastore_version_id
JOIN datastore d ON d.id = dv.datastore_id
WHERE i.id = $1;

-- name: LockInstance :one
SELECT * FROM instance WHERE id = $1 FOR UPDATE;

-- name: ListInstances :many
-- One page of a project's live instances ordered by id (Trove's marker is
-- the last id of the previous page).
SELECT sqlc.embed(i), f.name AS flavor_name,
       dv.name AS version_name, dv.version AS version_number, d.name AS datastore_name
FROM instance i
JOIN flavor f ON f.id = i.flavor_id
JOIN datastore_version dv ON dv.id = i.datastore_version_id
JOIN datastore d ON d.id = dv.datastore_id
WHERE i.project_id = @project_id AND i.deleted_at IS NULL
  AND (sqlc.narg(marker)::uuid IS NULL OR i.id > sqlc.narg(marker)::uuid)
ORDER BY i.id
LIMIT @max_rows;

-- name: SetInstanceTask :exec
UPDATE instance SET task = $2, updated_at = now() WHERE id = $1;

-- name: SetInstanceServer :exec
UPDATE instance
SET server_id = $2, compute_status = $3, address = $4, port = $5, updated_at = now()
WHERE id = $1;

-- name: SetInstanceAgentToken :exec
UPDATE instance SET agent_token_hash = $2, updated_at = now() WHERE id = $1;

-- name: GetInstanceAgentToken :one
SELECT agent_token_hash FROM instance WHERE id = $1 AND deleted_at IS NULL;

-- name: RecordHeartbeat :exec
UPDATE instance
SET heartbeat_at = now(), service_status = $2, volume_used_bytes = $3
WHERE id = $1 AND deleted_at IS NULL;

-- name: RecordInventory :exec
UPDATE instance SET inventory = $2, inventory_at = now()
WHERE id = $1 AND deleted_at IS NULL;

-- name: SetInstanceActive :exec
UPDATE instance
SET task = 'NONE', service_status = $2, fault_message = '', fault_details = '', fault_at = NULL,
    updated_at = now()
WHERE id = $1;

-- name: SetInstanceFault :exec
UPDATE instance
SET task = $2, fault_message = $3, fault_details = $4, fault_at = now(), updated_at = now()
WHERE id = $1;

-- name: MarkInstanceDeleted :exec
UPDATE instance
SET deleted_at = now(), task = 'NONE', compute_status = 'SHUTDOWN', service_status = 'deleted',
    agent_token_hash = NULL, fault_message = '', fault_details = '', fault_at = NULL,
    updated_at = now()
WHERE id = $1 AND deleted_at IS NULL;

-- name: ListStuckBuilds :many
-- Instances still building after the deadline: the guest never reported
-- (or, restoring a backup, may still be at it: see jobs/watch.go).
SELECT id, project_id, created_at, restore_backup_id FROM instance
WHERE deleted_at IS NULL AND task = 'BUILDING' AND created_at < @deadline::timestamptz;

-- name: ListStaleHeartbeats :many
-- Live, idle instances whose agent has gone quiet, not yet reported as such.
SELECT id, project_id FROM instance
WHERE deleted_at IS NULL AND task = 'NONE' AND service_status <> 'guestagent error'
  AND service_status <> 'restart required'
  AND heartbeat_at < @deadline::timestamptz;

-- name: MarkGuestAgentError :exec
UPDATE instance SET service_status = 'guestagent error', updated_at = now()
WHERE id = $1 AND deleted_at IS NULL;

-- name: InsertEvent :exec
INSERT INTO event (project_id, kind, resource_id, payload) VALUES ($1, $2, $3, $4);

-- name: ListEvents :many
SELECT * FROM event WHERE project_id = $1 AND id > $2 ORDER BY id LIMIT $3;
