//! `skyhouse migrate up|down [N]|version|create NAME|dump-schema`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{anyhow, Result};
use clap::{Args, Subcommand};
use skyhouse_store::migrate::{self, Migrator, State};
use std::time::Duration;

use skyhouse_store::{ClickHouse, ClickHouseConfig, RetryReason, StoreError, Timeouts};

use crate::Usage;

/// ClickHouse connection flags, shared by every service (under their own
/// heading in `--help`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "ClickHouse options")]
pub struct ClickHouseArgs {
    /// ClickHouse HTTP address.
    #[arg(
        long = "clickhouse-address",
        env = "CLICKHOUSE_ADDRESS",
        default_value = "http://127.0.0.1:8123"
    )]
    pub address: String,
    /// ClickHouse user.
    #[arg(
        long = "clickhouse-username",
        env = "CLICKHOUSE_USERNAME",
        default_value = "default"
    )]
    pub username: String,
    /// ClickHouse password (never printed).
    #[arg(
        long = "clickhouse-password",
        env = "CLICKHOUSE_PASSWORD",
        default_value = "",
        hide_env_values = true
    )]
    pub password: String,
    /// Database holding skyhouse's tables.
    #[arg(long, env = "CLICKHOUSE_DATABASE", default_value = "skyhouse")]
    pub database: String,
    /// Cluster name: create replicated local tables ON CLUSTER plus Distributed tables.
    #[arg(long = "clickhouse-cluster", env = "CLICKHOUSE_CLUSTER")]
    pub cluster: Option<String>,
    /// With a cluster: replicas of a shard that must have each inserted block before the
    /// insert is acknowledged (ClickHouse insert_quorum); unset, the one replica that
    /// received it.
    #[arg(
        long = "clickhouse-insert-quorum",
        env = "CLICKHOUSE_INSERT_QUORUM",
        value_parser = clap::value_parser!(u32).range(1..=16)
    )]
    pub insert_quorum: Option<u32>,
    /// Seconds to establish a TCP connection to ClickHouse before the attempt counts as
    /// failed (and is retried).
    #[arg(
        long = "clickhouse-connect-timeout-secs",
        env = "CLICKHOUSE_CONNECT_TIMEOUT_SECS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub connect_timeout_secs: u64,
    /// Seconds ClickHouse may take to accept each chunk of an INSERT's body (a server that
    /// stops reading) before the insert is retried.
    #[arg(
        long = "clickhouse-send-timeout-secs",
        env = "CLICKHOUSE_SEND_TIMEOUT_SECS",
        default_value_t = 30,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub send_timeout_secs: u64,
    /// Seconds ClickHouse may take to answer a statement (or an INSERT once sent) before it
    /// is retried; also sent as the query's max_execution_time.
    #[arg(
        long = "clickhouse-receive-timeout-secs",
        env = "CLICKHOUSE_RECEIVE_TIMEOUT_SECS",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub receive_timeout_secs: u64,
    /// /health's `clickhouse_writes` check fails once writes have failed (and been retried)
    /// for this many seconds without a success. The writer keeps retrying.
    #[arg(
        long = "clickhouse-stuck-secs",
        env = "CLICKHOUSE_STUCK_SECS",
        default_value_t = 120,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub stuck_secs: u64,
}

impl ClickHouseArgs {
    /// Validate and build the handle (no I/O). An error is the command line's
    /// (exit status 2).
    pub fn connect(&self) -> Result<ClickHouse> {
        let cluster = self.cluster.clone().filter(|c| !c.is_empty());
        ClickHouse::new(ClickHouseConfig {
            url: self.address.clone(),
            user: self.username.clone(),
            password: self.password.clone(),
            database: self.database.clone(),
            cluster,
            insert_quorum: self.insert_quorum,
            timeouts: Timeouts {
                connect: Duration::from_secs(self.connect_timeout_secs),
                send: Duration::from_secs(self.send_timeout_secs),
                receive: Duration::from_secs(self.receive_timeout_secs),
            },
        })
        .map_err(|e| {
            anyhow!(
                "--clickhouse-address/--database/--clickhouse-cluster/--clickhouse-insert-quorum: {e}"
            )
        })
        .usage()
    }

