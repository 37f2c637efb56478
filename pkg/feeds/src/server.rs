//! The XRPC router: `did.json`, `describeFeedGenerator`, `getFeedSkeleton`,
//! `/health`; the page cache and ranking snapshots; the refresh loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{RawQuery, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{counter, describe_counter, describe_histogram, histogram, Unit};
use serde_json::json;
use skyhouse_state::State;
use skyhouse_store::{ClickHouse, StoreError};
use skyhouse_telemetry::{CancellationToken, Health};
use tokio::net::TcpListener;
use tokio::sync::OnceCell;

use crate::algos::{self, Feed, FeedKind, GENERATOR_COLLECTION, MAX_RANKED};
use crate::auth::{bearer, ServiceAuth};

/// The method `lxm` must name.
pub const GET_FEED_SKELETON: &str = "app.bsky.feed.getFeedSkeleton";

/// Default page size.
const DEFAULT_LIMIT: usize = 50;
/// Largest page size.
const MAX_LIMIT: usize = 100;
/// Longest `feed` / `cursor` parameter read, bytes (anything longer is a 400).
const MAX_PARAM: usize = 1024;

/// Settings of the feed generator.
#[derive(Debug, Clone)]
pub struct FeedgenConfig {
    /// Our service DID (`aud` of accepted tokens; `id` of `did.json`).
    pub service_did: String,
    /// The public base URL (`serviceEndpoint` of `#bsky_fg`).
    pub public_url: String,
    /// The DID whose repo holds the feed generator records (feed URIs are
    /// `at://<publisher>/app.bsky.feed.generator/<rkey>`).
    pub publisher_did: String,
    /// The feeds served.
    pub feeds: Vec<Feed>,
    /// How long a page stays cached. Default 30 s: fresh enough for a
    /// timeline, and a popular feed is ranked at most twice a minute.
    pub cache_ttl: Duration,
    /// How long a ranking snapshot (what cursors page through) lives.
    /// Default 10 min: a reader paging slower than that starts over.
    pub snapshot_ttl: Duration,
    /// Browser origins that may call the endpoints (CORS). Any, usually: the
    /// answers are public.
    pub cors: skyhouse_telemetry::http::Cors,
}

/// Longest a request may take (then 503 `Timeout`): a cold ranking of a
/// large feed takes seconds; an AppView gives up sooner.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything a request handler needs.
#[derive(Debug, Clone)]
pub struct FeedgenState {
    inner: Arc<Inner>,
}

type Flight = Arc<OnceCell<Result<(String, Arc<Vec<String>>), String>>>;

#[derive(Debug)]
struct Inner {
    config: FeedgenConfig,
    feeds: BTreeMap<String, Feed>,
    ch: ClickHouse,
    /// `ch` with the receive timeout of a ranking ([`RANK_TIMEOUT`] at most).
    rank_ch: ClickHouse,
    state: State,
    auth: ServiceAuth,
    health: Health,
    /// Rankings in progress by feed: concurrent first-page misses share one.
    flights: Mutex<HashMap<String, Flight>>,
    /// The newest ranking of each feed (at most [`MAX_RANKED`] URIs per
    /// feed): first pages come from it while it is younger than the cache
    /// TTL, and while younger than half the snapshot TTL it is served stale
    /// as a new one is ranked in the background, so readers rarely wait
    /// for ClickHouse.
    current: Mutex<HashMap<String, Current>>,
}

/// A feed's newest ranking and its snapshot.
#[derive(Debug, Clone)]
struct Current {
    id: String,
    ranked: Arc<Vec<String>>,
    at: Instant,
}

impl FeedgenState {
    /// The state for [`router`].
    pub fn new(
        config: FeedgenConfig,
        ch: ClickHouse,
        state: State,
        auth: ServiceAuth,
        health: Health,
    ) -> FeedgenState {
        let feeds = config
            .feeds
            .iter()
            .map(|f| (f.rkey.clone(), f.clone()))
            .collect();
        let rank_ch = ch.with_receive_timeout(ch.timeouts().receive.min(RANK_TIMEOUT));
        FeedgenState {
            inner: Arc::new(Inner {
                config,
                feeds,
                rank_ch,
                ch,
                state,
                auth,
                health,
                flights: Mutex::new(HashMap::new()),
                current: Mutex::new(HashMap::new()),
            }),
        }
    }
}

