DROP TABLE IF EXISTS {db}.aggregate_refreshes;
DROP TABLE IF EXISTS {db}.interaction_subjects;
DROP TABLE IF EXISTS {db}.interactions;
ALTER TABLE {db}.reposts DROP COLUMN inserted_at;
ALTER TABLE {db}.likes DROP COLUMN inserted_at;
ALTER TABLE {db}.posts DROP COLUMN inserted_at;
