-- Views for exploring the data in SQL (README "Views"): the current state
-- of each record table, recent posts, the trending score the feeds rank by
-- and follow counts, without writing FINAL, `deleted = 0` and the
-- hidden-accounts filter into every query. The query page's examples use
-- them.
--
-- What each costs (a view is its SELECT, run inside the caller's query):
-- - `<table>_live`: `<table> FINAL` less tombstones and hidden accounts,
--   over what the caller's WHERE selects. Current ClickHouse pushes the
--   caller's conditions into the view, so `WHERE did = …` reads that
--   account's range of the sorting key (did, rkey); a query with no
--   condition on `did` reads the whole table, as `<table> FINAL` would.
--   ClickHouse 18.16 pushes nothing into a view: there every read of a
--   `_live` view merges the whole table.
-- - `recent_posts_72h`, `recent_posts_with_score`: their own window of the
--   TID-ordered companion tables (`recent_posts`, `recent_interactions`,
--   partitioned by day and sorted by hour), on every server version.
-- - `follower_counts`, `following_counts`: one row per account; with
--   `WHERE did = …` (or `IN (…)`) the subjects' range of `interactions`
--   (sorted by subject) or the accounts' range of `follows`, on current
--   ClickHouse; without one, all follows.
-- Every view reads `hidden_accounts` (the hidden accounts only) once.
--
-- Hidden accounts are filtered with GLOBAL NOT IN: on a cluster the
-- tables are Distributed and a plain IN over another Distributed table is
-- refused (distributed_product_mode = deny); on one server it is NOT IN.
--
-- `SELECT *` is expanded when a view is created: a later migration that
-- adds a column to a table re-creates its `_live` view to show it.

CREATE VIEW IF NOT EXISTS {db}.records_live AS SELECT * FROM {db}.records FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.posts_live AS SELECT * FROM {db}.posts FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.likes_live AS SELECT * FROM {db}.likes FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.reposts_live AS SELECT * FROM {db}.reposts FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.follows_live AS SELECT * FROM {db}.follows FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.blocks_live AS SELECT * FROM {db}.blocks FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.profiles_live AS SELECT * FROM {db}.profiles FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.lists_live AS SELECT * FROM {db}.lists FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.list_items_live AS SELECT * FROM {db}.list_items FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.list_blocks_live AS SELECT * FROM {db}.list_blocks FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.starter_packs_live AS SELECT * FROM {db}.starter_packs FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.feed_generators_live AS SELECT * FROM {db}.feed_generators FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.threadgates_live AS SELECT * FROM {db}.threadgates FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.postgates_live AS SELECT * FROM {db}.postgates FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.verifications_live AS SELECT * FROM {db}.verifications FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.labeler_services_live AS SELECT * FROM {db}.labeler_services FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.actor_statuses_live AS SELECT * FROM {db}.actor_statuses FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.chat_declarations_live AS SELECT * FROM {db}.chat_declarations FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.notification_declarations_live AS SELECT * FROM {db}.notification_declarations FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);
CREATE VIEW IF NOT EXISTS {db}.content_visibility_declarations_live AS SELECT * FROM {db}.content_visibility_declarations FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);

-- Posts of the last 72 hours by their key's TID time (as the feeds and
-- the windowed analytics read them), with their URI.
CREATE VIEW IF NOT EXISTS {db}.recent_posts_72h AS SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, did, rkey, tid_time, created_at, sort_at, text, langs, tags, reply_parent_uri, quote_uri FROM {db}.recent_posts FINAL WHERE tid_time >= now() - 259200 AND deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1);

-- Posts of the whats-hot window (48 hours, pkg/feeds HOT_WINDOW_SECS) with
-- the accounts that liked and reposted them and the whats-hot score:
-- (likes + 2 * reposts) / (age_hours + 2) ^ 1.8 (pkg/store queries/feeds.sql
-- rank_whats_hot). `ORDER BY score DESC, uri DESC` over the posts with a
-- like or a repost is the feed's order.
CREATE VIEW IF NOT EXISTS {db}.recent_posts_with_score AS SELECT uri, did, rkey, tid_time, sort_at, text, langs, tags, likes, reposts, (likes + 2 * reposts) / pow(greatest(toInt64(toUInt32(now())) - toInt64(toUInt32(sort_at)), 0) / 3600 + 2, 1.8) AS score FROM (SELECT concat('at://', did, '/app.bsky.feed.post/', rkey) AS uri, did, rkey, tid_time, sort_at, text, langs, tags FROM {db}.recent_posts FINAL WHERE tid_time >= now() - 172800 AND deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1)) AS p GLOBAL ANY LEFT JOIN (SELECT subject_uri AS uri, uniqExactIf(did, kind = 'like') AS likes, uniqExactIf(did, kind = 'repost') AS reposts FROM {db}.recent_interactions FINAL WHERE subject_time >= now() - 172800 AND deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1) GROUP BY subject_uri) AS c USING uri;

-- An account's follows and followers as README "Counts" defines them
-- (pkg/store queries/counts.sql actor_follows, actor_followers): distinct
-- accounts, hidden followers left out; hidden accounts have no row.
-- Followers are as of the last interaction refresh.
CREATE VIEW IF NOT EXISTS {db}.following_counts AS SELECT did, uniqExact(subject_did) AS follows FROM {db}.follows FINAL WHERE deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1) GROUP BY did;
CREATE VIEW IF NOT EXISTS {db}.follower_counts AS SELECT subject AS did, followers FROM (SELECT subject_uri AS subject, uniqExact(did) AS followers FROM {db}.interactions FINAL WHERE kind = 'follow' AND deleted = 0 AND did GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1) AND subject_uri GLOBAL NOT IN (SELECT did FROM {db}.hidden_accounts FINAL WHERE hidden = 1) GROUP BY subject_uri);
