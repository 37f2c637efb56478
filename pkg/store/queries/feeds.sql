-- The feed generator's rankings and label checks (src/feeds.rs): current
-- state (FINAL, deleted = 0); hidden accounts (`hidden_accounts`) left out
-- as authors and as likers or reposters. The windowed rankings read
-- `recent_posts` (by the post's TID time) and `recent_interactions` (likes
-- and reposts of recent posts, by the post's TID time), kept current by the
-- refresh (src/aggregates.rs): their cost follows the window, not the
-- tables. Likes and reposts count distinct accounts. {window} is seconds,
-- {limit} the most URIs a ranking holds, {label} and {did} quoted
-- literals, {dids} a list of them.

-- name: rank_whats_hot
-- Recent posts (the last {window} seconds) by likes and reposts (a repost
-- counts twice) divided by (age_hours + 2) ^ 1.8, so newer posts rise.
SELECT uri FROM (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, sort_at FROM {db}.recent_posts FINAL WHERE tid_time >= now() - {window} AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1)) AS p
ANY INNER JOIN (
    SELECT subject_uri AS uri, uniqExactIf(did, kind = 'like') AS likes, uniqExactIf(did, kind = 'repost') AS reposts
    FROM {db}.recent_interactions FINAL
    WHERE subject_time >= now() - {window} AND deleted = 0
      AND did {global}NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1)
    GROUP BY subject_uri) AS c USING uri
ORDER BY (likes + 2 * reposts) / pow(greatest(toInt64(toUInt32(now())) - toInt64(toUInt32(sort_at)), 0) / 3600 + 2, 1.8) DESC, uri DESC
LIMIT {limit};

-- name: rank_top_liked
-- Posts of the last {window} seconds by the accounts that like them.
SELECT uri FROM (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri FROM {db}.recent_posts FINAL WHERE tid_time >= now() - {window} AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1)) AS p
ANY INNER JOIN (
    SELECT subject_uri AS uri, uniqExact(did) AS likes
    FROM {db}.recent_interactions FINAL
    WHERE subject_time >= now() - {window} AND kind = 'like' AND deleted = 0
      AND did {global}NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1)
    GROUP BY subject_uri) AS c USING uri
ORDER BY likes DESC, uri DESC
LIMIT {limit};

-- name: rank_labelled
-- Posts of accounts holding {label} (not negated), newest first: every
-- post of those accounts (read when `rank_labelled_recent` comes up short).
SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri FROM {db}.posts FINAL
WHERE deleted = 0
  AND did IN (SELECT did FROM {db}.actor_labels{local} FINAL WHERE label = {label} AND neg = 0)
  AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1)
ORDER BY sort_at DESC, uri DESC
LIMIT {limit};

-- name: rank_labelled_recent
-- The same ranking over a window: the current state of the posts whose TID
-- time is at or after {from} (`recent_posts` holds every version of such a
-- post, or `posts_off_time` the versions it lacks: one written more than a
-- day before its TID time), and of the posts with an older TID time whose
-- off-time versions (`posts_off_time`, migration 0017) have a sort_at at or
-- after {from}, marked `old`: those tables may lack their newer on-time
-- versions, so src/feeds.rs checks them against `posts`. Every post with a
-- sort_at at least 10 minutes after {from} is among these, so a full
-- ranking whose last post is that recent is the ranking of every post.
-- Versions are grouped by key (argMax by version), not FINAL: one key's
-- versions come from two tables.
SELECT did, rkey, toUInt32(newest_sort_at) AS sort_at, before_window AS old FROM (
    SELECT did, rkey, argMax(sort_at, version) AS newest_sort_at, argMax(deleted, version) AS gone, max(old) AS before_window
    FROM (SELECT did, rkey, version, sort_at, deleted, toUInt8(0) AS old FROM {db}.recent_posts PREWHERE tid_time >= toDateTime({from})
          WHERE did IN (SELECT did FROM {db}.actor_labels{local} FINAL WHERE label = {label} AND neg = 0)
            AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1)
          UNION ALL
          SELECT did, rkey, version, sort_at, deleted, toUInt8(tid_time < toDateTime({from})) AS old FROM {db}.posts_off_time
          WHERE (tid_time >= toDateTime({from}) OR sort_at >= toDateTime({from}))
            AND did IN (SELECT did FROM {db}.actor_labels{local} FINAL WHERE label = {label} AND neg = 0)
            AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1))
    GROUP BY did, rkey)
WHERE gone = 0
ORDER BY newest_sort_at DESC, concat('at://', did, '/app.bsky.feed.post/', rkey) DESC
LIMIT {limit};

-- name: rank_labelled_check
-- The current sort_at of the live posts among {keys}, a list of (did, rkey)
-- tuples (on the sorting key, so it may filter before FINAL).
SELECT did, rkey, toUInt32(sort_at) AS sort_at, toUInt8(1) AS old FROM {db}.posts FINAL PREWHERE (did, rkey) IN ({keys}) WHERE deleted = 0;

-- name: hidden_among
-- Which of {dids} are hidden (a pinned feed leaves their posts out).
SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1 AND did IN ({dids});

-- name: holds_label
-- Whether {did} holds {label} (not negated) and is visible.
SELECT count() FROM {db}.actor_labels FINAL WHERE did = {did} AND label = {label} AND neg = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1);
