//! Insert throughput of the store: the indexer's full write path against the
//! fastest plain insert of the same rows, on a real ClickHouse.
//!
//! The workload is the commit events of the production Jetstream capture in
//! skyhouse-atproto's testdata (likes, posts, reposts, follows, deletes… in
//! their real proportions), repeated with a fresh record key (a TID from a
//! counter), version and one of 10,000 synthetic DIDs per operation, so every
//! row has its own key. `--rows N` (default 1,000,000) is the number of rows
//! (all tables together) the operations give, about two per operation.
//!
//! - `pipeline`: a producer task `apply()`s the operations into one `Rows`
//!   until it holds [`writer::MESSAGE_ROWS`] rows, then sends it with its
//!   highest position through a channel of [`writer::INPUT_QUEUE`] messages
//!   to [`writer::run`] with the default [`WriterConfig`], as the live
//!   indexer coalesces its decoded events; the clock stops when the writer
//!   has acknowledged every batch.
//! - `ceiling`: the same rows, built beforehand (not timed), inserted table by
//!   table with plain `INSERT … FORMAT RowBinary` through the `clickhouse`
//!   client in batches of up to `--raw-batch` rows (default 1,048,576, the
//!   server's `max_insert_block_size`): no transform, no writer.
//!
//! The two alternate `--runs` times (default 3), with every written table
//! truncated before each run; each run prints one JSON line, then a summary
//! line gives the medians and their ratio. Peak RSS is `VmHWM`, reset (through
//! `/proc/self/clear_refs`) before each pipeline run; the summary gives the
//! first run's, taken before the ceiling's rows were ever built (the heap the
//! allocator keeps after dropping them shows in later runs' `rss_start_mb`).
//!
//! `--experiments` adds, to every round, pipeline runs that each change one
//! thing (see [`Variant::experiments`]: one `Rows` per operation,
//! one INSERT at a time, 50k-row and 200k-row batches) and a ceiling that inserts `records`
//! concurrently with the other tables, then one median line per experiment
//! before the summary. `--only pipeline|ceiling` runs one side (for `perf`).
//!
//! ```text
//! cargo run --release -p skyhouse-store --example store_bench -- \
//!     [--url URL] [--rows N] [--runs R] [--raw-batch N] [--experiments] [--only pipeline|ceiling]
//! ```
//!
//! Without `--url` a throwaway ClickHouse is started (skyhouse-testkit: `just
//! deps` installs it) with a fresh database. With `--url` (e.g.
//! `http://127.0.0.1:8123` after `just up`) the database `skyhouse_bench` is
//! dropped, created and left behind; `--user` and the `CLICKHOUSE_PASSWORD`
//! environment variable give credentials if the server needs them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use skyhouse_atproto::jetstream::{Event, Operation, Payload};
use skyhouse_atproto::syntax::Tid;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::writer::{self, Ack, WriterConfig};
use skyhouse_store::{ClickHouse, ClickHouseConfig};
use skyhouse_transform::{apply, Action, Cid, Op, Rows, Table, TableSink, Value};
use tokio::sync::mpsc;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// mimalloc instead of glibc's malloc: rows are allocated on the producer's
/// thread and freed on the writer's, which mimalloc does with less CPU
/// (measured here, noisily: ~15% less client CPU per run, a little less peak
/// RSS). The `skyhouse` binary uses it too.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Synthetic repositories the operations are spread over.
const DIDS: usize = 10_000;

/// Record keys and versions are TIDs from this instant (2024-05-01 00:00 UTC) on.
const START_MICROS: u64 = 1_714_521_600_000_000;

/// The base32-sortable alphabet of TIDs.
const TID_ALPHABET: &[u8; 32] = b"234567abcdefghijklmnopqrstuvwxyz";

/// Settings from the command line.
#[derive(Debug)]
struct Args {
    url: Option<String>,
    user: String,
    rows: usize,
    runs: usize,
    raw_batch: usize,
    /// Run only the pipeline (`Some(true)`) or only the ceiling (`Some(false)`), for profiling.
    only_pipeline: Option<bool>,
    /// Also run the variants of [`Variant::experiments`] and the parallel ceiling.
    experiments: bool,
}

