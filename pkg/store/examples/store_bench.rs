//! The store's write path against the fastest plain insert of the same rows,
//! on a real ClickHouse, in CPU per row on each side.
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
//! - `ceiling`: the pipeline's batches (the same row and byte limits), built
//!   and encoded as `RowBinary` beforehand (not timed), then inserted batch
//!   by batch, every table of a batch at once as the writer does
//!   ([`ClickHouse::insert_row_binary`]): no transform, no encoding, no
//!   retry.
//!
//! Each run writes into a database of its own, all created (and migrated)
//! before the first run and dropped at the end: no run pays for the files an
//! earlier one deleted. Before each run the bench waits (up to 60 s) for the
//! server to be quiet, so earlier runs' merges are not counted. Each run
//! prints one JSON line: `whole` (and for the pipeline `steady`, 10% → 90%
//! of the rows acknowledged) with rows/s, skyhouse's CPU µs per row
//! (`skyhouse_us`: utime + stime of this process), ClickHouse's
//! (`clickhouse_us`: the server's, from `/proc/<pid>/stat`), the bound
//! `cores ÷ (sum)` and the fraction of it reached, and the cores other
//! processes used meanwhile (`others_cores`); then the server's CPU after the
//! run until it is quiet (`clickhouse_after_cpu_s`: merges), peak RSS
//! (`VmHWM`, reset before each pipeline run) and the load averages. Then one
//! line of medians per kind of run (the pipeline's from its steady state;
//! peak RSS from the first round, before the ceiling's prebuilt batches
//! ever grew the heap) and their ratio.
//!
//! `--experiments` adds, to every round, pipeline runs that each change one
//! thing (see [`Variant::experiments`]). `--only pipeline|ceiling` runs one
//! side (for `perf`).
//!
//! ```text
//! cargo run --release -p skyhouse-store --example store_bench -- \
//!     [--url URL [--clickhouse-pid PID]] [--rows N] [--runs R] [--experiments] [--only pipeline|ceiling]
//! ```
//!
//! Without `--url` a throwaway ClickHouse is started (skyhouse-testkit: `just
//! deps` installs it) and its CPU is measured. With `--url` (e.g.
//! `http://127.0.0.1:8123` after `just up`) the databases
//! `skyhouse_bench_store_<run>_<n>` are made and dropped there, and the
//! server's CPU is measured if `--clickhouse-pid` gives its pid; `--user`
//! and the `CLICKHOUSE_PASSWORD` environment variable give credentials if
//! the server needs them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use skyhouse_atproto::jetstream::{Event, Operation, Payload};
use skyhouse_atproto::syntax::Tid;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::writer::{self, Ack, WriterConfig};
use skyhouse_store::{ClickHouse, ClickHouseConfig};
use skyhouse_testkit::bench::{self, Figures, Probe, Sampler};
use skyhouse_transform::{apply, Action, Cid, Op, Rows, Table, Value};
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
    /// The server's pid with `--url` (the testkit's is known).
    clickhouse_pid: Option<u32>,
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
        clickhouse_pid: None,
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
            "--clickhouse-pid" => args.clickhouse_pid = Some(value()?.parse()?),
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
                    "store_bench [--url URL [--clickhouse-pid PID]] [--user USER] [--rows N] \
                     [--runs R] [--only pipeline|ceiling] [--experiments]\n\
                     (password from CLICKHOUSE_PASSWORD)"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if args.rows == 0 || args.runs == 0 {
        return Err("--rows and --runs must be positive".into());
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
    acked: &AtomicU64,
) -> Result<PipelineRun, BoxError> {
    let (tx, rx) = mpsc::channel::<(Rows, u64)>(variant.queue.max(1));
    let (ack_tx, mut ack_rx) = mpsc::channel::<Ack<u64>>(64);
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
        acked.store(rows as u64, Ordering::Relaxed);
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
        rows,
        batches,
        dead_lettered,
        blocked,
        tail: end.saturating_duration_since(produced),
    })
}

/// Every table a `Rows` writes to.
fn written_tables() -> Vec<&'static str> {
    let mut t = vec!["records", "dead_letters", "identities", "accounts"];
    t.extend(Table::ALL.iter().map(|t| t.name()));
    t
}

/// Rows in the written tables (active parts, before any deduplication).
async fn stored_rows(ch: &ClickHouse) -> Result<u64, BoxError> {
    Ok(skyhouse_store::admin::stored_rows(ch, &written_tables()).await?)
}

