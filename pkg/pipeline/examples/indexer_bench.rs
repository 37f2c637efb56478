//! Indexer benchmark: replay a generated stream through the full pipeline
//! (source → decode + transform → batch writer → ClickHouse → acked cursor
//! in Redis) and print one JSON line with the CPU each side spent per event.
//!
//! The input comes from `bench/gen-stream.mjs PREFIX N` (`just bench-indexer`
//! generates it when missing): `PREFIX.frames` (firehose frames),
//! `PREFIX.jsonl` (the same events from Jetstream) and `PREFIX.dids.json`
//! (DID → did:key, the keys of `--verify` without a network).
//!
//! ```text
//! cargo run --release -p skyhouse-pipeline --example indexer_bench -- \
//!     --case CASE --prefix bench/out/stream-1000000 \
//!     [--clickhouse URL] [--redis URL] [--database NAME[,NAME...]] \
//!     [--batch-rows N] [--batch-bytes N] [--clickhouse-pid PID[,PID...]] \
//!     [--raw-records all|untyped|none] [--cluster NAME] [--shard-urls URL,URL...]
//! ```
//!
//! With `--cluster` the database is on a cluster (`--clickhouse` one of its
//! servers): `create` and `drop` work `ON CLUSTER`, the indexer writes
//! through the `Distributed` tables, and `--clickhouse-pid` takes every
//! server's pid (ClickHouse's and ZooKeeper's): their CPU is summed as
//! `clickhouse_us` and given one by one in `clickhouse_us_by_server`
//! (`just bench-cluster`).
//!
//! `--raw-records` is the indexer's flag (which `records` rows keep the
//! record's JSON), for the cost of each choice.
//!
//! Cases:
//! - `jetstream`, `firehose`, `firehose-verify`: the whole indexer, into
//!   the database `--database`, which must exist and be migrated (`create`);
//!   the clock runs from `skyhouse_pipeline::run` until the source is
//!   exhausted and every batch is acked.
//! - `decode-jetstream`, `decode-firehose`: decode, transform and encode the
//!   rows as the `RowBinary` an insert sends, on one thread, no servers: the
//!   client's own cost.
//! - `insert-distributed`, `insert-local` (with `--cluster`): the firehose
//!   stream decoded and encoded beforehand into the writer's batches, then
//!   only their inserts timed: each table's rows into its `Distributed`
//!   table with `insert_distributed_sync = 1` (the writer's path), or split
//!   by shard (the key's `cityHash64` modulo the shards, as the
//!   `Distributed` table routes them; asked of ClickHouse before the clock)
//!   and inserted into `<table>_local` on one server of each shard
//!   (`--shard-urls`, in shard order) at the same time.
//! - `create`, `drop`: create and migrate (drop) the comma-separated
//!   databases of `--database`. `just bench-indexer` creates one database
//!   per case and run before the first case and drops them after the last,
//!   so no run pays for the files another one deleted (on this VM's
//!   filesystem, creating files right after many were deleted costs up to
//!   5× more per part).
//! - `check`: decode every frame, verify every commit with the key from
//!   `dids.json`, and compare the frames' ops with the Jetstream events, one
//!   by one, each Jetstream line read by the one-pass parser as by the serde
//!   model; no servers.
//!
//! Every case prints one JSON line: `whole` (the measured run) and `steady`
//! (from 10% to 90% of the events decoded, without start-up and the drain)
//! and `startup` (the start until 10%),
//! each with events/s, skyhouse's CPU µs per event (`skyhouse_us`: utime +
//! stime of this process from `/proc`, all its threads), ClickHouse's
//! (`clickhouse_us`, with `--clickhouse-pid`), the bound `cores ÷ (sum)` in
//! events/s and the fraction of it reached, and the cores other processes
//! used meanwhile (`others_cores`); besides them `clickhouse_after_cpu_s` (the server's
//! CPU after the run until it is quiet: merges of the parts the run wrote),
//! peak RSS (`VmHWM` of this process, one case per process) and the load
//! averages at the start and the end. `p99_latency_ms` is the 0.99 quantile
//! of `skyhouse_indexer_ack_latency_seconds` (a decoded group received → its
//! batch acknowledged by ClickHouse, i.e. queryable). Before a server case
//! the bench waits (up to 60 s) for ClickHouse to be quiet, so the previous
//! case's merges do not count.
//!
//! ClickHouse and Redis default to `CLICKHOUSE_ADDRESS` / `REDIS_ADDRESS`, or
//! the `just up` servers (http://127.0.0.1:8123, redis://127.0.0.1:6379).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read};
use std::sync::Arc;
use std::time::{Duration, Instant};

