-- Backup copies between storage locations (functions/backup_copy.go,
-- jobs/backup_copy.go). A copy keeps its source's object prefix, so a
-- backup's objects are found by (location, prefix) wherever they are copied.

-- name: BackupAtLocation :one
-- The live backup (any status) of a project whose objects are under prefix
-- in location: at most one, so that no two rows share objects.
SELECT * FROM backup
WHERE project_id = @project_id AND prefix = @prefix AND location = @location AND deleted_at IS NULL
ORDER BY created_at DESC
LIMIT 1;
