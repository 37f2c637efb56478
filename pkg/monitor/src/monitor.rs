//! The monitor service: the host list, check rounds, the per-host state and
//! the HTTP endpoint.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use axum::extract::RawQuery;
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use serde::Serialize;
use skyhouse_store::ClickHouse;
use skyhouse_telemetry::{CancellationToken, Health};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::check::{Checker, Snapshot};
use crate::hosts::{list_hosts, Host, HostKind};
use crate::{metrics, store, MonitorError};

/// How the monitor runs.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Time between the starts of two check rounds, and the `host_checks`
    /// bucket width (one row per host per interval). Default 60 s: a host
    /// going down shows within a minute; 10k hosts cost ~170 requests/s.
    pub interval: Duration,
    /// Deadline of one request (connect, headers and body). Default 10 s;
    /// slower answers count as `timeout`.
    pub timeout: Duration,
    /// Hosts checked at the same time. Default 32: with a 10 s timeout a
    /// round of 10k hosts ends within the interval even if many hang.
    pub concurrency: usize,
    /// Most hosts kept; discovered hosts beyond it are dropped and counted.
    /// Default 50,000 (about 2 KB each: ~100 MB at the cap).
    pub max_hosts: usize,
    /// Time between two `listHosts` enumerations of each relay. Default 1 h.
    pub discover_interval: Duration,
    /// Browser origins that may read `/v1/hosts`. Default any.
    pub cors: skyhouse_telemetry::http::Cors,
}

impl Default for MonitorConfig {
    fn default() -> MonitorConfig {
        MonitorConfig {
            interval: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
            concurrency: 32,
            max_hosts: 50_000,
            discover_interval: Duration::from_secs(3600),
            cors: skyhouse_telemetry::http::Cors::Any,
        }
    }
}

impl MonitorConfig {
    /// Check the settings (no I/O); the error names the setting.
    pub fn validate(&self) -> Result<(), MonitorError> {
        let bad = |setting: &'static str, why: &str| {
            Err(MonitorError::Setting {
                setting,
                why: why.to_owned(),
            })
        };
        if self.interval < Duration::from_secs(1) {
            return bad("interval", "must be at least 1 second");
        }
        if self.timeout.is_zero() || self.timeout > self.interval {
            return bad("timeout", "must be above 0 and at most the interval");
        }
        if self.concurrency == 0 || self.concurrency > 4096 {
            return bad("concurrency", "must be 1..=4096");
        }
        if self.max_hosts == 0 {
            return bad("max_hosts", "must be at least 1");
        }
        if self.discover_interval < self.interval {
            return bad("discover_interval", "must be at least the check interval");
        }
        Ok(())
    }
}

/// One host as `/v1/hosts` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct HostState {
    /// Base URL.
    pub host: String,
    /// PDS or relay.
    pub kind: HostKind,
    /// `up`, `down` or `unchecked`.
    pub state: &'static str,
    /// Newest check that found it up (Unix seconds), since this process started.
    pub last_up_at: Option<u32>,
    /// Checks in a row that found it down.
    pub consecutive_failures: u32,
    /// The newest check.
    pub last_check: Option<Snapshot>,
}

impl HostState {
    fn new(host: &Host) -> HostState {
        HostState {
            host: host.url.clone(),
            kind: host.kind,
            state: "unchecked",
            last_up_at: None,
            consecutive_failures: 0,
            last_check: None,
        }
    }

    fn record(&mut self, s: Snapshot) {
        if s.up {
            self.state = "up";
            self.last_up_at = Some(s.observed_at);
            self.consecutive_failures = 0;
        } else {
            self.state = "down";
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        }
        self.last_check = Some(s);
    }
}

/// The monitor: clone it freely (a shared handle).
#[derive(Debug, Clone)]
pub struct Monitor {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: MonitorConfig,
    checker: Checker,
    ch: Option<ClickHouse>,
    health: Health,
    /// Relays whose listHosts is enumerated.
    relays: Mutex<Vec<Host>>,
    /// Every known host (checked or not) by URL; at most `max_hosts`.
    hosts: RwLock<BTreeMap<String, HostState>>,
}

impl Monitor {
    /// A monitor writing snapshots to `ch` (none: only metrics and JSON),
    /// reporting readiness in `health`. Validates `cfg`.
    pub fn new(
        cfg: MonitorConfig,
        ch: Option<ClickHouse>,
        health: Health,
    ) -> Result<Monitor, MonitorError> {
        cfg.validate()?;
        let checker = Checker::new(cfg.timeout)?;
        // The recorder first: descriptions and zeroed counters given to no
        // recorder are lost.
        skyhouse_telemetry::install_metrics();
        metrics::describe_metrics();
        health.set("checked", false);
        if ch.is_some() {
            health.set("clickhouse", false);
        }
        Ok(Monitor {
            inner: Arc::new(Inner {
                cfg,
                checker,
                ch,
                health,
                relays: Mutex::new(Vec::new()),
                hosts: RwLock::new(BTreeMap::new()),
            }),
        })
    }

