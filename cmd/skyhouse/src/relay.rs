//! `skyhouse relay`: the gRPC relay (SPEC §7). Serves `StreamOperations` to
//! external ingesters; fed by indexers and backfill workers (`--relay-url`,
//! over `Ingest`) and, with `--source`, by a live source it reads itself.
//! `skyhouse relay token create/list/revoke` manage its tokens.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use clap::{Args, Subcommand};
use skyhouse_relay::{
    Auth, ClientConfig, Hub, RelayConfig, Scope, ServeConfig, TlsConfig, TokenFile,
};
use skyhouse_sources::SourceConfig;
use skyhouse_transform::CollectionFilter;

use crate::indexer::Source;
use crate::Usage;

/// `skyhouse relay`: serve, or manage tokens.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct RelayArgs {
    #[command(subcommand)]
    command: Option<RelayCommand>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Debug, Subcommand)]
enum RelayCommand {
    /// Manage the relay's tokens (bearer tokens with scopes subscribe and publish; only their
    /// sha-256 is stored, in --tokens-file).
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Create a token and print it (once: it is stored only hashed).
    Create {
        #[command(flatten)]
        file: TokensFileArg,
        /// Who or what it is for: 1-64 characters of [A-Za-z0-9._-].
        #[arg(long)]
        name: String,
        /// Scopes, comma-separated: subscribe (StreamOperations, Ack), publish (Ingest,
        /// IngestStream).
        #[arg(long = "scope", value_delimiter = ',', required = true)]
        scopes: Vec<String>,
    },
    /// List tokens (id, name, scopes, created, revoked); never the tokens themselves.
    List {
        #[command(flatten)]
        file: TokensFileArg,
    },
    /// Revoke a token by id: a running relay refuses it within seconds and ends its streams.
    Revoke {
        #[command(flatten)]
        file: TokensFileArg,
        /// The token's id (from `create` or `list`).
        id: String,
    },
}

#[derive(Debug, Args)]
struct TokensFileArg {
    /// The tokens file (JSON, mode 0600) the relay reads.
    #[arg(long, env = "RELAY_TOKENS_FILE")]
    tokens_file: PathBuf,
}

