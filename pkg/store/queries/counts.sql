-- Interaction counts (src/counts.rs; migrations 0004 and 0008 explain the
-- design). The refresh runs, for each kind, interaction_subjects first and
-- then interactions, with {source} / {kind} / {subject}: likes 'like'
-- subject_uri, reposts 'repost' subject_uri, posts 'reply' reply_parent_uri,
-- posts 'quote' quote_uri, posts 'thread' reply_root_uri, follows 'follow'
-- subject_did.
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
-- Per post: likes and reposts count distinct accounts (an account's
-- duplicate records count once); replies count live reply posts that keep
-- the root's threadgate (`gated` = 0) and that the root's author did not
-- hide; replies_all every live reply; quotes every live quote post. Hidden
-- accounts' interactions (active = 0) are left out.
SELECT subject_uri, uniqExactIf(did, kind = 'like') AS likes, uniqExactIf(did, kind = 'repost') AS reposts, countIf(kind = 'reply' AND gated = 0 AND hidden = 0) AS replies, countIf(kind = 'reply') AS replies_all, countIf(kind = 'quote') AS quotes FROM {db}.interactions FINAL WHERE subject_uri IN ({uris}) AND kind IN ('like', 'repost', 'reply', 'quote') AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) GROUP BY subject_uri;

-- name: actor_followers
-- Per account: the distinct accounts following it (hidden ones left out).
SELECT subject_uri AS account, uniqExact(did) AS followers FROM {db}.interactions FINAL WHERE subject_uri IN ({dids}) AND kind = 'follow' AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) GROUP BY subject_uri;

-- name: actor_follows
-- Per account: the distinct accounts it follows, from its own records.
SELECT did, uniqExact(subject_did) AS follows FROM {db}.follows FINAL WHERE did IN ({dids}) AND deleted = 0 GROUP BY did;

-- name: actor_post_counts
-- Per account: its live posts.
SELECT did, count() AS posts FROM {db}.posts FINAL WHERE did IN ({dids}) AND deleted = 0 GROUP BY did;

-- name: actor_received
-- Per account: likes and reposts its posts received, each post's counted
-- per distinct account as in post_counts. The subject URIs of an account's
-- posts share the prefix 'at://<did>/app.bsky.feed.post/', a range of the
-- interactions sorting key.
SELECT author, sum(likes) AS likes, sum(reposts) AS reposts FROM (SELECT splitByChar('/', subject_uri)[3] AS author, subject_uri, uniqExactIf(did, kind = 'like') AS likes, uniqExactIf(did, kind = 'repost') AS reposts FROM {db}.interactions FINAL WHERE ({prefixes}) AND kind IN ('like', 'repost') AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) GROUP BY subject_uri) GROUP BY author;

-- name: gate_candidates
-- The refresh's gate pass: replies whose flags may need setting. Those that
-- arrived in [{after}, {before}) under a root with a threadgate, plus every
-- reply of a thread whose threadgate arrived (changed) in the window; each
-- with its current state and the root's current gate (defaults when none).
-- A gate's key is its post's (same DID and rkey); a deleted gate's row
-- names no post, so the post URI is built from the key.
SELECT did, rkey, parent, root, newest AS version, s AS sort_at, toUInt32(c) AS created_at, g_allow_set AS allow_set, g_allow AS allow, g_hidden AS hidden_replies, toUInt32(g_created) AS gate_created_at FROM (SELECT did, rkey, argMax(reply_parent_uri, version) AS parent, argMax(reply_root_uri, version) AS root, max(version) AS newest, argMax(deleted, version) AS gone, argMax(sort_at, version) AS s, argMax(created_at, version) AS c FROM {db}.posts WHERE (did, rkey) IN (SELECT did, rkey FROM {db}.posts WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before}) AND reply_root_uri != '' UNION ALL SELECT did, rkey FROM {db}.interactions WHERE kind = 'thread' AND subject_uri IN (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) FROM {db}.threadgates WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before}))) GROUP BY did, rkey HAVING gone = 0 AND root != '') AS r ANY LEFT JOIN (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS root, argMax(allow_set, version) AS g_allow_set, argMax(allow, version) AS g_allow, argMax(hidden_replies, version) AS g_hidden, argMax(created_at, version) AS g_created, argMax(deleted, version) AS g_gone FROM {db}.threadgates WHERE (did, rkey) IN (SELECT splitByChar('/', reply_root_uri)[3], splitByChar('/', reply_root_uri)[5] FROM {db}.posts WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before}) AND reply_root_uri != '' UNION ALL SELECT did, rkey FROM {db}.threadgates WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before})) GROUP BY did, rkey HAVING g_gone = 0) AS g USING root WHERE g_allow_set = 1 OR notEmpty(g_hidden) OR root IN (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) FROM {db}.threadgates WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before}));

-- name: root_mentions
-- The DIDs the root posts mention (a threadgate's mention rule).
SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, mentions FROM {db}.posts FINAL WHERE (did, rkey) IN ({keys}) AND deleted = 0;

-- name: live_follows_between
-- Live follows from any of {froms} to any of {tos}: (follower, followed, rkey).
SELECT did, subject_did, rkey FROM {db}.follows FINAL WHERE did IN ({froms}) AND subject_did IN ({tos}) AND deleted = 0;

-- name: list_members
-- Live members among {dids} of the lists {lists} (owned by {owners}).
SELECT list_uri, subject_did FROM {db}.list_items FINAL WHERE did IN ({owners}) AND list_uri IN ({lists}) AND subject_did IN ({dids}) AND deleted = 0;
