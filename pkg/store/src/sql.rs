//! Every statement skyhouse sends, by name, from the `.sql` files in
//! `pkg/store/queries/`.
//!
//! A file holds statements introduced by `-- name: <name>` lines; `--`
//! comment lines are dropped and a statement ends at the next name (its
//! trailing `;` is removed). Placeholders are `{word}`: `{db}` is the
//! database, every other one is filled by the typed function that owns the
//! statement, with a validated value or a literal quoted by [`literal`]
//! (ClickHouse 18.16 has no server-side parameters). Rendering is one pass:
//! a value that itself contains `{…}` is data, never expanded again. A
//! placeholder left unfilled, or a value given for none, is an error (a bug
//! in the caller, caught by the catalog test before it ships).
//!
//! Two placeholders make one statement right on one server and on a
//! cluster (see [`Db`]); on one server both are empty:
//! - `{global}` is `GLOBAL ` on a cluster, written before the `IN`, `NOT IN`
//!   or `JOIN` of a subquery that must see every shard: its table is
//!   sharded by another key than the outer query's (`interactions` by
//!   `subject_uri` against `accounts` by `did`), so ClickHouse runs it once
//!   on the server that got the query and sends its answer to every shard;
//! - `{local}` is `_local` on a cluster, after the table of a subquery that
//!   is *co-located* with the outer query: both tables are sharded by the
//!   same column and the subquery matches on it (a post's `did` against
//!   `accounts.did`: every row of one DID is on one shard), so each shard
//!   answers it from its own `<table>_local`, with nothing sent around. Only
//!   inside a query whose main table is a `Distributed` table (the part
//!   sent to the shards), never inside a `{global}` subquery.
//!
//! A subquery over a `Distributed` table with neither is refused by
//! ClickHouse on a cluster (code 288, `distributed_product_mode = 'deny'`,
//! which skyhouse keeps): a forgotten one fails the cluster catalog test
//! instead of reading one shard's rows as if they were all.
//!
//! [`catalog`] renders every statement with sample values: the tests run it
//! on ClickHouse 18.16 (one server and the cluster) and on current
//! ClickHouse (chdb), so what is checked is exactly what the services send.

use std::collections::HashMap;
use std::sync::OnceLock;

use crate::StoreError;

/// The statement files, embedded in the binary.
const FILES: &[(&str, &str)] = &[
    ("store.sql", include_str!("../queries/store.sql")),
    ("cleanup.sql", include_str!("../queries/cleanup.sql")),
    ("schema.sql", include_str!("../queries/schema.sql")),
    ("repos.sql", include_str!("../queries/repos.sql")),
    ("hosts.sql", include_str!("../queries/hosts.sql")),
    ("counts.sql", include_str!("../queries/counts.sql")),
    ("aggregates.sql", include_str!("../queries/aggregates.sql")),
    ("search.sql", include_str!("../queries/search.sql")),
    ("stats.sql", include_str!("../queries/stats.sql")),
    ("keys.sql", include_str!("../queries/keys.sql")),
    ("feeds.sql", include_str!("../queries/feeds.sql")),
    ("identities.sql", include_str!("../queries/identities.sql")),
];

/// Named statement templates of every file: name → (file, template).
fn templates() -> &'static HashMap<&'static str, (&'static str, String)> {
    static PARSED: OnceLock<HashMap<&'static str, (&'static str, String)>> = OnceLock::new();
    PARSED.get_or_init(|| {
        let mut out = HashMap::new();
        for (file, text) in FILES {
            for (name, body) in parse(text) {
                out.insert(name, (*file, body));
            }
        }
        out
    })
}

/// `(name, template)` pairs of one file, in order.
fn parse(text: &'static str) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for chunk in text.split("-- name: ").skip(1) {
        let (name, body) = chunk.split_once('\n').unwrap_or((chunk, ""));
        let body: Vec<&str> = body
            .lines()
            .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
            .collect();
        let body = body.join("\n");
        out.push((
            name.trim(),
            body.trim().trim_end_matches(';').trim().to_owned(),
        ));
    }
    out
}

/// A ClickHouse string literal: the text in single quotes with backslashes
/// and quotes escaped, so any text (quotes, `%`, `\\`, `?`, newlines) is
/// data, never SQL.
pub fn literal(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            // NUL ends a C string inside some server paths: escape it.
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// An array literal of quoted strings: `['a', 'b']`.
pub fn literal_array<S: AsRef<str>>(items: &[S]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| literal(s.as_ref())).collect();
    format!("[{}]", quoted.join(", "))
}

