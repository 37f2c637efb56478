-- The replies of each thread, by root, for the gate pass (issue: network
-- scale). When a threadgate arrives or changes, every reply of its thread
-- is decided again, and the pass needs each reply's key, parent and
-- current state. It found them through the `thread` rows of `interactions`
-- (granules of 8,192 rows: a thread's few rows cost a granule in every
-- part) and then read `posts` by the replies' keys (every granule of the
-- table for ~50k replies): after 1M new records at 100M records, 43M rows
-- and 3.8 s for 1,815 new gates.
--
-- `thread_replies` holds one row per reply version, sorted by its root,
-- with its parent, in granules of 256 rows: a thread costs about 256 rows
-- per part. The gate pass writes each reply it decides here (with its
-- parent); the view below copies the `thread` rows the refresh still
-- writes into `interactions` (a deleted or edited reply's current state,
-- a stale create's tombstone), which name no parent. Reads take the
-- newest version (`FINAL`; at an equal version the later insert, as
-- everywhere in the refresh). The replier's column is `replier`, not
-- `did`: on a cluster a table a view feeds with a `did` column is sharded
-- by it, and this one must sit with the `thread` rows of `interactions`,
-- sharded by the root.
CREATE TABLE IF NOT EXISTS {db}.thread_replies (
    root_uri String,
    replier String,
    rkey String,
    parent_uri String,
    version UInt64,
    deleted UInt8,
    sort_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (root_uri, replier, rkey)
SETTINGS index_granularity = 256;

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.thread_replies_feed TO {db}.thread_replies AS SELECT subject_uri AS root_uri, did AS replier, rkey, '' AS parent_uri, version, deleted, sort_at FROM {db}.interactions WHERE kind = 'thread';

-- The replies stored before this migration: each live reply's newest
-- version from `posts` (a deleted one has no row: it is no reply to
-- decide). A full read of `posts`: give `skyhouse migrate up` a receive
-- timeout long enough for it and stop the refresh jobs (search, feedgen)
-- while it runs; the indexers may keep writing (their replies reach the
-- table through the next refresh).
INSERT INTO {db}.thread_replies (root_uri, replier, rkey, parent_uri, version, deleted, sort_at) SELECT reply_root_uri, did, rkey, reply_parent_uri, version, 0, sort_at FROM {db}.posts FINAL WHERE deleted = 0 AND reply_root_uri != '' AND reply_parent_uri != '';
