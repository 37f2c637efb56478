//! One test per record type (records written by the lexicons in
//! `shared/fixtures/atproto-lexicons`), and the shapes that go to the dead
//! letters.

use serde_json::json;
use skyhouse_transform::{apply, Action, Op, Rows, Table, DEAD_LETTER_SOURCE};

use crate::{cid_of, create, value, DID, NOW, VERSION};

const POST_URI: &str = "at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.post/3k44deefqdk2g";
const POST_CID: &str = "bafyreiaaa5bpqsyr2upzgvinvukdu3wghrgtmjjj7ocoiel4mlaxj6snju";
const LIST_URI: &str = "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.graph.list/3kflf2ahuyd2v";
const BOB: &str = "did:plc:44ybard66vv44zksje25o7dz";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

/// The single dead letter's reason; checks the raw row and typed tombstone too.
fn rejected(rows: &Rows, table: Table) -> String {
    assert_eq!(rows.records.len(), 1, "the raw row is always written");
    assert_eq!(rows.records[0].deleted, 0);
    assert_eq!(rows.dead_letters.len(), 1, "{rows:?}");
    assert_eq!(rows.typed_len(), 1);
    assert_eq!(rows.table_len(table), 1, "a tombstone in {}", table.name());
    let d = &rows.dead_letters[0];
    assert_eq!(d.source, DEAD_LETTER_SOURCE);
    assert_eq!((d.did.as_str(), d.version, d.at), (DID, VERSION, NOW));
    assert_eq!(d.collection, table.collection());
    assert_eq!(d.payload, rows.records[0].record);
    assert!(!d.reason.contains('\n'));
    d.reason.clone()
}

fn accepted(rows: &Rows, table: Table) {
    assert_eq!(rows.dead_letters, vec![], "{rows:?}");
    assert_eq!((rows.records.len(), rows.typed_len()), (1, 1));
    assert_eq!(rows.table_len(table), 1);
}

#[test]
fn post_with_mentions_quote_labels_and_tags() {
    let rows = create(
        "app.bsky.feed.post",
        "3l3qo2vutsw2b",
        json!({
            "$type": "app.bsky.feed.post",
            "text": "hi @bob.test #Rust see #rust",
            "createdAt": "2026-07-04T14:00:00.000Z",
            "facets": [
                {"index": {"byteStart": 3, "byteEnd": 12}, "features": [
                    {"$type": "app.bsky.richtext.facet#mention", "did": BOB}]},
                {"index": {"byteStart": 13, "byteEnd": 18}, "features": [
                    {"$type": "app.bsky.richtext.facet#tag", "tag": "Rust"},
                    {"$type": "com.example.facet#sparkle", "hue": 3}]},
                {"index": {"byteStart": 23, "byteEnd": 28}, "features": [
                    {"$type": "app.bsky.richtext.facet#tag", "tag": "rust"},
                    {"$type": "app.bsky.richtext.facet#mention", "did": BOB}]}
            ],
            "tags": ["rust", "atproto"],
            "embed": {"$type": "app.bsky.embed.record",
                      "record": {"uri": POST_URI, "cid": POST_CID}},
            "labels": {"$type": "com.atproto.label.defs#selfLabels",
                       "values": [{"val": "graphic-media"}, {"val": "nudity"}]}
        }),
    );
    accepted(&rows, Table::Posts);
    let p = &rows.posts[0];
    assert_eq!(p.mentions, strings(&[BOB]));
    assert_eq!(p.tags, strings(&["Rust", "rust", "atproto"]));
    assert_eq!(p.links, Vec::<String>::new());
    assert_eq!(p.embed_kind, "record");
    assert_eq!(
        (p.quote_uri.as_str(), p.quote_cid.as_str()),
        (POST_URI, POST_CID)
    );
    assert_eq!(p.labels, strings(&["graphic-media", "nudity"]));
    assert_eq!(p.langs, Vec::<String>::new());
    assert_eq!(p.created_at, NOW - 38 * 60 - 8);
}