/// Where a statement runs: the database, and whether its tables are a
/// cluster's `Distributed` tables (which `{global}` and `{local}` render
/// for). [`crate::ClickHouse::db`] gives the handle's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Db<'a> {
    name: &'a str,
    cluster: bool,
}

impl<'a> Db<'a> {
    /// Database `name` on one server.
    pub fn single(name: &'a str) -> Db<'a> {
        Db {
            name,
            cluster: false,
        }
    }

    /// Database `name` on a cluster (tables sharded behind `Distributed`
    /// tables, as `migrate` makes them with a cluster name).
    pub fn cluster(name: &'a str) -> Db<'a> {
        Db {
            name,
            cluster: true,
        }
    }

    /// The database's name.
    pub fn name(&self) -> &'a str {
        self.name
    }

    /// Whether it is a cluster's.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }
}

/// Statement `name` with `{db}`, `{global}`, `{local}` and each
/// `(placeholder, value)` of `args` filled in (values are inserted as given:
/// quote text with [`literal`]).
pub fn render(db: Db<'_>, name: &str, args: &[(&str, &str)]) -> Result<String, StoreError> {
    let (_, template) = templates()
        .get(name)
        .ok_or_else(|| StoreError::Internal(format!("no statement named {name:?}")))?;
    fill(template, db, args).map_err(|e| StoreError::Internal(format!("statement {name}: {e}")))
}

/// One pass over `template`: `{word}` → its value.
fn fill(template: &str, db: Db<'_>, args: &[(&str, &str)]) -> Result<String, String> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut used = vec![false; args.len()];
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let word_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit()))
            .unwrap_or(after.len());
        if word_len == 0 || !after[word_len..].starts_with('}') {
            // Not a placeholder (e.g. a `{` inside a literal): keep it.
            out.push('{');
            rest = after;
            continue;
        }
        let word = &after[..word_len];
        if word == "db" {
            out.push_str(db.name);
        } else if word == "global" {
            out.push_str(if db.cluster { "GLOBAL " } else { "" });
        } else if word == "local" {
            out.push_str(if db.cluster { "_local" } else { "" });
        } else {
            let i = args
                .iter()
                .position(|(k, _)| *k == word)
                .ok_or_else(|| format!("placeholder {{{word}}} has no value"))?;
            used[i] = true;
            out.push_str(args[i].1);
        }
        rest = &after[word_len + 1..];
    }
    out.push_str(rest);
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(format!("value for {{{}}} fills no placeholder", args[i].0));
    }
    Ok(out)
}

/// A rendered statement: its name and its SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// The statement's name (`-- name:` in its file), with a variant suffix
    /// where one statement is rendered several ways.
    pub name: String,
    /// The SQL as sent.
    pub sql: String,
}

/// Every statement the store sends, rendered for database `db` (on one
/// server or a cluster) with sample values (each variant of a statement
/// built in pieces once), in an order that runs on a freshly migrated
/// database. The tests run it on 18.16 (one server and a cluster) and
/// current ClickHouse; a statement with no sample here fails the test that
/// checks every template is covered.
pub fn catalog(db: Db<'_>) -> Result<Vec<Rendered>, StoreError> {
    let mut out = Vec::new();
    crate::queries::samples(db, &mut out)?;
    crate::counts::samples(db, &mut out)?;
    crate::aggregates::samples(db, &mut out)?;
    crate::cleanup::samples(db, &mut out)?;
    crate::search::samples(db, &mut out)?;
    crate::stats::samples(db, &mut out)?;
    crate::keys::samples(db, &mut out)?;
    crate::feeds::samples(db, &mut out)?;
    crate::admin::samples(db, &mut out)?;
    crate::repos::samples(db, &mut out)?;
    crate::hosts::samples(db, &mut out)?;
    crate::identities::samples(db, &mut out)?;
    sample(&mut out, db, "list_tables", &[])?;
    sample(&mut out, db, "show_create_table", &[("table", "records")])?;
    Ok(out)
}

