//! Properties of `apply` over arbitrary operations: arbitrary maps, and valid
//! records of every typed collection with one field replaced or removed.

use std::borrow::Cow;

use proptest::prelude::*;
use serde_json::json;
use skyhouse_atproto::cbor::Map;
use skyhouse_atproto::cid::CODEC_DAG_CBOR;
use skyhouse_transform::{
    apply, apply_with_cbor, Action, Cid, Encoded, Op, RawRecords, Rows, Table, TableRow, TapExtras,
    Value,
};

use crate::value;

/// `(deleted, version, cid, created_at, indexed_at, sort_at)` of a typed row.
type Common = (u8, u64, String, u32, u32, u32);

macro_rules! common {
    ($r:expr) => {
        (
            $r.deleted,
            $r.version,
            $r.cid.clone(),
            $r.created_at,
            $r.indexed_at,
            $r.sort_at,
        )
    };
}

/// Every typed row's common columns, and the sum of every row's `encoded_len`.
fn typed_common(rows: &Rows) -> (Vec<Common>, usize) {
    let mut out = Vec::new();
    let mut bytes = 0;
    macro_rules! each {
        ($($field:ident),*) => {$(
            for r in &rows.$field {
                out.push(common!(r));
                bytes += r.encoded_len();
            }
        )*};
    }
    each!(
        posts,
        likes,
        reposts,
        follows,
        blocks,
        profiles,
        lists,
        list_items,
        list_blocks,
        starter_packs,
        feed_generators,
        threadgates,
        postgates,
        verifications,
        labeler_services,
        actor_statuses,
        chat_declarations,
        notification_declarations,
        content_visibility_declarations
    );
    bytes += rows
        .records
        .iter()
        .map(TableRow::encoded_len)
        .sum::<usize>();
    bytes += rows
        .dead_letters
        .iter()
        .map(TableRow::encoded_len)
        .sum::<usize>();
    (out, bytes)
}

const POST_URI: &str = "at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3k44deefqdk2g";
const CID: &str = "bafyreiaaa5bpqsyr2upzgvinvukdu3wghrgtmjjj7ocoiel4mlaxj6snju";
const DID: &str = "did:plc:44ybard66vv44zksje25o7dz";

/// A valid record for each typed table.
fn valid(table: Table) -> serde_json::Value {
    let strong = json!({"uri": POST_URI, "cid": CID});
    let at = "2026-07-04T14:00:00Z";
    match table {
        Table::Posts => json!({"text": "hi #x", "createdAt": at, "langs": ["en"],
            "reply": {"root": strong, "parent": strong},
            "embed": {"$type": "app.bsky.embed.recordWithMedia",
                      "record": {"$type": "app.bsky.embed.record", "record": strong},
                      "media": {"$type": "app.bsky.embed.external", "external": {"uri": "https://a.test", "title": "", "description": ""}}},
            "facets": [{"index": {"byteStart": 3, "byteEnd": 5}, "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": "x"}]}],
            "labels": {"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "porn"}]},
            "tags": ["y"]}),
        Table::Likes | Table::Reposts => json!({"subject": strong, "via": strong, "createdAt": at}),
        Table::Follows => json!({"subject": DID, "createdAt": at, "via": strong}),
        Table::Blocks => json!({"subject": DID, "createdAt": at}),
        Table::Profiles => json!({"displayName": "A", "pinnedPost": strong,
            "avatar": {"$type": "blob", "ref": {"$link": CID}, "mimeType": "image/png", "size": 1}}),
        Table::Lists => {
            json!({"name": "n", "purpose": "app.bsky.graph.defs#modlist", "createdAt": at})
        }
        Table::ListItems => json!({"subject": DID, "list": POST_URI, "createdAt": at}),
        Table::ListBlocks => json!({"subject": POST_URI, "createdAt": at}),
        Table::StarterPacks => {
            json!({"name": "n", "list": POST_URI, "feeds": [{"uri": POST_URI}], "createdAt": at})
        }
        Table::FeedGenerators => {
            json!({"did": DID, "displayName": "d", "acceptsInteractions": false, "createdAt": at})
        }
        Table::Threadgates => {
            json!({"post": POST_URI, "allow": [{"$type": "app.bsky.feed.threadgate#listRule", "list": POST_URI}], "hiddenReplies": [POST_URI], "createdAt": at})
        }
        Table::Postgates => {
            json!({"post": POST_URI, "detachedEmbeddingUris": [POST_URI], "embeddingRules": [{"$type": "app.bsky.feed.postgate#disableRule"}], "createdAt": at})
        }
        Table::Verifications => {
            json!({"subject": DID, "handle": "a.test", "displayName": "A", "createdAt": at})
        }
        Table::LabelerServices => json!({"policies": {"labelValues": ["a"]}, "createdAt": at}),
        Table::ActorStatuses => {
            json!({"status": "app.bsky.actor.status#live", "durationMinutes": 5, "createdAt": at,
            "embed": {"$type": "app.bsky.embed.external", "external": {"uri": "https://a.test", "title": "", "description": ""}}})
        }
        Table::ChatDeclarations => json!({"allowIncoming": "all"}),
        Table::NotificationDeclarations => json!({"allowSubscriptions": "none"}),
        Table::ContentVisibilityDeclarations => {
            json!({"hideFromAlgorithmicRecommendations": false})
        }
        other => panic!("no valid record for {other:?}"),
    }
}

