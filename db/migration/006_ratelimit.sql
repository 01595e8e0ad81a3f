-- Per-project API rate limits (Trove's RateLimitingMiddleware), shared by
-- every API replica: one row per project and configured limit, holding the
-- limit's leaky bucket as a single timestamp (GCRA's "theoretical arrival
-- time"): the bucket's water level is greatest(tat - now(), 0), each
-- allowed request adds unit/value seconds, and a request that would lift it
-- above one unit is refused. This is exactly Trove's Limit arithmetic, kept
-- in one row that each request updates in place (internal/ratelimit).
--
-- UNLOGGED: the counters are worth less than their WAL. A crash (or a
-- failover to a standby) empties the table, which only forgives a minute of
-- requests. Fillfactor leaves room for HOT updates: no index column
-- changes, so the hot rows are rewritten in their own page.
CREATE UNLOGGED TABLE rate_limit (
    project_id text NOT NULL,
    limit_key  text NOT NULL,
    tat        timestamptz NOT NULL,
    PRIMARY KEY (project_id, limit_key)
) WITH (fillfactor = 50);

---- create above / drop below ----

DROP TABLE rate_limit;
