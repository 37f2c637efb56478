//! The search / stats / maintenance API (`skyhouse search`, SPEC §6): an
//! axum router over the indexed tables.
//!
//! Every read shows current state only (`FINAL`, `deleted = 0`) and never
//! an account that is hidden (`accounts.active = 0`: deactivated, taken
//! down, suspended, deleted). Every parameter is checked before the typed
//! store function it goes to is called (the store holds the SQL and quotes
//! the values); a bad one is a 400 naming it, a failing ClickHouse a 503
//! without its text. Errors are JSON `{"error","message"}`. `GET /` is a
//! query page for the SQL explorer ([`page`]).
#![deny(missing_docs)]

pub mod auth;
mod error;
mod handlers;
mod openapi;
pub mod page;

use std::sync::Arc;
use std::time::Duration;

use axum::http::Method;
use axum::routing::{delete, get, post};
use axum::Router;
use skyhouse_state::State;
use skyhouse_store::ClickHouse;
use skyhouse_telemetry::http::{Cors, Limits};
use skyhouse_telemetry::CancellationToken;
use tokio::net::TcpListener;

pub use auth::{Keys, Scope};
pub use error::ApiError;
pub use openapi::{openapi, ROUTES};

/// Settings of the API.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// How long `/v1/stats` and the whole-history analytics answers stay
    /// cached in Redis. Default 60 s.
    pub stats_ttl: Duration,
    /// Longest a request may take (then 503). Default 10 s.
    pub request_timeout: Duration,
    /// Largest request body. Default 64 KiB.
    pub max_body: usize,
    /// Read routes need a key with the `read` scope. Default false (open).
    pub require_read_key: bool,
    /// SQL explorer: ClickHouse `max_execution_time`, seconds. Default 5.
    pub sql_max_seconds: u64,
    /// SQL explorer: `max_result_rows`. Default 10,000.
    pub sql_max_rows: u64,
    /// Browser origins that may call the read routes. Default any.
    pub cors: Cors,
    /// Browser origins that may call the admin routes (`/v1/admin/…`,
    /// `/v1/sql`). Default none.
    pub admin_cors: Cors,
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            stats_ttl: Duration::from_secs(60),
            request_timeout: Duration::from_secs(10),
            max_body: 64 << 10,
            require_read_key: false,
            sql_max_seconds: 5,
            sql_max_rows: 10_000,
            cors: Cors::Any,
            admin_cors: Cors::Deny,
        }
    }
}

/// What handlers share.
#[derive(Debug, Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ch: ClickHouse,
    state: State,
    keys: Keys,
    cfg: ApiConfig,
}

impl ApiState {
    /// Serve `ch` (and cache in `state`), checking keys with `keys`.
    pub fn new(ch: ClickHouse, state: State, keys: Keys, cfg: ApiConfig) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                ch,
                state,
                keys,
                cfg,
            }),
        }
    }
}

/// The router: every route of [`ROUTES`] (`/openapi.json` among them) and
/// the query page ([`page`]), with the shared HTTP layers
/// ([`skyhouse_telemetry::http::layers`]): the read routes and the page
/// answer browsers of [`ApiConfig::cors`], the admin routes those of
/// [`ApiConfig::admin_cors`]; the request metrics count every answer, the
/// timeout's 503 and the body limit's 413 included.
pub fn router(state: ApiState) -> Router {
    let cfg = &state.inner.cfg;
    let limits = Limits {
        timeout: cfg.request_timeout,
        max_body: cfg.max_body,
    };
    let read = Router::new()
        .route("/v1/stats", get(handlers::stats))
        .route("/v1/stats/actors/{did}", get(handlers::actor_stats))
        .route("/v1/stats/posts", get(handlers::post_stats))
        .route("/v1/stats/analytics/{name}", get(handlers::analytics))
        .route("/v1/search/posts", get(handlers::search_posts))
        .route("/v1/search/actors", get(handlers::search_actors))
        .route("/v1/repos/{did}", get(handlers::repo))
        .route("/openapi.json", get(handlers::openapi_json))
        .route(page::INDEX, get(page::index))
        .route(page::CSS, get(page::css))
        .route(page::JS, get(page::js))
        .fallback(handlers::not_found);
    let admin = Router::new()
        .route(
            "/v1/admin/repos/{did}/cleanup",
            post(handlers::admin_cleanup),
        )
        .route("/v1/admin/jobs/{id}", get(handlers::admin_job))
        .route(
            "/v1/admin/keys",
            get(handlers::admin_list_keys).post(handlers::admin_create_key),
        )
        .route("/v1/admin/keys/{id}", delete(handlers::admin_revoke_key))
        .route("/v1/sql", post(handlers::sql));
    let read = skyhouse_telemetry::http::with_cors(read, &cfg.cors, &[Method::GET, Method::HEAD]);
    let admin = skyhouse_telemetry::http::with_cors(
        admin,
        &cfg.admin_cors,
        &[Method::GET, Method::POST, Method::DELETE],
    );
    let routes = skyhouse_telemetry::http::inner_layers(read.merge(admin), limits)
        .layer(axum::middleware::from_fn(handlers::metered));
    skyhouse_telemetry::http::outer_layers(routes).with_state(state)
}

