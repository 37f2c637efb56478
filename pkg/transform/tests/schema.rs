//! The migrations and the row structs describe the same tables: same names,
//! same columns in the same order, same types; typed tables keyed so that a
//! tombstone collapses with the row it replaces.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clickhouse::Row;
use skyhouse_transform::{AccountRow, DeadLetterRow, IdentityRow, RecordRow, Table, TableRow};

fn migration(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../migrations")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One `CREATE TABLE` of a migration.
#[derive(Debug)]
struct Create {
    columns: Vec<(String, String)>,
    /// Everything after the closing parenthesis of the column list.
    tail: String,
}

/// The `CREATE TABLE IF NOT EXISTS {db}.name (` statements of a file, by name,
/// in the layout the migrations use (one column per line, `) ENGINE …`).
fn creates(sql: &str) -> BTreeMap<String, Create> {
    let mut out = BTreeMap::new();
    let mut lines = sql
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with("--") && !l.is_empty());
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("CREATE TABLE IF NOT EXISTS {db}.") else {
            continue;
        };
        let name = rest
            .strip_suffix('(')
            .unwrap_or_else(|| panic!("column list must open on the CREATE line: {line}"))
            .trim()
            .to_owned();
        let mut columns = Vec::new();
        let mut tail = String::new();
        for line in lines.by_ref() {
            if let Some(t) = line.strip_prefix(')') {
                tail.push_str(t);
                break;
            }
            let line = line.trim_end_matches(',');
            let (col, ty) = line
                .split_once(' ')
                .unwrap_or_else(|| panic!("{name}: bad column line {line:?}"));
            columns.push((col.to_owned(), ty.trim().to_owned()));
        }
        for line in lines.by_ref() {
            tail.push(' ');
            tail.push_str(line);
            if line.ends_with(';') {
                break;
            }
        }
        assert!(
            tail.trim_end().ends_with(';'),
            "{name}: statement must end with ;"
        );
        let previous = out.insert(name.clone(), Create { columns, tail });
        assert!(previous.is_none(), "{name} created twice");
    }
    out
}

fn check_columns(table: &str, create: &Create, columns: &[(&str, &str)], row_names: &[&str]) {
    let sql: Vec<(&str, &str)> = create
        .columns
        .iter()
        .map(|(c, t)| (c.as_str(), t.as_str()))
        .collect();
    assert_eq!(
        sql, columns,
        "{table}: migration columns differ from the row's"
    );
    let names: Vec<&str> = columns.iter().map(|c| c.0).collect();
    assert_eq!(
        names, row_names,
        "{table}: clickhouse::Row COLUMN_NAMES differ"
    );
}

/// Only what ClickHouse 18.16 has.
fn check_types_are_old_server_safe(table: &str, create: &Create) {
    for (col, ty) in &create.columns {
        assert!(
            matches!(
                ty.as_str(),
                "String" | "UInt8" | "UInt32" | "UInt64" | "DateTime" | "Array(String)"
            ),
            "{table}.{col}: type {ty} is not in the 18.16-safe set"
        );
    }
}

/// Columns later migrations add (`ALTER TABLE {db}.t ADD COLUMN c T …;`),
/// in order, appended to the tables `0002` created; MATERIALIZED columns
/// are the server's (never written), so they are not part of a row.
fn add_later_columns(creates: &mut BTreeMap<String, Create>) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("migrations dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".up.sql") && n.as_str() > "0002")
        .collect();
    files.sort();
    for file in files {
        for line in migration(&file).lines().map(str::trim) {
            let Some(rest) = line.strip_prefix("ALTER TABLE {db}.") else {
                continue;
            };
            let Some((table, change)) = rest.split_once(' ') else {
                continue;
            };
            let Some(col) = change.strip_prefix("ADD COLUMN ") else {
                continue;
            };
            if col.contains("MATERIALIZED") {
                continue;
            }
            let Some(create) = creates.get_mut(table) else {
                continue;
            };
            let col = col.trim_end_matches(';');
            let (name, ty) = col.split_once(' ').expect("column and type");
            let ty = ty.split(" DEFAULT").next().unwrap_or(ty).trim();
            create.columns.push((name.to_owned(), ty.to_owned()));
        }
    }
}

#[test]
fn typed_tables_match_row_structs() {
    let sql = migration("0002_typed_tables.up.sql");
    let mut creates = creates(&sql);
    add_later_columns(&mut creates);
    for &table in Table::ALL {
        let create = creates
            .get(table.name())
            .unwrap_or_else(|| panic!("0002 does not create {}", table.name()));
        check_columns(
            table.name(),
            create,
            table.columns(),
            table.row_column_names(),
        );
        check_types_are_old_server_safe(table.name(), create);
        // Key columns only: a tombstone must land with the row it replaces.
        let tail = create.tail.split_whitespace().collect::<Vec<_>>().join(" ");
        assert_eq!(
            tail,
            "ENGINE = ReplacingMergeTree(version) ORDER BY (did, rkey);",
            "{}",
            table.name()
        );
    }
    let dead = creates
        .get("dead_letters")
        .expect("0002 creates dead_letters");
    check_columns(
        "dead_letters",
        dead,
        DeadLetterRow::COLUMNS,
        <DeadLetterRow as Row>::COLUMN_NAMES,
    );
    check_types_are_old_server_safe("dead_letters", dead);
    assert!(dead.tail.contains("ENGINE = MergeTree()"), "{}", dead.tail);

    // Nothing else, and every table dropped by the down migration.
    assert_eq!(creates.len(), Table::ALL.len() + 1, "{:?}", creates.keys());
    let down = migration("0002_typed_tables.down.sql");
    for name in creates.keys() {
        assert!(
            down.lines()
                .any(|l| l.trim() == format!("DROP TABLE IF EXISTS {{db}}.{name};")),
            "down does not drop {name}"
        );
    }
}

#[test]
fn no_newer_only_features() {
    let sql = migration("0002_typed_tables.up.sql");
    let code: String = sql
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    for banned in [
        "LowCardinality",
        "DateTime64",
        "JSON",
        "CODEC",
        "TTL",
        "INDEX",
        "Nullable",
    ] {
        assert!(!code.contains(banned), "0002 uses {banned}");
    }
}

#[test]
fn records_matches_the_core_migration() {
    let sql = migration("0001_core.up.sql");
    let creates = creates(&sql);
    let records = creates.get("records").expect("0001 creates records");
    check_columns(
        "records",
        records,
        RecordRow::COLUMNS,
        <RecordRow as Row>::COLUMN_NAMES,
    );
    for (name, columns, names) in [
        (
            IdentityRow::TABLE,
            IdentityRow::COLUMNS,
            <IdentityRow as Row>::COLUMN_NAMES,
        ),
        (
            AccountRow::TABLE,
            AccountRow::COLUMNS,
            <AccountRow as Row>::COLUMN_NAMES,
        ),
    ] {
        let create = creates
            .get(name)
            .unwrap_or_else(|| panic!("0001 creates {name}"));
        check_columns(name, create, columns, names);
    }
}
