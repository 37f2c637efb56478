-- Host health snapshots written by `skyhouse monitor` (pkg/monitor): one row
-- per host per check interval.
--
-- Deduplicated like-for-like: a check is identified by (host, bucket), where
-- bucket is the start of the check interval the check belongs to (the
-- observation time rounded down to the interval). Re-inserting the same
-- check, or a restarted monitor checking again within the same interval,
-- writes the same key; ReplacingMergeTree(observed_at) keeps the newest
-- observation of that interval. Different intervals are different checks and
-- are all kept (the history the backfill and dashboards read).
-- The partition (month of bucket) derives only from the sorting key, so
-- replacements always meet their duplicates.
CREATE TABLE IF NOT EXISTS {db}.host_checks (
    host String,
    kind String,
    bucket DateTime,
    observed_at DateTime,
    up UInt8,
    result String,
    health_status UInt16,
    health_version String,
    describe_status UInt16,
    describe_did String,
    invite_code_required UInt8,
    user_domains Array(String),
    rtt_ms UInt32,
    error String
) ENGINE = ReplacingMergeTree(observed_at)
PARTITION BY toYYYYMM(bucket)
ORDER BY (host, bucket);
