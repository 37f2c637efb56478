//! The 150 real relay frames of the Jetstream corpus converted to Jetstream
//! events must equal what production Jetstream v1 served for the same window.

use crate::*;
use skyhouse_atproto::frame::Frame;
use skyhouse_atproto::jetstream::{self, Event, EventRef, Payload};

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

/// The one-pass parse of `line` beside the model's (`Event::from_json`, the
/// record through `from_lex_json`): whatever the one-pass parser accepts,
/// the model accepts with the same values. Returns whether it accepted.
fn one_pass_agrees(line: &[u8]) -> bool {
    let text = String::from_utf8_lossy(line);
    let Some(fast) = EventRef::parse(line) else {
        return false;
    };
    let slow = Event::from_json(line)
        .unwrap_or_else(|e| panic!("one-pass accepts what the model rejects ({e}): {text}"));
    let slow = slow
        .to_ref()
        .unwrap_or_else(|e| panic!("one-pass accepts a record the model rejects ({e}): {text}"));
    assert_eq!(fast, slow, "{text}");
    true
}

#[test]
fn the_one_pass_parser_reads_every_production_event_as_the_model_does() {
    let mut n = 0;
    for rel in ["jetstream/expected_v1.jsonl", "jetstream/golden_v1.jsonl"] {
        for line in read(rel).split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            assert!(one_pass_agrees(line), "{rel}: not read in one pass");
            n += 1;
        }
    }
    assert!(n >= 162);
}

const LIKE: &str = r#"{"$type":"app.bsky.feed.like","createdAt":"2026-07-04T14:38:08.999Z","subject":{"cid":"bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza","uri":"at://did:plc:r2zybk6op3ymzpz6jhqpkoy5/app.bsky.feed.post/3mpsjbtci2c2o"}}"#;
const CID: &str = "bafyreiguce4jh7kcbmof3pmcvasifqtw24b6isakj5ve5ga2b4z4alpc4i";

/// A commit event around `record` (raw JSON), `extra` top-level members first.
fn commit_line(op: &str, record: &str, extra: &str) -> Vec<u8> {
    format!(
        r#"{{{extra}"did":"did:plc:a","time_us":5,"kind":"commit","commit":{{"rev":"3mptbypluud2a","operation":"{op}","collection":"app.bsky.feed.like","rkey":"3mptbyplj5d2a","record":{record},"cid":"{CID}"}}}}"#
    )
    .into_bytes()
}

fn with_record(record: &str) -> Vec<u8> {
    commit_line("create", record, "")
}

