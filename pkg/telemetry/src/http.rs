//! The HTTP layers every skyhouse listener shares (tower-http): request ids,
//! a trace span per request, compression, CORS, a timeout, a body limit,
//! and `Authorization` kept out of logs.
//!
//! Why one place: every service (search, feedgen, monitor, the `/metrics`
//! and `/health` listeners) answers the same way: an `x-request-id` taken
//! from the request (or made) is returned and is a field of the request's
//! span, so every log line and trace of the request carries it; JSON is
//! compressed (gzip, br or zstd, by `Accept-Encoding`); an answer the
//! timeout or the body limit cut short is JSON `{"error","message"}` like
//! every other error.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::{DefaultOnFailure, DefaultOnResponse, TraceLayer};
use tracing::Level;

/// The request id header (accepted, made when absent, returned).
pub const REQUEST_ID: &str = "x-request-id";

/// Longest `x-request-id` accepted from a client (bytes); a longer one, or
/// one with other than visible ASCII, is replaced by a new id (it goes into
/// every log line of the request).
pub const MAX_REQUEST_ID: usize = 128;

/// Default body limit of listeners that take no request bodies (64 KiB).
pub const DEFAULT_MAX_BODY: usize = 64 << 10;

/// Which browser origins may read a set of routes (CORS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// Any origin (`Access-Control-Allow-Origin: *`).
    Any,
    /// These origins only (`https://app.example.com`).
    Origins(Vec<String>),
    /// None: no CORS headers, so browsers refuse cross-origin reads.
    Deny,
}

impl Cors {
    /// Parse a flag value: `*` (any origin), empty or `none` (no origin), or
    /// a comma-separated list of origins (`scheme://host[:port]`, no path).
    /// The error names the bad origin (the caller adds the flag).
    pub fn parse(value: &str) -> Result<Cors, String> {
        let value = value.trim();
        match value {
            "*" => return Ok(Cors::Any),
            "" | "none" => return Ok(Cors::Deny),
            _ => {}
        }
        let mut origins = Vec::new();
        for origin in value.split(',').map(str::trim) {
            let ok = match origin.split_once("://") {
                Some((scheme, host)) => {
                    matches!(scheme, "http" | "https")
                        && !host.is_empty()
                        && !host.contains(['/', '?', '#', '*'])
                        && HeaderValue::from_str(origin).is_ok()
                }
                None => false,
            };
            if !ok {
                return Err(format!(
                    "{origin:?} is not an origin (scheme://host[:port]; or * for any, none for no origin)"
                ));
            }
            origins.push(origin.to_owned());
        }
        Ok(Cors::Origins(origins))
    }

    /// The layer answering preflights and adding CORS headers for routes
    /// read with `methods`; `None` for [`Cors::Deny`]. Allowed request
    /// headers: `authorization`, `content-type`, `x-request-id`; exposed:
    /// `x-request-id`; preflights cached an hour.
    pub fn layer(&self, methods: &[Method]) -> Option<CorsLayer> {
        let origin = match self {
            Cors::Deny => return None,
            Cors::Any => AllowOrigin::any(),
            Cors::Origins(list) => AllowOrigin::list(
                list.iter()
                    .filter_map(|o| HeaderValue::from_str(o).ok())
                    .collect::<Vec<_>>(),
            ),
        };
        Some(
            CorsLayer::new()
                .allow_origin(origin)
                .allow_methods(methods.to_vec())
                .allow_headers([
                    AUTHORIZATION,
                    CONTENT_TYPE,
                    HeaderName::from_static(REQUEST_ID),
                ])
                .expose_headers([HeaderName::from_static(REQUEST_ID)])
                .max_age(Duration::from_secs(3600)),
        )
    }
}

/// `router` with `cors` applied to its routes (for the read/admin split:
/// apply to each part, then merge).
pub fn with_cors<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    cors: &Cors,
    methods: &[Method],
) -> Router<S> {
    match cors.layer(methods) {
        Some(layer) => router.layer(layer),
        None => router,
    }
}

/// Limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest a request may take; then 503 `Timeout`.
    pub timeout: Duration,
    /// Largest request body, bytes; then 413 `PayloadTooLarge`.
    pub max_body: usize,
}

/// Request ids: 16 hex digits, random per process start plus a counter, so
/// two ids of one process never collide and two processes' rarely do.
#[derive(Debug, Clone, Copy, Default)]
pub struct MakeId;

impl MakeRequestId for MakeId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        static BASE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let base = *BASE.get_or_init(|| RandomState::new().build_hasher().finish());
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        // An odd multiplier spreads consecutive ids over the whole range.
        let id = base ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        HeaderValue::from_str(&format!("{id:016x}"))
            .ok()
            .map(RequestId::new)
    }
}

/// Whether a client's `x-request-id` is kept (short, visible ASCII).
fn acceptable_id(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= MAX_REQUEST_ID && b.iter().all(|c| c.is_ascii_graphic())
}

/// Drop a client's `x-request-id` we would not log (a new one is made).
async fn screen_request_id(mut req: Request) -> Request {
    let name = HeaderName::from_static(REQUEST_ID);
    if req.headers().get(&name).is_some_and(|v| !acceptable_id(v)) {
        req.headers_mut().remove(&name);
    }
    req
}

