//! The backfill benchmark's measuring side (`just bench-backfill`, driven by
//! `pkg/backfill/bench/bench.sh`).
//!
//! ```text
//! backfill_bench decode DIR...                         one thread, no servers
//! backfill_bench run [--clickhouse-pid PID[,PID...]] [--records N] -- SKYHOUSE ARGS...
//! ```
//!
//! `decode` loads every repository CAR listed in each DIR's `index.tsv`
//! (written by `bench/gen-backfill.mjs`) into memory, then, timed, turns each
//! into rows exactly as a worker does once `getRepo` has answered
//! (`Repo::from_shared`, [`skyhouse_backfill::repo_rows`]: MST walk,
//! DAG-CBOR decode, transform) and encodes them as the `RowBinary` an insert
//! sends: skyhouse's own CPU per record, with no HTTP, Redis or ClickHouse.
//!
//! `run` starts `SKYHOUSE ARGS... --metrics-addr 127.0.0.1:<free port>`
//! (a `skyhouse backfill work --drain …`), samples its CPU seconds and the
//! ClickHouse server's (`/proc/<pid>/stat`) and the records it has written
//! (`skyhouse_backfill_records_total` from its `/metrics`) every 250 ms
//! until it exits, and prints the figures: `whole` (start to exit), `steady`
//! (from 10% to 90% of `--records`, the run's total) and `startup` (start to
//! 10%), each with records/s, CPU µs per record on each side, the bound
//! `cores ÷ (sum)` and the fraction of it reached, and the cores other
//! processes used; the worker's peak RSS (`VmHWM`, last read before it
//! exited), the load averages, and the server's CPU after the run until it
//! is quiet (merges).
//!
//! Both print one JSON line.

use std::collections::HashSet;
use std::io::{BufRead, Read, Write};
use std::time::Duration;

use skyhouse_atproto::car::CarOptions;
use skyhouse_atproto::repo::Repo;
use skyhouse_testkit::bench::{self, Probe, Snapshot};
use skyhouse_transform::Rows;

/// As in the `skyhouse` binary.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("decode") => decode(&args[1..])?,
        Some("run") => run(&args[1..])?,
        _ => {
            return Err("usage: backfill_bench decode DIR... | backfill_bench run \
                        [--clickhouse-pid PID[,PID...]] [--records N] -- SKYHOUSE ARGS..."
                .into())
        }
    };
    println!("{out}");
    Ok(())
}

/// The repositories of `dir/index.tsv`: (DID, CAR bytes).
fn load(dir: &str) -> Result<Vec<(String, Vec<u8>)>, BoxError> {
    let index = std::fs::File::open(format!("{dir}/index.tsv"))
        .map_err(|e| format!("{dir}/index.tsv: {e}"))?;
    let mut out = Vec::new();
    for line in std::io::BufReader::new(index).lines() {
        let line = line?;
        let cols: Vec<&str> = line.split('\t').collect();
        let (Some(did), Some(file)) = (cols.first(), cols.get(2)) else {
            continue;
        };
        let car = std::fs::read(format!("{dir}/{file}")).map_err(|e| format!("{file}: {e}"))?;
        out.push((did.to_string(), car));
    }
    Ok(out)
}

fn decode(dirs: &[String]) -> Result<serde_json::Value, BoxError> {
    if dirs.is_empty() {
        return Err("decode needs a directory with an index.tsv".into());
    }
    let mut repos = Vec::new();
    for dir in dirs {
        repos.extend(load(dir)?);
    }
    let car_bytes: usize = repos.iter().map(|(_, c)| c.len()).sum();
    let n_repos = repos.len();
    let mut encoded: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let (mut records, mut bytes) = (0u64, 0u64);
    let mut keys: HashSet<(String, String)> = HashSet::new();
    let recycler = skyhouse_transform::Recycler::default();
    let load = bench::load_avg();
    bench::reset_peak_rss();
    let probe = Probe::this_thread();
    let start = probe.snapshot(0);
    let mut snapshots = vec![start];
    for (did, car) in repos.drain(..) {
        // What a worker does with a CAR read whole (`Fetched::Car`).
        let opts = CarOptions {
            size_hint: Some(car.len() as u64),
            ..CarOptions::default()
        };
        let repo = Repo::from_vec(car, opts)?;
        let version = repo.commit.rev_u64().ok_or("commit rev is not a TID")?;
        keys.clear();
        records += skyhouse_backfill::repo_rows(
            &repo,
            &did,
            version,
            0,
            None,
            || {
                // As the worker keeps them (`Rows::keep_encoded`), in the
                // buffers the writer gave back (`Rows::recycle`).
                let mut rows = Rows::default();
                rows.keep_encoded();
                rows.recycle_via(&recycler);
                rows
            },
            |rows: Rows| {
                rows.encode_into(&mut encoded);
                for (_, b) in &mut encoded {
                    bytes += b.len() as u64;
                    b.clear();
                }
                rows.recycle();
                Ok(())
            },
        )?;
        snapshots.push(probe.snapshot(records));
    }
    let end = probe.snapshot(records);
    let steady = bench::steady(&snapshots, records, 0.1, 0.9);
    Ok(serde_json::json!({
        "case": "decode",
        "cores": bench::cores(),
        "repos": n_repos,
        "records": records,
        "car_mb": bench::round(car_bytes as f64 / 1e6, 1),
        "rowbinary_bytes_per_record": (bytes as f64 / records.max(1) as f64).round(),
        "figures": {
            "whole": end.since(&start).figures().json(),
            "steady": steady.map(|w| w.figures().json()),
        },
        "peak_rss_mb": bench::round(bench::peak_rss_mb(), 1),
        "load_start": load,
        "load_end": bench::load_avg(),
    }))
}

