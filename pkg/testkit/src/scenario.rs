//! A scripted day on the network: every kind of write and account change an
//! indexer must handle, across several accounts, with what the PDS should
//! hold afterwards.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use crate::truth::{AccountStatus, Records};
use crate::xrpc::{Account, Pds, Written, XrpcError};

/// A record that was replaced by `putRecord`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    /// The first version.
    pub before: Written,
    /// The replacement (same URI, different CID).
    pub after: Written,
}

/// What one account should look like once the scenario ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// The handle (`None` once deleted).
    pub handle: Option<String>,
    /// The hosting status.
    pub status: AccountStatus,
    /// The records the repository holds (empty once deleted).
    pub records: Records,
}

/// The facets of [`Scenario::facet_post`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FacetExpectation {
    /// The DID mentioned (bob).
    pub mention: String,
    /// The link.
    pub link: String,
    /// The hashtag, without `#`.
    pub tag: String,
    /// The post's languages.
    pub langs: Vec<String>,
}

/// What [`Scenario::run`] did.
///
/// Accounts (handles are `<name>-<suffix>.test`, unique per run):
/// - alice: profile (then edited), a post with mention/link/tag facets and
///   `langs`, a second post (German), a post later deleted, a post later
///   edited, a threadgate, a curate list with two items, a feed generator
///   record, follows bob; writes the final `last` post.
/// - bob: replies to alice, likes and reposts her post, follows alice, likes
///   the post alice later deletes; changes handle.
/// - carol: replies to bob's reply, quotes alice, likes alice's post (then
///   deletes that like), follows alice (then unfollows).
/// - dave: likes and follows alice, blocks erin; deactivates.
/// - erin: a post; deactivates and reactivates (active at the end).
/// - frank: a post, a like, a follow; then the account is deleted (admin).
/// - gina: a post; taken down by the admin.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// The accounts by name (`alice` … `gina`), with their final handles.
    pub accounts: BTreeMap<&'static str, Account>,
    /// Per DID: handle, status and records the PDS should hold at the end.
    pub expected: BTreeMap<String, Expected>,
    /// alice's post with mention, link and tag facets and `langs: ["en"]`.
    pub facet_post: Written,
    /// What the facets of `facet_post` are.
    pub facets: FacetExpectation,
    /// alice's post with `langs: ["de"]`.
    pub german_post: Written,
    /// bob's reply to `facet_post` (root = parent = `facet_post`).
    pub reply: Written,
    /// carol's reply to `reply` (root `facet_post`, parent `reply`).
    pub nested_reply: Written,
    /// carol's quote post of `facet_post` (`app.bsky.embed.record`).
    pub quote: Written,
    /// Likes of `facet_post` still live at the end (bob, dave; carol's was deleted).
    pub likes: Vec<Written>,
    /// bob's repost of `facet_post`.
    pub repost: Written,
    /// Follows live at the end (alice→bob, bob→alice, dave→alice).
    pub follows: Vec<Written>,
    /// dave blocks erin.
    pub block: Written,
    /// alice's curate list.
    pub list: Written,
    /// The list's items (bob, carol).
    pub list_items: Vec<Written>,
    /// alice's feed generator record.
    pub feed_generator: Written,
    /// alice's threadgate on `facet_post` (same rkey).
    pub threadgate: Written,
    /// alice's profile as first written.
    pub profile: Written,
    /// Records replaced with `putRecord`: alice's profile, and a post.
    pub edits: Vec<Edit>,
    /// Records deleted with `deleteRecord` (carol's like, carol's follow,
    /// alice's deleted post), each with the rev of its delete in `deleted_revs`.
    pub deleted: Vec<Written>,
    /// The revs of the commits deleting `deleted`, in the same order.
    pub deleted_revs: Vec<String>,
    /// `(did, old handle, new handle)` of bob's handle change.
    pub handle_change: (String, String, String),
    /// dave's DID (deactivated at the end).
    pub deactivated: String,
    /// erin's DID (deactivated, then reactivated: active at the end).
    pub reactivated: String,
    /// frank's DID (account deleted: nothing of it may remain).
    pub deleted_account: String,
    /// frank's records before the deletion (all must disappear).
    pub deleted_account_records: Vec<Written>,
    /// gina's DID (taken down).
    pub takendown: String,
    /// The last write of the scenario (alice), after every account change:
    /// a firehose consumer that saw its commit has seen everything.
    pub last: Written,
}

