//! skyhouse's DAG-CBOR decoder against `serde_ipld_dagcbor` (see
//! `oracle/dagcbor.rs`): real data, the DASL vectors, valid encodings of
//! generated values, near-valid encodings that break one rule or another,
//! mutations and arbitrary bytes. Every input must decode to the same value
//! in both, be refused by both, or be refused by skyhouse under a named rule
//! the input is checked to break.

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use skyhouse_atproto::car::{read_car_bytes, CarOptions};
use skyhouse_atproto::cbor;
use skyhouse_atproto::frame::Frame;

use crate::cbor::props::arb_value;
use crate::oracle::dagcbor::{check, Rule, Verdict};
use crate::*;

/// Run `strategy` for `cases` inputs through [`check`]; the verdicts seen.
pub(crate) fn tally(
    cases: u32,
    strategy: impl Strategy<Value = Vec<u8>>,
) -> BTreeMap<Verdict, usize> {
    let seen = RefCell::new(BTreeMap::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |bytes| {
            let verdict = check(&bytes).map_err(TestCaseError::fail)?;
            *seen.borrow_mut().entry(verdict).or_insert(0) += 1;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    seen.into_inner()
}

/// Every block of every real CAR, every real frame's header and body, and
/// the single-record fixtures decode to the same values in both.
#[test]
fn real_data_decodes_the_same_in_the_oracle() {
    let mut inputs: Vec<(String, Vec<u8>)> = Vec::new();
    let mut cars: Vec<(String, Vec<u8>)> = repo_cars()
        .into_iter()
        .map(|(car, _)| (car.clone(), read(&car)))
        .collect();
    cars.push((
        "indigo/repo_slice.car".into(),
        read("indigo/repo_slice.car"),
    ));
    cars.push(("skyfall/attie.car".into(), read("skyfall/attie.car")));
    for (i, frame) in crate::jetstream::corpus_frames().into_iter().enumerate() {
        let (_, used) = cbor::decode_prefix(&frame).expect("frame header");
        inputs.push((format!("frame {i} header"), frame[..used].to_vec()));
        inputs.push((format!("frame {i} body"), frame[used..].to_vec()));
        if let Ok(Frame::Commit(c)) = Frame::decode(&frame) {
            cars.push((format!("frame {i} blocks"), c.blocks.to_vec()));
        }
    }
    for (name, car) in &cars {
        let (_, store) = read_car_bytes(car, CarOptions::default()).expect(name);
        for cid in store.cids() {
            let block = store.get(cid).expect("io").expect("block");
            inputs.push((format!("{name} block {cid}"), block));
        }
    }
    for rel in [
        "indigo/feedpost_record.cbor",
        "indigo/post_richtext_link.cbor",
    ] {
        inputs.push((rel.into(), read(rel)));
    }
    for (i, case) in load("interop/data-model/data-model-fixtures.json")
        .iter()
        .enumerate()
    {
        let bytes = b64(case["cbor_base64"].as_str().expect("cbor"));
        inputs.push((format!("data-model fixture {i}"), bytes));
    }
    let failures: Vec<String> = inputs
        .iter()
        .filter_map(|(name, bytes)| match check(bytes) {
            Ok(Verdict::Same) => None,
            other => Some(format!("{name}: {other:?}")),
        })
        .collect();
    println!(
        "{} real DAG-CBOR values from {} CARs decode the same in serde_ipld_dagcbor",
        inputs.len(),
        cars.len()
    );
    assert!(inputs.len() > 4000, "{}", inputs.len());
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The DASL strictness vectors (every profile, not only DAG-CBOR's): no
/// divergence, and the data-model rules show up where DASL marks floats and
/// 64-bit unsigned integers as valid DAG-CBOR.
#[test]
fn dasl_vectors_agree_or_break_a_named_rule() {
    let mut seen = BTreeMap::<Verdict, usize>::new();
    let mut failures = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(testdata("dasl"))
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for path in &files {
        let cases: Vec<serde_json::Value> =
            serde_json::from_slice(&std::fs::read(path).expect("read")).expect("json");
        for case in &cases {
            let data = hex(case["data"].as_str().expect("data"));
            match check(&data) {
                Ok(v) => *seen.entry(v).or_default() += 1,
                Err(e) => failures.push(format!("{}: {}: {e}", path.display(), case["name"])),
            }
        }
    }
    println!("dasl vectors against the oracle: {seen:?}");
    assert!(failures.is_empty(), "{failures:#?}");
    assert!(
        seen.get(&Verdict::Same).copied().unwrap_or(0) > 10,
        "{seen:?}"
    );
    for rule in [Rule::Float, Rule::IntegerRange] {
        assert!(
            seen.contains_key(&Verdict::Stricter(rule)),
            "{rule:?}: {seen:?}"
        );
    }
}

/// One input per rule: skyhouse refuses it, the oracle accepts it, and the
/// check names the rule.
#[test]
fn each_stricter_rule_is_named() {
    let sha = |codec: u8| {
        let mut c = vec![0x00, 0x01, codec, 0x12, 0x20];
        c.extend_from_slice(&[7; 32]);
        c
    };
    let link = |cid: &[u8]| {
        let mut out = vec![0xd8, 0x2a];
        cbor::write_head(&mut out, 2, cid.len() as u64);
        out.extend_from_slice(cid);
        out
    };
    let mut v0 = vec![0x00, 0x12, 0x20];
    v0.extend_from_slice(&[7; 32]);
    let mut sha512 = vec![0x00, 0x01, 0x71, 0x13, 0x40];
    sha512.extend_from_slice(&[7; 64]);
    let mut trailing = sha(0x71);
    trailing.push(0x00);
    let mut deep = vec![0x81; cbor::MAX_DEPTH + 1];
    deep.push(0x01);
    // A link whose bytes come in one chunk of an indefinite-length byte string.
    let mut chunked_link = vec![0xd8, 0x2a, 0x5f];
    cbor::write_head(&mut chunked_link, 2, sha(0x71).len() as u64);
    chunked_link.extend_from_slice(&sha(0x71));
    chunked_link.push(0xff);
    let cases: Vec<(Vec<u8>, Rule)> = vec![
        (hex("fb3ff8000000000000"), Rule::Float),        // 1.5
        (hex("a16161fbc010000000000000"), Rule::Float),  // {"a": -4.0}
        (hex("1bffffffffffffffff"), Rule::IntegerRange), // 2^64-1
        (hex("3b8000000000000000"), Rule::IntegerRange), // -2^63-1
        (link(&v0), Rule::CidKind),
        (link(&sha(0x70)), Rule::CidKind), // dag-pb
        (link(&sha512), Rule::CidKind),
        (link(&trailing), Rule::CidTrailing),
        (deep, Rule::Depth),
        (hex("a17f6161ff01"), Rule::Indefinite), // {(_ "a"): 1}
        (chunked_link, Rule::Indefinite),
        // Found by the cbor_oracle fuzz target: {(_ ): "wqbam…", "m": 1.5e-130}.
        (
            read("fuzz-regressions/cbor_oracle-indefinite-key.cbor"),
            Rule::Indefinite,
        ),
    ];
    for (bytes, rule) in cases {
        assert_eq!(
            check(&bytes),
            Ok(Verdict::Stricter(rule)),
            "{}",
            crate::oracle::dagcbor::hex(&bytes)
        );
    }
    // And the valid forms of the same values agree.
    for ok in [hex("f93e00"), link(&sha(0x71)), link(&sha(0x55))] {
        let v = check(&ok);
        assert!(
            matches!(v, Ok(Verdict::Same | Verdict::BothRefuse)),
            "{v:?}"
        );
    }
}

/// A DAG-CBOR-ish value that may break the rules: non-minimal heads,
/// floats of every width, indefinite lengths, keys out of order, repeated or
/// not strings, other tags and simple values, odd CIDs, deep nesting.
#[derive(Debug, Clone)]
pub(crate) enum Loose {
    Int(u8, u64, u8),
    /// An indefinite-length text string in these chunks.
    ChunkedText(Vec<String>),
    Float64(f64),
    Float32(f32),
    Float16(u16),
    Text(String, u8),
    Utf8ish(Vec<u8>),
    Bytes(Vec<u8>, u8),
    Array(Vec<Loose>, u8, bool),
    Map(Vec<(Key, Loose)>, Order, u8, bool),
    Link(LinkKind, [u8; 32]),
    Tag(u64, u8, Box<Loose>),
    Simple(u8, u8),
    Deep(usize, Box<Loose>),
}

#[derive(Debug, Clone)]
pub(crate) enum Key {
    Text(String),
    Int(u64),
    /// An indefinite-length text string in these chunks.
    Chunked(Vec<String>),
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Order {
    Canonical,
    AsGenerated,
    Reversed,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum LinkKind {
    DagCbor,
    Raw,
    Blake3,
    V0,
    DagPb,
    Sha512,
    Identity,
    Trailing,
    NoPrefix,
    ShortDigest,
    /// A dag-cbor CID inside an indefinite-length byte string.
    Chunked,
}

/// A CBOR head for `arg`, `wide` sizes wider than the shortest (0: shortest).
pub(crate) fn loose_head(out: &mut Vec<u8>, major: u8, arg: u64, wide: u8) {
    let shortest = match arg {
        0..=23 => 0,
        24..=0xff => 1,
        0x100..=0xffff => 2,
        0x1_0000..=0xffff_ffff => 3,
        _ => 4,
    };
    let m = major << 5;
    match (shortest + wide).min(4) {
        0 => out.push(m | arg as u8),
        1 => out.extend_from_slice(&[m | 24, arg as u8]),
        2 => {
            out.push(m | 25);
            out.extend_from_slice(&(arg as u16).to_be_bytes());
        }
        3 => {
            out.push(m | 26);
            out.extend_from_slice(&(arg as u32).to_be_bytes());
        }
        _ => {
            out.push(m | 27);
            out.extend_from_slice(&arg.to_be_bytes());
        }
    }
}

impl LinkKind {
    /// The tag-42 byte string's content.
    fn bytes(self, digest: &[u8; 32]) -> Vec<u8> {
        let v1 = |codec: u8, hash: u8, len: u8| {
            let mut c = vec![0x00, 0x01, codec, hash, len];
            c.extend_from_slice(&digest[..usize::from(len).min(32)]);
            c
        };
        match self {
            LinkKind::DagCbor => v1(0x71, 0x12, 32),
            LinkKind::Raw => v1(0x55, 0x12, 32),
            LinkKind::Blake3 => v1(0x71, 0x1e, 32),
            LinkKind::V0 => {
                let mut c = vec![0x00, 0x12, 0x20];
                c.extend_from_slice(digest);
                c
            }
            LinkKind::DagPb => v1(0x70, 0x12, 32),
            LinkKind::Sha512 => {
                let mut c = v1(0x71, 0x13, 64);
                c.extend_from_slice(digest);
                c
            }
            LinkKind::Identity => v1(0x71, 0x00, 5),
            LinkKind::Trailing => {
                let mut c = v1(0x71, 0x12, 32);
                c.push(digest[0]);
                c
            }
            LinkKind::NoPrefix => v1(0x71, 0x12, 32)[1..].to_vec(),
            LinkKind::ShortDigest => v1(0x71, 0x12, 20),
            LinkKind::Chunked => v1(0x71, 0x12, 32),
        }
    }
}

impl Loose {
    /// The bytes of this value.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Loose::Int(major, arg, wide) => loose_head(out, *major, *arg, *wide),
            Loose::ChunkedText(chunks) => chunked(out, 3, chunks.iter().map(|c| c.as_bytes())),
            Loose::Float64(f) => {
                out.push(0xfb);
                out.extend_from_slice(&f.to_be_bytes());
            }
            Loose::Float32(f) => {
                out.push(0xfa);
                out.extend_from_slice(&f.to_be_bytes());
            }
            Loose::Float16(bits) => {
                out.push(0xf9);
                out.extend_from_slice(&bits.to_be_bytes());
            }
            Loose::Text(s, wide) => {
                loose_head(out, 3, s.len() as u64, *wide);
                out.extend_from_slice(s.as_bytes());
            }
            Loose::Utf8ish(b) => {
                loose_head(out, 3, b.len() as u64, 0);
                out.extend_from_slice(b);
            }
            Loose::Bytes(b, wide) => {
                loose_head(out, 2, b.len() as u64, *wide);
                out.extend_from_slice(b);
            }
            Loose::Array(items, wide, indefinite) => {
                if *indefinite {
                    out.push(0x9f);
                } else {
                    loose_head(out, 4, items.len() as u64, *wide);
                }
                for v in items {
                    v.encode(out);
                }
                if *indefinite {
                    out.push(0xff);
                }
            }
            Loose::Map(entries, order, wide, indefinite) => {
                let mut entries: Vec<&(Key, Loose)> = entries.iter().collect();
                match order {
                    Order::Canonical => entries.sort_by(|a, b| match (&a.0, &b.0) {
                        (Key::Text(x), Key::Text(y)) => cbor::key_order(x, y),
                        (Key::Int(x), Key::Int(y)) => x.cmp(y),
                        (Key::Text(_), _) => std::cmp::Ordering::Less,
                        (_, Key::Text(_)) => std::cmp::Ordering::Greater,
                        _ => std::cmp::Ordering::Equal,
                    }),
                    Order::AsGenerated => {}
                    Order::Reversed => entries.reverse(),
                }
                if *indefinite {
                    out.push(0xbf);
                } else {
                    loose_head(out, 5, entries.len() as u64, *wide);
                }
                for (k, v) in entries {
                    match k {
                        Key::Text(s) => {
                            loose_head(out, 3, s.len() as u64, 0);
                            out.extend_from_slice(s.as_bytes());
                        }
                        Key::Int(i) => loose_head(out, 0, *i, 0),
                        Key::Chunked(chunks) => {
                            chunked(out, 3, chunks.iter().map(|c| c.as_bytes()))
                        }
                    }
                    v.encode(out);
                }
                if *indefinite {
                    out.push(0xff);
                }
            }
            Loose::Link(kind, digest) => {
                out.extend_from_slice(&[0xd8, 0x2a]);
                let b = kind.bytes(digest);
                if let LinkKind::Chunked = kind {
                    chunked(out, 2, [&b[..]].into_iter());
                } else {
                    loose_head(out, 2, b.len() as u64, 0);
                    out.extend_from_slice(&b);
                }
            }
            Loose::Tag(tag, wide, inner) => {
                loose_head(out, 6, *tag, *wide);
                inner.encode(out);
            }
            Loose::Simple(b, extra) => {
                out.push(*b);
                if *b == 0xf8 {
                    out.push(*extra);
                }
            }
            Loose::Deep(n, inner) => {
                out.extend(std::iter::repeat_n(0x81, *n));
                inner.encode(out);
            }
        }
    }
}

/// An indefinite-length byte (major 2) or text (3) string of `chunks`.
fn chunked<'a>(out: &mut Vec<u8>, major: u8, chunks: impl Iterator<Item = &'a [u8]>) {
    out.push(major << 5 | 31);
    for c in chunks {
        loose_head(out, major, c.len() as u64, 0);
        out.extend_from_slice(c);
    }
    out.push(0xff);
}

/// How much wider than the shortest form a head is: usually not at all.
fn wide() -> impl Strategy<Value = u8> {
    prop_oneof![12 => Just(0u8), 1 => 1..=4u8]
}

/// Integers of every size, with the boundaries of each head width.
fn int_arg() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..30u64,
        any::<u64>(),
        prop::sample::select(vec![
            23,
            24,
            255,
            256,
            65535,
            65536,
            u32::MAX as u64,
            u32::MAX as u64 + 1,
            i64::MAX as u64,
            i64::MAX as u64 + 1,
            u64::MAX
        ]),
    ]
}

fn link_kind() -> impl Strategy<Value = LinkKind> {
    prop_oneof![
        8 => Just(LinkKind::DagCbor),
        2 => Just(LinkKind::Raw),
        1 => Just(LinkKind::Blake3),
        1 => Just(LinkKind::V0),
        1 => Just(LinkKind::DagPb),
        1 => Just(LinkKind::Sha512),
        1 => Just(LinkKind::Identity),
        1 => Just(LinkKind::Trailing),
        1 => Just(LinkKind::NoPrefix),
        1 => Just(LinkKind::ShortDigest),
        1 => Just(LinkKind::Chunked),
    ]
}

/// Loose values, mostly valid DAG-CBOR under the atproto data model, each
/// rule broken now and then.
pub(crate) fn arb_loose() -> impl Strategy<Value = Loose> {
    let leaf = prop_oneof![
        8 => (0..=1u8, int_arg(), wide()).prop_map(|(m, a, w)| Loose::Int(m, a, w)),
        1 => any::<f64>().prop_map(Loose::Float64),
        1 => prop::sample::select(vec![0.0f64, -0.0, 1.5, f64::NAN, f64::INFINITY, 1e300]).prop_map(Loose::Float64),
        1 => any::<f32>().prop_map(Loose::Float32),
        1 => any::<u16>().prop_map(Loose::Float16),
        6 => (".{0,12}", wide()).prop_map(|(s, w)| Loose::Text(s, w)),
        1 => prop::collection::vec(".{0,4}", 0..3).prop_map(Loose::ChunkedText),
        1 => prop::collection::vec(any::<u8>(), 0..6).prop_map(Loose::Utf8ish),
        4 => (prop::collection::vec(any::<u8>(), 0..12), wide()).prop_map(|(b, w)| Loose::Bytes(b, w)),
        4 => (link_kind(), any::<[u8; 32]>()).prop_map(|(k, d)| Loose::Link(k, d)),
        3 => prop::sample::select(vec![0xf4u8, 0xf5, 0xf6]).prop_map(|b| Loose::Simple(b, 0)),
        1 => prop::sample::select(vec![0xf7u8, 0xe0, 0xf3, 0xf8, 0xfc, 0xff]).prop_map(|b| Loose::Simple(b, 20)),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        let key = prop_oneof![
            24 => "[a-c]{0,3}".prop_map(Key::Text),
            2 => (0..30u64).prop_map(Key::Int),
            1 => prop::collection::vec("[a-c]{0,2}", 0..3).prop_map(Key::Chunked),
        ];
        let order = prop_oneof![
            10 => Just(Order::Canonical),
            1 => Just(Order::AsGenerated),
            1 => Just(Order::Reversed),
        ];
        let indefinite = prop_oneof![20 => Just(false), 1 => Just(true)];
        prop_oneof![
            6 => (prop::collection::vec(inner.clone(), 0..6), wide(), indefinite.clone())
                .prop_map(|(items, w, i)| Loose::Array(items, w, i)),
            6 => (prop::collection::vec((key, inner.clone()), 0..6), order, wide(), indefinite)
                .prop_map(|(entries, o, w, i)| {
                    // Mostly distinct keys; the rest keep their repeats.
                    Loose::Map(entries, o, w, i)
                }),
            1 => (prop::sample::select(vec![0u64, 1, 2, 3, 24, 42, 55799, 1 << 40]), wide(), inner.clone())
                .prop_map(|(t, w, v)| Loose::Tag(t, w, Box::new(v))),
            1 => (60..=70usize, inner).prop_map(|(n, v)| Loose::Deep(n, Box::new(v))),
        ]
    })
}

