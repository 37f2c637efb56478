//! Redis connection flags, shared by every service that keeps state.

use anyhow::{anyhow, Result};
use clap::Args;
use skyhouse_state::State;

/// Redis flags.
#[derive(Debug, Clone, Args)]
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
    /// Check the URL without connecting.
    pub fn validate(&self) -> Result<()> {
        skyhouse_state::validate_url(&self.url).map_err(|e| anyhow!("--redis: {e}"))
    }

    /// Connect (a down server is retried in the background).
    pub async fn connect(&self) -> Result<State> {
        State::connect(&self.url, &self.prefix)
            .await
            .map_err(|e| anyhow!("--redis: {e}"))
    }
}
