//! Telemetry shared by every skyhouse service: structured logs now; metrics,
//! traces and the shutdown token join as the services that need them land.
#![deny(missing_docs)]

use tracing_subscriber::EnvFilter;

/// Log to standard error, filtered by `RUST_LOG` (default `info`). Standard
/// output stays free for command output such as `repo ls` JSON lines. Calling
/// it twice is harmless.
pub fn init_logging() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
