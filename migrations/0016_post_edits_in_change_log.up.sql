-- A post edited (putRecord) so that it no longer names a subject of some
-- kind (a quote removed, a reply turned top-level) reached the change log
-- only for the kinds it still named: migration 0009's view keeps a post's
-- row of a kind when the post is deleted or names a subject of that kind.
-- A top-level quote post edited without its embed wrote no change row at
-- all, so its quote kept counting. The new view also keeps every kind of an
-- update (subject empty where the edit names none): the refresh looks the
-- key up, finds the empty subject newest and takes the old one's count
-- back. As migration 0012, the new view is created before the old one is
-- dropped (an insert that runs both logs its rows twice: the refresh reads
-- a row again to the same result).
CREATE MATERIALIZED VIEW IF NOT EXISTS {db}.interaction_changes_posts_v2 TO {db}.interaction_changes AS SELECT now() AS arrived, k.1 AS kind, k.2 AS subject_uri, did, rkey, version, deleted, action, sort_at FROM {db}.posts ARRAY JOIN [('reply', reply_parent_uri), ('quote', quote_uri), ('thread', reply_root_uri)] AS k WHERE deleted = 1 OR action = 2 OR k.2 != '';
DROP TABLE IF EXISTS {db}.interaction_changes_posts;