/// Loose values encoded, a trailing byte now and then.
pub(crate) fn loose_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        arb_loose(),
        prop_oneof![30 => Just(None), 1 => any::<u8>().prop_map(Some)],
    )
        .prop_map(|(v, trailing)| {
            let mut out = Vec::new();
            v.encode(&mut out);
            out.extend(trailing);
            out
        })
}

/// One change to a byte string.
#[derive(Debug, Clone)]
pub(crate) enum Mutation {
    Flip(prop::sample::Index, u8),
    Set(prop::sample::Index, u8),
    Insert(prop::sample::Index, u8),
    Remove(prop::sample::Index),
    Truncate(prop::sample::Index),
}

pub(crate) fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<prop::sample::Index>(), 0..8u8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<prop::sample::Index>().prop_map(Mutation::Remove),
        any::<prop::sample::Index>().prop_map(Mutation::Truncate),
    ]
}

/// Apply `m` to `bytes` (nothing to do on an empty input but insert).
pub(crate) fn mutate(bytes: &mut Vec<u8>, m: &Mutation) {
    if bytes.is_empty() {
        if let Mutation::Insert(_, b) = m {
            bytes.push(*b);
        }
        return;
    }
    let len = bytes.len();
    match m {
        Mutation::Flip(i, bit) => bytes[i.index(len)] ^= 1 << bit,
        Mutation::Set(i, b) => bytes[i.index(len)] = *b,
        Mutation::Insert(i, b) => bytes.insert(i.index(bytes.len() + 1), *b),
        Mutation::Remove(i) => {
            bytes.remove(i.index(bytes.len()));
        }
        Mutation::Truncate(i) => bytes.truncate(i.index(bytes.len())),
    }
}

