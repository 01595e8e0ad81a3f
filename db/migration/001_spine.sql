-- Coffer's application schema: projects and tokens, the datastore catalog,
-- flavors, instances, agent commands and events. River's own tables are
-- migrated separately by rivermigrate (see db/migrate).

CREATE TABLE project (
    id         text PRIMARY KEY,
    name       text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Built-in API tokens for the embedded default (Keystone replaces them in
-- OpenStack deployments). Only the SHA-256 of a token is stored.
CREATE TABLE api_token (
    token_hash bytea PRIMARY KEY,
    project_id text NOT NULL REFERENCES project (id),
    user_name  text NOT NULL,
    roles      text[] NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz
);

CREATE TABLE datastore (
    id                 uuid PRIMARY KEY,
    name               text NOT NULL UNIQUE,
    default_version_id uuid
);

CREATE TABLE datastore_version (
    id           uuid PRIMARY KEY,
    datastore_id uuid NOT NULL REFERENCES datastore (id),
    name         text NOT NULL,
    version      text NOT NULL,
    manager      text NOT NULL,
    active       boolean NOT NULL DEFAULT false,
    image        text NOT NULL DEFAULT '',
    UNIQUE (datastore_id, name)
);

ALTER TABLE datastore
    ADD CONSTRAINT datastore_default_version_fk
    FOREIGN KEY (default_version_id) REFERENCES datastore_version (id) DEFERRABLE INITIALLY DEFERRED;

CREATE TABLE flavor (
    id        text PRIMARY KEY,
    name      text NOT NULL UNIQUE,
    ram_mb    integer NOT NULL CHECK (ram_mb > 0),
    vcpus     integer NOT NULL CHECK (vcpus > 0),
    disk_gb   integer NOT NULL DEFAULT 0,
    ephemeral integer NOT NULL DEFAULT 0
);

-- An instance. `task` is Trove's task status (NONE, BUILDING, DELETING, ...,
-- or an ERROR_* task), `compute_status` the provider's view of the server
-- (BUILD, ACTIVE, ERROR, SHUTDOWN) and `service_status` the datastore status
-- the agent last reported (new, building, healthy, ...). The API status is
-- derived from these three and the heartbeat age on every read.
CREATE TABLE instance (
    id                   uuid PRIMARY KEY,
    project_id           text NOT NULL REFERENCES project (id),
    name                 text NOT NULL,
    flavor_id            text NOT NULL REFERENCES flavor (id),
    volume_size_gb       integer NOT NULL CHECK (volume_size_gb > 0),
    datastore_version_id uuid NOT NULL REFERENCES datastore_version (id),
    task                 text NOT NULL DEFAULT 'BUILDING',
    compute_status       text NOT NULL DEFAULT 'BUILD',
    service_status       text NOT NULL DEFAULT 'new',
    server_id            text NOT NULL DEFAULT '',
    address              text NOT NULL DEFAULT '',
    port                 integer NOT NULL DEFAULT 0,
    volume_used_bytes    bigint NOT NULL DEFAULT 0,
    heartbeat_at         timestamptz,
    agent_token_hash     bytea,
    fault_message        text NOT NULL DEFAULT '',
    fault_details        text NOT NULL DEFAULT '',
    fault_at             timestamptz,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    deleted_at           timestamptz
);

CREATE INDEX instance_project_live_idx ON instance (project_id, id) WHERE deleted_at IS NULL;
CREATE INDEX instance_task_idx ON instance (task) WHERE deleted_at IS NULL;

-- Commands for guest agents, delivered at least once by long-poll. A command
-- is pending until an agent leases it; an expired lease makes it deliverable
-- again; the agent's result completes it. Secret-bearing payloads are cleared
-- when the command completes.
CREATE TABLE agent_command (
    id            uuid PRIMARY KEY,
    instance_id   uuid NOT NULL REFERENCES instance (id),
    name          text NOT NULL,
    payload       jsonb NOT NULL DEFAULT '{}',
    state         text NOT NULL DEFAULT 'pending'
                  CHECK (state IN ('pending', 'leased', 'succeeded', 'failed', 'cancelled')),
    lease_seconds integer NOT NULL DEFAULT 600 CHECK (lease_seconds > 0),
    leased_until  timestamptz,
    attempts      integer NOT NULL DEFAULT 0,
    result        jsonb,
    error         text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now(),
    completed_at  timestamptz
);

CREATE INDEX agent_command_deliverable_idx ON agent_command (instance_id, created_at)
    WHERE state IN ('pending', 'leased');

-- A new command wakes the long-poll parked for its instance, on whichever API
-- replica holds it. NOTIFY is transactional: it is delivered at commit.
CREATE FUNCTION agent_command_notify() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('coffer_agent_command', NEW.instance_id::text);
    RETURN NULL;
END;
$$;

CREATE TRIGGER agent_command_notify AFTER INSERT ON agent_command
    FOR EACH ROW EXECUTE FUNCTION agent_command_notify();

-- Events a user may care about, written in the transaction of the change.
CREATE TABLE event (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    project_id  text NOT NULL,
    kind        text NOT NULL,
    resource_id uuid,
    payload     jsonb NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX event_project_idx ON event (project_id, id);

---- create above / drop below ----

DROP TABLE event;
DROP TRIGGER agent_command_notify ON agent_command;
DROP FUNCTION agent_command_notify();
DROP TABLE agent_command;
DROP TABLE instance;
DROP TABLE flavor;
ALTER TABLE datastore DROP CONSTRAINT datastore_default_version_fk;
DROP TABLE datastore_version;
DROP TABLE datastore;
DROP TABLE api_token;
DROP TABLE project;