use skyhouse_atproto::commit::Commit;
use skyhouse_atproto::crypto::PublicKey;
use skyhouse_atproto::frame::Frame;
use skyhouse_atproto::jetstream::{Event, EventRef, Payload};
use skyhouse_pipeline::{IndexerConfig, KeyError, KeyFuture, Keys};
use skyhouse_sources::{CancellationToken, SourceConfig, SourceKind};
use skyhouse_state::State;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::{ClickHouse, ClickHouseConfig};
use skyhouse_testkit::bench::{self, Probe, Sampler};
use skyhouse_transform::Encoded;

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
    clickhouse_pid: Vec<u32>,
    raw_records: skyhouse_transform::RawRecords,
    cluster: Option<String>,
    shard_urls: Vec<String>,
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
        clickhouse_pid: Vec::new(),
        raw_records: skyhouse_transform::RawRecords::All,
        cluster: None,
        shard_urls: Vec::new(),
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
            "--clickhouse-pid" => args.clickhouse_pid = bench::parse_pids(&value()?)?,
            "--cluster" => args.cluster = Some(value()?),
            "--shard-urls" => args.shard_urls = value()?.split(',').map(str::to_owned).collect(),
            "--raw-records" => args.raw_records = value()?.parse()?,
            "-h" | "--help" => {
                eprintln!(
                    "indexer_bench --case jetstream|firehose|firehose-verify|decode-jetstream|\
                     decode-firehose|insert-distributed|insert-local|create|drop|check \
                     --prefix PREFIX [--clickhouse URL] [--redis URL] [--database NAME[,NAME...]] \
                     [--batch-rows N] [--batch-bytes N] [--clickhouse-pid PID[,PID...]] \
                     [--raw-records all|untyped|none] [--cluster NAME] [--shard-urls URL,URL...]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if args.prefix.is_empty() && !matches!(args.case.as_str(), "create" | "drop") {
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

fn round(x: f64, digits: i32) -> f64 {
    bench::round(x, digits)
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
                    .get(&*c.repo)
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
                    from_frames.push((c.repo.to_string(), op.path.to_string(), cid));
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
        let line = line?;
        let event = Event::from_json(line.as_bytes())?;
        // The decoder's one-pass parser must read the line, as the model does.
        let one_pass = EventRef::parse(line.as_bytes());
        if one_pass.is_none() || one_pass != event.to_ref().ok() {
            return Err(format!("event {events}: one-pass parse differs: {line}").into());
        }
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

/// Events (lines or frames) in the input of `kind`, counted before a run
/// (the steady-state window is a share of them).
fn count_events(args: &Args, kind: &str) -> Result<u64, BoxError> {
    let mut n = 0u64;
    if kind == "jetstream" {
        let file = std::fs::File::open(format!("{}.jsonl", args.prefix))?;
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut buf = Vec::new();
        while reader.read_until(b'\n', &mut buf)? > 0 {
            if !buf.trim_ascii().is_empty() {
                n += 1;
            }
            buf.clear();
        }
    } else {
        each_frame(&format!("{}.frames", args.prefix), |_| {
            n += 1;
            Ok(())
        })?;
    }
    Ok(n)
}

/// The figures of a run as JSON: `whole`; if the snapshots allow,
/// `steady` (10% → 90% of `total` events) and `startup` (the start → 10%).
fn figures_json(
    start: &bench::Snapshot,
    end: &bench::Snapshot,
    snapshots: &[bench::Snapshot],
    total: u64,
) -> serde_json::Value {
    let whole = end.since(start);
    let steady = bench::steady(snapshots, total, 0.1, 0.9);
    let startup = snapshots
        .iter()
        .find(|s| s.units >= total / 10)
        .map(|s| s.since(start).figures().json());
    serde_json::json!({
        "whole": whole.figures().json(),
        "steady": steady.map(|w| w.figures().json()),
        "startup": startup,
    })
}

/// Decode + transform + encode only, on this thread, no servers: the
/// client's own cost. Rows are encoded as the `RowBinary` an insert sends
/// and dropped every [`skyhouse_pipeline::COALESCE_ROWS`], as the pipeline
/// hands them to the writer.
fn decode_only(args: &Args, kind: &str) -> Result<serde_json::Value, BoxError> {
    // The whole input is read into memory before the clock starts, as the
    // backfill bench's decode case does: what is measured is decode,
    // transform and encode, not the file's reads (a source's socket or file
    // reads are counted in the service cases).
    let path = match kind {
        "jetstream" => format!("{}.jsonl", args.prefix),
        "firehose" => format!("{}.frames", args.prefix),
        other => return Err(format!("unknown --case decode-{other}").into()),
    };
    let input = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
    let messages: Vec<&[u8]> = match kind {
        "jetstream" => input
            .split(|&b| b == b'\n')
            .map(<[u8]>::trim_ascii)
            .filter(|l| !l.is_empty())
            .collect(),
        _ => skyhouse_sources::split_frame_file(&input).map_err(|e| format!("{path}: {e}"))?,
    };
    let total = messages.len() as u64;
    let mut decoder = skyhouse_transform::Decoder::new(Default::default());
    let mut rows = skyhouse_transform::Rows::default();
    rows.keep_raw_records(args.raw_records);
    // As the indexer's decode task keeps them (`Rows::keep_encoded`), their
    // buffers given back once copied, as the writer does (`Rows::recycle`).
    rows.keep_encoded();
    rows.recycle_via(&skyhouse_transform::Recycler::default());
    let mut encoded: Vec<(&'static str, Vec<u8>)> = Vec::new();
    let (mut events, mut ops, mut bytes) = (0u64, 0u64, 0u64);
    let mut flush = |rows: &mut skyhouse_transform::Rows, last: bool| {
        if rows.len() >= skyhouse_pipeline::COALESCE_ROWS || last {
            rows.encode_into(&mut encoded);
            for (_, b) in &mut encoded {
                bytes += b.len() as u64;
                b.clear();
            }
            let fresh = rows.like();
            std::mem::replace(rows, fresh).recycle();
        }
    };
    let probe = Probe::this_thread();
    let load = bench::load_avg();
    // Each message is copied into one reused buffer first, as a source's
    // socket or file read leaves it: decoding then reads memory just
    // written, not the cold input held here. That copy alone, first, on
    // this thread: the part of the figure that is the receive, not the
    // decode (reported as `receive_copy_us`).
    let mut received = Vec::new();
    let copy_start = probe.snapshot(0);
    for message in &messages {
        received.clear();
        received.extend_from_slice(message);
        std::hint::black_box(&received);
    }
    let copy = probe.snapshot(total).since(&copy_start).figures();
    let start = probe.snapshot(0);
    // Snapshots by event count: /proc reads on this thread, every 10k events.
    let mut snapshots = vec![start];
    for message in messages {
        received.clear();
        received.extend_from_slice(message);
        let d = match kind {
            "jetstream" => decoder.jetstream(&received, &mut rows),
            _ => decoder.firehose(&received, skyhouse_transform::Verify::Off, &mut rows),
        };
        (events, ops) = (events + 1, ops + d.ops);
        flush(&mut rows, false);
        if events.is_multiple_of(10_000) {
            snapshots.push(probe.snapshot(events));
        }
    }
    flush(&mut rows, true);
    let end = probe.snapshot(events);
    Ok(serde_json::json!({
        "case": args.case,
        "raw_records": args.raw_records.as_str(),
        "cores": bench::cores(),
        "events": events,
        "ops": ops,
        "rowbinary_bytes_per_event": (bytes as f64 / events.max(1) as f64).round(),
        "figures": figures_json(&start, &end, &snapshots, total),
        // Of `skyhouse_us`: the copy of each message into the receive buffer.
        "receive_copy_us": round(copy.skyhouse_us, 2),
        "peak_rss_mb": round(bench::peak_rss_mb(), 1),
        "input_mb": round(input.len() as f64 / (1 << 20) as f64, 1),
        "load_start": load,
        "load_end": bench::load_avg(),
    }))
}

fn connect(args: &Args, database: &str) -> Result<ClickHouse, BoxError> {
    connect_to(&args.clickhouse, database, args.cluster.clone())
}

/// A handle on `database` through the server at `url` (on `cluster`, if any).
fn connect_to(url: &str, database: &str, cluster: Option<String>) -> Result<ClickHouse, BoxError> {
    Ok(ClickHouse::new(ClickHouseConfig {
        user: std::env::var("CLICKHOUSE_USER").unwrap_or_default(),
        password: std::env::var("CLICKHOUSE_PASSWORD").unwrap_or_default(),
        cluster,
        ..ClickHouseConfig::local(url, database)
    })?)
}

/// Rows of `db.table` as a query reads them (on a cluster: through the
/// `Distributed` table, one replica of each shard), replays included.
async fn table_rows(args: &Args, db: &str, table: &str) -> Result<u64, BoxError> {
    Ok(skyhouse_store::admin::table_count(&connect(args, db)?, table).await?)
}

/// `create`: drop (if left over), create and migrate each database of
/// `--database`; `drop`: drop them.
async fn databases(args: &Args, create: bool) -> Result<serde_json::Value, BoxError> {
    let names: Vec<&str> = args.database.split(',').filter(|d| !d.is_empty()).collect();
    for name in &names {
        let ch = connect(args, name)?;
        skyhouse_store::admin::drop_database(&ch).await?;
        if create {
            skyhouse_store::admin::create_database(&ch).await?;
            Migrator::new(&ch, migrate::embedded()?).up().await?;
        }
    }
    Ok(serde_json::json!({
        "case": args.case,
        "databases": names,
    }))
}

/// Messages decoded so far, from the rendered metrics (the steady-state
/// sampler's progress).
fn events_decoded(rendered: &str) -> u64 {
    rendered
        .lines()
        .filter(|l| l.starts_with("skyhouse_indexer_events_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

async fn run_case(args: &Args) -> Result<serde_json::Value, BoxError> {
    let (kind, verify, file) = match args.case.as_str() {
        "jetstream" => (SourceKind::Jetstream, false, "jsonl"),
        "firehose" => (SourceKind::Firehose, false, "frames"),
        "firehose-verify" => (SourceKind::Firehose, true, "frames"),
        other => return Err(format!("unknown --case {other:?}").into()),
    };
    let total = count_events(
        args,
        if file == "jsonl" {
            "jetstream"
        } else {
            "firehose"
        },
    )?;
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

    if args.database.contains(',') {
        return Err("a server case takes one --database".into());
    }
    let ch = connect(args, &args.database)?;
    // The database comes from `--case create`: a fresh one per case and run.
    let parts = skyhouse_store::admin::active_parts(&ch, &["records"]).await?;
    if parts > 0 {
        return Err(format!(
            "database {} already holds rows: give each case a fresh one (--case create)",
            args.database
        )
        .into());
    }
    let prefix = format!("bench:indexer:{}:{}:", args.case, std::process::id());
    let state = State::connect(&args.redis, &prefix).await?;

    let mut source = SourceConfig::new(kind);
    source.endpoints = vec![format!("file://{}", path.display())];
    let mut cfg = IndexerConfig::new(source, format!("cursor:{}", args.case));
    cfg.start_cursor = Some(0);
    cfg.verify = verify;
    cfg.raw_records = args.raw_records;
    if let Some(rows) = args.batch_rows {
        cfg.writer.max_rows = rows;
    }
    if let Some(bytes) = args.batch_bytes {
        cfg.writer.max_bytes = bytes;
    }

    let probe = Probe::servers(None, &args.clickhouse_pid);
    // The previous case's merges are not this one's.
    let waited = Instant::now();
    probe.settle_clickhouse(60.0);
    let quiet_wait_s = waited.elapsed().as_secs_f64();
    let rss_start = bench::rss_mb();
    // Reset the high-water mark: count the run, not the setup.
    bench::reset_peak_rss();
    let load = bench::load_avg();
    let sampler = {
        let metrics = metrics.clone();
        Sampler::start(probe.clone(), Duration::from_millis(250), move || {
            events_decoded(&metrics.render())
        })
    };
    let start = probe.snapshot(0);
    let servers_start = probe.servers_cpu();
    let summary =
        skyhouse_pipeline::run(cfg, ch.clone(), state, keys, CancellationToken::new()).await?;
    let end = probe.snapshot(summary.messages);
    let by_server = bench::per_unit_us(&servers_start, &probe.servers_cpu(), summary.messages);
    let snapshots = sampler.finish();
    let peak_rss = bench::peak_rss_mb();
    let load_end = bench::load_avg();
    let after = probe.settle_clickhouse(30.0);

    // Rows stored (count() without FINAL), replays included.
    let records = table_rows(args, &args.database, "records").await?;
    let dead = table_rows(args, &args.database, "dead_letters").await?;
    let rendered = metrics.render();
    Ok(serde_json::json!({
        "case": args.case,
        "raw_records": args.raw_records.as_str(),
        "cores": bench::cores(),
        "database": args.database,
        "events": summary.messages,
        "ops": summary.ops,
        "figures": figures_json(&start, &end, &snapshots, total),
        "cluster": args.cluster,
        "clickhouse_us_by_server": (args.clickhouse_pid.len() > 1).then_some(by_server),
        "clickhouse_after_cpu_s": (!args.clickhouse_pid.is_empty()).then(|| round(after, 2)),
        "quiet_wait_s": round(quiet_wait_s, 1),
        "p99_latency_ms": p99_ms(&rendered).map(|v| round(v, 1)),
        "peak_rss_mb": round(peak_rss, 1),
        "rss_start_mb": round(rss_start, 1),
        "load_start": load,
        "load_end": load_end,
        "records_rows": records,
        "dead_letters": dead,
    }))
}

/// The stream decoded into the batches the writer would send: rows
/// coalesced as the pipeline does, a batch closed at the writer's row or
/// byte limit. Returns them, the events and the operations.
fn encode_batches(args: &Args) -> Result<(Vec<Encoded>, u64, u64), BoxError> {
    let defaults = skyhouse_store::writer::WriterConfig::default();
    let max_rows = args.batch_rows.unwrap_or(defaults.max_rows);
    let max_bytes = args.batch_bytes.unwrap_or(defaults.max_bytes);
    let mut decoder = skyhouse_transform::Decoder::new(Default::default());
    let mut rows = skyhouse_transform::Rows::default();
    rows.keep_raw_records(args.raw_records);
    let mut batches = vec![Encoded::default()];
    let (mut events, mut ops) = (0u64, 0u64);
    let flush = |rows: &mut skyhouse_transform::Rows, batches: &mut Vec<Encoded>, last: bool| {
        if rows.len() >= skyhouse_pipeline::COALESCE_ROWS || (last && !rows.is_empty()) {
            let open = batches.last_mut().expect("one batch");
            open.add(rows);
            rows.clear();
            if open.len() >= max_rows || open.bytes() >= max_bytes {
                batches.push(Encoded::default());
            }
        }
    };
    each_frame(&format!("{}.frames", args.prefix), |frame| {
        let d = decoder.firehose(frame, skyhouse_transform::Verify::Off, &mut rows);
        (events, ops) = (events + 1, ops + d.ops);
        flush(&mut rows, &mut batches, false);
        Ok(())
    })?;
    flush(&mut rows, &mut batches, true);
    batches.retain(|b| !b.is_empty());
    Ok((batches, events, ops))
}

/// The `String` a `RowBinary` row starts with (its first column).
fn first_string(row: &[u8]) -> Option<&[u8]> {
    let (mut len, mut shift, mut at) = (0usize, 0u32, 0usize);
    loop {
        let b = *row.get(at)?;
        len |= usize::from(b & 0x7f) << shift;
        at += 1;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    row.get(at..at + len)
}

/// `insert-distributed` / `insert-local`: the firehose stream decoded
/// beforehand into the writer's batches, then only their inserts timed, on
/// a cluster (`--cluster`, through `--clickhouse`): each table's rows as
/// one `RowBinary` INSERT into its `Distributed` table with
/// `insert_distributed_sync = 1` (what the writer does), or split by shard
/// (`cityHash64` of the sharding key modulo the shards, as the
/// `Distributed` table routes them; each key's shard is asked of ClickHouse
/// before the clock starts) into `<table>_local` on the shards' servers
/// (`--shard-urls`, in shard order) at the same time. Tables one after
/// another in both.
async fn inserts(args: &Args, local: bool) -> Result<serde_json::Value, BoxError> {
    let cluster = args
        .cluster
        .as_deref()
        .ok_or("the insert-* cases need --cluster")?;
    let db = &args.database;
    let (batches, events, ops) = encode_batches(args)?;
    // Where each table's rows go: `cityHash64(<column>)` of the Distributed table.
    let ch = connect(args, db)?;
    let engines = skyhouse_store::admin::distributed_tables(&ch).await?;
    // Every table the stream writes must be sharded by its first column
    // (`dead_letters`, sharded by time, stays empty on a clean stream).
    let written: std::collections::BTreeSet<&'static str> = batches
        .iter()
        .flat_map(|b| b.tables().filter(|(_, t)| !t.is_empty()).map(|(n, _)| n))
        .collect();
    for table in written {
        let engine = engines
            .iter()
            .find_map(|(name, engine)| (name == table).then_some(engine.as_str()))
            .ok_or_else(|| {
                format!("{db}.{table} is not a Distributed table (migrate with --cluster)")
            })?;
        let key = engine
            .split("cityHash64(")
            .nth(1)
            .and_then(|k| k.split(')').next())
            .ok_or_else(|| format!("{table}: no cityHash64 sharding key in {engine}"))?;
        let first = skyhouse_transform::table_columns(table)
            .and_then(|c| c.first())
            .ok_or_else(|| format!("{table}: no columns"))?;
        if first.0 != key || first.1 != "String" {
            return Err(format!(
                "{table} is sharded by {key}, not its first column: the bench splits by the first"
            )
            .into());
        }
    }
    let shards = skyhouse_store::admin::even_shards(&ch, cluster).await? as usize;
    if shards == 0 {
        return Err(format!("cluster {cluster}: not found, or shards weighted unevenly").into());
    }
    if local && args.shard_urls.len() != shards {
        return Err(format!(
            "--shard-urls: {} URLs for the {shards} shards of {cluster}",
            args.shard_urls.len()
        )
        .into());
    }
    // Each key's shard, asked of ClickHouse (its cityHash64), before the clock.
    let mut keys: std::collections::HashSet<Vec<u8>> = Default::default();
    for b in &batches {
        for (_, t) in b.tables() {
            for i in 0..t.len() {
                let row = &t.bytes()[t.byte_range(i..i + 1)];
                keys.insert(first_string(row).ok_or("a row without its key")?.to_vec());
            }
        }
    }
    let keys: Vec<Vec<u8>> = keys.into_iter().collect();
    let mut shard_of: HashMap<Vec<u8>, usize> = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(2_000) {
        let list: Vec<String> = chunk
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let list: Vec<&str> = list.iter().map(String::as_str).collect();
        let answer = skyhouse_store::admin::shards_of_keys(&ch, &list, shards as u64).await?;
        for (k, shard) in chunk.iter().zip(answer) {
            shard_of.insert(k.clone(), shard as usize);
        }
    }
    // One handle per shard's server, without the cluster: plain inserts
    // into its `<table>_local`.
    let shard_handles: Vec<ClickHouse> = args
        .shard_urls
        .iter()
        .map(|url| connect_to(url, db, None))
        .collect::<Result<_, _>>()?;

    let probe = Probe::servers(None, &args.clickhouse_pid);
    probe.settle_clickhouse(60.0);
    let load = bench::load_avg();
    let start = probe.snapshot(0);
    let servers_start = probe.servers_cpu();
    let mut rows_sent = 0u64;
    for batch in &batches {
        for (table, t) in batch.tables() {
            if t.is_empty() {
                continue;
            }
            rows_sent += t.len() as u64;
            if !local {
                let data = bytes::Bytes::copy_from_slice(t.bytes());
                ch.insert_row_binary(table, data).await?;
                continue;
            }
            let mut parts = vec![Vec::with_capacity(t.bytes().len() / shards + 1024); shards];
            for i in 0..t.len() {
                let range = t.byte_range(i..i + 1);
                let row = &t.bytes()[range];
                let key = first_string(row).ok_or("a row without its key")?;
                let shard = *shard_of.get(key).ok_or("a key without its shard")?;
                parts[shard].extend_from_slice(row);
            }
            let mut set = tokio::task::JoinSet::new();
            for (shard, part) in parts.into_iter().enumerate() {
                if !part.is_empty() {
                    let server = shard_handles[shard].clone();
                    set.spawn(async move {
                        server
                            .insert_row_binary_local(table, bytes::Bytes::from(part))
                            .await
                    });
                }
            }
            while let Some(r) = set.join_next().await {
                r??;
            }
        }
    }
    let end = probe.snapshot(events);
    let by_server = bench::per_unit_us(&servers_start, &probe.servers_cpu(), events);
    let peak_rss = bench::peak_rss_mb();
    let load_end = bench::load_avg();
    let after = probe.settle_clickhouse(30.0);
    let records = table_rows(args, db, "records").await?;
    Ok(serde_json::json!({
        "case": args.case,
        "cluster": cluster,
        "cores": bench::cores(),
        "database": db,
        "events": events,
        "ops": ops,
        "batches": batches.len(),
        "rows": rows_sent,
        "keys": shard_of.len(),
        "figures": { "whole": end.since(&start).figures().json() },
        "clickhouse_us_by_server": by_server,
        "clickhouse_after_cpu_s": (!args.clickhouse_pid.is_empty()).then(|| round(after, 2)),
        "peak_rss_mb": round(peak_rss, 1),
        "load_start": load,
        "load_end": load_end,
        "records_rows": records,
    }))
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    };
    let out = match args.case.as_str() {
        "check" => check(&args)?,
        "create" => runtime()?.block_on(databases(&args, true))?,
        "drop" => runtime()?.block_on(databases(&args, false))?,
        "insert-distributed" => runtime()?.block_on(inserts(&args, false))?,
        "insert-local" => runtime()?.block_on(inserts(&args, true))?,
        case => match case.strip_prefix("decode-") {
            Some(kind) => decode_only(&args, kind)?,
            None => runtime()?.block_on(run_case(&args))?,
        },
    };
    println!("{out}");
    Ok(())
}