fn nested(depth: usize) -> String {
    format!(r#"{{"a":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth))
}

/// Lines the one-pass parser must read itself (`true`) or leave to the model
/// (`false`: the model rejects them, or accepts a rare form the one-pass
/// parser does not bother with); either way both must agree.
#[test]
fn the_one_pass_parser_agrees_with_the_model_on_edge_cases() {
    let link = format!(r#"{{"$link":"{CID}"}}"#);
    let deep_unknown = |n: usize| format!(r#""x":{}{},"#, "[".repeat(n), "]".repeat(n));
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("plain like", with_record(LIKE), true),
        (
            "kind after commit, unknown members, whitespace",
            format!(
                r#" {{ "commit" : {{"cid":"{CID}","record":{LIKE},"rkey":"r","collection":"c","operation":"update","rev":"3mptbypluud2a","extra":[1,{{"b":null}}]}}, "x":{{}}, "time_us":-5, "did":"d", "kind":"commit" }} "#
            )
            .into_bytes(),
            true,
        ),
        (
            "escapes in strings and keys",
            format!(
                r#"{{"d\u0069d":"did:plc:\u00e9","time_us":5,"kind":"comm\u0069t","commit":{{"rev":"3mptbypluud2a","operation":"cr\u0065ate","collection":"a\/b","rkey":"k","record":{{"t\u00e9xt":"line\nbreak \ud83d\ude00"}},"cid":"{CID}"}}}}"#
            )
            .into_bytes(),
            true,
        ),
        ("repeated unknown member", commit_line("create", LIKE, r#""x":1,"x":[2],"#), true),
        ("null record", with_record("null"), true),
        (
            "no record, no cid",
            br#"{"did":"d","time_us":5,"kind":"commit","commit":{"rev":"r","operation":"delete","collection":"c","rkey":"k"}}"#.to_vec(),
            true,
        ),
        ("link", with_record(&format!(r#"{{"l":{link}}}"#)), true),
        ("bytes", with_record(r#"{"b":{"$bytes":"nFERjvLLiw9qm45JrqH9QTzyC2Lu1Xb4ne6+sBrCzI0"}}"#), true),
        ("padded bytes", with_record(r#"{"b":{"$bytes":"AQI="}}"#), true),
        ("integral floats", with_record(r#"{"a":1.0,"b":1e2,"c":-0.0,"d":-0,"e":9007199254740991.0}"#), true),
        ("i64 extremes", with_record(r#"{"a":9223372036854775807,"b":-9223372036854775808}"#), true),
        ("blob", with_record(&format!(r#"{{"i":{{"$type":"blob","ref":{link},"mimeType":"image/png","size":3}}}}"#)), true),
        ("depth 64", with_record(&nested(63)), true),
        ("deep unknown member within serde_json's limit", commit_line("create", LIKE, &deep_unknown(100)), true),
        (
            "identity without handle",
            br#"{"did":"d","time_us":1,"kind":"identity","identity":{"did":"d","seq":3,"time":"t","handle":null}}"#.to_vec(),
            true,
        ),
        (
            "account",
            br#"{"did":"d","time_us":1,"kind":"account","account":{"active":false,"did":"d","seq":9,"time":"t","status":"deleted"}}"#.to_vec(),
            true,
        ),
        // Rejected by both.
        ("not JSON", b"{not json".to_vec(), false),
        ("empty", Vec::new(), false),
        ("array", b"[]".to_vec(), false),
        ("empty object", b"{}".to_vec(), false),
        ("trailing bytes", [with_record(LIKE), b"x".to_vec()].concat(), false),
        ("two objects", [with_record(LIKE), with_record(LIKE)].concat(), false),
        ("repeated did", commit_line("create", LIKE, r#""did":"x","#), false),
        ("repeated kind", commit_line("create", LIKE, r#""kind":"commit","#), false),
        ("float time_us", br#"{"did":"d","time_us":5.0,"kind":"account","account":{"active":true,"did":"d","seq":9,"time":"t"}}"#.to_vec(), false),
        ("time_us past i64", br#"{"did":"d","time_us":9223372036854775808,"kind":"account","account":{"active":true,"did":"d","seq":9,"time":"t"}}"#.to_vec(), false),
        ("numeric did", br#"{"did":5,"time_us":1,"kind":"account","account":{"active":true,"did":"d","seq":9,"time":"t"}}"#.to_vec(), false),
        ("unknown kind", br#"{"did":"d","time_us":1,"kind":"bogus"}"#.to_vec(), false),
        ("no kind", br#"{"did":"d","time_us":1,"account":{"active":true,"did":"d","seq":9,"time":"t"}}"#.to_vec(), false),
        ("kind without its object", br#"{"did":"d","time_us":1,"kind":"identity","account":{"active":true,"did":"d","seq":9,"time":"t"}}"#.to_vec(), false),
        ("missing rkey", br#"{"did":"d","time_us":5,"kind":"commit","commit":{"rev":"r","operation":"delete","collection":"c"}}"#.to_vec(), false),
        ("unknown operation", commit_line("upsert", LIKE, ""), false),
        ("float seq", br#"{"did":"d","time_us":1,"kind":"account","account":{"active":true,"did":"d","seq":9.5,"time":"t"}}"#.to_vec(), false),
        ("string active", br#"{"did":"d","time_us":1,"kind":"account","account":{"active":"yes","did":"d","seq":9,"time":"t"}}"#.to_vec(), false),
        ("invalid UTF-8 in an unknown member", [&b"{\"x\":\"\xff\","[..], &with_record(LIKE)[1..]].concat(), false),
        ("deep unknown member past serde_json's limit", commit_line("create", LIKE, &deep_unknown(130)), false),
        ("record not an object", with_record("5"), false),
        ("fraction", with_record(r#"{"a":1.5}"#), false),
        ("integer past i64", with_record(r#"{"a":9223372036854775808}"#), false),
        ("huge integer", with_record(r#"{"a":123456789012345678901234567890}"#), false),
        ("float past 2^53", with_record(r#"{"a":9007199254740993.0}"#), false),
        ("number out of range", with_record(r#"{"a":1e400}"#), false),
        ("depth 65", with_record(&nested(64)), false),
        ("record past serde_json's limit", with_record(&nested(200)), false),
        ("link not a string", with_record(r#"{"l":{"$link":5}}"#), false),
        ("link with another key", with_record(&format!(r#"{{"l":{{"$link":"{CID}","x":1}}}}"#)), false),
        ("link not a CID", with_record(r#"{"l":{"$link":"bafynope"}}"#), false),
        ("bytes not base64", with_record(r#"{"b":{"$bytes":"!"}}"#), false),
        ("bytes not a string", with_record(r#"{"b":{"$bytes":[1]}}"#), false),
        ("empty $type", with_record(r#"{"$type":""}"#), false),
        ("numeric $type", with_record(r#"{"$type":1}"#), false),
        ("blob without size", with_record(&format!(r#"{{"i":{{"$type":"blob","ref":{link},"mimeType":"image/png"}}}}"#)), false),
        // Accepted by the model, left to it.
        ("repeated record key (the model keeps the last)", with_record(r#"{"a":1,"a":2}"#), false),
        ("kind as a variant index", br#"{"did":"d","time_us":1,"kind":2,"account":{"active":true,"did":"d","seq":9,"time":"t"}}"#.to_vec(), false),
        (
            "operation as a map",
            br#"{"did":"d","time_us":5,"kind":"commit","commit":{"rev":"r","operation":{"delete":null},"collection":"c","rkey":"k"}}"#.to_vec(),
            false,
        ),
        ("commit as an array", br#"{"did":"d","time_us":5,"kind":"commit","commit":["r","delete","c","k"]}"#.to_vec(), false),
        ("another kind's member that is not its object", br#"{"did":"d","time_us":1,"kind":"account","commit":5,"account":{"active":true,"did":"d","seq":9,"time":"t"}}"#.to_vec(), false),
        ("a delete's record that is not atproto data", commit_line("delete", r#"{"a":1.5}"#, ""), false),
    ];
    for (name, line, one_pass) in &cases {
        assert_eq!(one_pass_agrees(line), *one_pass, "{name}");
    }
    // The model's side of the cases above, as they claim.
    for name in [
        "repeated record key (the model keeps the last)",
        "kind as a variant index",
        "operation as a map",
        "commit as an array",
        "another kind's member that is not its object",
        "a delete's record that is not atproto data",
    ] {
        let (_, line, _) = cases.iter().find(|c| c.0 == name).expect("case");
        assert!(Event::from_json(line).is_ok(), "the model accepts: {name}");
    }
}
