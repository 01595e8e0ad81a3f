-- Instance update and actions.
--
-- access_*: the network access an update (or, later, a create) asked for,
-- Trove's stored access dict; NULL is_public means none was ever stored
-- and the view derives it from the addresses. The local provider serves
-- on loopback only, so there it is recorded and shown, not enforced.
--
-- instance_action: one row per restart or resize, written with the agent
-- command that carries it out (command_id). The command's payload is
-- cleared when it completes, so the target of a resize lives here, where
-- the command's completer (jobs/instance_actions.go) finds it; outcome
-- stays as the instance's action history.
ALTER TABLE instance ADD COLUMN access_is_public boolean;
ALTER TABLE instance ADD COLUMN access_allowed_cidrs text[] NOT NULL DEFAULT '{}';

CREATE TABLE instance_action (
    command_id          uuid PRIMARY KEY REFERENCES agent_command (id),
    instance_id         uuid NOT NULL REFERENCES instance (id),
    action              text NOT NULL CHECK (action IN ('restart', 'resize_flavor', 'resize_volume')),
    requested_by        text NOT NULL DEFAULT '',
    from_flavor_id      text NOT NULL DEFAULT '',
    to_flavor_id        text NOT NULL DEFAULT '',
    from_volume_size_gb integer NOT NULL DEFAULT 0,
    to_volume_size_gb   integer NOT NULL DEFAULT 0,
    outcome             text NOT NULL DEFAULT ''
                        CHECK (outcome IN ('', 'succeeded', 'failed', 'cancelled')),
    created_at          timestamptz NOT NULL DEFAULT now(),
    completed_at        timestamptz
);

CREATE INDEX instance_action_instance_idx ON instance_action (instance_id, created_at);
CREATE INDEX instance_action_open_idx ON instance_action (instance_id) WHERE completed_at IS NULL;

---- create above / drop below ----

DROP TABLE instance_action;
ALTER TABLE instance DROP COLUMN access_allowed_cidrs;
ALTER TABLE instance DROP COLUMN access_is_public;