/// Flags of `skyhouse relay` (serving).
#[derive(Debug, Args)]
struct ServeArgs {
    /// gRPC listen address.
    #[arg(long, env = "RELAY_ADDR", default_value = "0.0.0.0:50051")]
    listen: SocketAddr,
    /// Address of /metrics and /health.
    #[arg(long, env = "RELAY_METRICS_ADDR", default_value = "0.0.0.0:8098")]
    metrics_addr: SocketAddr,
    /// Also read this live source (jetstream or firehose) and relay its record operations (no
    /// ClickHouse or Redis involved). Unset: only what indexers and backfill workers push.
    #[arg(long, env = "RELAY_SOURCE", value_enum, hide_possible_values = true)]
    source: Option<Source>,
    /// Endpoint(s) of --source, comma-separated, tried in order: ws:// or wss:// URLs, Jetstream
    /// shorthands (us-east-1 …), or one file:// capture. Default: the public Jetstream
    /// instances, or wss://bsky.network for the firehose.
    #[arg(
        long = "url",
        env = "RELAY_SOURCE_URL",
        value_delimiter = ',',
        requires = "source"
    )]
    urls: Vec<String>,
    /// Start position of --source (time_us or seq): -1 = the live tip, 0 = everything the source
    /// holds.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    cursor: i64,
    /// Collections of --source relayed: NSIDs or prefixes like app.bsky.*; `*` relays all.
    #[arg(
        long,
        env = "RELAY_COLLECTIONS",
        value_delimiter = ',',
        default_value = skyhouse_transform::DEFAULT_COLLECTIONS
    )]
    collections: Vec<String>,
    /// Keep the retention window in segment files in this directory (created if missing): it
    /// survives a restart, and clients resume from cursors of before it. Also holds the consumer
    /// groups' positions. Unset: in memory only (a restart loses the window).
    #[arg(long, env = "RELAY_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// With --data-dir: the segments take at most this many bytes (oldest removed first).
    #[arg(long, env = "RELAY_RETAIN_DISK_BYTES", default_value_t = 8 << 30)]
    retain_disk_bytes: u64,
    /// With --data-dir: a segment file is sealed and a new one started past this size.
    #[arg(long, env = "RELAY_SEGMENT_BYTES", default_value_t = 64 << 20)]
    segment_bytes: u64,
    /// Operations kept in memory (the newest of the window; with --data-dir older ones are read
    /// from disk).
    #[arg(long, env = "RELAY_RETAIN_OPS", default_value_t = 200_000)]
    retain_ops: usize,
    /// Encoded bytes kept in memory.
    #[arg(long, env = "RELAY_RETAIN_BYTES", default_value_t = 256 << 20)]
    retain_bytes: usize,
    /// Operations older than this many seconds are dropped (from memory and from disk).
    #[arg(long, env = "RELAY_RETAIN_SECS", default_value_t = 21_600)]
    retain_secs: u64,
    /// Partitions of every consumer group (DIDs hash into them; at most this many members of a
    /// group get a share). Changing it makes existing groups resume from their oldest position.
    #[arg(long, env = "RELAY_GROUP_PARTITIONS", default_value_t = 64)]
    group_partitions: u32,
    /// Consumer groups kept at once (with members, or remembered for the retention age).
    #[arg(long, env = "RELAY_MAX_GROUPS", default_value_t = 64)]
    max_groups: usize,
    /// A group member with this many operations delivered and not acknowledged (Ack) gets no
    /// more until it acknowledges.
    #[arg(long, env = "RELAY_GROUP_MAX_UNACKED", default_value_t = 20_000)]
    group_max_unacked: usize,
    /// A client this many operations behind the newest is disconnected (RESOURCE_EXHAUSTED);
    /// at most --retain-ops.
    #[arg(long, env = "RELAY_CLIENT_QUEUE", default_value_t = 50_000)]
    client_queue: usize,
    /// Clients streaming at once; more are refused (RESOURCE_EXHAUSTED).
    #[arg(long, env = "RELAY_MAX_CLIENTS", default_value_t = 1_024)]
    max_clients: usize,
    /// Tokens file (see `skyhouse relay token`): every call but HealthCheck needs a token
    /// from it with the method's scope. Re-read when it changes. Required unless
    /// --insecure-no-auth.
    #[arg(long, env = "RELAY_TOKENS_FILE")]
    tokens_file: Option<PathBuf>,
    /// Serve without tokens: anyone who reaches the port may subscribe and publish. Only on a
    /// loopback --listen address (local development); logged as such.
    #[arg(long, env = "RELAY_INSECURE_NO_AUTH")]
    insecure_no_auth: bool,
    /// TLS certificate (PEM, chain first to last). With --tls-key, the relay speaks TLS only.
    #[arg(long, env = "RELAY_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM) of --tls-cert.
    #[arg(long, env = "RELAY_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates signed by this CA (PEM). Needs --tls-cert.
    #[arg(long, env = "RELAY_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
    #[command(flatten)]
    shutdown: crate::service::ShutdownArgs,
}

impl ServeArgs {
    /// Authentication and TLS, checked before any I/O but reading the files.
    fn serve_config(&self) -> Result<ServeConfig> {
        let auth = match (&self.tokens_file, self.insecure_no_auth) {
            (Some(path), false) => {
                Auth::from_file(path).map_err(|e| anyhow!("--tokens-file: {e}"))?
            }
            (None, true) => {
                if !self.listen.ip().is_loopback() {
                    return Err(anyhow!(
                        "--insecure-no-auth: the relay listens on {} without tokens only on a \
                         loopback address (--listen 127.0.0.1:PORT or [::1]:PORT); elsewhere use \
                         --tokens-file",
                        self.listen
                    ));
                }
                Auth::insecure()
            }
            (None, false) => {
                return Err(anyhow!(
                    "--tokens-file (RELAY_TOKENS_FILE) is required: create one with `skyhouse \
                     relay token create --tokens-file FILE --name NAME --scope subscribe`, or \
                     pass --insecure-no-auth for a loopback-only development relay"
                ))
            }
            (Some(_), true) => {
                return Err(anyhow!(
                    "--tokens-file and --insecure-no-auth exclude each other"
                ))
            }
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(
                TlsConfig::from_files(cert, key, self.tls_client_ca.as_ref())
                    .map_err(|e| anyhow!(e))?,
            ),
            _ => None,
        };
        Ok(ServeConfig { auth, tls })
    }

