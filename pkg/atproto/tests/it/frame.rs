//! Firehose frames: the 150 real relay frames, indigo's captured relay
//! scenarios and commit bodies, and hand-built edge cases.

use crate::jetstream::corpus_frames;
use crate::*;
use skyhouse_atproto::cbor::{self, Map, Value};
use skyhouse_atproto::commit::Commit;
use skyhouse_atproto::frame::{
    encode_error_frame, encode_frame, may_be_error_frame, Action, ErrorKind, Frame,
};
use skyhouse_atproto::json::from_lex_json;

#[test]
fn corpus_frames_decode() {
    let frames = corpus_frames();
    let manifest: serde_json::Value =
        serde_json::from_slice(&read("jetstream/manifest.json")).expect("manifest");
    let (mut commits, mut identities, mut accounts, mut ops, mut records) = (0, 0, 0, 0, 0);
    let mut last_seq = None;
    for (i, bytes) in frames.iter().enumerate() {
        let frame = Frame::decode(bytes).unwrap_or_else(|e| panic!("frame {i}: {e}"));
        assert!(
            !may_be_error_frame(bytes),
            "frame {i}: a message, not an error"
        );
        let seq = frame.seq().expect("seq");
        if let Some(prev) = last_seq {
            assert_eq!(seq, prev + 1, "frame {i}: seq gap");
        }
        last_seq = Some(seq);
        match &frame {
            Frame::Commit(c) => {
                commits += 1;
                assert!(c.prev_data.is_some(), "sync 1.1 commits carry prevData");
                let store = c.block_store().unwrap_or_else(|e| panic!("frame {i}: {e}"));
                let commit = store
                    .with_block(&c.commit, |b| {
                        Commit::decode(b.expect("commit block")).map(Commit::into_owned)
                    })
                    .expect("io")
                    .expect("commit");
                assert_eq!(commit.did, c.repo);
                assert_eq!(commit.rev.as_deref(), Some(&*c.rev));
                for op in &c.ops {
                    ops += 1;
                    assert!(op.split_path().is_some(), "bad path {}", op.path);
                    if op.action != Action::Delete {
                        let cid = op.cid.expect("cid");
                        let v = store.get(&cid).expect("io").expect("record block present");
                        cbor::decode(&v).expect("record decodes");
                        records += 1;
                    }
                }
            }
            Frame::Identity(_) => identities += 1,
            Frame::Account(a) => {
                accounts += 1;
                assert!(a.active);
            }
            other => panic!("unexpected frame {other:?}"),
        }
    }
    println!("corpus: {commits} commits ({ops} ops, {records} records), {identities} identity, {accounts} account");
    assert_eq!((commits, identities, accounts), (148, 1, 1));
    assert_eq!(last_seq, manifest["seq_last"].as_i64());
}

fn frame_from_dag_json(header: &serde_json::Value, body: &serde_json::Value) -> Vec<u8> {
    let mut out = cbor::encode(&from_lex_json(header).expect("header"));
    cbor::encode_into(&from_lex_json(body).expect("body"), &mut out);
    out
}

#[test]
fn indigo_relay_scenarios_decode() {
    let dir = testdata("indigo/relay");
    let mut n = 0;
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).expect("read")).expect("json");
        for msg in doc["messages"].as_array().expect("messages") {
            let (h, b) = (&msg["frame"]["header"], &msg["frame"]["body"]);
            let bytes = frame_from_dag_json(h, b);
            let name = format!("{} seq {}", path.display(), b["seq"]);
            let frame = Frame::decode(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
            let t = h["t"].as_str().expect("t");
            let ok = match (&frame, t) {
                (Frame::Commit(c), "#commit") => c.block_store().is_ok() || msg["invalid"] == true,
                (Frame::Sync(_), "#sync")
                | (Frame::Identity(_), "#identity")
                | (Frame::Account(_), "#account") => true,
                _ => false,
            };
            assert!(ok, "{name}: decoded as {frame:?}");
            assert_eq!(frame.seq(), b["seq"].as_i64(), "{name}");
            n += 1;
        }
    }
    println!("indigo relay frames: {n}");
    assert!(n >= 20);
}

#[test]
fn indigo_commit_bodies_decode() {
    for seq in ["4621317030", "4621317332", "4621332152", "4623075231"] {
        let body: serde_json::Value =
            serde_json::from_slice(&read(&format!("indigo/firehose_commit_{seq}.json")))
                .expect("json");
        let bytes = encode_frame("#commit", &from_lex_json(&body).expect("body"));
        let Frame::Commit(c) = Frame::decode(&bytes).expect("decode") else {
            panic!("not a commit")
        };
        assert_eq!(c.seq.to_string(), seq);
        assert_eq!(c.ops.len(), body["ops"].as_array().expect("ops").len());
        let store = c.block_store().expect("blocks");
        assert!(store.contains(&c.commit), "commit block in slice");
    }
}

