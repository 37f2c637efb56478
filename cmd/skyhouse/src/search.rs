//! `skyhouse search`: the search / stats / maintenance API (SPEC §6) on
//! :8092, metrics and `/health` on :8093.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::Args;
use skyhouse_api::{ApiConfig, ApiState, Keys};

use crate::migrate::ClickHouseArgs;
use crate::redis_args::RedisArgs;
use crate::Usage;

/// Flags of `skyhouse search`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Listen address of the API.
    #[arg(long, env = "SEARCH_ADDR", default_value = "0.0.0.0:8092")]
    listen: SocketAddr,
    /// Address of /metrics and /health.
    #[arg(long, env = "SEARCH_METRICS_ADDR", default_value = "0.0.0.0:8093")]
    metrics_addr: SocketAddr,
    /// A bootstrap admin key (at least 16 characters), e.g. to create the first keys with
    /// POST /v1/admin/keys. Held only as its hash; never logged. Unset: only stored keys.
    #[arg(long, env = "SEARCH_ADMIN_KEY", hide_env_values = true)]
    admin_key: Option<String>,
    /// Read routes need a key with the read scope (admin routes always need an admin key).
    #[arg(long, env = "SEARCH_REQUIRE_READ_KEY")]
    require_read_key: bool,
    /// Seconds /v1/stats and the whole-history analytics answers stay cached in Redis.
    #[arg(long, env = "SEARCH_STATS_TTL_SECS", default_value_t = 60)]
    stats_ttl_secs: u64,
    /// Seconds between daily_stats / interaction count refreshes and ClickHouse health probes.
    #[arg(long, env = "SEARCH_REFRESH_SECS", default_value_t = 60)]
    refresh_secs: u64,
    /// Longest a request may take, seconds (then 503).
    #[arg(long, env = "SEARCH_REQUEST_TIMEOUT_SECS", default_value_t = 10)]
    request_timeout_secs: u64,
    /// SQL explorer: ClickHouse max_execution_time, seconds.
    #[arg(long, env = "SEARCH_SQL_MAX_SECONDS", default_value_t = 5)]
    sql_max_seconds: u64,
    /// SQL explorer: most rows a query may return.
    #[arg(long, env = "SEARCH_SQL_MAX_ROWS", default_value_t = 10_000)]
    sql_max_rows: u64,
    /// Browser origins that may call the read routes (CORS): * for any, none, or a
    /// comma-separated list of origins (https://app.example.com).
    #[arg(long, env = "SEARCH_CORS_ORIGINS", default_value = "*")]
    cors_origins: String,
    /// Browser origins that may call the admin routes (/v1/admin/…, /v1/sql), as
    /// --cors-origins.
    #[arg(long, env = "SEARCH_ADMIN_CORS_ORIGINS", default_value = "none")]
    admin_cors_origins: String,
    // Before the groups with their own --help heading (clap keeps the last heading
    // for the fields after a flattened group).
    #[command(flatten)]
    shutdown: crate::service::ShutdownArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

impl SearchArgs {
    /// Check every flag before any I/O; errors name the flag.
    fn config(&self) -> Result<ApiConfig> {
        for (name, v, hi) in [
            ("--stats-ttl-secs", self.stats_ttl_secs, 86_400),
            ("--refresh-secs", self.refresh_secs, 86_400),
            ("--request-timeout-secs", self.request_timeout_secs, 600),
            ("--sql-max-seconds", self.sql_max_seconds, 600),
            ("--sql-max-rows", self.sql_max_rows, 10_000_000),
        ] {
            if v == 0 || v > hi {
                return Err(anyhow!("{name} must be 1-{hi}, got {v}"));
            }
        }
        if let Some(k) = &self.admin_key {
            if k.len() < 16 || k.len() > 256 || k.chars().any(char::is_whitespace) {
                return Err(anyhow!(
                    "--admin-key must be 16-256 characters without spaces (value not shown)"
                ));
            }
        }
        let cors = skyhouse_telemetry::http::Cors::parse(&self.cors_origins)
            .map_err(|e| anyhow!("--cors-origins: {e}"))?;
        let admin_cors = skyhouse_telemetry::http::Cors::parse(&self.admin_cors_origins)
            .map_err(|e| anyhow!("--admin-cors-origins: {e}"))?;
        Ok(ApiConfig {
            cors,
            admin_cors,
            stats_ttl: Duration::from_secs(self.stats_ttl_secs),
            request_timeout: Duration::from_secs(self.request_timeout_secs),
            require_read_key: self.require_read_key,
            sql_max_seconds: self.sql_max_seconds,
            sql_max_rows: self.sql_max_rows,
            ..ApiConfig::default()
        })
    }
}

pub fn run(args: SearchArgs) -> Result<ExitCode> {
    let cfg = args.config().usage()?;
    let ch = args.clickhouse.connect()?;
    args.redis.validate()?;
    crate::service::runtime()?.block_on(async move {
        // The API listens first: once /metrics answers, so does the API.
        let listener = crate::service::listen(args.listen, "--listen")?;
        let svc = crate::service::start(
            args.metrics_addr,
            &args.redis,
            &ch,
            None,
            &["refresh"],
            &args.shutdown,
            skyhouse_api::describe_metrics,
        )
        .await?;
        svc.pending.describe_with(|| {
            "HTTP requests still being answered or a stats refresh still running".to_owned()
        });
        let refresh = tokio::spawn(skyhouse_api::refresh_loop(
            ch.clone(),
            svc.health.clone(),
            Duration::from_secs(args.refresh_secs),
            svc.shutdown.clone(),
        ));
        let keys = Keys::new(ch.clone(), args.admin_key.as_deref());
        let state = ApiState::new(ch, svc.state, keys, cfg);
        tracing::info!(listen = %args.listen, "Search API serving.");
        let served = skyhouse_api::serve(listener, state, svc.shutdown.clone()).await;
        crate::service::finish(served, refresh, &svc.shutdown, "search").await
    })
}

#[cfg(test)]
mod tests {
    use super::SearchArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SearchArgs,
    }

    #[test]
    fn bad_flags_are_one_line_errors_naming_the_flag() {
        for (args, flag) in [
            (&["--stats-ttl-secs", "0"][..], "--stats-ttl-secs"),
            (&["--refresh-secs", "100000"][..], "--refresh-secs"),
            (&["--sql-max-rows", "0"][..], "--sql-max-rows"),
            (&["--admin-key", "short"][..], "--admin-key"),
        ] {
            let mut argv = vec!["search"];
            argv.extend(args);
            let cli = Cli::try_parse_from(argv).expect("flags parse");
            let e = format!("{:#}", cli.args.config().expect_err("invalid"));
            assert!(e.contains(flag), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{e}");
        }
        // The key itself never shows in the error.
        let cli =
            Cli::try_parse_from(["search", "--admin-key", "secret with space"]).expect("parse");
        let e = format!("{:#}", cli.args.config().expect_err("invalid"));
        assert!(!e.contains("secret"), "{e}");
    }
}
