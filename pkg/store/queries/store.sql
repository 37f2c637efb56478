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

-- Interaction counts (migration 0004 explains the design). The refresh runs,
-- for each kind, interaction_subjects first and then interactions, with
-- {source} / {kind} / {subject}: likes 'like' subject_uri, reposts 'repost'
-- subject_uri, posts 'reply' reply_parent_uri, posts 'quote' quote_uri.
-- {after} is a Unix time: rows that arrived (inserted_at) at or after it.

-- name: refresh_interaction_subjects
-- Remember the subject of every version that arrived, live or superseded:
-- whatever a later refresh writes as live is already known here.
INSERT INTO {db}.interaction_subjects (did, kind, rkey, subject_uri, version) SELECT did, {kind} AS kind, rkey, {subject} AS subject_uri, version FROM {db}.{source} WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before}) AND deleted = 0 AND {subject} != '';

-- name: refresh_interactions
-- For each touched key, its current state (newest version) against every
-- subject it ever named: live for the current live subject, a tombstone for
-- the others (or for all of them when the current version is a tombstone).
INSERT INTO {db}.interactions (subject_uri, kind, did, rkey, version, deleted, sort_at) SELECT subject_uri, {kind} AS kind, did, rkey, newest, if(gone = 0 AND current_subject = subject_uri, 0, 1) AS tombstone, newest_sort_at FROM (SELECT did, rkey, argMax({subject}, version) AS current_subject, max(version) AS newest, argMax(deleted, version) AS gone, argMax(sort_at, version) AS newest_sort_at FROM {db}.{source} WHERE (did, rkey) IN (SELECT did, rkey FROM {db}.{source} WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before})) GROUP BY did, rkey) AS cur ALL INNER JOIN (SELECT did, rkey, subject_uri FROM {db}.interaction_subjects WHERE kind = {kind} AND (did, rkey) IN (SELECT did, rkey FROM {db}.{source} WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before}))) AS known USING (did, rkey);

-- name: interaction_backlog
-- Rows of one source to read since {after}, and where its arrivals fall
-- (the refresh reads them in windows of about equal size).
SELECT count() AS rows, arrayMap(x -> if(isNaN(x), 0, toUInt32(x)), quantiles({levels})(toUInt32(inserted_at))) AS bounds FROM {db}.{source} WHERE inserted_at >= toDateTime({after});

-- name: interactions_watermark
-- Server time of the last refresh (0 before the first).
SELECT toUInt32(argMax(upto, version)) AS last_upto, toUInt32(now()) AS server_now FROM {db}.aggregate_refreshes WHERE name = 'interactions';

-- name: save_interactions_watermark
INSERT INTO {db}.aggregate_refreshes (name, upto, version) VALUES ('interactions', toDateTime({upto}), {version});

-- name: post_counts
-- Live interactions per post and kind; hidden accounts (active = 0) left out.
SELECT subject_uri, kind, count() AS live FROM {db}.interactions FINAL WHERE subject_uri IN ({uris}) AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) GROUP BY subject_uri, kind;