/// An RFC 3339 UTC timestamp with milliseconds, as records carry in `createdAt`.
pub fn now_rfc3339() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = skyhouse_atproto::syntax::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// A suffix that makes handles unique per run and per call (the PDS limits
/// the first label to 18 characters: `alice-` + 6).
pub(crate) fn unique_suffix() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64;
    let mut x = nanos
        ^ (u64::from(std::process::id()) << 32)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64 finaliser: spread the bits before taking base-36 digits.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
    (0..6)
        .map(|_| {
            let c = alphabet[(x % 36) as usize] as char;
            x /= 36;
            c
        })
        .collect()
}

/// The `{index, features}` facet for the first `needle` in `text`.
pub(crate) fn facet(text: &str, needle: &str, feature: Value) -> Value {
    let start = text.find(needle).expect("scenario: facet text present");
    json!({
        "index": { "byteStart": start, "byteEnd": start + needle.len() },
        "features": [feature],
    })
}

/// Tracks what each repository should hold while the scenario writes.
#[derive(Default)]
struct Book {
    expected: BTreeMap<String, Expected>,
}

impl Book {
    fn account(&mut self, account: &Account) {
        self.expected.insert(
            account.did.clone(),
            Expected {
                handle: Some(account.handle.clone()),
                status: AccountStatus::Active,
                records: Records::new(),
            },
        );
    }

    fn entry(&mut self, did: &str) -> &mut Expected {
        self.expected
            .get_mut(did)
            .expect("scenario: account registered")
    }

    fn wrote(&mut self, w: &Written) -> Written {
        let key = (w.collection().to_string(), w.rkey().to_string());
        self.entry(w.did()).records.insert(key, w.cid.clone());
        w.clone()
    }

    fn deleted(&mut self, w: &Written) {
        let key = (w.collection().to_string(), w.rkey().to_string());
        self.entry(w.did()).records.remove(&key);
    }
}

