//! skyhouse's CAR readers against `iroh-car` as an oracle.
//!
//! [`check`] reads the same bytes with skyhouse's streaming [`CarReader`],
//! its in-memory [`read_car_bytes`] and iroh-car, and says how they relate:
//!
//! - skyhouse's two readers must accept and refuse the same inputs, with the
//!   same roots and blocks (the in-memory store keeps the first copy of a
//!   repeated CID);
//! - where skyhouse and the oracle both accept: the same header roots and the
//!   same `(CID, block)` sequence;
//! - where skyhouse refuses and the oracle accepts: skyhouse's error must come
//!   from one of the [`CarRule`]s, checked on the input;
//! - where skyhouse accepts and the oracle refuses: only a CAR without roots
//!   ([`CarRule::NoRoots`]), whose blocks are then compared by giving the
//!   oracle the same blocks under a header with one root.
//!
//! Shared by the property tests (`tests/it/car_oracle.rs`) and the
//! `car_oracle` fuzz target.

#![allow(dead_code)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use ipld_core::cid::Cid as OracleCid;
use sha2::{Digest, Sha256};
use skyhouse_atproto::car::{read_car_bytes, CarError, CarOptions, CarReader};
use skyhouse_atproto::cbor::{self, Map, Value};
use skyhouse_atproto::Cid;

use super::dagcbor::{self, atproto_cid, hex, Rule, Verdict};

/// A CAR as one reader saw it: root CIDs and `(CID, data)` blocks, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Car {
    /// Binary CIDs of the header's roots.
    pub roots: Vec<Vec<u8>>,
    /// `(binary CID, block data)` in file order, repeats included.
    pub blocks: Vec<(Vec<u8>, Vec<u8>)>,
}

/// What skyhouse's streaming reader got before it stopped.
#[derive(Debug)]
pub struct Partial {
    /// Roots and the blocks read before the error.
    pub car: Car,
    /// Byte offset where the failing block (or the header) starts.
    pub at: u64,
    /// Byte offset where the blocks start (0 if the header failed).
    pub blocks_at: u64,
    /// The error.
    pub error: CarError,
}

/// Where skyhouse's CAR reading differs from iroh-car's, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CarRule {
    /// The header breaks a data-model rule (iroh-car reads it with serde
    /// into a struct, which skips unknown fields unchecked).
    Header(Rule),
    /// The header is not one valid DAG-CBOR value (the strict oracle refuses
    /// it too; iroh-car's struct decoding skipped the bad part).
    HeaderNotDagCbor,
    /// A block's CID is not CIDv1, dag-cbor or raw, sha-256 (iroh-car reads
    /// any CID, v0 included).
    CidKind,
    /// A block does not hash to its CID (iroh-car never hashes; skyhouse
    /// does when `verify_hashes` is on, and cannot check BLAKE3 CIDs).
    Hash,
    /// The input ends inside a block's length varint: iroh-car takes that
    /// for a clean end of file, skyhouse for a truncated CAR.
    TruncatedLength,
    /// skyhouse accepts a CAR whose header has no roots; iroh-car refuses
    /// it. atproto writes such CARs (`com.atproto.sync.getBlocks`,
    /// `blocksToCarFile(null, …)` in @atproto/repo).
    NoRoots,
}

impl CarRule {
    /// What the rule says, for messages.
    pub fn name(self) -> String {
        match self {
            CarRule::Header(r) => format!("CAR header: {}", r.name()),
            CarRule::HeaderNotDagCbor => "the CAR header is one valid DAG-CBOR value".into(),
            CarRule::CidKind => "block CIDs are CIDv1, dag-cbor or raw, sha-256".into(),
            CarRule::Hash => "every block hashes to its CID".into(),
            CarRule::TruncatedLength => "a CAR ends between blocks, not inside a length".into(),
            CarRule::NoRoots => "atproto CARs may have no root (getBlocks)".into(),
        }
    }
}

/// How skyhouse and the oracle agreed on one CAR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum CarVerdict {
    /// Both accepted: same roots, same blocks.
    Same,
    /// Both refused.
    BothRefuse,
    /// skyhouse refused under a rule the input breaks; the oracle accepted.
    Stricter(CarRule),
    /// skyhouse accepted where the oracle refused, under a rule; the blocks
    /// still matched.
    Laxer(CarRule),
}

/// Poll a future that never waits: iroh-car reading an in-memory slice.
fn block_on<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("reading a CAR from memory never waits"),
    }
}