fn parse_args() -> Result<Args, BoxError> {
    let mut args = Args {
        url: None,
        user: String::new(),
        rows: 1_000_000,
        runs: 3,
        raw_batch: 1_048_576,
        only_pipeline: None,
        experiments: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--url" => args.url = Some(value()?),
            "--user" => args.user = value()?,
            "--rows" => args.rows = value()?.replace('_', "").parse()?,
            "--runs" => args.runs = value()?.parse()?,
            "--raw-batch" => args.raw_batch = value()?.replace('_', "").parse()?,
            "--only" => {
                args.only_pipeline = match value()?.as_str() {
                    "pipeline" => Some(true),
                    "ceiling" => Some(false),
                    v => return Err(format!("--only takes pipeline or ceiling, not {v:?}").into()),
                }
            }
            "--experiments" => args.experiments = true,
            "-h" | "--help" => {
                eprintln!(
                    "store_bench [--url URL] [--user USER] [--rows N] [--runs R] [--raw-batch N] \
                     [--only pipeline|ceiling] [--experiments]\n\
                     (password from CLICKHOUSE_PASSWORD)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if args.rows == 0 || args.runs == 0 || args.raw_batch == 0 {
        return Err("--rows, --runs and --raw-batch must be positive".into());
    }
    Ok(args)
}

/// One commit of the corpus, as data-model values.
struct Commit {
    collection: String,
    /// The corpus key when it is not a TID (`self`): kept, since the typed
    /// tables refuse a `self`-keyed record under another key.
    fixed_rkey: Option<String>,
    action: Action,
    cid: Option<Cid>,
    record: Option<Value<'static>>,
    indexed_at: u32,
}

fn load_corpus() -> Result<Vec<Commit>, BoxError> {
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
            fixed_rkey: Tid::try_from(commit.rkey.as_str())
                .is_err()
                .then(|| commit.rkey.clone()),
            collection: commit.collection,
            action: match commit.operation {
                Operation::Create => Action::Create,
                Operation::Update => Action::Update,
                Operation::Delete => Action::Delete,
            },
            cid: commit.cid.as_deref().map(str::parse).transpose()?,
            record,
            indexed_at: u32::try_from(event.time_us / 1_000_000)?,
        });
    }
    if out.is_empty() {
        return Err("the corpus has no commits".into());
    }
    Ok(out)
}

/// The operations of a run: operation `i` is commit `i % len` of the corpus
/// under DID `(i + i / len) % DIDS`, record key TID(`START_MICROS + i`) (or
/// the corpus key if that is not a TID) and a newer version. Every row's
/// sorting key is unique as long as there are at most `DIDS` passes over the
/// corpus (1.5 million operations).
struct Workload {
    commits: Vec<Commit>,
    dids: Vec<String>,
    ops: usize,
}

impl Workload {
    fn new(commits: Vec<Commit>, target_rows: usize) -> Workload {
        let dids = (0..DIDS)
            .map(|i| {
                // did:plc: + 24 base32 chars; spread the index over the key
                // so DIDs do not share long prefixes.
                let mut v = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut s = String::from("did:plc:");
                for _ in 0..24 {
                    s.push(char::from(
                        b"abcdefghijklmnopqrstuvwxyz234567"[(v & 31) as usize],
                    ));
                    v = v.rotate_right(5);
                }
                s
            })
            .collect();
        let mut w = Workload {
            commits,
            dids,
            ops: 0,
        };
        // Rows one pass over the corpus gives, to size the run.
        let cycle = w.commits.len();
        let mut rows = Rows::default();
        let mut buf = [0u8; 13];
        for i in 0..cycle {
            apply(&w.op(i, &mut buf), &mut rows);
        }
        let per_cycle = rows.len().max(1);
        w.ops = (target_rows * cycle).div_ceil(per_cycle).max(1);
        w
    }

    /// Operation `i`; its record key is written into `buf`.
    fn op<'a>(&'a self, i: usize, buf: &'a mut [u8; 13]) -> Op<'a> {
        let c = &self.commits[i % self.commits.len()];
        let tid = ((START_MICROS + i as u64) << 10) & (u64::MAX >> 1);
        let rkey = match &c.fixed_rkey {
            Some(k) => k.as_str(),
            None => {
                for (k, b) in buf.iter_mut().enumerate() {
                    *b = TID_ALPHABET[((tid >> (5 * (12 - k))) & 31) as usize];
                }
                // Only ASCII was written.
                std::str::from_utf8(&buf[..]).unwrap_or("2222222222222")
            }
        };
        // Shifting the DID by one per pass over the corpus gives each
        // `self`-keyed record a DID of its own for DIDS passes.
        let did = (i + i / self.commits.len()) % self.dids.len();
        Op {
            did: &self.dids[did],
            collection: &c.collection,
            rkey,
            action: c.action,
            cid: c.cid,
            record: c.record.as_ref(),
            // The commit's rev: a little after the record key's TID.
            version: tid | 1,
            indexed_at: c.indexed_at + (i / 1000) as u32,
        }
    }