/// Active parts in the written tables (how many the run left to merge).
async fn stored_parts(ch: &ClickHouse) -> Result<u64, BoxError> {
    Ok(skyhouse_store::admin::active_parts(ch, &written_tables()).await?)
}

/// Where the runs write: a fresh database per run, all made before the
/// first run (see the module docs).
struct Target {
    url: String,
    user: String,
    password: String,
    /// The server's pid, for its CPU seconds.
    pid: Option<u32>,
    /// Keeps the testkit's databases until the end (dropped with it).
    _testkit: Vec<skyhouse_testkit::TestDatabase>,
    /// Databases made on a `--url` server (dropped at the end).
    made: Vec<String>,
}

impl Target {
    fn handle(&self, database: &str) -> Result<ClickHouse, BoxError> {
        Ok(ClickHouse::new(ClickHouseConfig {
            user: self.user.clone(),
            password: self.password.clone(),
            ..ClickHouseConfig::local(&self.url, database)
        })?)
    }
}

fn main() -> Result<(), BoxError> {
    let args = parse_args()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let target = match &args.url {
        None => {
            let server = skyhouse_testkit::ClickHouse::shared();
            Target {
                url: server.http_url(),
                user: String::new(),
                password: String::new(),
                pid: server.pid(),
                _testkit: Vec::new(),
                made: Vec::new(),
            }
        }
        Some(url) => Target {
            url: url.clone(),
            user: args.user.clone(),
            password: std::env::var("CLICKHOUSE_PASSWORD").unwrap_or_default(),
            pid: args.clickhouse_pid,
            _testkit: Vec::new(),
            made: Vec::new(),
        },
    };
    runtime.block_on(bench(&args, target))
}

/// Make (and migrate) one database per run; returns their handles in order.
async fn make_databases(
    args: &Args,
    target: &mut Target,
    names: &[String],
) -> Result<Vec<ClickHouse>, BoxError> {
    let mut out = Vec::new();
    for name in names {
        let ch = if args.url.is_none() {
            let db = skyhouse_testkit::ClickHouse::shared().database(name);
            let ch = target.handle(db.name())?;
            target._testkit.push(db);
            ch
        } else {
            let ch = target.handle(&format!("skyhouse_bench_store_{name}"))?;
            skyhouse_store::admin::drop_database(&ch).await?;
            skyhouse_store::admin::create_database(&ch).await?;
            target.made.push(ch.database().to_owned());
            ch
        };
        Migrator::new(&ch, migrate::embedded()?).up().await?;
        out.push(ch);
    }
    Ok(out)
}

/// What a kind of run measured, over the runs.
#[derive(Default)]
struct Medians {
    rows_per_s: Vec<f64>,
    skyhouse_us: Vec<f64>,
    clickhouse_us: Vec<f64>,
    bound: Vec<f64>,
    of_bound: Vec<f64>,
    others: Vec<f64>,
    peak_rss: Vec<f64>,
}

impl Medians {
    fn push(&mut self, f: &Figures, peak_rss: f64) {
        self.rows_per_s.push(f.per_s);
        self.skyhouse_us.push(f.skyhouse_us);
        self.clickhouse_us.push(f.clickhouse_us.unwrap_or(f64::NAN));
        self.bound.push(f.bound_per_s);
        self.of_bound.push(f.of_bound);
        self.others.push(f.others_cores);
        self.peak_rss.push(peak_rss);
    }

    fn json(&self, name: &str, ops_per_row: f64) -> serde_json::Value {
        let m = |v: &[f64]| {
            let x = bench::median(v);
            x.is_finite().then_some(x)
        };
        let r = |x: Option<f64>, d| x.map(|x| bench::round(x, d));
        serde_json::json!({
            "bench": "store",
            "median_of": name,
            "runs": self.rows_per_s.len(),
            "rows_per_s": r(m(&self.rows_per_s), 0),
            "ops_per_s": r(m(&self.rows_per_s).map(|x| x * ops_per_row), 0),
            "skyhouse_us_per_row": r(m(&self.skyhouse_us), 2),
            "clickhouse_us_per_row": r(m(&self.clickhouse_us), 2),
            "bound_rows_per_s": r(m(&self.bound), 0),
            "of_bound": r(m(&self.of_bound), 3),
            "others_cores": r(m(&self.others), 2),
            "peak_rss_mb": r(m(&self.peak_rss), 1),
        })
    }
}

