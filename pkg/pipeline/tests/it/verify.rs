//! `--verify`: real commits verify against their real DID documents; with a
//! wrong key nothing of theirs is stored and each is dead-lettered.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use skyhouse_pipeline::IndexerConfig;
use skyhouse_sources::{CancellationToken, SourceConfig, SourceKind};

use crate::{
    assert_same_records, expected_from_jetstream, file_url, fresh, records, state, FixtureKeys,
};

async fn index_verified(hint: &str, keys: Arc<FixtureKeys>) -> skyhouse_testkit::TestDatabase {
    let (db, ch) = fresh(hint).await;
    let st = state(hint).await;
    let mut source = SourceConfig::new(SourceKind::Firehose);
    source.endpoints = vec![file_url("corpus.frames")];
    let mut cfg = IndexerConfig::new(source, "cursor:verify".into());
    cfg.verify = true;
    cfg.start_cursor = Some(0);
    cfg.writer.max_age = Duration::from_millis(100);
    skyhouse_pipeline::run(cfg, ch, st, Some(keys), CancellationToken::new())
        .await
        .unwrap();
    db
}

#[tokio::test]
async fn real_signatures_verify_and_everything_lands() {
    let keys = Arc::new(FixtureKeys::load(None));
    let db = index_verified("verify_ok", keys.clone()).await;
    assert_same_records(&records(&db), &expected_from_jetstream());
    assert_eq!(db.query("SELECT count() FROM dead_letters"), "0\n");
    assert_eq!(
        keys.lookups.load(Ordering::Relaxed),
        148,
        "one lookup per commit"
    );
}

#[tokio::test]
async fn a_wrong_key_stores_nothing_and_dead_letters_each_commit() {
    // Every DID answered with the key of one account: its own commits verify,
    // everyone else's must not.
    let keys = Arc::new(FixtureKeys::load(Some("did:plc:u4lmvw4wwzaql3z5kcf3r7h4")));
    let db = index_verified("verify_bad", keys.clone()).await;
    let stored = db.query("SELECT DISTINCT did FROM records FORMAT TSV");
    assert_eq!(stored.trim(), "did:plc:u4lmvw4wwzaql3z5kcf3r7h4");
    let dead: usize = db
        .query("SELECT count() FROM dead_letters WHERE source = 'firehose' AND reason LIKE '%signature does not verify%'")
        .trim()
        .parse()
        .unwrap();
    // 148 commits, the impostor's own verify; each other one is refused
    // with the cached key and again with a fresh one: one dead letter each.
    assert_eq!(dead, 148 - own_commits(&db), "dead letters: {dead}");
}

fn own_commits(db: &skyhouse_testkit::TestDatabase) -> usize {
    db.query("SELECT uniqExact(version) FROM records")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn no_key_sets_the_commit_aside_for_a_resync() {
    // Every lookup fails for good (no such document): nothing is stored,
    // each commit is a dead letter and its repository is queued for resync.
    let keys = Arc::new(FixtureKeys::load(Some("did:plc:nobody")));
    let (db, ch) = fresh("verify_nokey").await;
    let st = state("verify_nokey").await;
    let mut source = SourceConfig::new(SourceKind::Firehose);
    source.endpoints = vec![file_url("corpus.frames")];
    let mut cfg = IndexerConfig::new(source, "cursor:verify".into());
    cfg.verify = true;
    cfg.start_cursor = Some(0);
    cfg.writer.max_age = Duration::from_millis(100);
    skyhouse_pipeline::run(cfg, ch, st.clone(), Some(keys), CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(db.query("SELECT count() FROM records"), "0\n");
    assert_eq!(
        db.query("SELECT count() FROM dead_letters WHERE reason LIKE 'signing key%'"),
        "148\n"
    );
    assert_eq!(st.resync_len().await.unwrap(), 148);
}
