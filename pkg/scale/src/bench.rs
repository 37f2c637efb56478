//! The harness: for each size, load the dataset through the real writer,
//! run every maintenance job, serve it with the real `skyhouse search` and
//! `skyhouse feedgen` and time every route, ask the JSONBench questions,
//! weigh the tables, add more records and run the jobs again; then read
//! each query's peak memory from the server's query log.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use skyhouse_feeds::{Feed, FeedKind};
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::stats::Analytics;
use skyhouse_store::writer::{self, Ack, WriterConfig};
use skyhouse_store::{
    admin, aggregates, cleanup, counts, repos, ClickHouse, ClickHouseConfig, Timeouts,
};
use skyhouse_transform::Rows;
use tokio::sync::mpsc;

use crate::gen::{Generator, Phase, LABEL};
use crate::http::{self, Conn, Request, Response};
use crate::report::{human, round, Figures, HeavyQuery, Report, SizeReport, Stat};
use crate::text::{LANGUAGES, TAGS};

/// An error of the benchmark, one line.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The feed generator's publisher DID in the benchmark.
const PUBLISHER: &str = "did:plc:benchpublisher0000000000";

/// Feed page size (what the AppView asks for).
const FEED_LIMIT: usize = 30;

/// The query the benchmark sends to the SQL explorer (`POST /v1/sql`): a
/// user's ad-hoc query, not one of skyhouse's statements.
const EXPLORER_QUERY: &str = include_str!("../explorer.sql");

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Record operations of each size's bulk load, smallest first; the
    /// growth column compares the last with the first.
    pub sizes: Vec<u64>,
    /// Seed of the generator.
    pub seed: u64,
    /// Days the bulk load's records spread over (ending now).
    pub days: u32,
    /// ClickHouse HTTP address.
    pub clickhouse_url: String,
    /// ClickHouse user: one whose queries the server logs (`bench` on the
    /// local and test servers), so each query's peak memory can be read.
    pub clickhouse_user: String,
    /// Its password.
    pub clickhouse_password: String,
    /// The ClickHouse server's pid, to read its RSS (same machine).
    pub clickhouse_pid: Option<u32>,
    /// Redis, `redis://host:port`.
    pub redis_url: String,
    /// The `skyhouse` binary.
    pub skyhouse: PathBuf,
    /// Database name prefix (each size gets `<prefix>_<size>`).
    pub database: String,
    /// Requests per route and case (cold, warm).
    pub reps: usize,
    /// Connections of the warm feed page loads.
    pub connections: usize,
    /// Requests per warm feed page load.
    pub load_requests: usize,
    /// Longest one route's cold or warm requests may take together; then
    /// fewer than `reps` are timed (the figure's `n` says how many).
    pub route_budget: Duration,
    /// Records added after the bulk load before the jobs run again;
    /// default min(1M, the largest size / 10), at every size.
    pub increment: Option<u64>,
    /// Keep each size's database (default: dropped after its run).
    pub keep: bool,
    /// Where the services' logs go.
    pub work_dir: PathBuf,
    /// Free disk (where `work_dir` is, the ClickHouse data's disk on one
    /// machine) the run must leave, bytes: a size that would need more is
    /// refused up front, and a load stops (and its database is dropped)
    /// when free space falls below it.
    pub min_free_bytes: u64,
    /// `scripts/chdb_storage.py`: when set, the loaded database is also
    /// copied into current ClickHouse (chdb) and weighed there, with the
    /// migrations' column codecs (figures `storage_chdb/…`) and without them
    /// (`storage_chdb_baseline/…`).
    pub chdb_script: Option<PathBuf>,
    /// Print progress to stderr.
    pub progress: bool,
    /// Start each measurement on a new second, so that the query log (one
    /// second resolution) tells whose query was whose exactly. Off, short
    /// measurements that share a second share their queries' peak memory
    /// (fine for a smoke run, which then takes less than half the time).
    pub separate_phases: bool,
}

impl Config {
    /// The defaults for `records` at the largest size: it and a tenth of it.
    pub fn new(records: u64, skyhouse: PathBuf) -> Config {
        Config {
            sizes: vec![(records / 10).max(1000), records],
            seed: 1,
            days: 730,
            clickhouse_url: "http://127.0.0.1:8123".into(),
            clickhouse_user: "bench".into(),
            clickhouse_password: String::new(),
            clickhouse_pid: None,
            redis_url: "redis://127.0.0.1:6379".into(),
            skyhouse,
            database: "skyhouse_bench_scale".into(),
            reps: 20,
            connections: 200,
            load_requests: 4000,
            route_budget: Duration::from_secs(120),
            increment: None,
            keep: false,
            work_dir: std::env::temp_dir(),
            chdb_script: None,
            min_free_bytes: 8 << 30,
            progress: true,
            separate_phases: true,
        }
    }

    fn validate(&self) -> Result<(), BoxError> {
        if self.sizes.is_empty() || self.sizes.iter().any(|s| *s < 1000) {
            return Err("every size must be at least 1000 records".into());
        }
        if self.reps == 0 || self.connections == 0 || self.load_requests == 0 {
            return Err("--reps, --connections and --load-requests must be positive".into());
        }
        if self.days == 0 {
            return Err("--days must be positive".into());
        }
        if !self.skyhouse.is_file() {
            return Err(format!(
                "--skyhouse {}: no such binary (cargo build --release -p skyhouse)",
                self.skyhouse.display()
            )
            .into());
        }
        http::redis_addr(&self.redis_url)?;
        let ident =
            |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !ident(&self.database) {
            return Err(format!(
                "--database {:?} must be letters, digits and _",
                self.database
            )
            .into());
        }
        Ok(())
    }
}

/// Run every size and report.
pub fn run(cfg: &Config) -> Result<Report, BoxError> {
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_sizes(cfg))
}

async fn run_sizes(cfg: &Config) -> Result<Report, BoxError> {
    let mut report = Report {
        bench: "scale",
        records: cfg.sizes.iter().copied().max().unwrap_or(0),
        load_average: vec![load_average()],
        ..Report::default()
    };
    for &size in &cfg.sizes {
        let mut run = SizeRun::start(cfg, size).await?;
        report.server = run.server.clone();
        let result = run.measure().await;
        run.finish().await;
        report.sizes.push(result?);
    }
    report.load_average.push(load_average());
    report.compute_growth();
    Ok(report)
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as u32)
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The records added after each size's bulk load: min(1M, the largest
/// size / 10), the same at every size, so that the growth of a job's time
/// after them is the growth with the table, not with the new data.
fn default_increment(sizes: &[u64]) -> u64 {
    (sizes.iter().copied().max().unwrap_or(0) / 10).clamp(1000, 1_000_000)
}

/// Percent-encode a query value.
fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A spare loopback port (bound, then released for the service to take).
fn free_port() -> Result<u16, BoxError> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

const GIB: f64 = (1u64 << 30) as f64;

/// Free bytes on the file system holding `path` (`df`), if it can be read.
fn free_bytes(path: &std::path::Path) -> Option<u64> {
    let out = Command::new("df")
        .args(["-B1", "--output=avail"])
        .arg(path)
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .nth(1)?
        .trim()
        .parse()
        .ok()
}

/// Bytes on disk a bulk load of `records` needs at its peak, about: what
/// the tables take per record on ClickHouse 18.16 (measured by this
/// benchmark) with room for a merge's second copy.
pub const PEAK_BYTES_PER_RECORD: u64 = 600;

