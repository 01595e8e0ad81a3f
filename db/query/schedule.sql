-- Backup schedules ----------------------------------------------------------

-- name: InsertSchedule :one
-- No row back when the id is taken (a Mistral cron trigger's name is the
-- schedule's id, chosen by the client): the caller answers 409.
INSERT INTO backup_schedule (id, project_id, instance_id, name, description, pattern,
                             incremental, keep_last, max_age, enabled, next_run_at)
VALUES (@id, @project_id, @instance_id, @name, @description, @pattern,
        @incremental, @keep_last, sqlc.narg(max_age), @enabled, @next_run_at)
ON CONFLICT (id) DO NOTHING
RETURNING *;

-- name: GetSchedule :one
-- A live schedule of one project; another project's is not found.
SELECT * FROM backup_schedule
WHERE id = @id AND project_id = @project_id AND deleted_at IS NULL;

-- name: LockSchedule :one
SELECT * FROM backup_schedule WHERE id = @id FOR UPDATE;

-- name: ListInstanceSchedules :many
-- One page of an instance's live schedules ordered by id.
SELECT * FROM backup_schedule
WHERE project_id = @project_id AND instance_id = @instance_id AND deleted_at IS NULL
  AND (sqlc.narg(marker)::uuid IS NULL OR id > sqlc.narg(marker)::uuid)
ORDER BY id
LIMIT @max_rows;

-- name: ListProjectSchedules :many
-- Every live schedule of a project (Mistral's cron trigger list; a project
-- has few, the handler sorts and pages them).
SELECT * FROM backup_schedule
WHERE project_id = @project_id AND deleted_at IS NULL
ORDER BY created_at, id;

-- name: CountInstanceSchedules :one
SELECT count(*) FROM backup_schedule WHERE instance_id = @instance_id AND deleted_at IS NULL;

-- name: UpdateSchedule :one
UPDATE backup_schedule
SET name = @name, description = @description, pattern = @pattern, incremental = @incremental,
    keep_last = @keep_last, max_age = sqlc.narg(max_age), enabled = @enabled, next_run_at = @next_run_at,
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: DeleteSchedule :execrows
UPDATE backup_schedule SET deleted_at = now(), updated_at = now()
WHERE id = @id AND project_id = @project_id AND deleted_at IS NULL;

-- Scheduler -------------------------------------------------------------------

-- name: DatabaseNow :one
-- The scheduler's clock: the database's, the same for every worker
-- whatever their own clocks say.
SELECT now()::timestamptz;

-- name: LockDueSchedules :many
-- The enabled schedules whose next tick has come, locked; another
-- scheduler pass running at the same time skips them (it would find them
-- advanced once this one commits).
SELECT sqlc.embed(s), (i.deleted_at IS NOT NULL)::boolean AS instance_deleted
FROM backup_schedule s
JOIN instance i ON i.id = s.instance_id
WHERE s.enabled AND s.deleted_at IS NULL AND s.next_run_at <= @now
ORDER BY s.next_run_at
LIMIT @max_rows
FOR UPDATE OF s SKIP LOCKED;

-- name: SetScheduleNextRun :exec
UPDATE backup_schedule SET next_run_at = @next_run_at WHERE id = @id;

-- name: EndOrphanSchedules :execrows
-- Schedules end with their instance (their backups and executions stay).
UPDATE backup_schedule s SET deleted_at = now(), updated_at = now()
FROM instance i
WHERE i.id = s.instance_id AND i.deleted_at IS NOT NULL AND s.deleted_at IS NULL;

-- name: EndSchedule :exec
-- The schedule's instance is gone: so is the schedule.
UPDATE backup_schedule SET deleted_at = now(), updated_at = now() WHERE id = @id AND deleted_at IS NULL;

-- name: InsertScheduleExecution :one
-- One row per (schedule, tick): no row back when the tick already has one.
INSERT INTO schedule_execution (id, schedule_id, project_id, scheduled_at)
VALUES (@id, @schedule_id, @project_id, @scheduled_at)
ON CONFLICT (schedule_id, scheduled_at) DO NOTHING
RETURNING *;

-- name: LockScheduleExecution :one
SELECT * FROM schedule_execution WHERE id = @id FOR UPDATE;

-- name: SetScheduleExecutionBackup :exec
UPDATE schedule_execution SET backup_id = @backup_id, updated_at = now() WHERE id = @id;

-- name: FailScheduleExecution :execrows
UPDATE schedule_execution SET state = 'ERROR', state_info = @state_info, updated_at = now()
WHERE id = @id AND state = 'RUNNING';

-- name: SettleScheduleExecutions :many
-- Running executions whose backup has ended take its outcome: SUCCESS for a
-- completed backup, ERROR (with the backup's reason) for a failed or
-- deleted one. Each is settled once: a concurrent pass skips the rows
-- another holds (locking them in whatever order the join yields, two
-- passes could each wait for the other: a deadlock, seen with two worker
-- replicas).
WITH ended AS (
    SELECT e.id FROM schedule_execution e JOIN backup b ON b.id = e.backup_id
    WHERE e.state = 'RUNNING'
      AND (b.status IN ('COMPLETED', 'FAILED', 'DELETE_FAILED') OR b.deleted_at IS NOT NULL)
    FOR UPDATE OF e SKIP LOCKED
)
UPDATE schedule_execution e
SET state = CASE WHEN b.status = 'COMPLETED' THEN 'SUCCESS' ELSE 'ERROR' END,
    state_info = CASE
        WHEN b.status = 'COMPLETED' THEN ''
        WHEN b.fail_reason <> '' THEN b.fail_reason
        WHEN b.status IN ('FAILED', 'DELETE_FAILED') THEN 'Backup ' || b.id::text || ' ended ' || b.status || '.'
        ELSE 'Backup ' || b.id::text || ' was deleted before it completed.'
    END,
    updated_at = now()
FROM backup b, ended
WHERE e.id = ended.id AND e.backup_id = b.id
RETURNING e.id, e.schedule_id, e.project_id, b.id AS backup_id, e.state;

-- Executions (native API) -----------------------------------------------------

-- name: GetScheduleExecution :one
SELECT * FROM schedule_execution
WHERE id = @id AND schedule_id = @schedule_id AND deleted_at IS NULL;

-- name: ListScheduleExecutions :many
-- One page of a schedule's executions, the most recent tick first; the
-- marker is the last id of the previous page.
SELECT * FROM schedule_execution
WHERE schedule_id = @schedule_id AND deleted_at IS NULL
  AND (sqlc.narg(marker_scheduled_at)::timestamptz IS NULL
       OR (scheduled_at, id) < (sqlc.narg(marker_scheduled_at)::timestamptz, sqlc.narg(marker_id)::uuid))
ORDER BY scheduled_at DESC, id DESC
LIMIT @max_rows;

-- Executions (Mistral API) ----------------------------------------------------

-- name: GetProjectExecution :one
SELECT sqlc.embed(e), sqlc.embed(s)
FROM schedule_execution e
JOIN backup_schedule s ON s.id = e.schedule_id
WHERE e.id = @id AND e.project_id = @project_id AND e.deleted_at IS NULL;

-- name: ListProjectExecutionsAsc :many
-- One page of a project's executions (of live and deleted schedules, as
-- Mistral keeps a trigger's executions), oldest first, after the marker.
SELECT sqlc.embed(e), sqlc.embed(s)
FROM schedule_execution e
JOIN backup_schedule s ON s.id = e.schedule_id
WHERE e.project_id = @project_id AND e.deleted_at IS NULL
  AND (sqlc.narg(state)::text IS NULL OR e.state = sqlc.narg(state)::text)
  AND (sqlc.narg(id)::uuid IS NULL OR e.id = sqlc.narg(id)::uuid)
  AND (sqlc.narg(marker_created_at)::timestamptz IS NULL
       OR (e.created_at, e.id) > (sqlc.narg(marker_created_at)::timestamptz, sqlc.narg(marker_id)::uuid))
ORDER BY e.created_at, e.id
LIMIT @max_rows;

-- name: ListProjectExecutionsDesc :many
-- ListProjectExecutionsAsc, newest first.
SELECT sqlc.embed(e), sqlc.embed(s)
FROM schedule_execution e
JOIN backup_schedule s ON s.id = e.schedule_id
WHERE e.project_id = @project_id AND e.deleted_at IS NULL
  AND (sqlc.narg(state)::text IS NULL OR e.state = sqlc.narg(state)::text)
  AND (sqlc.narg(id)::uuid IS NULL OR e.id = sqlc.narg(id)::uuid)
  AND (sqlc.narg(marker_created_at)::timestamptz IS NULL
       OR (e.created_at, e.id) < (sqlc.narg(marker_created_at)::timestamptz, sqlc.narg(marker_id)::uuid))
ORDER BY e.created_at DESC, e.id DESC
LIMIT @max_rows;

-- name: DeleteScheduleExecution :execrows
UPDATE schedule_execution SET deleted_at = now(), updated_at = now()
WHERE id = @id AND project_id = @project_id AND deleted_at IS NULL;

-- Retention -------------------------------------------------------------------

-- name: ListScheduleCompletedBackups :many
-- A schedule's completed, live backups, the last completed first: what
-- retention chooses among.
SELECT id, created_at, coalesce(completed_at, created_at)::timestamptz AS completed_at FROM backup
WHERE schedule_id = @schedule_id AND deleted_at IS NULL AND delete_requested_at IS NULL AND status = 'COMPLETED'
ORDER BY completed_at DESC NULLS LAST, created_at DESC, id DESC;

-- name: ListRetentionDeletable :many
-- The schedule's completed backups outside @kept that nothing needs: no
-- live backup that stays (kept, manual, another schedule's, one still
-- running; not one being deleted) has it as an ancestor, and no instance
-- is being restored from it. Deleting a backup deletes its children, so
-- anything with a child that stays must stay too.
WITH RECURSIVE needed (id, parent_id) AS (
    SELECT b.id, b.parent_id FROM backup b
    WHERE b.project_id = @project_id AND b.deleted_at IS NULL AND b.delete_requested_at IS NULL
      AND (b.schedule_id IS DISTINCT FROM @schedule_id::uuid OR b.status <> 'COMPLETED'
           OR b.id = ANY(@kept::uuid[])
           OR b.id IN (SELECT i.restore_backup_id FROM instance i
                       WHERE i.restore_backup_id IS NOT NULL AND i.deleted_at IS NULL AND i.task = 'BUILDING'))
    UNION
    SELECT p.id, p.parent_id FROM backup p JOIN needed n ON p.id = n.parent_id
)
SELECT b.id FROM backup b
WHERE b.schedule_id = @schedule_id::uuid AND b.deleted_at IS NULL AND b.delete_requested_at IS NULL
  AND b.status = 'COMPLETED' AND NOT (b.id = ANY(@kept::uuid[]))
  AND NOT EXISTS (SELECT 1 FROM needed n WHERE n.id = b.id)
ORDER BY b.created_at DESC, b.id DESC;
