//! DAG-CBOR and lex-JSON against the atproto data-model vectors and the DASL
//! (hyphacoop/dasl-testing) strictness vectors.

use crate::*;
use skyhouse_atproto::cbor::{self, CborErrorKind};
use skyhouse_atproto::json;
use skyhouse_atproto::{Cid, Value};

#[test]
fn data_model_fixtures_round_trip() {
    let cases = load("interop/data-model/data-model-fixtures.json");
    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let cbor_bytes = b64(case["cbor_base64"].as_str().expect("cbor"));
        let want_cid: Cid = case["cid"]
            .as_str()
            .expect("cid")
            .parse()
            .expect("cid parse");
        // JSON -> CBOR -> bytes and CID equal to the fixture.
        let from_json = match json::from_lex_json(&case["json"]) {
            Ok(v) => v,
            Err(e) => {
                failures.push(format!("case {i}: from_lex_json: {e}"));
                continue;
            }
        };
        let encoded = cbor::encode(&from_json);
        if encoded != cbor_bytes {
            failures.push(format!("case {i}: encoding differs"));
        }
        if Cid::compute(0x71, &encoded) != want_cid {
            failures.push(format!("case {i}: CID differs"));
        }
        // CBOR -> value -> JSON equal to the fixture.
        match cbor::decode(&cbor_bytes) {
            Ok(v) => {
                if json::to_json_value(&v) != case["json"] {
                    failures.push(format!("case {i}: JSON differs"));
                }
                if v != from_json {
                    failures.push(format!("case {i}: decoded value differs"));
                }
            }
            Err(e) => failures.push(format!("case {i}: decode: {e}")),
        }
    }
    println!("data-model fixtures: {} cases", cases.len());
    assert!(cases.len() >= 3);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn data_model_valid_json_accepted() {
    let cases = load("interop/data-model/data-model-valid.json");
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|c| {
            let v = json::from_lex_json(&c["json"]).err()?;
            Some(format!("{}: {v}", c["note"]))
        })
        .collect();
    println!("data-model valid: {} cases", cases.len());
    assert!(!cases.is_empty());
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn data_model_invalid_json_rejected() {
    let cases = load("interop/data-model/data-model-invalid.json");
    let failures: Vec<String> = cases
        .iter()
        .filter(|c| json::from_lex_json(&c["json"]).is_ok())
        .map(|c| c["note"].to_string())
        .collect();
    println!("data-model invalid: {} cases", cases.len());
    assert!(!cases.is_empty());
    assert!(failures.is_empty(), "accepted: {failures:#?}");
}

