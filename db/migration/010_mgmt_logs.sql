-- Management instance actions (Trove's /mgmt/instances/{id}/action) and
-- guest logs.
--
-- A rebuild is an instance action like a restart or a resize: its row is
-- written with the agent command that ends it (the agent started again on
-- the rebuilt server brings the datastore up from the volume), so the
-- action machinery (deadline, reset_status, history) covers it; image_id
-- is the image it was asked for. Guest logs need no table: the agent
-- reports them with its inventory.
ALTER TABLE instance_action DROP CONSTRAINT instance_action_action_check;
ALTER TABLE instance_action ADD CONSTRAINT instance_action_action_check
    CHECK (action IN ('restart', 'resize_flavor', 'resize_volume', 'rebuild'));
ALTER TABLE instance_action ADD COLUMN image_id text NOT NULL DEFAULT '';

-- The management list: every project's instances, newest change first.
CREATE INDEX instance_updated_idx ON instance (updated_at DESC, id);

---- create above / drop below ----

DROP INDEX instance_updated_idx;
DELETE FROM instance_action WHERE action = 'rebuild';
ALTER TABLE instance_action DROP COLUMN image_id;
ALTER TABLE instance_action DROP CONSTRAINT instance_action_action_check;
ALTER TABLE instance_action ADD CONSTRAINT instance_action_action_check
    CHECK (action IN ('restart', 'resize_flavor', 'resize_volume'));