    /// Whether every row's sorting key is unique (see [`Workload`]): then
    /// no merge can collapse rows, and the stored count must be exact.
    fn keys_unique(&self) -> bool {
        self.ops <= DIDS * self.commits.len()
    }

    /// Every row of the run in one `Rows` (for the ceiling; not timed).
    fn build_all(&self) -> Rows {
        let mut rows = Rows::default();
        let mut buf = [0u8; 13];
        for i in 0..self.ops {
            apply(&self.op(i, &mut buf), &mut rows);
        }
        rows
    }
}

/// `VmHWM` and `VmRSS` of this process, MiB.
fn rss_mb() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

/// Reset `VmHWM` to the current RSS (Linux ≥ 4.0); false if not possible.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// CPU counters at one instant, in clock ticks: this process's, and the
/// machine's total and idle (all CPUs together).
#[derive(Debug, Clone, Copy, Default)]
struct Cpu {
    process: u64,
    total: u64,
    idle: u64,
    cpus: u64,
}

impl Cpu {
    fn now() -> Cpu {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        // Fields after the command's closing parenthesis: utime and stime
        // are the 12th and 13th.
        let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
        let fields: Vec<u64> = after
            .split_whitespace()
            .map(|f| f.parse().unwrap_or(0))
            .collect();
        let process = fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0);
        let machine = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let mut cpu = Cpu {
            process,
            ..Cpu::default()
        };
        for line in machine.lines() {
            if let Some(rest) = line.strip_prefix("cpu ") {
                let v: Vec<u64> = rest
                    .split_whitespace()
                    .map(|f| f.parse().unwrap_or(0))
                    .collect();
                // user nice system idle iowait irq softirq steal (guest is in user).
                cpu.total = v.iter().take(8).sum();
                cpu.idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
            } else if line.starts_with("cpu") {
                cpu.cpus += 1;
            }
        }
        cpu
    }

    /// Since `start`, over `secs` of wall time: (this process's CPU seconds,
    /// the fraction of the machine's CPUs busy with anything).
    fn since(self, start: Cpu, secs: f64) -> (f64, f64) {
        let total = self.total.saturating_sub(start.total).max(1) as f64;
        let idle = self.idle.saturating_sub(start.idle) as f64;
        let process = self.process.saturating_sub(start.process) as f64;
        (
            process / total * self.cpus as f64 * secs,
            1.0 - idle / total,
        )
    }
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// How a pipeline run feeds the store.
#[derive(Debug, Clone)]
struct Variant {
    /// `pipeline` for the indexer's path, else the experiment's name.
    name: &'static str,
    /// The producer sends a `Rows` once it holds this many rows (0: one
    /// `Rows` per operation).
    message_rows: usize,
    /// Messages the channel holds.
    queue: usize,
    /// The writer's batch limits.
    cfg: WriterConfig,
}

impl Variant {
    /// The indexer's path: operations applied into one `Rows` until it holds
    /// [`writer::MESSAGE_ROWS`] rows, sent through a channel of
    /// [`writer::INPUT_QUEUE`] messages to `writer::run` with the default
    /// [`WriterConfig`].
    fn indexer() -> Variant {
        Variant {
            name: "pipeline",
            message_rows: writer::MESSAGE_ROWS,
            queue: writer::INPUT_QUEUE,
            cfg: WriterConfig::default(),
        }
    }

