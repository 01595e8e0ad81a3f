-- Root enablement history (Trove's root_enabled_history): who enabled the
-- datastore's superuser on an instance and when. GET .../root and the mgmt
-- root history answer from it, not from the guest. A row is written with
-- the enable_root command it queued; if that command fails the row is
-- removed again (jobs/root.go), so the history records only real enables.
-- Disabling stamps disabled_at on the open rows.
CREATE TABLE root_history (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES instance (id),
    enabled_at  timestamptz NOT NULL DEFAULT now(),
    enabled_by  text NOT NULL,
    command_id  uuid NOT NULL,
    disabled_at timestamptz,
    disabled_by text NOT NULL DEFAULT ''
);

CREATE INDEX root_history_instance_idx ON root_history (instance_id, id);
CREATE INDEX root_history_command_idx ON root_history (command_id);

---- create above / drop below ----

DROP TABLE root_history;
