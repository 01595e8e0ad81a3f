-- name: InsertAgentCommand :one
INSERT INTO agent_command (id, instance_id, name, payload, lease_seconds)
VALUES ($1, $2, $3, $4, $5)
RETURNING *;

-- name: LeaseAgentCommand :one
-- Hands the oldest deliverable command of an instance to its agent: a
-- pending one, or one whose lease ran out (the agent died holding it).
UPDATE agent_command
SET state = 'leased', attempts = attempts + 1,
    leased_until = now() + make_interval(secs => lease_seconds)
WHERE id = (
    SELECT c.id FROM agent_command c
    WHERE c.instance_id = $1
      AND (c.state = 'pending' OR (c.state = 'leased' AND c.leased_until < now()))
    ORDER BY c.seq
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING *;

-- name: GetAgentCommand :one
SELECT * FROM agent_command WHERE id = $1 AND instance_id = $2;

-- name: CompleteAgentCommand :one
-- Records the result once; a repeated result (a retried POST) changes nothing.
UPDATE agent_command
SET state = @state, result = @result, error = @error, completed_at = now(),
    payload = '{}', leased_until = NULL
WHERE id = @id AND instance_id = @instance_id AND state IN ('pending', 'leased')
RETURNING *;

-- name: CancelAgentCommands :exec
UPDATE agent_command
SET state = 'cancelled', payload = '{}', completed_at = now(), leased_until = NULL
WHERE instance_id = $1 AND state IN ('pending', 'leased');
