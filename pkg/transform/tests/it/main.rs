//! Integration tests for skyhouse-transform: real network records (the
//! Jetstream capture and the repository CARs of skyhouse-atproto's
//! `testdata/`, see its PROVENANCE.md), one test per record type, and
//! properties over arbitrary operations.

mod cars;
mod corpus;
mod props;
mod records;

use skyhouse_atproto::cid::CODEC_DAG_CBOR;
use skyhouse_atproto::{cbor, json};
use skyhouse_transform::{apply, Action, Cid, Op, Rows, Value};

/// A file under skyhouse-atproto's `testdata/`.
pub fn atproto_testdata(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../atproto/testdata")
        .join(rel)
}

/// `2026-07-04T14:38:08Z`, the capture's time.
pub const NOW: u32 = 1_783_175_888;
/// A rev-like version.
pub const VERSION: u64 = 7_000_000_000_000_000;
/// The author of hand-written records.
pub const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

/// A lex-JSON record as a data-model value.
pub fn value(json: serde_json::Value) -> Value<'static> {
    json::from_lex_json(&json).expect("valid lex-JSON")
}

/// The CID a record would have in a repository.
pub fn cid_of(v: &Value<'_>) -> Cid {
    Cid::compute(CODEC_DAG_CBOR, &cbor::encode(v))
}

/// Apply one create of a lex-JSON record by [`DID`].
pub fn create(collection: &str, rkey: &str, record: serde_json::Value) -> Rows {
    let v = value(record);
    let mut rows = Rows::default();
    apply(
        &Op {
            did: DID,
            collection,
            rkey,
            action: Action::Create,
            cid: Some(cid_of(&v)),
            record: Some(&v),
            version: VERSION,
            indexed_at: NOW,
        },
        &mut rows,
    );
    rows
}
