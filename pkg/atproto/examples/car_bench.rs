//! Walk-and-decode throughput of a repository CAR, for `just bench-car`.
//!
//! `cargo run --release -p skyhouse-atproto --example car_bench -- FILE.car [ITERATIONS]`
//!
//! Each iteration indexes the CAR in memory (zero-copy; every block's sha2-256 checked),
//! decodes the commit, walks the MST in key order and decodes every record to
//! a data-model value: the same work `@atproto/repo` does in bench/node-walk.mjs.
//! `--no-verify` (third argument) skips the hash check, to show its cost.
//! Prints one JSON line: bytes, records, median seconds, MB/s (1 MB = 1e6 bytes),
//! records/s and peak RSS.

use std::sync::Arc;
use std::time::Instant;

use skyhouse_atproto::car::CarOptions;
use skyhouse_atproto::cbor;
use skyhouse_atproto::repo::Repo;

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn walk(bytes: &Arc<[u8]>, verify: bool) -> usize {
    let opts = CarOptions {
        verify_hashes: verify,
        ..CarOptions::default()
    };
    let repo = Repo::from_shared(bytes.clone(), opts).unwrap_or_else(|e| {
        eprintln!("car_bench: {e}");
        std::process::exit(1)
    });
    let mut records = 0usize;
    repo.walk(|r| {
        let data = r.data.ok_or("missing record block")?;
        let v = cbor::decode(data).map_err(|_| "bad record")?;
        std::hint::black_box(&v);
        records += 1;
        Ok::<_, &str>(())
    })
    .unwrap_or_else(|e| {
        eprintln!("car_bench: {e}");
        std::process::exit(1)
    });
    records
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: car_bench FILE.car [ITERATIONS]");
        std::process::exit(2)
    };
    let iters: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    // `--no-verify` skips the block hash check, to show what hashing costs.
    let verify = args.next().as_deref() != Some("--no-verify");
    let bytes: Arc<[u8]> = std::fs::read(&path)
        .unwrap_or_else(|e| {
            eprintln!("car_bench: {path}: {e}");
            std::process::exit(1)
        })
        .into();
    let records = walk(&bytes, verify); // warm-up
    let mut times: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let t = Instant::now();
            let n = walk(&bytes, verify);
            assert_eq!(n, records);
            t.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    println!(
        "{{\"impl\":\"skyhouse{}\",\"bytes\":{},\"records\":{},\"median_s\":{:.6},\"mb_per_s\":{:.1},\"records_per_s\":{:.0},\"peak_rss_mb\":{:.1}}}",
        if verify { "" } else { " (no hash check)" },
        bytes.len(),
        records,
        median,
        bytes.len() as f64 / 1e6 / median,
        records as f64 / median,
        peak_rss_mb()
    );
}
