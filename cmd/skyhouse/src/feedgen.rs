//! `skyhouse feedgen`: the feed generator (SPEC §6): `did.json`,
//! `describeFeedGenerator`, `getFeedSkeleton` over the indexed tables.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use skyhouse_feeds::{FeedgenConfig, FeedgenState, ServiceAuth};

use crate::migrate::ClickHouseArgs;
use crate::redis_args::RedisArgs;
use crate::Usage;

/// Flags of `skyhouse feedgen`.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
pub struct FeedgenArgs {
    #[command(subcommand)]
    action: Option<FeedgenAction>,
    /// Listen address of the XRPC endpoints.
    #[arg(long, env = "FEEDGEN_ADDR", default_value = "0.0.0.0:8094")]
    listen: SocketAddr,
    /// Address of /metrics and /health.
    #[arg(long, env = "FEEDGEN_METRICS_ADDR", default_value = "0.0.0.0:8095")]
    metrics_addr: SocketAddr,
    /// Public base URL of this service (https://feeds.example.com): the `#bsky_fg`
    /// endpoint in did.json, and the host of the default service DID.
    #[arg(long, env = "FEEDGEN_PUBLIC_URL", required = true)]
    public_url: Option<String>,
    /// Service DID (the `aud` tokens must carry). Default: did:web:<host of --public-url>.
    #[arg(long, env = "FEEDGEN_SERVICE_DID")]
    service_did: Option<String>,
    /// DID of the account whose repo holds the app.bsky.feed.generator records. Default:
    /// the service DID.
    #[arg(long, env = "FEEDGEN_PUBLISHER_DID")]
    publisher_did: Option<String>,
    /// JSON file of label and static feeds (see README); the built-in whats-hot, top-1h and
    /// top-24h are always served. Default: unset = built-ins only.
    #[arg(long, env = "FEEDGEN_FEEDS_CONFIG")]
    feeds_config: Option<std::path::PathBuf>,
    /// Seconds a feed page stays cached in Redis.
    #[arg(long, env = "FEEDGEN_CACHE_TTL_SECS", default_value_t = 30)]
    cache_ttl_secs: u64,
    /// Seconds a ranking snapshot (what cursors page through) lives in Redis.
    #[arg(long, env = "FEEDGEN_SNAPSHOT_TTL_SECS", default_value_t = 600)]
    snapshot_ttl_secs: u64,
    /// Seconds between like/repost count refreshes (refresh_interactions) and health probes.
    #[arg(long, env = "FEEDGEN_REFRESH_SECS", default_value_t = 30)]
    refresh_secs: u64,
    /// PLC directory that resolves token issuers' did:plc documents.
    #[arg(long, env = "PLC_URL", default_value = skyhouse_identity::DEFAULT_PLC_URL)]
    plc: String,
    /// Browser origins that may call the endpoints (CORS): * for any, none, or a
    /// comma-separated list of origins.
    #[arg(long, env = "FEEDGEN_CORS_ORIGINS", default_value = "*")]
    cors_origins: String,
    /// Resolve did:web:localhost%3A<port> issuers over plain http (tests only).
    #[arg(long, hide = true)]
    allow_loopback_did_web: bool,
    // Before the groups with their own --help heading (clap keeps the last heading
    // for the fields after a flattened group).
    #[command(flatten)]
    shutdown: crate::service::ShutdownArgs,
    #[command(flatten)]
    clickhouse: ClickHouseArgs,
    #[command(flatten)]
    redis: RedisArgs,
}

/// What `skyhouse feedgen` does besides serving.
#[derive(Debug, Subcommand)]
pub enum FeedgenAction {
    /// Write or update one app.bsky.feed.generator record per configured feed (display name,
    /// description, avatar) in the publisher's repository; unchanged ones are left alone.
    Publish(crate::publish::PublishArgs),
    /// Delete the app.bsky.feed.generator records of the configured feeds.
    Unpublish(crate::publish::PublishArgs),
}

/// `did:web` of a URL's host (`:port` percent-encoded as did:web wants).
pub(crate) fn did_web(url: &str) -> Result<String> {
    let u = url::Url::parse(url).map_err(|e| anyhow!("--public-url {url:?}: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") || u.path() != "/" || u.query().is_some() {
        return Err(anyhow!(
            "--public-url {url:?}: must be an http(s) base URL with no path or query"
        ));
    }
    let host = u
        .host_str()
        .ok_or_else(|| anyhow!("--public-url {url:?}: no host"))?;
    Ok(match u.port() {
        Some(p) => format!("did:web:{host}%3A{p}"),
        None => format!("did:web:{host}"),
    })
}

impl FeedgenArgs {
    /// Check every flag (and read the feeds file) before any network I/O.
    fn config(&self) -> Result<(FeedgenConfig, skyhouse_identity::ResolverConfig)> {
        let public_url = self
            .public_url
            .as_deref()
            .ok_or_else(|| anyhow!("--public-url (FEEDGEN_PUBLIC_URL) is required"))?;
        let derived = did_web(public_url)?;
        let service_did = self.service_did.clone().unwrap_or(derived);
        if !skyhouse_atproto::syntax::Did::is_valid(&service_did) {
            return Err(anyhow!("--service-did {service_did:?}: not a DID"));
        }
        let publisher_did = self
            .publisher_did
            .clone()
            .unwrap_or_else(|| service_did.clone());
        if !skyhouse_atproto::syntax::Did::is_valid(&publisher_did) {
            return Err(anyhow!("--publisher-did {publisher_did:?}: not a DID"));
        }
        let feeds = match &self.feeds_config {
            None => skyhouse_feeds::builtin_feeds(),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--feeds-config {}", path.display()))?;
                skyhouse_feeds::parse_feeds_config(&text)
                    .map_err(|e| anyhow!("--feeds-config {}: {e}", path.display()))?
            }
        };
        for (name, v) in [
            ("--cache-ttl-secs", self.cache_ttl_secs),
            ("--snapshot-ttl-secs", self.snapshot_ttl_secs),
            ("--refresh-secs", self.refresh_secs),
        ] {
            if v == 0 || v > 86_400 {
                return Err(anyhow!("{name} must be 1-86400, got {v}"));
            }
        }
        let resolver = skyhouse_identity::ResolverConfig {
            plc_url: self.plc.clone(),
            allow_loopback_http: self.allow_loopback_did_web,
            ..Default::default()
        };
        resolver.validate().map_err(|e| anyhow!("--plc: {e}"))?;
        Ok((
            FeedgenConfig {
                service_did,
                public_url: public_url.trim_end_matches('/').to_owned(),
                publisher_did,
                feeds,
                cache_ttl: Duration::from_secs(self.cache_ttl_secs),
                snapshot_ttl: Duration::from_secs(self.snapshot_ttl_secs),
                cors: skyhouse_telemetry::http::Cors::parse(&self.cors_origins)
                    .map_err(|e| anyhow!("--cors-origins: {e}"))?,
            },
            resolver,
        ))
    }
}