fn body(entries: &[(&str, Value<'static>)]) -> Value<'static> {
    let mut m = Map::new();
    for (k, v) in entries {
        m.insert(k.to_string(), v.clone());
    }
    Value::Map(m)
}

fn s(v: &str) -> Value<'static> {
    Value::String(v.to_string().into())
}

#[test]
fn unknown_type_is_reported_not_fatal() {
    let bytes = encode_frame(
        "#tombstone",
        &body(&[("seq", Value::Integer(7)), ("did", s("did:plc:x"))]),
    );
    assert_eq!(
        Frame::decode(&bytes).expect("decode"),
        Frame::Unknown {
            t: "#tombstone".into(),
            seq: Some(7)
        }
    );
}

#[test]
fn error_and_info_frames() {
    let mut out = cbor::encode(&body(&[("op", Value::Integer(-1))]));
    cbor::encode_into(
        &body(&[
            ("error", s("FutureCursor")),
            ("message", s("cursor in the future")),
        ]),
        &mut out,
    );
    match Frame::decode(&out).expect("decode") {
        Frame::Error(e) => {
            assert_eq!(e.error, "FutureCursor");
            assert_eq!(e.message.as_deref(), Some("cursor in the future"));
        }
        other => panic!("{other:?}"),
    }
    // The encoder writes the same bytes, and the transport's cheap test sees it.
    assert_eq!(
        encode_error_frame("FutureCursor", Some("cursor in the future")),
        out
    );
    assert!(may_be_error_frame(&out));
    let e = encode_error_frame("ConsumerTooSlow", None);
    match Frame::decode(&e).expect("decode") {
        Frame::Error(e) => {
            assert_eq!((e.kind(), e.message), (ErrorKind::ConsumerTooSlow, None));
        }
        other => panic!("{other:?}"),
    }
    let other = encode_error_frame("InternalError", None);
    assert!(matches!(Frame::decode(&other), Ok(Frame::Error(e)) if e.kind() == ErrorKind::Other));
    let info = encode_frame("#info", &body(&[("name", s("OutdatedCursor"))]));
    assert!(!may_be_error_frame(&info));
    assert!(
        matches!(Frame::decode(&info).expect("info"), Frame::Info(i) if i.name == "OutdatedCursor")
    );
}

#[test]
fn missing_fields_name_the_field() {
    let bytes = encode_frame(
        "#account",
        &body(&[("seq", Value::Integer(3)), ("did", s("did:plc:x"))]),
    );
    let e = Frame::decode(&bytes).expect_err("no time/active");
    assert!(
        e.to_string().contains("#account frame (seq Some(3))"),
        "{e}"
    );
}

#[test]
fn truncated_frames_error_without_panic() {
    let frames = corpus_frames();
    let f = &frames[0];
    for cut in 0..f.len() {
        assert!(Frame::decode(&f[..cut]).is_err(), "cut at {cut} accepted");
    }
}

#[test]
fn corpus_commit_signatures_verify_against_real_did_documents() {
    use skyhouse_atproto::crypto::DidDocument;
    let docs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&crate::unzstd(&read("jetstream/did_docs.json.zst")).expect("zstd"))
            .expect("json");
    let mut verified = 0;
    for bytes in corpus_frames() {
        let Frame::Commit(c) = Frame::decode(&bytes).expect("frame") else {
            continue;
        };
        let doc = DidDocument::from_json(&serde_json::to_vec(&docs[&*c.repo]).expect("doc"))
            .expect("did doc");
        let key = doc.signing_key().expect("key");
        let store = c.block_store().expect("blocks");
        let commit = store
            .with_block(&c.commit, |b| {
                Commit::decode(b.expect("commit block")).map(Commit::into_owned)
            })
            .expect("io")
            .expect("commit");
        commit
            .verify(&key)
            .unwrap_or_else(|e| panic!("seq {}: {e}", c.seq));
        // The same commit with one byte of its signature changed must fail.
        let mut forged = commit.clone();
        forged.sig.to_mut()[10] ^= 1;
        assert!(forged.verify(&key).is_err());
        verified += 1;
    }
    println!("verified {verified} real commit signatures");
    assert_eq!(verified, 148);
}
