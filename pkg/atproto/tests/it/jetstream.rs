//! The 150 real relay frames of the Jetstream corpus converted to Jetstream
//! events must equal what production Jetstream v1 served for the same window.

use crate::*;
use skyhouse_atproto::frame::Frame;
use skyhouse_atproto::jetstream::{self, Event, Payload};

/// The corpus frames: zstd of repeated `[u32 LE length][frame]`.
pub(crate) fn corpus_frames() -> Vec<Vec<u8>> {
    let raw = crate::unzstd(&read("jetstream/frames.bin.zst")).expect("zstd");
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().expect("len")) as usize;
        pos += 4;
        out.push(raw[pos..pos + len].to_vec());
        pos += len;
    }
    out
}

fn expected() -> Vec<serde_json::Value> {
    read("jetstream/expected_v1.jsonl")
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("expected line"))
        .collect()
}

/// Match key used by the capture tool: commits by (did, rev, collection, rkey,
/// operation), identity/account by (did, seq).
fn key(v: &serde_json::Value) -> String {
    match v["kind"].as_str().expect("kind") {
        "commit" => format!(
            "commit {} {} {} {} {}",
            v["did"],
            v["commit"]["rev"],
            v["commit"]["collection"],
            v["commit"]["rkey"],
            v["commit"]["operation"]
        ),
        k => format!("{k} {} {}", v["did"], v[k]["seq"]),
    }
}

#[test]
fn corpus_frames_convert_to_production_jetstream_output() {
    let frames = corpus_frames();
    assert_eq!(frames.len(), 150);
    let mut ours = std::collections::BTreeMap::new();
    for (i, bytes) in frames.iter().enumerate() {
        let frame = Frame::decode(bytes).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        for ev in jetstream::from_frame(&frame, 0).unwrap_or_else(|e| panic!("frame {i}: {e}")) {
            let v = serde_json::to_value(&ev).expect("to json");
            assert!(
                ours.insert(key(&v), v).is_none(),
                "duplicate event from frame {i}"
            );
        }
    }
    let want = expected();
    assert_eq!(want.len(), 152);
    let mut failures = Vec::new();
    for mut w in want.iter().cloned() {
        let k = key(&w);
        let Some(mut got) = ours.remove(&k) else {
            failures.push(format!("missing: {k}"));
            continue;
        };
        // time_us is Jetstream's own receive clock.
        w["time_us"] = 0.into();
        got["time_us"] = 0.into();
        if got != w {
            failures.push(format!("differs: {k}\n  want {w}\n  got  {got}"));
        }
    }
    failures.extend(ours.keys().map(|k| format!("extra: {k}")));
    println!(
        "jetstream corpus: {} frames, {} events compared",
        frames.len(),
        want.len()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn production_events_round_trip_through_the_model() {
    let mut n = 0;
    for rel in ["jetstream/expected_v1.jsonl", "jetstream/golden_v1.jsonl"] {
        for line in read(rel).split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let ev = Event::from_json(line).unwrap_or_else(|e| panic!("{rel}: {e}"));
            let back = serde_json::to_value(&ev).expect("to json");
            let orig: serde_json::Value = serde_json::from_slice(line).expect("json");
            assert_eq!(back, orig, "{rel}");
            n += 1;
        }
    }
    println!("jetstream events round-tripped: {n}");
    assert!(n >= 162);
}

#[test]
fn event_kinds_are_typed() {
    let line = br#"{"did":"did:plc:x","time_us":1,"kind":"account","account":{"active":false,"did":"did:plc:x","seq":9,"time":"2024-01-01T00:00:00Z","status":"deactivated"}}"#;
    let ev = Event::from_json(line).expect("parse");
    match ev.payload {
        Payload::Account { account } => {
            assert!(!account.active);
            assert_eq!(account.status.as_deref(), Some("deactivated"));
        }
        other => panic!("wrong kind {other:?}"),
    }
    let bad = br#"{"did":"did:plc:x","time_us":1,"kind":"bogus"}"#;
    assert!(Event::from_json(bad).is_err());
}

/// Found by `just fuzz jetstream_json`: a float in a record (invalid atproto
/// data, but valid JSON) changed value on a parse → serialize → parse round
/// trip until serde_json's `float_roundtrip` parsing was enabled.
#[test]
fn fuzz_regression_float_survives_round_trip() {
    let line = read("fuzz-regressions/jetstream_json-float-roundtrip.json");
    let ev = Event::from_json(&line).expect("parses");
    let again = Event::from_json(&serde_json::to_vec(&ev).expect("serialize")).expect("reparse");
    assert_eq!(again, ev);
}
