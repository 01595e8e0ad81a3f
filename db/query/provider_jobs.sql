-- Jobs that carry the control plane's decisions to the provider's cloud:
-- resizes (jobs/resize_instance.go), access (jobs/apply_access.go) and the
-- compute status refresh (jobs/compute_status.go).

-- name: HoldAgentCommand :exec
-- A command the agent must not get before a job has done the provider's
-- part (a resize: the server or the volume first). It is leased to the
-- control plane: attempts 0 tells it from an agent's lease, and every path
-- that ends a pending or leased command (reset_status, delete, the action's
-- deadline) ends a held one too.
UPDATE agent_command
SET state = 'leased', leased_until = '3000-01-01 00:00:00+00'
WHERE id = $1 AND state = 'pending' AND attempts = 0;

-- name: ReleaseAgentCommand :execrows
-- Hands a held command to the agent; wakes its parked long-poll (an
-- insert does that through the trigger; this is an update).
WITH released AS (
    UPDATE agent_command
    SET state = 'pending', leased_until = NULL
    WHERE id = $1 AND state = 'leased' AND attempts = 0
    RETURNING instance_id
)
SELECT pg_notify('coffer_agent_command', instance_id::text) FROM released;

-- name: ListComputeWatched :many
-- Live instances whose server the compute refresh looks at: those with a
-- server, idle or building (an action or a delete owns the server while it
-- runs).
SELECT id, project_id, task, compute_status, server_id FROM instance
WHERE deleted_at IS NULL AND server_id <> ''
  AND task IN ('NONE', 'RESTART_REQUIRED', 'BUILDING')
ORDER BY id;

-- name: SetInstanceComputeStatus :exec
UPDATE instance SET compute_status = $2, updated_at = now() WHERE id = $1;

-- name: SetInstanceCreateAccess :exec
-- The access a create asked for (no updated_at: the row is new).
UPDATE instance
SET access_is_public = @is_public, access_allowed_cidrs = @allowed_cidrs
WHERE id = @id;

-- name: RecordInstanceFault :exec
-- A fault that does not change the task (the instance keeps running).
UPDATE instance
SET fault_message = $2, fault_details = $3, fault_at = now(), updated_at = now()
WHERE id = $1;