/// Generated data-model values: skyhouse's encoding decodes to the same
/// value in the oracle, and the oracle encodes it to the same bytes.
#[test]
fn generated_values_decode_the_same_in_the_oracle() {
    let seen = tally(2000, arb_value().prop_map(|v| cbor::encode(&v)));
    assert_eq!(
        seen.keys().collect::<Vec<_>>(),
        [&Verdict::Same],
        "{seen:?}"
    );
}

/// Near-valid encodings: both agree, or skyhouse refuses under a named rule.
/// Every rule and the agreeing cases must show up.
#[test]
fn loose_encodings_agree_or_break_a_named_rule() {
    let seen = tally(6000, loose_bytes());
    println!("loose encodings against the oracle: {seen:?}");
    assert!(
        seen.get(&Verdict::Same).copied().unwrap_or(0) > 600,
        "{seen:?}"
    );
    assert!(
        seen.get(&Verdict::BothRefuse).copied().unwrap_or(0) > 600,
        "{seen:?}"
    );
    for rule in Rule::ALL {
        assert!(
            seen.contains_key(&Verdict::Stricter(rule)),
            "{rule:?} never seen: {seen:?}"
        );
    }
}

/// Valid and loose encodings with a few bytes changed.
#[test]
fn mutated_encodings_agree_or_break_a_named_rule() {
    let valid = arb_value().prop_map(|v| cbor::encode(&v));
    let base = prop_oneof![valid, loose_bytes()];
    let seen = tally(
        4000,
        (base, prop::collection::vec(mutation(), 1..4)).prop_map(|(mut bytes, ms)| {
            for m in &ms {
                mutate(&mut bytes, m);
            }
            bytes
        }),
    );
    println!("mutated encodings against the oracle: {seen:?}");
    assert!(
        seen.get(&Verdict::Same).copied().unwrap_or(0) > 100,
        "{seen:?}"
    );
    assert!(
        seen.get(&Verdict::BothRefuse).copied().unwrap_or(0) > 1000,
        "{seen:?}"
    );
}

/// Arbitrary bytes: mostly refused by both, never a divergence.
#[test]
fn arbitrary_bytes_agree_or_break_a_named_rule() {
    let seen = tally(4000, prop::collection::vec(any::<u8>(), 0..64));
    println!("arbitrary bytes against the oracle: {seen:?}");
    assert!(seen.contains_key(&Verdict::Same), "{seen:?}");
}
