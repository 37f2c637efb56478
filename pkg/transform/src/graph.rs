//! `app.bsky.graph.{follow,block,list,listitem,listblock,starterpack,verification}`.

use skyhouse_atproto::cbor::{Map, Value};

use crate::rows::{
    BlockRow, FollowRow, ListBlockRow, ListItemRow, ListRow, StarterPackRow, VerificationRow,
};
use crate::shape::{
    as_map, at_uri, did, field, handle, opt_array, opt_blob_cid, opt_ref_uri, opt_string, req_fmt,
    req_str, self_labels, Check, Loc,
};

/// Lexicon: `subject` (DID) and `createdAt` required, `via` (strongRef)
/// optional. Follows written before the March 2023 schema change have
/// `subject: {did, declarationCid}` instead; they still sit in old
/// repositories, so the legacy form is read too.
pub(crate) fn follow(m: &Map<'_>, mut row: FollowRow) -> Check<FollowRow> {
    let at = Loc::Root;
    row.subject_did = match field(m, "subject") {
        Some(Value::Map(legacy)) => req_fmt(legacy, &at.key("subject"), "did", did)?,
        _ => req_fmt(m, &at, "subject", did)?,
    };
    row.via_uri = opt_ref_uri(m, &at, "via")?;
    Ok(row)
}

/// Lexicon: `subject` (DID) and `createdAt` required.
pub(crate) fn block(m: &Map<'_>, mut row: BlockRow) -> Check<BlockRow> {
    row.subject_did = req_fmt(m, &Loc::Root, "subject", did)?;
    Ok(row)
}

/// Lexicon: `name`, `purpose`, `createdAt` required.
pub(crate) fn list(m: &Map<'_>, mut row: ListRow) -> Check<ListRow> {
    let at = Loc::Root;
    row.name = req_str(m, &at, "name")?.to_owned();
    row.purpose = req_str(m, &at, "purpose")?.to_owned();
    row.description = opt_string(m, &at, "description")?;
    row.avatar_cid = opt_blob_cid(m, &at, "avatar")?;
    row.labels = self_labels(m, &at)?;
    Ok(row)
}

/// Lexicon: `subject` (DID), `list` (AT-URI), `createdAt` required.
pub(crate) fn list_item(m: &Map<'_>, mut row: ListItemRow) -> Check<ListItemRow> {
    let at = Loc::Root;
    row.list_uri = req_fmt(m, &at, "list", at_uri)?;
    row.subject_did = req_fmt(m, &at, "subject", did)?;
    Ok(row)
}

/// Lexicon: `subject` (AT-URI of a list) and `createdAt` required.
pub(crate) fn list_block(m: &Map<'_>, mut row: ListBlockRow) -> Check<ListBlockRow> {
    row.subject_list_uri = req_fmt(m, &Loc::Root, "subject", at_uri)?;
    Ok(row)
}

/// Lexicon: `name`, `list` (AT-URI), `createdAt` required; `feeds[]` are
/// `{uri}` objects.
pub(crate) fn starter_pack(m: &Map<'_>, mut row: StarterPackRow) -> Check<StarterPackRow> {
    let at = Loc::Root;
    row.name = req_str(m, &at, "name")?.to_owned();
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
pub(crate) fn verification(m: &Map<'_>, mut row: VerificationRow) -> Check<VerificationRow> {
    let at = Loc::Root;
    row.subject_did = req_fmt(m, &at, "subject", did)?;
    row.handle = req_fmt(m, &at, "handle", handle)?;
    row.display_name = req_str(m, &at, "displayName")?.to_owned();
    Ok(row)
}