/// Describe the metrics (once at start).
pub fn describe_metrics() {
    describe_counter!(
        "skyhouse_feedgen_requests_total",
        Unit::Count,
        "XRPC requests by method and HTTP status"
    );
    describe_histogram!(
        "skyhouse_feedgen_request_seconds",
        Unit::Seconds,
        "getFeedSkeleton latency"
    );
    describe_counter!(
        "skyhouse_feedgen_cache_total",
        Unit::Count,
        "getFeedSkeleton page cache lookups by result (hit, miss, error)"
    );
    describe_counter!(
        "skyhouse_feedgen_rankings_total",
        Unit::Count,
        "Feed rankings computed in ClickHouse"
    );
    describe_counter!(
        "skyhouse_feedgen_auth_failures_total",
        Unit::Count,
        "Refused service-auth tokens by reason"
    );
    describe_counter!(
        "skyhouse_feedgen_refresh_errors_total",
        Unit::Count,
        "Failed interaction count refreshes"
    );
    describe_histogram!(
        "skyhouse_feedgen_refresh_seconds",
        Unit::Seconds,
        "Interaction count refresh duration"
    );
    // Exported from the start, not only after the first event: every counter
    // at 0 with each value of its closed label set, the histograms empty.
    counter!("skyhouse_feedgen_rankings_total").increment(0);
    counter!("skyhouse_feedgen_refresh_errors_total").increment(0);
    counter!("skyhouse_feedgen_requests_total", "method" => "describeFeedGenerator", "status" => "200")
        .increment(0);
    for status in SKELETON_STATUSES {
        counter!("skyhouse_feedgen_requests_total", "method" => "getFeedSkeleton", "status" => status.as_str().to_owned())
            .increment(0);
    }
    for result in ["hit", "miss", "error"] {
        counter!("skyhouse_feedgen_cache_total", "result" => result).increment(0);
    }
    for reason in crate::auth::AuthError::REASONS {
        counter!("skyhouse_feedgen_auth_failures_total", "reason" => reason).increment(0);
    }
    let _ = histogram!("skyhouse_feedgen_request_seconds");
    let _ = histogram!("skyhouse_feedgen_refresh_seconds");
}

/// The statuses getFeedSkeleton answers with: a page, a bad parameter, a bad
/// token, a private feed the viewer may not read, ClickHouse unavailable.
const SKELETON_STATUSES: [StatusCode; 5] = [
    StatusCode::OK,
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::FORBIDDEN,
    StatusCode::SERVICE_UNAVAILABLE,
];

/// An XRPC error response: `{"error": name, "message": message}`.
#[derive(Debug)]
struct XrpcError {
    status: StatusCode,
    error: &'static str,
    message: String,
}

impl XrpcError {
    fn invalid(message: impl Into<String>) -> XrpcError {
        XrpcError {
            status: StatusCode::BAD_REQUEST,
            error: "InvalidRequest",
            message: message.into(),
        }
    }
}