#[test]
fn post_record_with_media_and_gallery_and_video() {
    let image = json!({"$type": "blob", "ref": {"$link": "bafkreidrnwt23f7wy7fyfex5acdkxh62wsgpg245ame4c4rogfwb3upyaa"}, "mimeType": "image/jpeg", "size": 10});
    let rows = create(
        "app.bsky.feed.post",
        "3l3qo2vutsw2c",
        json!({
            "text": "",
            "createdAt": "2026-07-04T14:00:00Z",
            "embed": {"$type": "app.bsky.embed.recordWithMedia",
                "record": {"$type": "app.bsky.embed.record", "record": {"uri": POST_URI, "cid": POST_CID}},
                "media": {"$type": "app.bsky.embed.images", "images": [
                    {"image": image, "alt": "a"}, {"image": image, "alt": "b"}]}}
        }),
    );
    accepted(&rows, Table::Posts);
    let p = &rows.posts[0];
    assert_eq!(p.embed_kind, "recordWithMedia");
    assert_eq!(p.quote_uri, POST_URI);
    assert_eq!(p.image_count, 2);

    let rows = create(
        "app.bsky.feed.post",
        "3l3qo2vutsw2d",
        json!({"text": "g", "createdAt": "2026-07-04T14:00:00Z",
               "embed": {"$type": "app.bsky.embed.gallery", "items": [
                   {"$type": "app.bsky.embed.gallery#image", "image": image, "alt": "",
                    "aspectRatio": {"width": 1, "height": 1}}]}}),
    );
    accepted(&rows, Table::Posts);
    assert_eq!(
        (rows.posts[0].embed_kind.as_str(), rows.posts[0].image_count),
        ("gallery", 1)
    );

    let rows = create(
        "app.bsky.feed.post",
        "3l3qo2vutsw2e",
        json!({"text": "v", "createdAt": "2026-07-04T14:00:00Z",
               "embed": {"$type": "app.bsky.embed.video", "video": {"$type": "blob", "ref": {"$link": "bafkreidrnwt23f7wy7fyfex5acdkxh62wsgpg245ame4c4rogfwb3upyaa"}, "mimeType": "video/mp4", "size": 99}}}),
    );
    accepted(&rows, Table::Posts);
    assert_eq!(
        (rows.posts[0].embed_kind.as_str(), rows.posts[0].image_count),
        ("video", 0)
    );

    // An embed type from elsewhere is kept whole, not rejected (open union).
    let rows = create(
        "app.bsky.feed.post",
        "3l3qo2vutsw2f",
        json!({"text": "x", "createdAt": "2026-07-04T14:00:00Z",
               "embed": {"$type": "com.example.embed.poll", "options": ["a", "b"]}}),
    );
    accepted(&rows, Table::Posts);
    assert_eq!(rows.posts[0].embed_kind, "com.example.embed.poll");
}

#[test]
fn legacy_post_entities() {
    // 2022-era posts carry `entities` instead of facets.
    let rows = create(
        "app.bsky.feed.post",
        "3jzfcijpj2z2a",
        json!({"text": "@alice.test https://example.com", "createdAt": "2022-11-17T01:04:43.624Z",
               "entities": [
                   {"index": {"start": 0, "end": 11}, "type": "mention", "value": BOB},
                   {"index": {"start": 12, "end": 31}, "type": "link", "value": "https://example.com"},
                   {"type": "mention"}]}),
    );
    accepted(&rows, Table::Posts);
    assert_eq!(rows.posts[0].mentions, strings(&[BOB]));
    assert_eq!(rows.posts[0].links, strings(&["https://example.com"]));
}

