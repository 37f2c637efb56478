//! The guarantees of SPEC §3 on the real server: replays change nothing,
//! deletes delete (even when they arrive first), and the newest version wins
//! between backfill and live rows in any order.

use crate::migrated;
use skyhouse_atproto::cbor::Value;
use skyhouse_atproto::json::from_lex_json;
use skyhouse_store::writer::{write_batch, WriterConfig};
use skyhouse_store::{ClickHouse, StoreError};
use skyhouse_transform::{apply, Action, Cid, Op, Rows};

const DID: &str = "did:plc:semanticstestaaaaaaaaaaa";

fn like(subject: &str) -> Value<'static> {
    from_lex_json(&serde_json::json!({
        "$type": "app.bsky.feed.like",
        "createdAt": "2024-05-01T12:00:00.000Z",
        "subject": {"uri": subject, "cid": "bafyreigmpffgbpgzfhvml36cecdcz7cn2v7kde2ar7ib4jgol7grj4jyly"}
    }))
    .expect("like")
}

fn cid(n: u8) -> Cid {
    Cid::from_sha256(0x71, [n; 32])
}

/// Rows of one operation.
fn op_rows(rkey: &str, action: Action, version: u64, record: Option<&Value<'_>>) -> Rows {
    let mut rows = Rows::default();
    let c = record.map(|_| cid(version as u8));
    apply(
        &Op {
            did: DID,
            collection: "app.bsky.feed.like",
            rkey,
            action,
            cid: c,
            record,
            version,
            indexed_at: 1_714_564_800,
        },
        &mut rows,
    );
    rows
}

async fn write(ch: &ClickHouse, mut rows: Rows) {
    write_batch(ch, &WriterConfig::default(), &mut rows, 0u64)
        .await
        .expect("write");
}

/// Live likes as `rkey version` lines, from both the raw and the typed table.
fn live(db: &skyhouse_testkit::TestDatabase) -> (String, String) {
    let n = db.name();
    let raw = db.query(&format!(
        "SELECT rkey, version FROM {n}.records FINAL WHERE deleted = 0 AND did = '{DID}' ORDER BY rkey"
    ));
    let typed = db.query(&format!(
        "SELECT rkey, version FROM {n}.likes FINAL WHERE deleted = 0 AND did = '{DID}' ORDER BY rkey"
    ));
    (raw, typed)
}

#[tokio::test]
async fn inserting_the_same_events_twice_changes_nothing() {
    let (db, ch) = migrated("sem_replay").await;
    let rec = like("at://did:plc:x/app.bsky.feed.post/3kabc");
    for _ in 0..2 {
        write(&ch, op_rows("3laaa", Action::Create, 100, Some(&rec))).await;
        write(&ch, op_rows("3lbbb", Action::Create, 101, Some(&rec))).await;
        write(&ch, op_rows("3laaa", Action::Delete, 102, None)).await;
    }
    let (raw, typed) = live(&db);
    assert_eq!(raw, "3lbbb\t101\n");
    assert_eq!(typed, raw);
    let n = db.name();
    // Also after the server merged the parts (FINAL is not doing the work).
    // OPTIMIZE does nothing while a background merge holds some of the
    // parts, so ask again until one part is left (a bounded number of times).
    let parts = format!(
        "SELECT count() FROM system.parts WHERE active AND database = '{n}' AND table = 'records'"
    );
    for _ in 0..50 {
        db.query(&format!("OPTIMIZE TABLE {n}.records FINAL"));
        if db.query(&parts).trim() == "1" {
            break;
        }
    }
    assert_eq!(db.query(&parts).trim(), "1", "records merged into one part");
    let count = db.query(&format!(
        "SELECT count() FROM {n}.records WHERE did = '{DID}'"
    ));
    assert_eq!(count.trim(), "2", "one row per key after merging");
}

#[tokio::test]
async fn create_then_delete_is_invisible() {
    let (db, ch) = migrated("sem_create_delete").await;
    let rec = like("at://did:plc:x/app.bsky.feed.post/3kabc");
    write(&ch, op_rows("3lccc", Action::Create, 200, Some(&rec))).await;
    assert_eq!(live(&db).0, "3lccc\t200\n");
    write(&ch, op_rows("3lccc", Action::Delete, 201, None)).await;
    assert_eq!(live(&db), (String::new(), String::new()));
}

#[tokio::test]
async fn a_delete_arriving_before_its_create_still_deletes() {
    let (db, ch) = migrated("sem_delete_first").await;
    let rec = like("at://did:plc:x/app.bsky.feed.post/3kabc");
    write(&ch, op_rows("3lddd", Action::Delete, 301, None)).await;
    write(&ch, op_rows("3lddd", Action::Create, 300, Some(&rec))).await;
    assert_eq!(live(&db), (String::new(), String::new()));
}

