//! `skyhouse cursor get|set|reset`: inspect or move a live source's cursor.

use std::process::ExitCode;

use anyhow::{anyhow, Context, Result};
use clap::Subcommand;

use crate::indexer::SourceArgs;
use crate::redis_args::RedisArgs;
use crate::Usage;

#[derive(Debug, Subcommand)]
pub enum CursorCommand {
    /// Print the saved cursor (`none` if there is none).
    Get {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Save a cursor: the next start resumes there (stop the indexer first).
    Set {
        /// Position: Jetstream time_us or firehose seq.
        value: i64,
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        redis: RedisArgs,
    },
    /// Forget the cursor: the next start begins at the live tip.
    Reset {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        redis: RedisArgs,
    },
}

pub fn run(cmd: CursorCommand) -> Result<ExitCode> {
    let (source, redis) = match &cmd {
        CursorCommand::Get { source, redis }
        | CursorCommand::Set { source, redis, .. }
        | CursorCommand::Reset { source, redis } => (source, redis),
    };
    let (_, key) = source.resolve().usage()?;
    redis.validate()?;
    if let CursorCommand::Set { value, .. } = &cmd {
        if *value < 0 {
            return Err(anyhow!("cursor set: value {value} must be >= 0")).usage();
        }
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    rt.block_on(async {
        let state = redis.connect_now().await?;
        match cmd {
            CursorCommand::Get { .. } => {
                let c = state
                    .cursor(&key)
                    .await
                    .map_err(|e| anyhow!("{key}: {e}"))?;
                println!("{}", c.map_or("none".to_owned(), |c| c.to_string()));
            }
            CursorCommand::Set { value, .. } => {
                state
                    .set_cursor(&key, value)
                    .await
                    .map_err(|e| anyhow!("{key}: {e}"))?;
                println!("{key} = {value}");
            }
            CursorCommand::Reset { .. } => {
                let existed = state
                    .reset_cursor(&key)
                    .await
                    .map_err(|e| anyhow!("{key}: {e}"))?;
                println!("{key} {}", if existed { "reset" } else { "was not set" });
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