/// Read `buf` with iroh-car (through a `BufReader`, as its docs ask).
pub fn oracle_read(buf: &[u8]) -> Result<Car, String> {
    block_on(async {
        let reader = tokio::io::BufReader::new(buf);
        let mut car = iroh_car::CarReader::new(reader)
            .await
            .map_err(|e| e.to_string())?;
        let roots = car
            .header()
            .roots()
            .iter()
            .map(OracleCid::to_bytes)
            .collect();
        let mut blocks = Vec::new();
        while let Some((cid, data)) = car.next_block().await.map_err(|e| e.to_string())? {
            blocks.push((cid.to_bytes(), data));
        }
        Ok(Car { roots, blocks })
    })
}

/// Read `buf` with skyhouse's streaming reader, keeping what it read before
/// any error.
pub fn skyhouse_read(buf: &[u8], opts: CarOptions) -> Result<Car, Box<Partial>> {
    let mut reader = CarReader::new(buf, opts).map_err(|error| {
        Box::new(Partial {
            car: Car::default(),
            at: 0,
            blocks_at: 0,
            error,
        })
    })?;
    let blocks_at = reader.offset();
    let mut car = Car {
        roots: reader
            .roots()
            .iter()
            .map(|c| c.as_bytes().to_vec())
            .collect(),
        blocks: Vec::new(),
    };
    let mut scratch = Vec::new();
    loop {
        let at = reader.offset();
        match reader.next_block(&mut scratch) {
            Ok(Some((cid, data))) => car.blocks.push((cid.as_bytes().to_vec(), data.to_vec())),
            Ok(None) => return Ok(car),
            Err(error) => {
                return Err(Box::new(Partial {
                    car,
                    at,
                    blocks_at,
                    error,
                }))
            }
        }
    }
}

/// Read `buf` with skyhouse's in-memory reader: roots, and blocks in first-seen order.
fn skyhouse_shared(buf: &[u8], opts: CarOptions) -> Result<Car, CarError> {
    let (roots, store) = read_car_bytes(buf, opts)?;
    let blocks = store
        .cids()
        .map(|c| {
            let data = store
                .get(c)
                .map_err(|e| CarError::Io {
                    offset: 0,
                    source: e,
                })?
                .unwrap_or_default();
            Ok((c.as_bytes().to_vec(), data))
        })
        .collect::<Result<_, CarError>>()?;
    Ok(Car {
        roots: roots.iter().map(|c| c.as_bytes().to_vec()).collect(),
        blocks,
    })
}

/// The blocks with later repeats of a CID dropped.
fn first_copies(blocks: &[(Vec<u8>, Vec<u8>)]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut seen = std::collections::HashSet::new();
    blocks
        .iter()
        .filter(|(cid, _)| seen.insert(cid.clone()))
        .cloned()
        .collect()
}

/// Options for a comparison: default caps, hashes checked or not.
pub fn options(verify_hashes: bool) -> CarOptions {
    CarOptions {
        verify_hashes,
        ..CarOptions::default()
    }
}

/// Read `buf` with skyhouse's two readers and iroh-car and compare (see the module docs).
pub fn check(buf: &[u8], verify_hashes: bool) -> Result<CarVerdict, String> {
    let ours = skyhouse_read(buf, options(verify_hashes));
    let shared = skyhouse_shared(buf, options(verify_hashes));
    match (&ours, &shared) {
        (Ok(a), Ok(b)) => {
            if a.roots != b.roots || first_copies(&a.blocks) != b.blocks {
                return Err(format!(
                    "skyhouse's streaming and in-memory readers read {} differently",
                    hex(buf)
                ));
            }
        }
        (Err(_), Err(_)) => {}
        (Ok(_), Err(e)) => {
            return Err(format!(
                "{}: only the in-memory reader refuses it: {e}",
                hex(buf)
            ))
        }
        (Err(p), Ok(_)) => {
            return Err(format!(
                "{}: only the streaming reader refuses it: {}",
                hex(buf),
                p.error
            ))
        }
    }
    let theirs = oracle_read(buf);
    match (ours, theirs) {
        (Ok(a), Ok(b)) => {
            if a == b {
                Ok(CarVerdict::Same)
            } else {
                Err(format!(
                    "both accept {}, but skyhouse reads {a:?}, iroh-car {b:?}",
                    hex(buf)
                ))
            }
        }
        (Err(_), Err(_)) => Ok(CarVerdict::BothRefuse),
        (Ok(a), Err(e)) => laxer(buf, &a, &e).map(CarVerdict::Laxer).map_err(|why| {
            format!(
                "skyhouse accepts {}, iroh-car refuses it ({e}): {why}",
                hex(buf)
            )
        }),
        (Err(p), Ok(b)) => stricter(buf, &p, &b)
            .map(CarVerdict::Stricter)
            .map_err(|why| {
                format!(
                    "skyhouse refuses {} ({}), iroh-car accepts it: {why}",
                    hex(buf),
                    p.error
                )
            }),
    }
}

