CREATE TABLE IF NOT EXISTS {db}.interaction_subjects (
    did String,
    kind String,
    rkey String,
    subject_uri String,
    version UInt64
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, kind, rkey, subject_uri);
INSERT INTO {db}.interaction_subjects SELECT did, kind, rkey, subject_uri, version FROM {db}.interaction_keys WHERE subject_uri != '';
DROP TABLE IF EXISTS {db}.interaction_keys;
