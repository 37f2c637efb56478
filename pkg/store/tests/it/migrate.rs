//! Every migration up, down and up again on the real server; checksums;
//! version gating; idempotent up.

use crate::fresh;
use skyhouse_store::migrate::{self, Migrator, State};

fn tables(db: &skyhouse_testkit::TestDatabase) -> Vec<String> {
    db.query(&format!(
        "SELECT name FROM system.tables WHERE database = '{}' ORDER BY name",
        db.name()
    ))
    .lines()
    .map(str::to_string)
    .collect()
}

#[tokio::test]
async fn every_migration_up_down_up() {
    let (db, ch) = fresh("migrate_up_down_up");
    let all = migrate::embedded().expect("migrations");
    let m = Migrator::new(&ch, all.clone());
    let after_up = m.up().await.expect("up");
    let server = ch.server_version().await.expect("version");
    for s in &after_up {
        let gated = all
            .iter()
            .find(|x| x.version == s.version)
            .and_then(|x| x.min_server_version);
        let want = if gated.is_some_and(|g| server < g) {
            State::Skipped
        } else {
            State::Applied
        };
        assert_eq!(s.state, want, "{s:?}");
    }
    let with_all = tables(&db);
    assert!(with_all.contains(&"records".to_string()), "{with_all:?}");
    // Idempotent: a second up changes nothing.
    assert_eq!(m.up().await.expect("up again"), after_up);
    assert_eq!(tables(&db), with_all);
    // Down every migration, newest first: only the bookkeeping table remains.
    let after_down = m.down(all.len()).await.expect("down");
    assert!(
        after_down.iter().all(|s| s.state == State::Pending),
        "{after_down:?}"
    );
    assert_eq!(tables(&db), vec!["schema_migrations".to_string()]);
    // And up again gives the same tables.
    m.up().await.expect("up again");
    assert_eq!(tables(&db), with_all);
    println!(
        "{} migrations, {} tables, server {server}",
        all.len(),
        with_all.len()
    );
}

#[tokio::test]
async fn an_edited_applied_migration_is_an_error() {
    let (_db, ch) = fresh("migrate_checksum");
    let mut all = migrate::embedded().expect("migrations");
    Migrator::new(&ch, all.clone()).up().await.expect("up");
    all[0].up.push_str("\n-- edited\n");
    all[0].checksum = "0".repeat(64);
    let e = Migrator::new(&ch, all).up().await.expect_err("checksum");
    let msg = e.to_string();
    assert!(
        msg.contains("0001_core") && msg.contains("checksum"),
        "{msg}"
    );
}

#[tokio::test]
async fn newer_server_only_migrations_are_recorded_as_skipped() {
    let (db, ch) = fresh("migrate_gate");
    let mut all = migrate::embedded().expect("migrations");
    let next = all.last().expect("one").version + 1;
    all.push(migrate::Migration {
        version: next,
        name: "future_only".into(),
        up: "-- min_server_version: 999.1\nCREATE TABLE IF NOT EXISTS {db}.future (x UInt8) ENGINE = Memory;\n".into(),
        down: "DROP TABLE IF EXISTS {db}.future;\n".into(),
        min_server_version: Some(migrate::ServerVersion(999, 1, 0)),
        checksum: "f".repeat(64),
    });
    let status = Migrator::new(&ch, all).up().await.expect("up");
    let last = status.last().expect("status");
    assert_eq!(last.state, State::Skipped);
    assert!(last.note.contains("999.1.0"), "{last:?}");
    assert!(!tables(&db).contains(&"future".to_string()));
}

#[tokio::test]
async fn a_migration_interrupted_after_its_column_changes_runs_again() {
    // Its ALTERs ran, its bookkeeping row was never written (the server
    // restarted under the connection, ^C): the next `up` runs it again from
    // its first statement. ClickHouse 18.16 has no ADD COLUMN IF NOT EXISTS.
    let (db, ch) = fresh("migrate_interrupted");
    let all = migrate::embedded().expect("migrations");
    let m = Migrator::new(&ch, all.clone());
    let applied = m.up().await.expect("up");
    // The newest migration with column changes, as if interrupted after
    // them, and every later one, not run yet (an interrupted migration is
    // the newest applied).
    let from = all
        .iter()
        .rposition(|m| m.up.contains("ADD COLUMN"))
        .expect("a migration that adds columns");
    let columns = || {
        db.query(&format!(
            "SELECT table, name, type FROM system.columns WHERE database = '{}' ORDER BY table, name",
            db.name()
        ))
    };
    let before = columns();
    for rerun in &all[from..] {
        // Just above the row `up` wrote (the rerun's row, written later, wins).
        db.query(&format!(
            "INSERT INTO schema_migrations (version, name, checksum, state, server_version, applied_at, seq) \
             SELECT {v}, '{}', '', 'rolled_back', '', now(), max(seq) + 1 FROM schema_migrations WHERE version = {v}",
            rerun.name,
            v = rerun.version
        ));
    }
    let again = m.up().await.expect("up after the interruption");
    assert_eq!(again, applied);
    assert_eq!(columns(), before, "the columns are as after the first up");
}