    /// Check every flag before any I/O.
    fn config(&self) -> Result<(RelayConfig, Option<(SourceConfig, CollectionFilter)>)> {
        let cfg = RelayConfig {
            retain_ops: self.retain_ops,
            retain_bytes: self.retain_bytes,
            retain_age: Duration::from_secs(self.retain_secs),
            client_queue: self.client_queue,
            max_clients: self.max_clients,
            group_partitions: self.group_partitions,
            max_groups: self.max_groups,
            group_max_unacked: self.group_max_unacked,
            disk: self.data_dir.is_some(),
        };
        cfg.validate().map_err(|e| {
            anyhow!(
                "--retain-ops/--retain-bytes/--retain-secs/--client-queue/--max-clients/\
                 --group-partitions/--max-groups/--group-max-unacked: {e}"
            )
        })?;
        if self.data_dir.is_some()
            && (self.segment_bytes < 1 << 20 || self.retain_disk_bytes < self.segment_bytes)
        {
            return Err(anyhow!(
                "--segment-bytes must be at least 1 MiB and --retain-disk-bytes at least \
                 --segment-bytes"
            ));
        }
        let Some(source) = self.source else {
            return Ok((cfg, None));
        };
        let mut src = SourceConfig::new(source.kind());
        src.endpoints = self
            .urls
            .iter()
            .filter(|u| !u.trim().is_empty())
            .cloned()
            .collect();
        let collections =
            CollectionFilter::new(&self.collections).map_err(|e| anyhow!("--collections: {e}"))?;
        if src.kind == skyhouse_sources::SourceKind::Jetstream {
            if let Some(wanted) = collections.jetstream_wanted() {
                if wanted.len() <= skyhouse_sources::MAX_WANTED_COLLECTIONS {
                    src.wanted_collections = wanted;
                }
            }
        }
        src.validate().map_err(|e| anyhow!("--url: {e}"))?;
        Ok((cfg, Some((src, collections))))
    }
}

pub fn run(args: RelayArgs) -> Result<ExitCode> {
    match args.command {
        Some(RelayCommand::Token(cmd)) => token(cmd),
        None => serve(args.serve),
    }
}

