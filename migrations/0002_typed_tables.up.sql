-- Typed record tables: one per record type skyhouse-transform understands
-- (every app.bsky.* record plus chat.bsky.actor.declaration), and the dead
-- letters. Column order is the row structs' field order (pkg/transform/src/rows.rs);
-- pkg/transform/tests/schema.rs fails if the two drift.
--
-- Every record table: ReplacingMergeTree(version), the newest rev wins; a
-- delete is a row with deleted = 1 and the delete's version. The sorting key
-- is (did, rkey) only (the collection is the table) and there is no partition
-- key, so a tombstone always collapses with the row it replaces, in any
-- arrival order. Read current state with FINAL (or argMax) and deleted = 0.
-- Times are DateTime (Unix seconds): created_at = the record's createdAt claim
-- (clamped to at most a day after indexed_at), sort_at = min(created_at, indexed_at).

-- app.bsky.feed.post: text, langs, thread position, quote, embed, facets.
CREATE TABLE IF NOT EXISTS {db}.posts (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    text String,
    langs Array(String),
    reply_root_uri String,
    reply_root_cid String,
    reply_parent_uri String,
    reply_parent_cid String,
    quote_uri String,
    quote_cid String,
    embed_kind String,
    external_uri String,
    image_count UInt8,
    mentions Array(String),
    links Array(String),
    tags Array(String),
    labels Array(String)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.feed.like: subject strongRef (+ its DID) and the optional via repost.
CREATE TABLE IF NOT EXISTS {db}.likes (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    subject_uri String,
    subject_cid String,
    subject_did String,
    via_uri String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.feed.repost: as likes.
CREATE TABLE IF NOT EXISTS {db}.reposts (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    subject_uri String,
    subject_cid String,
    subject_did String,
    via_uri String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.graph.follow: the followed DID and the optional via (starter pack).
CREATE TABLE IF NOT EXISTS {db}.follows (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    subject_did String,
    via_uri String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.graph.block: the blocked DID.
CREATE TABLE IF NOT EXISTS {db}.blocks (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    subject_did String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.actor.profile (rkey self): blob CIDs, pinned post, starter pack joined via, self-labels.
CREATE TABLE IF NOT EXISTS {db}.profiles (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    display_name String,
    description String,
    pronouns String,
    website String,
    avatar_cid String,
    banner_cid String,
    pinned_post_uri String,
    joined_via_starter_pack_uri String,
    labels Array(String)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.graph.list: purpose as written (app.bsky.graph.defs#modlist, #curatelist, #referencelist).
CREATE TABLE IF NOT EXISTS {db}.lists (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    name String,
    purpose String,
    description String,
    avatar_cid String,
    labels Array(String)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.graph.listitem: list membership.
CREATE TABLE IF NOT EXISTS {db}.list_items (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    list_uri String,
    subject_did String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.graph.listblock: a block of every account on a list.
CREATE TABLE IF NOT EXISTS {db}.list_blocks (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    subject_list_uri String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.graph.starterpack: its list and feeds.
CREATE TABLE IF NOT EXISTS {db}.starter_packs (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    name String,
    description String,
    list_uri String,
    feeds Array(String)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.feed.generator: the service DID that serves the feed.
CREATE TABLE IF NOT EXISTS {db}.feed_generators (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    service_did String,
    display_name String,
    description String,
    avatar_cid String,
    accepts_interactions UInt8,
    content_mode String,
    labels Array(String)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.feed.threadgate: allow_set = 0 means anybody may reply; with allow_set = 1 only the
-- allow rules may (none if empty): mentionRule, followerRule, followingRule, list:<list uri>.
CREATE TABLE IF NOT EXISTS {db}.threadgates (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    post_uri String,
    allow_set UInt8,
    allow Array(String),
    hidden_replies Array(String)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.feed.postgate: detached quotes and whether embedding is disabled.
CREATE TABLE IF NOT EXISTS {db}.postgates (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    post_uri String,
    detached_embedding_uris Array(String),
    disable_embedding UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.graph.verification: who a verifier vouches for.
CREATE TABLE IF NOT EXISTS {db}.verifications (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    subject_did String,
    handle String,
    display_name String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.labeler.service (rkey self): labels = policies.labelValues.
CREATE TABLE IF NOT EXISTS {db}.labeler_services (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    labels Array(String)
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.actor.status (rkey self): e.g. live, with a link and a duration.
CREATE TABLE IF NOT EXISTS {db}.actor_statuses (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    status String,
    embed_uri String,
    duration_minutes UInt32
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- chat.bsky.actor.declaration (rkey self): who may start a chat.
CREATE TABLE IF NOT EXISTS {db}.chat_declarations (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    allow_incoming String,
    allow_group_invites String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.notification.declaration (rkey self): who may subscribe to activity.
CREATE TABLE IF NOT EXISTS {db}.notification_declarations (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    allow_subscriptions String
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- app.bsky.actor.contentVisibilityDeclaration (rkey self): opt-out of algorithmic recommendations.
CREATE TABLE IF NOT EXISTS {db}.content_visibility_declarations (
    did String,
    rkey String,
    cid String,
    version UInt64,
    deleted UInt8,
    created_at DateTime,
    indexed_at DateTime,
    sort_at DateTime,
    hide_from_algorithmic_recommendations UInt8
) ENGINE = ReplacingMergeTree(version)
ORDER BY (did, rkey);

-- Records that do not fit their typed table (they are still in records, raw).
-- Append-only: every rejection is kept.
CREATE TABLE IF NOT EXISTS {db}.dead_letters (
    source String,
    did String,
    collection String,
    rkey String,
    cid String,
    version UInt64,
    reason String,
    payload String,
    at DateTime
) ENGINE = MergeTree()
PARTITION BY toYYYYMM(at)
ORDER BY (at, did);