#[test]
fn post_shapes_that_are_dead_letters() {
    let cases = [
        (
            json!({"createdAt": "2026-07-04T14:00:00Z"}),
            "text: required field is missing",
        ),
        (json!({"text": 5}), "text: expected string, found integer"),
        (
            json!({"text": "", "langs": "en"}),
            "langs: expected array, found string",
        ),
        (
            json!({"text": "", "langs": ["en", 3]}),
            "langs[1]: expected string, found integer",
        ),
        (
            json!({"text": "", "reply": {"root": {"uri": POST_URI, "cid": POST_CID}}}),
            "reply.parent: required field is missing",
        ),
        (
            json!({"text": "", "reply": {"root": {"uri": "https://x", "cid": POST_CID},
                                          "parent": {"uri": POST_URI, "cid": POST_CID}}}),
            "reply.root.uri: not a valid AT-URI",
        ),
        (
            json!({"text": "", "facets": [{"index": {}, "features": [
                {"$type": "app.bsky.richtext.facet#link", "uri": "https://a"}]},
                {"index": {}, "features": [
                {"$type": "app.bsky.richtext.facet#mention", "did": "bob.test"}]}]}),
            "facets[1].features[0].did: not a valid DID",
        ),
        (
            json!({"text": "", "embed": {"images": []}}),
            "embed.$type: required field is missing",
        ),
        (
            json!({"text": "", "embed": {"$type": "app.bsky.embed.external", "external": {"title": "t"}}}),
            "embed.external.uri: required field is missing",
        ),
        (
            json!({"text": "", "embed": {"$type": "app.bsky.embed.recordWithMedia",
                   "record": {"record": {"uri": POST_URI}}, "media": {"$type": "app.bsky.embed.video"}}}),
            "embed.record.record.cid: required field is missing",
        ),
        (
            json!({"$type": "app.bsky.feed.like", "text": ""}),
            "$type: names another collection (\"app.bsky.feed.like\")",
        ),
        (
            json!({"text": "", "labels": {"$type": "com.atproto.label.defs#selfLabels", "values": [{"v": 1}]}}),
            "labels.values[0].val: required field is missing",
        ),
    ];
    for (record, reason) in cases {
        let rows = create("app.bsky.feed.post", "3l3qo2vutsw2b", record);
        assert_eq!(rejected(&rows, Table::Posts), reason);
        let tomb = &rows.posts[0];
        assert_eq!(
            (tomb.deleted, tomb.version, tomb.rkey.as_str()),
            (1, VERSION, "3l3qo2vutsw2b")
        );
        assert_eq!(tomb.cid, "");
    }
}

#[test]
fn likes_and_reposts() {
    for (collection, table) in [
        ("app.bsky.feed.like", Table::Likes),
        ("app.bsky.feed.repost", Table::Reposts),
    ] {
        let rows = create(
            collection,
            "3l3qo2vutsw2b",
            json!({"subject": {"uri": "at://bob.test/app.bsky.feed.post/3k44deefqdk2g", "cid": POST_CID},
                   "createdAt": "2026-07-04T14:00:00Z"}),
        );
        accepted(&rows, table);
        let (uri, did) = match table {
            Table::Likes => (&rows.likes[0].subject_uri, &rows.likes[0].subject_did),
            _ => (&rows.reposts[0].subject_uri, &rows.reposts[0].subject_did),
        };
        assert_eq!(uri, "at://bob.test/app.bsky.feed.post/3k44deefqdk2g");
        assert_eq!(did, "", "a handle authority is not a DID");

        let rows = create(
            collection,
            "3l3qo2vutsw2b",
            json!({"subject": {"cid": POST_CID}}),
        );
        assert_eq!(
            rejected(&rows, table),
            "subject.uri: required field is missing"
        );
        let rows = create(collection, "3l3qo2vutsw2b", json!({"subject": POST_URI}));
        assert_eq!(
            rejected(&rows, table),
            "subject: expected object, found string"
        );
        let rows = create(
            collection,
            "3l3qo2vutsw2b",
            json!({"subject": {"uri": POST_URI, "cid": POST_CID}, "via": {"uri": POST_URI}}),
        );
        assert_eq!(rejected(&rows, table), "via.cid: required field is missing");
    }
}

