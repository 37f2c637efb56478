//! Throughput of `apply` on real traffic: the 150 commit events of the
//! production Jetstream capture in skyhouse-atproto's testdata, converted to
//! data-model values once, then applied round-robin (default 200,000 ops)
//! into a `Rows` that is cleared every 10,000 ops, as a batch writer would.
//!
//! `cargo run --release -p skyhouse-transform --example transform_bench [OPS]`
//! prints one JSON line.

use std::time::Instant;

use skyhouse_atproto::jetstream::{Event, Operation, Payload};
use skyhouse_atproto::syntax::Tid;
use skyhouse_transform::{apply, Action, Cid, Op, Rows, Value};

/// Ops per simulated batch.
const BATCH: usize = 10_000;

struct Commit {
    did: String,
    collection: String,
    rkey: String,
    action: Action,
    cid: Option<Cid>,
    record: Option<Value<'static>>,
    version: u64,
    indexed_at: u32,
}

fn load() -> Result<Vec<Commit>, Box<dyn std::error::Error>> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../atproto/testdata/jetstream/expected_v1.jsonl"
    );
    let mut out = Vec::new();
    for line in std::fs::read_to_string(path)?.lines() {
        let event = Event::from_json(line.as_bytes())?;
        let Payload::Commit { commit } = event.payload else {
            continue;
        };
        let record = match &commit.record {
            Some(r) => Some(skyhouse_atproto::json::from_lex_json(r)?),
            None => None,
        };
        out.push(Commit {
            did: event.did,
            collection: commit.collection,
            rkey: commit.rkey,
            action: match commit.operation {
                Operation::Create => Action::Create,
                Operation::Update => Action::Update,
                Operation::Delete => Action::Delete,
            },
            cid: commit.cid.as_deref().map(str::parse).transpose()?,
            record,
            version: Tid::try_from(commit.rev.as_str())?.to_u64(),
            indexed_at: u32::try_from(event.time_us / 1_000_000)?,
        });
    }
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let total: usize = match std::env::args().nth(1) {
        Some(n) => n.parse()?,
        None => 200_000,
    };
    let commits = load()?;
    let ops: Vec<Op<'_>> = commits
        .iter()
        .map(|c| Op {
            did: &c.did,
            collection: &c.collection,
            rkey: &c.rkey,
            action: c.action,
            cid: c.cid,
            record: c.record.as_ref(),
            version: c.version,
            indexed_at: c.indexed_at,
        })
        .collect();

    let mut rows = Rows::default();
    let (mut row_count, mut bytes, mut dead) = (0usize, 0usize, 0usize);
    let start = Instant::now();
    for (i, op) in ops.iter().cycle().take(total).enumerate() {
        apply(op, &mut rows);
        if (i + 1) % BATCH == 0 || i + 1 == total {
            row_count += rows.len();
            bytes += rows.approx_bytes();
            dead += rows.dead_letters.len();
            std::hint::black_box(&rows);
            rows.clear();
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "{}",
        serde_json::json!({
            "bench": "transform_apply",
            "corpus_ops": ops.len(),
            "ops": total,
            "rows": row_count,
            "dead_letters": dead,
            "secs": (secs * 1e4).round() / 1e4,
            "ops_per_sec": (total as f64 / secs).round(),
            "rows_per_sec": (row_count as f64 / secs).round(),
            "rowbinary_bytes_per_op": (bytes as f64 / total as f64).round(),
        })
    );
    Ok(())
}
