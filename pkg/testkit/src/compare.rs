//! Comparing two databases of one ClickHouse server table by table: the
//! current state (`FINAL` for the replacing engines) of every column that
//! comes from the data, leaving out the ones that only say *when* a row was
//! written ([`TIME_COLUMNS`], [`CLOCK_DEFAULTED`]). A run under faults equals a clean run of the
//! same input exactly when every table does.
//!
//! A table with an `arrived` column is a log of arrivals (what changed,
//! when): a retried insert adds copies of its rows, which its readers do not
//! mind, so it is compared as the set of its distinct rows.
//! `AggregateFunction` states are compared by their finalized values.
//!
//! Each table is compared by row count and an order-independent digest
//! computed in ClickHouse (`sum(cityHash64(columns…))`), so tables of
//! millions of rows cost one scan each; when a small table differs, its rows
//! are fetched and the differing ones listed.
//!
//! ```no_run
//! use skyhouse_testkit::compare::Compare;
//! use skyhouse_testkit::ClickHouse;
//!
//! let ch = ClickHouse::shared();
//! let (clean, faulty) = (ch.database("clean"), ch.database("faulty"));
//! // … index the same input into both …
//! let result = Compare::new(ch).run(clean.name(), faulty.name());
//! assert!(result.is_equal(), "{result}");
//! ```

use std::collections::BTreeSet;
use std::fmt;

use crate::ClickHouse;

/// Columns whose values depend on the time a row was written, not on the
/// events (`indexed_at` of every record table, `inserted_at`, `updated_at`,
/// …, `dead_letters.at`): never compared.
pub const TIME_COLUMNS: &[&str] = &[
    "indexed_at",
    "inserted_at",
    "updated_at",
    "computed_at",
    "requested_at",
    "finished_at",
    "observed_at",
    "at",
    "arrived",
];

/// Tables whose `version` is the clock of the refresh that wrote the row
/// (daily stats, the days they still owe, the hidden-accounts set): their
/// contents are compared, their versions are not.
pub const REFRESH_VERSIONED: &[&str] = &["daily_stats", "stale_days", "hidden_accounts"];

/// Columns that take the time of indexing when the event has no time of its
/// own (a delete's tombstone, a record without `createdAt`): in a table with
/// `indexed_at`, a value equal to the row's `indexed_at` is compared as 0; in
/// a log of arrivals (an `arrived` column), a tombstone's is.
pub const CLOCK_DEFAULTED: &[&str] = &["created_at", "sort_at"];

/// Tables of bookkeeping whose rows depend on the time of writing (applied
/// migrations, the refresh jobs' progress): never compared.
pub const TIME_TABLES: &[&str] = &["schema_migrations", "aggregate_refreshes"];

/// A table is listed row by row when it differs and has at most this many rows.
const DETAIL_ROWS: u64 = 200_000;

/// Differing rows listed per table and side.
const DETAIL_LINES: usize = 10;

/// A comparison's settings (see the module documentation).
#[derive(Debug)]
pub struct Compare<'a> {
    server: &'a ClickHouse,
    ignored: Vec<(String, String)>,
    skipped: Vec<String>,
}

/// One table's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableResult {
    /// The table.
    pub name: String,
    /// Rows (current state) in the first database.
    pub rows_a: u64,
    /// Rows (current state) in the second database.
    pub rows_b: u64,
    /// Whether the two hold the same rows.
    pub equal: bool,
}

/// What [`Compare::run`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Comparison {
    /// The databases compared.
    pub a: String,
    /// The databases compared.
    pub b: String,
    /// Every table compared, by name.
    pub tables: Vec<TableResult>,
    /// One line per difference (tables missing on one side, differing rows).
    pub differences: Vec<String>,
}

impl Comparison {
    /// True when every table holds the same rows.
    pub fn is_equal(&self) -> bool {
        self.differences.is_empty()
    }

    /// Rows of `table` in the first database (0 if it was not compared).
    pub fn rows(&self, table: &str) -> u64 {
        self.tables
            .iter()
            .find(|t| t.name == table)
            .map_or(0, |t| t.rows_a)
    }
}

impl fmt::Display for Comparison {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} vs {}:", self.a, self.b)?;
        for t in &self.tables {
            let mark = if t.equal { "=" } else { "≠" };
            write!(f, " {} {}{mark}{}", t.name, t.rows_a, t.rows_b)?;
        }
        for d in &self.differences {
            write!(f, "\n{d}")?;
        }
        Ok(())
    }
}