#[test]
fn follows_and_blocks() {
    let rows = create(
        "app.bsky.graph.follow",
        "3l3qo2vutsw2b",
        json!({"subject": BOB, "createdAt": "2026-07-04T14:00:00Z",
               "via": {"uri": "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.graph.starterpack/3kflf2ahuyd2v", "cid": POST_CID}}),
    );
    accepted(&rows, Table::Follows);
    assert_eq!(rows.follows[0].subject_did, BOB);
    assert!(rows.follows[0]
        .via_uri
        .ends_with("/app.bsky.graph.starterpack/3kflf2ahuyd2v"));

    let rows = create(
        "app.bsky.graph.follow",
        "3l3qo2vutsw2b",
        json!({"subject": "bob.test"}),
    );
    assert_eq!(rejected(&rows, Table::Follows), "subject: not a valid DID");
    let rows = create(
        "app.bsky.graph.block",
        "3l3qo2vutsw2b",
        json!({"subject": BOB}),
    );
    accepted(&rows, Table::Blocks);
    let rows = create(
        "app.bsky.graph.block",
        "3l3qo2vutsw2b",
        json!({"createdAt": "x"}),
    );
    assert_eq!(
        rejected(&rows, Table::Blocks),
        "subject: required field is missing"
    );
}

#[test]
fn profiles() {
    let rows = create(
        "app.bsky.actor.profile",
        "self",
        json!({"displayName": "Alice", "description": "hi", "pronouns": "she/her",
               "website": "https://alice.test",
               "avatar": {"cid": "bafkreieajxclqzwk2mczx7hxmoboqpuiveqlbm35gsda5xlaqfmlryu4ri", "mimeType": "image/png"},
               "joinedViaStarterPack": {"uri": "at://did:plc:ewvi7nxzyoun6zhxrhs64oiz/app.bsky.graph.starterpack/3kflf2ahuyd2v", "cid": POST_CID},
               "labels": {"$type": "com.atproto.label.defs#selfLabels", "values": [{"val": "!no-unauthenticated"}]}}),
    );
    accepted(&rows, Table::Profiles);
    let p = &rows.profiles[0];
    assert_eq!(
        (
            p.display_name.as_str(),
            p.pronouns.as_str(),
            p.website.as_str()
        ),
        ("Alice", "she/her", "https://alice.test")
    );
    assert_eq!(
        p.avatar_cid, "bafkreieajxclqzwk2mczx7hxmoboqpuiveqlbm35gsda5xlaqfmlryu4ri",
        "legacy blob"
    );
    assert_eq!(p.banner_cid, "");
    assert!(p.joined_via_starter_pack_uri.ends_with("/3kflf2ahuyd2v"));
    assert_eq!(p.labels, strings(&["!no-unauthenticated"]));
    assert_eq!(p.created_at, NOW, "no createdAt: indexed_at");

    // Nothing is required, but the key must be `self`.
    accepted(
        &create("app.bsky.actor.profile", "self", json!({})),
        Table::Profiles,
    );
    let rows = create("app.bsky.actor.profile", "3l3qo2vutsw2b", json!({}));
    assert_eq!(
        rejected(&rows, Table::Profiles),
        "rkey: must be \"self\" for this collection"
    );
    let rows = create(
        "app.bsky.actor.profile",
        "self",
        json!({"avatar": {"ref": "bafk"}}),
    );
    assert_eq!(
        rejected(&rows, Table::Profiles),
        "avatar.ref: expected link, found string"
    );
}

