//! Rows encoded by skyhouse-transform (`TableRow::write_row_binary`,
//! `Encoded`) and written by the batch writer (`ClickHouse::insert_row_binary`)
//! land exactly as the same rows inserted through the typed path (the
//! `clickhouse` client's serializer of the row structs) do, in every table.

use crate::fresh;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::writer::{self, WriterConfig};
use skyhouse_store::{ClickHouse, StoreError};
use skyhouse_transform::{
    table_columns, table_names, AccountRow, DeadLetterRow, Decoder, Encoded, IdentityRow, Rows,
    TableRow, TableSink,
};

/// Every event of the production Jetstream capture, decoded as the indexer
/// does, plus an identity, an account and a dead letter with text that
/// needs escaping.
fn corpus_rows() -> Rows {
    let corpus = include_str!("../../../atproto/testdata/jetstream/expected_v1.jsonl");
    let mut decoder = Decoder::new(Default::default());
    let mut rows = Rows::default();
    for line in corpus.lines().filter(|l| !l.trim().is_empty()) {
        decoder.jetstream(line.as_bytes(), &mut rows);
    }
    rows.push_identity(IdentityRow {
        did: "did:plc:encodedaaaaaaaaaaaaaaaa".into(),
        handle: "encoded.test".into(),
        version: 7,
        indexed_at: 1_714_564_800,
    });
    rows.push_account(AccountRow {
        did: "did:plc:encodedaaaaaaaaaaaaaaaa".into(),
        active: 0,
        status: "takendown".into(),
        version: 8,
        indexed_at: 1_714_564_800,
    });
    rows.push_dead_letter(DeadLetterRow {
        source: "test".into(),
        did: "did:plc:encodedaaaaaaaaaaaaaaaa".into(),
        reason: "tab\there, quote ' and é".into(),
        payload: "{\"a\":\"\\n\"}".into(),
        version: u64::MAX,
        at: 1_714_564_800,
        ..DeadLetterRow::default()
    });
    rows
}

/// The typed path: each table's row structs through the `clickhouse`
/// client's own `RowBinary` serializer.
struct Typed<'a>(&'a ClickHouse);

impl TableSink for Typed<'_> {
    type Error = StoreError;

    async fn insert<R>(&mut self, table: &'static str, rows: &[R]) -> Result<(), StoreError>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite + serde::Serialize + Send + Sync + 'static,
    {
        self.0.insert(table, rows).await
    }
}

async fn migrated(ch: &ClickHouse) {
    Migrator::new(ch, migrate::embedded().expect("m"))
        .up()
        .await
        .expect("up");
}

/// A table's rows as TSV, every column, in a fixed order.
fn dump(db: &skyhouse_testkit::TestDatabase, table: &str) -> String {
    let cols: Vec<&str> = table_columns(table)
        .expect("a table skyhouse writes")
        .iter()
        .map(|(c, _)| *c)
        .collect();
    let list = cols.join(", ");
    db.query(&format!(
        "SELECT {list} FROM {}.{table} ORDER BY {list} FORMAT TabSeparated",
        db.name()
    ))
}

#[tokio::test]
async fn encoded_rows_land_as_the_typed_rows_do() {
    let rows = corpus_rows();
    for t in [
        "records",
        "posts",
        "likes",
        "follows",
        "identities",
        "accounts",
    ] {
        let n = match t {
            "records" => rows.records.len(),
            "posts" => rows.posts.len(),
            "likes" => rows.likes.len(),
            "follows" => rows.follows.len(),
            "identities" => rows.identities.len(),
            _ => rows.accounts.len(),
        };
        assert!(n > 0, "the corpus gives rows of {t}");
    }
    // Each row's encoded size is what it says.
    for r in &rows.posts {
        let mut out = Vec::new();
        r.write_row_binary(&mut out);
        assert_eq!(out.len(), r.encoded_len());
    }

    let (typed_db, typed) = fresh("encoded_typed");
    let (encoded_db, encoded) = fresh("encoded_rowbinary");
    migrated(&typed).await;
    migrated(&encoded).await;

    rows.drain_into(&mut Typed(&typed))
        .await
        .expect("typed insert");
    let mut enc = Encoded::default();
    enc.add(&rows);
    assert_eq!(enc.len(), rows.len());
    assert_eq!(enc.bytes(), rows.approx_bytes());
    let ack = writer::write_encoded(&encoded, &WriterConfig::default(), enc, 3u64)
        .await
        .expect("encoded insert");
    assert_eq!((ack.upto, ack.rows, ack.dead_lettered), (3, rows.len(), 0));

    let mut compared = 0;
    for table in table_names() {
        let (a, b) = (dump(&typed_db, table), dump(&encoded_db, table));
        assert_eq!(a, b, "table {table}");
        compared += usize::from(!a.is_empty());
    }
    assert!(compared >= 6, "{compared} tables held rows");
}
