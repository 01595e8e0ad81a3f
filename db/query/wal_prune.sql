-- name: WALPruneCandidates :many
-- Instances whose WAL archive may be pruned now: PostgreSQL, idle and
-- serving, no backup running, no prune of theirs still open.
SELECT i.id FROM instance i
JOIN datastore_version v ON v.id = i.datastore_version_id
WHERE i.deleted_at IS NULL AND v.manager = 'postgresql'
  AND i.task = 'NONE' AND i.running_backup_id IS NULL
  AND i.service_status IN ('healthy', 'running')
  AND NOT EXISTS (
      SELECT 1 FROM agent_command c
      WHERE c.instance_id = i.id AND c.name = 'prune_wal' AND c.state IN ('pending', 'leased'))
ORDER BY i.id;

-- name: OldestBackupPoint :one
-- The earliest point of an instance's backups that may still be restored
-- or become an incremental's parent. WAL file names order by timeline,
-- then position.
SELECT point FROM backup
WHERE instance_id = $1 AND deleted_at IS NULL AND status = 'COMPLETED'
  AND point->>'start_wal' <> ''
ORDER BY point->>'start_wal'
LIMIT 1;
