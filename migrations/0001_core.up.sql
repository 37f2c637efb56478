-- Core tables: the raw record log and the per-account state.
-- Every record table sorts by its key columns only, so a tombstone (deleted = 1,
-- newer version) collapses with the row it replaces; no partition key for the
-- same reason. Read current state with FINAL (or argMax) and deleted = 0.

CREATE TABLE IF NOT EXISTS {db}.records (
    did String,
    collection String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    record String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, collection, rkey);

-- did -> handle, newest event wins (version = firehose seq or Jetstream time_us).
CREATE TABLE IF NOT EXISTS {db}.identities (
    did String,
    handle String,
    version UInt64,
    indexed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY did;

-- Hosting status: active = 0 hides the account (deactivated, takendown,
-- suspended); status 'deleted' also queues a cleanup job.
CREATE TABLE IF NOT EXISTS {db}.accounts (
    did String,
    active UInt8,
    status String,
    version UInt64,
    indexed_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY did;

-- Labels on accounts (from labelers); private author-label feeds read these.
CREATE TABLE IF NOT EXISTS {db}.actor_labels (
    did String,
    label String,
    src String,
    neg UInt8,
    version UInt64,
    created_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, label, src);

-- API keys: only a hash of the key is stored.
CREATE TABLE IF NOT EXISTS {db}.api_keys (
    id String,
    key_hash String,
    name String,
    scopes Array(String),
    created_at DateTime,
    revoked UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id;

-- Jobs that tombstone every row of a DID (account deleted, admin request).
CREATE TABLE IF NOT EXISTS {db}.repo_cleanup_jobs (
    id String,
    did String,
    status String,
    reason String,
    rows_tombstoned UInt64,
    requested_at DateTime,
    finished_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY id;

-- Per-DID backfill state: the snapshot rev indexed and how it went.
CREATE TABLE IF NOT EXISTS {db}.repo_state (
    did String,
    rev String,
    rev_version UInt64,
    status String,
    records UInt64,
    error String,
    updated_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY did;

-- Daily live-record counts per collection, bucketed on sort_at. Recomputed
-- from records FINAL (so replays and deletes are accounted for); each
-- recomputation replaces the day's row.
CREATE TABLE IF NOT EXISTS {db}.daily_stats (
    day Date,
    collection String,
    records UInt64,
    actors UInt64,
    computed_at DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (day, collection);
