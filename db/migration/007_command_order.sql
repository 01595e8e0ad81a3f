-- Commands reach the agent in the order they were queued, also when one
-- transaction (or concurrent requests) queues several: created_at is the
-- transaction's start time and ties were broken by a random id.
ALTER TABLE agent_command ADD COLUMN seq bigint GENERATED ALWAYS AS IDENTITY;

DROP INDEX agent_command_deliverable_idx;
CREATE INDEX agent_command_deliverable_idx ON agent_command (instance_id, seq)
    WHERE state IN ('pending', 'leased');

---- create above / drop below ----

DROP INDEX agent_command_deliverable_idx;
CREATE INDEX agent_command_deliverable_idx ON agent_command (instance_id, created_at)
    WHERE state IN ('pending', 'leased');
ALTER TABLE agent_command DROP COLUMN seq;
