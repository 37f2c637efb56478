-- The counts only: the watermarks stay, and the refresh reads the whole
-- margin again.
ALTER TABLE {db}.aggregate_refreshes DROP COLUMN seen_rows;
ALTER TABLE {db}.aggregate_refreshes DROP COLUMN seen_seconds;
ALTER TABLE {db}.aggregate_refreshes DROP COLUMN exact;