    /// The experiments of `--experiments`, each changing one thing: one
    /// `Rows` per operation (as before coalescing; the queue holds as many
    /// operations), tables inserted one at a time
    /// ([`WriterConfig::concurrent_tables`] off), and batches of 50k rows / 16 MiB
    /// (the old default) and of 200k rows / 64 MiB.
    fn experiments() -> Vec<Variant> {
        let base = Variant::indexer();
        let d = WriterConfig::default();
        vec![
            Variant {
                name: "per_event",
                message_rows: 0,
                queue: writer::INPUT_QUEUE * writer::MESSAGE_ROWS / 2,
                ..base.clone()
            },
            Variant {
                name: "sequential_tables",
                cfg: WriterConfig {
                    concurrent_tables: false,
                    ..d.clone()
                },
                ..base.clone()
            },
            Variant {
                name: "batch_50k",
                cfg: WriterConfig {
                    max_rows: 50_000,
                    max_bytes: 16 << 20,
                    ..d.clone()
                },
                ..base.clone()
            },
            Variant {
                name: "batch_200k",
                cfg: WriterConfig {
                    max_rows: 200_000,
                    max_bytes: 64 << 20,
                    ..d
                },
                ..base
            },
        ]
    }
}

/// What one pipeline run measured.
struct PipelineRun {
    secs: f64,
    rows: usize,
    batches: usize,
    dead_lettered: usize,
    /// Time the producer spent waiting for room in the channel (the writer
    /// busy inserting).
    blocked: Duration,
    /// Time from the producer's last send to the last ack.
    tail: Duration,
}

/// Apply every operation and write the rows as `variant` says; the clock
/// stops at the last ack.
async fn pipeline(
    ch: &ClickHouse,
    work: &Arc<Workload>,
    variant: &Variant,
) -> Result<PipelineRun, BoxError> {
    let (tx, rx) = mpsc::channel::<(Rows, u64)>(variant.queue.max(1));
    let (ack_tx, mut ack_rx) = mpsc::channel::<Ack<u64>>(64);
    let start = Instant::now();
    let writer = tokio::spawn(writer::run(ch.clone(), variant.cfg.clone(), rx, ack_tx));
    let w = Arc::clone(work);
    let message_rows = variant.message_rows;
    let producer = tokio::spawn(async move {
        let mut blocked = Duration::ZERO;
        let mut buf = [0u8; 13];
        let mut rows = Rows::default();
        for i in 0..w.ops {
            apply(&w.op(i, &mut buf), &mut rows);
            if rows.len() >= message_rows || i + 1 == w.ops {
                let item = (std::mem::take(&mut rows), i as u64);
                match tx.try_send(item) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(item)) => {
                        let t = Instant::now();
                        tx.send(item).await.map_err(|_| "writer stopped")?;
                        blocked += t.elapsed();
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => return Err("writer stopped"),
                }
            }
        }
        Ok((blocked, Instant::now()))
    });
    let (mut rows, mut batches, mut dead_lettered, mut upto) = (0, 0, 0, None);
    while let Some(ack) = ack_rx.recv().await {
        rows += ack.rows;
        batches += 1;
        dead_lettered += ack.dead_lettered;
        upto = Some(ack.upto);
    }
    let end = Instant::now();
    writer.await??;
    let (blocked, produced) = producer.await??;
    if upto != Some(work.ops as u64 - 1) {
        return Err(format!("last ack was for position {upto:?}, not {}", work.ops - 1).into());
    }
    Ok(PipelineRun {
        secs: (end - start).as_secs_f64(),
        rows,
        batches,
        dead_lettered,
        blocked,
        tail: end.saturating_duration_since(produced),
    })
}

/// Plain inserts: each table's rows in batches of `batch`, one after another.
struct RawSink<'a> {
    ch: &'a ClickHouse,
    batch: usize,
    inserts: usize,
}

impl TableSink for RawSink<'_> {
    type Error = skyhouse_store::StoreError;

    async fn insert<R>(&mut self, table: &'static str, rows: &[R]) -> Result<(), Self::Error>
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite + Serialize + Send + Sync + 'static,
    {
        // One plain INSERT per chunk: no retry, no bisection (the ceiling).
        for chunk in rows.chunks(self.batch) {
            self.ch.insert(table, chunk).await?;
            self.inserts += 1;
        }
        Ok(())
    }
}

/// Every table a `Rows` writes to.
fn written_tables() -> Vec<&'static str> {
    let mut t = vec!["records", "dead_letters"];
    t.extend(Table::ALL.iter().map(|t| t.name()));
    t
}

async fn truncate(ch: &ClickHouse) -> Result<(), BoxError> {
    for t in written_tables() {
        skyhouse_store::admin::truncate(ch, t).await?;
    }
    Ok(())
}

