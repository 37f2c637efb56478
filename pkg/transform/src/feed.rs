//! `app.bsky.feed.{like,repost,generator,threadgate,postgate}`.

use skyhouse_atproto::cbor::Map;

use std::borrow::Cow;

use crate::rows::{feed_generators, likes, postgates, reposts, threadgates};
use crate::shape::{
    as_map, at_uri, did, each_str, field, opt_array, opt_blob_cid, opt_bool, opt_ref_uri,
    opt_string, req_fmt, req_map, req_str, self_labels, strong_ref, uri_did, Check, Loc,
};

/// `subject` (strongRef) and optional `via` (strongRef) of a like or a repost:
/// `(subject_uri, subject_cid, subject_did, via_uri)`.
type SubjectVia<'v> = (Cow<'v, str>, Cow<'v, str>, Cow<'v, str>, Cow<'v, str>);

fn subject_via<'v>(m: &'v Map<'_>) -> Check<SubjectVia<'v>> {
    let at = Loc::Root;
    let (uri, cid) = strong_ref(req_map(m, &at, "subject")?, &at.key("subject"))?;
    let via = opt_ref_uri(m, &at, "via")?;
    Ok((uri.into(), cid.into(), uri_did(uri).into(), via))
}

/// Lexicon: `subject` (strongRef) and `createdAt` required, `via` optional.
pub(crate) fn like<'v>(m: &'v Map<'_>, mut row: likes::Ref<'v>) -> Check<likes::Ref<'v>> {
    (
        row.subject_uri,
        row.subject_cid,
        row.subject_did,
        row.via_uri,
    ) = subject_via(m)?;
    Ok(row)
}

/// Lexicon: as a like.
pub(crate) fn repost<'v>(m: &'v Map<'_>, mut row: reposts::Ref<'v>) -> Check<reposts::Ref<'v>> {
    (
        row.subject_uri,
        row.subject_cid,
        row.subject_did,
        row.via_uri,
    ) = subject_via(m)?;
    Ok(row)
}

/// Lexicon: `did`, `displayName`, `createdAt` required.
pub(crate) fn generator<'v>(
    m: &'v Map<'_>,
    mut row: feed_generators::Ref<'v>,
) -> Check<feed_generators::Ref<'v>> {
    let at = Loc::Root;
    row.service_did = req_fmt(m, &at, "did", did)?;
    row.display_name = req_str(m, &at, "displayName")?.into();
    row.description = opt_string(m, &at, "description")?;
    row.avatar_cid = opt_blob_cid(m, &at, "avatar")?;
    row.accepts_interactions = u8::from(opt_bool(m, &at, "acceptsInteractions")? == Some(true));
    row.content_mode = opt_string(m, &at, "contentMode")?;
    row.labels = self_labels(m, &at)?;
    Ok(row)
}

const THREADGATE_RULE: &str = "app.bsky.feed.threadgate#";
const LIST_RULE: &str = "app.bsky.feed.threadgate#listRule";

/// Lexicon: `post` and `createdAt` required; `allow` is an array of an open
/// union of rules, where absent (anybody may reply) differs from empty (nobody).
pub(crate) fn threadgate<'v>(
    m: &'v Map<'_>,
    mut row: threadgates::Ref<'v>,
) -> Check<threadgates::Ref<'v>> {
    let at = Loc::Root;
    row.post_uri = req_fmt(m, &at, "post", at_uri)?;
    if field(m, "allow").is_some() {
        row.allow_set = 1;
        let allow_at = at.key("allow");
        let rules = opt_array(m, &at, "allow")?;
        row.allow.reserve_exact(rules.len());
        for (i, rule) in rules.iter().enumerate() {
            let rule_at = allow_at.index(i);
            let rule = as_map(rule, &rule_at)?;
            let t = req_str(rule, &rule_at, "$type")?;
            if t == LIST_RULE {
                let list = req_str(rule, &rule_at, "list")?;
                at_uri(list, &rule_at.key("list"))?;
                row.allow.push(format!("list:{list}").into());
            } else {
                row.allow
                    .push(t.strip_prefix(THREADGATE_RULE).unwrap_or(t).into());
            }
        }
    }
    let hidden = opt_array(m, &at, "hiddenReplies")?;
    row.hidden_replies.reserve_exact(hidden.len());
    each_str(hidden, &at.key("hiddenReplies"), at_uri, |s| {
        row.hidden_replies.push(s.into())
    })?;
    Ok(row)
}

const DISABLE_RULE: &str = "app.bsky.feed.postgate#disableRule";

/// Lexicon: `post` and `createdAt` required; `embeddingRules` is an array of
/// an open union (only `#disableRule` is known).
pub(crate) fn postgate<'v>(
    m: &'v Map<'_>,
    mut row: postgates::Ref<'v>,
) -> Check<postgates::Ref<'v>> {
    let at = Loc::Root;
    row.post_uri = req_fmt(m, &at, "post", at_uri)?;
    let detached = opt_array(m, &at, "detachedEmbeddingUris")?;
    row.detached_embedding_uris.reserve_exact(detached.len());
    each_str(detached, &at.key("detachedEmbeddingUris"), at_uri, |s| {
        row.detached_embedding_uris.push(s.into())
    })?;
    let rules_at = at.key("embeddingRules");
    for (i, rule) in opt_array(m, &at, "embeddingRules")?.iter().enumerate() {
        let rule_at = rules_at.index(i);
        let t = req_str(as_map(rule, &rule_at)?, &rule_at, "$type")?;
        if t == DISABLE_RULE {
            row.disable_embedding = 1;
        }
    }
    Ok(row)
}
