-- What the control plane published of each guest log into its owner's
-- object store (Trove's guest log publish): the published size of the
-- log's file, and a lease that makes one publish of a log run at a time.
CREATE TABLE guest_log_publication (
    instance_id      uuid NOT NULL REFERENCES instance (id) ON DELETE CASCADE,
    name             text NOT NULL,
    published        bigint NOT NULL DEFAULT 0 CHECK (published >= 0),
    publishing_until timestamptz,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (instance_id, name)
);

---- create above / drop below ----

DROP TABLE guest_log_publication;
