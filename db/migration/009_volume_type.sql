-- The catalog a cloud defines (jobs/catalog_sync.go): when the provider
-- implements provider.Catalog (OpenStack: Nova flavors, Cinder volume
-- types), a periodic job makes the flavor and volume_type tables what the
-- cloud offers, so that the API refuses what cannot be booted.
--
-- volume_type: the block-storage types instances may ask for on create
-- (instance.volume_type records the one asked for; empty: the provider's
-- default). Empty under providers without a catalog, where any named
-- type is refused.
--
-- flavor.hidden: a flavor gone from the cloud that instances still use.
-- It stays (their views link to it and a resize reads it) but is no longer
-- listed nor accepted for a create or a resize. Names are no longer unique
-- here: the cloud keeps its own flavors' names unique, and a hidden flavor,
-- or a seeded one the next sync removes, may share a name with a cloud
-- flavor (a unique name would make the seed, or the sync, fail on it).
-- Cinder keeps type names unique; here they are not constrained, so that
-- types renamed in Cinder between two syncs cannot make a sync fail.
CREATE TABLE volume_type (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    description text NOT NULL DEFAULT '',
    is_public   boolean NOT NULL DEFAULT true
);

ALTER TABLE flavor ADD COLUMN hidden boolean NOT NULL DEFAULT false;
ALTER TABLE flavor DROP CONSTRAINT flavor_name_key;

ALTER TABLE instance ADD COLUMN volume_type text NOT NULL DEFAULT '';

---- create above / drop below ----

ALTER TABLE instance DROP COLUMN volume_type;
DELETE FROM flavor WHERE hidden AND NOT EXISTS (SELECT 1 FROM instance WHERE flavor_id = flavor.id);
ALTER TABLE flavor ADD CONSTRAINT flavor_name_key UNIQUE (name);
ALTER TABLE flavor DROP COLUMN hidden;
DROP TABLE volume_type;