impl<'a> Compare<'a> {
    /// Compares every table but [`TIME_TABLES`], without [`TIME_COLUMNS`].
    pub fn new(server: &'a ClickHouse) -> Compare<'a> {
        Compare {
            server,
            ignored: Vec::new(),
            skipped: TIME_TABLES.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    /// Also leaves out `table.column` (e.g. a version stamped with the time).
    pub fn ignore_column(mut self, table: &str, column: &str) -> Self {
        self.ignored.push((table.to_owned(), column.to_owned()));
        self
    }

    /// Also leaves out a whole table.
    pub fn skip_table(mut self, table: &str) -> Self {
        self.skipped.push(table.to_owned());
        self
    }

    /// Compares databases `a` and `b`.
    ///
    /// # Panics
    ///
    /// If a query fails (the message has the server's error and the query).
    pub fn run(&self, a: &str, b: &str) -> Comparison {
        let mut out = Comparison {
            a: a.to_owned(),
            b: b.to_owned(),
            tables: Vec::new(),
            differences: Vec::new(),
        };
        let (tables_a, tables_b) = (self.tables(a), self.tables(b));
        for (missing, _) in tables_a.symmetric_difference(&tables_b) {
            out.differences.push(format!(
                "table {missing}: only in one of {a} and {b} (or its engine differs)"
            ));
        }
        for (table, engine) in tables_a.intersection(&tables_b) {
            if self.skipped.contains(table) {
                continue;
            }
            let columns = self.columns(a, table);
            if columns != self.columns(b, table) {
                out.differences.push(format!(
                    "table {table}: the columns differ between {a} and {b}"
                ));
                continue;
            }
            let arrivals = self.has_column(a, table, "arrived");
            let aliases: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
            let list = columns
                .iter()
                .zip(&aliases)
                .map(|(c, alias)| format!("{c} AS {alias}"))
                .collect::<Vec<_>>()
                .join(", ");
            let hashed = aliases.join(", ");
            let from = |db: &str| {
                let final_ = if engine.contains("Replacing") || engine.contains("Collapsing") {
                    " FINAL"
                } else {
                    ""
                };
                let distinct = if arrivals { "DISTINCT " } else { "" };
                format!("(SELECT {distinct}{list} FROM {db}.{table}{final_})")
            };
            let digest = |db: &str| {
                self.server
                    .query(&format!(
                        "SELECT count(), sum(cityHash64({hashed})) FROM {}",
                        from(db)
                    ))
                    .trim()
                    .to_owned()
            };
            let (da, db_) = (digest(a), digest(b));
            let count = |d: &str| -> u64 {
                d.split('\t')
                    .next()
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0)
            };
            let equal = da == db_;
            out.tables.push(TableResult {
                name: table.clone(),
                rows_a: count(&da),
                rows_b: count(&db_),
                equal,
            });
            if equal {
                continue;
            }
            out.differences.push(format!(
                "table {table}: {} rows in {a}, {} in {b}, contents differ",
                count(&da),
                count(&db_)
            ));
            if count(&da).max(count(&db_)) <= DETAIL_ROWS {
                let rows = |db: &str| -> BTreeSet<String> {
                    self.server
                        .query(&format!("SELECT {hashed} FROM {} FORMAT TSV", from(db)))
                        .lines()
                        .map(str::to_owned)
                        .collect()
                };
                let (ra, rb) = (rows(a), rows(b));
                for (side, only) in [(a, ra.difference(&rb)), (b, rb.difference(&ra))] {
                    for line in only.take(DETAIL_LINES) {
                        out.differences
                            .push(format!("  {table} only in {side}: {line}"));
                    }
                }
            }
        }
        out
    }

    /// `(name, engine)` of every table of `db` (views left out).
    fn tables(&self, db: &str) -> BTreeSet<(String, String)> {
        self.server
            .query(&format!(
                "SELECT name, engine FROM system.tables WHERE database = '{db}' \
                 AND engine NOT LIKE '%View' FORMAT TSV"
            ))
            .lines()
            .filter_map(|l| l.split_once('\t'))
            .map(|(n, e)| (n.to_owned(), e.to_owned()))
            .collect()
    }

    /// Whether `db.table` has a column `column`.
    fn has_column(&self, db: &str, table: &str, column: &str) -> bool {
        self.server
            .query(&format!(
                "SELECT count() FROM system.columns WHERE database = '{db}' \
                 AND table = '{table}' AND name = '{column}'"
            ))
            .trim()
            != "0"
    }

    /// The compared columns of `db.table` as expressions, in table order.
    fn columns(&self, db: &str, table: &str) -> Vec<String> {
        let all = self.server.query(&format!(
            "SELECT name, type FROM system.columns WHERE database = '{db}' AND table = '{table}' \
             AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') FORMAT TSV"
        ));
        let all: Vec<(&str, &str)> = all.lines().filter_map(|l| l.split_once('\t')).collect();
        let indexed_at = all.iter().any(|(c, _)| *c == "indexed_at");
        // A log of arrivals has no `indexed_at`: there a tombstone's
        // clock-defaulted times are the clock's.
        let tombstones = !indexed_at
            && all.iter().any(|(c, _)| *c == "arrived")
            && all.iter().any(|(c, _)| *c == "deleted");
        all.into_iter()
            .filter(|(c, _)| !TIME_COLUMNS.contains(c))
            .filter(|(c, _)| !(*c == "version" && REFRESH_VERSIONED.contains(&table)))
            .filter(|(c, _)| !self.ignored.iter().any(|(t, col)| t == table && col == c))
            .map(|(c, ty)| {
                if indexed_at && CLOCK_DEFAULTED.contains(&c) {
                    format!("if({c} = indexed_at, toDateTime(0), {c})")
                } else if tombstones && CLOCK_DEFAULTED.contains(&c) {
                    format!("if(deleted = 1, toDateTime(0), {c})")
                } else if ty.starts_with("AggregateFunction") {
                    format!("finalizeAggregation({c})")
                } else {
                    c.to_owned()
                }
            })
            .collect()
    }
}
