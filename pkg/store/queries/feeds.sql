-- The feed generator's rankings and label checks (src/feeds.rs): current
-- state (FINAL, deleted = 0); hidden accounts (accounts.active = 0) left
-- out as authors and as likers or reposters. Like and repost counts come
-- from `interactions` (migration 0004), kept current by the interaction
-- refresh. {window} is seconds, {limit} the most URIs a ranking holds,
-- {label} and {did} quoted literals, {dids} a list of them.

-- name: rank_whats_hot
-- Recent posts (the last {window} seconds) by likes and reposts (a repost
-- counts twice) divided by (age_hours + 2) ^ 1.8, so newer posts rise.
SELECT uri FROM (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, sort_at FROM {db}.posts FINAL WHERE deleted = 0 AND sort_at >= now() - {window} AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0)) AS p
ANY INNER JOIN (
    SELECT subject_uri AS uri, countIf(kind = 'like') AS likes, countIf(kind = 'repost') AS reposts
    FROM {db}.interactions FINAL
    WHERE kind IN ('like', 'repost') AND deleted = 0
      AND subject_uri IN (SELECT uri FROM (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, sort_at FROM {db}.posts FINAL WHERE deleted = 0 AND sort_at >= now() - {window} AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0)))
      AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0)
    GROUP BY subject_uri) AS c USING uri
ORDER BY (likes + 2 * reposts) / pow(greatest(toInt64(toUInt32(now())) - toInt64(toUInt32(sort_at)), 0) / 3600 + 2, 1.8) DESC, uri DESC
LIMIT {limit};

-- name: rank_top_liked
-- Posts of the last {window} seconds by like count.
SELECT subject_uri AS uri FROM {db}.interactions FINAL
WHERE kind = 'like' AND deleted = 0
  AND subject_uri IN (SELECT uri FROM (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, sort_at FROM {db}.posts FINAL WHERE deleted = 0 AND sort_at >= now() - {window} AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0)))
  AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0)
GROUP BY subject_uri ORDER BY count() DESC, uri DESC
LIMIT {limit};

-- name: rank_labelled
-- Posts of accounts holding {label} (not negated), newest first.
SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri FROM {db}.posts FINAL
WHERE deleted = 0
  AND did IN (SELECT did FROM {db}.actor_labels FINAL WHERE label = {label} AND neg = 0)
  AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0)
ORDER BY sort_at DESC, uri DESC
LIMIT {limit};

-- name: hidden_among
-- Which of {dids} are hidden (a pinned feed leaves their posts out).
SELECT did FROM {db}.accounts FINAL WHERE active = 0 AND did IN ({dids});

-- name: holds_label
-- Whether {did} holds {label} (not negated) and is visible.
SELECT count() FROM {db}.actor_labels FINAL WHERE did = {did} AND label = {label} AND neg = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0);
