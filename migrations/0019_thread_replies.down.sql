DROP TABLE IF EXISTS {db}.thread_replies_feed;
-- The older refresh finds a thread's replies by the `thread` rows of `interactions`, which this one no longer writes for new replies.
INSERT INTO {db}.interactions (subject_uri, kind, did, rkey, version, deleted, sort_at) SELECT root_uri, 'thread', replier, rkey, version, deleted, sort_at FROM {db}.thread_replies;
DROP TABLE IF EXISTS {db}.thread_replies;
