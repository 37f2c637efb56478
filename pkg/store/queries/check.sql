-- Read queries the store exposes, checked on current ClickHouse by
-- scripts/chdb_check.py (tests/chdb.rs) after the migrations are applied.
-- They must also run on ClickHouse 18.16: old functions and syntax only
-- (explicit ANY/ALL on JOIN with USING, an alias on every joined subquery,
-- no alias equal to a column an aggregate reads). Same format as the
-- migrations: `--` comment lines, each statement ends with `;` at the end of
-- a line, `{db}` is the database.

-- Live records per collection.
SELECT collection, count() AS live_records
FROM {db}.records FINAL
WHERE deleted = 0
GROUP BY collection
ORDER BY live_records DESC, collection
LIMIT 100;

-- A DID's live records (FINAL).
SELECT collection, rkey, cid, created_at, indexed_at, record
FROM {db}.records FINAL
WHERE did = 'did:plc:alice' AND deleted = 0
ORDER BY collection, rkey
LIMIT 100;

-- The same without FINAL: the newest version of each key wins (argMax).
SELECT collection, rkey, argMax(cid, version) AS latest_cid, argMax(record, version) AS latest_record
FROM {db}.records
WHERE did = 'did:plc:alice'
GROUP BY collection, rkey
HAVING argMax(deleted, version) = 0
ORDER BY collection, rkey
LIMIT 100;

-- One record by its key.
SELECT cid, record, created_at
FROM {db}.records FINAL
WHERE did = 'did:plc:bob' AND collection = 'app.bsky.feed.like' AND rkey = '3klike1' AND deleted = 0
LIMIT 1;

-- Newest records of a collection, by sort_at.
SELECT did, rkey, cid, sort_at
FROM {db}.records FINAL
WHERE collection = 'app.bsky.feed.post' AND deleted = 0
ORDER BY sort_at DESC, did, rkey
LIMIT 50;

-- Latest handle per DID.
SELECT did, argMax(handle, version) AS latest_handle
FROM {db}.identities
GROUP BY did
ORDER BY did
LIMIT 100;

-- One DID's handle (FINAL).
SELECT handle
FROM {db}.identities FINAL
WHERE did = 'did:plc:alice'
LIMIT 1;

-- A DID's hosting status.
SELECT did, argMax(active, version) AS is_active, argMax(status, version) AS latest_status
FROM {db}.accounts
WHERE did = 'did:plc:bob'
GROUP BY did;

-- Live records per collection, hidden accounts (active = 0) left out.
SELECT collection, count() AS live_records
FROM {db}.records FINAL
WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1)
GROUP BY collection
ORDER BY collection;

-- Most active DIDs with their latest handle.
SELECT did, latest_handle, live_records
FROM (
    SELECT did, count() AS live_records
    FROM {db}.records FINAL
    WHERE deleted = 0
    GROUP BY did
) AS counts
ANY LEFT JOIN (
    SELECT did, argMax(handle, version) AS latest_handle
    FROM {db}.identities
    GROUP BY did
) AS handles USING did
ORDER BY live_records DESC, did
LIMIT 10;

-- Recompute every day's daily_stats from record_days FINAL, as the refresh
-- does for the days that got rows (queries/aggregates.sql
-- daily_stats_recompute): hidden accounts left out, the hour counts and the
-- accounts' state filled. Its version is the start of this second in
-- microseconds (the refresh's clock), so it replaces what earlier refreshes
-- wrote. A day whose records were all deleted keeps its old row here (the
-- refresh zeroes such days first).
INSERT INTO {db}.daily_stats (day, collection, records, actors, computed_at, version, hour_counts, actors_state) SELECT day, collection, records, actors, now() AS computed_at, toUInt64(toUnixTimestamp(now())) * 1000000 AS version, arrayMap((h, hours, counts) -> toUInt64(counts[indexOf(hours, h)]), range(24), arrayResize([per_hour.1], 24, per_hour.1), arrayResize([per_hour.2], 24, per_hour.2)) AS hour_counts, actors_state FROM (SELECT day, collection, count() AS records, uniqExact(did) AS actors, sumMap([toUInt64(hour)], [toUInt64(1)]) AS per_hour, uniqState(did) AS actors_state FROM {db}.record_days FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1) GROUP BY day, collection);

-- Daily stats, FINAL.
SELECT day, collection, records, actors
FROM {db}.daily_stats FINAL
WHERE day >= toDate('2024-01-01')
ORDER BY day, collection;

-- Daily stats without FINAL: the newest computation of each day wins.
SELECT day, collection, argMax(records, version) AS day_records, argMax(actors, version) AS day_actors
FROM {db}.daily_stats
GROUP BY day, collection
ORDER BY day, collection;
