-- The interaction refresh's key lookups follow the new data, not the tables
-- (issue: network scale). For each key deleted or updated in a refresh
-- window, the refresh needs the key's current state (newest version, deleted
-- or not, its subject) and every subject any version of it named. It read
-- the state from the record tables (likes, reposts, follows, posts) and the
-- subjects from `interaction_subjects`, all sorted by (did, …) with granules
-- of 8,192 rows: ~35k keys of random accounts (1M new records' deletes and
-- updates) hit nearly every granule of tables of 10M rows, so those reads
-- were the whole tables and grew with them.
--
-- `interaction_keys` holds both in one narrow table: every version of every
-- interacting record the change log carried (live rows with their subject,
-- tombstones with none), one row per (key, subject) after merges (the
-- newest version of each). Its sorting key starts with two 64-bit hashes,
-- of the DID and of (kind, record key), and it is read by those alone
-- (PRIMARY KEY: 16 bytes per mark in memory) in granules of 256 rows: a
-- lookup of k keys reads about k × 256 rows once the table has many more
-- granules than k. The DID's hash first keeps an account's rows together
-- (the DID column compresses to its runs). Two keys whose hashes both
-- collide (128 bits) would share rows: not expected below 10^18 keys.
--
-- The refresh writes each window's change rows into it before its lookups
-- (as it wrote `interaction_subjects`, which is dropped), so inserts pay
-- nothing for it: materialized views on the record tables cost the server
-- ~1.5 µs more per row inserted (ClickHouse 18.16), the refresh's copy of
-- the window less than 1 µs. The seed below copies what a database
-- already holds: the subjects the refreshes remembered (kept first: at an
-- equal version a record table's row, inserted after, wins), every stored
-- row of the record tables, and the change log (the last 7 days). On a
-- large database the copy is a full read of likes, reposts, follows and
-- posts: give `skyhouse migrate up` a receive timeout long enough for it,
-- and stop the refresh jobs (search, feedgen) while it runs; the indexers
-- may keep writing (their rows reach the table through the change log).
CREATE TABLE IF NOT EXISTS {db}.interaction_keys (
    did_hash UInt64,
    key_hash UInt64,
    kind String,
    did String,
    rkey String,
    subject_uri String,
    version UInt64,
    deleted UInt8,
    sort_at DateTime
) ENGINE = ReplacingMergeTree(version)
PRIMARY KEY (did_hash, key_hash)
ORDER BY (did_hash, key_hash, subject_uri)
SETTINGS index_granularity = 256;

-- Run again after an interruption that came after the last statement's
-- DROP, the seed reads an empty table: what it held was copied before.
CREATE TABLE IF NOT EXISTS {db}.interaction_subjects (
    did String,
    kind String,
    rkey String,
    subject_uri String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, kind, rkey, subject_uri);

INSERT INTO {db}.interaction_keys SELECT cityHash64(did) AS did_hash, cityHash64(kind, rkey) AS key_hash, kind, did, rkey, subject_uri, version, 0 AS deleted, toDateTime(0) AS sort_at FROM {db}.interaction_subjects;
INSERT INTO {db}.interaction_keys SELECT cityHash64(did) AS did_hash, cityHash64('like', rkey) AS key_hash, 'like' AS kind, did, rkey, subject_uri, version, deleted, sort_at FROM {db}.likes;
INSERT INTO {db}.interaction_keys SELECT cityHash64(did) AS did_hash, cityHash64('repost', rkey) AS key_hash, 'repost' AS kind, did, rkey, subject_uri, version, deleted, sort_at FROM {db}.reposts;
INSERT INTO {db}.interaction_keys SELECT cityHash64(did) AS did_hash, cityHash64('follow', rkey) AS key_hash, 'follow' AS kind, did, rkey, subject_did AS subject_uri, version, deleted, sort_at FROM {db}.follows;
INSERT INTO {db}.interaction_keys SELECT cityHash64(did) AS did_hash, cityHash64(k.1, rkey) AS key_hash, k.1 AS kind, did, rkey, k.2 AS subject_uri, version, deleted, sort_at FROM {db}.posts ARRAY JOIN [('reply', reply_parent_uri), ('quote', quote_uri), ('thread', reply_root_uri)] AS k WHERE deleted = 1 OR action = 2 OR k.2 != '';
INSERT INTO {db}.interaction_keys SELECT cityHash64(did) AS did_hash, cityHash64(kind, rkey) AS key_hash, kind, did, rkey, subject_uri, version, deleted, sort_at FROM {db}.interaction_changes;

DROP TABLE IF EXISTS {db}.interaction_subjects;
