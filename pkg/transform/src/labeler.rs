//! `app.bsky.labeler.service` → `labeler_services`.

use skyhouse_atproto::cbor::Map;

use crate::rows::labeler_services;
use crate::shape::{any, each_str, req_array, req_map, rkey_self, Check, Loc};

/// Lexicon: `policies` (with `labelValues`) and `createdAt` required; rkey `self`.
pub(crate) fn service<'v>(
    m: &'v Map<'_>,
    mut row: labeler_services::Ref<'v>,
) -> Check<labeler_services::Ref<'v>> {
    rkey_self(row.rkey)?;
    let at = Loc::Root;
    let policies_at = at.key("policies");
    let policies = req_map(m, &at, "policies")?;
    let values = req_array(policies, &policies_at, "labelValues")?;
    row.labels.reserve_exact(values.len());
    each_str(values, &policies_at.key("labelValues"), any, |s| {
        row.labels.push(s.into())
    })?;
    Ok(row)
}
