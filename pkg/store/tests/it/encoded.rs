//! Rows encoded by skyhouse-transform (`TableRow::write_row_binary`,
//! `Encoded`) and sent with `ClickHouse::insert_row_binary` land exactly as
//! the same rows inserted through the typed path (the `clickhouse` client's
//! serializer) do, in every table.

use crate::fresh;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::writer::{self, WriterConfig};
use skyhouse_store::ClickHouse;
use skyhouse_transform::{
    table_columns, table_names, AccountRow, DeadLetterRow, Decoder, Encoded, IdentityRow, Rows,
    TableRow,
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

    writer::write_batch(&typed, &WriterConfig::default(), &mut rows.clone(), 0u64)
        .await
        .expect("typed insert");
    let mut enc = Encoded::default();
    enc.add(&rows);
    assert_eq!(enc.len(), rows.len());
    assert_eq!(enc.bytes(), rows.approx_bytes());
    for (table, data, _ends) in enc.into_tables() {
        encoded
            .insert_row_binary(table, bytes::Bytes::from(data))
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
    }

    let mut compared = 0;
    for table in table_names() {
        let (a, b) = (dump(&typed_db, table), dump(&encoded_db, table));
        assert_eq!(a, b, "table {table}");
        compared += usize::from(!a.is_empty());
    }
    assert!(compared >= 6, "{compared} tables held rows");
}