pub fn run(mut args: FeedgenArgs) -> Result<ExitCode> {
    match args.action.take() {
        Some(FeedgenAction::Publish(a)) => return crate::publish::run(a, false),
        Some(FeedgenAction::Unpublish(a)) => return crate::publish::run(a, true),
        None => {}
    }
    let (cfg, resolver_cfg) = args.config().usage()?;
    let ch = args.clickhouse.connect()?;
    args.redis.validate()?;
    let resolver = skyhouse_identity::Resolver::new(resolver_cfg)
        .map_err(|e| anyhow!("--plc: {e}"))
        .usage()?;
    crate::service::runtime()?.block_on(async move {
        let svc = crate::service::start(
            args.metrics_addr,
            &args.redis,
            &ch,
            None,
            &["refresh"],
            &args.shutdown,
            skyhouse_feeds::describe_metrics,
        )
        .await?;
        svc.pending.describe_with(|| {
            "HTTP requests still being answered or a count refresh still running".to_owned()
        });
        let listener = crate::service::listen(args.listen, "--listen")?;
        let auth = ServiceAuth::new(Arc::new(resolver), cfg.service_did.clone());
        let refresh = tokio::spawn(skyhouse_feeds::refresh_loop(
            ch.clone(),
            svc.health.clone(),
            Duration::from_secs(args.refresh_secs),
            svc.shutdown.clone(),
        ));
        let state = FeedgenState::new(cfg, ch, svc.state, auth, svc.health);
        let served = skyhouse_feeds::serve(listener, state, svc.shutdown.clone()).await;
        crate::service::finish(served, refresh, &svc.shutdown, "feedgen").await
    })
}

#[cfg(test)]
mod tests {
    use super::{did_web, FeedgenArgs};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: FeedgenArgs,
    }

    fn config_error(args: &[&str]) -> String {
        let mut argv = vec!["feedgen"];
        if !args.contains(&"--public-url") {
            argv.extend(["--public-url", "https://feeds.example.com"]);
        }
        argv.extend(args);
        let cli = Cli::try_parse_from(argv).expect("flags parse");
        format!("{:#}", cli.args.config().expect_err("invalid"))
    }

    #[test]
    fn bad_flags_are_one_line_errors_naming_the_flag() {
        for (args, flag) in [
            (
                &["--public-url", "https://x.example/path"][..],
                "--public-url",
            ),
            (&["--public-url", "not a url"][..], "--public-url"),
            (&["--service-did", "feeds.example.com"][..], "--service-did"),
            (&["--publisher-did", "did:"][..], "--publisher-did"),
            (
                &["--feeds-config", "/nonexistent/feeds.json"][..],
                "--feeds-config",
            ),
            (&["--cache-ttl-secs", "0"][..], "--cache-ttl-secs"),
            (&["--refresh-secs", "100000"][..], "--refresh-secs"),
            (&["--plc", "ftp://plc"][..], "--plc"),
        ] {
            let e = config_error(args);
            assert!(e.contains(flag), "{args:?}: {e}");
            assert!(!e.contains('\n'), "{args:?}: {e}");
        }
    }

    #[test]
    fn defaults_derive_the_dids_from_the_public_url() {
        let cli = Cli::try_parse_from(["feedgen", "--public-url", "https://feeds.example.com/"])
            .expect("flags parse");
        let (cfg, _) = cli.args.config().expect("valid");
        assert_eq!(cfg.service_did, "did:web:feeds.example.com");
        assert_eq!(cfg.publisher_did, "did:web:feeds.example.com");
        assert_eq!(cfg.public_url, "https://feeds.example.com");
        assert_eq!(cfg.feeds.len(), 3);
    }

    #[test]
    fn did_web_of_public_url() {
        assert_eq!(
            did_web("https://feeds.example.com").ok().as_deref(),
            Some("did:web:feeds.example.com")
        );
        assert_eq!(
            did_web("http://localhost:8094/").ok().as_deref(),
            Some("did:web:localhost%3A8094")
        );
        assert!(did_web("https://x.example/path").is_err());
        assert!(did_web("ftp://x.example").is_err());
    }
}
