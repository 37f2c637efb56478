//! Per-account records with rkey `self`: `app.bsky.actor.{profile,status,
//! contentVisibilityDeclaration}`, `app.bsky.notification.declaration`,
//! `chat.bsky.actor.declaration`.
//!
//! Their lexicons fix the record key to `self`; a record under another key is
//! not the account's profile (or status…) and goes to the dead letters.

use skyhouse_atproto::cbor::Map;

use crate::rows::{
    actor_statuses, chat_declarations, content_visibility_declarations, notification_declarations,
    profiles,
};
use crate::shape::{
    opt_blob_cid, opt_int, opt_map, opt_ref_uri, opt_string, req_bool, req_map, req_str, rkey_self,
    self_labels, Check, Loc,
};

/// Lexicon: nothing required (not even `createdAt`).
pub(crate) fn profile<'v>(m: &'v Map<'_>, mut row: profiles::Ref<'v>) -> Check<profiles::Ref<'v>> {
    rkey_self(row.rkey)?;
    let at = Loc::Root;
    row.display_name = opt_string(m, &at, "displayName")?;
    row.description = opt_string(m, &at, "description")?;
    row.pronouns = opt_string(m, &at, "pronouns")?;
    row.website = opt_string(m, &at, "website")?;
    row.avatar_cid = opt_blob_cid(m, &at, "avatar")?;
    row.banner_cid = opt_blob_cid(m, &at, "banner")?;
    row.pinned_post_uri = opt_ref_uri(m, &at, "pinnedPost")?;
    row.joined_via_starter_pack_uri = opt_ref_uri(m, &at, "joinedViaStarterPack")?;
    row.labels = self_labels(m, &at)?;
    Ok(row)
}

const EMBED_EXTERNAL: &str = "app.bsky.embed.external";

/// Lexicon: `status`, `createdAt` required; `embed` is an open union of
/// `app.bsky.embed.external` only.
pub(crate) fn status<'v>(
    m: &'v Map<'_>,
    mut row: actor_statuses::Ref<'v>,
) -> Check<actor_statuses::Ref<'v>> {
    rkey_self(row.rkey)?;
    let at = Loc::Root;
    row.status = req_str(m, &at, "status")?.into();
    if let Some(embed) = opt_map(m, &at, "embed")? {
        let embed_at = at.key("embed");
        let t = req_str(embed, &embed_at, "$type")?;
        if t == EMBED_EXTERNAL || t == "app.bsky.embed.external#main" {
            let external_at = embed_at.key("external");
            let external = req_map(embed, &embed_at, "external")?;
            row.embed_uri = req_str(external, &external_at, "uri")?.into();
        }
    }
    row.duration_minutes = opt_int(m, &at, "durationMinutes")?
        .map_or(0, |d| u32::try_from(d.max(0)).unwrap_or(u32::MAX));
    Ok(row)
}

/// Lexicon: `allowIncoming` required.
pub(crate) fn chat_declaration<'v>(
    m: &'v Map<'_>,
    mut row: chat_declarations::Ref<'v>,
) -> Check<chat_declarations::Ref<'v>> {
    rkey_self(row.rkey)?;
    let at = Loc::Root;
    row.allow_incoming = req_str(m, &at, "allowIncoming")?.into();
    row.allow_group_invites = opt_string(m, &at, "allowGroupInvites")?;
    Ok(row)
}

/// Lexicon: `allowSubscriptions` required.
pub(crate) fn notification_declaration<'v>(
    m: &'v Map<'_>,
    mut row: notification_declarations::Ref<'v>,
) -> Check<notification_declarations::Ref<'v>> {
    rkey_self(row.rkey)?;
    row.allow_subscriptions = req_str(m, &Loc::Root, "allowSubscriptions")?.into();
    Ok(row)
}

/// Lexicon: `hideFromAlgorithmicRecommendations` (boolean) required.
pub(crate) fn content_visibility<'v>(
    m: &'v Map<'_>,
    mut row: content_visibility_declarations::Ref<'v>,
) -> Check<content_visibility_declarations::Ref<'v>> {
    rkey_self(row.rkey)?;
    row.hide_from_algorithmic_recommendations = u8::from(req_bool(
        m,
        &Loc::Root,
        "hideFromAlgorithmicRecommendations",
    )?);
    Ok(row)
}
