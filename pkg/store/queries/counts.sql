-- Interaction counts (src/counts.rs; migrations 0004, 0008 and 0009 explain
-- the design). Each refresh window [{after}, {before}) is a range of
-- `interaction_changes.arrived` (server time), read by the log's sorting
-- key: its cost follows what arrived, not the size of the tables.
--
-- Per window: live rows that are creates go straight to `interactions`
-- (interaction_live), replies aside (the gate pass writes them with their
-- flags, and their rows by root into `thread_replies`, gate_candidates);
-- then every change row goes to `interaction_keys` (interaction_keys_add); deletes and updates (few) are settled
-- by looking up the key's current state and every subject it ever named in
-- `interaction_keys` (refresh_interactions, every kind in one statement:
-- like, repost, reply, quote, thread, follow; migration 0014: the lookup
-- reads about 256 rows per key, whatever the size of the table); a delete whose
-- subject is not known yet is remembered in `pending_deletes`, and a create
-- arriving later with a lower version is tombstoned
-- (interaction_pending_matches).
--
-- Reads of current state by key (`FINAL PREWHERE`): the PREWHERE holds only
-- sorting-key columns, which every version of a row shares, so it filters
-- before FINAL merges and only the keys' rows are read and merged (with the
-- condition in WHERE, FINAL reads and merges every column of each granule
-- it touches: post_counts for 25 new posts 0.31 s -> 0.07 s at 10M records).
--
-- A key set built from a subquery that holds another IN subquery is GLOBAL
-- IN even on one server (gate_candidates): the set is built once before
-- the read. With a plain IN, 18.16 took 2.2 s instead of 0.86 s for such a
-- select after 1M new records at 10M (the same rows); {global} already
-- renders GLOBAL on a cluster.

-- name: interaction_live
-- Creates of likes, reposts, quotes and follows that arrived. Replies are
-- not written here: the gate pass writes each reply of the window once,
-- with its flags (`gated`, `hidden`) decided, so no reply row is ever
-- written with the flags at 0 over a verdict (a read of the window again,
-- the margin or a replay, rewrites a reply with its verdict, not without
-- it); and each reply's `thread` row, by root with its parent, into
-- `thread_replies` (migration 0019).
INSERT INTO {db}.interactions (subject_uri, kind, did, rkey, version, deleted, sort_at) SELECT subject_uri, kind, did, rkey, version, 0 AS deleted, sort_at FROM {db}.interaction_changes WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before}) AND deleted = 0 AND subject_uri != '' AND action != 2 AND kind NOT IN ('reply', 'thread');

-- name: interaction_keys_add
-- Every change row that arrived (live rows with their subject, tombstones
-- with none) into the refresh's lookup table, before the lookups: a delete
-- in the same window as its create finds it.
INSERT INTO {db}.interaction_keys (did_hash, key_hash, kind, did, rkey, subject_uri, version, deleted, sort_at) SELECT cityHash64(did), cityHash64(kind, rkey), kind, did, rkey, subject_uri, version, deleted, sort_at FROM {db}.interaction_changes WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before});

-- name: refresh_interactions
-- For each key deleted or updated in the window (every kind at once: the
-- key's hash includes its kind), its current state (newest version) against
-- every subject it ever named: live for the current live subject, a
-- tombstone for the others (or for all when the current version is a
-- tombstone). At an equal version the row with a time wins (a subject
-- seeded from the table before migration 0014 has none).
INSERT INTO {db}.interactions (subject_uri, kind, did, rkey, version, deleted, sort_at) SELECT subject_uri, kind, did, rkey, newest, if(gone = 0 AND current_subject = subject_uri, 0, 1) AS tombstone, newest_sort_at FROM (SELECT kind, did, rkey, argMax(subject_uri, (version, sort_at)) AS current_subject, max(version) AS newest, argMax(deleted, (version, sort_at)) AS gone, argMax(sort_at, (version, sort_at)) AS newest_sort_at, groupUniqArrayIf(subject_uri, subject_uri != '') AS subjects FROM {db}.interaction_keys WHERE (did_hash, key_hash) {global}IN (SELECT cityHash64(did), cityHash64(kind, rkey) FROM {db}.interaction_changes WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before}) AND (deleted = 1 OR action = 2)) GROUP BY kind, did, rkey) ARRAY JOIN subjects AS subject_uri;