/// Rows in the written tables (active parts, before any deduplication).
async fn stored_rows(ch: &ClickHouse) -> Result<u64, BoxError> {
    Ok(skyhouse_store::admin::stored_rows(ch, &written_tables()).await?)
}

/// Active parts in the written tables (how many the run left to merge).
async fn stored_parts(ch: &ClickHouse) -> Result<u64, BoxError> {
    Ok(skyhouse_store::admin::active_parts(ch, &written_tables()).await?)
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;

    // The target: a throwaway server (kept alive by `_db` until the end) or
    // the given one.
    let (ch, _db, target) = match &args.url {
        None => {
            let server = skyhouse_testkit::ClickHouse::shared();
            let db = server.database("store_bench");
            let ch = ClickHouse::new(ClickHouseConfig::local(&server.http_url(), db.name()))?;
            (ch, Some(db), "testkit")
        }
        Some(url) => {
            let ch = ClickHouse::new(ClickHouseConfig {
                user: args.user.clone(),
                password: std::env::var("CLICKHOUSE_PASSWORD").unwrap_or_default(),
                ..ClickHouseConfig::local(url, "skyhouse_bench")
            })?;
            (ch, None, "url")
        }
    };

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(&args, ch, target))
}

async fn bench(args: &Args, ch: ClickHouse, target: &str) -> Result<(), BoxError> {
    let version = ch.server_version().await?;
    if target == "url" {
        skyhouse_store::admin::drop_database(&ch).await?;
        skyhouse_store::admin::create_database(&ch).await?;
    }
    Migrator::new(&ch, migrate::embedded()?).up().await?;

    let work = Arc::new(Workload::new(load_corpus()?, args.rows));
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!(
        "store_bench: ClickHouse {version} ({target}), database {}, {} ops from {} corpus commits, \
         {} runs each; load average {}",
        ch.database(),
        work.ops,
        work.commits.len(),
        args.runs,
        load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    );

    let indexer = Variant::indexer();
    let experiments = if args.experiments {
        Variant::experiments()
    } else {
        Vec::new()
    };
    let mut pipe_rows_s = Vec::new();
    let mut pipe_ops_s = Vec::new();
    let mut ceil_rows_s = Vec::new();
    let mut exp_rows_s = vec![Vec::new(); experiments.len() + 1];
    let mut first_peak_rss = None;
    let mut total_rows = 0;
    for rep in 1..=args.runs {
        if args.only_pipeline != Some(false) {
            let (rows, secs, peak) = pipeline_rep(&ch, &work, &indexer, rep).await?;
            total_rows = rows;
            first_peak_rss.get_or_insert(peak);
            pipe_rows_s.push(rows as f64 / secs);
            pipe_ops_s.push(work.ops as f64 / secs);
        }
        if args.only_pipeline != Some(true) {
            let (rows, secs) = ceiling_rep(&ch, &work, args.raw_batch, false, rep).await?;
            total_rows = rows;
            ceil_rows_s.push(rows as f64 / secs);
        }
        for (v, rates) in experiments.iter().zip(&mut exp_rows_s) {
            let (rows, secs, _) = pipeline_rep(&ch, &work, v, rep).await?;
            rates.push(rows as f64 / secs);
        }
        if args.experiments {
            let (rows, secs) = ceiling_rep(&ch, &work, args.raw_batch, true, rep).await?;
            if let Some(rates) = exp_rows_s.last_mut() {
                rates.push(rows as f64 / secs);
            }
        }
    }

    let (pipeline, ceiling) = (median(&pipe_rows_s), median(&ceil_rows_s));
    let num = |x: f64| (x.is_finite()).then_some(x);
    let names = experiments
        .iter()
        .map(|v| v.name)
        .chain(std::iter::once("ceiling_parallel"));
    for (name, rates) in names.zip(&exp_rows_s).filter(|(_, r)| !r.is_empty()) {
        let rate = median(rates);
        println!(
            "{}",
            serde_json::json!({
                "bench": "store",
                "experiment": name,
                "rows_per_s": rate.round(),
                "vs_pipeline": num(round(rate / pipeline, 3)),
                "vs_ceiling": num(round(rate / ceiling, 3)),
            })
        );
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "store",
            "server": version.to_string(),
            "runs": args.runs,
            "ops": work.ops,
            "rows": total_rows,
            "pipeline_rows_per_s": num(pipeline.round()),
            "pipeline_ops_per_s": num(median(&pipe_ops_s).round()),
            "ceiling_rows_per_s": num(ceiling.round()),
            "ratio": num(round(pipeline / ceiling, 3)),
            "peak_rss_mb": first_peak_rss.map(|r| round(r, 1)),
            "goal_met": pipeline >= 0.5 * ceiling && pipeline >= 300_000.0,
        })
    );
    Ok(())
}