impl IntoResponse for XrpcError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.error, "message": self.message}).to_string();
        (
            self.status,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

fn json_response(body: String) -> Response {
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

/// The routes on the public port, with the shared HTTP layers
/// ([`skyhouse_telemetry::http::layers`]: request ids, compression, the
/// configured CORS, [`REQUEST_TIMEOUT`], a 64 KiB body limit).
pub fn router(state: FeedgenState) -> Router {
    let cors = state.inner.config.cors.clone();
    let routes = Router::new()
        .route("/.well-known/did.json", get(did_json))
        .route(
            "/xrpc/app.bsky.feed.describeFeedGenerator",
            get(describe_feed_generator),
        )
        .route(
            "/xrpc/app.bsky.feed.getFeedSkeleton",
            get(get_feed_skeleton),
        )
        .route("/health", get(health))
        .fallback(|| async {
            XrpcError {
                status: StatusCode::NOT_FOUND,
                error: "MethodNotImplemented",
                message: "no such method".into(),
            }
        });
    let routes = skyhouse_telemetry::http::with_cors(
        routes,
        &cors,
        &[axum::http::Method::GET, axum::http::Method::HEAD],
    );
    skyhouse_telemetry::http::layers(
        routes,
        skyhouse_telemetry::http::Limits {
            timeout: REQUEST_TIMEOUT,
            max_body: skyhouse_telemetry::http::DEFAULT_MAX_BODY,
        },
    )
    .with_state(state)
}

/// Serve `router(state)` on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: FeedgenState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

async fn did_json(AxState(s): AxState<FeedgenState>) -> Response {
    let c = &s.inner.config;
    json_response(
        json!({
            "@context": ["https://www.w3.org/ns/did/v1"],
            "id": c.service_did,
            "service": [{
                "id": "#bsky_fg",
                "type": "BskyFeedGenerator",
                "serviceEndpoint": c.public_url,
            }],
        })
        .to_string(),
    )
}

fn feed_uri(publisher: &str, rkey: &str) -> String {
    format!("at://{publisher}/{GENERATOR_COLLECTION}/{rkey}")
}

async fn describe_feed_generator(AxState(s): AxState<FeedgenState>) -> Response {
    let c = &s.inner.config;
    let feeds: Vec<_> = s
        .inner
        .feeds
        .keys()
        .map(|rkey| json!({"uri": feed_uri(&c.publisher_did, rkey)}))
        .collect();
    counter!("skyhouse_feedgen_requests_total", "method" => "describeFeedGenerator", "status" => "200")
        .increment(1);
    json_response(json!({"did": c.service_did, "feeds": feeds}).to_string())
}

async fn health(AxState(s): AxState<FeedgenState>) -> Response {
    let ready = s.inner.health.ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        json!({ "ready": ready }).to_string(),
    )
        .into_response()
}

/// The parsed query of a getFeedSkeleton call.
#[derive(Debug)]
struct Params {
    rkey: String,
    limit: usize,
    cursor: Option<(String, usize)>,
    /// The cursor as given (for the cache key).
    raw_cursor: String,
}

/// A cursor: `<16 hex digits snapshot id>.<offset>`.
fn parse_cursor(c: &str) -> Option<(String, usize)> {
    let (id, off) = c.split_once('.')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let off_ok = !off.is_empty() && off.len() <= 5 && off.bytes().all(|b| b.is_ascii_digit());
    if !id_ok || !off_ok {
        return None;
    }
    let off: usize = off.parse().ok()?;
    (off > 0 && off < MAX_RANKED).then(|| (id.to_ascii_lowercase(), off))
}

fn parse_params(s: &FeedgenState, query: Option<&str>) -> Result<Params, XrpcError> {
    let query = query.unwrap_or("");
    if query.len() > 4 * MAX_PARAM {
        return Err(XrpcError::invalid("query string too long"));
    }
    let (mut feed, mut limit, mut cursor) = (None, None, None);
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        let slot = match k.as_ref() {
            "feed" => &mut feed,
            "limit" => &mut limit,
            "cursor" => &mut cursor,
            _ => continue,
        };
        if slot.is_some() {
            return Err(XrpcError::invalid(format!("parameter {k} given twice")));
        }
        if v.len() > MAX_PARAM {
            return Err(XrpcError::invalid(format!("parameter {k} too long")));
        }
        *slot = Some(v.into_owned());
    }
    let feed = feed.ok_or_else(|| XrpcError::invalid("parameter feed is required"))?;
    let limit = match limit {
        None => DEFAULT_LIMIT,
        Some(l) => match l.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
            _ => {
                return Err(XrpcError::invalid(format!(
                    "limit must be an integer from 1 to {MAX_LIMIT}"
                )))
            }
        },
    };
    let rkey = feed
        .strip_prefix("at://")
        .and_then(|rest| rest.strip_prefix(s.inner.config.publisher_did.as_str()))
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|rest| rest.strip_prefix(GENERATOR_COLLECTION))
        .and_then(|rest| rest.strip_prefix('/'))
        .filter(|rkey| s.inner.feeds.contains_key(*rkey))
        .ok_or_else(|| XrpcError {
            status: StatusCode::BAD_REQUEST,
            error: "UnknownFeed",
            message: "unknown feed".into(),
        })?
        .to_owned();
    let raw_cursor = cursor.clone().unwrap_or_default();
    let cursor = match cursor.as_deref() {
        None | Some("") => None,
        Some(c) => Some(parse_cursor(c).ok_or_else(|| XrpcError::invalid("malformed cursor"))?),
    };
    Ok(Params {
        rkey,
        limit,
        cursor,
        raw_cursor,
    })
}

fn auth_error(message: impl Into<String>) -> XrpcError {
    XrpcError {
        status: StatusCode::UNAUTHORIZED,
        error: "AuthenticationRequired",
        message: message.into(),
    }
}

async fn get_feed_skeleton(
    AxState(s): AxState<FeedgenState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    let started = Instant::now();
    let response = match skeleton(&s, &headers, query.as_deref()).await {
        Ok(body) => json_response(body),
        Err(e) => e.into_response(),
    };
    let status = response.status();
    counter!("skyhouse_feedgen_requests_total", "method" => "getFeedSkeleton", "status" => status.as_str().to_owned())
        .increment(1);
    histogram!("skyhouse_feedgen_request_seconds").record(started.elapsed().as_secs_f64());
    response
}

