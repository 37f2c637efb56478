//! Indexer benchmark: replay a generated stream through the full pipeline
//! (source → decode + transform → batch writer → ClickHouse → acked cursor
//! in Redis) and print one JSON line.
//!
//! The input comes from `bench/gen-stream.mjs PREFIX N` (`just bench-indexer`
//! generates it when missing): `PREFIX.frames` (firehose frames),
//! `PREFIX.jsonl` (the same events from Jetstream) and `PREFIX.dids.json`
//! (DID → did:key, the keys of `--verify` without a network).
//!
//! ```text
//! cargo run --release -p skyhouse-pipeline --example indexer_bench -- \
//!     --case jetstream|firehose|firehose-verify|check --prefix bench/out/stream-1000000 \
//!     [--clickhouse URL] [--redis URL] [--database NAME] \\
//!     [--batch-rows N] [--batch-bytes N] [--clickhouse-pid PID]
//! ```
//!
//! `--case decode-jetstream|decode-firehose` decodes and transforms only, on
//! one thread, with no servers: the client's own ceiling. `--clickhouse-pid`
//! adds the server's CPU seconds during the run (`clickhouse_cpu_s`): with
//! both on the same 2 cores, client + server CPU per event bounds events/s.
//!
//! One case per process, so that `peak_rss_mb` (`VmHWM`) is that case's
//! alone. Each case drops and re-creates the database (default
//! `skyhouse_bench_indexer`), migrates it, then times `skyhouse_pipeline::run`
//! from the start until the source is exhausted and every batch is acked.
//! `p99_latency_ms` is the 0.99 quantile of
//! `skyhouse_indexer_ack_latency_seconds` (a decoded group received → its
//! batch acknowledged by ClickHouse, i.e. queryable). `check` decodes every
//! frame, verifies every commit with the key from `dids.json`, and compares
//! the frames' ops with the Jetstream events, one by one; no servers.
//!
//! ClickHouse and Redis default to `CLICKHOUSE_ADDRESS` / `REDIS_ADDRESS`, or
//! the `just up` servers (http://127.0.0.1:8123, redis://127.0.0.1:6379).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::Instant;

use skyhouse_atproto::commit::Commit;
use skyhouse_atproto::crypto::PublicKey;
use skyhouse_atproto::frame::Frame;
use skyhouse_atproto::jetstream::{Event, Payload};
use skyhouse_pipeline::{IndexerConfig, KeyError, KeyFuture, Keys};
use skyhouse_sources::{CancellationToken, SourceConfig, SourceKind};
use skyhouse_state::State;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::{ClickHouse, ClickHouseConfig};

/// mimalloc, as store_bench: rows are built on the decode task's thread and
/// freed on the writer's; glibc's malloc spends ~35% of the Jetstream run in
/// malloc/free and arena lock contention there. (The `skyhouse` binary
/// still uses the system allocator: see the commit message.)
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug)]
struct Args {
    case: String,
    prefix: String,
    clickhouse: String,
    redis: String,
    database: String,
    batch_rows: Option<usize>,
    batch_bytes: Option<usize>,
    clickhouse_pid: Option<u32>,
}

