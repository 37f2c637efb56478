//! Redis connection flags, shared by every service that keeps state.

use anyhow::{anyhow, Result};
use clap::Args;
use skyhouse_state::State;

use crate::Usage;

/// Redis flags (under their own heading in `--help`).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Redis options")]
pub struct RedisArgs {
    /// Redis URL (redis://[user:password@]host:port[/db]); the password is never printed.
    #[arg(
        long = "redis",
        env = "REDIS_ADDRESS",
        default_value = "redis://127.0.0.1:6379",
        hide_env_values = true
    )]
    pub url: String,
    /// Prefix of every key skyhouse writes (lets deployments share a server).
    #[arg(
        long = "redis-prefix",
        env = "REDIS_PREFIX",
        default_value = "skyhouse:"
    )]
    pub prefix: String,
}

impl RedisArgs {
    /// Check the URL without connecting. An error is the command line's (exit status 2).
    pub fn validate(&self) -> Result<()> {
        skyhouse_state::validate_url(&self.url)
            .map_err(|e| anyhow!("--redis: {e}"))
            .usage()
    }

    /// Connect (a down server is retried in the background: for services,
    /// which wait for it and say so). An error is the URL's.
    pub async fn connect(&self) -> Result<State> {
        State::connect(&self.url, &self.prefix)
            .await
            .map_err(|e| anyhow!("--redis: {e}"))
            .usage()
    }

    /// Connect for a one-shot command: fail at once, naming the server and the
    /// flag, if Redis does not answer.
    pub async fn connect_now(&self) -> Result<State> {
        let state = self.connect().await?;
        if !state.ping().await {
            return Err(anyhow!(
                "Redis at {} does not answer (--redis, REDIS_ADDRESS)",
                skyhouse_state::redact_url(&self.url)
            ));
        }
        Ok(state)
    }
}
