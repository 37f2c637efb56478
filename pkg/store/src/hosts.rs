//! The monitor's host health snapshots (`host_checks`, migration 0007):
//! what other services read of them.

use crate::sql::{self, render, Db, Rendered};
use crate::{ClickHouse, StoreError};

/// The table the monitor writes its snapshots to.
pub const HOST_CHECKS: &str = "host_checks";

/// Hosts checked before (any time), `(url, kind)` in URL order, at most `max`.
pub async fn known_hosts(ch: &ClickHouse, max: usize) -> Result<Vec<(String, String)>, StoreError> {
    let sql = render(ch.db(), "known_hosts", &[("limit", &max.to_string())])?;
    ch.fetch_all("known hosts", &sql).await
}

/// Hosts whose newest check at or after `since` (Unix seconds) found them
/// down, in URL order.
pub async fn unhealthy_hosts(ch: &ClickHouse, since: u32) -> Result<Vec<String>, StoreError> {
    let sql = render(ch.db(), "unhealthy_hosts", &[("since", &since.to_string())])?;
    ch.fetch_all("unhealthy hosts", &sql).await
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    sql::sample(out, db, "known_hosts", &[("limit", "1000")])?;
    sql::sample(out, db, "unhealthy_hosts", &[("since", "1714521600")])?;
    Ok(())
}