-- name: pending_deletes_add
-- Version floors of keys: every delete and update that arrived. A create of
-- the key with a lower version that arrives later (a replay, a re-created
-- key's older create arriving after its newer versions) is stale
-- (interaction_pending_matches). Kept a day (src/aggregates.rs).
INSERT INTO {db}.pending_deletes (arrived, kind, did, rkey, version) SELECT arrived, kind, did, rkey, version FROM {db}.interaction_changes WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before}) AND (action = 2 OR deleted = 1);

-- name: interaction_pending_matches
-- Creates that arrived after a newer delete or update of their key:
-- tombstoned (their subject) just below the newer version, so the newer
-- version's own row wins: an update that kept the subject stays live (at
-- the same version the tombstone lost to the later insert), a delete's
-- tombstone or another subject's row is unaffected.
-- The floors read are those of the window's keys (a hash of the key as
-- PREWHERE; the join matches the key itself), not the day's whole table:
-- at 100M records, after 1M more, 3.2 s and 1.1 GiB -> 0.46 s and 0.3 GiB.
-- A set of the hash, not of the (kind, did, rkey) strings: 1.5 s -> 0.3 s.
INSERT INTO {db}.interactions (subject_uri, kind, did, rkey, version, deleted, sort_at) SELECT subject_uri, kind, did, rkey, p_version - 1, 1 AS deleted, sort_at FROM (SELECT subject_uri, kind, did, rkey, version, sort_at FROM {db}.interaction_changes WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before}) AND deleted = 0 AND subject_uri != '' AND action != 2) AS c ANY INNER JOIN (SELECT kind, did, rkey, max(version) AS p_version FROM {db}.pending_deletes PREWHERE cityHash64(kind, did, rkey) {global}IN (SELECT cityHash64(kind, did, rkey) FROM {db}.interaction_changes WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before}) AND deleted = 0 AND subject_uri != '' AND action != 2) GROUP BY kind, did, rkey) AS p USING (kind, did, rkey) WHERE p_version > version;

-- name: interaction_backlog
-- Change rows to read since {after}, and where their arrivals fall (the
-- refresh reads them in windows of about equal size).
SELECT count() AS rows, arrayMap(x -> if(isNaN(x), 0, toUInt32(x)), quantiles({levels})(toUInt32(arrived))) AS bounds FROM {db}.interaction_changes WHERE arrived >= toDateTime({after});

-- name: post_counts
-- Per post: likes and reposts count distinct accounts (an account's
-- duplicate records count once); replies count live reply posts that keep
-- the root's threadgate (`gated` = 0), as the AppView's replyCount does
-- (replies the root's author hid still count there); replies_visible also
-- leaves the hidden ones out; replies_all every live reply; quotes every
-- live quote post. Hidden accounts' interactions are left out.
SELECT subject_uri, uniqExactIf(did, kind = 'like') AS likes, uniqExactIf(did, kind = 'repost') AS reposts, countIf(kind = 'reply' AND gated = 0) AS replies, countIf(kind = 'reply' AND gated = 0 AND hidden = 0) AS replies_visible, countIf(kind = 'reply') AS replies_all, countIf(kind = 'quote') AS quotes FROM {db}.interactions FINAL PREWHERE subject_uri IN ({uris}) AND kind IN ('like', 'repost', 'reply', 'quote') WHERE deleted = 0 AND did {global}NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1) GROUP BY subject_uri;

-- name: actor_followers
-- Per account: the distinct accounts following it (hidden ones left out).
SELECT subject_uri AS account, uniqExact(did) AS followers FROM {db}.interactions FINAL PREWHERE subject_uri IN ({dids}) AND kind = 'follow' WHERE deleted = 0 AND did {global}NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1) GROUP BY subject_uri;

-- name: actor_follows
-- Per account: the distinct accounts it follows, from its own records.
SELECT did, uniqExact(subject_did) AS follows FROM {db}.follows FINAL PREWHERE did IN ({dids}) WHERE deleted = 0 GROUP BY did;

-- name: actor_post_counts
-- Per account: its live posts.
SELECT did, count() AS posts FROM {db}.posts FINAL PREWHERE did IN ({dids}) WHERE deleted = 0 GROUP BY did;

