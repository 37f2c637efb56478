//! The `skyhouse` binary: one subcommand per service. Thin: parse and validate
//! flags, then call into the `pkg/` libraries.
//!
//! Exit status: 0 done; 1 a failure or a failed check (a host down, an
//! invalid repository, a server that does not answer); 2 the command line is
//! wrong (a bad flag value, a file it names missing or unreadable), as for
//! clap's own usage errors. Subcommands mark the second kind with
//! [`Usage::usage`].

use std::fmt;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backfill;
/// mimalloc: allocation-heavy decode and insert paths ran 1.35-1.6x faster
/// with it than with glibc malloc (`just bench-indexer`, `just bench-store`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cursor;
mod feedgen;
mod handle_args;
mod indexer;
mod migrate;
mod monitor;
mod publish;
mod redis_args;
mod relay;
mod repo;
mod search;
mod service;

/// Index the AT Protocol network into ClickHouse and serve it.
#[derive(Debug, Parser)]
#[command(name = "skyhouse", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    telemetry: TelemetryArgs,
}

/// Logging and tracing, for every subcommand: listed under their own heading,
/// after each subcommand's own flags.
#[derive(Debug, clap::Args)]
#[command(next_help_heading = "Global options")]
struct TelemetryArgs {
    /// Log line format on stderr: pretty or json (one object per line). Level by `RUST_LOG`.
    #[arg(
        long,
        global = true,
        env = "SKYHOUSE_LOG_FORMAT",
        default_value = "pretty"
    )]
    log_format: skyhouse_telemetry::LogFormat,
    /// Send OpenTelemetry traces (OTLP over HTTP, protobuf) to this collector, e.g.
    /// http://localhost:4318 (spans go to /v1/traces). Unset: no traces.
    #[arg(long, global = true, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otel_endpoint: Option<String>,
    /// The traces' service.name. Unset: skyhouse-<subcommand> (skyhouse-indexer, …).
    #[arg(long, global = true, env = "OTEL_SERVICE_NAME")]
    otel_service_name: Option<String>,
}

impl Command {
    /// The service's name in traces: `skyhouse-indexer`, `skyhouse-backfill`, …
    fn service_name(&self) -> String {
        let name = format!("{self:?}");
        let sub = name.split(['(', ' ']).next().unwrap_or("skyhouse");
        format!("skyhouse-{}", sub.to_lowercase())
    }
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Inspect a repository export (a `com.atproto.sync.getRepo` CAR file).
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// Manage the ClickHouse schema (numbered migrations).
    #[command(subcommand)]
    Migrate(migrate::MigrateCommand),
    /// Index the live network (Jetstream or firehose) into ClickHouse.
    Indexer(Box<indexer::IndexerArgs>),
    /// Backfill whole repositories (listRepos → Redis Stream → getRepo → ClickHouse) and resync.
    #[command(subcommand)]
    Backfill(backfill::BackfillCommand),
    /// Show or move a live source's cursor in Redis.
    #[command(subcommand)]
    Cursor(cursor::CursorCommand),
    /// The search / stats / maintenance HTTP API (API keys, post and actor search, SQL explorer).
    Search(Box<search::SearchArgs>),
    /// The gRPC relay: streams every indexed record operation to external ingesters.
    Relay(Box<relay::RelayArgs>),
    /// Check PDS hosts and relays (_health, describeServer), store snapshots, serve host health.
    Monitor(Box<monitor::MonitorArgs>),
    /// The feed generator: did.json, describeFeedGenerator, getFeedSkeleton (service-auth JWT).
    Feedgen(Box<feedgen::FeedgenArgs>),
}

/// A wrong command line: a flag value out of range or malformed, or a file a
/// flag names that is missing or unreadable. Exit status 2.
#[derive(Debug)]
pub struct UsageError(anyhow::Error);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#}", self.0)
    }
}

impl std::error::Error for UsageError {}

/// Marks an error as the command line's fault (exit status 2).
pub trait Usage<T> {
    /// The error, as a [`UsageError`].
    fn usage(self) -> anyhow::Result<T>;
}

impl<T, E: Into<anyhow::Error>> Usage<T> for Result<T, E> {
    fn usage(self) -> anyhow::Result<T> {
        self.map_err(|e| anyhow::Error::new(UsageError(e.into())))
    }
}

/// Exit status 2: as clap's own usage errors.
const EXIT_USAGE: u8 = 2;

/// The exit status of a failed subcommand: 2 for the command line's fault, else 1.
fn exit_code(e: &anyhow::Error) -> ExitCode {
    if e.chain().any(|c| c.is::<UsageError>()) {
        ExitCode::from(EXIT_USAGE)
    } else {
        ExitCode::FAILURE
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let t = &cli.telemetry;
    if let Some(url) = &t.otel_endpoint {
        if let Err(e) = skyhouse_telemetry::validate_otlp_endpoint("--otel-endpoint", url) {
            eprintln!("skyhouse: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let telemetry = skyhouse_telemetry::init(&skyhouse_telemetry::TelemetryConfig {
        log_format: t.log_format,
        otlp_endpoint: t.otel_endpoint.clone(),
        service_name: t
            .otel_service_name
            .clone()
            .unwrap_or_else(|| cli.command.service_name()),
    });
    let _telemetry = match telemetry {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("skyhouse: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Command::Repo(cmd) => repo::run(cmd),
        Command::Migrate(cmd) => migrate::run(cmd),
        Command::Indexer(args) => indexer::run(*args),
        Command::Cursor(cmd) => cursor::run(cmd),
        Command::Backfill(cmd) => backfill::run(cmd),
        Command::Relay(args) => relay::run(*args),
        Command::Search(args) => search::run(*args),
        Command::Monitor(args) => monitor::run(*args),
        Command::Feedgen(args) => feedgen::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the whole cause chain, never a backtrace.
            eprintln!("skyhouse: {e:#}");
            exit_code(&e)
        }
    }
}
