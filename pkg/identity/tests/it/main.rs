//! skyhouse-identity against real servers: the PLC directory of the
//! reference network (`@atproto/dev-env`, through skyhouse-testkit) and a
//! did:web host served by axum on 127.0.0.1.

mod plc;
mod web;
