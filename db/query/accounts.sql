-- name: LockAccountInstance :one
-- A live instance of one project with its datastore manager, locked for an
-- account change: a concurrent delete waits for the queued command, then
-- cancels it with the others.
SELECT sqlc.embed(i), dv.manager AS datastore_manager
FROM instance i
JOIN datastore_version dv ON dv.id = i.datastore_version_id
WHERE i.id = $1 AND i.project_id = $2 AND i.deleted_at IS NULL
FOR UPDATE OF i;

-- name: ListOpenAccountCommands :many
-- The account commands the agent has not finished, oldest first, so the
-- API can check a request against the inventory as it will be once they
-- ran. Passwords are stripped: only names are needed.
SELECT c.name,
       (CASE WHEN c.name = 'create_users' THEN
            jsonb_build_object('users', (
                SELECT coalesce(jsonb_agg(u - 'password'), '[]'::jsonb)
                FROM jsonb_array_elements(c.payload -> 'users') AS u))
        ELSE c.payload - 'password' - 'new_password'
        END)::jsonb AS payload
FROM agent_command c
WHERE c.instance_id = @instance_id
  AND c.state IN ('pending', 'leased')
  AND c.name = ANY (@names::text[])
ORDER BY c.created_at, c.id;

-- name: InsertRootHistory :exec
INSERT INTO root_history (instance_id, enabled_by, command_id) VALUES ($1, $2, $3);

-- name: LatestRootHistory :one
-- The instance's last root enable (root is enabled while it is not disabled).
SELECT * FROM root_history WHERE instance_id = $1 ORDER BY id DESC LIMIT 1;

-- name: DisableRootHistory :exec
UPDATE root_history SET disabled_at = now(), disabled_by = $2
WHERE instance_id = $1 AND disabled_at IS NULL;

-- name: DeleteRootHistoryOfCommand :exec
-- An enable_root command failed: root was not enabled by it.
DELETE FROM root_history WHERE command_id = $1;
