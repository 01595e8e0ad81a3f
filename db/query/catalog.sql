-- name: UpsertDatastore :one
INSERT INTO datastore (id, name) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
RETURNING *;

-- name: SetDatastoreDefaultVersion :exec
UPDATE datastore SET default_version_id = $2 WHERE id = $1;

-- name: UpsertDatastoreVersion :one
INSERT INTO datastore_version (id, datastore_id, name, version, manager, active, image)
VALUES ($1, $2, $3, $4, $5, $6, $7)
ON CONFLICT (datastore_id, name) DO UPDATE
SET version = EXCLUDED.version, manager = EXCLUDED.manager, active = EXCLUDED.active, image = EXCLUDED.image
RETURNING *;

-- name: ListDatastores :many
SELECT * FROM datastore ORDER BY name;

-- name: GetDatastoreByName :one
SELECT * FROM datastore WHERE name = $1;

-- name: GetDatastoreByID :one
SELECT * FROM datastore WHERE id = $1;

-- name: ListDatastoreVersions :many
SELECT * FROM datastore_version WHERE datastore_id = $1 ORDER BY name;

-- name: ListAllDatastoreVersions :many
SELECT * FROM datastore_version ORDER BY datastore_id, name;

-- name: GetDatastoreVersion :one
SELECT * FROM datastore_version WHERE id = $1;

-- name: GetDatastoreVersionByName :many
SELECT * FROM datastore_version WHERE datastore_id = $1 AND (name = $2 OR version = $2) ORDER BY name;

-- name: UpsertFlavor :one
INSERT INTO flavor (id, name, ram_mb, vcpus, disk_gb, ephemeral)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (id) DO UPDATE
SET name = EXCLUDED.name, ram_mb = EXCLUDED.ram_mb, vcpus = EXCLUDED.vcpus,
    disk_gb = EXCLUDED.disk_gb, ephemeral = EXCLUDED.ephemeral
RETURNING *;

-- name: ListFlavors :many
SELECT * FROM flavor ORDER BY ram_mb, id;

-- name: GetFlavor :one
SELECT * FROM flavor WHERE id = $1;
