//! Pure `Op` → ClickHouse rows: the step between the sources (Jetstream,
//! firehose, backfill) and the batch writer.
//!
//! ```text
//! sources ─► Op ─► apply(op, &mut rows) ─► Rows { records, posts, likes, …, dead_letters } ─► writer
//! ```
//!
//! The live stream's messages (Jetstream JSON events, firehose frames) are
//! turned into `Op`s here too, by [`Decoder`]: it is pure as well (signing
//! keys are passed in, [`Verify`]), and its per-repository chain state lives
//! in the value, so the indexer, the standalone relay and the benches share
//! one decoder without depending on the indexer's wiring. [`CollectionFilter`]
//! is the `--collections` filter it applies, [`OpsTap`] where a caller hands
//! the decoded `records` rows besides ClickHouse (the gRPC relay).
//!
//! [`apply`] never fails and never does I/O. Every operation, of any
//! collection, gives one raw row of `records`. A record of a collection with a
//! typed table ([`Table::for_collection`]: every `app.bsky.*` record type
//! plus `chat.bsky.actor.declaration`) also gives a row of that table:
//!
//! - create / update of a record that fits the lexicon shape the table needs:
//!   the typed row (`deleted = 0`);
//! - delete: a tombstone (`deleted = 1`, the delete's version, same key
//!   columns, content columns empty) in `records` and in the typed table, so
//!   that `ReplacingMergeTree(version)` replaces the live row whatever order
//!   the two arrive in;
//! - create / update of a record that does not fit (a required field missing,
//!   a field of the wrong kind, a bad DID or AT-URI where the table keys on
//!   one, a `$type` naming another collection, a `self`-keyed record under
//!   another key): a row in `dead_letters` whose `reason` names the field,
//!   the raw row in `records` as usual, and a tombstone in the typed table,
//!   so an older valid version of the record (say from a backfill arriving
//!   late) cannot outlive the invalid newer one there.
//!
//! A create or update without a record body, or whose body is not a map, is
//! a dead letter for any collection. See [`Times`] for the time columns.
//!
//! [`RawRecords`] (`--raw-records`) says which `records` rows keep the
//! record's JSON; the row itself is always written.
#![deny(missing_docs)]

mod actor;
mod decode;
mod encoded;
mod feed;
mod filter;
mod graph;
mod labeler;
mod post;
mod rows;
mod shape;
mod time;

pub use decode::{Decoded, Decoder, ResyncReason, Skip, Verify};
pub use encoded::{row_json, table_columns, table_names, Encoded, ReadError, Recycler, TableRows};
pub use filter::{CollectionFilter, DEFAULT_COLLECTIONS};
pub use rows::{
    action_code, AccountRow, ActorStatusRow, BlockRow, ChatDeclarationRow,
    ContentVisibilityDeclarationRow, DeadLetterRow, FeedGeneratorRow, FollowRow, IdentityRow,
    LabelerServiceRow, LikeRow, ListBlockRow, ListItemRow, ListRow, NotificationDeclarationRow,
    PostRow, PostgateRow, ProfileRow, RecordRow, RepostRow, Rows, StarterPackRow, Table, TableRow,
    TableSink, ThreadgateRow, VerificationRow, DEAD_LETTER_SOURCE,
};
pub use skyhouse_atproto::{cbor::Value, frame::Action, Cid};
pub use time::{Times, MAX_FUTURE_SECS};

use rows::Key;
use shape::{Check, Invalid, Loc, Problem};

/// Where decoded record operations go besides ClickHouse: the gRPC relay
/// (`skyhouse_relay`). The indexer calls it from its decode task with each
/// coalesced group, and the backfill worker with each repository's chunk,
/// before they go to the writer; it must not block (copy what it needs into
/// a bounded queue and drop when full), so a slow relay never slows
/// ClickHouse.
///
/// The `records` rows do not say what a row does not need (a create from an
/// update, the record's DAG-CBOR bytes): a caller with a tap asks its
/// [`Rows`] to keep that too ([`Rows::keep_for_tap`]), in [`Rows::tap`].
/// Without a tap nothing more is kept (one branch per operation).
pub trait OpsTap: Send + Sync + std::fmt::Debug {
    /// What the tap wants kept beside the rows.
    fn extras(&self) -> TapExtras {
        TapExtras::Actions
    }