fn rkey_for(table: Table) -> &'static str {
    match table {
        Table::Profiles
        | Table::ActorStatuses
        | Table::ChatDeclarations
        | Table::NotificationDeclarations
        | Table::ContentVisibilityDeclarations
        | Table::LabelerServices => "self",
        _ => "3l3qo2vutsw2b",
    }
}

/// Field names that the extractors read, plus noise.
const KEYS: &[&str] = &[
    "$type",
    "text",
    "createdAt",
    "langs",
    "reply",
    "root",
    "parent",
    "uri",
    "cid",
    "embed",
    "images",
    "items",
    "external",
    "record",
    "media",
    "facets",
    "features",
    "did",
    "tag",
    "tags",
    "labels",
    "values",
    "val",
    "subject",
    "via",
    "displayName",
    "description",
    "avatar",
    "ref",
    "name",
    "purpose",
    "list",
    "feeds",
    "post",
    "allow",
    "hiddenReplies",
    "embeddingRules",
    "detachedEmbeddingUris",
    "handle",
    "policies",
    "labelValues",
    "status",
    "durationMinutes",
    "allowIncoming",
    "allowSubscriptions",
    "hideFromAlgorithmicRecommendations",
    "pinnedPost",
    "entities",
    "type",
    "value",
    "zz",
];

/// Strings that are sometimes valid identifiers.
fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(POST_URI.to_owned()),
        Just(DID.to_owned()),
        Just(CID.to_owned()),
        Just("2026-07-04T14:00:00Z".to_owned()),
        Just("app.bsky.feed.post".to_owned()),
        Just("app.bsky.embed.recordWithMedia".to_owned()),
        Just("app.bsky.richtext.facet#mention".to_owned()),
        Just("com.atproto.label.defs#selfLabels".to_owned()),
        "[ -~]{0,12}",
        "\\PC{0,6}",
        // Dates anywhere, sloppy or not.
        "[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?Z?",
    ]
}

fn leaf() -> impl Strategy<Value = Value<'static>> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Integer),
        any_string().prop_map(|s| Value::String(Cow::Owned(s))),
        proptest::collection::vec(any::<u8>(), 0..8).prop_map(|b| Value::Bytes(Cow::Owned(b))),
        proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|b| Value::Link(Cid::compute(CODEC_DAG_CBOR, &b))),
    ]
}

fn any_value() -> impl Strategy<Value = Value<'static>> {
    leaf().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::vec((proptest::sample::select(KEYS), inner), 0..7)
                .prop_map(|entries| Value::Map(map_of(entries))),
        ]
    })
}

fn map_of(entries: Vec<(&'static str, Value<'static>)>) -> Map<'static> {
    let mut m = Map::new();
    for (k, v) in entries {
        m.insert(k, v);
    }
    m
}

