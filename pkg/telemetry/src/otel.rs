//! Logs (pretty or JSON lines on stderr) and, when a collector is
//! configured, OpenTelemetry traces: every `tracing` span becomes an OTLP
//! span, batched and posted as protobuf to `ENDPOINT/v1/traces`.

use std::fmt;
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// How log lines are written to standard error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable, one line per event.
    #[default]
    Pretty,
    /// One JSON object per line (`timestamp`, `level`, `fields`, `target`,
    /// `spans`): for log shippers.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" => Ok(LogFormat::Pretty),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("{other:?} is not a log format (pretty or json)")),
        }
    }
}

/// What [`init`] sets up.
#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// Log line format.
    pub log_format: LogFormat,
    /// OTLP/HTTP collector base URL (`OTEL_EXPORTER_OTLP_ENDPOINT`, e.g.
    /// `http://localhost:4318`); traces go to `…/v1/traces`. None: no traces.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the spans (e.g. `skyhouse-indexer`).
    pub service_name: String,
}

/// Check an OTLP endpoint before any I/O: an http(s) URL with a host.
/// The error is one line naming `flag`.
pub fn validate_otlp_endpoint(flag: &str, url: &str) -> Result<(), String> {
    match url::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        Ok(u) => Err(format!(
            "{flag}: {:?} must be an http:// or https:// URL with a host",
            u.scheme()
        )),
        Err(e) => Err(format!("{flag}: not a URL: {e}")),
    }
}

/// Keeps the trace pipeline alive; dropping it sends the spans still
/// batched (waiting at most a few seconds for the collector).
#[must_use = "dropping it at once stops the trace export"]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry")
            .field("traces", &self.provider.is_some())
            .finish()
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        if let Some(p) = self.provider.take() {
            if let Err(e) = p.shutdown() {
                eprintln!("skyhouse: could not send the last traces: {e}");
            }
        }
    }
}

/// Install the process-wide subscriber: logs filtered by `RUST_LOG`
/// (default `info`) in `cfg.log_format`, plus OTLP traces when
/// `cfg.otlp_endpoint` is set. Installing twice keeps the first.
pub fn init(cfg: &TelemetryConfig) -> Result<Telemetry, String> {
    let filter = || EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let logs = match cfg.log_format {
        LogFormat::Pretty => fmt.boxed(),
        LogFormat::Json => fmt.json().flatten_event(false).boxed(),
    };
    let (provider, traces) = match &cfg.otlp_endpoint {
        None => (None, None),
        Some(endpoint) => {
            validate_otlp_endpoint("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)?;
            let provider = tracer_provider(endpoint, &cfg.service_name)?;
            let tracer = provider.tracer("skyhouse");
            let layer = tracing_opentelemetry::layer()
                .with_tracer(tracer)
                .with_filter(filter());
            (Some(provider), Some(layer))
        }
    };
    let _ = tracing_subscriber::registry()
        .with(logs.with_filter(filter()))
        .with(traces)
        .try_init();
    Ok(Telemetry { provider })
}

fn tracer_provider(endpoint: &str, service: &str) -> Result<SdkTracerProvider, String> {
    let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
    let client = reqwest::blocking::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("OTLP HTTP client: {e}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(BlockingHttp(client))
        .with_endpoint(url)
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|e| format!("OTEL_EXPORTER_OTLP_ENDPOINT: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder_empty()
                .with_service_name(service.to_owned())
                .build(),
        )
        .build())
}

/// How long one export may take before it is dropped (spans are
/// best-effort: a dead collector never stalls the service).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// The exporter's HTTP client: reqwest's blocking client. The SDK exports
/// from its own batch thread (no async runtime there), which is what the
/// blocking client needs.
#[derive(Debug)]
struct BlockingHttp(reqwest::blocking::Client);

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for BlockingHttp {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let mut req = self.0.request(parts.method, parts.uri.to_string());
        for (name, value) in &parts.headers {
            req = req.header(name, value);
        }
        let resp = req.body(body.to_vec()).send()?;
        let mut out = http::Response::builder().status(resp.status());
        for (name, value) in resp.headers() {
            out = out.header(name, value);
        }
        // The collector's answer is small; cap what is read of it.
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut std::io::Read::take(resp, 64 << 10), &mut body)?;
        Ok(out.body(bytes::Bytes::from(body))?)
    }
}
