//! skyhouse-identity against real servers: the PLC directory and PDS of the
//! reference network (`@atproto/dev-env`, through skyhouse-testkit), a
//! did:web host served by axum on 127.0.0.1, and a nameserver on loopback;
//! and the DNS response parser against a model.

mod dns;
mod handles;
mod plc;
mod web;
