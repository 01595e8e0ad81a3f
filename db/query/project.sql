-- name: UpsertProject :one
INSERT INTO project (id, name) VALUES ($1, $2)
ON CONFLICT (id) DO UPDATE SET name = EXCLUDED.name
RETURNING *;

-- name: InsertAPIToken :exec
INSERT INTO api_token (token_hash, project_id, user_name, roles, expires_at)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (token_hash) DO NOTHING;

-- name: GetAPIToken :one
SELECT * FROM api_token
WHERE token_hash = $1 AND (expires_at IS NULL OR expires_at > now());
