-- Backups: keys, backup rows and their segments, strategies, and the
-- instance columns that follow a backup (running_backup_id,
-- restore_backup_id). Used by internal/backupkey, jobs (backup.go and
-- friends), functions/backups.go and the agent API.

-- name: InsertProjectKey :exec
-- Creates a project's key unless another transaction already did: the
-- caller then reads whichever key won (GetProjectKey).
INSERT INTO project_key (project_id, key_id, wrapped_key) VALUES ($1, $2, $3)
ON CONFLICT (project_id) DO NOTHING;

-- name: GetProjectKey :one
SELECT * FROM project_key WHERE project_id = $1;

-- name: InsertBackup :one
INSERT INTO backup (id, project_id, instance_id, datastore_version_id, parent_id, schedule_id,
                    name, description, incremental, location, container, prefix, key_id,
                    wrapped_key, command_id, segment_size, volume_size_gb)
VALUES (@id, @project_id, @instance_id, @datastore_version_id, @parent_id, @schedule_id,
        @name, @description, @incremental, @location, @container, @prefix, @key_id,
        @wrapped_key, @command_id, @segment_size, @volume_size_gb)
RETURNING *;

-- name: GetBackup :one
-- A live backup of one project (another project's is not found), with the
-- names its view shows.
SELECT sqlc.embed(b), dv.name AS version_name, d.name AS datastore_name, d.id AS datastore_id
FROM backup b
JOIN datastore_version dv ON dv.id = b.datastore_version_id
JOIN datastore d ON d.id = dv.datastore_id
WHERE b.id = @id AND b.project_id = @project_id AND b.deleted_at IS NULL;

-- name: GetBackupAnyProject :one
-- For workers and the agent API. Deleted backups are found too (callers
-- check deleted_at).
SELECT * FROM backup WHERE id = $1;

-- name: LockBackup :one
SELECT * FROM backup WHERE id = $1 FOR UPDATE;

-- name: ListBackups :many
-- One page of live backups, newest update first (Trove's offset marker).
-- A NULL project lists every project's (admin's all_projects).
SELECT sqlc.embed(b), dv.name AS version_name, d.name AS datastore_name, d.id AS datastore_id
FROM backup b
JOIN datastore_version dv ON dv.id = b.datastore_version_id
JOIN datastore d ON d.id = dv.datastore_id
WHERE b.deleted_at IS NULL
  AND (sqlc.narg(project_id)::text IS NULL OR b.project_id = sqlc.narg(project_id)::text)
  AND (sqlc.narg(instance_id)::uuid IS NULL OR b.instance_id = sqlc.narg(instance_id)::uuid)
  AND (sqlc.narg(datastore_id)::uuid IS NULL OR d.id = sqlc.narg(datastore_id)::uuid)
ORDER BY b.updated_at DESC, b.id
LIMIT @max_rows OFFSET @skip;

-- name: LastCompletedBackup :one
-- The parent of an incremental backup asked for without one (Trove: the
-- instance's last COMPLETED backup).
SELECT * FROM backup
WHERE instance_id = $1 AND status = 'COMPLETED' AND deleted_at IS NULL AND delete_requested_at IS NULL
ORDER BY completed_at DESC, created_at DESC
LIMIT 1;

-- name: CountProjectBackups :one
-- A project's backups for its quota: every live backup not being deleted.
SELECT count(*)::bigint FROM backup
WHERE project_id = $1 AND deleted_at IS NULL AND delete_requested_at IS NULL;

-- name: SetInstanceRunningBackup :exec
UPDATE instance SET running_backup_id = @backup_id, updated_at = now() WHERE id = @id;

-- name: ClearInstanceRunningBackup :exec
-- Only if the instance still points at this backup.
UPDATE instance SET running_backup_id = NULL, updated_at = now()
WHERE id = @id AND running_backup_id = @backup_id;

-- name: SetInstanceRestoreBackup :exec
UPDATE instance SET restore_backup_id = @backup_id WHERE id = @id;

-- name: StartBackupProgress :exec
-- The agent's first sign of work (grant, segment, progress report) moves a
-- NEW backup to BUILDING; every one records that the agent is alive.
UPDATE backup
SET status = CASE WHEN status = 'NEW' THEN 'BUILDING' ELSE status END,
    progress_at = now(), updated_at = now()
WHERE id = $1 AND status IN ('NEW', 'BUILDING');

-- name: SetBackupEstimate :exec
UPDATE backup SET estimated_bytes = @estimated_bytes WHERE id = @id AND status IN ('NEW', 'BUILDING');

-- name: UpsertBackupSegment :exec
INSERT INTO backup_segment (backup_id, index, size, sha256, etag)
VALUES (@backup_id, @index, @size, @sha256, @etag)
ON CONFLICT (backup_id, index) DO UPDATE
SET size = EXCLUDED.size, sha256 = EXCLUDED.sha256, etag = EXCLUDED.etag, created_at = now();

-- name: SetBackupBytesDone :exec
-- Progress never goes backwards (segments may report out of order).
UPDATE backup SET bytes_done = greatest(bytes_done, @bytes_done::bigint) WHERE id = @id;

-- name: ListBackupSegments :many
SELECT * FROM backup_segment WHERE backup_id = $1 ORDER BY index;

-- name: MarkBackupSaving :exec
-- The agent reported success: what it says it stored, verified next.
UPDATE backup
SET status = 'SAVING', point = @point, segment_count = @segment_count, stored_bytes = @stored_bytes,
    bytes_done = greatest(bytes_done, @raw_bytes::bigint), progress_at = now(), updated_at = now()
WHERE id = @id AND status IN ('NEW', 'BUILDING');

-- name: CompleteBackup :exec
UPDATE backup
SET status = 'COMPLETED', completed_at = now(), updated_at = now()
WHERE id = $1 AND status = 'SAVING';

-- name: FailBackup :exec
UPDATE backup
SET status = 'FAILED', fail_reason = @fail_reason, updated_at = now()
WHERE id = @id AND status IN ('NEW', 'BUILDING', 'SAVING');

-- name: RunningBackups :many
-- Backups an agent is taking, for their watchdog.
SELECT id FROM backup WHERE status IN ('NEW', 'BUILDING', 'SAVING') AND deleted_at IS NULL;

-- name: BackupSubtree :many
-- A live backup and all its live descendants (incremental children,
-- grandchildren, ...), deepest first: the order they are deleted in.
WITH RECURSIVE tree AS (
    SELECT b.id, 0 AS depth FROM backup b WHERE b.id = @id AND b.deleted_at IS NULL
    UNION ALL
    SELECT c.id, t.depth + 1 FROM backup c JOIN tree t ON c.parent_id = t.id WHERE c.deleted_at IS NULL
)
SELECT sqlc.embed(b), t.depth::int AS depth
FROM tree t JOIN backup b ON b.id = t.id
ORDER BY t.depth DESC, b.created_at DESC;

-- name: BackupChain :many
-- A backup and its ancestors up to the full backup, full backup first:
-- what a restore applies, in order.
WITH RECURSIVE chain AS (
    SELECT b.id, b.parent_id, 0 AS depth FROM backup b WHERE b.id = @id
    UNION ALL
    SELECT p.id, p.parent_id, c.depth + 1 FROM backup p JOIN chain c ON p.id = c.parent_id
)
SELECT sqlc.embed(b)
FROM chain c JOIN backup b ON b.id = c.id
ORDER BY c.depth DESC;

-- name: InRestoreChain :one
-- Whether backup_id is in the chain an instance is being built from.
WITH RECURSIVE chain AS (
    SELECT b.id, b.parent_id FROM backup b JOIN instance i ON i.restore_backup_id = b.id
    WHERE i.id = @instance_id AND i.task = 'BUILDING' AND i.deleted_at IS NULL
    UNION ALL
    SELECT p.id, p.parent_id FROM backup p JOIN chain c ON p.id = c.parent_id
)
SELECT (count(*) > 0)::bool AS found FROM chain WHERE chain.id = @backup_id::uuid;

-- name: RestoringInstances :many
-- Instances being built from one of these backups.
SELECT id, restore_backup_id FROM instance
WHERE restore_backup_id = ANY (@backup_ids::uuid[]) AND task = 'BUILDING' AND deleted_at IS NULL;

-- name: RequestBackupDelete :exec
UPDATE backup SET delete_requested_at = now(), updated_at = now()
WHERE id = ANY (@ids::uuid[]) AND delete_requested_at IS NULL AND deleted_at IS NULL;

-- name: MarkBackupDeleted :exec
UPDATE backup SET deleted_at = now(), updated_at = now() WHERE id = $1 AND deleted_at IS NULL;

-- name: MarkBackupDeleteFailed :exec
-- Its objects could not all be removed: it counts again, and a new delete
-- may be asked for.
UPDATE backup
SET status = 'DELETE_FAILED', fail_reason = @fail_reason, delete_requested_at = NULL, updated_at = now()
WHERE id = @id AND deleted_at IS NULL;

-- name: UpsertBackupStrategy :one
INSERT INTO backup_strategy (project_id, instance_id, container) VALUES ($1, $2, $3)
ON CONFLICT (project_id, instance_id) DO UPDATE SET container = EXCLUDED.container
RETURNING *;

-- name: ListBackupStrategies :many
SELECT * FROM backup_strategy
WHERE project_id = @project_id
  AND (sqlc.narg(instance_id)::text IS NULL OR instance_id = sqlc.narg(instance_id)::text)
ORDER BY instance_id;

-- name: DeleteBackupStrategies :exec
DELETE FROM backup_strategy
WHERE project_id = @project_id
  AND (sqlc.narg(instance_id)::text IS NULL OR instance_id = sqlc.narg(instance_id)::text);

-- name: BackupStrategyContainer :one
-- The container of an instance's backups: its own strategy, else its
-- project's.
SELECT container FROM backup_strategy
WHERE project_id = @project_id AND instance_id IN (@instance_id::text, '')
ORDER BY instance_id DESC
LIMIT 1;

-- name: GetBackupByCommand :one
SELECT * FROM backup WHERE command_id = $1;
