-- name: LockProjectQuota :exec
-- Serialises every quota check of one project until the transaction ends,
-- so two concurrent creates cannot both see the last free slot. An
-- advisory lock needs no row (the project may exist only in Keystone).
SELECT pg_advisory_xact_lock(hashtextextended('coffer.quota:' || @project_id::text, 0));

-- name: ListProjectQuotas :many
SELECT resource, hard_limit FROM quota WHERE project_id = $1 ORDER BY resource;

-- name: UpsertQuota :one
INSERT INTO quota (project_id, resource, hard_limit) VALUES ($1, $2, $3)
ON CONFLICT (project_id, resource) DO UPDATE SET hard_limit = EXCLUDED.hard_limit, updated_at = now()
RETURNING hard_limit;

-- name: ProjectInstanceUsage :one
-- What a project's live instances use. Instances being deleted no longer
-- count: Trove releases their quota when the delete is accepted.
SELECT count(*)::bigint AS instances,
       coalesce(sum(f.ram_mb), 0)::bigint AS ram,
       coalesce(sum(i.volume_size_gb), 0)::bigint AS volumes
FROM instance i
JOIN flavor f ON f.id = i.flavor_id
WHERE i.project_id = $1 AND i.deleted_at IS NULL AND i.task <> 'DELETING';