async fn bench(args: &Args, mut target: Target) -> Result<(), BoxError> {
    let work = Arc::new(Workload::new(load_corpus()?, args.rows));
    let indexer = Variant::indexer();
    let experiments = if args.experiments {
        Variant::experiments()
    } else {
        Vec::new()
    };
    let mut kinds: Vec<&str> = Vec::new();
    if args.only_pipeline != Some(false) {
        kinds.push(indexer.name);
    }
    if args.only_pipeline != Some(true) {
        kinds.push("ceiling");
    }
    kinds.extend(experiments.iter().map(|v| v.name));
    let names: Vec<String> = (1..=args.runs)
        .flat_map(|rep| kinds.iter().map(move |k| format!("{k}_{rep}")))
        .collect();
    let dbs = make_databases(args, &mut target, &names).await?;
    let version = dbs
        .first()
        .ok_or("no run to make")?
        .server_version()
        .await?;
    eprintln!(
        "store_bench: ClickHouse {version} (pid {}), {} ops from {} corpus commits, {} runs each \
         of {}; load average {:?}",
        target.pid.map_or("unknown".to_owned(), |p| p.to_string()),
        work.ops,
        work.commits.len(),
        args.runs,
        kinds.join(", "),
        bench::load_avg(),
    );
    let probe = Probe::new(target.pid);
    let mut medians: Vec<Medians> = kinds.iter().map(|_| Medians::default()).collect();
    let mut total_rows = 0;
    let mut dbs = dbs.into_iter();
    for rep in 1..=args.runs {
        for (k, kind) in kinds.iter().enumerate() {
            let ch = dbs.next().ok_or("a database per run")?;
            // The previous run's merges are not this one's.
            probe.settle_clickhouse(60.0);
            let (figures, peak, rows) = if *kind == "ceiling" {
                ceiling_rep(&ch, &work, &indexer.cfg, &probe, rep).await?
            } else {
                let v = std::iter::once(&indexer)
                    .chain(&experiments)
                    .find(|v| v.name == *kind)
                    .ok_or("variant")?;
                pipeline_rep(&ch, &work, v, &probe, rep).await?
            };
            total_rows = rows;
            // Peak RSS of the first round only: the heap the ceiling's
            // prebuilt batches leave behind shows in later rounds.
            let peak = if rep == 1 { peak } else { f64::NAN };
            medians[k].push(&figures, peak);
        }
    }
    let ops_per_row = work.ops as f64 / total_rows.max(1) as f64;
    for (kind, m) in kinds.iter().zip(&medians) {
        println!("{}", m.json(kind, ops_per_row));
    }
    let p = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .map(|i| bench::median(&medians[i].rows_per_s))
    };
    if let (Some(pipe), Some(ceil)) = (p("pipeline"), p("ceiling")) {
        println!(
            "{}",
            serde_json::json!({
                "bench": "store",
                "server": version.to_string(),
                "ops": work.ops,
                "rows": total_rows,
                "pipeline_rows_per_s": pipe.round(),
                "ceiling_rows_per_s": ceil.round(),
                "pipeline_vs_ceiling": bench::round(pipe / ceil, 3),
            })
        );
    }
    for db in &target.made {
        skyhouse_store::admin::drop_database(&target.handle(db)?).await?;
    }
    Ok(())
}

/// One pipeline run into a fresh database; prints its line and returns its
/// figures (per row), peak RSS and rows.
async fn pipeline_rep(
    ch: &ClickHouse,
    work: &Arc<Workload>,
    variant: &Variant,
    probe: &Probe,
    rep: usize,
) -> Result<(Figures, f64, usize), BoxError> {
    let reset = bench::reset_peak_rss();
    let rss_start = bench::rss_mb();
    let load = bench::load_avg();
    let acked = Arc::new(AtomicU64::new(0));
    let sampler = {
        let acked = acked.clone();
        Sampler::start(probe.clone(), Duration::from_millis(250), move || {
            acked.load(Ordering::Relaxed)
        })
    };
    let start = probe.snapshot(0);
    let run = pipeline(ch, work, variant, &acked).await?;
    let end = probe.snapshot(run.rows as u64);
    let snapshots = sampler.finish();
    let peak = bench::peak_rss_mb();
    let after = probe.settle_clickhouse(30.0);
    let stored = stored_rows(ch).await?;
    let parts = stored_parts(ch).await?;
    if stored > run.rows as u64 || (work.keys_unique() && stored != run.rows as u64) {
        return Err(format!(
            "{}: acked {} rows but {stored} are stored",
            variant.name, run.rows
        )
        .into());
    }
    let whole = end.since(&start).figures();
    let steady = bench::steady(&snapshots, run.rows as u64, 0.1, 0.9).map(|w| w.figures());
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
            "whole": whole.json(),
            "steady": steady.map(|f| f.json()),
            "producer_blocked_s": bench::round(run.blocked.as_secs_f64(), 3),
            "tail_after_last_send_s": bench::round(run.tail.as_secs_f64(), 3),
            "clickhouse_after_cpu_s": probe_after(probe, after),
            "parts_after": parts,
            "rss_start_mb": bench::round(rss_start, 1),
            "peak_rss_mb": bench::round(peak, 1),
            "peak_rss_reset": reset,
            "load_start": load,
            "load_end": bench::load_avg(),
        })
    );
    Ok((steady.unwrap_or(whole), peak, run.rows))
}