/// One pipeline run on emptied tables; prints its line and returns (rows,
/// seconds, peak RSS MiB).
async fn pipeline_rep(
    ch: &ClickHouse,
    work: &Arc<Workload>,
    variant: &Variant,
    rep: usize,
) -> Result<(usize, f64, f64), BoxError> {
    truncate(ch).await?;
    let reset = reset_peak_rss();
    let (_, rss_start) = rss_mb();
    let cpu = Cpu::now();
    let run = pipeline(ch, work, variant).await?;
    let (client_cpu, busy) = Cpu::now().since(cpu, run.secs);
    let (peak, _) = rss_mb();
    let stored = stored_rows(ch).await?;
    let parts = stored_parts(ch).await?;
    if stored > run.rows as u64 || (work.keys_unique() && stored != run.rows as u64) {
        return Err(format!(
            "{}: acked {} rows but {stored} are stored",
            variant.name, run.rows
        )
        .into());
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "store",
            "run": variant.name,
            "rep": rep,
            "ops": work.ops,
            "rows": run.rows,
            "batches": run.batches,
            "dead_lettered": run.dead_lettered,
            "secs": round(run.secs, 3),
            "rows_per_s": (run.rows as f64 / run.secs).round(),
            "ops_per_s": (work.ops as f64 / run.secs).round(),
            "producer_blocked_s": round(run.blocked.as_secs_f64(), 3),
            "tail_after_last_send_s": round(run.tail.as_secs_f64(), 3),
            "client_cpu_s": round(client_cpu, 2),
            "machine_busy": round(busy, 2),
            "parts_after": parts,
            "rss_start_mb": round(rss_start, 1),
            "peak_rss_mb": round(peak, 1),
            "peak_rss_reset": reset,
        })
    );
    Ok((run.rows, run.secs, peak))
}

/// One ceiling run on emptied tables; prints its line and returns (rows,
/// seconds). `parallel`: `records` is inserted concurrently with the other
/// tables (two INSERTs at a time) instead of before them.
async fn ceiling_rep(
    ch: &ClickHouse,
    work: &Workload,
    raw_batch: usize,
    parallel: bool,
    rep: usize,
) -> Result<(usize, f64), BoxError> {
    truncate(ch).await?;
    let mut rows = work.build_all();
    let n = rows.len();
    let mb = rows.approx_bytes() as f64 / (1 << 20) as f64;
    let sink = || RawSink {
        ch,
        batch: raw_batch,
        inserts: 0,
    };
    let (mut sink, mut records_sink) = (sink(), sink());
    let cpu = Cpu::now();
    let start = Instant::now();
    if parallel {
        let records = std::mem::take(&mut rows.records);
        let (a, b) = tokio::join!(
            records_sink.insert("records", &records),
            rows.drain_into(&mut sink)
        );
        a?;
        b?;
    } else {
        rows.drain_into(&mut sink).await?;
    }
    let secs = start.elapsed().as_secs_f64();
    let (client_cpu, busy) = Cpu::now().since(cpu, secs);
    drop(rows);
    let stored = stored_rows(ch).await?;
    let parts = stored_parts(ch).await?;
    if stored > n as u64 || (work.keys_unique() && stored != n as u64) {
        return Err(format!("ceiling inserted {n} rows but {stored} are stored").into());
    }
    println!(
        "{}",
        serde_json::json!({
            "bench": "store",
            "run": if parallel { "ceiling_parallel" } else { "ceiling" },
            "rep": rep,
            "rows": n,
            "inserts": sink.inserts + records_sink.inserts,
            "rowbinary_mb": round(mb, 1),
            "secs": round(secs, 3),
            "rows_per_s": (n as f64 / secs).round(),
            "mb_per_s": round(mb / secs, 1),
            "client_cpu_s": round(client_cpu, 2),
            "machine_busy": round(busy, 2),
            "parts_after": parts,
        })
    );
    Ok((n, secs))
}