fn parse_args() -> Result<Args, BoxError> {
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.to_owned());
    let mut args = Args {
        case: String::new(),
        prefix: String::new(),
        clickhouse: env("CLICKHOUSE_ADDRESS", "http://127.0.0.1:8123"),
        redis: env("REDIS_ADDRESS", "redis://127.0.0.1:6379"),
        database: "skyhouse_bench_indexer".to_owned(),
        batch_rows: None,
        batch_bytes: None,
        clickhouse_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--case" => args.case = value()?,
            "--prefix" => args.prefix = value()?,
            "--clickhouse" => args.clickhouse = value()?,
            "--redis" => args.redis = value()?,
            "--database" => args.database = value()?,
            "--batch-rows" => args.batch_rows = Some(value()?.parse()?),
            "--batch-bytes" => args.batch_bytes = Some(value()?.parse()?),
            "--clickhouse-pid" => args.clickhouse_pid = Some(value()?.parse()?),
            "-h" | "--help" => {
                eprintln!(
                    "indexer_bench --case jetstream|firehose|firehose-verify|decode-jetstream|\
                     decode-firehose|check --prefix PREFIX [--clickhouse URL] [--redis URL] \
                     [--database NAME] [--batch-rows N] [--batch-bytes N] [--clickhouse-pid PID]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if args.prefix.is_empty() {
        return Err("--prefix is required (bench/out/stream-N, from gen-stream.mjs)".into());
    }
    Ok(args)
}

/// `--verify` keys from `dids.json`, parsed once: lookups cost a map probe.
#[derive(Debug)]
struct MapKeys(HashMap<String, PublicKey>);

impl MapKeys {
    fn load(path: &str) -> Result<Self, BoxError> {
        let map: HashMap<String, String> = serde_json::from_slice(&std::fs::read(path)?)?;
        let mut keys = HashMap::with_capacity(map.len());
        for (did, key) in map {
            let key = PublicKey::from_did_key(&key).map_err(|e| format!("{did}: {e}"))?;
            keys.insert(did, key);
        }
        Ok(MapKeys(keys))
    }
}

impl Keys for MapKeys {
    fn signing_key<'a>(&'a self, did: &'a str, _fresh: bool) -> KeyFuture<'a> {
        let key = self.0.get(did).cloned().ok_or_else(|| KeyError {
            message: format!("{did}: not in dids.json"),
            retriable: false,
        });
        Box::pin(std::future::ready(key))
    }
}

/// `VmHWM` or `VmRSS` of this process, in MiB.
fn proc_status_mb(field: &str) -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// User + system CPU seconds of this process so far (`/proc/self/stat`,
/// 100 ticks/s): steadier than wall time on a shared machine.
fn cpu_secs() -> f64 {
    proc_cpu_secs("self")
}

/// User + system CPU seconds of process `pid` (`self` or a number).
fn proc_cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// The 0.99 quantile of the ack latency histogram, in ms, from the
/// Prometheus rendering.
fn p99_ms(rendered: &str) -> Option<f64> {
    rendered
        .lines()
        .find(|l| {
            l.starts_with("skyhouse_indexer_ack_latency_seconds{")
                && l.contains("quantile=\"0.99\"")
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|s| s * 1000.0)
}

/// Calls `f` with every frame of a `[u32 BE length][frame]` file.
fn each_frame(
    path: &str,
    mut f: impl FnMut(&[u8]) -> Result<(), BoxError>,
) -> Result<(), BoxError> {
    let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let mut len = [0u8; 4];
    let mut frame = Vec::new();
    loop {
        match r.read_exact(&mut len) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(e) => return Err(e.into()),
        }
        frame.resize(u32::from_be_bytes(len) as usize, 0);
        r.read_exact(&mut frame)?;
        f(&frame)?;
    }
}

/// Decode and verify every frame; compare its ops with the Jetstream file.
fn check(args: &Args) -> Result<serde_json::Value, BoxError> {
    let started = Instant::now();
    let keys = MapKeys::load(&format!("{}.dids.json", args.prefix))?;
    // (did, collection/rkey, cid or "") of every op, in stream order
    let mut from_frames = Vec::new();
    let (mut commits, mut others, mut bytes) = (0u64, 0u64, 0u64);
    each_frame(&format!("{}.frames", args.prefix), |raw| {
        bytes += raw.len() as u64;
        match Frame::decode(raw)? {
            Frame::Commit(c) => {
                commits += 1;
                let store = c.block_store()?;
                let block = store
                    .get(&c.commit)?
                    .ok_or_else(|| format!("seq {}: commit block missing", c.seq))?;
                let commit = Commit::decode(&block)?;
                let key = keys
                    .0
                    .get(&c.repo)
                    .ok_or_else(|| format!("{} not in dids.json", c.repo))?;
                commit.verify(key)?;
                for op in &c.ops {
                    if let Some(cid) = op.cid {
                        let rec = store
                            .get(&cid)?
                            .ok_or_else(|| format!("seq {}: record {cid} missing", c.seq))?;
                        skyhouse_atproto::cbor::decode(&rec)?;
                    }
                    let cid = op.cid.map(|c| c.to_string()).unwrap_or_default();
                    from_frames.push((c.repo.clone(), op.path.clone(), cid));
                }
            }
            Frame::Identity(_) | Frame::Account(_) => others += 1,
            other => return Err(format!("unexpected frame {other:?}").into()),
        }
        Ok(())
    })?;
    let mut ops = 0usize;
    let mut events = 0u64;
    let file = std::fs::File::open(format!("{}.jsonl", args.prefix))?;
    for line in BufReader::with_capacity(1 << 20, file).lines() {
        let event = Event::from_json(line?.as_bytes())?;
        events += 1;
        if let Payload::Commit { commit } = &event.payload {
            let got = (
                event.did.clone(),
                format!("{}/{}", commit.collection, commit.rkey),
                commit.cid.clone().unwrap_or_default(),
            );
            if from_frames.get(ops) != Some(&got) {
                return Err(format!(
                    "Jetstream op {ops} {got:?} differs from the frames' {:?}",
                    from_frames.get(ops)
                )
                .into());
            }
            if let Some(r) = &commit.record {
                skyhouse_atproto::json::from_lex_json(r)?;
            }
            ops += 1;
        }
    }
    if ops != from_frames.len() {
        return Err(format!("{} ops in frames, {ops} in Jetstream", from_frames.len()).into());
    }
    Ok(serde_json::json!({
        "case": "check",
        "frames": commits + others,
        "commits_verified": commits,
        "ops": ops,
        "jetstream_events": events,
        "frame_mb": round(bytes as f64 / 1e6, 1),
        "secs": round(started.elapsed().as_secs_f64(), 2),
    }))
}

/// Decode + transform only, on this thread, no servers: the client's
/// ceiling. Rows are dropped every [`skyhouse_pipeline::COALESCE_ROWS`] as
/// the pipeline hands them to the writer.
fn decode_only(args: &Args, kind: &str) -> Result<serde_json::Value, BoxError> {
    let mut decoder = skyhouse_transform::Decoder::new(Default::default());
    let mut rows = skyhouse_transform::Rows::default();
    let (mut events, mut ops) = (0u64, 0u64);
    let flush = |rows: &mut skyhouse_transform::Rows| {
        if rows.len() >= skyhouse_pipeline::COALESCE_ROWS {
            drop(std::mem::take(rows));
        }
    };
    let cpu_start = cpu_secs();
    let started = Instant::now();
    match kind {
        "jetstream" => {
            let file = std::fs::File::open(format!("{}.jsonl", args.prefix))?;
            let mut reader = BufReader::with_capacity(1 << 20, file);
            let mut line = Vec::new();
            while reader.read_until(b'\n', &mut line)? > 0 {
                let d = decoder.jetstream(line.trim_ascii_end(), &mut rows);
                (events, ops) = (events + 1, ops + d.ops);
                flush(&mut rows);
                line.clear();
            }
        }
        "firehose" => each_frame(&format!("{}.frames", args.prefix), |frame| {
            let d = decoder.firehose(frame, skyhouse_transform::Verify::Off, &mut rows);
            (events, ops) = (events + 1, ops + d.ops);
            flush(&mut rows);
            Ok(())
        })?,
        other => return Err(format!("unknown --case decode-{other}").into()),
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(serde_json::json!({
        "case": args.case,
        "events": events,
        "ops": ops,
        "secs": round(secs, 2),
        "cpu_s": round(cpu_secs() - cpu_start, 2),
        "events_per_s": (events as f64 / secs).round(),
        "peak_rss_mb": round(proc_status_mb("VmHWM:"), 1),
    }))
}

async fn run_case(args: &Args) -> Result<serde_json::Value, BoxError> {
    let (kind, verify, file) = match args.case.as_str() {
        "jetstream" => (SourceKind::Jetstream, false, "jsonl"),
        "firehose" => (SourceKind::Firehose, false, "frames"),
        "firehose-verify" => (SourceKind::Firehose, true, "frames"),
        other => return Err(format!("unknown --case {other:?}").into()),
    };
    let metrics = skyhouse_telemetry::install_metrics();
    let path = std::fs::canonicalize(format!("{}.{file}", args.prefix))?;
    let keys: Option<Arc<dyn Keys>> = if verify {
        Some(Arc::new(MapKeys::load(&format!(
            "{}.dids.json",
            args.prefix
        ))?))
    } else {
        None
    };

    let ch = ClickHouse::new(ClickHouseConfig {
        user: std::env::var("CLICKHOUSE_USER").unwrap_or_default(),
        password: std::env::var("CLICKHOUSE_PASSWORD").unwrap_or_default(),
        ..ClickHouseConfig::local(&args.clickhouse, &args.database)
    })?;
    skyhouse_store::admin::drop_database(&ch).await?;
    skyhouse_store::admin::create_database(&ch).await?;
    Migrator::new(&ch, migrate::embedded()?).up().await?;
    let prefix = format!("bench:indexer:{}:{}:", args.case, std::process::id());
    let state = State::connect(&args.redis, &prefix).await?;

    let mut source = SourceConfig::new(kind);
    source.endpoints = vec![format!("file://{}", path.display())];
    let mut cfg = IndexerConfig::new(source, format!("cursor:{}", args.case));
    cfg.start_cursor = Some(0);
    cfg.verify = verify;
    if let Some(rows) = args.batch_rows {
        cfg.writer.max_rows = rows;
    }
    if let Some(bytes) = args.batch_bytes {
        cfg.writer.max_bytes = bytes;
    }

    let rss_start = proc_status_mb("VmRSS:");
    // Reset the high-water mark: count the run, not the setup.
    let _ = std::fs::write("/proc/self/clear_refs", "5");
    let server_cpu = || args.clickhouse_pid.map(|p| proc_cpu_secs(&p.to_string()));
    let server_start = server_cpu();
    let cpu_start = cpu_secs();
    let started = Instant::now();
    let summary =
        skyhouse_pipeline::run(cfg, ch.clone(), state, keys, CancellationToken::new()).await?;
    let secs = started.elapsed().as_secs_f64();
    let peak_rss = proc_status_mb("VmHWM:");
    let cpu = cpu_secs() - cpu_start;
    let server_cpu = server_cpu()
        .zip(server_start)
        .map(|(end, start)| round(end - start, 2));

    // Rows in active parts (count() without FINAL), replays included.
    let records = skyhouse_store::admin::stored_rows(&ch, &["records"]).await?;
    let dead = skyhouse_store::admin::stored_rows(&ch, &["dead_letters"]).await?;
    let rendered = metrics.render();
    Ok(serde_json::json!({
        "case": args.case,
        "events": summary.messages,
        "ops": summary.ops,
        "secs": round(secs, 2),
        "cpu_s": round(cpu, 2),
        "clickhouse_cpu_s": server_cpu,
        "events_per_s": (summary.messages as f64 / secs).round(),
        "p99_latency_ms": p99_ms(&rendered).map(|v| round(v, 1)),
        "peak_rss_mb": round(peak_rss, 1),
        "rss_start_mb": round(rss_start, 1),
        "records_rows": records,
        "dead_letters": dead,
    }))
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let out = if args.case == "check" {
        check(&args)?
    } else if let Some(kind) = args.case.strip_prefix("decode-") {
        decode_only(&args, kind)?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?
            .block_on(run_case(&args))?
    };
    println!("{out}");
    Ok(())
}