fn any_map() -> impl Strategy<Value = Value<'static>> {
    proptest::collection::vec((proptest::sample::select(KEYS), any_value()), 0..10)
        .prop_map(|entries| Value::Map(map_of(entries)))
}

/// A valid record of `table` with one top-level or second-level field
/// replaced by an arbitrary value or removed.
fn mutated(table: Table) -> impl Strategy<Value = Value<'static>> {
    let base = value(valid(table));
    (
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        proptest::option::of(any_value()),
    )
        .prop_map(move |(i, j, replacement)| {
            let mut v = base.clone();
            let Value::Map(m) = &mut v else {
                unreachable!()
            };
            let keys: Vec<String> = m.iter().map(|(k, _)| k.to_owned()).collect();
            let key = keys[i.index(keys.len())].clone();
            let nested = match m.get(&key) {
                Some(Value::Map(inner)) if !inner.is_empty() => {
                    let inner_keys: Vec<String> = inner.iter().map(|(k, _)| k.to_owned()).collect();
                    Some(inner_keys[j.index(inner_keys.len())].clone())
                }
                _ => None,
            };
            let edit = |m: &mut Map<'static>, k: &str| match &replacement {
                Some(r) => m.insert(k.to_owned(), r.clone()),
                None => {
                    m.remove(k);
                }
            };
            match nested {
                Some(inner_key) => {
                    if let Some(Value::Map(mut inner)) = m.remove(&key) {
                        edit(&mut inner, &inner_key);
                        m.insert(key, Value::Map(inner));
                    }
                }
                None => edit(m, &key),
            }
            v
        })
}

fn known_table() -> impl Strategy<Value = Table> {
    proptest::sample::select(Table::ALL)
}

fn any_action() -> impl Strategy<Value = Action> {
    prop_oneof![
        Just(Action::Create),
        Just(Action::Update),
        Just(Action::Delete)
    ]
}

fn run(
    collection: &str,
    rkey: &str,
    action: Action,
    record: Option<&Value<'_>>,
    version: u64,
    indexed_at: u32,
) -> Rows {
    let op = Op {
        did: DID,
        collection,
        rkey,
        action,
        cid: record.map(|r| Cid::compute(CODEC_DAG_CBOR, &skyhouse_atproto::cbor::encode(r))),
        record,
        version,
        indexed_at,
    };
    let mut rows = Rows::default();
    apply(&op, &mut rows);
    let mut kept = Rows::default();
    kept.keep_encoded();
    apply(&op, &mut kept);
    encoded_alike(&rows, &kept);
    rows
}

/// Rows kept encoded as they are added ([`Rows::keep_encoded`]) are the
/// same rows as the structs, encoded: the same bytes in every table, the
/// same counts and sizes.
fn encoded_alike(structs: &Rows, kept: &Rows) {
    assert!(kept.encoded().is_some());
    let (mut a, mut b) = (Encoded::default(), Encoded::default());
    a.add(structs);
    b.add(kept);
    assert_eq!(a, b);
    assert_eq!(
        (structs.len(), structs.typed_len(), structs.approx_bytes()),
        (kept.len(), kept.typed_len(), kept.approx_bytes())
    );
    for t in Table::ALL {
        assert_eq!(structs.table_len(*t), kept.table_len(*t), "{t:?}");
    }
    assert_eq!(structs.dead_letters, kept.dead_letters);
}