/// Why skyhouse accepted what iroh-car refused: a CAR without roots, whose
/// blocks iroh-car must then read the same under a header with a root.
fn laxer(buf: &[u8], ours: &Car, oracle_error: &str) -> Result<CarRule, String> {
    if !ours.roots.is_empty() || !oracle_error.contains("empty CAR") {
        return Err("no rule lets skyhouse accept this".into());
    }
    let reader = CarReader::new(buf, options(false)).map_err(|e| e.to_string())?;
    let blocks = &buf[reader.offset() as usize..];
    let mut header = Map::new();
    header.insert(
        "roots",
        Value::Array(vec![Value::Link(Cid::compute(0x71, b"root"))]),
    );
    header.insert("version", Value::Integer(1));
    let header = cbor::encode(&Value::Map(header));
    let mut patched = Vec::new();
    push_varint(&mut patched, header.len() as u64);
    patched.extend_from_slice(&header);
    patched.extend_from_slice(blocks);
    let theirs =
        oracle_read(&patched).map_err(|e| format!("with a root, iroh-car still refuses: {e}"))?;
    if theirs.blocks != ours.blocks {
        return Err(format!(
            "with a root, iroh-car reads other blocks: {:?} vs skyhouse's {:?}",
            theirs.blocks, ours.blocks
        ));
    }
    Ok(CarRule::NoRoots)
}

/// The rule skyhouse refused `buf` under, checked on the input and on what
/// iroh-car read.
fn stricter(buf: &[u8], ours: &Partial, theirs: &Car) -> Result<CarRule, String> {
    let k = ours.car.blocks.len();
    let next = theirs.blocks.get(k);
    match &ours.error {
        CarError::Header(_) => {
            let (len, used) = read_varint(buf).ok_or("no header length")?;
            let header = usize::try_from(len)
                .ok()
                .and_then(|len| buf.get(used..used.checked_add(len)?))
                .ok_or("header runs past the input")?;
            match dagcbor::check(header) {
                Ok(Verdict::Stricter(rule)) => Ok(CarRule::Header(rule)),
                Ok(Verdict::BothRefuse) => Ok(CarRule::HeaderNotDagCbor),
                Ok(Verdict::Same) => Err("the header is valid DAG-CBOR".into()),
                Err(e) => Err(format!("the header itself diverges: {e}")),
            }
        }
        CarError::Cid { .. } => {
            let (cid, _) = next.ok_or("iroh-car has no block there")?;
            let cid = OracleCid::try_from(cid.as_slice()).map_err(|e| e.to_string())?;
            if atproto_cid(&cid) {
                Err(format!("{cid} is an atproto CID"))
            } else {
                Ok(CarRule::CidKind)
            }
        }
        CarError::HashMismatch { .. } => {
            let (cid, data) = next.ok_or("iroh-car has no block there")?;
            let cid = OracleCid::try_from(cid.as_slice()).map_err(|e| e.to_string())?;
            let hash = cid.hash();
            if hash.code() == 0x12 && hash.digest() == &Sha256::digest(data)[..] {
                Err(format!("block {cid} does hash to its CID"))
            } else {
                Ok(CarRule::Hash)
            }
        }
        CarError::Truncated { .. } => {
            let rest = &buf[ours.at as usize..];
            if k == theirs.blocks.len() && !rest.is_empty() && rest.iter().all(|b| b & 0x80 != 0) {
                Ok(CarRule::TruncatedLength)
            } else {
                Err("the input does not end inside a length varint".into())
            }
        }
        _ => Err("no rule makes skyhouse stricter here".into()),
    }
}

/// An unsigned LEB128 varint, minimal, from the front of `buf`: (value, bytes).
pub fn read_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().take(10).enumerate() {
        if i == 9 && b > 1 {
            return None; // past 64 bits
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return (i == 0 || b != 0).then_some((value, i + 1));
        }
    }
    None
}

/// Append `v` as a minimal unsigned LEB128 varint.
pub fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}