impl Scenario {
    /// Runs the scenario against `pds`: about 45 writes and account changes
    /// over 7 new accounts. Can run several times on one network (handles
    /// get a fresh suffix each time).
    pub async fn run(pds: &Pds) -> Result<Scenario, XrpcError> {
        let suffix = unique_suffix();
        let mut book = Book::default();
        let mut accounts = BTreeMap::new();
        for name in ["alice", "bob", "carol", "dave", "erin", "frank", "gina"] {
            let account = pds.create_account(&format!("{name}-{suffix}.test")).await?;
            book.account(&account);
            accounts.insert(name, account);
        }
        let acct = |name: &str| accounts[name].clone();
        let (alice, mut bob, carol, dave, mut erin, frank, gina) = (
            acct("alice"),
            acct("bob"),
            acct("carol"),
            acct("dave"),
            acct("erin"),
            acct("frank"),
            acct("gina"),
        );
        const POST: &str = "app.bsky.feed.post";
        const LIKE: &str = "app.bsky.feed.like";
        const REPOST: &str = "app.bsky.feed.repost";
        const FOLLOW: &str = "app.bsky.graph.follow";

        // alice: profile, posts.
        let profile = book.wrote(
            &pds.create_record_with_rkey(
                &alice,
                "app.bsky.actor.profile",
                "self",
                json!({ "$type": "app.bsky.actor.profile", "displayName": "Alice", "description": "first profile" }),
            )
            .await?,
        );
        let link = "https://example.com/skyhouse";
        let tag = "skyhouse";
        let text = format!("hello @{} see {link} #{tag} 🦋", bob.handle);
        let facets = vec![
            facet(
                &text,
                &format!("@{}", bob.handle),
                json!({ "$type": "app.bsky.richtext.facet#mention", "did": bob.did }),
            ),
            facet(
                &text,
                link,
                json!({ "$type": "app.bsky.richtext.facet#link", "uri": link }),
            ),
            facet(
                &text,
                &format!("#{tag}"),
                json!({ "$type": "app.bsky.richtext.facet#tag", "tag": tag }),
            ),
        ];
        let facet_post = book.wrote(
            &pds.create_record(
                &alice,
                POST,
                json!({ "$type": POST, "text": text, "facets": facets, "langs": ["en"], "createdAt": now_rfc3339() }),
            )
            .await?,
        );
        let german_post = book.wrote(
            &pds.create_record(
                &alice,
                POST,
                json!({ "$type": POST, "text": "Guten Morgen", "langs": ["de"], "createdAt": now_rfc3339() }),
            )
            .await?,
        );
        let doomed_post = book.wrote(
            &pds.create_record(
                &alice,
                POST,
                json!({ "$type": POST, "text": "this post will be deleted", "createdAt": now_rfc3339() }),
            )
            .await?,
        );
        let edited_first = book.wrote(
            &pds.create_record(
                &alice,
                POST,
                json!({ "$type": POST, "text": "this post will be edited", "createdAt": now_rfc3339() }),
            )
            .await?,
        );

        // Replies and a quote.
        let reply = book.wrote(
            &pds.create_record(
                &bob,
                POST,
                json!({
                    "$type": POST, "text": "a reply", "createdAt": now_rfc3339(),
                    "reply": { "root": facet_post.strong_ref(), "parent": facet_post.strong_ref() },
                }),
            )
            .await?,
        );
        let nested_reply = book.wrote(
            &pds.create_record(
                &carol,
                POST,
                json!({
                    "$type": POST, "text": "a reply to the reply", "createdAt": now_rfc3339(),
                    "reply": { "root": facet_post.strong_ref(), "parent": reply.strong_ref() },
                }),
            )
            .await?,
        );
        let quote = book.wrote(
            &pds.create_record(
                &carol,
                POST,
                json!({
                    "$type": POST, "text": "quoting alice", "createdAt": now_rfc3339(),
                    "embed": { "$type": "app.bsky.embed.record", "record": facet_post.strong_ref() },
                }),
            )
            .await?,
        );

        // Likes, a repost, follows, a block.
        let like = |who: &Account, subject: &Written| {
            let record = json!({ "$type": LIKE, "subject": subject.strong_ref(), "createdAt": now_rfc3339() });
            let who = who.clone();
            async move { pds.create_record(&who, LIKE, record).await }
        };
        let bob_like = book.wrote(&like(&bob, &facet_post).await?);
        let carol_like = book.wrote(&like(&carol, &facet_post).await?);
        let dave_like = book.wrote(&like(&dave, &facet_post).await?);
        book.wrote(&like(&bob, &doomed_post).await?);
        let repost = book.wrote(
            &pds.create_record(
                &bob,
                REPOST,
                json!({ "$type": REPOST, "subject": facet_post.strong_ref(), "createdAt": now_rfc3339() }),
            )
            .await?,
        );
        let follow = |who: &Account, subject: &Account| {
            let record =
                json!({ "$type": FOLLOW, "subject": subject.did, "createdAt": now_rfc3339() });
            let who = who.clone();
            async move { pds.create_record(&who, FOLLOW, record).await }
        };
        let follows = vec![
            book.wrote(&follow(&alice, &bob).await?),
            book.wrote(&follow(&bob, &alice).await?),
            book.wrote(&follow(&dave, &alice).await?),
        ];
        let carol_follow = book.wrote(&follow(&carol, &alice).await?);
        let block = book.wrote(
            &pds.create_record(
                &dave,
                "app.bsky.graph.block",
                json!({ "$type": "app.bsky.graph.block", "subject": erin.did, "createdAt": now_rfc3339() }),
            )
            .await?,
        );

        // A list with items, a feed generator, a threadgate.
        let list = book.wrote(
            &pds.create_record(
                &alice,
                "app.bsky.graph.list",
                json!({
                    "$type": "app.bsky.graph.list", "purpose": "app.bsky.graph.defs#curatelist",
                    "name": "friends", "description": "people alice likes", "createdAt": now_rfc3339(),
                }),
            )
            .await?,
        );
        let mut list_items = Vec::new();
        for member in [&bob, &carol] {
            list_items.push(
                book.wrote(
                    &pds.create_record(
                        &alice,
                        "app.bsky.graph.listitem",
                        json!({
                            "$type": "app.bsky.graph.listitem", "subject": member.did,
                            "list": list.uri, "createdAt": now_rfc3339(),
                        }),
                    )
                    .await?,
                ),
            );
        }
        let feed_generator = book.wrote(
            &pds.create_record_with_rkey(
                &alice,
                "app.bsky.feed.generator",
                "whats-hot",
                json!({
                    "$type": "app.bsky.feed.generator", "did": "did:web:feeds.example.com",
                    "displayName": "What's hot", "description": "hot posts", "createdAt": now_rfc3339(),
                }),
            )
            .await?,
        );
        let threadgate = book.wrote(
            &pds.create_record_with_rkey(
                &alice,
                "app.bsky.feed.threadgate",
                facet_post.rkey(),
                json!({
                    "$type": "app.bsky.feed.threadgate", "post": facet_post.uri,
                    "allow": [
                        { "$type": "app.bsky.feed.threadgate#mentionRule" },
                        { "$type": "app.bsky.feed.threadgate#followingRule" },
                    ],
                    "createdAt": now_rfc3339(),
                }),
            )
            .await?,
        );

        // Edits (putRecord of existing records).
        let profile_after = book.wrote(
            &pds.put_record(
                &alice,
                "app.bsky.actor.profile",
                "self",
                json!({ "$type": "app.bsky.actor.profile", "displayName": "Alice A.", "description": "edited profile" }),
            )
            .await?,
        );
        let edited_after = book.wrote(
            &pds.put_record(
                &alice,
                POST,
                edited_first.rkey(),
                json!({ "$type": POST, "text": "this post was edited", "createdAt": now_rfc3339() }),
            )
            .await?,
        );
        let edits = vec![
            Edit {
                before: profile.clone(),
                after: profile_after,
            },
            Edit {
                before: edited_first,
                after: edited_after,
            },
        ];

        // Deletes.
        let deleted = vec![carol_like, carol_follow, doomed_post];
        let mut deleted_revs = Vec::new();
        for w in &deleted {
            let owner = accounts
                .values()
                .find(|a| a.did == w.did())
                .expect("scenario: owner");
            deleted_revs.push(pds.delete_record(owner, w.collection(), w.rkey()).await?);
            book.deleted(w);
        }

        // Accounts whose state changes: erin, frank, gina write first.
        book.wrote(
            &pds.create_record(
                &erin,
                POST,
                json!({ "$type": POST, "text": "erin here", "createdAt": now_rfc3339() }),
            )
            .await?,
        );
        let deleted_account_records = vec![
            book.wrote(
                &pds.create_record(
                    &frank,
                    POST,
                    json!({ "$type": POST, "text": "frank here", "createdAt": now_rfc3339() }),
                )
                .await?,
            ),
            book.wrote(&like(&frank, &facet_post).await?),
            book.wrote(&follow(&frank, &alice).await?),
        ];
        book.wrote(
            &pds.create_record(
                &gina,
                POST,
                json!({ "$type": POST, "text": "gina here", "createdAt": now_rfc3339() }),
            )
            .await?,
        );

        // A handle change.
        let old_handle = bob.handle.clone();
        let new_handle = format!("bob2-{suffix}.test");
        pds.update_handle(&mut bob, &new_handle).await?;
        book.entry(&bob.did).handle = Some(new_handle.clone());

        // Deactivation, deactivation + reactivation, deletion, takedown.
        pds.deactivate_account(&dave).await?;
        book.entry(&dave.did).status = AccountStatus::Deactivated;
        pds.deactivate_account(&erin).await?;
        pds.activate_account(&erin).await?;
        pds.login(&mut erin).await?;
        pds.delete_account(&frank.did).await?;
        *book.entry(&frank.did) = Expected {
            handle: None,
            status: AccountStatus::Deleted,
            records: Records::new(),
        };
        pds.takedown(&gina.did, true).await?;
        book.entry(&gina.did).status = AccountStatus::Takendown;

        // The final write: seeing its commit means everything before was seen.
        let last = book.wrote(
            &pds.create_record(
                &alice,
                POST,
                json!({ "$type": POST, "text": "the end", "createdAt": now_rfc3339() }),
            )
            .await?,
        );

        accounts.insert("bob", bob.clone());
        accounts.insert("erin", erin.clone());
        Ok(Scenario {
            expected: book.expected,
            facets: FacetExpectation {
                mention: bob.did.clone(),
                link: link.to_string(),
                tag: tag.to_string(),
                langs: vec!["en".to_string()],
            },
            facet_post,
            german_post,
            reply,
            nested_reply,
            quote,
            likes: vec![bob_like, dave_like],
            repost,
            follows,
            block,
            list,
            list_items,
            feed_generator,
            threadgate,
            profile,
            edits,
            deleted,
            deleted_revs,
            handle_change: (bob.did.clone(), old_handle, new_handle),
            deactivated: dave.did.clone(),
            reactivated: erin.did.clone(),
            deleted_account: frank.did.clone(),
            deleted_account_records,
            takendown: gina.did.clone(),
            last,
            accounts,
        })
    }

    /// Every DID of the scenario (including the deleted one).
    pub fn dids(&self) -> impl Iterator<Item = &str> {
        self.expected.keys().map(String::as_str)
    }
}
