//! skyhouse's CAR reader and DAG-CBOR decoder against the crates the tests
//! use as oracles (iroh-car, serde_ipld_dagcbor), for `just bench-car`: is
//! skyhouse's own code still the faster one on the hot path?
//!
//! `cargo run --release -p skyhouse-atproto --example oracle_bench -- FILE.car [ITERATIONS]`
//!
//! Three measurements on the same CAR, each the median of ITERATIONS runs:
//! reading every `(CID, block)` (no hash checks: iroh-car has none), decoding
//! every block to a data-model value (skyhouse `Value`, oracle `Ipld`), and
//! both together. Prints one JSON line per measurement with MB/s of CAR
//! bytes for each implementation and their ratio.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Instant;

use ipld_core::ipld::Ipld;
use skyhouse_atproto::car::{read_car_bytes, CarOptions};
use skyhouse_atproto::cbor;

/// Poll a future that never waits (iroh-car reading memory).
fn block_on<F: Future>(f: F) -> F::Output {
    match pin!(f).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("reading memory never waits"),
    }
}

fn die(msg: String) -> ! {
    eprintln!("oracle_bench: {msg}");
    std::process::exit(1)
}

/// Every block of the CAR, read by skyhouse (first copies, file order).
fn skyhouse_blocks(car: &[u8]) -> Vec<Vec<u8>> {
    let opts = CarOptions {
        verify_hashes: false,
        ..CarOptions::default()
    };
    let (_, store) = read_car_bytes(car, opts).unwrap_or_else(|e| die(e.to_string()));
    let mut out = Vec::with_capacity(store.len());
    for cid in store.cids() {
        store
            .with_block(cid, |b| out.push(b.unwrap_or_default().to_vec()))
            .unwrap_or_else(|e| die(e.to_string()));
    }
    out
}

/// Every block of the CAR, read by iroh-car.
fn iroh_blocks(car: &[u8]) -> Vec<Vec<u8>> {
    block_on(async {
        let mut r = iroh_car::CarReader::new(tokio::io::BufReader::new(car))
            .await
            .unwrap_or_else(|e| die(e.to_string()));
        let mut out = Vec::new();
        while let Some((_, data)) = r.next_block().await.unwrap_or_else(|e| die(e.to_string())) {
            out.push(data);
        }
        out
    })
}

/// skyhouse reading and decoding every block: blocks decoded.
fn skyhouse_read_decode(car: &[u8], decode: bool) -> usize {
    let opts = CarOptions {
        verify_hashes: false,
        ..CarOptions::default()
    };
    let (_, store) = read_car_bytes(car, opts).unwrap_or_else(|e| die(e.to_string()));
    let mut n = 0;
    for cid in store.cids() {
        store
            .with_block(cid, |b| {
                let b = b.unwrap_or_default();
                if decode {
                    let v = cbor::decode(b).unwrap_or_else(|e| die(e.to_string()));
                    std::hint::black_box(&v);
                } else {
                    std::hint::black_box(b);
                }
                n += 1;
            })
            .unwrap_or_else(|e| die(e.to_string()));
    }
    n
}

/// iroh-car reading and serde_ipld_dagcbor decoding every block.
fn oracle_read_decode(car: &[u8], decode: bool) -> usize {
    block_on(async {
        let mut r = iroh_car::CarReader::new(tokio::io::BufReader::new(car))
            .await
            .unwrap_or_else(|e| die(e.to_string()));
        let mut n = 0;
        while let Some((_, data)) = r.next_block().await.unwrap_or_else(|e| die(e.to_string())) {
            if decode {
                let v: Ipld =
                    serde_ipld_dagcbor::from_slice(&data).unwrap_or_else(|e| die(e.to_string()));
                std::hint::black_box(&v);
            } else {
                std::hint::black_box(&data);
            }
            n += 1;
        }
        n
    })
}

/// Median seconds of `iters` runs of `f` (after one warm-up).
fn median(iters: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..iters.max(1))
        .map(|_| {
            let start = Instant::now();
            f();
            start.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next() else {
        eprintln!("usage: oracle_bench FILE.car [ITERATIONS]");
        std::process::exit(2)
    };
    let iters: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);
    let car = std::fs::read(&path).unwrap_or_else(|e| die(format!("{path}: {e}")));
    let ours = skyhouse_blocks(&car);
    let theirs = iroh_blocks(&car);
    if ours.len() != theirs.len() {
        // Repeated CIDs: skyhouse keeps the first copy, iroh-car every copy.
        eprintln!(
            "oracle_bench: {} blocks (skyhouse, repeats dropped), {} (iroh-car)",
            ours.len(),
            theirs.len()
        );
    }
    let mb = car.len() as f64 / 1e6;
    let line = |what: &str, a: f64, b: f64| {
        println!(
            "{{\"bench\":\"{what}\",\"bytes\":{},\"blocks\":{},\"skyhouse_mb_per_s\":{:.1},\"oracle_mb_per_s\":{:.1},\"skyhouse_over_oracle\":{:.2}}}",
            car.len(),
            ours.len(),
            mb / a,
            mb / b,
            b / a
        );
    };
    let a = median(iters, || {
        std::hint::black_box(skyhouse_read_decode(&car, false));
    });
    let b = median(iters, || {
        std::hint::black_box(oracle_read_decode(&car, false));
    });
    line("read CAR (skyhouse vs iroh-car)", a, b);
    let a = median(iters, || {
        for block in &ours {
            std::hint::black_box(cbor::decode(block).unwrap_or_else(|e| die(e.to_string())));
        }
    });
    let b = median(iters, || {
        for block in &ours {
            let v: Ipld =
                serde_ipld_dagcbor::from_slice(block).unwrap_or_else(|e| die(e.to_string()));
            std::hint::black_box(v);
        }
    });
    line("decode blocks (skyhouse vs serde_ipld_dagcbor)", a, b);
    let a = median(iters, || {
        std::hint::black_box(skyhouse_read_decode(&car, true));
    });
    let b = median(iters, || {
        std::hint::black_box(oracle_read_decode(&car, true));
    });
    line("read + decode", a, b);
}
