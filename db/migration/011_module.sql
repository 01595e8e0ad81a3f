-- Trove modules: named payloads (a license, a ping) a project applies to
-- its instances; the guest stores the contents on the volume and runs the
-- module type's driver.

-- A module. project_id is the creator's project; all_tenants modules
-- (Trove's tenant_id NULL) are visible to every project. contents are
-- AES-GCM sealed under a data key wrapped by the owner's project key
-- (contents_key) when the deployment has a master key; contents_key NULL
-- means they are stored as given. md5 is of the plain contents.
CREATE TABLE module (
    id                   uuid PRIMARY KEY,
    project_id           text NOT NULL,
    all_tenants          boolean NOT NULL DEFAULT false,
    name                 text NOT NULL,
    type                 text NOT NULL,
    description          text NOT NULL DEFAULT '',
    contents             bytea NOT NULL,
    contents_key         bytea,
    md5                  text NOT NULL,
    datastore_id         uuid REFERENCES datastore (id),
    datastore_version_id uuid REFERENCES datastore_version (id),
    auto_apply           boolean NOT NULL DEFAULT false,
    visible              boolean NOT NULL DEFAULT true,
    live_update          boolean NOT NULL DEFAULT false,
    priority_apply       boolean NOT NULL DEFAULT false,
    apply_order          integer NOT NULL DEFAULT 5 CHECK (apply_order BETWEEN 0 AND 9),
    is_admin             boolean NOT NULL DEFAULT false,
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now()
);

-- Trove's ModuleAlreadyExists: one name per owner.
CREATE UNIQUE INDEX module_name_idx ON module (project_id, name);

-- A module applied (or being applied) to an instance. md5 is what was
-- sent; status/message are the guest's report (NULL until it answered).
CREATE TABLE instance_module (
    instance_id uuid NOT NULL REFERENCES instance (id) ON DELETE CASCADE,
    module_id   uuid NOT NULL REFERENCES module (id) ON DELETE CASCADE,
    md5         text NOT NULL,
    status      text CHECK (status IN ('OK', 'ERROR')),
    message     text NOT NULL DEFAULT '',
    command_id  uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, module_id)
);

CREATE INDEX instance_module_module_idx ON instance_module (module_id, instance_id);

---- create above / drop below ----

DROP TABLE instance_module;
DROP TABLE module;
