-- The queries skyhouse-store runs (src/queries.rs), one per `-- name:` line.
-- They run on ClickHouse 18.16 and current releases: the tests run them on
-- both (tests/it/queries.rs, and scripts/chdb_check.py with sample values).
-- `{db}` is the database; `{did}`, `{since}`, `{limit}` and `{version}` are filled with
-- validated, quoted literals (18.16 has no server-side query parameters).

-- name: collection_counts
SELECT collection, count() AS live_records
FROM {db}.records FINAL
WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0)
GROUP BY collection
ORDER BY live_records DESC, collection;

-- name: account_hidden
SELECT count() AS n FROM {db}.accounts FINAL WHERE did = {did} AND active = 0;

-- name: records_of
SELECT collection, rkey, cid, version, record
FROM {db}.records FINAL
WHERE did = {did} AND deleted = 0
ORDER BY collection, rkey
LIMIT {limit};

-- name: zero_daily_stats
-- First zero every stored day in range (a day whose records were all deleted
-- must drop to 0), then recompute; the recomputation's version is higher.
INSERT INTO {db}.daily_stats SELECT day, collection, toUInt64(0) AS records, toUInt64(0) AS actors, now() AS computed_at, toUInt64({version}) AS version FROM {db}.daily_stats FINAL WHERE day >= toDate({since});

-- name: refresh_daily_stats
INSERT INTO {db}.daily_stats SELECT toDate(sort_at) AS day, collection, count() AS records, uniqExact(did) AS actors, now() AS computed_at, toUInt64({version}) + 1 AS version FROM {db}.records FINAL WHERE deleted = 0 AND sort_at >= toDateTime(toDate({since})) GROUP BY day, collection;

-- name: daily_stats
SELECT toString(day) AS day_text, collection, records, actors
FROM {db}.daily_stats FINAL
WHERE day >= toDate({since})
ORDER BY day, collection;