-- name: actor_received
-- Per account: likes and reposts its posts received, each post's counted
-- per distinct account as in post_counts. The subject URIs of an account's
-- posts share the prefix 'at://<did>/app.bsky.feed.post/', a range of the
-- interactions sorting key.
SELECT author, sum(likes) AS likes, sum(reposts) AS reposts FROM (SELECT splitByChar('/', subject_uri)[3] AS author, subject_uri, uniqExactIf(did, kind = 'like') AS likes, uniqExactIf(did, kind = 'repost') AS reposts FROM {db}.interactions FINAL PREWHERE ({prefixes}) AND kind IN ('like', 'repost') WHERE deleted = 0 AND did {global}NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1) GROUP BY subject_uri) GROUP BY author;

-- name: gate_candidates
-- The refresh's gate pass: the replies it writes with their flags. Every
-- reply that arrived in the window (from the log: `interaction_live` leaves
-- replies and their `thread` rows to the gate pass), plus every reply of a
-- thread whose threadgate arrived (changed) in the window (its current
-- version in `thread_replies`, by root: migration 0019); each with the
-- root's current gate (defaults when none: the reply keeps its flags at 0). A gate's key is
-- its post's (same DID and rkey); a deleted gate's row names no post, so
-- the post URI is built from the key. The reply's time is its sort_at. A
-- reply's parent and root are its newest version's in the window (an edit
-- that made it top-level logs them empty: no candidate then). The key sets
-- of `posts` and `threadgates` are GLOBAL IN (see above: 2.3 s -> 0.8 s).
SELECT did, rkey, parent, root, version, sort_at, sort_at AS created_at, g_allow_set AS allow_set, g_allow AS allow, g_hidden AS hidden_replies, toUInt32(g_created) AS gate_created_at FROM (SELECT did, rkey, parent, root, newest AS version, toUInt32(newest_sort_at) AS sort_at, 1 AS arrived_now FROM (SELECT did, rkey, argMaxIf(subject_uri, version, kind = 'reply') AS parent, argMaxIf(subject_uri, version, kind = 'thread') AS root, max(version) AS newest, max(sort_at) AS newest_sort_at FROM {db}.interaction_changes WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before}) AND kind IN ('reply', 'thread') AND deleted = 0 GROUP BY did, rkey HAVING parent != '') UNION ALL SELECT replier AS did, rkey, parent_uri AS parent, root_uri AS root, version, toUInt32(sort_at) AS sort_at, 0 AS arrived_now FROM {db}.thread_replies FINAL PREWHERE root_uri {global}IN (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) FROM {db}.threadgates WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before})) WHERE deleted = 0 AND parent_uri != '') AS r ANY LEFT JOIN (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS root, argMax(allow_set, version) AS g_allow_set, argMax(allow, version) AS g_allow, argMax(hidden_replies, version) AS g_hidden, argMax(created_at, version) AS g_created, argMax(deleted, version) AS g_gone FROM {db}.threadgates WHERE (did, rkey) GLOBAL IN (SELECT splitByChar('/', subject_uri)[3], splitByChar('/', subject_uri)[5] FROM {db}.interaction_changes WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before}) AND kind = 'thread' AND deleted = 0 UNION ALL SELECT did, rkey FROM {db}.threadgates WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before})) GROUP BY did, rkey HAVING g_gone = 0) AS g USING root WHERE arrived_now = 1 OR g_allow_set = 1 OR notEmpty(g_hidden) OR root IN (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) FROM {db}.threadgates WHERE inserted_at >= toDateTime({after}) AND inserted_at < toDateTime({before}));

-- name: root_mentions
-- The DIDs the root posts mention (a threadgate's mention rule).
SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, mentions FROM {db}.posts FINAL PREWHERE (did, rkey) IN ({keys}) WHERE deleted = 0;

-- name: live_follows_between
-- Live follows from any of {froms} to any of {tos}: (follower, followed, rkey).
SELECT did, subject_did, rkey FROM {db}.follows FINAL PREWHERE did IN ({froms}) WHERE subject_did IN ({tos}) AND deleted = 0;

-- name: list_members
-- Live members among {dids} of the lists {lists} (owned by {owners}).
SELECT list_uri, subject_did FROM {db}.list_items FINAL PREWHERE did IN ({owners}) WHERE list_uri IN ({lists}) AND subject_did IN ({dids}) AND deleted = 0;