    /// `e`, from doing `what`, said with its real cause for an operator: the
    /// address (and flag) of a server that does not answer, the name of a
    /// database that does not exist.
    pub fn explain(&self, what: &str, e: StoreError) -> anyhow::Error {
        let address = skyhouse_state::redact_url(&self.address);
        match &e {
            StoreError::Transient {
                reason: RetryReason::Network | RetryReason::Timeout,
                ..
            } => anyhow!(
                "{what}: ClickHouse at {address} does not answer (--clickhouse-address, \
                 CLICKHOUSE_ADDRESS): {e}"
            ),
            // UNKNOWN_DATABASE
            StoreError::Schema(_)
                if e.server_message().and_then(skyhouse_store::parse_code) == Some(81) =>
            {
                anyhow!(
                    "{what}: database {:?} does not exist on ClickHouse at {address}: run \
                     `skyhouse migrate up`, or give the right --database",
                    self.database
                )
            }
            _ => anyhow!("{what}: {e}"),
        }
    }

    /// How long writes may fail before /health says so.
    pub fn stuck_after(&self) -> Duration {
        Duration::from_secs(self.stuck_secs)
    }
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Apply every pending migration (idempotent).
    Up(MigrateArgs),
    /// Roll back the last N applied migrations (default 1), or --all of them.
    Down {
        /// How many to roll back.
        #[arg(default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
        n: u64,
        /// Roll back every applied migration (the database is left with only its
        /// bookkeeping table).
        #[arg(long, conflicts_with = "n")]
        all: bool,
        #[command(flatten)]
        args: MigrateArgs,
    },
    /// Show each migration and whether it is applied, skipped or pending.
    Version(MigrateArgs),
    /// Write the next numbered pair of empty migration files.
    Create {
        /// Name, lower-case letters, digits and _.
        name: String,
        /// Folder to write into.
        #[arg(long, default_value = "migrations")]
        dir: PathBuf,
    },
    /// Print the CREATE statements of every table in the database.
    DumpSchema(MigrateArgs),
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// Read migrations from this folder instead of those built into the binary.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
}

impl MigrateArgs {
    /// The migrations; a bad --dir is the command line's error.
    fn load(&self) -> Result<Vec<migrate::Migration>> {
        match &self.dir {
            Some(d) => migrate::load_dir(d)
                .map_err(|e| anyhow!("--dir {}: {e}", d.display()))
                .usage(),
            None => Ok(migrate::embedded()?),
        }
    }

    /// The handle and the migrations (no I/O but reading --dir).
    fn migrator(&self) -> Result<(ClickHouse, Vec<migrate::Migration>)> {
        Ok((self.clickhouse.connect()?, self.load()?))
    }
}

fn print(statuses: &[migrate::Status]) {
    for s in statuses {
        let note = if s.note.is_empty() {
            String::new()
        } else {
            format!(" ({})", s.note)
        };
        println!("{:04}_{}\t{}{}", s.version, s.name, s.state, note);
    }
    let applied = statuses
        .iter()
        .filter(|s| s.state == State::Applied)
        .map(|s| s.version)
        .max();
    println!(
        "version: {}",
        applied.map_or("none".into(), |v| format!("{v:04}"))
    );
}

pub fn run(cmd: MigrateCommand) -> Result<ExitCode> {
    let (args, what) = match &cmd {
        MigrateCommand::Create { name, dir } => {
            // A bad name or a missing folder: the command line's.
            let (up, down) = migrate::create(dir, name).usage()?;
            println!("created {up}\ncreated {down}");
            return Ok(ExitCode::SUCCESS);
        }
        MigrateCommand::Up(a) => (a, "migrate up"),
        MigrateCommand::Down { args, .. } => (args, "migrate down"),
        MigrateCommand::Version(a) => (a, "migrate version"),
        MigrateCommand::DumpSchema(a) => (a, "dump-schema"),
    };
    let (ch, migrations) = args.migrator()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let migrator = Migrator::new(&ch, migrations);
    let done = rt.block_on(async {
        match &cmd {
            MigrateCommand::Up(_) => migrator.up().await.map(|s| print(&s)),
            MigrateCommand::Down { n, all, .. } => {
                let n = if *all {
                    usize::MAX
                } else {
                    usize::try_from(*n).unwrap_or(usize::MAX)
                };
                migrator.down(n).await.map(|s| print(&s))
            }
            MigrateCommand::Version(_) => migrator.status().await.map(|s| print(&s)),
            MigrateCommand::DumpSchema(_) => skyhouse_store::dump_schema(&ch)
                .await
                .map(|s| print!("{s}")),
            MigrateCommand::Create { .. } => Ok(()),
        }
    });
    done.map_err(|e| args.clickhouse.explain(what, e))?;
    Ok(ExitCode::SUCCESS)
}
