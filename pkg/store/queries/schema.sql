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

-- name: stored_rows
-- Rows in active parts of the tables (before any deduplication), on the
-- server that answers (on a cluster: name the local tables).
SELECT toUInt64(sum(rows)) FROM system.parts WHERE active AND database = '{db}' AND has({tables}, table);

-- name: active_parts
-- Active parts of the tables (how many are left to merge).
SELECT count() FROM system.parts WHERE active AND database = '{db}' AND has({tables}, table);
