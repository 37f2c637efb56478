//! `app.bsky.graph.{follow,block,list,listitem,listblock,starterpack,verification}`.

use skyhouse_atproto::cbor::{Map, Value};

use crate::rows::{blocks, follows, list_blocks, list_items, lists, starter_packs, verifications};
use crate::shape::{
    as_map, at_uri, did, field, handle, opt_array, opt_blob_cid, opt_ref_uri, opt_string, req_fmt,
    req_str, self_labels, Check, Loc,
};

/// Lexicon: `subject` (DID) and `createdAt` required, `via` (strongRef)
/// optional. Follows written before the March 2023 schema change have
/// `subject: {did, declarationCid}` instead; they still sit in old
/// repositories, so the legacy form is read too.
pub(crate) fn follow<'v>(m: &'v Map<'_>, mut row: follows::Ref<'v>) -> Check<follows::Ref<'v>> {
    let at = Loc::Root;
    row.subject_did = match field(m, "subject") {
        Some(Value::Map(legacy)) => req_fmt(legacy, &at.key("subject"), "did", did)?,
        _ => req_fmt(m, &at, "subject", did)?,
    };
    row.via_uri = opt_ref_uri(m, &at, "via")?;
    Ok(row)
}

/// Lexicon: `subject` (DID) and `createdAt` required.
pub(crate) fn block<'v>(m: &'v Map<'_>, mut row: blocks::Ref<'v>) -> Check<blocks::Ref<'v>> {
    row.subject_did = req_fmt(m, &Loc::Root, "subject", did)?;
    Ok(row)
}

/// Lexicon: `name`, `purpose`, `createdAt` required.
pub(crate) fn list<'v>(m: &'v Map<'_>, mut row: lists::Ref<'v>) -> Check<lists::Ref<'v>> {
    let at = Loc::Root;
    row.name = req_str(m, &at, "name")?.into();
    row.purpose = req_str(m, &at, "purpose")?.into();
    row.description = opt_string(m, &at, "description")?;
    row.avatar_cid = opt_blob_cid(m, &at, "avatar")?;
    row.labels = self_labels(m, &at)?;
    Ok(row)
}

/// Lexicon: `subject` (DID), `list` (AT-URI), `createdAt` required.
pub(crate) fn list_item<'v>(
    m: &'v Map<'_>,
    mut row: list_items::Ref<'v>,
) -> Check<list_items::Ref<'v>> {
    let at = Loc::Root;
    row.list_uri = req_fmt(m, &at, "list", at_uri)?;
    row.subject_did = req_fmt(m, &at, "subject", did)?;
    Ok(row)
}

/// Lexicon: `subject` (AT-URI of a list) and `createdAt` required.
pub(crate) fn list_block<'v>(
    m: &'v Map<'_>,
    mut row: list_blocks::Ref<'v>,
) -> Check<list_blocks::Ref<'v>> {
    row.subject_list_uri = req_fmt(m, &Loc::Root, "subject", at_uri)?;
    Ok(row)
}

/// Lexicon: `name`, `list` (AT-URI), `createdAt` required; `feeds[]` are
/// `{uri}` objects.
pub(crate) fn starter_pack<'v>(
    m: &'v Map<'_>,
    mut row: starter_packs::Ref<'v>,
) -> Check<starter_packs::Ref<'v>> {
    let at = Loc::Root;
    row.name = req_str(m, &at, "name")?.into();
    row.description = opt_string(m, &at, "description")?;
    row.list_uri = req_fmt(m, &at, "list", at_uri)?;
    let feeds_at = at.key("feeds");
    let feeds = opt_array(m, &at, "feeds")?;
    row.feeds.reserve_exact(feeds.len());
    for (i, feed) in feeds.iter().enumerate() {
        let feed_at = feeds_at.index(i);
        row.feeds
            .push(req_fmt(as_map(feed, &feed_at)?, &feed_at, "uri", at_uri)?);
    }
    Ok(row)
}

/// Lexicon: `subject` (DID), `handle`, `displayName`, `createdAt` required.
pub(crate) fn verification<'v>(
    m: &'v Map<'_>,
    mut row: verifications::Ref<'v>,
) -> Check<verifications::Ref<'v>> {
    let at = Loc::Root;
    row.subject_did = req_fmt(m, &at, "subject", did)?;
    row.handle = req_fmt(m, &at, "handle", handle)?;
    row.display_name = req_str(m, &at, "displayName")?.into();
    Ok(row)
}