#[test]
fn lists_items_blocks_and_starter_packs() {
    let rows = create(
        "app.bsky.graph.list",
        "3kflf2ahuyd2v",
        json!({"name": "Rustaceans", "purpose": "app.bsky.graph.defs#curatelist",
               "description": "crabs", "createdAt": "2026-07-04T14:00:00Z"}),
    );
    accepted(&rows, Table::Lists);
    let l = &rows.lists[0];
    assert_eq!(
        (l.name.as_str(), l.purpose.as_str()),
        ("Rustaceans", "app.bsky.graph.defs#curatelist")
    );
    let rows = create("app.bsky.graph.list", "3kflf2ahuyd2v", json!({"name": "x"}));
    assert_eq!(
        rejected(&rows, Table::Lists),
        "purpose: required field is missing"
    );

    let rows = create(
        "app.bsky.graph.listitem",
        "3kflf2ahuyd2w",
        json!({"subject": BOB, "list": LIST_URI, "createdAt": "2026-07-04T14:00:00Z"}),
    );
    accepted(&rows, Table::ListItems);
    assert_eq!(
        (
            rows.list_items[0].list_uri.as_str(),
            rows.list_items[0].subject_did.as_str()
        ),
        (LIST_URI, BOB)
    );
    let rows = create(
        "app.bsky.graph.listitem",
        "3kflf2ahuyd2w",
        json!({"subject": BOB, "list": "x"}),
    );
    assert_eq!(
        rejected(&rows, Table::ListItems),
        "list: not a valid AT-URI"
    );

    let rows = create(
        "app.bsky.graph.listblock",
        "3kflf2ahuyd2x",
        json!({"subject": LIST_URI}),
    );
    accepted(&rows, Table::ListBlocks);
    assert_eq!(rows.list_blocks[0].subject_list_uri, LIST_URI);

    let feed = "at://did:plc:z72i7hdynmk6r22z27h6tvur/app.bsky.feed.generator/whats-hot";
    let rows = create(
        "app.bsky.graph.starterpack",
        "3kflf2ahuyd2y",
        json!({"name": "Start", "list": LIST_URI, "feeds": [{"uri": feed}],
               "createdAt": "2026-07-04T14:00:00Z"}),
    );
    accepted(&rows, Table::StarterPacks);
    assert_eq!(rows.starter_packs[0].feeds, strings(&[feed]));
    assert_eq!(rows.starter_packs[0].list_uri, LIST_URI);
    let rows = create(
        "app.bsky.graph.starterpack",
        "3kflf2ahuyd2y",
        json!({"name": "S", "list": LIST_URI, "feeds": [{}]}),
    );
    assert_eq!(
        rejected(&rows, Table::StarterPacks),
        "feeds[0].uri: required field is missing"
    );
}

#[test]
fn feed_generators() {
    let rows = create(
        "app.bsky.feed.generator",
        "whats-hot",
        json!({"did": "did:web:feeds.example.com", "displayName": "Hot", "acceptsInteractions": true,
               "contentMode": "app.bsky.feed.defs#contentModeVideo",
               "avatar": {"$type": "blob", "ref": {"$link": "bafkreidrnwt23f7wy7fyfex5acdkxh62wsgpg245ame4c4rogfwb3upyaa"}, "mimeType": "image/png", "size": 1},
               "createdAt": "2026-07-04T14:00:00Z"}),
    );
    accepted(&rows, Table::FeedGenerators);
    let g = &rows.feed_generators[0];
    assert_eq!(g.service_did, "did:web:feeds.example.com");
    assert_eq!(g.accepts_interactions, 1);
    assert_eq!(g.content_mode, "app.bsky.feed.defs#contentModeVideo");
    assert_eq!(
        g.avatar_cid,
        "bafkreidrnwt23f7wy7fyfex5acdkxh62wsgpg245ame4c4rogfwb3upyaa"
    );
    let rows = create(
        "app.bsky.feed.generator",
        "x",
        json!({"did": "did:web:a.test", "displayName": "A", "acceptsInteractions": "yes"}),
    );
    assert_eq!(
        rejected(&rows, Table::FeedGenerators),
        "acceptsInteractions: expected boolean, found string"
    );
}