async fn skeleton(
    s: &FeedgenState,
    headers: &HeaderMap,
    query: Option<&str>,
) -> Result<String, XrpcError> {
    let p = parse_params(s, query)?;
    // A token is optional for public feeds, but one that is present must be valid.
    let viewer = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(value) => {
            let token = value
                .to_str()
                .ok()
                .and_then(bearer)
                .ok_or_else(|| auth_error("Authorization must be a Bearer token"))?;
            match s.inner.auth.verify(token, GET_FEED_SKELETON).await {
                Ok(did) => Some(did),
                Err(e) => {
                    counter!("skyhouse_feedgen_auth_failures_total", "reason" => e.reason())
                        .increment(1);
                    return Err(auth_error(format!("bad service-auth token: {e}")));
                }
            }
        }
    };
    let feed = s
        .inner
        .feeds
        .get(&p.rkey)
        .ok_or_else(|| XrpcError::invalid("unknown feed"))?;
    let viewer_key = if feed.is_private() {
        match &viewer {
            Some(v) => v.as_str(),
            None => return Err(auth_error("this feed needs a service-auth token")),
        }
    } else {
        "-"
    };
    let page_key = format!(
        "feeds:page:{}:{viewer_key}:{}:{}",
        p.rkey, p.limit, p.raw_cursor
    );
    match s.inner.state.cache_get(&page_key).await {
        Ok(Some(body)) => {
            counter!("skyhouse_feedgen_cache_total", "result" => "hit").increment(1);
            return Ok(body);
        }
        Ok(None) => counter!("skyhouse_feedgen_cache_total", "result" => "miss").increment(1),
        Err(_) => counter!("skyhouse_feedgen_cache_total", "result" => "error").increment(1),
    }
    if let FeedKind::Label {
        label,
        private: true,
    } = &feed.kind
    {
        let holds = algos::holds_label(&s.inner.ch, viewer_key, label)
            .await
            .map_err(internal)?;
        if !holds {
            return Err(XrpcError {
                status: StatusCode::FORBIDDEN,
                error: "NotAuthorized",
                message: "this feed is for holders of its label only".into(),
            });
        }
    }
    let offset = p.cursor.as_ref().map_or(0, |(_, off)| *off);
    let (snap_id, page, total) = match &p.cursor {
        None => {
            let (id, ranked) = first_ranking(s, feed).await?;
            let end = p.limit.min(ranked.len());
            (id, ranked[..end].to_vec(), ranked.len())
        }
        Some((id, off)) => {
            // The feed's current ranking in memory, when the cursor is from it.
            let current = {
                let map = s.inner.current.lock().unwrap_or_else(|e| e.into_inner());
                map.get(&feed.rkey)
                    .filter(|c| &c.id == id)
                    .map(|c| c.ranked.clone())
            };
            let cached = match current {
                Some(ranked) => {
                    let start = (*off).min(ranked.len());
                    let end = (start + p.limit).min(ranked.len());
                    Ok(Some((ranked[start..end].to_vec(), ranked.len())))
                }
                None => {
                    s.inner
                        .state
                        .cache_list_range(&snapshot_key(id), *off, p.limit)
                        .await
                }
            };
            match cached {
                Ok(Some((items, len))) => (id.clone(), items, len),
                Ok(None) => {
                    return Err(XrpcError::invalid(
                        "cursor expired; request the first page again",
                    ))
                }
                // Redis is down: rank again and page by offset.
                Err(_) => {
                    let ranked = rank(s, feed).await?;
                    let start = (*off).min(ranked.len());
                    let end = (start + p.limit).min(ranked.len());
                    (id.clone(), ranked[start..end].to_vec(), ranked.len())
                }
            }
        }
    };
    let next = offset + page.len();
    let mut body = json!({
        "feed": page.iter().map(|u| json!({"post": u})).collect::<Vec<_>>(),
    });
    if next < total && !page.is_empty() {
        body["cursor"] = json!(format!("{snap_id}.{next}"));
    }
    let body = body.to_string();
    let _ = s
        .inner
        .state
        .cache_set(&page_key, &body, s.inner.config.cache_ttl)
        .await;
    Ok(body)
}

fn snapshot_key(id: &str) -> String {
    format!("feeds:snap:{id}")
}

fn internal(e: StoreError) -> XrpcError {
    match e {
        StoreError::Transient { .. } | StoreError::BadRows(_) => {
            tracing::warn!(error = %e, "Feed query failed.");
        }
        // Not passing by itself: the schema, the credentials, a bug.
        _ => tracing::error!(error = %e, "Feed query failed; it will until this is fixed."),
    }
    XrpcError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: "InternalServerError",
        message: "feed temporarily unavailable".into(),
    }
}

