//! skyhouse-store against a real ClickHouse 18.16 server started by the testkit.

mod aggregates;
mod catalog;
mod cleanup;
mod counts;
mod encoded;
mod identities;
mod labels;
mod migrate;
mod queries;
mod search;
mod semantics;
mod views;
mod writer;

use skyhouse_store::{ClickHouse, ClickHouseConfig};
use skyhouse_testkit::TestDatabase;

/// A fresh database on the shared test server and a store handle on it.
pub fn fresh(hint: &str) -> (TestDatabase, ClickHouse) {
    let db = skyhouse_testkit::ClickHouse::shared().database(hint);
    let ch = ClickHouse::new(ClickHouseConfig::local(
        &skyhouse_testkit::ClickHouse::shared().http_url(),
        db.name(),
    ))
    .expect("config");
    (db, ch)
}

/// Migrate `ch` down to just before migration `version` (it and every
/// later one).
pub async fn down_to_before(ch: &ClickHouse, version: u32) {
    use skyhouse_store::migrate::{embedded, Migrator};
    let all = embedded().expect("migrations");
    let since = all.iter().filter(|m| m.version >= version).count();
    Migrator::new(ch, all).down(since).await.expect("down");
}

/// [`fresh`], with every migration run.
pub async fn migrated(hint: &str) -> (TestDatabase, ClickHouse) {
    let (db, ch) = fresh(hint);
    use skyhouse_store::migrate::{embedded, Migrator};
    Migrator::new(&ch, embedded().expect("migrations"))
        .up()
        .await
        .expect("up");
    (db, ch)
}
