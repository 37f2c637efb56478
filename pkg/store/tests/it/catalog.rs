//! Every statement the store sends, rendered exactly as sent (with sample
//! values), runs on ClickHouse 18.16 after the migrations. The chdb test
//! (tests/chdb.rs) runs the same catalog on current ClickHouse.

use crate::fresh;
use skyhouse_store::migrate::{self, Migrator};

#[tokio::test]
async fn every_statement_runs_on_this_server() {
    let (db, ch) = fresh("catalog");
    Migrator::new(&ch, migrate::embedded().expect("migrations"))
        .up()
        .await
        .expect("up");
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
