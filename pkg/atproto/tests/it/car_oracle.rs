//! skyhouse's CAR readers against `iroh-car` (see `oracle/car.rs`): every
//! real CAR in testdata, mutations of them, and CARs built to break one rule
//! or another. Both must read the same roots and `(CID, block)` sequence, or
//! both refuse, or the difference is a named rule the input is checked to
//! break.

use std::cell::RefCell;
use std::collections::BTreeMap;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sha2::{Digest, Sha256};
use skyhouse_atproto::cbor;
use skyhouse_atproto::frame::Frame;

use crate::cbor_oracle::{arb_loose, loose_head, mutate, mutation, Loose};
use crate::oracle::car::{check, options, push_varint, skyhouse_read, CarRule, CarVerdict};
use crate::oracle::dagcbor::Rule;
use crate::*;

/// Run `strategy` for `cases` CARs through [`check`] with hashes verified
/// and not; the verdicts seen.
fn tally(
    cases: u32,
    strategy: impl Strategy<Value = Vec<u8>>,
) -> BTreeMap<(bool, CarVerdict), usize> {
    let seen = RefCell::new(BTreeMap::new());
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    runner
        .run(&strategy, |bytes| {
            for verify in [true, false] {
                let verdict = check(&bytes, verify).map_err(TestCaseError::fail)?;
                *seen.borrow_mut().entry((verify, verdict)).or_insert(0) += 1;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    seen.into_inner()
}

/// Every real CAR in testdata: repository exports, the MST suite's CARs,
/// the atproto CAR vector, and the `blocks` of every real firehose commit.
fn fixture_cars() -> Vec<(String, Vec<u8>)> {
    let mut cars: Vec<(String, Vec<u8>)> = repo_cars()
        .into_iter()
        .map(|(car, _)| (car.clone(), read(&car)))
        .collect();
    for rel in ["indigo/repo_slice.car", "skyfall/attie.car"] {
        cars.push((rel.into(), read(rel)));
    }
    let mst: Vec<_> = std::fs::read_dir(testdata("mst-test-suite/cars/exhaustive"))
        .expect("dir")
        .flatten()
        .map(|e| e.path())
        .collect();
    for path in mst {
        cars.push((
            path.display().to_string(),
            std::fs::read(&path).expect("read"),
        ));
    }
    let fixtures: Vec<serde_json::Value> =
        serde_json::from_slice(&read("atproto/car-file-fixtures.json")).expect("json");
    for (i, f) in fixtures.iter().enumerate() {
        let car = b64(f["car"].as_str().expect("car").trim_end_matches('='));
        cars.push((format!("atproto car fixture {i}"), car));
    }
    for (i, frame) in crate::jetstream::corpus_frames().into_iter().enumerate() {
        if let Ok(Frame::Commit(c)) = Frame::decode(&frame) {
            cars.push((format!("frame {i} blocks"), c.blocks.to_vec()));
        }
    }
    cars
}

#[test]
fn real_cars_read_the_same_in_iroh_car() {
    let cars = fixture_cars();
    let mut blocks = 0;
    let mut failures = Vec::new();
    for (name, car) in &cars {
        for verify in [true, false] {
            match check(car, verify) {
                Ok(CarVerdict::Same) => {}
                other => failures.push(format!("{name} (verify {verify}): {other:?}")),
            }
        }
        blocks += skyhouse_read(car, options(true)).map_or(0, |c| c.blocks.len());
    }
    println!(
        "{} real CARs, {blocks} blocks, read the same by iroh-car",
        cars.len()
    );
    assert!(cars.len() > 250, "{}", cars.len());
    assert!(blocks > 4000, "{blocks}");
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The smaller real CARs, for mutation.
fn small_cars() -> Vec<Vec<u8>> {
    fixture_cars()
        .into_iter()
        .map(|(_, car)| car)
        .filter(|car| car.len() <= 16 << 10)
        .collect()
}

/// Real CARs with a few bytes changed: both agree, or skyhouse is stricter
/// (mostly a block that no longer hashes to its CID) under a named rule.
#[test]
fn mutated_real_cars_agree_or_break_a_named_rule() {
    let cars = small_cars();
    assert!(cars.len() > 100, "{}", cars.len());
    let seen = tally(
        1500,
        (
            prop::sample::select(cars),
            prop::collection::vec(mutation(), 1..3),
        )
            .prop_map(|(mut car, ms)| {
                for m in &ms {
                    mutate(&mut car, m);
                }
                car
            }),
    );
    println!("mutated real CARs against iroh-car: {seen:?}");
    for want in [
        (true, CarVerdict::Stricter(CarRule::Hash)),
        (false, CarVerdict::Same),
        (true, CarVerdict::BothRefuse),
    ] {
        assert!(seen.contains_key(&want), "{want:?} never seen: {seen:?}");
    }
}

/// A CAR built to follow or break the rules piece by piece.
#[derive(Debug, Clone)]
struct LooseCar {
    roots: Vec<Loose>,
    version: Loose,
    extra: Option<(String, Loose)>,
    /// Keys in canonical order (else reversed).
    header_order: bool,
    blocks: Vec<LooseBlock>,
    tail: Tail,
}

#[derive(Debug, Clone)]
struct LooseBlock {
    /// A prefix for the CID: 0 dag-cbor, 1 raw, 2 v0, 3 dag-pb, 4 BLAKE3.
    kind: u8,
    data: Vec<u8>,
    right_hash: bool,
    /// Extra bytes in the length varint (non-minimal when > 0).
    padded_length: u8,
    /// Repeat the previous block.
    repeat: bool,
}

#[derive(Debug, Clone)]
enum Tail {
    None,
    /// A length varint cut short.
    CutVarint(u8),
    Junk(Vec<u8>),
    Truncate(prop::sample::Index),
}

impl LooseBlock {
    fn cid(&self) -> Vec<u8> {
        let digest: [u8; 32] = if self.right_hash {
            Sha256::digest(&self.data).into()
        } else {
            Sha256::digest(b"elsewhere").into()
        };
        let mut cid = match self.kind {
            0 => vec![0x01, 0x71, 0x12, 0x20],
            1 => vec![0x01, 0x55, 0x12, 0x20],
            2 => vec![0x12, 0x20],
            3 => vec![0x01, 0x70, 0x12, 0x20],
            _ => vec![0x01, 0x71, 0x1e, 0x20],
        };
        cid.extend_from_slice(&digest);
        cid
    }
}

impl LooseCar {
    fn encode(&self) -> Vec<u8> {
        let mut header = Vec::new();
        let roots = Loose::Array(self.roots.clone(), 0, false);
        let mut entries = vec![
            ("roots".to_string(), roots),
            ("version".to_string(), self.version.clone()),
        ];
        if let Some((k, v)) = &self.extra {
            entries.push((k.clone(), v.clone()));
        }
        entries.sort_by(|a, b| cbor::key_order(&a.0, &b.0));
        if !self.header_order {
            entries.reverse();
        }
        loose_head(&mut header, 5, entries.len() as u64, 0);
        for (k, v) in &entries {
            loose_head(&mut header, 3, k.len() as u64, 0);
            header.extend_from_slice(k.as_bytes());
            v.encode(&mut header);
        }
        let mut out = Vec::new();
        push_varint(&mut out, header.len() as u64);
        out.extend_from_slice(&header);
        let mut prev: Option<Vec<u8>> = None;
        for b in &self.blocks {
            let mut block = b.cid();
            block.extend_from_slice(&b.data);
            let block = match (&prev, b.repeat) {
                (Some(p), true) => p.clone(),
                _ => block,
            };
            let mut len = Vec::new();
            push_varint(&mut len, block.len() as u64);
            if b.padded_length > 0 {
                // The same value with zero groups appended: not minimal.
                let last = len.len() - 1;
                len[last] |= 0x80;
                len.extend(std::iter::repeat_n(0x80, usize::from(b.padded_length) - 1));
                len.push(0x00);
            }
            out.extend_from_slice(&len);
            out.extend_from_slice(&block);
            prev = Some(block);
        }
        match &self.tail {
            Tail::None => {}
            Tail::CutVarint(n) => out.extend(std::iter::repeat_n(0x81, usize::from(*n))),
            Tail::Junk(j) => out.extend_from_slice(j),
            Tail::Truncate(i) => out.truncate(i.index(out.len() + 1)),
        }
        out
    }
}

fn loose_block() -> impl Strategy<Value = LooseBlock> {
    (
        prop_oneof![12 => Just(0u8), 2 => Just(1u8), 1 => 2..=4u8],
        prop_oneof![
            arb_loose().prop_map(|v| {
                let mut out = Vec::new();
                v.encode(&mut out);
                out
            }),
            prop::collection::vec(any::<u8>(), 0..40),
        ],
        prop_oneof![12 => Just(true), 1 => Just(false)],
        prop_oneof![20 => Just(0u8), 1 => 1..=3u8],
        prop_oneof![15 => Just(false), 1 => Just(true)],
    )
        .prop_map(
            |(kind, data, right_hash, padded_length, repeat)| LooseBlock {
                kind,
                data,
                right_hash,
                padded_length,
                repeat,
            },
        )
}

fn loose_car() -> impl Strategy<Value = LooseCar> {
    let root = prop_oneof![
        10 => (any::<[u8; 32]>()).prop_map(|d| Loose::Link(crate::cbor_oracle::LinkKind::DagCbor, d)),
        1 => arb_loose(),
    ];
    (
        prop_oneof![
            10 => prop::collection::vec(root, 1..3),
            1 => Just(Vec::new()),
        ],
        prop_oneof![20 => Just(Loose::Int(0, 1, 0)), 1 => arb_loose()],
        prop_oneof![4 => Just(None), 1 => ("[a-z]{1,8}", arb_loose()).prop_map(Some)],
        prop_oneof![15 => Just(true), 1 => Just(false)],
        prop::collection::vec(loose_block(), 0..5),
        prop_oneof![
            20 => Just(Tail::None),
            2 => (1..=4u8).prop_map(Tail::CutVarint),
            1 => prop::collection::vec(any::<u8>(), 1..8).prop_map(Tail::Junk),
            1 => any::<prop::sample::Index>().prop_map(Tail::Truncate),
        ],
    )
        .prop_map(
            |(roots, version, extra, header_order, blocks, tail)| LooseCar {
                roots,
                version,
                extra,
                header_order,
                blocks,
                tail,
            },
        )
}

/// Built CARs: both agree or the difference is a named rule, and every rule
/// shows up.
#[test]
fn loose_cars_agree_or_break_a_named_rule() {
    let seen = tally(3000, loose_car().prop_map(|c| c.encode()));
    println!("loose CARs against iroh-car: {seen:?}");
    let rules = seen
        .keys()
        .filter_map(|(_, v)| match v {
            CarVerdict::Stricter(r) | CarVerdict::Laxer(r) => Some(*r),
            _ => None,
        })
        .collect::<std::collections::BTreeSet<_>>();
    for want in [
        CarRule::HeaderNotDagCbor,
        CarRule::CidKind,
        CarRule::Hash,
        CarRule::TruncatedLength,
        CarRule::NoRoots,
    ] {
        assert!(rules.contains(&want), "{want:?} never seen: {seen:?}");
    }
    assert!(
        rules.iter().any(|r| matches!(r, CarRule::Header(_))),
        "no header rule seen: {seen:?}"
    );
    for verify in [true, false] {
        assert!(
            seen.get(&(verify, CarVerdict::Same)).copied().unwrap_or(0) > 300,
            "{seen:?}"
        );
    }
}

/// Arbitrary bytes after a valid header: never a divergence.
#[test]
fn arbitrary_bytes_after_a_header_agree() {
    let header = {
        let mut h = Vec::new();
        let car = read("rsky/valid_repo.car");
        let (len, used) = crate::oracle::car::read_varint(&car).expect("header length");
        h.extend_from_slice(&car[..used + len as usize]);
        h
    };
    let seen = tally(
        2000,
        prop::collection::vec(any::<u8>(), 0..80).prop_map(move |tail| {
            let mut car = header.clone();
            car.extend_from_slice(&tail);
            car
        }),
    );
    println!("arbitrary blocks against iroh-car: {seen:?}");
    assert!(seen.contains_key(&(true, CarVerdict::Same)), "{seen:?}");
}

/// The rules, one CAR each.
#[test]
fn each_car_rule_is_named() {
    let base = LooseCar {
        roots: vec![Loose::Link(crate::cbor_oracle::LinkKind::DagCbor, [1; 32])],
        version: Loose::Int(0, 1, 0),
        extra: None,
        header_order: true,
        blocks: vec![LooseBlock {
            kind: 0,
            data: vec![0xa1, 0x61, 0x61, 0x01],
            right_hash: true,
            padded_length: 0,
            repeat: false,
        }],
        tail: Tail::None,
    };
    assert_eq!(check(&base.encode(), true), Ok(CarVerdict::Same));
    let with = |f: &dyn Fn(&mut LooseCar)| {
        let mut c = base.clone();
        f(&mut c);
        c.encode()
    };
    let cases: Vec<(Vec<u8>, CarRule)> = vec![
        (with(&|c| c.blocks[0].kind = 2), CarRule::CidKind),
        (with(&|c| c.blocks[0].right_hash = false), CarRule::Hash),
        (with(&|c| c.blocks[0].kind = 4), CarRule::Hash), // BLAKE3: skyhouse cannot check it
        (
            with(&|c| c.tail = Tail::CutVarint(1)),
            CarRule::TruncatedLength,
        ),
        (
            with(&|c| c.extra = Some(("x".into(), Loose::Float64(1.5)))),
            CarRule::Header(Rule::Float),
        ),
        (
            with(&|c| c.extra = Some(("x".into(), Loose::Int(0, 1, 1)))),
            CarRule::HeaderNotDagCbor,
        ),
        (with(&|c| c.header_order = false), CarRule::HeaderNotDagCbor),
    ];
    for (car, rule) in cases {
        assert_eq!(
            check(&car, true),
            Ok(CarVerdict::Stricter(rule)),
            "{}",
            crate::oracle::dagcbor::hex(&car)
        );
    }
    let no_roots = with(&|c| c.roots.clear());
    assert_eq!(
        check(&no_roots, true),
        Ok(CarVerdict::Laxer(CarRule::NoRoots))
    );
}
