-- Stats and analytics the search API serves (src/stats.rs): current state
-- (FINAL, deleted = 0); every aggregate over all accounts leaves hidden ones
-- (accounts.active = 0) out. {did} is a quoted DID, {window} seconds,
-- {limit} a number.

-- name: actor_collection_counts
-- One account's live records per collection.
SELECT collection, count() AS records FROM {db}.records FINAL WHERE did = {did} AND deleted = 0 GROUP BY collection ORDER BY collection;

-- name: actor_handle
SELECT handle FROM {db}.identities FINAL WHERE did = {did};

-- The analytics (the JSONBench questions over our tables, top hashtags and
-- languages), one statement each, answered as JSON rows.

-- name: analytics_events_per_collection
SELECT collection, count() AS records FROM {db}.records FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) GROUP BY collection ORDER BY records DESC, collection;

-- name: analytics_creates_and_users
SELECT collection, count() AS records, uniqExact(did) AS users FROM {db}.records FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) GROUP BY collection ORDER BY records DESC, collection;

-- name: analytics_by_hour
SELECT collection, toHour(created_at) AS hour, count() AS records FROM {db}.records FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) AND collection IN ('app.bsky.feed.post', 'app.bsky.feed.repost', 'app.bsky.feed.like') GROUP BY collection, hour ORDER BY hour, collection;

-- name: analytics_earliest_posters
SELECT did, toUInt32(min(created_at)) AS first_post FROM {db}.posts FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) GROUP BY did ORDER BY first_post, did LIMIT 3;

-- name: analytics_longest_spans
SELECT did, toUInt32(max(created_at)) - toUInt32(min(created_at)) AS span_secs FROM {db}.posts FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) GROUP BY did ORDER BY span_secs DESC, did LIMIT 3;

-- name: analytics_hashtags
SELECT lowerUTF8(arrayJoin(tags)) AS tag, count() AS posts FROM {db}.posts FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) AND sort_at >= now() - {window} GROUP BY tag ORDER BY posts DESC, tag LIMIT {limit};

-- name: analytics_languages
SELECT arrayJoin(langs) AS lang, count() AS posts FROM {db}.posts FINAL WHERE deleted = 0 AND did NOT IN (SELECT did FROM {db}.accounts FINAL WHERE active = 0) AND sort_at >= now() - {window} GROUP BY lang ORDER BY posts DESC, lang LIMIT {limit};
