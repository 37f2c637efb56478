//! `skyhouse migrate` run as a user would, against a real ClickHouse 18.16.

use std::process::{Command, Output};

fn skyhouse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .args(args)
        .env_remove("CLICKHOUSE_ADDRESS")
        .env_remove("CLICKHOUSE_CLUSTER")
        .env_remove("CLICKHOUSE_DATABASE")
        .output()
        .expect("run skyhouse")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn migrate_up_version_down_against_a_real_server() {
    let server = skyhouse_testkit::ClickHouse::shared();
    let db = server.database("cli_migrate");
    let url = server.http_url();
    let base = [
        "--clickhouse-address",
        url.as_str(),
        "--database",
        db.name(),
    ];
    let run = |cmd: &[&str]| {
        let mut args = vec!["migrate"];
        args.extend_from_slice(cmd);
        args.extend_from_slice(&base);
        skyhouse(&args)
    };
    let up = run(&["up"]);
    assert!(up.status.success(), "{}", text(&up));
    assert!(text(&up).contains("0001_core\tapplied"), "{}", text(&up));
    assert!(
        text(&up).contains("0002_typed_tables\tapplied"),
        "{}",
        text(&up)
    );
    let tables = db.query(&format!(
        "SELECT count() FROM system.tables WHERE database = '{}'",
        db.name()
    ));
    assert!(
        tables.trim().parse::<u32>().expect("count") > 20,
        "{tables}"
    );
    // Idempotent.
    assert!(run(&["up"]).status.success());
    let version = run(&["version"]);
    // Every migration file is listed, and the version after `up` is the newest one 18.16 could
    // apply (a newer file may be gated on a newer server and skipped).
    let files: Vec<String> =
        std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../../migrations"))
            .expect("migrations dir")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| n.strip_suffix(".up.sql").map(str::to_owned))
            .collect();
    for name in &files {
        assert!(
            text(&version).contains(&format!("{name}\t")),
            "{name}: {}",
            text(&version)
        );
    }
    let newest_applied = text(&version)
        .lines()
        .filter_map(|l| l.strip_suffix("\tapplied"))
        .max()
        .map(str::to_owned)
        .expect("an applied migration");
    assert!(
        text(&version).contains(&format!("version: {}", &newest_applied[..4])),
        "{}",
        text(&version)
    );
    // 18.16 is too old for the skip-index migration: recorded and reported as skipped.
    assert!(
        text(&version).contains("0003_post_search_indexes\tskipped (needs ClickHouse >= 20.1.0)"),
        "{}",
        text(&version)
    );
    let schema = run(&["dump-schema"]);
    assert!(
        text(&schema).contains("ReplacingMergeTree(version)"),
        "{}",
        text(&schema)
    );
    // Down one, then everything.
    let down = {
        let mut args = vec!["migrate", "down", "1"];
        args.extend_from_slice(&base);
        skyhouse(&args)
    };
    // The newest migration (applied or skipped) is rolled back to pending; the version is
    // below it.
    let newest = files.iter().max().expect("a migration");
    assert!(
        text(&down).contains(&format!("{newest}\tpending")),
        "{}",
        text(&down)
    );
    assert!(
        !text(&down).contains(&format!("version: {}", &newest[..4])),
        "{}",
        text(&down)
    );
    // --all: every migration rolled back, only the bookkeeping table left.
    let all = run(&["down", "--all"]);
    assert!(all.status.success(), "{}", text(&all));
    assert!(text(&all).contains("0001_core\tpending"), "{}", text(&all));
    assert!(text(&all).contains("version: none"), "{}", text(&all));
    assert_eq!(
        db.query(&format!(
            "SELECT name FROM system.tables WHERE database = '{}'",
            db.name()
        )),
        "schema_migrations\n"
    );
    // And up again from nothing.
    let again = run(&["up"]);
    assert!(again.status.success(), "{}", text(&again));
    assert!(
        text(&again).contains("0001_core\tapplied"),
        "{}",
        text(&again)
    );
}

#[test]
fn bad_flags_are_one_line_errors_naming_the_flag() {
    let out = skyhouse(&["migrate", "up", "--clickhouse-address", "ftp://nope"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("--clickhouse-address") && err.contains("ftp://nope"),
        "{err}"
    );
    let out = skyhouse(&["migrate", "up", "--database", "bad-name;drop"]);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        !out.status.success() && err.contains("database name"),
        "{err}"
    );
}

#[test]
fn create_writes_the_next_numbered_pair() {
    let dir = std::env::temp_dir().join(format!("skyhouse-migrate-create-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    for f in ["0001_a.up.sql", "0001_a.down.sql"] {
        std::fs::write(dir.join(f), "SELECT 1;\n").expect("write");
    }
    let out = skyhouse(&[
        "migrate",
        "create",
        "add_things",
        "--dir",
        dir.to_str().expect("p"),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.join("0002_add_things.up.sql").exists());
    assert!(dir.join("0002_add_things.down.sql").exists());
    let bad = skyhouse(&[
        "migrate",
        "create",
        "Bad Name",
        "--dir",
        dir.to_str().expect("p"),
    ]);
    assert!(!bad.status.success());
    std::fs::remove_dir_all(&dir).ok();
}
