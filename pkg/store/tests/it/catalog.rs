//! Every statement the store sends, rendered exactly as sent (with sample
//! values), runs on ClickHouse 18.16 after the migrations. The chdb test
//! (tests/chdb.rs) runs the same catalog on current ClickHouse.

use crate::fresh;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::{admin, ClickHouse, ClickHouseConfig};

#[tokio::test]
async fn every_statement_runs_on_this_server() {
    let (db, ch) = fresh("catalog");
    Migrator::new(&ch, migrate::embedded().expect("migrations"))
        .up()
        .await
        .expect("up");
    // The server creates system.query_log (which the bench diagnostics
    // read) at the first flush of a logged query: the test server's `bench`
    // user has its queries logged (the default user's are not). A query's
    // entry may be queued just after its answer: flush until it is there.
    let bench = ClickHouse::new(ClickHouseConfig {
        user: "bench".into(),
        ..ClickHouseConfig::local(
            &skyhouse_testkit::ClickHouse::shared().http_url(),
            db.name(),
        )
    })
    .expect("bench user");
    for _ in 0..100 {
        admin::running_merges(&bench).await.expect("a logged query");
        admin::flush_logs(&bench).await.expect("flush logs");
        if admin::has_query_log(&bench).await.expect("query log") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let catalog =
        skyhouse_store::sql::catalog(skyhouse_store::sql::Db::single(db.name())).expect("catalog");
    assert!(catalog.len() > 20, "only {} statements", catalog.len());
    let mut failed = Vec::new();
    for r in &catalog {
        if let Err(e) = db.try_query(&r.sql) {
            failed.push(format!("{}: {}", r.name, skyhouse_store::one_line(&e)));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
