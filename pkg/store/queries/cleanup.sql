-- Cleanup jobs (src/cleanup.rs): tombstone every stored row of some DIDs.
-- {table} is `records` or a typed table, {key} its key columns
-- (`did, collection, rkey` or `did, rkey`), {dids} quoted DIDs separated by
-- commas, {version} the tombstones' minimum version, {requested}/{finished}
-- Unix seconds. {action_column}/{action_value}: `, action` and
-- `, toUInt8(3) AS action` (a delete) on typed tables, empty on `records`.

-- name: cleanup_live_rows
-- Live keys of the DIDs in one table (an admin request reports them; the
-- account deletions' batches do not count).
SELECT count() FROM (SELECT {key}, argMax(deleted, version) AS d FROM {db}.{table} WHERE did IN ({dids}) GROUP BY {key}) WHERE d = 0;

-- name: cleanup_tombstone
-- One statement per table for every DID of a batch. The aggregates sit in a
-- subquery under other names: an outer `AS version` would shadow the column
-- inside `argMax(deleted, version)` (ClickHouse then rejects an aggregate
-- inside an aggregate).
INSERT INTO {db}.{table} ({key}, cid, version, deleted, created_at, indexed_at, sort_at{action_column}) SELECT {key}, '' AS cid, greatest(newest + 1, toUInt64({version})) AS version, toUInt8(1) AS deleted, toDateTime({requested}) AS created_at, toDateTime({requested}) AS indexed_at, toDateTime({requested}) AS sort_at{action_value} FROM (SELECT {key}, max(version) AS newest, argMax(deleted, version) AS gone FROM {db}.{table} WHERE did IN ({dids}) GROUP BY {key}) WHERE gone = 0;

-- name: cleanup_jobs_done
-- {jobs}: one `({id}, {did}, 'done', {reason}, {rows}, toDateTime({requested}),
-- toDateTime({finished}), {version})` per job, separated by commas.
INSERT INTO {db}.repo_cleanup_jobs (id, did, status, reason, rows_tombstoned, requested_at, finished_at, version) VALUES {jobs};

-- name: pending_account_cleanups
-- Deleted accounts whose cleanup has not finished.
SELECT did, version FROM {db}.accounts FINAL WHERE status = 'deleted' AND concat('account-deleted:', did, ':', toString(version)) {global}NOT IN (SELECT id FROM {db}.repo_cleanup_jobs FINAL WHERE status = 'done') ORDER BY version LIMIT 1000;

-- name: cleanup_job
-- One job's state (the admin API's job route).
SELECT id, did, status, reason, rows_tombstoned, toUInt32(requested_at) AS requested_at, toUInt32(finished_at) AS finished_at FROM {db}.repo_cleanup_jobs FINAL WHERE id = {id};
