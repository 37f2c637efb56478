-- Exact refresh watermarks (issue: network scale). Each refresh step reads
-- an arrival log from its last start on, but a row may take its `arrived`
-- time before a run starts and become visible after it (an insert in
-- flight), so every run used to read the last 300 s before its watermark
-- again: after a burst, that is the whole burst read twice.
--
-- Now a run also keeps how many rows of its log had arrived in each second
-- of the margin before its start, as the one statement that starts it saw
-- them. The next run counts those seconds again: where a count grew, a row
-- became visible late, and the reading starts at the first such second;
-- where none grew (the usual case), it starts at the last start. The log
-- tables only grow (MergeTree, rows never replaced), so equal counts are the
-- same rows. `exact` = 0 (rows written before this migration, a run
-- interrupted between its windows, every run on a cluster, whose replicas
-- may lag one another): no counts, the whole margin is read again, as
-- before.
ALTER TABLE {db}.aggregate_refreshes ADD COLUMN exact UInt8 DEFAULT 0;
ALTER TABLE {db}.aggregate_refreshes ADD COLUMN seen_seconds Array(UInt32);
ALTER TABLE {db}.aggregate_refreshes ADD COLUMN seen_rows Array(UInt64);

