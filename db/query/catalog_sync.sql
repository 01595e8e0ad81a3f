-- Catalog sync (jobs/catalog_sync.go): flavors and volume types as the
-- cloud defines them, and the API's reads of what is offered.

-- name: LockCatalogSync :exec
-- One sync at a time (two workers' periodic jobs may overlap).
SELECT pg_advisory_xact_lock(hashtext('coffer_catalog_sync'));

-- name: RetireFlavors :many
-- Flavors the cloud no longer offers: deleted when nothing refers to them,
-- hidden when instances (live or deleted, whose rows keep the reference)
-- or a running resize (which sets it when it completes) still do. Returns
-- what was retired and whether it was only hidden.
WITH gone AS (
    SELECT f.id,
           EXISTS (SELECT 1 FROM instance i WHERE i.flavor_id = f.id)
           OR EXISTS (SELECT 1 FROM instance_action a WHERE a.to_flavor_id = f.id AND a.completed_at IS NULL) AS used
    FROM flavor f
    WHERE NOT (f.id = ANY (@keep_ids::text[]))
), deleted AS (
    DELETE FROM flavor f USING gone g
    WHERE f.id = g.id AND NOT g.used
    RETURNING f.id
), hidden AS (
    UPDATE flavor f SET hidden = true
    FROM gone g
    WHERE f.id = g.id AND g.used AND NOT f.hidden
    RETURNING f.id
)
SELECT id, false AS kept FROM deleted
UNION ALL
SELECT id, true AS kept FROM hidden;

-- name: SyncFlavor :exec
-- A flavor the cloud offers, as it defines it, offered again if it was
-- hidden.
INSERT INTO flavor (id, name, ram_mb, vcpus, disk_gb, ephemeral, hidden)
VALUES (@id, @name, @ram_mb, @vcpus, @disk_gb, @ephemeral, false)
ON CONFLICT (id) DO UPDATE
SET name = EXCLUDED.name, ram_mb = EXCLUDED.ram_mb, vcpus = EXCLUDED.vcpus,
    disk_gb = EXCLUDED.disk_gb, ephemeral = EXCLUDED.ephemeral, hidden = false;

-- name: RetireVolumeTypes :execrows
DELETE FROM volume_type WHERE NOT (id = ANY (@keep_ids::text[]));

-- name: SyncVolumeType :exec
INSERT INTO volume_type (id, name, description, is_public)
VALUES (@id, @name, @description, @is_public)
ON CONFLICT (id) DO UPDATE
SET name = EXCLUDED.name, description = EXCLUDED.description, is_public = EXCLUDED.is_public;

-- name: ListOfferedFlavors :many
SELECT * FROM flavor WHERE NOT hidden ORDER BY ram_mb, id;

-- name: GetOfferedFlavor :one
-- A flavor a create or resize may ask for.
SELECT * FROM flavor WHERE id = $1 AND NOT hidden;

-- name: ListVolumeTypes :many
SELECT * FROM volume_type ORDER BY name, id;

-- name: GetVolumeType :one
-- By id or by name (Cinder accepts either and keeps names unique).
SELECT * FROM volume_type WHERE id = $1 OR name = $1 ORDER BY (id = $1) DESC, id LIMIT 1;

-- name: SetInstanceVolumeType :exec
UPDATE instance SET volume_type = $2 WHERE id = $1;