    /// Add hosts (known ones are kept as they are); returns how many were
    /// new. Hosts past `max_hosts` are dropped and counted.
    pub fn add_hosts(&self, hosts: impl IntoIterator<Item = Host>) -> usize {
        let max = self.inner.cfg.max_hosts;
        let mut map = self.inner.hosts.write().unwrap_or_else(|e| e.into_inner());
        let (mut added, mut dropped) = (0, 0);
        for h in hosts {
            if map.contains_key(&h.url) {
                continue;
            }
            if map.len() >= max {
                dropped += 1;
                continue;
            }
            map.insert(h.url.clone(), HostState::new(&h));
            added += 1;
        }
        drop(map);
        if dropped > 0 {
            metrics::dropped(dropped);
            warn!(dropped, max, "Host list full; hosts dropped.");
        }
        self.update_gauges();
        added
    }

    /// Add a relay: it is checked, and its listHosts enumerated by
    /// [`discover`](Self::discover).
    pub fn add_relay(&self, relay: Host) {
        let relay = Host {
            kind: HostKind::Relay,
            ..relay
        };
        self.add_hosts([relay.clone()]);
        let mut relays = self.inner.relays.lock().unwrap_or_else(|e| e.into_inner());
        if !relays.contains(&relay) {
            relays.push(relay);
        }
    }

    /// Add the hosts checked by earlier runs (from ClickHouse); returns how
    /// many were new.
    pub async fn load_known(&self) -> Result<usize, MonitorError> {
        let Some(ch) = &self.inner.ch else {
            return Ok(0);
        };
        let hosts = store::known_hosts(ch, self.inner.cfg.max_hosts).await?;
        Ok(self.add_hosts(hosts))
    }

    /// Enumerate every relay's listHosts and add the hosts; returns how many
    /// were new. A failing relay is logged and counted, the others still run.
    pub async fn discover(&self) -> usize {
        let relays = self
            .inner
            .relays
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let mut added = 0;
        for relay in relays {
            match list_hosts(self.inner.checker.http(), &relay, self.inner.cfg.max_hosts).await {
                Ok(hosts) => {
                    let n = hosts.len();
                    let new = self.add_hosts(hosts);
                    info!(relay = %relay.url, listed = n, new, "Relay hosts listed.");
                    added += new;
                }
                Err(error) => {
                    metrics::discovery_error();
                    warn!(%error, "listHosts failed; keeping the known hosts.");
                }
            }
        }
        added
    }

    /// Check every known host once (at most `concurrency` at a time), write
    /// the snapshots to ClickHouse, update the state and metrics; returns
    /// the snapshots in host order.
    pub async fn round(&self) -> Vec<Snapshot> {
        let started = Instant::now();
        let hosts: Vec<Host> = self
            .inner
            .hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .map(|s| Host {
                url: s.host.clone(),
                kind: s.kind,
            })
            .collect();
        let permits = Arc::new(Semaphore::new(self.inner.cfg.concurrency));
        let mut tasks = JoinSet::new();
        let mut out = Vec::with_capacity(hosts.len());
        for host in hosts {
            // Waiting for a permit before spawning keeps at most
            // `concurrency` checks (and tasks) alive.
            let Ok(permit) = permits.clone().acquire_owned().await else {
                break;
            };
            let checker = self.inner.checker.clone();
            tasks.spawn(async move {
                let s = checker.check(&host).await;
                drop(permit);
                s
            });
            while let Some(done) = tasks.try_join_next() {
                out.extend(done.ok());
            }
        }
        while let Some(done) = tasks.join_next().await {
            out.extend(done.ok());
        }
        out.sort_by(|a, b| a.host.cmp(&b.host));
        if let Some(ch) = &self.inner.ch {
            match store::write_snapshots(ch, &out, self.inner.cfg.interval).await {
                Ok(()) => self.inner.health.set("clickhouse", true),
                Err(error) => {
                    metrics::store_error();
                    self.inner.health.set("clickhouse", false);
                    warn!(%error, "Host snapshots not written.");
                }
            }
        }
        {
            let mut map = self.inner.hosts.write().unwrap_or_else(|e| e.into_inner());
            for s in &out {
                metrics::checked(s);
                if let Some(state) = map.get_mut(&s.host) {
                    state.record(s.clone());
                }
            }
        }
        self.update_gauges();
        self.inner.health.set("checked", true);
        metrics::round(started.elapsed());
        out
    }

    /// Every known host's state, in URL order.
    pub fn hosts(&self) -> Vec<HostState> {
        self.hosts_where(None, None)
    }

