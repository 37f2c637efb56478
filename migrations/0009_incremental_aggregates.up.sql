-- Aggregates whose maintenance costs what arrived, not the table (issue:
-- network scale). Logs ordered by arrival time feed the refresh; companion
-- tables ordered by the record key's TID time serve the windowed reads.
--
-- TID time: a record key that is a TID (13 base32-sortable characters)
-- holds its creation time in microseconds; a delete carries the same key,
-- so a row's time bucket and its tombstone's are always the same. Keys that
-- are not TIDs (`self`, custom keys) get time 0 ("undated").
--
-- Each log is written by a materialized view on the table it follows, with
-- the server's clock as `arrived`; its partitions are days of arrival and
-- the refresh drops those older than a week. The views see new inserts
-- only: rows stored before this migration are not in the logs (the README
-- says how to seed them).

-- What the transform knew of each write (1 create, 2 update, 3 delete; 0
-- before this migration), on every typed table: the interaction refresh
-- looks up earlier state only for updates and deletes.
ALTER TABLE {db}.posts ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.likes ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.reposts ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.follows ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.blocks ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.profiles ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.lists ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.list_items ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.list_blocks ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.starter_packs ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.feed_generators ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.threadgates ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.postgates ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.verifications ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.labeler_services ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.actor_statuses ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.chat_declarations ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.notification_declarations ADD COLUMN action UInt8 DEFAULT 0;
ALTER TABLE {db}.content_visibility_declarations ADD COLUMN action UInt8 DEFAULT 0;

