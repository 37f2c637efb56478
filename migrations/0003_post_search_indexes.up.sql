-- min_server_version: 20.1
-- Data-skipping indexes for post search (terms and tags). ClickHouse 18.16
-- has no usable skip indexes, so there this migration is recorded as skipped
-- and search scans; on current servers it prunes granules.

ALTER TABLE {db}.posts ADD INDEX IF NOT EXISTS posts_text_tokens lower(text) TYPE tokenbf_v1(32768, 3, 0) GRANULARITY 4;
ALTER TABLE {db}.posts ADD INDEX IF NOT EXISTS posts_tags tags TYPE bloom_filter(0.01) GRANULARITY 4;