/// What holds for the rows of any operation.
fn invariants(rows: &Rows, action: Action, version: u64, indexed_at: u32) {
    assert_eq!(rows.records.len(), 1);
    let raw = &rows.records[0];
    assert_eq!(raw.version, version);
    assert_eq!(raw.indexed_at, indexed_at);
    assert!(raw.sort_at <= raw.indexed_at && raw.sort_at <= raw.created_at);
    assert!(u64::from(raw.created_at) <= u64::from(indexed_at) + 86_400);
    assert!(rows.typed_len() <= 1);
    assert!(rows.dead_letters.len() <= 1);
    let (typed, bytes) = typed_common(rows);
    assert_eq!(rows.approx_bytes(), bytes);
    for (deleted, v, cid, created_at, idx, sort_at) in typed {
        assert_eq!(v, version);
        assert_eq!(idx, indexed_at);
        assert!(sort_at <= idx && sort_at <= created_at);
        if deleted == 1 {
            assert_eq!(cid, "");
        } else {
            assert_eq!(cid, raw.cid);
        }
    }
    for d in &rows.dead_letters {
        assert!(
            !d.reason.is_empty() && !d.reason.contains('\n'),
            "{:?}",
            d.reason
        );
    }
    if action == Action::Delete {
        assert!(rows.dead_letters.is_empty());
        assert_eq!(
            (raw.deleted, raw.record.as_str(), raw.cid.as_str()),
            (1, "", "")
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn rows_kept_encoded_are_the_structs_encoded_whatever_is_kept(
        ops in proptest::collection::vec((known_table(), any_map(), any_action()), 1..12),
        raw in prop_oneof![Just(RawRecords::All), Just(RawRecords::Untyped), Just(RawRecords::None)],
        tap in prop_oneof![Just(TapExtras::Off), Just(TapExtras::Actions), Just(TapExtras::ActionsAndCbor)],
        split in any::<prop::sample::Index>(),
    ) {
        let mut structs = Rows::default();
        structs.keep_raw_records(raw);
        structs.keep_for_tap(tap);
        let mut kept = structs.like();
        kept.keep_encoded();
        // Half of the operations go through a second batch appended to the first.
        let mut second = kept.like();
        let at = split.index(ops.len());
        for (i, (table, record, action)) in ops.iter().enumerate() {
            let cbor = skyhouse_atproto::cbor::encode(record);
            let op = Op {
                did: DID,
                collection: table.collection(),
                rkey: rkey_for(*table),
                action: *action,
                cid: Some(Cid::compute(CODEC_DAG_CBOR, &cbor)),
                record: Some(record),
                version: i as u64,
                indexed_at: 1_000,
            };
            apply_with_cbor(&op, Some(&cbor), &mut structs);
            apply_with_cbor(&op, Some(&cbor), if i < at { &mut kept } else { &mut second });
        }
        kept.append(&mut second);
        prop_assert!(second.is_empty());
        encoded_alike(&structs, &kept);
        // The tap reads the `records` structs: they stay structs for it.
        prop_assert_eq!(&structs.tap, &kept.tap);
        if tap == TapExtras::Off {
            prop_assert!(kept.records.is_empty());
        } else {
            prop_assert_eq!(&structs.records, &kept.records);
        }
        prop_assert_eq!(kept.typed_len(), structs.typed_len());
        kept.clear();
        prop_assert_eq!((kept.len(), kept.approx_bytes()), (0, 0));
        prop_assert!(kept.encoded().is_some(), "clear keeps the choice");
    }

    #[test]
    fn arbitrary_records_of_known_collections(
        table in known_table(),
        record in any_map(),
        action in any_action(),
        version in any::<u64>(),
        indexed_at in any::<u32>(),
        self_key in any::<bool>(),
    ) {
        let rkey = if self_key { "self" } else { "3l3qo2vutsw2b" };
        let rows = run(table.collection(), rkey, action, Some(&record), version, indexed_at);
        invariants(&rows, action, version, indexed_at);
        // Always exactly one typed row: live, or a tombstone.
        prop_assert_eq!(rows.table_len(table), 1);
        let (typed, _) = typed_common(&rows);
        let deleted = typed[0].0;
        if action == Action::Delete {
            prop_assert_eq!(deleted, 1);
        } else {
            // A typed row or a dead letter, never neither: a live row, or a
            // dead letter with a tombstone.
            prop_assert_eq!(usize::from(deleted), rows.dead_letters.len());
        }
        // Deterministic.
        let again = run(table.collection(), rkey, action, Some(&record), version, indexed_at);
        prop_assert_eq!(&again, &rows);
    }

    #[test]
    fn mutated_valid_records(
        (table, record) in known_table().prop_flat_map(|t| (Just(t), mutated(t))),
        action in prop_oneof![Just(Action::Create), Just(Action::Update)],
        version in any::<u64>(),
        indexed_at in any::<u32>(),
    ) {
        let rows = run(table.collection(), rkey_for(table), action, Some(&record), version, indexed_at);
        invariants(&rows, action, version, indexed_at);
        prop_assert_eq!(rows.table_len(table), 1);
        let (typed, _) = typed_common(&rows);
        prop_assert_eq!(usize::from(typed[0].0), rows.dead_letters.len());
        prop_assert_eq!(&run(table.collection(), rkey_for(table), action, Some(&record), version, indexed_at), &rows);
    }

    #[test]
    fn deletes_are_tombstones_everywhere(
        collection in prop_oneof![
            known_table().prop_map(|t| t.collection().to_owned()),
            "[a-z]{2,5}\\.[a-z]{2,5}\\.[a-zA-Z]{1,8}",
        ],
        version in any::<u64>(),
        indexed_at in any::<u32>(),
    ) {
        let rows = run(&collection, "3l3qo2vutsw2b", Action::Delete, None, version, indexed_at);
        invariants(&rows, Action::Delete, version, indexed_at);
        let table = Table::for_collection(&collection);
        prop_assert_eq!(rows.typed_len(), usize::from(table.is_some()));
        let (typed, _) = typed_common(&rows);
        for (deleted, v, cid, created_at, idx, sort_at) in typed {
            prop_assert_eq!((deleted, v, cid.as_str()), (1, version, ""));
            prop_assert_eq!((created_at, idx, sort_at), (indexed_at, indexed_at, indexed_at));
        }
        prop_assert_eq!(rows.records[0].deleted, 1);
    }

    #[test]
    fn unknown_collections_never_give_typed_rows(
        collection in "(com|org|fm|app)\\.[a-z]{1,6}\\.[a-zA-Z]{1,10}",
        record in any_map(),
        action in any_action(),
        version in any::<u64>(),
        indexed_at in any::<u32>(),
    ) {
        prop_assume!(Table::for_collection(&collection).is_none());
        let rows = run(&collection, "3l3qo2vutsw2b", action, Some(&record), version, indexed_at);
        invariants(&rows, action, version, indexed_at);
        prop_assert_eq!(rows.typed_len(), 0);
        prop_assert_eq!(rows.dead_letters.len(), 0);
    }

    #[test]
    fn valid_records_are_never_dead_letters(
        table in known_table(),
        version in any::<u64>(),
        indexed_at in any::<u32>(),
    ) {
        let record = value(valid(table));
        let rows = run(table.collection(), rkey_for(table), Action::Create, Some(&record), version, indexed_at);
        invariants(&rows, Action::Create, version, indexed_at);
        prop_assert_eq!(&rows.dead_letters, &vec![]);
        prop_assert_eq!(rows.table_len(table), 1);
    }

    #[test]
    fn batches_are_the_sum_of_their_ops(
        ops in proptest::collection::vec((known_table(), any_map(), any_action()), 1..20),
    ) {
        let mut batch = Rows::default();
        let mut len = 0;
        let mut bytes = 0;
        for (i, (table, record, action)) in ops.iter().enumerate() {
            let version = i as u64;
            let single = run(table.collection(), "self", *action, Some(record), version, 1_000);
            len += single.len();
            bytes += single.approx_bytes();
            apply(
                &Op {
                    did: DID,
                    collection: table.collection(),
                    rkey: "self",
                    action: *action,
                    cid: Some(Cid::compute(CODEC_DAG_CBOR, &skyhouse_atproto::cbor::encode(record))),
                    record: Some(record),
                    version,
                    indexed_at: 1_000,
                },
                &mut batch,
            );
        }
        prop_assert_eq!(batch.len(), len);
        prop_assert_eq!(batch.approx_bytes(), bytes);
        batch.clear();
        prop_assert_eq!((batch.len(), batch.approx_bytes()), (0, 0));
    }
}
