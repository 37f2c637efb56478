//! `skyhouse migrate up|down [N]|version|create NAME|dump-schema`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use skyhouse_store::migrate::{self, Migrator, State};
use skyhouse_store::{ClickHouse, ClickHouseConfig};

/// ClickHouse connection flags, shared by every service.
#[derive(Debug, Clone, Args)]
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
}

impl ClickHouseArgs {
    /// Validate and build the handle (no I/O).
    pub fn connect(&self) -> Result<ClickHouse> {
        let cluster = self.cluster.clone().filter(|c| !c.is_empty());
        ClickHouse::new(ClickHouseConfig {
            url: self.address.clone(),
            user: self.username.clone(),
            password: self.password.clone(),
            database: self.database.clone(),
            cluster,
        })
        .map_err(|e| anyhow::anyhow!("--clickhouse-address/--database/--clickhouse-cluster: {e}"))
    }
}

#[derive(Debug, Subcommand)]
pub enum MigrateCommand {
    /// Apply every pending migration (idempotent).
    Up(MigrateArgs),
    /// Roll back the last N applied migrations (default 1).
    Down {
        /// How many to roll back.
        #[arg(default_value_t = 1)]
        n: usize,
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
    #[command(flatten)]
    pub clickhouse: ClickHouseArgs,
    /// Read migrations from this folder instead of those built into the binary.
    #[arg(long)]
    pub dir: Option<PathBuf>,
}

impl MigrateArgs {
    fn load(&self) -> Result<Vec<migrate::Migration>> {
        Ok(match &self.dir {
            Some(d) => migrate::load_dir(d)?,
            None => migrate::embedded()?,
        })
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
    if let MigrateCommand::Create { name, dir } = &cmd {
        let (up, down) = migrate::create(dir, name)?;
        println!("created {up}\ncreated {down}");
        return Ok(ExitCode::SUCCESS);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            MigrateCommand::Up(a) => {
                let ch = a.clickhouse.connect()?;
                print(&Migrator::new(&ch, a.load()?).up().await?);
            }
            MigrateCommand::Down { n, args } => {
                let ch = args.clickhouse.connect()?;
                print(&Migrator::new(&ch, args.load()?).down(n).await?);
            }
            MigrateCommand::Version(a) => {
                let ch = a.clickhouse.connect()?;
                print(&Migrator::new(&ch, a.load()?).status().await?);
            }
            MigrateCommand::DumpSchema(a) => {
                let ch = a.clickhouse.connect()?;
                print!(
                    "{}",
                    skyhouse_store::dump_schema(&ch)
                        .await
                        .context("dump-schema")?
                );
            }
            MigrateCommand::Create { .. } => unreachable!("handled above"),
        }
        Ok(ExitCode::SUCCESS)
    })
}
