//! The batch writer's loop: limits close batches, acks carry the highest
//! position, and the last batch is flushed when the input closes.

use std::time::Duration;

use crate::migrated;
use skyhouse_atproto::json::from_lex_json;
use skyhouse_store::writer::{self, WriterConfig};
use skyhouse_store::ClickHouse;
use skyhouse_testkit::TestDatabase;
use skyhouse_transform::{apply, Action, Cid, Op, RawRecords, Recycler, Rows};
use tokio::sync::mpsc;

fn follow_rows(n: u64) -> Rows {
    let mut rows = Rows::default();
    add_follow(n, &mut rows);
    rows
}

fn add_follow(n: u64, rows: &mut Rows) {
    let record = from_lex_json(&serde_json::json!({
        "$type": "app.bsky.graph.follow",
        "createdAt": "2024-05-01T12:00:00.000Z",
        "subject": "did:plc:followedaaaaaaaaaaaaaaaa"
    }))
    .expect("follow");
    let rkey = format!("3l{n:011}");
    apply(
        &Op {
            did: "did:plc:writertestaaaaaaaaaaaaa",
            collection: "app.bsky.graph.follow",
            rkey: &rkey,
            action: Action::Create,
            cid: Some(Cid::from_sha256(0x71, [n as u8; 32])),
            record: Some(&record),
            version: n,
            indexed_at: 1_714_564_800,
        },
        rows,
    );
}

/// Run the writer over `messages` until its input closes: each ack's
/// (position, rows).
async fn write_all(
    ch: &ClickHouse,
    cfg: WriterConfig,
    messages: Vec<(Rows, u64)>,
) -> Vec<(u64, usize)> {
    let (tx, rx) = mpsc::channel(16);
    let (ack_tx, mut acks) = mpsc::channel(16);
    let task = tokio::spawn(writer::run(ch.clone(), cfg, rx, ack_tx));
    for m in messages {
        tx.send(m).await.expect("send");
    }
    drop(tx);
    task.await.expect("join").expect("writer");
    let mut got = Vec::new();
    while let Some(a) = acks.recv().await {
        got.push((a.upto, a.rows));
    }
    got
}

/// The live follows of `db`.
fn live_follows(db: &TestDatabase) -> String {
    let n = db.name();
    db.query(&format!(
        "SELECT count() FROM {n}.follows FINAL WHERE deleted = 0"
    ))
    .trim()
    .to_owned()
}

#[tokio::test]
async fn rows_kept_encoded_are_written_and_their_buffers_given_back_to_the_producer() {
    let (db, ch) = migrated("writer_recycle").await;
    // Rows as the indexer's decode task makes them, all made before any is
    // sent (so none takes a buffer another gave back).
    let recycler = Recycler::default();
    let messages = (1..=3u64)
        .map(|n| {
            let mut rows = Rows::for_writer(RawRecords::All, None);
            rows.recycle_via(&recycler);
            add_follow(n, &mut rows);
            (rows, n)
        })
        .collect();
    let got = write_all(&ch, WriterConfig::default(), messages).await;
    assert_eq!(got, vec![(3, 6)]);
    // The three messages' buffers, copied into the batch, came back.
    assert_eq!(recycler.kept(), 3);
    assert_eq!(live_follows(&db), "3");
}

#[tokio::test]
async fn batches_close_on_rows_and_on_close_and_ack_the_highest_position() {
    let (db, ch) = migrated("writer_rows").await;
    // Each op gives 2 rows (records + follows): close every 4 rows = 2 ops.
    let cfg = WriterConfig {
        max_rows: 4,
        max_age: Duration::from_secs(3600),
        ..WriterConfig::default()
    };
    let messages = [(1u64, 10u64), (2, 30), (3, 20), (4, 25), (5, 40)]
        .into_iter()
        .map(|(n, pos)| (follow_rows(n), pos))
        .collect();
    let got = write_all(&ch, cfg, messages).await;
    assert_eq!(got, vec![(30, 4), (25, 4), (40, 2)]);
    assert_eq!(live_follows(&db), "5");
}

#[tokio::test]
async fn a_batch_closes_on_age_while_the_input_stays_open() {
    let (db, ch) = migrated("writer_age").await;
    let (tx, rx) = mpsc::channel(16);
    let (ack_tx, mut acks) = mpsc::channel(16);
    let cfg = WriterConfig {
        max_age: Duration::from_millis(50),
        ..WriterConfig::default()
    };
    let task = tokio::spawn(writer::run(ch.clone(), cfg, rx, ack_tx));
    tx.send((follow_rows(7), 7u64)).await.expect("send");
    let ack = tokio::time::timeout(Duration::from_secs(10), acks.recv())
        .await
        .expect("ack in time")
        .expect("ack");
    assert_eq!((ack.upto, ack.rows), (7, 2));
    let n = db.name();
    assert_eq!(
        db.query(&format!("SELECT count() FROM {n}.records")).trim(),
        "1"
    );
    drop(tx);
    task.await.expect("join").expect("writer");
}

#[tokio::test]
async fn sequential_tables_write_the_same_rows() {
    let (db, ch) = migrated("writer_sequential").await;
    let cfg = WriterConfig {
        concurrent_tables: false,
        ..WriterConfig::default()
    };
    let mut rows = Rows::default();
    for n in 1..=3 {
        rows.append(&mut follow_rows(n));
    }
    let ack = writer::write_batch(&ch, &cfg, &mut rows, 9u64)
        .await
        .expect("write");
    assert_eq!((ack.upto, ack.rows, ack.dead_lettered), (9, 6, 0));
    assert!(rows.is_empty());
    let n = db.name();
    for table in ["records", "follows"] {
        assert_eq!(
            db.query(&format!(
                "SELECT count() FROM {n}.{table} FINAL WHERE deleted = 0"
            ))
            .trim(),
            "3",
            "{table}"
        );
    }
}