#[tokio::test]
async fn the_newer_version_wins_between_backfill_and_live_in_any_order() {
    let (db, ch) = migrated("sem_backfill_live").await;
    let old = like("at://did:plc:x/app.bsky.feed.post/old");
    let new = like("at://did:plc:x/app.bsky.feed.post/new");
    // Backfill snapshot at rev R=500 vs live update at R+1, both orders.
    write(&ch, op_rows("3leee", Action::Create, 500, Some(&old))).await;
    write(&ch, op_rows("3leee", Action::Update, 501, Some(&new))).await;
    write(&ch, op_rows("3lfff", Action::Update, 501, Some(&new))).await;
    write(&ch, op_rows("3lfff", Action::Create, 500, Some(&old))).await;
    // Live row at R-1 arriving after a backfill at R: the backfill wins.
    write(&ch, op_rows("3lggg", Action::Create, 500, Some(&new))).await;
    write(&ch, op_rows("3lggg", Action::Update, 499, Some(&old))).await;
    let n = db.name();
    let subjects = db.query(&format!(
        "SELECT rkey, subject_uri FROM {n}.likes FINAL WHERE deleted = 0 AND did = '{DID}' ORDER BY rkey"
    ));
    assert_eq!(
        subjects,
        "3leee\tat://did:plc:x/app.bsky.feed.post/new\n\
         3lfff\tat://did:plc:x/app.bsky.feed.post/new\n\
         3lggg\tat://did:plc:x/app.bsky.feed.post/new\n"
    );
}

#[tokio::test]
async fn a_missing_table_fails_the_batch_and_dead_letters_nothing() {
    // A binary newer than the applied migrations: ClickHouse says the
    // table does not exist. That is not the rows' fault: nothing may be
    // dead-lettered or acknowledged; the error says to migrate.
    let (db, ch) = migrated("sem_schema").await;
    let n = db.name();
    db.query(&format!("DROP TABLE {n}.likes"));
    let rec = like("at://did:plc:x/app.bsky.feed.post/3kabc");
    let mut rows = op_rows("3lhhh", Action::Create, 700, Some(&rec));
    let err = write_batch(&ch, &WriterConfig::default(), &mut rows, 42u64)
        .await
        .expect_err("no likes table");
    assert!(matches!(err, StoreError::Schema(_)), "{err}");
    assert!(err.to_string().contains("skyhouse migrate up"), "{err}");
    assert_eq!(
        db.query(&format!("SELECT count() FROM {n}.dead_letters"))
            .trim(),
        "0"
    );
}

#[tokio::test]
async fn only_the_rows_clickhouse_refuses_are_dead_lettered() {
    let (db, ch) = migrated("sem_bisect").await;
    let n = db.name();
    // A table expression that refuses some values (code 395): the same kind
    // of answer a parse or type error gets, for chosen rows only.
    db.query(&format!(
        "ALTER TABLE {n}.likes ADD COLUMN refuse UInt8 MATERIALIZED throwIf(subject_uri LIKE '%/refuse%')"
    ));
    let mut rows = Rows::default();
    let bad = [17usize, 500, 501, 998];
    for i in 0..1000usize {
        let subject = if bad.contains(&i) {
            format!("at://did:plc:x/app.bsky.feed.post/refuse{i}")
        } else {
            format!("at://did:plc:x/app.bsky.feed.post/ok{i}")
        };
        let rec = like(&subject);
        let mut one = op_rows(
            &format!("3l{i:011}"),
            Action::Create,
            1000 + i as u64,
            Some(&rec),
        );
        rows.append(&mut one);
    }
    let ack = write_batch(&ch, &WriterConfig::default(), &mut rows, 7u64)
        .await
        .expect("written");
    assert_eq!(
        (ack.upto, ack.rows, ack.dead_lettered),
        (7, 2000, bad.len())
    );
    // Every good row is there, in both tables; the bad ones only in records
    // (their raw row is valid) and in dead_letters, whole.
    assert_eq!(
        db.query(&format!("SELECT count() FROM {n}.likes FINAL"))
            .trim(),
        "996"
    );
    assert_eq!(
        db.query(&format!("SELECT count() FROM {n}.records FINAL"))
            .trim(),
        "1000"
    );
    let dead = db.query(&format!(
        "SELECT source, rkey FROM {n}.dead_letters ORDER BY rkey"
    ));
    let want: String = bad
        .iter()
        .map(|i| format!("insert:likes\t3l{i:011}\n"))
        .collect();
    assert_eq!(dead, want);
    let reason = db.query(&format!("SELECT any(reason) FROM {n}.dead_letters"));
    assert!(reason.contains("395"), "{reason}");
}

#[tokio::test]
async fn dead_letters_that_cannot_be_stored_fail_the_batch() {
    // If even dead_letters refuses the refused rows, the batch fails
    // instead of acknowledging rows that are nowhere.
    let (db, ch) = migrated("sem_nowhere").await;
    let n = db.name();
    db.query(&format!(
        "ALTER TABLE {n}.likes ADD COLUMN refuse UInt8 MATERIALIZED throwIf(did != '')"
    ));
    db.query(&format!(
        "ALTER TABLE {n}.dead_letters ADD COLUMN refuse UInt8 MATERIALIZED throwIf(source != '')"
    ));
    let rec = like("at://did:plc:x/app.bsky.feed.post/3kabc");
    let mut rows = op_rows("3liii", Action::Create, 701, Some(&rec));
    let err = write_batch(&ch, &WriterConfig::default(), &mut rows, 43u64)
        .await
        .expect_err("nowhere to put them");
    assert!(err.to_string().contains("dead-letter"), "{err}");
}