    /// The record operations of one decoded group: `rows.records` (one row
    /// per operation) and `rows.tap` (what each did).
    fn offer(&self, rows: &Rows);
}

/// What a [`Rows`] keeps for an [`OpsTap`] beside the rows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TapExtras {
    /// Nothing (no tap).
    #[default]
    Off,
    /// Each operation's action.
    Actions,
    /// Each operation's action and, when the source carried them (firehose,
    /// backfill), the record's DAG-CBOR bytes.
    ActionsAndCbor,
}

/// What a tap needs of one record operation beyond its `records` row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapOp {
    /// Index of the operation's row in [`Rows::records`].
    pub record: usize,
    /// Create, update or delete, as the source said (a backfilled record is
    /// a create).
    pub action: Action,
    /// The record block's bytes (DAG-CBOR; its CID is their hash), with
    /// [`TapExtras::ActionsAndCbor`] when the source had them.
    pub cbor: Option<Vec<u8>>,
}

/// Which `records` rows keep the record's lex-JSON (`--raw-records`). The
/// row is written either way (its key, version and times: daily stats,
/// resyncs and account cleanups read them); without the JSON its `record`
/// column is `""`. The JSON is about half of the insert's bytes and of
/// ClickHouse's insert CPU, and writing it a tenth of the transform's.
/// Rows kept for an [`OpsTap`] keep the JSON whatever this says (the relay
/// serves it), and a dead letter always carries its record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RawRecords {
    /// Every record (the default).
    #[default]
    All,
    /// Only records of collections without a typed table
    /// ([`Table::for_collection`]): the typed tables hold the rest.
    Untyped,
    /// None.
    None,
}

impl RawRecords {
    /// Every value, as the flag spells it.
    pub const NAMES: &'static [&'static str] = &["all", "untyped", "none"];

    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            RawRecords::All => "all",
            RawRecords::Untyped => "untyped",
            RawRecords::None => "none",
        }
    }

    /// Whether a record of a collection with (`typed`) or without a typed
    /// table keeps its JSON.
    pub fn keeps(self, typed: bool) -> bool {
        match self {
            RawRecords::All => true,
            RawRecords::Untyped => !typed,
            RawRecords::None => false,
        }
    }
}

impl std::str::FromStr for RawRecords {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(RawRecords::All),
            "untyped" => Ok(RawRecords::Untyped),
            "none" => Ok(RawRecords::None),
            other => Err(format!(
                "{other:?} is not one of {}",
                RawRecords::NAMES.join(", ")
            )),
        }
    }
}

impl std::fmt::Display for RawRecords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One repository operation, as every source produces it.
#[derive(Debug, Clone, Copy)]
pub struct Op<'a> {
    /// The repository's DID.
    pub did: &'a str,
    /// The collection NSID.
    pub collection: &'a str,
    /// The record key.
    pub rkey: &'a str,
    /// Create, update or delete.
    pub action: Action,
    /// The record's CID (creates and updates).
    pub cid: Option<Cid>,
    /// The record (creates and updates).
    pub record: Option<&'a Value<'a>>,
    /// The integer value of the commit's `rev` TID (for a backfill, the
    /// snapshot commit's rev): the row version.
    pub version: u64,
    /// When we first saw the operation, Unix seconds.
    pub indexed_at: u32,
}

/// Turn one operation into rows appended to `rows` (see the crate docs).
pub fn apply(op: &Op<'_>, rows: &mut Rows) {
    apply_with_cbor(op, None, rows);
}

