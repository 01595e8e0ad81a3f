-- name: LockProjectInstance :one
-- A live instance of one project, locked for an update or an action; any
-- other project's, or a deleted one, is not found.
SELECT * FROM instance
WHERE id = $1 AND project_id = $2 AND deleted_at IS NULL
FOR UPDATE;

-- name: RenameInstance :exec
UPDATE instance SET name = $2, updated_at = now() WHERE id = $1;

-- name: SetInstanceAccess :exec
UPDATE instance
SET access_is_public = @is_public, access_allowed_cidrs = @allowed_cidrs, updated_at = now()
WHERE id = @id;

-- name: StartInstanceTask :exec
-- An action begins: its task, and the service status to show meanwhile.
UPDATE instance SET task = @task, service_status = @service_status, updated_at = now()
WHERE id = @id;

-- name: FinishInstanceTask :exec
-- An action ended: back to no task, with the service status the agent
-- reported after it.
UPDATE instance SET task = 'NONE', service_status = @service_status, updated_at = now()
WHERE id = @id;

-- name: ResetInstanceStatus :exec
-- Trove's reset_status: no task, datastore status unknown until the next
-- heartbeat says otherwise.
UPDATE instance SET task = 'NONE', service_status = 'unknown', updated_at = now()
WHERE id = $1;

-- name: SetInstanceFlavor :exec
UPDATE instance SET flavor_id = $2, updated_at = now() WHERE id = $1;

-- name: SetInstanceVolumeSize :exec
UPDATE instance SET volume_size_gb = $2, updated_at = now() WHERE id = $1;

-- name: InsertInstanceAction :exec
INSERT INTO instance_action (command_id, instance_id, action, requested_by,
    from_flavor_id, to_flavor_id, from_volume_size_gb, to_volume_size_gb)
VALUES (@command_id, @instance_id, @action, @requested_by,
    @from_flavor_id, @to_flavor_id, @from_volume_size_gb, @to_volume_size_gb);

-- name: GetInstanceAction :one
SELECT * FROM instance_action WHERE command_id = $1;

-- name: CompleteInstanceAction :exec
UPDATE instance_action SET outcome = $2, completed_at = now()
WHERE command_id = $1 AND completed_at IS NULL;

-- name: CancelInstanceActions :exec
-- reset_status: the instance's open actions will never complete.
UPDATE instance_action SET outcome = 'cancelled', completed_at = now()
WHERE instance_id = $1 AND completed_at IS NULL;

-- name: ListInstanceActions :many
SELECT * FROM instance_action WHERE instance_id = $1 ORDER BY created_at, command_id;

-- name: ProjectPendingResizes :one
-- What a project's running resizes will add when they complete (the
-- instance rows change only then): quota checks count it as used, so two
-- resizes at once cannot both take the last of a limit.
SELECT coalesce(sum(greatest(tf.ram_mb - ff.ram_mb, 0)), 0)::bigint AS ram,
       coalesce(sum(greatest(a.to_volume_size_gb - a.from_volume_size_gb, 0)), 0)::bigint AS volumes
FROM instance_action a
JOIN instance i ON i.id = a.instance_id
JOIN flavor ff ON ff.id = a.from_flavor_id
JOIN flavor tf ON tf.id = a.to_flavor_id
WHERE i.project_id = $1 AND i.deleted_at IS NULL AND i.task <> 'DELETING'
  AND a.completed_at IS NULL AND a.action IN ('resize_flavor', 'resize_volume');

-- name: CancelAgentCommand :execrows
-- An action's deadline passed without the agent's answer: its command is
-- not to run any more (an answer that still comes is ignored).
UPDATE agent_command
SET state = 'cancelled', payload = '{}', completed_at = now(), leased_until = NULL
WHERE id = $1 AND state IN ('pending', 'leased');