/// The catalog as a file: each statement under a `-- name:` line, `;`
/// terminated (what `scripts/chdb_check.py --statements` reads), without
/// the statements that read the server's query log (chdb keeps none).
pub fn catalog_file(db: Db<'_>) -> Result<String, StoreError> {
    let mut out = String::from("-- skyhouse-store statements, rendered with sample values\n");
    for r in catalog(db)? {
        if crate::admin::SERVER_LOG_STATEMENTS.contains(&r.name.as_str()) {
            continue;
        }
        out.push_str("-- name: ");
        out.push_str(&r.name);
        out.push('\n');
        out.push_str(&r.sql);
        out.push_str(";\n\n");
    }
    Ok(out)
}

/// Names of every template (for the coverage test).
pub fn template_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = templates().keys().copied().collect();
    names.sort_unstable();
    names
}

/// Push `name` rendered with `args` onto `out` (for the catalogs).
pub(crate) fn sample(
    out: &mut Vec<Rendered>,
    db: Db<'_>,
    name: &str,
    args: &[(&str, &str)],
) -> Result<(), StoreError> {
    out.push(Rendered {
        name: name.to_owned(),
        sql: render(db, name, args)?,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_are_data() {
        assert_eq!(literal("it's"), r"'it\'s'");
        assert_eq!(literal(r"a\b"), r"'a\\b'");
        assert_eq!(literal("a?b"), "'a?b'");
        assert_eq!(literal("x\0y"), r"'x\0y'");
        assert_eq!(literal_array(&["a", "b'"]), r"['a', 'b\'']");
    }

    #[test]
    fn fill_is_one_pass_and_strict() {
        let t = "SELECT {x} FROM {db}.t WHERE a = '{\"k\":1}'";
        let d = Db::single("d");
        assert_eq!(
            fill(t, d, &[("x", "'{db}'")]).expect("fills"),
            "SELECT '{db}' FROM d.t WHERE a = '{\"k\":1}'"
        );
        assert!(fill(t, d, &[]).expect_err("unfilled").contains("{x}"));
        assert!(fill(t, d, &[("x", "1"), ("y", "2")])
            .expect_err("unused")
            .contains("{y}"));
    }

    #[test]
    fn global_and_local_render_only_on_a_cluster() {
        let t = "SELECT 1 FROM {db}.p WHERE did {global}NOT IN (SELECT did FROM {db}.a{local})";
        assert_eq!(
            fill(t, Db::single("d"), &[]).expect("fills"),
            "SELECT 1 FROM d.p WHERE did NOT IN (SELECT did FROM d.a)"
        );
        assert_eq!(
            fill(t, Db::cluster("d"), &[]).expect("fills"),
            "SELECT 1 FROM d.p WHERE did GLOBAL NOT IN (SELECT did FROM d.a_local)"
        );
    }

    /// Statements whose nested key sets are GLOBAL IN on one server too:
    /// 18.16 then builds each set once before the read (`queries/counts.sql`).
    const GLOBAL_ON_ONE_SERVER: &[&str] = &["gate_candidates"];

    #[test]
    fn one_server_statements_name_no_cluster_table() {
        for r in catalog(Db::single("db")).expect("catalog renders") {
            let base = r.name.split('#').next().unwrap_or(&r.name);
            let global_on_purpose = GLOBAL_ON_ONE_SERVER.contains(&base);
            assert_eq!(
                r.sql.contains("GLOBAL"),
                global_on_purpose,
                "{}: {}",
                r.name,
                r.sql
            );
            assert!(!r.sql.contains("_local"), "{}: {}", r.name, r.sql);
        }
    }

    #[test]
    fn names_are_unique_across_files() {
        let mut seen = std::collections::HashSet::new();
        for (file, text) in FILES {
            for (name, body) in parse(text) {
                assert!(seen.insert(name), "statement {name} named twice ({file})");
                assert!(!body.is_empty(), "statement {name} in {file} is empty");
            }
        }
    }

    fn catalog_of_cluster() -> Vec<Rendered> {
        catalog(Db::cluster("db")).expect("cluster catalog renders")
    }

    #[test]
    fn every_template_has_a_sample() {
        let catalog = catalog(Db::single("db")).expect("catalog renders");
        let on_cluster = catalog_of_cluster();
        assert_eq!(
            catalog.iter().map(|r| &r.name).collect::<Vec<_>>(),
            on_cluster.iter().map(|r| &r.name).collect::<Vec<_>>()
        );
        for name in template_names() {
            assert!(
                catalog
                    .iter()
                    .any(|r| r.name == name || r.name.starts_with(&format!("{name}#"))),
                "statement {name} has no sample in sql::catalog"
            );
        }
    }
}
