-- What the guest reports its datastore holds (databases, users, root), with
-- every heartbeat: the API lists these without a round trip to the guest.
ALTER TABLE instance ADD COLUMN inventory jsonb;
ALTER TABLE instance ADD COLUMN inventory_at timestamptz;

---- create above / drop below ----

ALTER TABLE instance DROP COLUMN inventory_at;
ALTER TABLE instance DROP COLUMN inventory;