fn token(cmd: TokenCommand) -> Result<ExitCode> {
    match cmd {
        TokenCommand::Create { file, name, scopes } => {
            let scopes = scopes
                .iter()
                .map(|s| s.parse::<Scope>())
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| anyhow!("--scope: {e}"))
                .usage()?;
            let (info, token) = TokenFile::new(&file.tokens_file)
                .create(&name, &scopes)
                .map_err(|e| anyhow!("{e}"))?;
            eprintln!(
                "Created token {} ({}, scopes {}) in {}. It is shown once, here:",
                info.id,
                info.name,
                info.scopes.join(","),
                file.tokens_file.display()
            );
            println!("{token}");
        }
        TokenCommand::List { file } => {
            let tokens = TokenFile::new(&file.tokens_file)
                .list()
                .map_err(|e| anyhow!("{e}"))?;
            println!(
                "{:<16}  {:<24}  {:<17}  {:<20}  revoked",
                "id", "name", "scopes", "created"
            );
            for t in tokens {
                println!(
                    "{:<16}  {:<24}  {:<17}  {:<20}  {}",
                    t.id,
                    t.name,
                    t.scopes.join(","),
                    skyhouse_relay::auth::utc(t.created_at),
                    t.revoked_at
                        .map_or("-".to_owned(), skyhouse_relay::auth::utc)
                );
            }
        }
        TokenCommand::Revoke { file, id } => {
            let t = TokenFile::new(&file.tokens_file)
                .revoke(&id)
                .map_err(|e| anyhow!("{e}"))?;
            eprintln!(
                "Revoked token {} ({}); a running relay refuses it within seconds.",
                t.id, t.name
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--relay-url` and its token and TLS flags, as the indexer and the backfill give them.
pub fn client_config(
    url: &str,
    token: Option<&str>,
    ca: Option<&PathBuf>,
    cert: Option<&PathBuf>,
    key: Option<&PathBuf>,
) -> Result<ClientConfig> {
    let read = |flag: &str, p: &PathBuf| {
        std::fs::read(p).with_context(|| format!("{flag} {}", p.display()))
    };
    let identity_pem = match (cert, key) {
        (Some(c), Some(k)) => Some((
            read("--relay-client-cert", c)?,
            read("--relay-client-key", k)?,
        )),
        (None, None) => None,
        _ => {
            return Err(anyhow!(
                "--relay-client-cert and --relay-client-key go together"
            ))
        }
    };
    let cfg = ClientConfig {
        url: url.to_owned(),
        token: token.map(str::to_owned),
        ca_pem: ca.map(|p| read("--relay-ca", p)).transpose()?,
        identity_pem,
    };
    cfg.endpoint().map_err(|e| anyhow!("--relay-url: {e}"))?;
    Ok(cfg)
}

fn serve(args: ServeArgs) -> Result<ExitCode> {
    let (cfg, source) = args.config().usage()?;
    let serve_cfg = args.serve_config().usage()?;
    crate::service::runtime()?.block_on(async move {
        let handle = skyhouse_telemetry::install_metrics();
        let health = skyhouse_telemetry::Health::default();
        let (shutdown, pending) = args.shutdown.install();
        pending.describe_with(|| "gRPC streams still open".to_owned());
        let metrics = crate::service::listen(args.metrics_addr, "--metrics-addr")?;
        tokio::spawn(skyhouse_telemetry::serve_metrics(
            metrics,
            handle,
            health.clone(),
            shutdown.clone(),
        ));
        let listener = crate::service::listen(args.listen, "--listen")?;
        let hub = match &args.data_dir {
            Some(dir) => {
                let disk = skyhouse_relay::DiskConfig {
                    dir: dir.clone(),
                    max_bytes: args.retain_disk_bytes,
                    segment_bytes: args.segment_bytes,
                };
                Hub::open(cfg, disk, skyhouse_relay::first_cursor_now(), shutdown.clone())
                    .map_err(|e| anyhow!("--data-dir: {e}"))?
            }
            None => {
                tracing::info!("Relay retention in memory only (no --data-dir): a restart loses the window.");
                Hub::new(cfg, skyhouse_relay::first_cursor_now(), shutdown.clone())
            }
        };
        if let Some((src, collections)) = source {
            let (hub, stop) = (hub.clone(), shutdown.clone());
            let start = args.cursor;
            tokio::spawn(async move {
                match skyhouse_relay::run_source(src, start, collections, hub, stop).await {
                    Ok(s) => tracing::info!(
                        messages = s.messages,
                        ops = s.ops,
                        "Relay source ended; still serving."
                    ),
                    Err(e) => {
                        tracing::error!(error = %e, "Relay source failed; still serving Ingest.")
                    }
                }
            });
        }
        let addr = listener.local_addr()?;
        if serve_cfg.auth.enabled() {
            tracing::info!(
                %addr,
                tls = serve_cfg.tls.is_some(),
                client_certificates = serve_cfg.tls.as_ref().is_some_and(|t| t.requires_client_certificates()),
                tokens = serve_cfg.auth.active_tokens(),
                "Relay serving gRPC; calls need a token."
            );
            if serve_cfg.auth.active_tokens() == 0 {
                tracing::warn!("No relay token yet: every call is refused until `skyhouse relay token create` adds one.");
            }
        } else {
            tracing::warn!(
                %addr,
                tls = serve_cfg.tls.is_some(),
                "Relay serving gRPC WITHOUT AUTHENTICATION (--insecure-no-auth, loopback only): \
                 anyone who reaches the port may subscribe and publish."
            );
        }
        health.set("relay", true);
        let served = skyhouse_relay::serve(listener, hub, serve_cfg, shutdown.clone()).await;
        health.set("relay", false);
        shutdown.cancel();
        served.map_err(|e| anyhow!("relay: {e}"))?;
        Ok(ExitCode::SUCCESS)
    })
}
