-- Modules -------------------------------------------------------------------

-- name: InsertModule :one
INSERT INTO module (id, project_id, all_tenants, name, type, description, contents, contents_key, md5,
                    datastore_id, datastore_version_id, auto_apply, visible, live_update,
                    priority_apply, apply_order, is_admin)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)
RETURNING *;

-- name: GetModule :one
SELECT sqlc.embed(m), coalesce(d.name, 'all')::text AS datastore_name, coalesce(dv.name, 'all')::text AS version_name
FROM module m
LEFT JOIN datastore d ON d.id = m.datastore_id
LEFT JOIN datastore_version dv ON dv.id = m.datastore_version_id
WHERE m.id = $1;

-- name: ListModules :many
-- Every module, or (project set) the project's own and the visible
-- all-tenant ones, ordered by id.
SELECT sqlc.embed(m), coalesce(d.name, 'all')::text AS datastore_name, coalesce(dv.name, 'all')::text AS version_name
FROM module m
LEFT JOIN datastore d ON d.id = m.datastore_id
LEFT JOIN datastore_version dv ON dv.id = m.datastore_version_id
WHERE sqlc.narg(project_id)::text IS NULL
   OR ((m.project_id = sqlc.narg(project_id)::text OR m.all_tenants) AND m.visible)
ORDER BY m.id;

-- name: ListAutoApplyModules :many
-- The auto-apply modules an instance of a project and datastore version gets at create.
SELECT * FROM module m
WHERE m.auto_apply
  AND (m.all_tenants OR m.project_id = @project_id)
  AND (m.datastore_id IS NULL OR m.datastore_id = @datastore_id)
  AND (m.datastore_version_id IS NULL OR m.datastore_version_id = @datastore_version_id)
ORDER BY m.id;

-- name: UpdateModule :one
UPDATE module
SET all_tenants = $2, name = $3, type = $4, description = $5, contents = $6, contents_key = $7, md5 = $8,
    datastore_id = $9, datastore_version_id = $10, auto_apply = $11, visible = $12, live_update = $13,
    priority_apply = $14, apply_order = $15, is_admin = $16, updated_at = now()
WHERE id = $1
RETURNING *;

-- name: DeleteModule :exec
DELETE FROM module WHERE id = $1;

-- name: CountModuleLiveInstances :one
SELECT count(*) FROM instance_module im
JOIN instance i ON i.id = im.instance_id
WHERE im.module_id = $1 AND i.deleted_at IS NULL;

-- Instance modules ------------------------------------------------------------

-- name: UpsertInstanceModule :exec
-- Records an apply: the guest's earlier report no longer holds.
INSERT INTO instance_module (instance_id, module_id, md5, command_id)
VALUES ($1, $2, $3, $4)
ON CONFLICT (instance_id, module_id) DO UPDATE
SET md5 = EXCLUDED.md5, command_id = EXCLUDED.command_id, status = NULL, message = '', updated_at = now();

-- name: ListInstanceModules :many
SELECT im.md5 AS applied_md5, im.status, im.message, im.created_at AS applied_at, im.updated_at AS reported_at,
       sqlc.embed(m), coalesce(d.name, 'all')::text AS datastore_name, coalesce(dv.name, 'all')::text AS version_name
FROM instance_module im
JOIN module m ON m.id = im.module_id
LEFT JOIN datastore d ON d.id = m.datastore_id
LEFT JOIN datastore_version dv ON dv.id = m.datastore_version_id
WHERE im.instance_id = $1
ORDER BY m.priority_apply DESC, m.apply_order, m.name;

-- name: DeleteInstanceModule :execrows
DELETE FROM instance_module WHERE instance_id = $1 AND module_id = $2;

-- name: RecordInstanceModuleResult :exec
-- The guest's report of one module, for the apply that is still current.
UPDATE instance_module
SET status = @status, message = @message, updated_at = now()
WHERE instance_id = @instance_id AND module_id = @module_id AND command_id = @command_id;

-- name: ListModuleInstances :many
-- One page of the live instances a module is applied to; project NULL: any project's.
SELECT sqlc.embed(i), f.name AS flavor_name,
       dv.name AS version_name, dv.version AS version_number, d.name AS datastore_name
FROM instance_module im
JOIN instance i ON i.id = im.instance_id
JOIN flavor f ON f.id = i.flavor_id
JOIN datastore_version dv ON dv.id = i.datastore_version_id
JOIN datastore d ON d.id = dv.datastore_id
WHERE im.module_id = @module_id AND i.deleted_at IS NULL
  AND (sqlc.narg(project_id)::text IS NULL OR i.project_id = sqlc.narg(project_id)::text)
  AND (sqlc.narg(marker)::uuid IS NULL OR i.id > sqlc.narg(marker)::uuid)
ORDER BY i.id
LIMIT @max_rows;

-- name: ModuleInstanceCounts :many
-- Per applied md5: how many live instances (of a project, or any) and when.
SELECT im.md5, count(*) AS instance_count, min(im.updated_at)::timestamptz AS min_updated,
       max(im.updated_at)::timestamptz AS max_updated
FROM instance_module im
JOIN instance i ON i.id = im.instance_id
WHERE im.module_id = @module_id AND i.deleted_at IS NULL
  AND (sqlc.narg(project_id)::text IS NULL OR i.project_id = sqlc.narg(project_id)::text)
GROUP BY im.md5
ORDER BY im.md5;

-- name: FailCommandModules :exec
-- The guest could not run a module command at all: every module it carried failed.
UPDATE instance_module
SET status = 'ERROR', message = @message, updated_at = now()
WHERE instance_id = @instance_id AND command_id = @command_id;
