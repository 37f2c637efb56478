//! `identities` (DID → handle) as the periodic re-verification walks it.
//!
//! The walk goes through the table in key order, one window of the DID
//! space at a time ([`windows`]): each step reads at most one window, never
//! the rest of the table (ClickHouse 18.16 reads every granule after the
//! keyset bound of an `ORDER BY … LIMIT`, so an unbounded step would).

use serde::Deserialize;

use crate::sql::{self, literal, render, Rendered};
use crate::{ClickHouse, StoreError};

/// An `identities` row as stored (after `FINAL`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct StoredIdentity {
    /// The DID.
    pub did: String,
    /// Its handle (`handle.invalid` when it did not verify).
    pub handle: String,
    /// When the information was had (Unix microseconds; older rows: a
    /// firehose `seq`).
    pub version: u64,
}

/// The base32 alphabet of `did:plc` identifiers, in byte order.
const PLC_ALPHABET: &[u8] = b"234567abcdefghijklmnopqrstuvwxyz";

/// The windows of the walk, in key order: `(after, before)` pairs (both
/// exclusive; no DID equals a bound) covering every string that starts with
/// `did:`. `did:plc` identifiers are uniformly random base32, so splitting
/// on their first two characters gives 1,024 windows of about equal size
/// (≈ 30k DIDs each at 30M); the last window also holds every `did:web`.
pub fn windows() -> Vec<(String, String)> {
    let mut bounds = vec![String::new()];
    for a in PLC_ALPHABET {
        for b in PLC_ALPHABET {
            bounds.push(format!("did:plc:{}{}", *a as char, *b as char));
        }
    }
    // Past every DID: `e` sorts after `did:…`.
    bounds.push("e".to_string());
    bounds
        .windows(2)
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect()
}

/// Up to `limit` identities with `after < did < before`, in DID order.
pub async fn window(
    ch: &ClickHouse,
    after: &str,
    before: &str,
    limit: usize,
) -> Result<Vec<StoredIdentity>, StoreError> {
    let sql = render(
        ch.db(),
        "identities_window",
        &[
            ("after", &literal(after)),
            ("before", &literal(before)),
            ("limit", &limit.max(1).to_string()),
        ],
    )?;
    ch.fetch_all("identities window", &sql).await
}

/// The stored identity of `did`, if any.
pub async fn identity_of(ch: &ClickHouse, did: &str) -> Result<Option<StoredIdentity>, StoreError> {
    let sql = render(ch.db(), "identity_of", &[("did", &literal(did))])?;
    let mut rows: Vec<StoredIdentity> = ch.fetch_all("identity", &sql).await?;
    Ok(rows.pop())
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: sql::Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    sql::sample(
        out,
        db,
        "identities_window",
        &[
            ("after", "'did:plc:aa'"),
            ("before", "'did:plc:ab'"),
            ("limit", "1000"),
        ],
    )?;
    sql::sample(out, db, "identity_of", &[("did", "'did:plc:alice'")])?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_did_space_in_order() {
        let w = windows();
        assert_eq!(w.len(), 32 * 32 + 1);
        assert_eq!(w[0].0, "");
        assert_eq!(w[w.len() - 1].1, "e");
        for pair in w.windows(2) {
            assert_eq!(pair[0].1, pair[1].0, "windows touch");
            assert!(pair[0].0 < pair[0].1 && pair[0].1 < pair[1].1);
        }
        // Every DID falls in exactly one window.
        for did in [
            "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "did:plc:222222222222222222222222",
            "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz",
            "did:web:example.com",
            "did:key:z6Mk",
        ] {
            let n = w
                .iter()
                .filter(|(a, b)| a.as_str() < did && did < b.as_str())
                .count();
            assert_eq!(n, 1, "{did}");
        }
    }
}
