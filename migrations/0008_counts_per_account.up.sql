-- Counts as Bluesky's AppView computes them (issue: counts and identities),
-- on top of 0004's interactions:
--
-- - follows join the refresh (kind 'follow', subject = the followed DID), so
--   followers are counted per account from `interactions` like likes are;
-- - every reply also gets a kind 'thread' row keyed by its thread's root, so
--   the replies of a thread are found by key when the root's threadgate
--   changes;
-- - reply rows carry whether they break the root's threadgate (`gated`) and
--   whether the root's author hid them (`hidden`), set by the refresh's gate
--   pass (pkg/store/src/counts.rs);
-- - threadgates get `inserted_at` too: a changed gate re-evaluates its thread.
--
-- Likes, reposts and follows count distinct accounts, not records (an
-- account's duplicate likes of one post count once, and deleting one of
-- them leaves the other counting); the counting is in the read queries.

ALTER TABLE {db}.follows ADD COLUMN inserted_at DateTime MATERIALIZED now();
ALTER TABLE {db}.threadgates ADD COLUMN inserted_at DateTime MATERIALIZED now();
ALTER TABLE {db}.interactions ADD COLUMN gated UInt8 DEFAULT 0;
ALTER TABLE {db}.interactions ADD COLUMN hidden UInt8 DEFAULT 0;