/// A free loopback port (bound, then released for the child to take).
fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// `skyhouse_backfill_records_total` from the worker's `/metrics`; `None`
/// while it does not answer yet.
fn scrape_records(port: u16) -> Option<u64> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(
        body.lines()
            .filter(|l| l.starts_with("skyhouse_backfill_records_total"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// The state letter of `/proc/<pid>/stat` (`Z` once it has exited).
fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

fn run(args: &[String]) -> Result<serde_json::Value, BoxError> {
    let mut clickhouse_pid: Vec<u32> = Vec::new();
    let mut total = None;
    let mut it = args.iter();
    let mut cmd = Vec::new();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--clickhouse-pid" => {
                clickhouse_pid =
                    bench::parse_pids(it.next().ok_or("--clickhouse-pid needs a pid")?)?
            }
            "--records" => total = Some(it.next().ok_or("--records needs a number")?.parse()?),
            "--" => {
                cmd.extend(it.by_ref().cloned());
            }
            other => return Err(format!("unknown argument {other:?}").into()),
        }
    }
    let (program, rest) = cmd.split_first().ok_or("run needs a command after --")?;
    let port = free_port()?;
    let load = bench::load_avg();
    let mut child = std::process::Command::new(program)
        .args(rest)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{port}"))
        .spawn()
        .map_err(|e| format!("{program}: {e}"))?;
    let pid = child.id();
    let probe = Probe::servers(Some(pid), &clickhouse_pid);
    let start = probe.snapshot(0);
    let servers_start = probe.servers_cpu();
    let mut snapshots: Vec<Snapshot> = vec![start];
    let mut records = 0u64;
    let mut peak_rss = 0.0f64;
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if let Some(hwm) = bench::status_mb(&pid.to_string(), "VmHWM:") {
            peak_rss = peak_rss.max(hwm);
        }
        if matches!(state(pid), Some('Z') | None) {
            break;
        }
        if let Some(r) = scrape_records(port) {
            records = r;
        }
        snapshots.push(probe.snapshot(records));
    }
    // Exited but not reaped: its CPU times are still readable.
    let total_records = total.unwrap_or(records);
    let end = probe.snapshot(total_records);
    let by_server = bench::per_unit_us(&servers_start, &probe.servers_cpu(), total_records);
    let status = child.wait()?;
    if !status.success() {
        return Err(format!("{program} exited with {status}").into());
    }
    let load_end = bench::load_avg();
    let after = probe.settle_clickhouse(30.0);
    let steady = bench::steady(&snapshots, total_records, 0.1, 0.9);
    let startup = snapshots
        .iter()
        .find(|s| s.units >= total_records / 10)
        .map(|s| s.since(&start).figures().json());
    Ok(serde_json::json!({
        "cores": bench::cores(),
        "records": total_records,
        "figures": {
            "whole": end.since(&start).figures().json(),
            "steady": steady.map(|w| w.figures().json()),
            "startup": startup,
        },
        "clickhouse_us_by_server": (clickhouse_pid.len() > 1).then_some(by_server),
        "clickhouse_after_cpu_s": (!clickhouse_pid.is_empty()).then(|| bench::round(after, 2)),
        "peak_rss_mb": bench::round(peak_rss, 1),
        "load_start": load,
        "load_end": load_end,
    }))
}
