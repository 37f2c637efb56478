//! `app.bsky.feed.post` → `posts`.

use skyhouse_atproto::cbor::{Map, Value};

use crate::rows::posts::Ref as PostRow;
use crate::shape::{
    any, as_map, did, each_str, field, opt_array, opt_map, push_unique, req_array, req_map,
    req_str, self_labels, strong_ref, Check, Loc,
};

const FACET_MENTION: &str = "app.bsky.richtext.facet#mention";
const FACET_LINK: &str = "app.bsky.richtext.facet#link";
const FACET_TAG: &str = "app.bsky.richtext.facet#tag";

/// Lexicon: `text` and `createdAt` required; `reply` needs `root` and
/// `parent` strongRefs; `embed` and facet features are open unions (unknown
/// `$type`s are kept as `embed_kind` or skipped).
pub(crate) fn post<'v>(m: &'v Map<'_>, mut row: PostRow<'v>) -> Check<PostRow<'v>> {
    let at = Loc::Root;
    row.text = req_str(m, &at, "text")?.into();

    let langs = opt_array(m, &at, "langs")?;
    row.langs.reserve_exact(langs.len());
    each_str(langs, &at.key("langs"), any, |s| row.langs.push(s.into()))?;

    if let Some(reply) = opt_map(m, &at, "reply")? {
        let reply_at = at.key("reply");
        let root_at = reply_at.key("root");
        let (uri, cid) = strong_ref(req_map(reply, &reply_at, "root")?, &root_at)?;
        row.reply_root_uri = uri.into();
        row.reply_root_cid = cid.into();
        let parent_at = reply_at.key("parent");
        let (uri, cid) = strong_ref(req_map(reply, &reply_at, "parent")?, &parent_at)?;
        row.reply_parent_uri = uri.into();
        row.reply_parent_cid = cid.into();
    }

    if let Some(embed) = opt_map(m, &at, "embed")? {
        embed_fields(embed, &at.key("embed"), &mut row)?;
    }

    facets(m, &at, &mut row)?;
    entities(m, &mut row);

    each_str(opt_array(m, &at, "tags")?, &at.key("tags"), any, |s| {
        push_unique(&mut row.tags, s)
    })?;

    row.labels = self_labels(m, &at)?;
    Ok(row)
}

/// The short kind of an embed `$type`: `app.bsky.embed.images` → `images`
/// (a `#main` suffix is dropped); a foreign `$type` is kept whole.
fn embed_kind(t: &str) -> &str {
    let t = t.strip_suffix("#main").unwrap_or(t);
    t.strip_prefix("app.bsky.embed.").unwrap_or(t)
}

fn embed_fields<'v>(embed: &'v Map<'_>, at: &Loc<'_>, row: &mut PostRow<'v>) -> Check<()> {
    let kind = embed_kind(req_str(embed, at, "$type")?);
    row.embed_kind = kind.into();
    match kind {
        "record" => quote(embed, at, row),
        "recordWithMedia" => {
            let record_at = at.key("record");
            quote(req_map(embed, at, "record")?, &record_at, row)?;
            let media_at = at.key("media");
            let media = req_map(embed, at, "media")?;
            let media_kind = embed_kind(req_str(media, &media_at, "$type")?);
            media_fields(media_kind, media, &media_at, row)
        }
        media_kind => media_fields(media_kind, embed, at, row),
    }
}

/// `app.bsky.embed.record`: `{record: strongRef}`.
fn quote<'v>(embed: &'v Map<'_>, at: &Loc<'_>, row: &mut PostRow<'v>) -> Check<()> {
    let (uri, cid) = strong_ref(req_map(embed, at, "record")?, &at.key("record"))?;
    row.quote_uri = uri.into();
    row.quote_cid = cid.into();
    Ok(())
}

fn media_fields<'v>(
    kind: &str,
    media: &'v Map<'_>,
    at: &Loc<'_>,
    row: &mut PostRow<'v>,
) -> Check<()> {
    match kind {
        "images" => row.image_count = count(req_array(media, at, "images")?),
        "gallery" => row.image_count = count(req_array(media, at, "items")?),
        "external" => {
            let external_at = at.key("external");
            let external = req_map(media, at, "external")?;
            row.external_uri = req_str(external, &external_at, "uri")?.into();
        }
        // video (nothing to extract) and foreign media types
        _ => {}
    }
    Ok(())
}

fn count(items: &[Value<'_>]) -> u8 {
    u8::try_from(items.len()).unwrap_or(u8::MAX)
}

/// `facets[].features[]`: mentions (DID checked), links, tags.
fn facets<'v>(m: &'v Map<'_>, at: &Loc<'_>, row: &mut PostRow<'v>) -> Check<()> {
    let facets_at = at.key("facets");
    for (i, facet) in opt_array(m, at, "facets")?.iter().enumerate() {
        let facet_at = facets_at.index(i);
        let facet = as_map(facet, &facet_at)?;
        let features_at = facet_at.key("features");
        for (j, feature) in req_array(facet, &facet_at, "features")?.iter().enumerate() {
            let feature_at = features_at.index(j);
            let feature = as_map(feature, &feature_at)?;
            match req_str(feature, &feature_at, "$type")? {
                FACET_MENTION => {
                    let d = req_str(feature, &feature_at, "did")?;
                    did(d, &feature_at.key("did"))?;
                    push_unique(&mut row.mentions, d);
                }
                FACET_LINK => push_unique(&mut row.links, req_str(feature, &feature_at, "uri")?),
                FACET_TAG => push_unique(&mut row.tags, req_str(feature, &feature_at, "tag")?),
                _ => {}
            }
        }
    }
    Ok(())
}

/// The deprecated `entities` of 2022–23 posts (`{type: mention|link, value}`):
/// read for mentions and links, never rejected (malformed entries are skipped).
fn entities<'v>(m: &'v Map<'_>, row: &mut PostRow<'v>) {
    let Some(Value::Array(entities)) = field(m, "entities") else {
        return;
    };
    for e in entities {
        let (Some(kind), Some(value)) = (
            e.get("type").and_then(Value::as_str),
            e.get("value").and_then(Value::as_str),
        ) else {
            continue;
        };
        match kind {
            "mention" if value.starts_with("did:") => push_unique(&mut row.mentions, value),
            "link" => push_unique(&mut row.links, value),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds() {
        assert_eq!(embed_kind("app.bsky.embed.images"), "images");
        assert_eq!(
            embed_kind("app.bsky.embed.recordWithMedia#main"),
            "recordWithMedia"
        );
        assert_eq!(embed_kind("com.example.embed"), "com.example.embed");
    }
}