/// Serve the router on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    state: ApiState,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// Run the store's maintenance (`skyhouse_store::aggregates::refresh`:
/// hidden accounts, interaction counts, daily stats of the days that got
/// rows, retention) every `every` (skipped while ClickHouse does not
/// answer), until `shutdown`. `/health`'s `clickhouse` check is the
/// binary's probe.
///
/// `health`'s `refresh` check is false until the first refresh succeeds
/// (the stats and counts are those of the last refresh) and after a failed
/// one. The check is set when this is called, not when the loop first runs:
/// a spawned loop may run after `/health` has answered, which without the
/// check would say ready with no refresh done.
pub fn refresh_loop(
    ch: ClickHouse,
    health: skyhouse_telemetry::Health,
    every: Duration,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send {
    health.set("refresh", false);
    async move { refresh_rounds(ch, health, every, shutdown).await }
}

async fn refresh_rounds(
    ch: ClickHouse,
    health: skyhouse_telemetry::Health,
    every: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if ch.server_version().await.is_ok() {
            match skyhouse_store::aggregates::refresh(&ch).await {
                Ok(r) => {
                    if r.days_backlog > 0 {
                        tracing::info!(
                            days = r.days,
                            backlog = r.days_backlog,
                            "Daily stats: older days still to recompute."
                        );
                    }
                    health.set("refresh", true);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Refresh failed; next round retries.");
                    health.set("refresh", false);
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// The `status` label values of `skyhouse_api_requests_total` the API
/// answers with (classes: a 1xx or 3xx is never sent).
const STATUS_CLASSES: [&str; 3] = ["2xx", "4xx", "5xx"];

/// Describe the API's metrics and export them before the first request:
/// `skyhouse_api_requests_total` at 0 for every route of [`ROUTES`] (and
/// `other`, unknown paths) and status class, `skyhouse_api_request_seconds`
/// empty for each route, so dashboards have every series from the first
/// scrape. Idempotent.
pub fn describe_metrics() {
    let routes: std::collections::BTreeSet<&str> = ROUTES.iter().map(|r| r.1).collect();
    for route in routes.into_iter().chain(["other"]) {
        for status in STATUS_CLASSES {
            metrics::counter!("skyhouse_api_requests_total", "route" => route, "status" => status)
                .increment(0);
        }
        let _ = metrics::histogram!("skyhouse_api_request_seconds", "route" => route);
    }
    metrics::describe_counter!(
        "skyhouse_api_requests_total",
        metrics::Unit::Count,
        "Requests by route and status class"
    );
    metrics::describe_histogram!(
        "skyhouse_api_request_seconds",
        metrics::Unit::Seconds,
        "Request time by route"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search binary spawns the loop after its `/health` listener is
    /// up: the check must be there before the loop first runs, or `/health`
    /// says ready with the counts not yet refreshed.
    #[test]
    fn the_refresh_check_holds_health_back_from_the_call_not_the_first_poll() {
        let ch = ClickHouse::new(skyhouse_store::ClickHouseConfig::local(
            "http://127.0.0.1:9",
            "unused",
        ))
        .expect("a valid config");
        let health = skyhouse_telemetry::Health::default();
        health.set("clickhouse", true);
        assert!(health.ready());
        let never_polled = refresh_loop(
            ch,
            health.clone(),
            Duration::from_secs(1),
            CancellationToken::new(),
        );
        assert!(!health.ready(), "ready before any refresh ran");
        drop(never_polled);
    }
}
