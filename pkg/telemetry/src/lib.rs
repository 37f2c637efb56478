//! Telemetry shared by every skyhouse service: structured logs (pretty or
//! JSON), OpenTelemetry traces over OTLP, the Prometheus `/metrics` +
//! `/health` endpoint, and the shutdown token with its bounded grace period.
#![deny(missing_docs)]

pub mod http;
mod otel;
mod shutdown;

pub use otel::{init, validate_otlp_endpoint, LogFormat, Telemetry, TelemetryConfig};
pub use shutdown::{shutdown_on_signals, Pending, DEFAULT_SHUTDOWN_GRACE, EXIT_GRACE_PASSED};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tokio::net::TcpListener;

pub use tokio_util::sync::CancellationToken;

/// Log to standard error, filtered by `RUST_LOG` (default `info`), without
/// traces (tests; the binary calls [`init`]). Standard output stays free for
/// command output such as `repo ls` JSON lines. Calling it twice is harmless.
pub fn init_logging() {
    // No OTLP endpoint: nothing can fail and the guard holds no exporter.
    let _ = init(&TelemetryConfig::default());
}

/// Install the process-wide Prometheus recorder (once; later calls return
/// the same handle). Histograms render as summaries with these quantiles.
pub fn install_metrics() -> PrometheusHandle {
    static HANDLE: std::sync::OnceLock<PrometheusHandle> = std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_quantiles(&[0.5, 0.9, 0.99, 1.0])
                .expect("static quantiles are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder already installed (a test harness): keep ours
            // for rendering; metrics then go to the other one.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

/// Readiness checks by name: `/health` answers 200 when every check is
/// `true`, 503 otherwise, with the checks as JSON.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<Mutex<BTreeMap<&'static str, bool>>>);

impl Health {
    /// Set check `name`.
    pub fn set(&self, name: &'static str, ok: bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, ok);
    }

    /// Whether every check passes (and there is at least one).
    pub fn ready(&self) -> bool {
        let checks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        !checks.is_empty() && checks.values().all(|ok| *ok)
    }

    fn json(&self) -> String {
        let checks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let body: Vec<String> = checks.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        format!(
            "{{\"ready\":{},\"checks\":{{{}}}}}",
            !checks.is_empty() && checks.values().all(|ok| *ok),
            body.join(",")
        )
    }
}

/// The `/metrics` and `/health` listener's limits: 10 s, 64 KiB.
pub const METRICS_LIMITS: http::Limits = http::Limits {
    timeout: std::time::Duration::from_secs(10),
    max_body: http::DEFAULT_MAX_BODY,
};

/// The `/metrics` and `/health` routes, without layers (to merge; see
/// [`serve_metrics`] for the listener).
pub fn metrics_router(handle: PrometheusHandle, health: Health) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move { handle.render() }
            }),
        )
        .route(
            "/health",
            get(move || {
                let health = health.clone();
                async move {
                    let status = if health.ready() {
                        StatusCode::OK
                    } else {
                        StatusCode::SERVICE_UNAVAILABLE
                    };
                    (
                        status,
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        health.json(),
                    )
                }
            }),
        )
}

/// Serve `/metrics` and `/health` on `listener` until `shutdown`, with the
/// shared HTTP layers ([`http::inner_layers`], [`METRICS_LIMITS`], then
/// [`http::outer_layers_logging_5xx_at`] DEBUG: a probe polling `/health`
/// while it answers 503 writes no log line per poll) and no CORS (browsers
/// of other origins cannot read them).
pub async fn serve_metrics(
    listener: TcpListener,
    handle: PrometheusHandle,
    health: Health,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(
        listener,
        http::outer_layers_logging_5xx_at(
            http::inner_layers(metrics_router(handle, health), METRICS_LIMITS),
            tracing::Level::DEBUG,
        ),
    )
    .with_graceful_shutdown(shutdown.cancelled_owned())
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn polling_an_unready_health_logs_no_warning_per_request() {
        let logs = Captured::default();
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        // This test's thread (the runtime is single-threaded): the server's
        // requests are handled here too.
        let _guard = tracing::subscriber::set_default(subscriber);
        let handle = install_metrics();
        let health = Health::default();
        health.set("clickhouse", false);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_metrics(listener, handle, health, stop.clone()));
        let client = reqwest::Client::new();
        for _ in 0..3 {
            let r = client
                .get(format!("http://{addr}/health"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 503);
        }
        tracing::warn!("the capture works");
        stop.cancel();
        server.await.unwrap().unwrap();
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        let warnings: Vec<&str> = text.lines().filter(|l| l.contains("WARN")).collect();
        assert_eq!(warnings.len(), 1, "{text}");
        assert!(warnings[0].contains("the capture works"), "{text}");
    }

    #[tokio::test]
    async fn health_and_metrics_are_served() {
        let handle = install_metrics();
        metrics::counter!("skyhouse_test_total").increment(3);
        let health = Health::default();
        health.set("clickhouse", true);
        health.set("source", false);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve_metrics(
            listener,
            handle,
            health.clone(),
            stop.clone(),
        ));
        let base = format!("http://{addr}");
        let r = reqwest::get(format!("{base}/health")).await.unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(
            r.text().await.unwrap(),
            r#"{"ready":false,"checks":{"clickhouse":true,"source":false}}"#
        );
        health.set("source", true);
        let r = reqwest::get(format!("{base}/health")).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        let text = reqwest::get(format!("{base}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("skyhouse_test_total 3"), "{text}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }
}
