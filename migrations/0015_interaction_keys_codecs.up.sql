-- min_server_version: 22.3
-- Migration 0013's codecs for the table migration 0014 created: ZSTD(3) on
-- its strings, versions and times, Delta before ZSTD(3) on the DID hash
-- (the sorting key's first column, increasing within a part). The key hash
-- is random: left as it is. Metadata only, as 0013.
ALTER TABLE {db}.interaction_keys MODIFY COLUMN did_hash UInt64 CODEC(Delta(8), ZSTD(3)), MODIFY COLUMN kind String CODEC(ZSTD(3)), MODIFY COLUMN did String CODEC(ZSTD(3)), MODIFY COLUMN rkey String CODEC(ZSTD(3)), MODIFY COLUMN subject_uri String CODEC(ZSTD(3)), MODIFY COLUMN version UInt64 CODEC(ZSTD(3)), MODIFY COLUMN sort_at DateTime CODEC(ZSTD(3));
