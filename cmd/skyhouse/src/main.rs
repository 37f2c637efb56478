//! The `skyhouse` binary: one subcommand per service. Thin: parse and validate
//! flags, then call into the `pkg/` libraries.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backfill;
/// mimalloc: allocation-heavy decode and insert paths ran 1.35-1.6x faster
/// with it than with glibc malloc (`just bench-indexer`, `just bench-store`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod cursor;
mod indexer;
mod migrate;
mod redis_args;
mod relay;
mod repo;
mod service;

/// Index the AT Protocol network into ClickHouse and serve it.
#[derive(Debug, Parser)]
#[command(name = "skyhouse", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
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
    /// The gRPC relay: streams every indexed record operation to external ingesters.
    Relay(Box<relay::RelayArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    skyhouse_telemetry::init_logging();
    let result = match cli.command {
        Command::Repo(cmd) => repo::run(cmd),
        Command::Migrate(cmd) => migrate::run(cmd),
        Command::Indexer(args) => indexer::run(*args),
        Command::Cursor(cmd) => cursor::run(cmd),
        Command::Backfill(cmd) => backfill::run(cmd),
        Command::Relay(args) => relay::run(*args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            // One line: the whole cause chain, never a backtrace.
            eprintln!("skyhouse: {e:#}");
            ExitCode::FAILURE
        }
    }
}