/// Whether a response is already JSON.
fn is_json(resp: &Response) -> bool {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// An error answer that is not JSON (the timeout's empty 503, the body
/// limit's text 413, a 405) as JSON `{"error","message"}`.
fn json_error(limits: Limits, resp: Response) -> Response {
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(&resp) {
        return resp;
    }
    let (error, message) = match status {
        StatusCode::PAYLOAD_TOO_LARGE => (
            "PayloadTooLarge",
            format!("the request body is larger than {} bytes", limits.max_body),
        ),
        StatusCode::SERVICE_UNAVAILABLE => (
            "Timeout",
            format!(
                "the request took longer than {} s",
                limits.timeout.as_secs_f64()
            ),
        ),
        StatusCode::METHOD_NOT_ALLOWED => (
            "MethodNotAllowed",
            "this route does not take that method".to_owned(),
        ),
        other => (
            "Error",
            other.canonical_reason().unwrap_or("error").to_owned(),
        ),
    };
    let (mut parts, _) = resp.into_parts();
    let body = serde_json::json!({ "error": error, "message": message }).to_string();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts
        .headers
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Response::from_parts(parts, Body::from(body)).into_response()
}

/// `router` with the shared layers ([`inner_layers`] then [`outer_layers`]).
/// Apply CORS ([`with_cors`]) to the routes before.
pub fn layers<S: Clone + Send + Sync + 'static>(router: Router<S>, limits: Limits) -> Router<S> {
    outer_layers(inner_layers(router, limits))
}

/// The limits, around each route, outermost first: a non-JSON error made
/// JSON `{"error","message"}`; the timeout (503 `Timeout`); the body limit
/// (413 `PayloadTooLarge`; axum's own default limit off). A service that
/// counts its answers adds its metrics layer after these (outside them), so
/// timeouts count, then [`outer_layers`].
pub fn inner_layers<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    limits: Limits,
) -> Router<S> {
    router
        .layer(RequestBodyLimitLayer::new(limits.max_body))
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            limits.timeout,
        ))
        .layer(axum::middleware::from_fn(
            move |req: Request, next: Next| async move { json_error(limits, next.run(req).await) },
        ))
}

/// The outer layers, outermost first: `Authorization` marked sensitive (no
/// layer logs it); a client's `x-request-id` screened ([`MAX_REQUEST_ID`]),
/// else one made ([`MakeId`]); a trace span `request` at INFO with
/// `method`, `path` and `request_id`, so every log line and trace of the
/// request carries the id (the answer is logged at DEBUG, a 5xx at WARN);
/// the id copied to the answer; compression (gzip, br or zstd by
/// `Accept-Encoding`, for JSON and text answers of 32 bytes or more).
pub fn outer_layers<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    outer_layers_logging_5xx_at(router, Level::WARN)
}

/// [`outer_layers`] with a 5xx answer logged at `level`: the metrics
/// server's only 5xx is `/health`'s 503 while a check fails, which probes
/// poll every few seconds and `/health`'s own checks already explain (the
/// service logs the failure once, when it starts).
pub fn outer_layers_logging_5xx_at<S: Clone + Send + Sync + 'static>(
    router: Router<S>,
    level: Level,
) -> Router<S> {
    router
        .layer(CompressionLayer::new())
        .layer(PropagateRequestIdLayer::new(HeaderName::from_static(
            REQUEST_ID,
        )))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &axum::http::Request<Body>| {
                    let id = req
                        .headers()
                        .get(REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("");
                    tracing::info_span!(
                        "request",
                        method = %req.method(),
                        path = %req.uri().path(),
                        request_id = %id,
                    )
                })
                .on_request(())
                .on_response(DefaultOnResponse::new().level(Level::DEBUG))
                .on_failure(DefaultOnFailure::new().level(level)),
        )
        .layer(SetRequestIdLayer::new(
            HeaderName::from_static(REQUEST_ID),
            MakeId,
        ))
        .layer(axum::middleware::map_request(screen_request_id))
        .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cors_values_parse_or_name_the_bad_origin() {
        assert_eq!(Cors::parse("*"), Ok(Cors::Any));
        assert_eq!(Cors::parse(""), Ok(Cors::Deny));
        assert_eq!(Cors::parse("none"), Ok(Cors::Deny));
        assert_eq!(
            Cors::parse("https://a.example, http://localhost:3000"),
            Ok(Cors::Origins(vec![
                "https://a.example".to_owned(),
                "http://localhost:3000".to_owned()
            ]))
        );
        for bad in [
            "a.example",
            "https://a.example/path",
            "ftp://a",
            "https://*.x",
        ] {
            let e = Cors::parse(bad).expect_err(bad);
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn request_ids_differ_and_only_sane_client_ids_are_kept() {
        let req = axum::http::Request::new(());
        let a = MakeId.make_request_id(&req).expect("id");
        let b = MakeId.make_request_id(&req).expect("id");
        assert_ne!(a.header_value(), b.header_value());
        assert_eq!(a.header_value().len(), 16);
        assert!(acceptable_id(&HeaderValue::from_static("abc-123")));
        assert!(!acceptable_id(&HeaderValue::from_static("a b")));
        assert!(!acceptable_id(&HeaderValue::from_static("")));
        let long = "x".repeat(MAX_REQUEST_ID + 1);
        assert!(!acceptable_id(
            &HeaderValue::from_str(&long).expect("ascii")
        ));
    }
}
