-- Aggregates kept from the arrival logs of migration 0009 (src/aggregates.rs):
-- the hidden accounts, the daily stats, and the retention of the logs and
-- companion tables. Windows [{after}, {before}) are Unix seconds of arrival.

-- name: watermark
-- Where the named refresh step got to: the server time its last run
-- started at (0 before its first run), and, when that run was exact
-- (migration 0011), the rows per second of arrival it saw in the margin
-- before that time.
SELECT toUInt32(argMax(upto, version)) AS last_upto, argMax(exact, version) AS last_exact, argMax(seen_seconds, version) AS last_seconds, argMax(seen_rows, version) AS last_rows FROM {db}.aggregate_refreshes WHERE name = {name};

-- name: server_now
SELECT toUInt32(now());

-- name: log_seconds
-- Rows per second of arrival in the log {log} over the last run's margin
-- [{check_from}, {check_to}) (a count that grew since that run: a row that
-- became visible after it read the log) and over this run's
-- [{now_from}, {now_to}) (kept for the next run). One statement: both
-- counts are of the same set of parts. Reads only the sorting key's first
-- column, over those two ranges.
SELECT groupArray(s) AS seconds, groupArray(n) AS rows FROM (SELECT toUInt32(arrived) AS s, count() AS n FROM {db}.{log} WHERE (arrived >= toDateTime({check_from}) AND arrived < toDateTime({check_to})) OR (arrived >= toDateTime({now_from}) AND arrived < toDateTime({now_to})) GROUP BY s);

-- name: save_watermark
-- {exact} = 0: no counts (a run stopped between windows, or one that saw
-- no log): the next run reads the whole margin again.
INSERT INTO {db}.aggregate_refreshes (name, upto, version, exact, seen_seconds, seen_rows) VALUES ({name}, toDateTime({upto}), {version}, {exact}, {seconds}, {rows});

-- name: refresh_hidden_accounts
-- The current state of the accounts whose events arrived in the window,
-- kept when hidden now or hidden before (so unhiding is written too).
INSERT INTO {db}.hidden_accounts (did, hidden, version) SELECT did, if(a = 0, 1, 0) AS hidden, v AS version FROM (SELECT did, max(version) AS v, argMax(active, version) AS a FROM {db}.accounts WHERE did IN (SELECT did FROM {db}.account_changes{local} WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before})) GROUP BY did) WHERE a = 0 OR did IN (SELECT did FROM {db}.hidden_accounts);

-- name: stale_days_of_accounts
-- Every day the accounts whose events arrived in the window hold records
-- on: their records count again (unhidden) or stop counting (hidden). Read
-- from `records` by its key (did first): cost follows those accounts.
INSERT INTO {db}.stale_days (collection, day, pending, version) SELECT collection, toDate({tid_time}) AS day, 1 AS pending, toUInt64(toUnixTimestamp(now())) * 2000000 + 1 AS version FROM {db}.records WHERE did IN (SELECT did FROM {db}.account_changes{local} WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before})) GROUP BY collection, day;

-- name: stale_days_add
-- The (collection, day) pairs that got rows in the window need their
-- stats recomputed. The mark's version is twice the last arrival in
-- microseconds, plus one: above a recomputation's "done" mark (twice its
-- start) only when a row arrived after that recomputation started, so the
-- margin reading the same rows again does not undo it.
INSERT INTO {db}.stale_days (collection, day, pending, version) SELECT collection, day, 1 AS pending, toUInt64(max(arrived)) * 2000000 + 1 AS version FROM {db}.day_changes WHERE arrived >= toDateTime({after}) AND arrived < toDateTime({before}) GROUP BY collection, day;

-- name: stale_days_next
-- The next pairs to recompute, the most recent days first.
SELECT collection, toString(day) AS day_text FROM {db}.stale_days FINAL WHERE pending = 1 ORDER BY day DESC, collection LIMIT {limit};

-- name: stale_days_backlog
SELECT count() FROM {db}.stale_days FINAL WHERE pending = 1;

-- name: daily_stats_zero
-- First zero each pair (a day whose records were all deleted must drop to
-- 0), then recompute; the recomputation's version is one higher.
INSERT INTO {db}.daily_stats (day, collection, records, actors, computed_at, version, hour_counts, actors_state) SELECT toDate(p.2) AS day, p.1 AS collection, toUInt64(0) AS records, toUInt64(0) AS actors, now() AS computed_at, toUInt64({version}) AS version, emptyArrayUInt64() AS hour_counts, uniqStateIf(p.1, 0) AS actors_state FROM (SELECT arrayJoin([{pairs}]) AS p) GROUP BY day, collection;

-- name: daily_stats_recompute
-- Live keys of each pair from record_days (a range of its sorting key),
-- hidden accounts left out: records, distinct accounts, records per hour
-- of the day, and the accounts as a mergeable state (all-time distinct
-- accounts merge the days'). The hours are summed as a map per pair
-- (sumMap) and spread over 24 slots once per pair, not as a 24-slot array
-- per record; the map is passed into the lambda as an argument (18.16 reads
-- only the columns named outside lambdas).
INSERT INTO {db}.daily_stats (day, collection, records, actors, computed_at, version, hour_counts, actors_state) SELECT day, collection, records, actors, now() AS computed_at, toUInt64({version}) + 1 AS version, arrayMap((h, hours, counts) -> toUInt64(counts[indexOf(hours, h)]), range(24), arrayResize([per_hour.1], 24, per_hour.1), arrayResize([per_hour.2], 24, per_hour.2)) AS hour_counts, actors_state FROM (SELECT day, collection, count() AS records, uniqExact(did) AS actors, sumMap([toUInt64(hour)], [toUInt64(1)]) AS per_hour, uniqState(did) AS actors_state FROM {db}.record_days FINAL WHERE (collection, day) IN ({pairs}) AND deleted = 0 AND did NOT IN (SELECT did FROM {db}.hidden_accounts{local} FINAL WHERE hidden = 1) GROUP BY day, collection);

-- name: stale_days_done
INSERT INTO {db}.stale_days (collection, day, pending, version) SELECT p.1 AS collection, toDate(p.2) AS day, 0 AS pending, toUInt64({version}) AS version FROM (SELECT arrayJoin([{pairs}]) AS p);

-- name: log_partitions
-- The partitions of the logs and companion tables, for the retention step.
-- {parts} is `system.parts`; on a cluster, every server's
-- (`cluster('<name>', system, parts)`), and {tables} name the local tables:
-- a partition may exist on one shard only.
SELECT table, partition FROM {parts} WHERE database = '{db}' AND active AND has({tables}, table) GROUP BY table, partition ORDER BY table, partition;

-- name: drop_partition
-- On a cluster, the local table on every server ({on_cluster}): a
-- `Distributed` table has no partitions.
ALTER TABLE {db}.{table}{local}{on_cluster} DROP PARTITION {partition};