/// [`apply`], for a source that has the record's DAG-CBOR bytes (a firehose
/// commit's block, a repository's): a tap that asked for them gets a copy.
pub fn apply_with_cbor(op: &Op<'_>, cbor: Option<&[u8]>, rows: &mut Rows) {
    if rows.tap_extras() != TapExtras::Off {
        rows.push_tap(op.action, cbor);
    }
    let table = Table::for_collection(op.collection);
    if op.action == Action::Delete {
        let key = Key {
            did: op.did,
            rkey: op.rkey,
            cid: "",
            version: op.version,
            deleted: 1,
            times: Times::of_delete(op.indexed_at),
            action: rows::action_code(op.action),
        };
        if let Some(table) = table {
            rows.push_tombstone(table, &key);
        }
        rows.push_record(record_cols(op, &key, ""));
        return;
    }

    let cid = op.cid.as_ref().map(Cid::text_inline);
    let key = Key {
        did: op.did,
        rkey: op.rkey,
        cid: cid.as_ref().map_or("", |c| c.as_str()),
        version: op.version,
        deleted: 0,
        times: Times::of_record(op.record, op.indexed_at),
        action: rows::action_code(op.action),
    };
    if let Err(invalid) = typed(op, table, &key, rows) {
        rows.push_dead_letter(DeadLetterRow {
            source: DEAD_LETTER_SOURCE.to_owned(),
            did: op.did.to_owned(),
            collection: op.collection.to_owned(),
            rkey: op.rkey.to_owned(),
            cid: key.cid.to_owned(),
            version: op.version,
            reason: invalid.to_string(),
            payload: op.record.map(lex_json).unwrap_or_default(),
            at: op.indexed_at,
        });
        if let Some(table) = table {
            rows.push_tombstone(table, &key);
        }
    }
    let keep_json =
        rows.raw_records().keeps(table.is_some()) || rows.tap_extras() != TapExtras::Off;
    match op.record {
        Some(r) if keep_json => {
            with_lex_json(r, |json| rows.push_record(record_cols(op, &key, json)))
        }
        _ => rows.push_record(record_cols(op, &key, "")),
    }
}

/// Check the record and add its typed row, if its collection has a table.
fn typed(op: &Op<'_>, table: Option<Table>, key: &Key<'_>, rows: &mut Rows) -> Check<()> {
    let Some(record) = op.record else {
        return Err(Invalid::new(&Loc::Root, Problem::Missing));
    };
    let Some(map) = record.as_map() else {
        return Err(Invalid::new(
            &Loc::Root,
            Problem::Kind {
                expected: "object",
                found: record.kind(),
            },
        ));
    };
    let Some(table) = table else {
        return Ok(());
    };
    if let Some(t) = map.get("$type") {
        let t = shape::as_str(t, &Loc::Root.key("$type"))?;
        if t.strip_suffix("#main").unwrap_or(t) != op.collection {
            return Err(Invalid::new(
                &Loc::Root.key("$type"),
                Problem::RecordType(t.to_owned()),
            ));
        }
    }
    rows.push_typed(table, map, key)
}

