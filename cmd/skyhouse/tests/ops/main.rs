//! Operations checks: what operators use (dashboards/, env/, docker/, README) must match
//! what the code exports and reads.
//!
//! - `metrics`: runs each real service with a dashboard (indexer, backfill worker, search,
//!   feedgen, monitor; configured from env/*.env) fresh and idle, and checks that every
//!   metric, label and quantile its dashboard queries is in its first scrape; and runs the
//!   indexer on the bundled relay capture served over a WebSocket, checking what its
//!   metrics count, that it exported every series from the start, and `/health`.
//! - `env`: every variable in env/*.env is one the code reads, with the code's default;
//!   every variable the code reads is in env/*.env and README.md.
//! - `telemetry`: the real indexer with JSON logs and an OTLP endpoint: every log line
//!   is JSON, and its spans reach a collector on loopback.
//! - `deploy`: docker/compose.yaml, prometheus.yml, Grafana provisioning and the
//!   Dockerfile agree with each other and with the workspace.
//! - `sql_layer`: no crate but pkg/store writes SQL or reaches the ClickHouse client.
//! - `promtool`: every dashboard's PromQL, docker/prometheus.yml and any rule file under
//!   docker/ pass Prometheus's `promtool` checks (Debian `prometheus`, from `just deps`).

mod deploy;
mod env;
mod metrics;
mod promtool;
mod sql_layer;
mod telemetry;
mod util;