#[test]
fn threadgates() {
    let rows = create(
        "app.bsky.feed.threadgate",
        "3k44deefqdk2g",
        json!({"post": POST_URI, "createdAt": "2026-07-04T14:00:00Z",
               "allow": [{"$type": "app.bsky.feed.threadgate#mentionRule"},
                         {"$type": "app.bsky.feed.threadgate#followingRule"},
                         {"$type": "app.bsky.feed.threadgate#listRule", "list": LIST_URI}],
               "hiddenReplies": [POST_URI]}),
    );
    accepted(&rows, Table::Threadgates);
    let t = &rows.threadgates[0];
    assert_eq!(t.post_uri, POST_URI);
    assert_eq!(t.allow_set, 1);
    assert_eq!(
        t.allow,
        vec![
            "mentionRule".to_owned(),
            "followingRule".to_owned(),
            format!("list:{LIST_URI}")
        ]
    );
    assert_eq!(t.hidden_replies, strings(&[POST_URI]));

    // Absent allow: anybody may reply; empty allow: nobody.
    let rows = create(
        "app.bsky.feed.threadgate",
        "3k44deefqdk2g",
        json!({"post": POST_URI}),
    );
    assert_eq!(
        (
            rows.threadgates[0].allow_set,
            rows.threadgates[0].allow.len()
        ),
        (0, 0)
    );
    let rows = create(
        "app.bsky.feed.threadgate",
        "3k44deefqdk2g",
        json!({"post": POST_URI, "allow": []}),
    );
    assert_eq!(
        (
            rows.threadgates[0].allow_set,
            rows.threadgates[0].allow.len()
        ),
        (1, 0)
    );

    let rows = create(
        "app.bsky.feed.threadgate",
        "3k44deefqdk2g",
        json!({"post": POST_URI, "allow": [{"$type": "app.bsky.feed.threadgate#listRule"}]}),
    );
    assert_eq!(
        rejected(&rows, Table::Threadgates),
        "allow[0].list: required field is missing"
    );
}

#[test]
fn postgates() {
    let rows = create(
        "app.bsky.feed.postgate",
        "3k44deefqdk2g",
        json!({"post": POST_URI, "createdAt": "2026-07-04T14:00:00Z",
               "detachedEmbeddingUris": [POST_URI],
               "embeddingRules": [{"$type": "app.bsky.feed.postgate#disableRule"}]}),
    );
    accepted(&rows, Table::Postgates);
    let g = &rows.postgates[0];
    assert_eq!((g.post_uri.as_str(), g.disable_embedding), (POST_URI, 1));
    assert_eq!(g.detached_embedding_uris, strings(&[POST_URI]));
    let rows = create(
        "app.bsky.feed.postgate",
        "3k44deefqdk2g",
        json!({"post": POST_URI, "detachedEmbeddingUris": ["nope"]}),
    );
    assert_eq!(
        rejected(&rows, Table::Postgates),
        "detachedEmbeddingUris[0]: not a valid AT-URI"
    );
}

#[test]
fn verifications() {
    let rows = create(
        "app.bsky.graph.verification",
        "3lndpqjrxqc2j",
        json!({"subject": BOB, "handle": "bob.test", "displayName": "Bob",
               "createdAt": "2026-07-04T14:00:00Z"}),
    );
    accepted(&rows, Table::Verifications);
    let v = &rows.verifications[0];
    assert_eq!(
        (
            v.subject_did.as_str(),
            v.handle.as_str(),
            v.display_name.as_str()
        ),
        (BOB, "bob.test", "Bob")
    );
    let rows = create(
        "app.bsky.graph.verification",
        "3lndpqjrxqc2j",
        json!({"subject": BOB, "handle": "not a handle", "displayName": "B"}),
    );
    assert_eq!(
        rejected(&rows, Table::Verifications),
        "handle: not a valid handle"
    );
}

#[test]
fn labeler_services() {
    let rows = create(
        "app.bsky.labeler.service",
        "self",
        json!({"policies": {"labelValues": ["spam", "rude"]}, "createdAt": "2026-07-04T14:00:00Z"}),
    );
    accepted(&rows, Table::LabelerServices);
    assert_eq!(rows.labeler_services[0].labels, strings(&["spam", "rude"]));
    let rows = create("app.bsky.labeler.service", "self", json!({"policies": {}}));
    assert_eq!(
        rejected(&rows, Table::LabelerServices),
        "policies.labelValues: required field is missing"
    );
}

