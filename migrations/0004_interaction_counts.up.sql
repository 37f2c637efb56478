-- Like / repost / reply / quote counts per post (SPEC §3): replay-safe and
-- delete-aware, whatever order creates and deletes arrive in.
--
-- The difficulty: a delete carries only (did, collection, rkey), so its
-- tombstone row in likes / reposts / posts has no subject; counting by subject
-- straight from those tables cannot see which post a delete takes a like from.
-- So counts come from a subject-keyed table that the store's refresh step
-- (pkg/store/src/queries.rs `refresh_interactions`, SQL in queries/store.sql)
-- derives from the record tables:
--
-- 1. inserted_at (below) is the server's clock when a row arrived, on every
--    row of posts, likes and reposts; each refresh reads the keys that got a
--    row since its last run (minus a margin), so a backfill or a replay of old
--    events is picked up whatever its own times say.
-- 2. interaction_subjects remembers every subject any version of a key ever
--    pointed at, keyed by (did, kind, rkey): that is how a tombstone finds the
--    subject it must take the count from, even after a merge dropped the row
--    that named it.
-- 3. For every touched key the refresh takes its current state (the newest
--    version in the record table) and writes one interactions row per known
--    subject: live (deleted = 0) for the subject of a live current version,
--    a tombstone (deleted = 1) for every other, all with the current version.
--    ReplacingMergeTree(version) keeps the newest row per (subject, key), so
--    replays rewrite identical rows (nothing changes), a delete outranks the
--    create it follows, and a delete that arrived first keeps the late create
--    from ever counting (its current state is already the tombstone).
--
-- Counts: interactions FINAL, deleted = 0, grouped by subject_uri and kind.
-- No partition keys, sorting keys from the key columns only (as in 0001).

-- The server's time at insert; MATERIALIZED: never sent by the writer, not in
-- SELECT *, stored (not recomputed) by merges.
ALTER TABLE {db}.posts ADD COLUMN inserted_at DateTime MATERIALIZED now();
ALTER TABLE {db}.likes ADD COLUMN inserted_at DateTime MATERIALIZED now();
ALTER TABLE {db}.reposts ADD COLUMN inserted_at DateTime MATERIALIZED now();

-- One row per (post, kind, interacting record): kind is like (likes),
-- repost (reposts), reply (posts.reply_parent_uri) or quote (posts.quote_uri).
-- version is the interacting record's version, so the newest state wins.
CREATE TABLE IF NOT EXISTS {db}.interactions (
    subject_uri String,
    kind String,
    did String,
    rkey String,
    version UInt64,
    deleted UInt8,
    sort_at DateTime
) ENGINE = ReplacingMergeTree(version)
ORDER BY (subject_uri, kind, did, rkey);

-- Every subject a record key ever pointed at (append-only memory for
-- tombstones; duplicates collapse).
CREATE TABLE IF NOT EXISTS {db}.interaction_subjects (
    did String,
    kind String,
    rkey String,
    subject_uri String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, kind, rkey, subject_uri);

-- Where each refresh step got to (server time); the next run starts a
-- margin before it.
CREATE TABLE IF NOT EXISTS {db}.aggregate_refreshes (
    name String,
    upto DateTime,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY name;
