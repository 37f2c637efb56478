ALTER TABLE {db}.interactions DROP COLUMN hidden;
ALTER TABLE {db}.interactions DROP COLUMN gated;
ALTER TABLE {db}.threadgates DROP COLUMN inserted_at;
ALTER TABLE {db}.follows DROP COLUMN inserted_at;
