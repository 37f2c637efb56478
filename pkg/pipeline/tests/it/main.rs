//! The indexer pipeline against real ClickHouse 18.16 and Redis (testkit),
//! replaying the real relay capture and the matching production Jetstream
//! output (`pkg/sources/testdata`).
#![allow(clippy::unwrap_used)] // test helpers: a panic is the failure report

mod errors;
mod identity;
mod replay;
mod verify;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use skyhouse_pipeline::{IndexerConfig, Summary};
use skyhouse_sources::{CancellationToken, SourceConfig, SourceKind};
use skyhouse_state::State;
use skyhouse_store::migrate;
use skyhouse_store::{ClickHouse, ClickHouseConfig};
use skyhouse_testkit::TestDatabase;

pub fn testdata(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../sources/testdata")
        .join(name)
}

pub fn file_url(name: &str) -> String {
    format!(
        "file://{}",
        testdata(name).canonicalize().unwrap().display()
    )
}

/// A record's key: (did, collection, rkey).
pub type Key = (String, String, String);
/// Current records: key → (cid, deleted).
pub type Records = BTreeMap<Key, (String, u8)>;

/// A fresh, migrated database on the shared test server.
pub async fn fresh(hint: &str) -> (TestDatabase, ClickHouse) {
    skyhouse_telemetry::init_logging();
    let server = skyhouse_testkit::ClickHouse::shared();
    let db = server.database(hint);
    let ch = ClickHouse::new(ClickHouseConfig::local(&server.http_url(), db.name())).unwrap();
    migrate::up_embedded(&ch).await.unwrap();
    (db, ch)
}

/// Redis state under a fresh prefix.
pub async fn state(hint: &str) -> State {
    let redis = skyhouse_testkit::Redis::shared();
    State::connect(&redis.url(), &redis.key_prefix(hint))
        .await
        .unwrap()
}

/// Index `url` (a file:// capture) to the end.
pub async fn index(
    kind: SourceKind,
    url: &str,
    ch: &ClickHouse,
    state: &State,
    start: Option<i64>,
) -> Summary {
    let mut source = SourceConfig::new(kind);
    source.endpoints = vec![url.to_owned()];
    let mut cfg = IndexerConfig::new(source, format!("cursor:{}:test", kind.as_str()));
    cfg.start_cursor = start;
    cfg.writer.max_age = Duration::from_millis(100);
    skyhouse_pipeline::run(
        cfg,
        ch.clone(),
        state.clone(),
        None,
        CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// Current state of `records`: (did, collection, rkey) → (cid, deleted).
pub fn records(db: &TestDatabase) -> Records {
    db.query(
        "SELECT did, collection, rkey, cid, deleted FROM records FINAL ORDER BY did, collection, rkey FORMAT TSV",
    )
    .lines()
    .map(|l| {
        let f: Vec<&str> = l.split('\t').collect();
        (
            (f[0].to_owned(), f[1].to_owned(), f[2].to_owned()),
            (f[3].to_owned(), f[4].parse().unwrap()),
        )
    })
    .collect()
}

/// The final state the production Jetstream output describes: the newest
/// operation (by rev) of each key in the default collections (app.bsky.*,
/// chat.bsky.*); deletes as (`""`, 1).
pub fn expected_from_jetstream() -> Records {
    let text = std::fs::read_to_string(testdata("corpus.jsonl")).unwrap();
    let mut newest: BTreeMap<Key, (String, (String, u8))> = BTreeMap::new();
    for line in text.lines() {
        let e: serde_json::Value = serde_json::from_str(line).unwrap();
        if e["kind"] != "commit" {
            continue;
        }
        let c = &e["commit"];
        let key = (
            e["did"].as_str().unwrap().to_owned(),
            c["collection"].as_str().unwrap().to_owned(),
            c["rkey"].as_str().unwrap().to_owned(),
        );
        if !key.1.starts_with("app.bsky.") && !key.1.starts_with("chat.bsky.") {
            continue;
        }
        let rev = c["rev"].as_str().unwrap().to_owned();
        let value = if c["operation"] == "delete" {
            (String::new(), 1)
        } else {
            (c["cid"].as_str().unwrap().to_owned(), 0)
        };
        match newest.get(&key) {
            Some((r, _)) if *r >= rev => {}
            _ => {
                newest.insert(key, (rev, value));
            }
        }
    }
    newest.into_iter().map(|(k, (_, v))| (k, v)).collect()
}

/// Assert two record maps are equal, printing only the differences.
#[track_caller]
pub fn assert_same_records(got: &Records, want: &Records) {
    let mut diffs = Vec::new();
    for (k, v) in want {
        match got.get(k) {
            Some(g) if g == v => {}
            other => diffs.push(format!("{k:?}: want {v:?}, got {other:?}")),
        }
    }
    for (k, v) in got {
        if !want.contains_key(k) {
            diffs.push(format!("{k:?}: unexpected {v:?}"));
        }
    }
    assert!(
        diffs.is_empty(),
        "{} of {} keys differ:\n{}",
        diffs.len(),
        want.len(),
        diffs[..diffs.len().min(20)].join("\n")
    );
}

/// `--verify` keys from the real DID documents of the capture's accounts
/// (`pkg/atproto/testdata/jetstream/did_docs.json.zst`).
#[derive(Debug)]
pub struct FixtureKeys {
    pub docs: BTreeMap<String, skyhouse_atproto::crypto::DidDocument>,
    /// Answer every DID with this DID's key instead (a wrong key).
    pub impostor: Option<String>,
    pub lookups: std::sync::atomic::AtomicUsize,
}

impl FixtureKeys {
    pub fn load(impostor: Option<&str>) -> Self {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../atproto/testdata/jetstream/did_docs.json.zst");
        let bytes = zstd::bulk::decompress(&std::fs::read(path).unwrap(), 64 << 20).unwrap();
        let map: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes).unwrap();
        let docs = map
            .iter()
            .map(|(did, doc)| {
                let json = serde_json::to_vec(doc).unwrap();
                (
                    did.clone(),
                    skyhouse_atproto::crypto::DidDocument::from_json(&json).unwrap(),
                )
            })
            .collect();
        FixtureKeys {
            docs,
            impostor: impostor.map(str::to_owned),
            lookups: Default::default(),
        }
    }
}

impl skyhouse_pipeline::Keys for FixtureKeys {
    fn signing_key<'a>(&'a self, did: &'a str, _fresh: bool) -> skyhouse_pipeline::KeyFuture<'a> {
        self.lookups
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let did = self.impostor.as_deref().unwrap_or(did);
        let key = self
            .docs
            .get(did)
            .ok_or_else(|| format!("{did}: no document"))
            .and_then(|d| d.signing_key().map_err(|e| e.to_string()))
            .map_err(|message| skyhouse_pipeline::KeyError {
                message,
                retriable: false,
            });
        Box::pin(async move { key })
    }
}
