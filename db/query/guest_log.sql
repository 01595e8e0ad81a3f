-- name: ListGuestLogPublications :many
SELECT * FROM guest_log_publication WHERE instance_id = $1 ORDER BY name;

-- name: ClaimGuestLogPublication :one
-- Takes the log's publish lease (creating its row on first use) unless
-- another publish or discard holds it; no row: it is held.
INSERT INTO guest_log_publication AS p (instance_id, name, publishing_until)
VALUES (@instance_id, @name, now() + make_interval(secs => @lease_seconds::integer))
ON CONFLICT (instance_id, name) DO UPDATE
SET publishing_until = EXCLUDED.publishing_until
WHERE p.publishing_until IS NULL OR p.publishing_until < now()
RETURNING *;

-- name: SetGuestLogPublished :exec
UPDATE guest_log_publication
SET published = @published, updated_at = now()
WHERE instance_id = @instance_id AND name = @name;

-- name: ReleaseGuestLogPublication :exec
UPDATE guest_log_publication
SET publishing_until = NULL
WHERE instance_id = @instance_id AND name = @name;

-- name: ClearAgentCommandResult :exec
-- Drops a consumed result that is too large to keep (a guest log chunk).
UPDATE agent_command SET result = NULL WHERE id = $1 AND instance_id = $2;