fn probe_after(probe: &Probe, after: f64) -> Option<f64> {
    probe.snapshot(0).clickhouse.map(|_| bench::round(after, 2))
}

/// The pipeline's batches, prebuilt: operations applied into a `Rows` until
/// it reaches the writer's row or byte limit, then encoded per table as the
/// `RowBinary` an insert sends.
fn prebuilt_batches(work: &Workload, cfg: &WriterConfig) -> Vec<Vec<(&'static str, Bytes)>> {
    let mut out = Vec::new();
    let mut rows = Rows::default();
    let mut buf = [0u8; 13];
    let mut encoded = Vec::new();
    for i in 0..work.ops {
        apply(&work.op(i, &mut buf), &mut rows);
        if rows.len() >= cfg.max_rows || rows.approx_bytes() >= cfg.max_bytes || i + 1 == work.ops {
            rows.encode_into(&mut encoded);
            out.push(
                encoded
                    .drain(..)
                    .map(|(t, b)| (t, Bytes::from(b)))
                    .collect(),
            );
            rows.clear();
        }
    }
    out
}

/// One ceiling run into a fresh database: the pipeline's batches prebuilt
/// (not timed) as `RowBinary`, then inserted batch by batch with every table
/// of a batch at once, as the writer does, with no transform and no retry.
/// Prints its line and returns its figures (per row), peak RSS and rows.
async fn ceiling_rep(
    ch: &ClickHouse,
    work: &Workload,
    cfg: &WriterConfig,
    probe: &Probe,
    rep: usize,
) -> Result<(Figures, f64, usize), BoxError> {
    let batches = prebuilt_batches(work, cfg);
    // Rows per batch: the same count the pipeline acknowledges.
    let mut n = 0usize;
    {
        let mut rows = Rows::default();
        let mut buf = [0u8; 13];
        for i in 0..work.ops {
            apply(&work.op(i, &mut buf), &mut rows);
            n += rows.len();
            rows.clear();
        }
    }
    let bytes: usize = batches.iter().flatten().map(|(_, b)| b.len()).sum();
    let load = bench::load_avg();
    let start = probe.snapshot(0);
    let mut inserts = 0;
    for batch in &batches {
        let mut set = tokio::task::JoinSet::new();
        for (table, data) in batch {
            let (ch, table, data) = (ch.clone(), *table, data.clone());
            set.spawn(async move { ch.insert_row_binary(table, data).await });
            inserts += 1;
        }
        while let Some(r) = set.join_next().await {
            r??;
        }
    }
    let end = probe.snapshot(n as u64);
    let after = probe.settle_clickhouse(30.0);
    let stored = stored_rows(ch).await?;
    let parts = stored_parts(ch).await?;
    if stored > n as u64 || (work.keys_unique() && stored != n as u64) {
        return Err(format!("ceiling inserted {n} rows but {stored} are stored").into());
    }
    let whole = end.since(&start).figures();
    let peak = bench::peak_rss_mb();
    println!(
        "{}",
        serde_json::json!({
            "bench": "store",
            "run": "ceiling",
            "rep": rep,
            "rows": n,
            "batches": batches.len(),
            "inserts": inserts,
            "rowbinary_mb": bench::round(bytes as f64 / (1 << 20) as f64, 1),
            "whole": whole.json(),
            "clickhouse_after_cpu_s": probe_after(probe, after),
            "parts_after": parts,
            "load_start": load,
            "load_end": bench::load_avg(),
        })
    );
    Ok((whole, peak, n))
}