/// `VmRSS` and `VmHWM` of a process, MiB.
fn rss_mb(pid: u32) -> Option<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map(|kb| kb / 1024.0)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// CPU seconds this thread has used (user + system).
fn thread_cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// A started service.
struct Service {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Service {
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// SIGTERM, then SIGKILL after 30 s.
    fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A phase of the run: queries of the bench user that started within
/// `[from, to]` (server seconds) belong to it.
struct PhaseSpan {
    name: String,
    from: u32,
    to: u32,
}

/// One size's run: its database, generator, services and figures.
struct SizeRun<'a> {
    cfg: &'a Config,
    records: u64,
    ch: ClickHouse,
    server: String,
    redis: String,
    prefix: String,
    admin_key: String,
    gen: Option<Generator>,
    phases: Vec<PhaseSpan>,
    report: SizeReport,
    services: Vec<Service>,
    started: Instant,
}

impl<'a> SizeRun<'a> {
    async fn start(cfg: &'a Config, records: u64) -> Result<SizeRun<'a>, BoxError> {
        let db = format!("{}_{}", cfg.database, human(records as f64).to_lowercase());
        let ch = ClickHouse::new(ClickHouseConfig {
            user: cfg.clickhouse_user.clone(),
            password: cfg.clickhouse_password.clone(),
            timeouts: Timeouts {
                receive: Duration::from_secs(3600),
                ..Timeouts::default()
            },
            ..ClickHouseConfig::local(&cfg.clickhouse_url, &db)
        })?;
        let server = ch.server_version().await.map_err(|e| {
            format!(
                "ClickHouse at {} as user {:?}: {e} (the local servers have a `bench` user since \
                 this benchmark: restart them with `just down && just up`)",
                cfg.clickhouse_url, cfg.clickhouse_user
            )
        })?;
        if let Some(free) = free_bytes(&cfg.work_dir) {
            let need = (records + default_increment(&cfg.sizes)) * PEAK_BYTES_PER_RECORD;
            if free < need + cfg.min_free_bytes {
                return Err(format!(
                    "{records} records need about {:.1} GiB of disk, {:.1} GiB is free on the disk of {} \
                     and {:.0} GiB must stay free (--min-free-gb): run a smaller size",
                    need as f64 / GIB,
                    free as f64 / GIB,
                    cfg.work_dir.display(),
                    cfg.min_free_bytes as f64 / GIB
                )
                .into());
            }
        }
        let dids = (records / 50).clamp(1000, u64::from(u32::MAX)) as u32;
        let pid = std::process::id();
        Ok(SizeRun {
            cfg,
            records,
            ch,
            server: server.to_string(),
            redis: http::redis_addr(&cfg.redis_url)?,
            prefix: format!("bench-scale:{pid}:{records}:"),
            admin_key: format!("bench-scale-admin-{:016x}", fastrand::u64(..)),
            gen: None,
            phases: Vec::new(),
            report: SizeReport {
                records,
                dids,
                ..SizeReport::default()
            },
            services: Vec::new(),
            started: Instant::now(),
        })
    }

    fn say(&self, what: &str) {
        if self.cfg.progress {
            eprintln!(
                "[scale {} {:>6.0}s] {what}",
                human(self.records as f64),
                self.started.elapsed().as_secs_f64()
            );
        }
    }

    fn fig(&mut self, name: impl Into<String>, v: f64) {
        self.report.figures.set(name, v);
    }

    fn note(&mut self, n: impl Into<String>) {
        let n = n.into();
        self.say(&format!("note: {n}"));
        self.report.notes.push(n);
    }

    /// Wait for the next whole second, so that this phase's queries start
    /// in seconds no earlier phase used. 50 ms into it: the server stamps
    /// queries with `time()`, a coarse clock that may lag a few milliseconds.
    async fn phase_start(&self) -> u32 {
        if !self.cfg.separate_phases {
            return now_secs();
        }
        let micros = now_micros();
        let wait = 1_000_000 - micros % 1_000_000;
        tokio::time::sleep(Duration::from_micros(wait + 50_000)).await;
        now_secs()
    }

    fn phase_end(&mut self, name: &str, from: u32) {
        self.phases.push(PhaseSpan {
            name: name.to_owned(),
            from,
            to: now_secs(),
        });
    }

    async fn measure(&mut self) -> Result<SizeReport, BoxError> {
        self.say(&format!(
            "database {}, {} accounts, ClickHouse {}",
            self.ch.database(),
            self.report.dids,
            self.server
        ));
        admin::drop_database(&self.ch).await?;
        admin::create_database(&self.ch).await?;
        Migrator::new(&self.ch, migrate::embedded()?).up().await?;
        if let Some(pid) = self.cfg.clickhouse_pid {
            // Reset the server's peak RSS to its RSS now (Linux ≥ 4.0).
            if std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_err() {
                self.note("could not reset the server's peak RSS: memory/server_peak_rss_mb covers its whole life");
            }
        }
        let run_from = now_secs();

        self.generator_rates().await?;
        self.bulk_load().await?;
        self.side_tables().await?;
        self.settle_merges("load").await?;
        self.maintenance("after_load").await;
        self.start_services().await?;
        self.http_search().await?;
        self.http_feeds().await?;
        self.http_admin().await?;
        self.jsonbench().await;
        self.settle_merges("storage").await?;
        self.storage().await?;
        self.stop_services();
        self.chdb_storage().await;
        self.increment().await?;
        self.maintenance("after_increment").await;
        self.memory(run_from).await?;
        if let Some(g) = &self.gen {
            self.report.generated = g.stats.clone();
        }
        self.report.phases = self
            .phases
            .iter()
            .map(|p| (p.name.clone(), p.from, p.to))
            .collect();
        Ok(std::mem::take(&mut self.report))
    }

    async fn finish(&mut self) {
        self.stop_services();
        if !self.cfg.keep {
            if let Err(e) = admin::drop_database(&self.ch).await {
                eprintln!("could not drop {}: {e}", self.ch.database());
            }
        }
    }

    fn stop_services(&mut self) {
        for s in self.services.drain(..) {
            s.stop();
        }
    }

    /// Generator throughput on one core, without ClickHouse: building the
    /// operations, then building and transforming them into rows.
    async fn generator_rates(&mut self) -> Result<(), BoxError> {
        let (dids, seed, records) = (self.report.dids, self.cfg.seed, self.records);
        let sample = records.min(1_000_000);
        let rates = tokio::task::spawn_blocking(move || {
            [false, true].map(|transform| {
                let mut g = Generator::new(dids, seed ^ 0x5a5a, records);
                let end = now_micros();
                g.begin(Phase {
                    records: sample,
                    start_us: end - 30 * 86_400_000_000,
                    end_us: end,
                    shaped: true,
                    hide_accounts: true,
                    deletions: 0,
                });
                let (t, cpu) = (Instant::now(), thread_cpu_secs());
                let mut rows = Rows::default();
                while !g.finished() {
                    g.fill(&mut rows, writer::MESSAGE_ROWS, transform);
                    rows.clear();
                }
                let wall = t.elapsed().as_secs_f64();
                let cpu = (thread_cpu_secs() - cpu).max(0.01);
                (sample as f64 / wall, sample as f64 / cpu)
            })
        })
        .await?;
        let [(gen_wall, gen_cpu), (apply_wall, apply_cpu)] = rates;
        self.fig("gen/records_per_s", gen_wall.round());
        self.fig("gen/records_per_cpu_s", gen_cpu.round());
        self.fig("gen/with_transform_records_per_s", apply_wall.round());
        self.fig("gen/with_transform_records_per_cpu_s", apply_cpu.round());
        self.say(&format!(
            "generator: {:.0} records/s ({:.0} per CPU second), {:.0} with the transform ({:.0} per CPU second), {sample} records",
            gen_wall, gen_cpu, apply_wall, apply_cpu
        ));
        Ok(())
    }

    async fn bulk_load(&mut self) -> Result<(), BoxError> {
        let end = now_micros() - 120_000_000;
        let start = end - u64::from(self.cfg.days) * 86_400_000_000;
        let mut g = Generator::new(self.report.dids, self.cfg.seed, self.records);
        g.begin(Phase {
            records: self.records,
            start_us: start,
            end_us: end,
            shaped: true,
            hide_accounts: true,
            deletions: 0,
        });
        self.say(&format!(
            "bulk load of {} records over {} days",
            self.records, self.cfg.days
        ));
        let from = self.phase_start().await;
        let g = self.write(g, "load").await?;
        self.phase_end("load", from);
        self.report.top_likes = g.top_likes(10);
        let per_100m = 100_000_000.0 / self.records as f64;
        self.fig(
            "gen/posts_with_100k_likes_scaled",
            g.posts_with_likes((100_000.0 / per_100m).max(1.0) as u32) as f64,
        );
        self.gen = Some(g);
        Ok(())
    }

    /// Run the generator's current phase through `writer::run`, as the
    /// indexer's pipeline does; figures under `name/`.
    async fn write(&mut self, mut g: Generator, name: &str) -> Result<Generator, BoxError> {
        let (tx, rx) = mpsc::channel::<(Rows, u64)>(writer::INPUT_QUEUE);
        let (ack_tx, mut ack_rx) = mpsc::channel::<Ack<u64>>(64);
        let start = Instant::now();
        let writer = tokio::spawn(writer::run(
            self.ch.clone(),
            WriterConfig::default(),
            rx,
            ack_tx,
        ));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopped = stop.clone();
        let producer = tokio::task::spawn_blocking(move || {
            let mut blocked = Duration::ZERO;
            let mut pos = 0u64;
            let mut records = 0u64;
            loop {
                if stopped.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let mut rows = Rows::default();
                records += g.fill(&mut rows, writer::MESSAGE_ROWS, true);
                if rows.is_empty() {
                    break;
                }
                pos += 1;
                let t = Instant::now();
                if tx.blocking_send((rows, pos)).is_err() {
                    return Err("the batch writer stopped".to_owned());
                }
                blocked += t.elapsed();
            }
            Ok((g, blocked, pos, records))
        });
        let (mut rows, mut dead, mut upto, mut last_say) = (0usize, 0usize, 0u64, Instant::now());
        let (mut last_df, mut low_disk) = (Instant::now(), None);
        while let Some(ack) = ack_rx.recv().await {
            rows += ack.rows;
            dead += ack.dead_lettered;
            upto = ack.upto;
            if low_disk.is_none() && last_df.elapsed() > Duration::from_secs(5) {
                last_df = Instant::now();
                if let Some(free) = free_bytes(&self.cfg.work_dir) {
                    if free < self.cfg.min_free_bytes {
                        stop.store(true, std::sync::atomic::Ordering::Relaxed);
                        low_disk = Some(free);
                    }
                }
            }
            if self.cfg.progress && last_say.elapsed() > Duration::from_secs(15) {
                last_say = Instant::now();
                let secs = start.elapsed().as_secs_f64();
                self.say(&format!(
                    "{name}: {rows} rows written, {:.0} rows/s",
                    rows as f64 / secs
                ));
            }
        }
        let secs = start.elapsed().as_secs_f64();
        writer.await??;
        if let Some(free) = low_disk {
            return Err(format!(
                "{name}: stopped after {rows} rows: {:.1} GiB free on the disk of {}, below --min-free-gb {:.0} \
                 (run a smaller size)",
                free as f64 / GIB,
                self.cfg.work_dir.display(),
                self.cfg.min_free_bytes as f64 / GIB
            )
            .into());
        }
        let (g, blocked, pos, records) = producer.await?.map_err(|e| -> BoxError { e.into() })?;
        if upto != pos {
            return Err(format!("{name}: the last ack was for message {upto}, not {pos}").into());
        }
        self.fig(format!("{name}/secs"), round(secs, 1));
        self.fig(format!("{name}/records"), records as f64);
        self.fig(format!("{name}/rows"), rows as f64);
        self.fig(
            format!("{name}/records_per_s"),
            (records as f64 / secs).round(),
        );
        self.fig(format!("{name}/rows_per_s"), (rows as f64 / secs).round());
        self.fig(format!("{name}/dead_lettered"), dead as f64);
        // The share of the time the generator waited for the writer: near 1
        // when ClickHouse is the bottleneck, near 0 when the generator is.
        self.fig(
            format!("{name}/generator_waiting"),
            round(blocked.as_secs_f64() / secs, 3),
        );
        self.say(&format!(
            "{name}: {records} records, {rows} rows in {secs:.1} s ({:.0} records/s, {:.0} rows/s); the generator waited {:.0}% of the time",
            records as f64 / secs,
            rows as f64 / secs,
            100.0 * blocked.as_secs_f64() / secs
        ));
        Ok(g)
    }

    /// `repo_state` (as a backfill of every account would leave it) and the
    /// accounts holding the label feed's label (`actor_labels`).
    async fn side_tables(&mut self) -> Result<(), BoxError> {
        let Some(g) = self.gen.as_ref() else {
            return Ok(());
        };
        let now = now_secs();
        let mut states = Vec::new();
        for i in g.seen_accounts() {
            let status = if g.is_hidden(i) {
                "deactivated"
            } else {
                "done"
            };
            let rev = crate::clock::tid(now_micros() - u64::from(i), 0);
            states.push(repos::RepoStateRow {
                did: g.did(i).to_owned(),
                rev: crate::clock::tid_string(rev),
                rev_version: rev,
                status: status.to_owned(),
                records: u64::from(i % 500),
                error: String::new(),
                updated_at: now - i % (30 * 86_400),
                version: rev,
            });
            if states.len() == 100_000 {
                repos::write_repo_states(&self.ch, &states).await?;
                states.clear();
            }
        }
        repos::write_repo_states(&self.ch, &states).await?;
        let labels: Vec<ActorLabel> = g
            .samples
            .label_holders
            .iter()
            .map(|did| ActorLabel {
                did: did.clone(),
                label: LABEL.to_owned(),
                src: "did:plc:benchlabeler00000000000".to_owned(),
                neg: 0,
                version: 1,
                created_at: now,
            })
            .collect();
        if !labels.is_empty() {
            self.ch.insert("actor_labels", &labels).await?;
        }
        Ok(())
    }

    /// Wait (at most 20 min) until no merge runs on the database.
    async fn settle_merges(&mut self, name: &str) -> Result<(), BoxError> {
        let start = Instant::now();
        let mut quiet = 0;
        while start.elapsed() < Duration::from_secs(1200) {
            if admin::running_merges(&self.ch).await? == 0 {
                quiet += 1;
                if quiet >= 3 {
                    break;
                }
            } else {
                quiet = 0;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let tables: Vec<String> = admin::table_storage(&self.ch)
            .await?
            .into_iter()
            .map(|t| t.table)
            .collect();
        let refs: Vec<&str> = tables.iter().map(String::as_str).collect();
        let parts = admin::active_parts(&self.ch, &refs).await?;
        self.fig(
            format!("merges/{name}/wait_secs"),
            round(start.elapsed().as_secs_f64(), 1),
        );
        self.fig(format!("merges/{name}/parts"), parts as f64);
        Ok(())
    }

    /// The feeds the feed generator serves here: the built-in ones, a label
    /// feed and a pinned one.
    fn feeds(&self) -> Vec<Feed> {
        let mut feeds = skyhouse_feeds::builtin_feeds();
        feeds.push(Feed {
            rkey: format!("label-{LABEL}"),
            kind: FeedKind::Label {
                label: LABEL.to_owned(),
                private: false,
            },
            profile: skyhouse_feeds::FeedProfile {
                display_name: format!("label-{LABEL}"),
                description: None,
                avatar: None,
            },
        });
        if let Some(g) = &self.gen {
            if !g.samples.pinned.is_empty() {
                feeds.push(Feed {
                    rkey: "pinned".into(),
                    kind: FeedKind::Static {
                        uris: g.samples.pinned.clone(),
                    },
                    profile: skyhouse_feeds::FeedProfile {
                        display_name: "pinned".into(),
                        description: None,
                        avatar: None,
                    },
                });
            }
        }
        feeds
    }

    /// Time one maintenance job in its own phase.
    async fn job<T, F>(&mut self, round_name: &str, name: &str, fut: F) -> Option<T>
    where
        F: std::future::Future<Output = Result<T, BoxError>>,
    {
        let phase = format!("maint/{round_name}/{name}");
        let from = self.phase_start().await;
        let t = Instant::now();
        let out = fut.await;
        let secs = t.elapsed().as_secs_f64();
        self.phase_end(&phase, from);
        self.fig(format!("{phase}/secs"), round(secs, 3));
        match out {
            Ok(v) => {
                self.say(&format!("{phase}: {secs:.2} s"));
                Some(v)
            }
            Err(e) => {
                self.fig(format!("{phase}/failed"), 1.0);
                self.note(format!("{phase} failed after {secs:.1} s: {e}"));
                None
            }
        }
    }

    /// Every maintenance job once: the interaction counts alone, then the
    /// whole refresh the services run (hidden accounts, counts, daily stats,
    /// retention), then the daily stats' backlog worked off (what the next
    /// refreshes would do, [`aggregates::DAYS_PER_REFRESH`] pairs each),
    /// every feed's ranking, the account cleanup queue and one cleanup job,
    /// `skyhouse backfill status`.
    async fn maintenance(&mut self, r: &str) {
        let ch = self.ch.clone();
        if let Some(done) = self
            .job(r, "interactions", async {
                Ok(counts::refresh_interactions(&ch).await?)
            })
            .await
        {
            self.fig(
                format!("maint/{r}/interactions/windows"),
                done.windows as f64,
            );
        }
        if let Some(done) = self
            .job(r, "aggregates_refresh", async {
                Ok(aggregates::refresh(&ch).await?)
            })
            .await
        {
            self.fig(
                format!("maint/{r}/aggregates_refresh/days"),
                done.days as f64,
            );
            self.fig(
                format!("maint/{r}/aggregates_refresh/days_backlog"),
                done.days_backlog as f64,
            );
        }
        if let Some(days) = self
            .job(r, "daily_stats_backlog", async {
                Ok(aggregates::rebuild_daily_stats(&ch, aggregates::DAYS_PER_REFRESH).await?)
            })
            .await
        {
            self.fig(format!("maint/{r}/daily_stats_backlog/days"), days as f64);
        }
        for feed in self.feeds() {
            let name = format!("rank_{}", feed.rkey);
            if let Some(ranked) = self
                .job(r, &name, async {
                    Ok(skyhouse_feeds::rank(&ch, &feed).await?)
                })
                .await
            {
                self.fig(format!("maint/{r}/{name}/posts"), ranked.len() as f64);
            }
        }
        let pending = self
            .job(r, "pending_cleanups", async {
                Ok(cleanup::pending_account_cleanups(&ch).await?)
            })
            .await
            .unwrap_or_default();
        self.fig(
            format!("maint/{r}/pending_cleanups/accounts"),
            pending.len() as f64,
        );
        match pending.first() {
            Some((did, version)) => {
                let id = cleanup::account_job_id(did, *version);
                if let Some(done) = self
                    .job(r, "account_cleanup", async {
                        Ok(cleanup::cleanup_did(&ch, did, &id, "account deleted").await?)
                    })
                    .await
                {
                    self.fig(
                        format!("maint/{r}/account_cleanup/rows"),
                        done.rows_tombstoned as f64,
                    );
                }
            }
            None => self.note(format!(
                "maint/{r}: no deleted account pending, no cleanup job timed"
            )),
        }
        let cmd = self.skyhouse_command(&["backfill", "status"]);
        self.job(r, "backfill_status", async move {
            let out = tokio::task::spawn_blocking(move || {
                let mut cmd = cmd;
                cmd.output()
            })
            .await??;
            if !out.status.success() {
                return Err(format!(
                    "skyhouse backfill status exited {}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )
                .into());
            }
            let text = String::from_utf8_lossy(&out.stdout);
            if !text.lines().any(|l| l.starts_with("done\t")) {
                return Err(
                    format!("skyhouse backfill status printed no done count: {text}").into(),
                );
            }
            Ok(())
        })
        .await;
    }

    /// `skyhouse <args>` with this run's ClickHouse and Redis flags, and no
    /// service settings from the environment.
    fn skyhouse_command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.cfg.skyhouse);
        cmd.args(args)
            .args(["--clickhouse-address", &self.cfg.clickhouse_url])
            .args(["--clickhouse-username", &self.cfg.clickhouse_user])
            .args(["--database", self.ch.database()])
            .args(["--redis", &self.cfg.redis_url])
            .args(["--redis-prefix", &self.prefix]);
        for (k, _) in std::env::vars() {
            let service = [
                "CLICKHOUSE_",
                "REDIS_",
                "SEARCH_",
                "FEEDGEN_",
                "SKYHOUSE_",
                "OTEL_",
                "PLC_",
            ];
            if service.iter().any(|p| k.starts_with(p)) {
                cmd.env_remove(k);
            }
        }
        cmd.env("CLICKHOUSE_PASSWORD", &self.cfg.clickhouse_password)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null());
        cmd
    }

    async fn spawn(&mut self, name: &'static str, args: &[&str]) -> Result<Service, BoxError> {
        let port = free_port()?;
        let metrics = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let metrics_addr = format!("127.0.0.1:{metrics}");
        let mut all: Vec<&str> = vec![name, "--listen", &listen, "--metrics-addr", &metrics_addr];
        all.extend_from_slice(args);
        let mut cmd = self.skyhouse_command(&all);
        let log = self.cfg.work_dir.join(format!(
            "{}-{}-{name}.log",
            self.ch.database(),
            self.services.len()
        ));
        let file = std::fs::File::create(&log)?;
        cmd.stdout(file.try_clone()?).stderr(file);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.cfg.skyhouse.display()))?;
        let mut service = Service {
            name,
            child,
            addr: listen.parse()?,
            log,
        };
        // Ready when /health answers 200 (the feed generator after its
        // first count refresh).
        let health: SocketAddr = metrics_addr.parse()?;
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = service.child.try_wait() {
                return Err(format!("{name} exited ({status}):\n{}", service.tail()).into());
            }
            let r = Conn::new(health).send(&Request::get("/health")).await;
            if r.status == 200 {
                break;
            }
            if start.elapsed() > Duration::from_secs(3600) {
                let tail = service.tail();
                service.stop();
                return Err(format!("{name} not ready after an hour:\n{tail}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(service)
    }

    /// `skyhouse search`, and two `skyhouse feedgen`s: one with the default
    /// cache times (warm pages), one whose pages and rankings expire after
    /// a second (every first page is ranked in ClickHouse: cold pages).
    async fn start_services(&mut self) -> Result<(), BoxError> {
        let feeds_file = self
            .cfg
            .work_dir
            .join(format!("{}-feeds.json", self.ch.database()));
        let mut extra = vec![serde_json::json!({"rkey": format!("label-{LABEL}"), "label": LABEL})];
        if let Some(g) = &self.gen {
            if !g.samples.pinned.is_empty() {
                extra.push(serde_json::json!({"rkey": "pinned", "uris": g.samples.pinned}));
            }
        }
        std::fs::write(
            &feeds_file,
            serde_json::json!({ "feeds": extra }).to_string(),
        )?;
        let feeds_path = feeds_file.display().to_string();
        let from = self.phase_start().await;
        self.say("starting skyhouse search and feedgen");
        let key = self.admin_key.clone();
        let search = self
            .spawn("search", &["--admin-key", &key, "--refresh-secs", "86400"])
            .await?;
        self.services.push(search);
        for (cache, snapshot) in [("30", "600"), ("1", "2")] {
            let port = free_port()?;
            let public = format!("http://127.0.0.1:{port}");
            let feedgen = self
                .spawn(
                    "feedgen",
                    &[
                        "--public-url",
                        &public,
                        "--publisher-did",
                        PUBLISHER,
                        "--feeds-config",
                        &feeds_path,
                        "--cache-ttl-secs",
                        cache,
                        "--snapshot-ttl-secs",
                        snapshot,
                        "--refresh-secs",
                        "86400",
                    ],
                )
                .await?;
            self.services.push(feedgen);
        }
        self.idle().await?;
        self.phase_end("services_start", from);
        Ok(())
    }

    /// Wait until none of the bench user's queries runs (the services'
    /// first refreshes), at most an hour.
    async fn idle(&self) -> Result<(), BoxError> {
        let start = Instant::now();
        let mut quiet = 0;
        while start.elapsed() < Duration::from_secs(3600) {
            if admin::running_queries(&self.ch, &self.cfg.clickhouse_user).await? == 0 {
                quiet += 1;
                if quiet >= 3 {
                    return Ok(());
                }
            } else {
                quiet = 0;
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(())
    }

    fn service(&self, name: &str, n: usize) -> Result<SocketAddr, BoxError> {
        self.services
            .iter()
            .filter(|s| s.name == name)
            .nth(n)
            .map(|s| s.addr)
            .ok_or_else(|| format!("{name} is not running").into())
    }

    /// Time `cold` one by one, each after dropping ClickHouse's caches and
    /// the `redis` keys; then `warm` `reps` times after one untimed request.
    /// Figures under `http/<name>/{cold,warm}`; returns the responses.
    async fn route(
        &mut self,
        addr: SocketAddr,
        name: &str,
        cold: &[Request],
        warm: Option<&Request>,
        redis: &[String],
    ) -> Result<(Vec<Response>, Vec<Response>), BoxError> {
        let mut conn = Conn::new(addr);
        let budget = self.cfg.route_budget;
        let phase = format!("http/{name}/cold");
        let from = self.phase_start().await;
        let t = Instant::now();
        let mut cold_out = Vec::new();
        for req in cold {
            if !cold_out.is_empty() && t.elapsed() > budget {
                break;
            }
            admin::drop_caches(&self.ch).await?;
            http::redis_del(&self.redis, redis).await?;
            cold_out.push(conn.send(req).await);
        }
        self.phase_end(&phase, from);
        self.record(&phase, &cold_out);
        let mut warm_out = Vec::new();
        if let Some(req) = warm {
            let phase = format!("http/{name}/warm");
            let from = self.phase_start().await;
            let _ = conn.send(req).await;
            let t = Instant::now();
            for _ in 0..self.cfg.reps {
                if !warm_out.is_empty() && t.elapsed() > budget {
                    break;
                }
                warm_out.push(conn.send(req).await);
            }
            self.phase_end(&phase, from);
            self.record(&phase, &warm_out);
        }
        Ok((cold_out, warm_out))
    }

    fn record(&mut self, prefix: &str, responses: &[Response]) {
        let samples: Vec<(Duration, u16)> = responses.iter().map(|r| (r.took, r.status)).collect();
        let stat = Stat::of(&samples);
        self.report.figures.stat(prefix, &stat);
        if let Some(bad) = responses.iter().find(|r| !(200..300).contains(&r.status)) {
            let body = String::from_utf8_lossy(&bad.body);
            self.note(format!(
                "{prefix}: {} of {} failed, e.g. {} {}",
                stat.n - stat.ok,
                stat.n,
                bad.status,
                body.chars().take(160).collect::<String>()
            ));
        }
        self.say(&format!(
            "{prefix}: n {} p50 {:.1} ms p99 {:.1} ms{}",
            stat.n,
            stat.p50_ms,
            stat.p99_ms,
            stat.rps
                .map(|r| format!(" {r:.0} req/s"))
                .unwrap_or_default()
        ));
    }

    /// `reps` requests made by `f(i)`.
    fn reqs(&self, f: impl Fn(usize) -> Request) -> Vec<Request> {
        (0..self.cfg.reps).map(f).collect()
    }

    /// Every read route of `skyhouse search`.
    async fn http_search(&mut self) -> Result<(), BoxError> {
        let addr = self.service("search", 0)?;
        let Some(g) = self.gen.as_ref() else {
            return Err("no dataset".into());
        };
        let mut authors = g.busy_authors(self.cfg.reps / 2 + 1);
        authors.extend(g.middling_authors(self.cfg.reps));
        let rare = g.samples.rare_terms.clone();
        let posts = g.samples.pinned.clone();
        let handles = g.samples.handles.clone();
        if rare.is_empty() || handles.is_empty() || authors.is_empty() {
            return Err("the dataset has no rare terms, handles or authors: too small".into());
        }
        let pick = |v: &Vec<String>, i: usize| v[i % v.len()].clone();
        let common: Vec<&str> = (0..12)
            .flat_map(|rank| LANGUAGES.iter().take(4).map(move |l| l.words[rank + 10]))
            .collect();
        let stats_key = vec![format!("{}api:stats", self.prefix)];

        let cold = self.reqs(|_| Request::get("/v1/stats"));
        self.route(addr, "search/stats", &cold, Some(&cold[0]), &stats_key)
            .await?;

        let cold = self.reqs(|i| Request::get(format!("/v1/stats/actors/{}", pick(&authors, i))));
        self.route(addr, "search/actor_stats", &cold, Some(&cold[0]), &[])
            .await?;

        // Counts of 7 posts a request, different ones each time (the README's
        // figures were measured so; the API takes up to 25 URIs a request).
        if posts.is_empty() {
            self.note("search/post_stats: the dataset has no sample posts");
        } else {
            let cold = self.reqs(|i| {
                let uris: Vec<&str> = (0..7)
                    .map(|j| posts[(i * 7 + j) % posts.len()].as_str())
                    .collect();
                Request::get(format!("/v1/stats/posts?uris={}", enc(&uris.join(","))))
            });
            self.route(addr, "search/post_stats", &cold, Some(&cold[0]), &[])
                .await?;
        }

        for a in Analytics::ALL {
            let cold = self.reqs(|i| {
                Request::get(format!("/v1/stats/analytics/{}?limit={}", a.name(), 10 + i))
            });
            let name = format!("search/analytics_{}", a.name());
            // The whole-history answers are cached: each cold request without it.
            let key = vec![format!("{}api:analytics:{}", self.prefix, a.name())];
            self.route(addr, &name, &cold, Some(&cold[0]), &key).await?;
        }

        type Query<'q> = Box<dyn Fn(usize) -> String + 'q>;
        let post_routes: Vec<(&str, Query)> = vec![
            (
                "rare_term",
                Box::new(|i| format!("q={}", enc(&pick(&rare, i)))),
            ),
            (
                "common_term",
                Box::new(|i| format!("q={}", enc(common[i % common.len()]))),
            ),
            (
                "author",
                Box::new(|i| format!("author={}", pick(&authors, i))),
            ),
            (
                "lang",
                Box::new(|i| format!("lang={}", LANGUAGES[i % LANGUAGES.len()].tag)),
            ),
            (
                "window_7d",
                Box::new(|i| {
                    let until = now_secs() - i as u32 * 3600;
                    format!("since={}&until={until}", until - 7 * 86_400)
                }),
            ),
            ("tag", Box::new(|i| format!("tag={}", enc(TAGS[i % 12])))),
        ];
        for (name, query) in &post_routes {
            let cold =
                self.reqs(|i| Request::get(format!("/v1/search/posts?limit=25&{}", query(i))));
            let route = format!("search/posts_{name}");
            self.route(addr, &route, &cold, Some(&cold[0]), &[]).await?;
        }
        // A second page: the cursor of each common term's first page.
        let mut conn = Conn::new(addr);
        let mut cold = Vec::new();
        for term in &common {
            if cold.len() == self.cfg.reps {
                break;
            }
            let base = format!("/v1/search/posts?limit=25&q={}", enc(term));
            let first = conn.send(&Request::get(base.clone())).await;
            if let Some(c) = first
                .json()
                .and_then(|v| v["cursor"].as_str().map(str::to_owned))
            {
                cold.push(Request::get(format!("{base}&cursor={}", enc(&c))));
            }
        }
        if cold.is_empty() {
            self.note("search/posts_cursor: no common term has a second page");
        } else {
            let warm = cold[0].clone();
            self.route(addr, "search/posts_cursor", &cold, Some(&warm), &[])
                .await?;
        }

        let cold = self.reqs(|i| {
            let h = pick(&handles, i);
            let q = h.split('.').next().unwrap_or(&h).to_owned();
            Request::get(format!("/v1/search/actors?limit=25&q={}", enc(&q)))
        });
        self.route(addr, "search/actors", &cold, Some(&cold[0]), &[])
            .await?;

        let cold =
            self.reqs(|i| Request::get(format!("/v1/repos/{}?limit=100", pick(&authors, i))));
        self.route(addr, "search/repo", &cold, Some(&cold[0]), &[])
            .await?;

        let cold = self.reqs(|_| Request::get("/openapi.json"));
        self.route(addr, "search/openapi", &cold, Some(&cold[0]), &[])
            .await?;
        Ok(())
    }

    /// The admin routes (with the bootstrap admin key): keys, the SQL
    /// explorer, cleanup jobs (these tombstone accounts: last).
    async fn http_admin(&mut self) -> Result<(), BoxError> {
        let addr = self.service("search", 0)?;
        let key = self.admin_key.clone();
        let post = |path: &str, body: String| Request {
            method: "POST",
            path: path.to_owned(),
            body: body.into_bytes(),
            bearer: Some(key.clone()),
        };
        let cold = self.reqs(|i| {
            post(
                "/v1/admin/keys",
                serde_json::json!({"name": format!("bench {i}"), "scopes": ["read"]}).to_string(),
            )
        });
        let warm = post(
            "/v1/admin/keys",
            serde_json::json!({"name": "bench warm", "scopes": ["read"]}).to_string(),
        );
        let (c, w) = self
            .route(addr, "search/admin_create_key", &cold, Some(&warm), &[])
            .await?;
        let ids: Vec<String> = c
            .iter()
            .chain(&w)
            .filter_map(|r| r.json().and_then(|v| v["id"].as_str().map(str::to_owned)))
            .collect();

        let list = Request::get("/v1/admin/keys").with_key(&key);
        let cold = vec![list.clone(); self.cfg.reps];
        self.route(addr, "search/admin_list_keys", &cold, Some(&list), &[])
            .await?;

        let half = ids.len() / 2;
        let revoke = |id: &String| Request {
            method: "DELETE",
            path: format!("/v1/admin/keys/{id}"),
            body: Vec::new(),
            bearer: Some(key.clone()),
        };
        let cold: Vec<Request> = ids[..half].iter().map(revoke).collect();
        if let Some(first) = cold.first().cloned() {
            // Warm: the same key again (already revoked: found, still revoked).
            self.route(addr, "search/admin_revoke_key", &cold, Some(&first), &[])
                .await?;
        }

        let body = serde_json::json!({ "query": EXPLORER_QUERY.trim() }).to_string();
        let cold = self.reqs(|_| post("/v1/sql", body.clone()));
        self.route(addr, "search/admin_sql", &cold, Some(&cold[0]), &[])
            .await?;

        let Some(g) = self.gen.as_ref() else {
            return Ok(());
        };
        let victims = g.middling_authors(self.cfg.reps + 5);
        let victims = &victims[victims.len().min(5)..];
        let cold: Vec<Request> = victims
            .iter()
            .map(|d| post(&format!("/v1/admin/repos/{d}/cleanup"), String::new()))
            .collect();
        let (c, _) = self
            .route(addr, "search/admin_cleanup", &cold, cold.first(), &[])
            .await?;
        let jobs: Vec<String> = c
            .iter()
            .filter_map(|r| r.json().and_then(|v| v["job"].as_str().map(str::to_owned)))
            .collect();
        let cold: Vec<Request> = jobs
            .iter()
            .map(|j| Request::get(format!("/v1/admin/jobs/{j}")).with_key(&key))
            .collect();
        if let Some(first) = cold.first().cloned() {
            self.route(addr, "search/admin_job", &cold, Some(&first), &[])
                .await?;
        }
        Ok(())
    }

    /// Every feed's first page and a cursor page, cold (the feed generator
    /// whose pages and rankings expire after a second) and warm (the default
    /// one, `connections` at once), plus the other feed generator routes.
    async fn http_feeds(&mut self) -> Result<(), BoxError> {
        let warm_addr = self.service("feedgen", 0)?;
        let cold_addr = self.service("feedgen", 1)?;
        let page = |rkey: &str| {
            let uri = format!(
                "at://{PUBLISHER}/{}/{rkey}",
                skyhouse_feeds::GENERATOR_COLLECTION
            );
            format!(
                "/xrpc/app.bsky.feed.getFeedSkeleton?feed={}&limit={FEED_LIMIT}",
                enc(&uri)
            )
        };
        let feeds: Vec<String> = self.feeds().into_iter().map(|f| f.rkey).collect();
        let cursor_of = |r: &Response| {
            r.json()
                .and_then(|v| v["cursor"].as_str().map(str::to_owned))
        };

        // Cold: rounds over the feeds, each feed's requests at least 1.1 s
        // apart (its page and ranking then expired).
        let from = self.phase_start().await;
        let mut conn = Conn::new(cold_addr);
        let mut last: Vec<Option<Instant>> = vec![None; feeds.len()];
        let mut first: Vec<Vec<Response>> = vec![Vec::new(); feeds.len()];
        let mut next: Vec<Vec<Response>> = vec![Vec::new(); feeds.len()];
        let t = Instant::now();
        for _ in 0..self.cfg.reps {
            if t.elapsed() > self.cfg.route_budget * feeds.len() as u32 && !first[0].is_empty() {
                break;
            }
            for (i, rkey) in feeds.iter().enumerate() {
                if let Some(at) = last[i] {
                    let wait = Duration::from_millis(1100).saturating_sub(at.elapsed());
                    tokio::time::sleep(wait).await;
                }
                let r = conn.send(&Request::get(page(rkey))).await;
                let cursor = cursor_of(&r);
                first[i].push(r);
                if let Some(c) = cursor {
                    let r = conn
                        .send(&Request::get(format!("{}&cursor={}", page(rkey), enc(&c))))
                        .await;
                    next[i].push(r);
                }
                last[i] = Some(Instant::now());
            }
        }
        self.phase_end("http/feedgen/cold", from);
        for (i, rkey) in feeds.iter().enumerate() {
            self.record(&format!("http/feedgen/{rkey}/first/cold"), &first[i]);
            if next[i].is_empty() {
                self.note(format!(
                    "http/feedgen/{rkey}: the feed holds one page or less: no cursor page"
                ));
            } else {
                self.record(&format!("http/feedgen/{rkey}/cursor/cold"), &next[i]);
            }
        }

        // Warm: the first page and the cursor page under load.
        for rkey in &feeds {
            let from = self.phase_start().await;
            let first_req = Request::get(page(rkey));
            let primed = Conn::new(warm_addr).send(&first_req).await;
            let mut pages = vec![("first", first_req)];
            if let Some(c) = cursor_of(&primed) {
                let req = Request::get(format!("{}&cursor={}", page(rkey), enc(&c)));
                let _ = Conn::new(warm_addr).send(&req).await;
                pages.push(("cursor", req));
            }
            for (which, req) in pages {
                let (rs, wall) = http::load(
                    warm_addr,
                    &req,
                    self.cfg.connections,
                    self.cfg.load_requests,
                )
                .await;
                let samples: Vec<(Duration, u16)> = rs.iter().map(|r| (r.took, r.status)).collect();
                let mut stat = Stat::of(&samples);
                stat.rps = Some(round(stat.n as f64 / wall.as_secs_f64(), 0));
                let prefix = format!("http/feedgen/{rkey}/{which}/warm");
                self.report.figures.stat(&prefix, &stat);
                self.say(&format!(
                    "{prefix}: n {} at {} connections, p50 {:.1} ms p99 {:.1} ms, {:.0} req/s, {} errors",
                    stat.n,
                    self.cfg.connections,
                    stat.p50_ms,
                    stat.p99_ms,
                    stat.rps.unwrap_or(0.0),
                    stat.n - stat.ok
                ));
                if stat.ok < stat.n {
                    self.note(format!(
                        "{prefix}: {} of {} failed: {:?}",
                        stat.n - stat.ok,
                        stat.n,
                        stat.statuses
                    ));
                }
            }
            self.phase_end(&format!("http/feedgen/{rkey}/warm"), from);
        }

        for (name, path) in [
            ("describe", "/xrpc/app.bsky.feed.describeFeedGenerator"),
            ("did_json", "/.well-known/did.json"),
        ] {
            let cold = vec![Request::get(path); self.cfg.reps];
            self.route(
                warm_addr,
                &format!("feedgen/{name}"),
                &cold,
                Some(&cold[0]),
                &[],
            )
            .await?;
        }
        Ok(())
    }

    /// The five JSONBench questions (`Analytics`), straight from the store:
    /// once cold (caches dropped), then three times warm.
    async fn jsonbench(&mut self) {
        let ch = self.ch.clone();
        for a in [
            Analytics::EventsPerCollection,
            Analytics::CreatesAndUsers,
            Analytics::ByHour,
            Analytics::EarliestPosters,
            Analytics::LongestSpans,
        ] {
            let phase = format!("jsonbench/{}", a.name());
            let from = self.phase_start().await;
            let mut times = Vec::new();
            let mut failed = None;
            for i in 0..4 {
                if i == 0 {
                    if let Err(e) = admin::drop_caches(&ch).await {
                        failed = Some(e.to_string());
                        break;
                    }
                }
                let t = Instant::now();
                match skyhouse_store::stats::analytics(&ch, a, 86_400, 20).await {
                    Ok(_) => times.push(t.elapsed().as_secs_f64() * 1e3),
                    Err(e) => {
                        failed = Some(e.to_string());
                        break;
                    }
                }
            }
            self.phase_end(&phase, from);
            if let Some(e) = failed {
                self.fig(format!("{phase}/failed"), 1.0);
                self.note(format!("{phase} failed: {e}"));
                continue;
            }
            let mut warm = times[1..].to_vec();
            warm.sort_by(f64::total_cmp);
            self.fig(format!("{phase}/cold_ms"), round(times[0], 1));
            self.fig(format!("{phase}/warm_ms"), round(warm[warm.len() / 2], 1));
            self.say(&format!(
                "{phase}: cold {:.0} ms, warm {:.0} ms",
                times[0],
                warm[warm.len() / 2]
            ));
        }
    }

    /// Bytes per bulk-load record of every table and of all together.
    async fn storage(&mut self) -> Result<(), BoxError> {
        let tables = admin::table_storage(&self.ch).await?;
        let per = |v: u64| round(v as f64 / self.records as f64, 2);
        let (mut disk, mut comp, mut raw, mut rows) = (0, 0, 0, 0);
        let mut figs = Figures::default();
        for t in &tables {
            figs.set(
                format!("storage/{}/bytes_per_record", t.table),
                per(t.bytes_on_disk),
            );
            figs.set(
                format!("storage/{}/compressed_per_record", t.table),
                per(t.compressed),
            );
            figs.set(
                format!("storage/{}/uncompressed_per_record", t.table),
                per(t.uncompressed),
            );
            figs.set(format!("storage/{}/rows", t.table), t.rows as f64);
            disk += t.bytes_on_disk;
            comp += t.compressed;
            raw += t.uncompressed;
            rows += t.rows;
        }
        figs.set("storage/total/bytes_per_record", per(disk));
        figs.set("storage/total/compressed_per_record", per(comp));
        figs.set("storage/total/uncompressed_per_record", per(raw));
        figs.set("storage/total/bytes", disk as f64);
        figs.set("storage/total/rows", rows as f64);
        self.report.figures.0.extend(figs.0);
        self.say(&format!(
            "storage: {:.1} bytes per record on disk ({:.1} compressed, {:.1} uncompressed), {} tables",
            per(disk),
            per(comp),
            per(raw),
            tables.len()
        ));
        Ok(())
    }

    /// The same rows on current ClickHouse (chdb, in a separate Python
    /// process): bytes per bulk-load record per table and in total, without
    /// with the migrations' column codecs (0013) and without them.
    async fn chdb_storage(&mut self) {
        let Some(script) = self.cfg.chdb_script.clone() else {
            return;
        };
        let from = self.phase_start().await;
        self.say("weighing the same rows on current ClickHouse (chdb)");
        let mut cmd = Command::new("python3");
        cmd.arg(&script)
            .args(["--clickhouse", &self.cfg.clickhouse_url])
            .args(["--database", self.ch.database()])
            .args(["--user", &self.cfg.clickhouse_user])
            .args(["--records", &self.records.to_string()])
            .arg("--baseline")
            .env("CLICKHOUSE_PASSWORD", &self.cfg.clickhouse_password)
            .stdin(Stdio::null());
        let t = Instant::now();
        let out = tokio::task::spawn_blocking(move || cmd.output()).await;
        self.phase_end("chdb_storage", from);
        let out = match out {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => {
                return self.note(format!(
                    "chdb storage: cannot run python3 {}: {e}",
                    script.display()
                ))
            }
            Err(e) => return self.note(format!("chdb storage: {e}")),
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        for line in stderr.lines().filter(|l| l.starts_with("chdb_storage:")) {
            self.note(line.to_owned());
        }
        if !out.status.success() {
            return self.note(format!(
                "chdb storage: {} exited {}: {}",
                script.display(),
                out.status,
                stderr.trim()
            ));
        }
        let v: serde_json::Value = match serde_json::from_slice(&out.stdout) {
            Ok(v) => v,
            Err(e) => return self.note(format!("chdb storage: unreadable output: {e}")),
        };
        self.fig("storage_chdb/secs", round(t.elapsed().as_secs_f64(), 1));
        for (prefix, node) in [
            ("storage_chdb", &v),
            ("storage_chdb_baseline", &v["baseline"]),
        ] {
            let mut rows: Vec<(String, serde_json::Value)> = node["tables"]
                .as_object()
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default();
            rows.push(("total".to_owned(), node["total"].clone()));
            for (name, t) in rows {
                for k in ["bytes_on_disk", "compressed", "uncompressed"] {
                    if let Some(x) = t[format!("{k}_per_record")].as_f64() {
                        let short = if k == "bytes_on_disk" { "bytes" } else { k };
                        self.fig(format!("{prefix}/{name}/{short}_per_record"), x);
                    }
                }
            }
        }
        self.say(&format!(
            "chdb {}: {} bytes per record on disk with the migrations' column codecs, {} without",
            v["server"].as_str().unwrap_or("?"),
            v["total"]["bytes_on_disk_per_record"],
            v["baseline"]["total"]["bytes_on_disk_per_record"]
        ));
    }

    /// More records at the network's live rate (2,000 a second) ending now,
    /// with a few account deletions.
    async fn increment(&mut self) -> Result<(), BoxError> {
        let n = self
            .cfg
            .increment
            .unwrap_or_else(|| default_increment(&self.cfg.sizes));
        let Some(mut g) = self.gen.take() else {
            return Err("no dataset".into());
        };
        let end = now_micros();
        g.begin(Phase {
            records: n,
            start_us: end - (n * 500).max(1_000_000),
            end_us: end,
            shaped: false,
            hide_accounts: false,
            deletions: (g.dids() / 10_000).max(1),
        });
        self.say(&format!("adding {n} records"));
        let from = self.phase_start().await;
        let g = self.write(g, "increment").await?;
        self.phase_end("increment", from);
        self.gen = Some(g);
        Ok(())
    }

    /// The server's memory now and its peak, and each phase's heaviest
    /// query from the query log.
    async fn memory(&mut self, from: u32) -> Result<(), BoxError> {
        if let Some(pid) = self.cfg.clickhouse_pid {
            match rss_mb(pid) {
                Some((rss, peak)) => {
                    self.fig("memory/server_rss_mb", round(rss, 1));
                    self.fig("memory/server_peak_rss_mb", round(peak, 1));
                }
                None => self.note(format!(
                    "no /proc/{pid}/status: the server's RSS is not measured"
                )),
            }
        } else {
            self.note("no --clickhouse-pid: the server's RSS is not measured");
        }
        // 18.16 reports 0 here; newer servers track their allocations.
        let tracked = admin::tracked_memory(&self.ch).await?;
        if tracked > 0 {
            self.fig(
                "memory/server_tracked_mb",
                round(tracked as f64 / 1048576.0, 1),
            );
        }
        if !admin::has_query_log(&self.ch).await? {
            self.note("the server keeps no query log (no <query_log> in its config): per-query memory is not measured");
            return Ok(());
        }
        admin::flush_logs(&self.ch).await?;
        // The benchmark's own diagnostics (dropping caches, watching merges
        // and queries) are not what is measured.
        let logged: Vec<admin::LoggedQuery> =
            admin::query_log_between(&self.ch, &self.cfg.clickhouse_user, from, now_secs())
                .await?
                .into_iter()
                .filter(|q| !q.query.starts_with("SYSTEM") && !q.query.contains("FROM system."))
                .collect();
        if logged.is_empty() {
            self.note(format!(
                "the query log holds no query of user {:?}: its profile must set log_queries = 1",
                self.cfg.clickhouse_user
            ));
            return Ok(());
        }
        let mb = |b: u64| round(b as f64 / 1048576.0, 1);
        let mut heavy = Vec::new();
        for p in &self.phases {
            let mine: Vec<&admin::LoggedQuery> = logged
                .iter()
                .filter(|q| q.started >= p.from && q.started <= p.to)
                .collect();
            if let Some(top) = mine.iter().max_by_key(|q| q.memory) {
                self.report
                    .figures
                    .set(format!("{}/peak_mb", p.name), mb(top.memory));
                self.report
                    .figures
                    .set(format!("{}/queries", p.name), mine.len() as f64);
            }
            for q in mine {
                heavy.push(HeavyQuery {
                    phase: p.name.clone(),
                    memory_mb: mb(q.memory),
                    duration_ms: q.duration_ms,
                    read_rows: q.read_rows,
                    exception: q.exception.lines().next().unwrap_or("").to_owned(),
                    query: q.query.clone(),
                });
            }
        }
        let max = logged.iter().map(|q| q.memory).max().unwrap_or(0);
        let errors = logged.iter().filter(|q| !q.exception.is_empty()).count();
        let limit = logged
            .iter()
            .filter(|q| q.exception.contains("Memory limit"))
            .count();
        self.fig("memory/max_query_mb", mb(max));
        self.fig("memory/logged_queries", logged.len() as f64);
        self.fig("memory/query_errors", errors as f64);
        self.fig("memory/memory_limit_errors", limit as f64);
        heavy.sort_by(|a, b| b.memory_mb.total_cmp(&a.memory_mb));
        heavy.truncate(12);
        self.report.heaviest = heavy;
        Ok(())
    }
}

/// A row of `actor_labels` (the labels a labeler put on accounts).
#[derive(Debug, Clone, serde::Serialize, skyhouse_store::clickhouse::Row)]
#[clickhouse(crate = "skyhouse_store::clickhouse")]
struct ActorLabel {
    did: String,
    label: String,
    src: String,
    neg: u8,
    version: u64,
    created_at: u32,
}
