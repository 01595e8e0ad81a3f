-- name: TakeRateLimit :one
-- Takes one request from a project's bucket for one limit, atomically
-- (the upsert locks the row): the bucket rises by emission (unit/value)
-- unless that lifts it above capacity (one unit). No row comes back when
-- the request is refused, and then the bucket is unchanged, as in Trove.
INSERT INTO rate_limit AS r (project_id, limit_key, tat)
VALUES (@project_id, @limit_key, now() + make_interval(secs => @emission_seconds::float8))
ON CONFLICT (project_id, limit_key) DO UPDATE
SET tat = greatest(r.tat, now()) + make_interval(secs => @emission_seconds::float8)
WHERE greatest(r.tat, now()) + make_interval(secs => @emission_seconds::float8)
      <= now() + make_interval(secs => @capacity_seconds::float8)
RETURNING tat, now()::timestamptz AS now;

-- name: ProjectRateLimits :many
-- The buckets of one project for the given limits (tat NULL: never used),
-- with the database's clock, which every replica shares.
SELECT k.limit_key::text AS limit_key, r.tat, now()::timestamptz AS now
FROM unnest(@limit_keys::text[]) AS k (limit_key)
LEFT JOIN rate_limit r ON r.project_id = @project_id AND r.limit_key = k.limit_key;
