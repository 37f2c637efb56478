-- Stats and analytics the search API serves (src/stats.rs): current state
-- (FINAL, deleted = 0); every aggregate over all accounts leaves hidden ones
-- (accounts.active = 0) out. {did} is a quoted DID, {window} seconds,
-- {limit} a number.

-- name: actor_collection_counts
-- One account's live records per collection.
SELECT collection, count() AS records FROM {db}.records FINAL PREWHERE did = {did} WHERE deleted = 0 GROUP BY collection ORDER BY collection;

-- name: actor_handle
SELECT handle FROM {db}.identities FINAL WHERE did = {did};

-- The analytics (the JSONBench questions over our tables, top hashtags and
-- languages), one statement each, answered as JSON rows. The whole-history
-- ones read the daily stats (src/aggregates.rs keeps them from what
-- arrives; every stored account counted, distinct accounts approximate
-- past 65,536); the windowed ones read `recent_posts` by TID time (hidden
-- accounts left out); the first/last-post ones read `posts`.

-- name: analytics_events_per_collection
SELECT collection, toUInt64(sum(records)) AS records FROM {db}.daily_stats FINAL GROUP BY collection HAVING records > 0 ORDER BY records DESC, collection;

-- name: analytics_creates_and_users
SELECT collection, toUInt64(sum(records)) AS records, uniqMerge(actors_state) AS users FROM {db}.daily_stats FINAL GROUP BY collection HAVING records > 0 ORDER BY records DESC, collection;

-- name: analytics_by_hour
SELECT collection, toUInt8(h.1) AS hour, toUInt64(h.2) AS records FROM (SELECT collection, sumForEach(hour_counts) AS per_hour FROM {db}.daily_stats FINAL WHERE collection IN ('app.bsky.feed.post', 'app.bsky.feed.repost', 'app.bsky.feed.like') AND length(hour_counts) = 24 GROUP BY collection) ARRAY JOIN arrayMap((c, i) -> (i, c), per_hour, range(24)) AS h WHERE records > 0 ORDER BY hour, collection;

-- name: analytics_earliest_posters
SELECT did, toUInt32(min(created_at)) AS first_post FROM {db}.posts FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1) GROUP BY did ORDER BY first_post, did LIMIT 3;

-- name: analytics_longest_spans
SELECT did, toUInt32(max(created_at)) - toUInt32(min(created_at)) AS span_secs FROM {db}.posts FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1) GROUP BY did ORDER BY span_secs DESC, did LIMIT 3;

-- name: analytics_hashtags
SELECT lowerUTF8(arrayJoin(tags)) AS tag, count() AS posts FROM {db}.recent_posts FINAL WHERE tid_time >= now() - {window} AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1) GROUP BY tag ORDER BY posts DESC, tag LIMIT {limit};

-- name: analytics_languages
SELECT arrayJoin(langs) AS lang, count() AS posts FROM {db}.recent_posts FINAL WHERE tid_time >= now() - {window} AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1) GROUP BY lang ORDER BY posts DESC, lang LIMIT {limit};