thread_local! {
    /// Reused serialization buffer: the JSON is written here, then copied
    /// once into a string of the exact size (no growth reallocations).
    static JSON_SCRATCH: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Largest scratch buffer kept between calls (a huge record's buffer is dropped).
const JSON_SCRATCH_KEEP: usize = 64 << 10;

/// `f` of the record as lex-JSON, written into a reused buffer.
fn with_lex_json<R>(record: &Value<'_>, f: impl FnOnce(&str) -> R) -> R {
    JSON_SCRATCH.with(|scratch| {
        let mut buf = scratch.borrow_mut();
        buf.clear();
        skyhouse_atproto::json::write_json(record, &mut buf);
        let out = f(buf.as_str());
        if buf.capacity() > JSON_SCRATCH_KEEP {
            *buf = String::new();
        }
        out
    })
}

/// The record as lex-JSON.
fn lex_json(record: &Value<'_>) -> String {
    with_lex_json(record, str::to_owned)
}

/// The `records` row of an operation: `key`'s CID, version and times.
fn record_cols<'a>(op: &Op<'a>, key: &Key<'a>, json: &'a str) -> rows::RecordCols<'a> {
    rows::RecordCols {
        did: op.did,
        collection: op.collection,
        rkey: op.rkey,
        cid: key.cid,
        version: op.version,
        deleted: key.deleted,
        times: key.times,
        record: json,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op<'a>(rkey: &'a str, action: Action) -> Op<'a> {
        Op {
            did: "did:plc:a",
            collection: "app.bsky.feed.like",
            rkey,
            action,
            cid: None,
            record: None,
            version: 1,
            indexed_at: 1,
        }
    }

    #[test]
    fn rows_keep_tap_ops_only_when_asked_and_append_renumbers_them() {
        let mut plain = Rows::default();
        apply_with_cbor(&op("a", Action::Update), Some(b"\xa0"), &mut plain);
        assert!(plain.tap.is_empty(), "no tap, nothing kept");

        let mut actions = Rows::default();
        actions.keep_for_tap(TapExtras::Actions);
        apply_with_cbor(&op("a", Action::Update), Some(b"\xa0"), &mut actions);
        assert_eq!(
            actions.tap,
            [TapOp {
                record: 0,
                action: Action::Update,
                cbor: None
            }]
        );

        let mut full = actions.like();
        assert_eq!(full.tap_extras(), TapExtras::Actions);
        full.keep_for_tap(TapExtras::ActionsAndCbor);
        apply(&op("b", Action::Create), &mut full);
        apply_with_cbor(&op("c", Action::Create), Some(b"\xa0"), &mut full);
        apply(&op("d", Action::Delete), &mut full);
        actions.append(&mut full);
        let got: Vec<(usize, &str, Action, Option<&[u8]>)> = actions
            .tap
            .iter()
            .map(|t| {
                (
                    t.record,
                    actions.records[t.record].rkey.as_str(),
                    t.action,
                    t.cbor.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (0, "a", Action::Update, None),
                (1, "b", Action::Create, None),
                (2, "c", Action::Create, Some(&b"\xa0"[..])),
                (3, "d", Action::Delete, None),
            ]
        );
        actions.clear();
        assert!(actions.tap.is_empty());
    }

    /// A like of `at://did:plc:b/app.bsky.feed.post/3k`.
    fn like_record() -> Value<'static> {
        skyhouse_atproto::json::from_lex_json(&serde_json::json!({
            "$type": "app.bsky.feed.like",
            "createdAt": "2024-05-01T12:00:00.000Z",
            "subject": {"uri": "at://did:plc:b/app.bsky.feed.post/3k", "cid": "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"}
        }))
        .expect("like")
    }

    #[test]
    fn recycled_buffers_come_back_empty_to_the_next_rows_and_encode_the_same() {
        let like = like_record();
        let fill = |rows: &mut Rows, n: usize| {
            let keys: Vec<String> = (0..n).map(|i| format!("3k{i:04}")).collect();
            for rkey in &keys {
                let op = Op {
                    record: Some(&like),
                    ..op(rkey, Action::Create)
                };
                apply(&op, rows);
            }
        };
        let recycler = Recycler::default();
        let mut first = Rows::for_writer(RawRecords::All, None);
        first.recycle_via(&recycler);
        fill(&mut first, 100);
        let mut want = Encoded::default();
        want.add(&first);
        // Made before the first is given back: nothing to take yet.
        let second = first.like();
        assert_eq!(recycler.kept(), 0);
        first.recycle();
        assert_eq!(recycler.kept(), 1);
        // Taken by the next rows, empty, with the first's room.
        let mut third = second.like();
        assert_eq!(recycler.kept(), 0);
        assert!(third.is_empty());
        let room = third.encoded().map(Encoded::capacity).unwrap_or(0);
        assert!(room >= want.bytes(), "{room} < {}", want.bytes());
        fill(&mut third, 100);
        let mut got = Encoded::default();
        got.add(&third);
        assert_eq!(got, want, "recycled buffers hold only the new rows");
        // At most KEEP kept; rows made without a recycler free theirs.
        for _ in 0..Recycler::KEEP + 2 {
            let mut r = Rows::for_writer(RawRecords::All, None);
            r.recycle_via(&recycler);
            fill(&mut r, 1);
            r.recycle();
            let mut extra = Rows::for_writer(RawRecords::All, None);
            fill(&mut extra, 1);
            extra.recycle();
        }
        // The loop's own rows took the buffer given back the round before.
        assert_eq!(recycler.kept(), 1);
        let many: Vec<Rows> = (0..Recycler::KEEP + 2)
            .map(|_| {
                let mut r = Rows::for_writer(RawRecords::All, None);
                r.recycle_via(&recycler);
                fill(&mut r, 1);
                r
            })
            .collect();
        many.into_iter().for_each(Rows::recycle);
        assert_eq!(recycler.kept(), Recycler::KEEP);
        // A burst's buffer is freed, not kept.
        let mut burst = Rows::for_writer(RawRecords::All, None);
        let empty = Recycler::default();
        burst.recycle_via(&empty);
        let big = "x".repeat(Recycler::MAX_BYTES + 1);
        let text = skyhouse_atproto::json::from_lex_json(&serde_json::json!({
            "$type": "com.example.big", "text": big
        }))
        .expect("big");
        apply(
            &Op {
                collection: "com.example.big",
                record: Some(&text),
                ..op("3kbig", Action::Create)
            },
            &mut burst,
        );
        burst.recycle();
        assert_eq!(empty.kept(), 0);
    }

    #[test]
    fn raw_records_keeps_the_json_it_names_and_every_row() {
        let like = like_record();
        let other = skyhouse_atproto::json::from_lex_json(&serde_json::json!({
            "$type": "com.example.thing", "n": 1
        }))
        .expect("thing");
        // A like that does not fit its table (no subject): a dead letter.
        let bad = skyhouse_atproto::json::from_lex_json(&serde_json::json!({
            "$type": "app.bsky.feed.like", "createdAt": "2024-05-01T12:00:00.000Z"
        }))
        .expect("bad like");
        let run = |raw: RawRecords, tap: TapExtras| {
            let mut rows = Rows::default();
            rows.keep_raw_records(raw);
            rows.keep_for_tap(tap);
            assert_eq!(rows.like().raw_records(), raw);
            for (collection, record) in [
                ("app.bsky.feed.like", &like),
                ("com.example.thing", &other),
                ("app.bsky.feed.like", &bad),
            ] {
                apply(
                    &Op {
                        collection,
                        record: Some(record),
                        ..op("3k", Action::Create)
                    },
                    &mut rows,
                );
            }
            assert_eq!(rows.records.len(), 3, "every operation keeps its row");
            assert_eq!(rows.likes.len(), 2, "the like and the bad one's tombstone");
            assert_eq!(rows.dead_letters.len(), 1);
            assert!(
                rows.dead_letters[0].payload.contains("createdAt"),
                "a dead letter keeps its record"
            );
            let kept: Vec<bool> = rows.records.iter().map(|r| !r.record.is_empty()).collect();
            (kept, rows.approx_bytes())
        };
        let (all, all_bytes) = run(RawRecords::All, TapExtras::Off);
        assert_eq!(all, [true, true, true]);
        let (untyped, untyped_bytes) = run(RawRecords::Untyped, TapExtras::Off);
        assert_eq!(untyped, [false, true, false]);
        assert!(untyped_bytes < all_bytes);
        assert_eq!(
            run(RawRecords::None, TapExtras::Off).0,
            [false, false, false]
        );
        assert_eq!(
            run(RawRecords::None, TapExtras::Actions).0,
            [true, true, true],
            "the relay serves the JSON"
        );
        for name in RawRecords::NAMES {
            let r: RawRecords = name.parse().expect("parses");
            assert_eq!(r.to_string(), *name);
        }
        assert_eq!(
            "some".parse::<RawRecords>().unwrap_err(),
            "\"some\" is not one of all, untyped, none"
        );
    }
}