-- Every row of likes, reposts, follows and posts, as the interaction it is
-- (a post row: its reply parent, quote and thread root; a post tombstone
-- names none, so it appears once per kind with an empty subject).
CREATE TABLE IF NOT EXISTS {db}.interaction_changes (
    arrived DateTime,
    kind String,
    subject_uri String,
    did String,
    rkey String,
    version UInt64,
    deleted UInt8,
    action UInt8,
    sort_at DateTime
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(arrived)
ORDER BY (arrived, kind, did, rkey);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.interaction_changes_likes TO {db}.interaction_changes AS SELECT now() AS arrived, 'like' AS kind, subject_uri, did, rkey, version, deleted, action, sort_at FROM {db}.likes;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.interaction_changes_reposts TO {db}.interaction_changes AS SELECT now() AS arrived, 'repost' AS kind, subject_uri, did, rkey, version, deleted, action, sort_at FROM {db}.reposts;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.interaction_changes_follows TO {db}.interaction_changes AS SELECT now() AS arrived, 'follow' AS kind, subject_did AS subject_uri, did, rkey, version, deleted, action, sort_at FROM {db}.follows;
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.interaction_changes_posts TO {db}.interaction_changes AS SELECT now() AS arrived, k.1 AS kind, k.2 AS subject_uri, did, rkey, version, deleted, action, sort_at FROM {db}.posts ARRAY JOIN [('reply', reply_parent_uri), ('quote', quote_uri), ('thread', reply_root_uri)] AS k WHERE deleted = 1 OR k.2 != '';

-- Version floors: every delete and update of an interaction key, kept a
-- day: a create arriving later with a lower version is tombstoned (a
-- delete that arrived before its create, a replayed old create).
CREATE TABLE IF NOT EXISTS {db}.pending_deletes (
    arrived DateTime,
    kind String,
    did String,
    rkey String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(arrived)
ORDER BY (kind, did, rkey);

-- Likes and reposts of recent posts, by the post's TID time (the feeds'
-- rankings read a window of it). Kept 3 days.
CREATE TABLE IF NOT EXISTS {db}.recent_interactions (
    subject_time DateTime,
    subject_uri String,
    kind String,
    did String,
    rkey String,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(subject_time)
ORDER BY (toStartOfHour(subject_time), subject_uri, kind, did, rkey);

-- Posts by TID time: feeds, 24-hour and 30-day analytics and post search
-- over a recent window read this instead of `posts`. Kept 30 days.
CREATE TABLE IF NOT EXISTS {db}.recent_posts (
    tid_time DateTime,
    did String,
    rkey String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    sort_at DateTime,
    text String,
    langs Array(String),
    tags Array(String),
    reply_parent_uri String,
    quote_uri String
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMMDD(tid_time)
ORDER BY (toStartOfHour(tid_time), did, rkey);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.recent_posts_feed TO {db}.recent_posts AS SELECT if(match(rkey, '^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$'), toDateTime(least(intDiv(toUInt64(arraySum(arrayMap(i -> (position('234567abcdefghijklmnopqrstuvwxyz', substring(rkey, i + 1, 1)) - 1) * pow(32, 10 - i), range(11)))), 1000000), 4294967295)), toDateTime(0)) AS tid_time, did, rkey, version, deleted, created_at, sort_at, text, langs, tags, reply_parent_uri, quote_uri FROM {db}.posts WHERE tid_time >= now() - 2592000 AND tid_time <= now() + 86400;

-- Every record key by collection and the day (and hour of the day) of
-- its TID time (day 1970-01-01 when the key is not a TID): daily stats
-- recompute a touched day from its range.
CREATE TABLE IF NOT EXISTS {db}.record_days (
    collection String,
    day Date,
    did String,
    rkey String,
    hour UInt8,
    version UInt64,
    deleted UInt8
) ENGINE = ReplacingMergeTree(version)
PARTITION BY toYYYYMM(day)
ORDER BY (collection, day, did, rkey);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.record_days_feed TO {db}.record_days AS SELECT collection, toDate(if(match(rkey, '^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$'), toDateTime(least(intDiv(toUInt64(arraySum(arrayMap(i -> (position('234567abcdefghijklmnopqrstuvwxyz', substring(rkey, i + 1, 1)) - 1) * pow(32, 10 - i), range(11)))), 1000000), 4294967295)), toDateTime(0))) AS day, did, rkey, toHour(if(match(rkey, '^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$'), toDateTime(least(intDiv(toUInt64(arraySum(arrayMap(i -> (position('234567abcdefghijklmnopqrstuvwxyz', substring(rkey, i + 1, 1)) - 1) * pow(32, 10 - i), range(11)))), 1000000), 4294967295)), toDateTime(0))) AS hour, version, deleted FROM {db}.records;

-- Which (collection, day) pairs got rows, by arrival.
CREATE TABLE IF NOT EXISTS {db}.day_changes (
    arrived DateTime,
    collection String,
    day Date
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(arrived)
ORDER BY (arrived, collection, day);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.day_changes_feed TO {db}.day_changes AS SELECT now() AS arrived, collection, toDate(if(match(rkey, '^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$'), toDateTime(least(intDiv(toUInt64(arraySum(arrayMap(i -> (position('234567abcdefghijklmnopqrstuvwxyz', substring(rkey, i + 1, 1)) - 1) * pow(32, 10 - i), range(11)))), 1000000), 4294967295)), toDateTime(0))) AS day FROM {db}.records;

-- Account events by arrival; the refresh keeps `hidden_accounts`, a small
-- table of the accounts hidden now (and those hidden before, with
-- hidden = 0), which every read filters with instead of `accounts FINAL`.
CREATE TABLE IF NOT EXISTS {db}.account_changes (
    arrived DateTime,
    did String
) ENGINE = MergeTree()
PARTITION BY toYYYYMMDD(arrived)
ORDER BY (arrived, did);

CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.account_changes_feed TO {db}.account_changes AS SELECT now() AS arrived, did FROM {db}.accounts;

CREATE TABLE IF NOT EXISTS {db}.hidden_accounts (
    did String,
    hidden UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY did;

-- Days whose stats must be recomputed (touched by old deletes), worked off
-- a bounded number per refresh.
CREATE TABLE IF NOT EXISTS {db}.stale_days (
    collection String,
    day Date,
    pending UInt8,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (collection, day);

-- Daily stats per hour of the day (the JSONBench "by hour" question sums
-- them) and the day's distinct accounts as a mergeable state (all-time
-- distinct accounts per collection merge the days').
ALTER TABLE {db}.daily_stats ADD COLUMN hour_counts Array(UInt64);
ALTER TABLE {db}.daily_stats ADD COLUMN actors_state AggregateFunction(uniq, String);

-- Seed what the views did not see: keys stored before this migration, the
-- accounts hidden now, the last 30 days of posts; every day's stats are
-- recomputed by the next refreshes (from stale_days, a bounded number per
-- run). On a large database these copies take long: the README says how
-- to run them by hand in chunks instead.
INSERT INTO {db}.record_days SELECT collection, toDate(t) AS day, did, rkey, toHour(t) AS hour, version, deleted FROM (SELECT collection, did, rkey, version, deleted, if(match(rkey, '^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$'), toDateTime(least(intDiv(toUInt64(arraySum(arrayMap(i -> (position('234567abcdefghijklmnopqrstuvwxyz', substring(rkey, i + 1, 1)) - 1) * pow(32, 10 - i), range(11)))), 1000000), 4294967295)), toDateTime(0)) AS t FROM {db}.records);
INSERT INTO {db}.stale_days SELECT collection, day, 1 AS pending, 1 AS version FROM {db}.record_days GROUP BY collection, day;
INSERT INTO {db}.hidden_accounts SELECT did, 1 AS hidden, v AS version FROM (SELECT did, max(version) AS v, argMax(active, version) AS a FROM {db}.accounts GROUP BY did) WHERE a = 0;
INSERT INTO {db}.recent_posts SELECT t AS tid_time, did, rkey, version, deleted, created_at, sort_at, text, langs, tags, reply_parent_uri, quote_uri FROM (SELECT *, if(match(rkey, '^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$'), toDateTime(least(intDiv(toUInt64(arraySum(arrayMap(i -> (position('234567abcdefghijklmnopqrstuvwxyz', substring(rkey, i + 1, 1)) - 1) * pow(32, 10 - i), range(11)))), 1000000), 4294967295)), toDateTime(0)) AS t FROM {db}.posts) WHERE t >= now() - 2592000 AND t <= now() + 86400;
