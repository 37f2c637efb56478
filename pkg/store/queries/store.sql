-- The queries skyhouse-store runs (src/queries.rs), one per `-- name:` line.
-- They run on ClickHouse 18.16 and current releases: the tests run them on
-- both (tests/it/queries.rs, and scripts/chdb_check.py with sample values).
-- `{db}` is the database; `{did}`, `{since}`, `{limit}` and `{version}` are filled with
-- validated, quoted literals (18.16 has no server-side query parameters).

-- name: collection_counts
-- Live records per collection, all time: the sum of the daily stats
-- (src/aggregates.rs keeps them), every stored account included.
SELECT collection, toUInt64(sum(records)) AS live_records
FROM {db}.daily_stats FINAL
GROUP BY collection
HAVING live_records > 0
ORDER BY live_records DESC, collection;

-- name: account_hidden
SELECT count() AS n FROM {db}.accounts FINAL WHERE did = {did} AND active = 0;

-- name: records_of
SELECT collection, rkey, cid, version, record
FROM {db}.records FINAL
WHERE did = {did} AND deleted = 0
ORDER BY collection, rkey
LIMIT {limit};

-- name: read_only_replicas
-- The health probe on a cluster: the database's replicated tables that are
-- read-only (their server lost its ZooKeeper session) on one server of
-- each shard. {replicas} is `cluster('<name>', system, replicas)`, so a
-- shard none of whose servers answers fails the query (code 279).
SELECT count() AS n FROM {replicas} WHERE database = '{db}' AND is_readonly;

-- name: daily_stats
SELECT toString(day) AS day_text, collection, records, actors
FROM {db}.daily_stats FINAL
WHERE day >= toDate({since})
ORDER BY day, collection;


-- name: insert_row_binary
-- The writer's inserts: {table} is one of skyhouse's tables, {columns} the
-- columns skyhouse writes, in order; the body is the rows in RowBinary
-- (`ClickHouse::insert_row_binary`).
INSERT INTO {db}.{table} ({columns}) FORMAT RowBinary;