#[test]
fn declarations() {
    let rows = create(
        "chat.bsky.actor.declaration",
        "self",
        json!({"allowIncoming": "following"}),
    );
    accepted(&rows, Table::ChatDeclarations);
    assert_eq!(rows.chat_declarations[0].allow_incoming, "following");
    assert_eq!(rows.chat_declarations[0].created_at, NOW);
    let rows = create("chat.bsky.actor.declaration", "self", json!({}));
    assert_eq!(
        rejected(&rows, Table::ChatDeclarations),
        "allowIncoming: required field is missing"
    );

    let rows = create(
        "app.bsky.notification.declaration",
        "self",
        json!({"allowSubscriptions": "mutuals"}),
    );
    accepted(&rows, Table::NotificationDeclarations);
    assert_eq!(
        rows.notification_declarations[0].allow_subscriptions,
        "mutuals"
    );

    let rows = create(
        "app.bsky.actor.contentVisibilityDeclaration",
        "self",
        json!({"hideFromAlgorithmicRecommendations": true}),
    );
    accepted(&rows, Table::ContentVisibilityDeclarations);
    assert_eq!(
        rows.content_visibility_declarations[0].hide_from_algorithmic_recommendations,
        1
    );
    let rows = create(
        "app.bsky.actor.contentVisibilityDeclaration",
        "other",
        json!({"hideFromAlgorithmicRecommendations": true}),
    );
    assert_eq!(
        rejected(&rows, Table::ContentVisibilityDeclarations),
        "rkey: must be \"self\" for this collection"
    );
}

#[test]
fn actor_status_foreign_embed_and_duration() {
    let rows = create(
        "app.bsky.actor.status",
        "self",
        json!({"status": "app.bsky.actor.status#live", "createdAt": "2026-07-04T14:00:00Z",
               "embed": {"$type": "com.example.embed", "x": 1}, "durationMinutes": -5}),
    );
    accepted(&rows, Table::ActorStatuses);
    assert_eq!(
        (
            rows.actor_statuses[0].embed_uri.as_str(),
            rows.actor_statuses[0].duration_minutes
        ),
        ("", 0)
    );
}

#[test]
fn missing_or_non_map_bodies_are_dead_letters_for_any_collection() {
    let scalar = skyhouse_transform::Value::Integer(3);
    for collection in ["app.bsky.feed.like", "com.example.thing"] {
        for record in [None, Some(&scalar)] {
            let mut rows = Rows::default();
            apply(
                &Op {
                    did: DID,
                    collection,
                    rkey: "3l3qo2vutsw2b",
                    action: Action::Update,
                    cid: None,
                    record,
                    version: VERSION,
                    indexed_at: NOW,
                },
                &mut rows,
            );
            assert_eq!(rows.records.len(), 1);
            assert_eq!(rows.dead_letters.len(), 1);
            let reason = &rows.dead_letters[0].reason;
            match record {
                None => assert_eq!(reason, "record: required field is missing"),
                Some(_) => assert_eq!(reason, "record: expected object, found integer"),
            }
            let typed = usize::from(collection.starts_with("app.bsky"));
            assert_eq!(rows.typed_len(), typed);
        }
    }
}

#[test]
fn cid_and_record_json_of_the_raw_row() {
    let record = json!({"$type": "app.bsky.feed.like", "createdAt": "2026-07-04T14:00:00Z",
                        "subject": {"uri": POST_URI, "cid": POST_CID}});
    let v = value(record.clone());
    let rows = create("app.bsky.feed.like", "3l3qo2vutsw2b", record.clone());
    let raw = &rows.records[0];
    assert_eq!(raw.cid, cid_of(&v).to_string());
    assert_eq!(rows.likes[0].cid, raw.cid);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&raw.record).expect("json"),
        record
    );
}
