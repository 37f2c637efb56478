//! The resolver's metrics (names as in the README).
//!
//! | name | type | labels | meaning |
//! |---|---|---|---|
//! | `skyhouse_identity_dns_queries_total` | counter | `result` (`records`, `nxdomain`, `timeout`, `error`) | `_atproto` TXT lookups |
//! | `skyhouse_identity_handle_resolutions_total` | counter | `via` (`dns`, `http`), `result` (`did`, `no_did`, `unknown`) | handles resolved over the network (cache misses) |
//! | `skyhouse_identity_checks_total` | counter | `status` (`valid`, `invalid`, `unknown`) | DID → handle claims checked |

use metrics::{counter, describe_counter, Unit};

use crate::dns::{DnsError, TxtAnswer};
use crate::{HandleAnswer, HandleResolution, HandleStatus};

/// Describe every metric once (idempotent) and export each series at 0;
/// the services call it at start.
pub fn describe_metrics() {
    for result in ["records", "nxdomain", "timeout", "error"] {
        counter!("skyhouse_identity_dns_queries_total", "result" => result).increment(0);
    }
    for via in ["dns", "http"] {
        for result in ["did", "no_did", "unknown"] {
            counter!(
                "skyhouse_identity_handle_resolutions_total",
                "via" => via,
                "result" => result
            )
            .increment(0);
        }
    }
    for status in ["valid", "invalid", "unknown"] {
        counter!("skyhouse_identity_checks_total", "status" => status).increment(0);
    }
    describe_counter!(
        "skyhouse_identity_dns_queries_total",
        Unit::Count,
        "_atproto TXT lookups, by result"
    );
    describe_counter!(
        "skyhouse_identity_handle_resolutions_total",
        Unit::Count,
        "Handles resolved over the network, by method and result"
    );
    describe_counter!(
        "skyhouse_identity_checks_total",
        Unit::Count,
        "DID to handle claims checked, by outcome"
    );
}

pub(crate) fn dns_query(answer: &Result<TxtAnswer, DnsError>) {
    let result = match answer {
        Ok(TxtAnswer::Records(_)) => "records",
        Ok(TxtAnswer::NxDomain) => "nxdomain",
        Err(DnsError::Timeout { .. }) => "timeout",
        Err(_) => "error",
    };
    counter!("skyhouse_identity_dns_queries_total", "result" => result).increment(1);
}

pub(crate) fn handle_resolution(found: &HandleResolution) {
    let result = match found.answer {
        HandleAnswer::Did(_) => "did",
        HandleAnswer::NoDid => "no_did",
        HandleAnswer::Unknown(_) => "unknown",
    };
    counter!(
        "skyhouse_identity_handle_resolutions_total",
        "via" => found.via.as_str(),
        "result" => result
    )
    .increment(1);
}

pub(crate) fn identity(status: HandleStatus) {
    counter!("skyhouse_identity_checks_total", "status" => status.as_str()).increment(1);
}
