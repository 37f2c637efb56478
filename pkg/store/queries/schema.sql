-- Schema inspection (src/lib.rs dump_schema).

-- name: list_tables
SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name;

-- name: show_create_table
-- {table}: a table name from list_tables, quoted as an identifier.
SHOW CREATE TABLE {db}.{table};

-- Administration (src/admin.rs): benches, tools and tests that own a
-- database. {on_cluster} is empty or ` ON CLUSTER <name>`; {table} a bare
-- table name (on a cluster, {local} makes it the shards' replicated table),
-- {tables} a quoted array of them.

-- name: create_database
CREATE DATABASE IF NOT EXISTS {db}{on_cluster};

-- name: drop_database
DROP DATABASE IF EXISTS {db}{on_cluster};

-- name: truncate_table
TRUNCATE TABLE {db}.{table}{local}{on_cluster};

-- name: optimize_table_final
OPTIMIZE TABLE {db}.{table}{local}{on_cluster} FINAL;

-- name: table_count
-- Rows of one table as a query reads them (on a cluster: through its
-- `Distributed` table, one replica of each shard), replays included.
SELECT count() FROM {db}.{table};

-- name: distributed_tables
-- The database's `Distributed` tables and their engines (sharding keys).
SELECT name, engine_full FROM system.tables WHERE database = '{db}' AND engine = 'Distributed' ORDER BY name;

-- name: even_shards
-- The shards of cluster {cluster} when every one weighs 1, else 0.
SELECT toUInt64(if(min(shard_weight) = 1 AND max(shard_weight) = 1, uniqExact(shard_num), 0)) FROM system.clusters WHERE cluster = {cluster};

-- name: shards_of_keys
-- The shard index (0-based) a `Distributed` table sharded by
-- `cityHash64(<key>)` over {shards} equal shards sends each of {keys} to,
-- in order.
SELECT cityHash64(k) % {shards} FROM (SELECT arrayJoin({keys}) AS k);

-- name: stored_rows
-- Rows in active parts of the tables (before any deduplication), on the
-- server that answers (on a cluster: name the local tables).
SELECT toUInt64(sum(rows)) FROM system.parts WHERE active AND database = '{db}' AND has({tables}, table);

-- name: active_parts
-- Active parts of the tables (how many are left to merge).
SELECT count() FROM system.parts WHERE active AND database = '{db}' AND has({tables}, table);

-- Server diagnostics (src/admin.rs) for benches (`just bench-scale`): what a
-- database takes on disk, whether merges or queries are still running, the
-- server's tracked memory and its query log. {user} is a quoted user name,
-- {from}/{to} Unix seconds.

-- name: table_storage
-- Active parts per table: rows, bytes on disk, compressed and uncompressed column data.
SELECT table, toUInt64(count()) AS parts, toUInt64(sum(rows)) AS rows, toUInt64(sum(bytes_on_disk)) AS bytes_on_disk, toUInt64(sum(data_compressed_bytes)) AS compressed, toUInt64(sum(data_uncompressed_bytes)) AS uncompressed FROM system.parts WHERE active AND database = '{db}' GROUP BY table ORDER BY table;

-- name: running_merges
SELECT count() FROM system.merges WHERE database = '{db}';

-- name: running_queries
-- Queries of {user} in progress, other than this one.
SELECT count() FROM system.processes WHERE user = {user} AND position(query, 'system.processes') = 0;

-- name: tracked_memory
-- Memory the server's allocator tracks, bytes (close to its RSS, without the binary and caches).
SELECT toUInt64(value) FROM system.metrics WHERE metric = 'MemoryTracking';

-- name: flush_logs
SYSTEM FLUSH LOGS;

-- name: drop_mark_cache
SYSTEM DROP MARK CACHE;

-- name: drop_uncompressed_cache
SYSTEM DROP UNCOMPRESSED CACHE;

-- name: has_query_log
-- Whether the server keeps a query log (a <query_log> section in its config).
SELECT count() FROM system.tables WHERE database = 'system' AND name = 'query_log';

-- name: query_log_between
-- Finished and failed queries of {user} started from {from} to {to}
-- (seconds), with their peak memory. Only servers whose config has a
-- <query_log> section have the table (chdb has none: the catalog it checks
-- leaves this statement out).
SELECT toUInt32(query_start_time) AS started, toUInt64(query_duration_ms) AS duration_ms, toUInt64(memory_usage) AS memory, toUInt64(read_rows) AS read_rows, exception, substringUTF8(query, 1, 200) AS query FROM system.query_log WHERE user = {user} AND event_date >= toDate(toDateTime({from})) AND query_start_time >= toDateTime({from}) AND query_start_time <= toDateTime({to}) AND toUInt8(type) != 1 ORDER BY query_start_time;
