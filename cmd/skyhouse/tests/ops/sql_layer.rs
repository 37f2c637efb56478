//! One ClickHouse layer: no crate but pkg/store writes SQL or reaches the
//! ClickHouse client. Every statement lives in pkg/store/queries/*.sql, is
//! sent through a typed function of pkg/store (with its timeouts and error
//! classification) and is checked on 18.16 and current ClickHouse by the
//! store's catalog tests. Tests may write SQL (they inspect the server).

use std::path::{Path, PathBuf};

use crate::util::{read, root};

/// Rust files of shipped code and examples/benches outside pkg/store and the testkit.
fn sources(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut dirs = vec![root.join("cmd"), root.join("pkg")];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .to_string_lossy()
                .to_string();
            if rel.starts_with("pkg/store") || rel.starts_with("pkg/testkit") {
                continue;
            }
            if path.is_dir() {
                let name = e.file_name();
                // Integration tests may write SQL; target/ and fixtures are not code.
                if name != "tests" && name != "target" && name != "testdata" {
                    dirs.push(path);
                }
            } else if rel.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// What in a line of code means SQL or the raw client.
fn offence(line: &str) -> Option<&'static str> {
    let code = line.trim_start();
    if code.starts_with("//") {
        return None;
    }
    let upper = code.to_ascii_uppercase();
    let in_string = |kw: &str| {
        // The keyword inside a string literal (after a quote on the line).
        upper.find(kw).is_some_and(|i| upper[..i].contains('"'))
    };
    if in_string("SELECT ") && upper.contains(" FROM ") {
        return Some("a SELECT statement");
    }
    for (kw, what) in [
        ("INSERT INTO", "an INSERT statement"),
        ("ALTER TABLE", "an ALTER statement"),
        ("OPTIMIZE TABLE", "an OPTIMIZE statement"),
        ("CREATE TABLE", "a CREATE statement"),
        ("CREATE DATABASE", "a CREATE statement"),
        ("DROP TABLE", "a DROP statement"),
        ("DROP DATABASE", "a DROP statement"),
        ("TRUNCATE TABLE", "a TRUNCATE statement"),
    ] {
        if in_string(kw) {
            return Some(what);
        }
    }
    for (call, what) in [
        (".client()", "the raw ClickHouse client"),
        (".in_database()", "the raw ClickHouse client"),
        ("query_raw(", "the raw ClickHouse client"),
        ("clickhouse::Client", "the raw ClickHouse client"),
    ] {
        if code.contains(call) {
            return Some(what);
        }
    }
    None
}

#[test]
fn no_crate_but_the_store_writes_sql() {
    let root = root();
    let mut found = Vec::new();
    let files = sources(&root);
    assert!(files.len() > 50, "only {} source files found", files.len());
    for path in files {
        let rel = path
            .strip_prefix(&root)
            .unwrap_or(&path)
            .to_string_lossy()
            .to_string();
        for (i, line) in read(&path).lines().enumerate() {
            if let Some(what) = offence(line) {
                found.push(format!("{rel}:{}: {what}: {}", i + 1, line.trim()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "SQL outside pkg/store (move it into a typed function there, SQL in pkg/store/queries/):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_check_sees_what_it_forbids() {
    assert!(offence(r#"let q = format!("SELECT did FROM {db}.posts");"#).is_some());
    assert!(offence(r#"    "INSERT INTO {db}.api_keys VALUES""#).is_some());
    assert!(offence("let c = ch.client().query(sql);").is_some());
    assert!(offence("/// reads `SELECT x FROM y` once").is_none());
    assert!(offence(r#"bad_request("body must be {\"query\": \"SELECT …\"}")"#).is_none());
}
