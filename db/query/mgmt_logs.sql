-- Management instance routes (functions/mgmt_instances.go, jobs/mgmt_instance.go)
-- and guest logs (functions/guest_logs.go).

-- name: ListMgmtInstances :many
-- One page of every project's instances for the admin (Trove's mgmt list):
-- newest change first, offset paging. deleted: NULL both, true only the
-- deleted ones, false only the live ones; project_id: NULL every project.
SELECT sqlc.embed(i), f.name AS flavor_name,
       dv.name AS version_name, dv.version AS version_number, d.name AS datastore_name
FROM instance i
JOIN flavor f ON f.id = i.flavor_id
JOIN datastore_version dv ON dv.id = i.datastore_version_id
JOIN datastore d ON d.id = dv.datastore_id
WHERE (sqlc.narg(deleted)::boolean IS NULL OR (i.deleted_at IS NOT NULL) = sqlc.narg(deleted)::boolean)
  AND (sqlc.narg(project_id)::text IS NULL OR i.project_id = sqlc.narg(project_id)::text)
ORDER BY i.updated_at DESC, i.id
LIMIT @max_rows OFFSET @skip;

-- name: LockAnyInstance :one
-- A live instance of any project, locked, with its datastore manager:
-- the admin's management actions.
SELECT sqlc.embed(i), dv.manager AS datastore_manager
FROM instance i
JOIN datastore_version dv ON dv.id = i.datastore_version_id
WHERE i.id = $1 AND i.deleted_at IS NULL
FOR UPDATE OF i;

-- name: InsertRebuildAction :exec
INSERT INTO instance_action (command_id, instance_id, action, requested_by,
    from_flavor_id, to_flavor_id, from_volume_size_gb, to_volume_size_gb, image_id)
VALUES (@command_id, @instance_id, 'rebuild', @requested_by,
    @flavor_id, @flavor_id, @volume_size_gb, @volume_size_gb, @image_id);

-- name: ResetInstanceTask :exec
-- Trove's mgmt reset-task-status: no task; the datastore status stays.
UPDATE instance SET task = 'NONE', updated_at = now() WHERE id = $1;

-- name: ListRunningInstanceBackups :many
-- An instance's backups still running, for reset-task-status to fail.
SELECT * FROM backup
WHERE instance_id = $1 AND status IN ('NEW', 'BUILDING', 'SAVING') AND deleted_at IS NULL
ORDER BY created_at, id;