    /// The hosts in `state` (`up`, `down`, `unchecked`) of `kind`, in URL
    /// order; `None` matches any.
    pub fn hosts_where(&self, state: Option<&str>, kind: Option<HostKind>) -> Vec<HostState> {
        self.inner
            .hosts
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter(|h| state.is_none_or(|s| h.state == s) && kind.is_none_or(|k| h.kind == k))
            .cloned()
            .collect()
    }

    /// Run until `shutdown`: a round every interval (the next starts one
    /// interval after the previous started, or at once if it overran), and
    /// a relay enumeration every discover interval (first before round 1).
    pub async fn run(&self, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(self.inner.cfg.interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_discovery: Option<Instant> = None;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let due =
                last_discovery.is_none_or(|t| t.elapsed() >= self.inner.cfg.discover_interval);
            if due {
                last_discovery = Some(Instant::now());
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = self.discover() => {}
                }
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                snaps = self.round() => {
                    let up = snaps.iter().filter(|s| s.up).count();
                    info!(hosts = snaps.len(), up, down = snaps.len() - up, "Check round done.");
                }
            }
        }
    }

    /// `/v1/hosts` (JSON: every known host's state), `/metrics` and
    /// `/health`: the one port of a monitor run without its own metrics
    /// address.
    pub fn router(&self) -> Router {
        let handle = skyhouse_telemetry::install_metrics();
        skyhouse_telemetry::http::layers(
            skyhouse_telemetry::metrics_router(handle, self.inner.health.clone())
                .merge(self.hosts_routes()),
            skyhouse_telemetry::METRICS_LIMITS,
        )
    }

    /// `/v1/hosts` alone, for a monitor whose `/metrics` and `/health` have
    /// their own address ([`skyhouse_telemetry::serve_metrics`]).
    pub fn hosts_router(&self) -> Router {
        skyhouse_telemetry::http::layers(self.hosts_routes(), skyhouse_telemetry::METRICS_LIMITS)
    }

    /// `/v1/hosts` with its CORS, without the other layers.
    fn hosts_routes(&self) -> Router {
        let me = self.clone();
        let routes = Router::new().route(
            "/v1/hosts",
            get(move |RawQuery(query): RawQuery| {
                let me = me.clone();
                async move {
                    let json = [(CONTENT_TYPE, "application/json")];
                    let (state, kind) = match HostFilter::parse(query.as_deref()) {
                        Ok(f) => f,
                        Err(message) => {
                            let body =
                                serde_json::json!({"error": "InvalidRequest", "message": message});
                            return (StatusCode::BAD_REQUEST, json, body.to_string());
                        }
                    };
                    #[derive(Serialize)]
                    struct Body {
                        hosts: Vec<HostState>,
                    }
                    let body = serde_json::to_string(&Body {
                        hosts: me.hosts_where(state, kind),
                    })
                    .unwrap_or_else(|_| "{\"hosts\":[]}".to_owned());
                    (StatusCode::OK, json, body)
                }
            }),
        );
        skyhouse_telemetry::http::with_cors(
            routes,
            &self.inner.cfg.cors,
            &[axum::http::Method::GET, axum::http::Method::HEAD],
        )
    }

    /// Serve [`router`](Self::router) on `listener` until `shutdown`.
    pub async fn serve(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    /// Serve [`hosts_router`](Self::hosts_router) on `listener` until `shutdown`.
    pub async fn serve_hosts(
        &self,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<()> {
        axum::serve(listener, self.hosts_router())
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
    }

    fn update_gauges(&self) {
        let map = self.inner.hosts.read().unwrap_or_else(|e| e.into_inner());
        for kind in [HostKind::Pds, HostKind::Relay] {
            let (mut up, mut down, mut unchecked) = (0, 0, 0);
            for s in map.values().filter(|s| s.kind == kind) {
                match s.state {
                    "up" => up += 1,
                    "down" => down += 1,
                    _ => unchecked += 1,
                }
            }
            metrics::hosts(kind, up, down, unchecked);
        }
    }
}

/// The `/v1/hosts` query: `state=up|down|unchecked`, `kind=pds|relay`.
struct HostFilter;

impl HostFilter {
    fn parse(query: Option<&str>) -> Result<(Option<&'static str>, Option<HostKind>), String> {
        let (mut state, mut kind) = (None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "state" => {
                    state = Some(
                        ["up", "down", "unchecked"]
                            .into_iter()
                            .find(|s| *s == value)
                            .ok_or("state must be up, down or unchecked")?,
                    )
                }
                "kind" => kind = Some(HostKind::parse(value).ok_or("kind must be pds or relay")?),
                _ => return Err("unknown parameter: expected state or kind".to_owned()),
            }
        }
        Ok((state, kind))
    }
}
