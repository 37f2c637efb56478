//! The batch writer's loop: limits close batches, acks carry the highest
//! position, and the last batch is flushed when the input closes.

use std::time::Duration;

use crate::fresh;
use skyhouse_atproto::json::from_lex_json;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::writer::{self, WriterConfig};
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

#[tokio::test]
async fn rows_kept_encoded_are_written_and_their_buffers_given_back_to_the_producer() {
    let (db, ch) = fresh("writer_recycle");
    Migrator::new(&ch, migrate::embedded().expect("m"))
        .up()
        .await
        .expect("up");
    let (tx, rx) = mpsc::channel(16);
    let (ack_tx, mut acks) = mpsc::channel(16);
    let task = tokio::spawn(writer::run(ch.clone(), WriterConfig::default(), rx, ack_tx));
    // Rows as the indexer's decode task makes them, all made before any is
    // sent (so none takes a buffer another gave back).
    let recycler = Recycler::default();
    let messages: Vec<Rows> = (1..=3u64)
        .map(|n| {
            let mut rows = Rows::for_writer(RawRecords::All, None);
            rows.recycle_via(&recycler);
            add_follow(n, &mut rows);
            rows
        })
        .collect();
    for (n, rows) in (1..=3u64).zip(messages) {
        tx.send((rows, n)).await.expect("send");
    }
    drop(tx);
    task.await.expect("join").expect("writer");
    let mut got = Vec::new();
    while let Some(a) = acks.recv().await {
        got.push((a.upto, a.rows));
    }
    assert_eq!(got, vec![(3, 6)]);
    // The three messages' buffers, copied into the batch, came back.
    assert_eq!(recycler.kept(), 3);
    let n = db.name();
    assert_eq!(
        db.query(&format!(
            "SELECT count() FROM {n}.follows FINAL WHERE deleted = 0"
        ))
        .trim(),
        "3"
    );
}

#[tokio::test]
async fn batches_close_on_rows_and_on_close_and_ack_the_highest_position() {
    let (db, ch) = fresh("writer_rows");
    Migrator::new(&ch, migrate::embedded().expect("m"))
        .up()
        .await
        .expect("up");
    let (tx, rx) = mpsc::channel(16);
    let (ack_tx, mut acks) = mpsc::channel(16);
    // Each op gives 2 rows (records + follows): close every 4 rows = 2 ops.
    let cfg = WriterConfig {
        max_rows: 4,
        max_age: Duration::from_secs(3600),
        ..WriterConfig::default()
    };
    let task = tokio::spawn(writer::run(ch.clone(), cfg, rx, ack_tx));
    for (n, pos) in [(1u64, 10u64), (2, 30), (3, 20), (4, 25), (5, 40)] {
        tx.send((follow_rows(n), pos)).await.expect("send");
    }
    drop(tx);
    task.await.expect("join").expect("writer");
    let mut got = Vec::new();
    while let Some(a) = acks.recv().await {
        got.push((a.upto, a.rows));
    }
    assert_eq!(got, vec![(30, 4), (25, 4), (40, 2)]);
    let n = db.name();
    assert_eq!(
        db.query(&format!(
            "SELECT count() FROM {n}.follows FINAL WHERE deleted = 0"
        ))
        .trim(),
        "5"
    );
}

#[tokio::test]
async fn a_batch_closes_on_age_while_the_input_stays_open() {
    let (db, ch) = fresh("writer_age");
    Migrator::new(&ch, migrate::embedded().expect("m"))
        .up()
        .await
        .expect("up");
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
    let (db, ch) = fresh("writer_sequential");
    Migrator::new(&ch, migrate::embedded().expect("m"))
        .up()
        .await
        .expect("up");
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
