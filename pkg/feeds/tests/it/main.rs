//! skyhouse-feeds against real servers: ClickHouse 18.16 and Redis started
//! by testkit, and the reference PDS on loopback (`@atproto/dev-env`, with
//! its in-memory PLC directory) for accounts, records and real service-auth
//! tokens. The feed generator runs in-process on `127.0.0.1:0` and is called
//! over HTTP.
//!
//! - `auth`: tokens minted by the PDS are accepted; expired, wrong `aud`,
//!   wrong or missing `lxm`, tampered, `at+jwt` and wrong-key tokens get a
//!   401; ES256 and ES256K tokens minted here for a `did:web` served on
//!   loopback are accepted.
//! - `feeds`: posts and likes written on the PDS, indexed from its firehose
//!   by the real pipeline, come back ranked; deleted likes stop counting,
//!   hidden accounts vanish; cursors page without duplicates or gaps; limits
//!   and hostile parameters are 400s, never 500s.
//!   With Redis stopped, pages and cursors are still served.
//! - `metrics`: `dashboards/feedgen.json` queries only what is exported.
#![allow(clippy::unwrap_used)] // a panic is the failure report

mod auth;
mod feeds;
mod metrics;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use skyhouse_feeds::{Feed, FeedgenConfig, FeedgenState, ServiceAuth};
use skyhouse_identity::{Resolver, ResolverConfig};
use skyhouse_store::{ClickHouse, ClickHouseConfig};
use skyhouse_telemetry::{CancellationToken, Health};
use skyhouse_testkit::{Network, TestDatabase};

/// Guard against a hang, never a performance expectation.
pub const DEADLINE: Duration = Duration::from_secs(120);

/// A running feed generator over a fresh migrated database.
#[derive(Debug)]
pub struct Feedgen {
    pub db: TestDatabase,
    pub ch: ClickHouse,
    pub base: String,
    pub service_did: String,
    pub publisher: String,
    pub http: reqwest::Client,
    stop: CancellationToken,
    /// What a second replica over the same database and Redis needs.
    parts: (FeedgenConfig, skyhouse_state::State, ServiceAuth),
}

impl Drop for Feedgen {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Feedgen {
    /// Migrate a database named after `hint` and serve `feeds`.
    pub async fn start(hint: &str, feeds: Vec<Feed>) -> Feedgen {
        let redis = skyhouse_testkit::Redis::shared();
        Feedgen::start_with_redis(hint, feeds, &redis.url(), &redis.key_prefix(hint)).await
    }

    /// [`start`](Self::start) with its own Redis (URL and key prefix).
    pub async fn start_with_redis(
        hint: &str,
        feeds: Vec<Feed>,
        redis_url: &str,
        prefix: &str,
    ) -> Feedgen {
        let db = skyhouse_testkit::ClickHouse::shared().database(hint);
        let ch = ClickHouse::new(ClickHouseConfig::local(&db.url(), db.name())).unwrap();
        skyhouse_store::migrate::up_embedded(&ch).await.unwrap();
        let state = skyhouse_state::State::connect(redis_url, prefix)
            .await
            .unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let service_did = format!("did:web:localhost%3A{port}");
        let publisher = "did:plc:feedpublisher00000000000".to_owned();
        let resolver = Resolver::new(ResolverConfig {
            plc_url: Network::shared().plc_url().to_owned(),
            allow_loopback_http: true,
            ..Default::default()
        })
        .unwrap();
        let auth = ServiceAuth::new(Arc::new(resolver), service_did.clone());
        let health = Health::default();
        health.set("clickhouse", true);
        let config = FeedgenConfig {
            service_did: service_did.clone(),
            public_url: format!("http://localhost:{port}"),
            publisher_did: publisher.clone(),
            feeds,
            cache_ttl: Duration::from_secs(30),
            snapshot_ttl: Duration::from_secs(600),
            cors: skyhouse_telemetry::http::Cors::Any,
        };
        let parts = (config.clone(), state.clone(), auth.clone());
        let app = FeedgenState::new(config, ch.clone(), state, auth, health);
        let stop = CancellationToken::new();
        tokio::spawn(skyhouse_feeds::serve(listener, app, stop.clone()));
        Feedgen {
            db,
            ch,
            base: format!("http://127.0.0.1:{port}"),
            service_did,
            publisher,
            http: reqwest::Client::new(),
            stop,
            parts,
        }
    }

    /// Another feed generator over the same database and Redis (what a
    /// load balancer puts beside this one); its base URL.
    pub async fn replica(&self) -> String {
        let (config, state, auth) = self.parts.clone();
        let app = FeedgenState::new(config, self.ch.clone(), state, auth, Health::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(skyhouse_feeds::serve(listener, app, self.stop.clone()));
        base
    }

    /// The AT-URI of feed `rkey`.
    pub fn feed_uri(&self, rkey: &str) -> String {
        format!("at://{}/app.bsky.feed.generator/{rkey}", self.publisher)
    }

    /// GET `path_and_query` with an optional bearer token: (status, JSON body).
    pub async fn get(&self, path_and_query: &str, token: Option<&str>) -> (u16, Value) {
        self.get_via(&self.base, path_and_query, token).await
    }

    /// [`get`](Self::get) from the server at `base`.
    pub async fn get_via(
        &self,
        base: &str,
        path_and_query: &str,
        token: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.get(format!("{base}{path_and_query}"));
        if let Some(t) = token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|_| panic!("{path_and_query}: not JSON: {text:?}"));
        (status, body)
    }

    /// getFeedSkeleton with raw extra query text (already encoded).
    pub async fn skeleton(&self, rkey: &str, extra: &str, token: Option<&str>) -> (u16, Value) {
        let q = format!(
            "/xrpc/app.bsky.feed.getFeedSkeleton?feed={}{extra}",
            enc(&self.feed_uri(rkey))
        );
        self.get(&q, token).await
    }
}

/// Percent-encode a query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The post URIs of a getFeedSkeleton body.
pub fn posts(body: &Value) -> Vec<String> {
    body["feed"]
        .as_array()
        .unwrap_or_else(|| panic!("no feed in {body}"))
        .iter()
        .map(|i| i["post"].as_str().unwrap().to_owned())
        .collect()
}

/// Polls `check` until it holds (or panics at [`DEADLINE`] with `what`).
pub async fn wait_until<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