/// Longest a ranking query may run before the request gets a 503 (the
/// slowest here, whats-hot over 1M posts and 4M likes, takes ~4 s): the
/// receive timeout of the rankings' store handle, unless the configured one
/// is shorter.
const RANK_TIMEOUT: Duration = Duration::from_secs(30);

async fn rank(s: &FeedgenState, feed: &Feed) -> Result<Vec<String>, XrpcError> {
    counter!("skyhouse_feedgen_rankings_total").increment(1);
    algos::rank(&s.inner.rank_ch, feed).await.map_err(internal)
}

/// The ranking a first page reads: the feed's current one while fresh
/// enough (a stale one also starts a new ranking in the background), else a
/// new one.
async fn first_ranking(
    s: &FeedgenState,
    feed: &Feed,
) -> Result<(String, Arc<Vec<String>>), XrpcError> {
    let current = {
        let map = s.inner.current.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&feed.rkey).cloned()
    };
    let config = &s.inner.config;
    if let Some(c) = current {
        let age = c.at.elapsed();
        if age < config.snapshot_ttl / 2 {
            if age >= config.cache_ttl {
                let running = {
                    let flights = s.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
                    flights.contains_key(&feed.rkey)
                };
                if !running {
                    let (s, feed) = (s.clone(), feed.clone());
                    tokio::spawn(async move {
                        let _ = rank_and_snapshot(&s, &feed).await;
                    });
                }
            }
            return Ok((c.id, c.ranked));
        }
    }
    rank_and_snapshot(s, feed).await
}

/// Rank `feed`, store the snapshot and make it the feed's current ranking;
/// concurrent callers share one run.
async fn rank_and_snapshot(
    s: &FeedgenState,
    feed: &Feed,
) -> Result<(String, Arc<Vec<String>>), XrpcError> {
    let flight = {
        let mut flights = s.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
        flights.entry(feed.rkey.clone()).or_default().clone()
    };
    let result = flight
        .get_or_init(|| async {
            let ranked = rank(s, feed).await.map_err(|e| e.message)?;
            let id = format!("{:016x}", fastrand::u64(..));
            // Without Redis the cursor still pages (by offset, re-ranking).
            let _ = s
                .inner
                .state
                .cache_set_list(&snapshot_key(&id), &ranked, s.inner.config.snapshot_ttl)
                .await;
            let ranked = Arc::new(ranked);
            s.inner
                .current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(
                    feed.rkey.clone(),
                    Current {
                        id: id.clone(),
                        ranked: ranked.clone(),
                        at: Instant::now(),
                    },
                );
            Ok((id, ranked))
        })
        .await
        .clone();
    {
        let mut flights = s.inner.flights.lock().unwrap_or_else(|e| e.into_inner());
        if flights
            .get(&feed.rkey)
            .is_some_and(|f| Arc::ptr_eq(f, &flight))
        {
            flights.remove(&feed.rkey);
        }
    }
    result.map_err(|message| XrpcError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        error: "InternalServerError",
        message,
    })
}

/// Every `interval`: run the store's maintenance (interaction counts and
/// the recent tables the rankings read, hidden accounts, daily stats,
/// retention: `skyhouse_store::aggregates::refresh`; `/health` check
/// `refresh`; the binary probes ClickHouse and Redis for every service).
///
/// Not ready until the first refresh (counts may be stale until then): the
/// check is set when this is called, before a spawned loop first runs, so
/// `/health` never says ready in between.
pub fn refresh_loop(
    ch: ClickHouse,
    health: Health,
    interval: Duration,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    health.set("refresh", false);
    async move { refresh_rounds(ch, health, interval, shutdown).await }
}

async fn refresh_rounds(
    ch: ClickHouse,
    health: Health,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        match skyhouse_store::aggregates::refresh(&ch).await {
            Ok(_) => {
                histogram!("skyhouse_feedgen_refresh_seconds")
                    .record(started.elapsed().as_secs_f64());
                health.set("refresh", true);
            }
            Err(e) => {
                counter!("skyhouse_feedgen_refresh_errors_total").increment(1);
                tracing::warn!(error = %e, "Interaction count refresh failed.");
                health.set("refresh", false);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_parse_strictly() {
        assert_eq!(
            parse_cursor("00112233445566aa.50"),
            Some(("00112233445566aa".into(), 50))
        );
        for bad in [
            "",
            ".",
            "x.1",
            "00112233445566aa.",
            "00112233445566aa.0",
            "00112233445566aa.-1",
            "00112233445566aa.99999",
            "00112233445566a.1",
            "00112233445566aa.1.2",
            "0011223344556677.1e3",
        ] {
            assert_eq!(parse_cursor(bad), None, "{bad:?}");
        }
    }
}