/// The DASL vectors cover several CBOR profiles; a case applies to us when it
/// is tagged for DAG-CBOR, DASL CIDs, or all decoders ("basic").
fn applies(case: &serde_json::Value) -> bool {
    case["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .any(|t| matches!(t.as_str(), Some("dag-cbor" | "dasl-cid" | "basic")))
}

/// Where the atproto data model is stricter than plain DAG-CBOR, cases DASL marks
/// as round-trip must be rejected by us, with the named reason.
fn atproto_stricter(data: &[u8]) -> Option<CborErrorKind> {
    match data.first() {
        Some(0xf9..=0xfb) => Some(CborErrorKind::Float), // the data model has no floats
        Some(0x1b) | Some(0x3b) if data[1] & 0x80 != 0 => Some(CborErrorKind::IntegerRange), // beyond i64
        _ => None,
    }
}

#[test]
fn dasl_vectors() {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut failures = Vec::new();
    let mut stricter = 0;
    let dir = testdata("dasl");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
    {
        let cases: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
        let file = path
            .file_name()
            .expect("name")
            .to_string_lossy()
            .to_string();
        for case in cases.iter().filter(|c| applies(c)) {
            let data = hex(case["data"].as_str().expect("data"));
            let name = format!("{file}: {} ({})", case["name"], case["type"]);
            let result = cbor::decode(&data);
            match case["type"].as_str().expect("type") {
                "roundtrip" => {
                    *counts.entry("roundtrip").or_default() += 1;
                    match (atproto_stricter(&data), result) {
                        (Some(kind), Err(e)) if e.kind == kind => stricter += 1,
                        (Some(_), r) => {
                            failures.push(format!("{name}: want atproto rejection, got {r:?}"))
                        }
                        (None, Ok(v)) => {
                            if cbor::encode(&v) != data {
                                failures.push(format!("{name}: re-encoding differs"));
                            }
                        }
                        (None, Err(e)) => failures.push(format!("{name}: {e}")),
                    }
                }
                // Our encoder cannot express these values at all (no floats, tags,
                // undefined or non-string keys in `Value`); the decoder must refuse them.
                "invalid_in" | "invalid_out" => {
                    *counts.entry("invalid").or_default() += 1;
                    if let Ok(v) = result {
                        failures.push(format!("{name}: accepted as {v:?}"));
                    }
                }
                other => panic!("unknown case type {other}"),
            }
        }
    }
    println!("dasl vectors: {counts:?}, {stricter} round-trip cases rejected by atproto's stricter rules");
    assert!(counts.values().sum::<usize>() > 50);
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn decode_errors_name_the_offset() {
    let e = cbor::decode(&hex("a2616101616201ff")).expect_err("trailing");
    assert_eq!(e.offset, 7);
    assert_eq!(
        e.to_string(),
        "invalid DAG-CBOR at byte 7: 1 trailing bytes after the value"
    );
}

#[test]
fn real_records_round_trip() {
    for rel in [
        "indigo/feedpost_record.cbor",
        "indigo/post_richtext_link.cbor",
    ] {
        let data = read(rel);
        let v = cbor::decode(&data).unwrap_or_else(|e| panic!("{rel}: {e}"));
        assert_eq!(cbor::encode(&v), data, "{rel}");
        let j = json::to_json_value(&v);
        assert_eq!(j["$type"], "app.bsky.feed.post", "{rel}");
        let back = json::from_lex_json(&j).expect("from json");
        assert_eq!(back, v.clone().into_owned());
        json::validate(&v).expect("valid");
    }
}

/// `json::write_json` writes what serde_json writes through `Value`'s
/// `Serialize`, for every block of every real CAR (records, commits, MST
/// nodes: strings, bytes, links, integers, nesting).
#[test]
fn write_json_matches_serde_json_on_real_blocks() {
    use skyhouse_atproto::car::{read_car_bytes, CarOptions};
    let mut cars: Vec<(String, Vec<u8>)> = repo_cars()
        .into_iter()
        .map(|(car, _)| (car.clone(), read(&car)))
        .collect();
    cars.push(("skyfall/attie.car".into(), read("skyfall/attie.car")));
    let mut blocks = 0;
    for (name, car) in &cars {
        let (_, store) = read_car_bytes(car, CarOptions::default()).expect(name);
        for cid in store.cids() {
            let block = store.get(cid).expect("io").expect("block");
            let Ok(v) = cbor::decode(&block) else {
                continue;
            };
            let mut ours = String::from("[");
            json::write_json(&v, &mut ours);
            assert_eq!(
                ours,
                format!("[{}", serde_json::to_string(&v).expect("json")),
                "{name} block {cid}"
            );
            blocks += 1;
        }
    }
    assert!(blocks > 1000, "only {blocks} blocks read");
}

pub(crate) mod props {
    use super::*;
    use proptest::prelude::*;
    use std::borrow::Cow;

    /// Any data-model value: every kind, nested a few levels.
    pub(crate) fn arb_value() -> impl Strategy<Value = Value<'static>> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Integer),
            ".{0,20}".prop_map(|s| Value::String(Cow::Owned(s))),
            proptest::collection::vec(any::<u8>(), 0..20).prop_map(|b| Value::Bytes(Cow::Owned(b))),
            any::<[u8; 32]>().prop_map(|d| Value::Link(Cid::from_sha256(0x71, d))),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
                proptest::collection::btree_map("[a-zA-Z$]{0,8}", inner, 0..8).prop_map(|m| {
                    let entries = m.into_iter().map(|(k, v)| (Cow::Owned(k), v)).collect();
                    Value::Map(cbor::Map::from_entries(entries).expect("unique keys"))
                }),
            ]
        })
    }

    proptest! {
        #[test]
        fn encode_decode_round_trip(v in arb_value()) {
            let bytes = cbor::encode(&v);
            let back = cbor::decode(&bytes).expect("decode own encoding");
            prop_assert_eq!(&back, &v);
            prop_assert_eq!(cbor::encode(&back), bytes);
        }

        #[test]
        fn write_json_matches_serde_json(v in arb_value(), s in "[\\x00-\\x7f\u{80}\u{2028}\u{fffd}\u{1f600}é\"\\\\]{0,24}") {
            // Any value, and a string of the characters escaping cares about.
            for v in [v, Value::String(Cow::Owned(s))] {
                let mut ours = String::new();
                json::write_json(&v, &mut ours);
                prop_assert_eq!(ours, serde_json::to_string(&v).expect("json"));
            }
        }

        #[test]
        fn decoder_never_panics(data in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(v) = cbor::decode(&data) {
                // whatever it accepts is canonical: it re-encodes to the same bytes
                prop_assert_eq!(cbor::encode(&v), data);
            }
        }
    }
}
