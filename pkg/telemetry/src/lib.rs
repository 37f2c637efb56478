//! Telemetry shared by every skyhouse service: structured logs now; metrics,
//! traces and the shutdown token join as the services that need them land.
#![deny(missing_docs)]
