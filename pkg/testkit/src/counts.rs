//! A scenario for comparing counts, handles and visibility with the
//! reference AppView: every case where "how many" has more than one honest
//! answer — duplicate records, moved likes, deletes in every order,
//! re-created posts, quotes of edited posts, threadgates and hidden
//! replies, handle changes and account status changes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;

use serde_json::{json, Value};

use crate::network::AppViewNetwork;
use crate::scenario::{facet, now_rfc3339, unique_suffix};
use crate::xrpc::{Account, Pds, WriteOp, Written, XrpcError};

const POST: &str = "app.bsky.feed.post";
const LIKE: &str = "app.bsky.feed.like";
const REPOST: &str = "app.bsky.feed.repost";
const FOLLOW: &str = "app.bsky.graph.follow";
const THREADGATE: &str = "app.bsky.feed.threadgate";
const POSTGATE: &str = "app.bsky.feed.postgate";

/// Duplicate likes, reposts and follows of one subject by one account.
#[derive(Debug, Clone)]
pub struct Duplicates {
    /// ann's post that everything here likes or reposts.
    pub post: Written,
    /// bob's two likes of `post`, written in one `applyWrites` commit; the
    /// first is deleted at the end of the section (`deleted`).
    pub bob_likes: Vec<Written>,
    /// cat's three likes of `post`, three `applyWrites` commits; the third is
    /// deleted.
    pub cat_likes: Vec<Written>,
    /// bob's two reposts of `post`, one `applyWrites` commit.
    pub bob_reposts: Vec<Written>,
    /// cat's repost of `post`.
    pub cat_repost: Written,
    /// bob's two follows of ann, one `applyWrites` commit; the first is
    /// deleted.
    pub bob_follows: Vec<Written>,
    /// cat's three follows of hal, one `applyWrites` commit; the first and
    /// the third are deleted.
    pub cat_follows_of_hal: Vec<Written>,
    /// What this section deleted, in order: bob's first like, cat's third
    /// like, bob's first follow, cat's first and third follows of hal.
    pub deleted: Vec<Written>,
}

/// Three duplicate likes of one post by cat, some deleted in a given order.
#[derive(Debug, Clone)]
pub struct DeleteOrder {
    /// ann's post.
    pub post: Written,
    /// cat's three likes of it, in the order written (three `applyWrites`
    /// commits).
    pub likes: Vec<Written>,
    /// Indexes into `likes`, in the order they were deleted.
    pub deleted: Vec<usize>,
}

impl DeleteOrder {
    /// The likes still in cat's repository.
    pub fn remaining(&self) -> Vec<&Written> {
        self.likes
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.deleted.contains(i))
            .map(|(_, w)| w)
            .collect()
    }
}

/// A like moved to another post by `putRecord` (same URI, new subject).
#[derive(Debug, Clone)]
pub struct MovedLike {
    /// The post first liked.
    pub from: Written,
    /// The post the like points at after the edit.
    pub to: Written,
    /// The like as first written (subject `from`).
    pub before: Written,
    /// The like after `putRecord` (subject `to`, same URI).
    pub after: Written,
    /// Another like of `to` by the same account written before the move
    /// (`Some` for the move onto an already liked post), still live.
    pub already_liking: Option<Written>,
}

/// A post deleted and written again at the same URI.
#[derive(Debug, Clone)]
pub struct Recreated {
    /// The first version (deleted).
    pub before: Written,
    /// The post written at the same rkey after the delete.
    pub after: Written,
    /// bob's like of the first version (never deleted).
    pub like: Written,
    /// cat's reply to the first version (never deleted).
    pub reply: Written,
    /// eve's quote of the first version (never deleted).
    pub quote: Written,
}

/// Quotes of a post that its author then edited.
#[derive(Debug, Clone)]
pub struct EditedQuotes {
    /// ann's post as first written.
    pub before: Written,
    /// ann's edit (`putRecord`: same URI, new CID).
    pub after: Written,
    /// dan's quote of `before` (quotes the old CID), written before the edit.
    pub quote_of_before: Written,
    /// eve's quote of `after`, written after the edit; `None` for the post
    /// that nobody quotes after its edit.
    pub quote_of_after: Option<Written>,
}

/// Which rule a threadgate's `allow` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum GateRule {
    /// `mentionRule`: accounts mentioned in the root post (bob).
    Mention,
    /// `followingRule`: accounts the author follows (ann follows bob).
    Following,
    /// `followerRule`: the author's followers (cat follows ann).
    Follower,
    /// `listRule`: members of ann's list (bob).
    List,
    /// `allow: []`: nobody but the author.
    Nobody,
    /// `allow: []` written *after* a reply by dan: the reply came first.
    NobodyAfterReply,
}

/// A thread whose root has a threadgate, with replies that keep or break it.
#[derive(Debug, Clone)]
pub struct GatedThread {
    /// The rule of the gate.
    pub rule: GateRule,
    /// ann's root post.
    pub root: Written,
    /// The threadgate record (same rkey as `root`).
    pub gate: Written,
    /// Direct replies to `root` the gate allows (ann's own, and the
    /// rule's account).
    pub allowed: Vec<Written>,
    /// Direct replies to `root` that break the gate (dan's, and for
    /// [`GateRule::Nobody`] bob's). For [`GateRule::NobodyAfterReply`]
    /// dan's reply written before the gate is here too.
    pub denied: Vec<Written>,
    /// For [`GateRule::Mention`]: dan's reply to bob's allowed reply (the
    /// root's gate applies to the whole thread).
    pub nested_denied: Option<Written>,
}

/// Replies the root's author hid with the threadgate's `hiddenReplies`.
#[derive(Debug, Clone)]
pub struct HiddenReplies {
    /// ann's root post.
    pub root: Written,
    /// bob's and dan's replies, written before the gate.
    pub replies: Vec<Written>,
    /// The threadgate (no `allow`: anyone may reply) hiding dan's reply.
    pub gate: Written,
    /// The hidden reply (dan's).
    pub hidden: Written,
    /// cat's reply, written after the gate.
    pub later_reply: Written,
}

/// Quotes of a post whose author then wrote a postgate.
#[derive(Debug, Clone)]
pub struct Postgated {
    /// ann's post.
    pub post: Written,
    /// eve's quote, written before the postgate, then detached by it.
    pub detached_quote: Written,
    /// The postgate: `detachedEmbeddingUris: [detached_quote]` and
    /// `embeddingRules: [disableRule]`.
    pub gate: Written,
    /// dan's quote, written after the postgate (breaks its `disableRule`).
    pub later_quote: Written,
}

/// The records the PDSes hold at the end, by kind, so that a test can say
/// what a per-account rule gives without asking any indexer.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    /// Live likes: like URI → (liker DID, subject URI).
    pub likes: BTreeMap<String, (String, String)>,
    /// Live reposts: repost URI → (reposter DID, subject URI).
    pub reposts: BTreeMap<String, (String, String)>,
    /// Live follows: follow URI → (follower DID, subject DID).
    pub follows: BTreeMap<String, (String, String)>,
    /// Live posts: URI → CID (the current version).
    pub posts: BTreeMap<String, String>,
}

impl Ledger {
    /// Accounts with at least one live like of `subject`.
    pub fn likers(&self, subject: &str) -> BTreeSet<&str> {
        distinct_creators(&self.likes, subject)
    }

    /// Accounts with at least one live repost of `subject`.
    pub fn reposters(&self, subject: &str) -> BTreeSet<&str> {
        distinct_creators(&self.reposts, subject)
    }

    /// Accounts with at least one live follow of `did`.
    pub fn followers(&self, did: &str) -> BTreeSet<&str> {
        distinct_creators(&self.follows, did)
    }

    /// Accounts `did` has at least one live follow of.
    pub fn follows_of(&self, did: &str) -> BTreeSet<&str> {
        self.follows
            .values()
            .filter(|(creator, _)| creator == did)
            .map(|(_, subject)| subject.as_str())
            .collect()
    }

    /// Live like records of `subject` (duplicates included).
    pub fn like_records(&self, subject: &str) -> usize {
        self.likes.values().filter(|(_, s)| s == subject).count()
    }

    fn wrote(&mut self, w: &Written, record: &Value) {
        let creator = w.did().to_string();
        let subject = || {
            record
                .pointer("/subject/uri")
                .or_else(|| record.get("subject"))
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string()
        };
        match w.collection() {
            LIKE => {
                self.likes.insert(w.uri.clone(), (creator, subject()));
            }
            REPOST => {
                self.reposts.insert(w.uri.clone(), (creator, subject()));
            }
            FOLLOW => {
                self.follows.insert(w.uri.clone(), (creator, subject()));
            }
            POST => {
                self.posts.insert(w.uri.clone(), w.cid.clone());
            }
            _ => {}
        }
    }

    /// What `createRecord` of `w` deleted: the same account's records of
    /// the same collection and subject.
    fn replaced_backlinks(&mut self, w: &Written, record: &Value) {
        let map = match w.collection() {
            LIKE => &mut self.likes,
            REPOST => &mut self.reposts,
            FOLLOW => &mut self.follows,
            _ => return,
        };
        let subject = record
            .pointer("/subject/uri")
            .or_else(|| record.get("subject"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let prefix = format!("at://{}/{}/", w.did(), w.collection());
        map.retain(|uri, (_, s)| !(uri.starts_with(&prefix) && s == subject));
    }

    fn deleted(&mut self, uri: &str) {
        self.likes.remove(uri);
        self.reposts.remove(uri);
        self.follows.remove(uri);
        self.posts.remove(uri);
    }

    fn deleted_account(&mut self, did: &str) {
        let prefix = format!("at://{did}/");
        for map in [&mut self.likes, &mut self.reposts, &mut self.follows] {
            map.retain(|uri, _| !uri.starts_with(&prefix));
        }
        self.posts.retain(|uri, _| !uri.starts_with(&prefix));
    }
}

fn distinct_creators<'a>(
    records: &'a BTreeMap<String, (String, String)>,
    subject: &str,
) -> BTreeSet<&'a str> {
    records
        .values()
        .filter(|(_, s)| s == subject)
        .map(|(creator, _)| creator.as_str())
        .collect()
}

/// What [`CountsScenario::run`] did.
///
/// Accounts (handles `<name>-<suffix>.test`, unique per run):
/// - ann: the author of every post the others interact with, of the
///   threadgates, postgate and list; follows bob.
/// - bob: duplicate likes, reposts and follows; mentioned, followed by ann
///   and in ann's list, so every gate but "nobody" lets him reply.
/// - cat: triple likes deleted in every order; follows ann (the follower
///   gate lets cat reply).
/// - dan: the outsider every gate refuses; quotes; deactivated at the end.
/// - eve: quotes; likes and follows; deactivated, then reactivated.
/// - fay: likes and follows; taken down at the end.
/// - gus: likes and follows; account deleted at the end.
/// - hal: changes handle twice.
#[derive(Debug, Clone)]
pub struct CountsScenario {
    /// The accounts by name, with their final handles.
    pub accounts: BTreeMap<&'static str, Account>,
    /// Duplicate likes, reposts and follows.
    pub duplicates: Duplicates,
    /// Three likes of one post deleted in each order: the six orders of
    /// deleting two of them, and one post whose three likes were all deleted.
    pub delete_orders: Vec<DeleteOrder>,
    /// A like moved to another post, and a like moved onto a post the same
    /// account already likes.
    pub moved_likes: Vec<MovedLike>,
    /// A post deleted and written again at the same URI.
    pub recreated: Recreated,
    /// A post quoted, edited and quoted again; and one quoted, then edited.
    pub edited_quotes: Vec<EditedQuotes>,
    /// One thread per [`GateRule`].
    pub gated: Vec<GatedThread>,
    /// Replies hidden with `hiddenReplies`.
    pub hidden: HiddenReplies,
    /// Quotes of a post with a postgate.
    pub postgated: Postgated,
    /// ann's post liked by bob, dan, eve, fay and gus (whose accounts then
    /// change status).
    pub status_post: Written,
    /// `(did, handles in order)`: hal's first handle and the two it changed to.
    pub handle_changes: (String, Vec<String>),
    /// dan's DID (deactivated at the end).
    pub deactivated: String,
    /// eve's DID (deactivated, then reactivated: active at the end).
    pub reactivated: String,
    /// fay's DID (taken down by the PDS admin).
    pub takendown: String,
    /// gus's DID (account deleted by the PDS admin).
    pub deleted_account: String,
    /// What the repositories hold at the end (likes, reposts, follows,
    /// posts), whatever the accounts' status.
    pub ledger: Ledger,
    /// ann's last post, after every account change: an indexer that has it
    /// has seen everything.
    pub last: Written,
}

/// Writes through one PDS, keeps the [`Ledger`], and lets indexers catch up.
struct Writer<'a, S> {
    pds: &'a Pds,
    ledger: Ledger,
    settle: S,
}

impl<S, F> Writer<'_, S>
where
    S: Fn() -> F,
    F: Future<Output = Result<(), XrpcError>>,
{
    /// Waits until the indexers have everything written so far: where a
    /// later write by one account depends on an earlier one by another
    /// (a reply on its root and on the root's threadgate, a quote on its
    /// post's postgate), the AppView, which indexes accounts in parallel,
    /// would otherwise see them in either order.
    async fn settle(&self) -> Result<(), XrpcError> {
        (self.settle)().await
    }

    /// `createRecord`. For a like, repost or follow the PDS deletes the
    /// account's earlier records of the same subject in the same commit
    /// (`getBacklinkConflicts`): the ledger does too.
    async fn create(
        &mut self,
        who: &Account,
        collection: &str,
        record: Value,
    ) -> Result<Written, XrpcError> {
        let w = self
            .pds
            .create_record(who, collection, record.clone())
            .await?;
        self.ledger.replaced_backlinks(&w, &record);
        self.ledger.wrote(&w, &record);
        Ok(w)
    }

    /// A like, repost or follow kept next to the account's earlier ones of
    /// the same subject: `applyWrites` (one create per commit) skips the
    /// PDS's duplicate check that `createRecord` does.
    async fn create_duplicate(
        &mut self,
        who: &Account,
        collection: &str,
        record: Value,
    ) -> Result<Written, XrpcError> {
        let mut written = self.create_many(who, collection, vec![record]).await?;
        written.pop().ok_or_else(|| XrpcError::Decode {
            method: "com.atproto.repo.applyWrites".into(),
            detail: "no result for one create".into(),
        })
    }

    async fn create_at(
        &mut self,
        who: &Account,
        collection: &str,
        rkey: &str,
        record: Value,
    ) -> Result<Written, XrpcError> {
        let w = self
            .pds
            .create_record_with_rkey(who, collection, rkey, record.clone())
            .await?;
        self.ledger.wrote(&w, &record);
        Ok(w)
    }

    async fn put(
        &mut self,
        who: &Account,
        collection: &str,
        rkey: &str,
        record: Value,
    ) -> Result<Written, XrpcError> {
        let w = self
            .pds
            .put_record(who, collection, rkey, record.clone())
            .await?;
        self.ledger.wrote(&w, &record);
        Ok(w)
    }

    /// Creates every record in one `applyWrites` commit (no duplicate check).
    async fn create_many(
        &mut self,
        who: &Account,
        collection: &str,
        records: Vec<Value>,
    ) -> Result<Vec<Written>, XrpcError> {
        let ops: Vec<WriteOp> = records
            .iter()
            .map(|r| WriteOp::create(collection, r.clone()))
            .collect();
        let results = self.pds.apply_writes(who, &ops).await?;
        let mut out = Vec::new();
        for (result, record) in results.into_iter().zip(&records) {
            let w = result.ok_or_else(|| XrpcError::Decode {
                method: "com.atproto.repo.applyWrites".into(),
                detail: "a create answered like a delete".into(),
            })?;
            self.ledger.wrote(&w, record);
            out.push(w);
        }
        Ok(out)
    }

    async fn delete(&mut self, who: &Account, w: &Written) -> Result<(), XrpcError> {
        self.pds
            .delete_record(who, w.collection(), w.rkey())
            .await?;
        self.ledger.deleted(&w.uri);
        Ok(())
    }

    async fn post(&mut self, who: &Account, text: &str) -> Result<Written, XrpcError> {
        self.create(who, POST, post(text)).await
    }

    async fn reply(
        &mut self,
        who: &Account,
        root: &Written,
        parent: &Written,
        text: &str,
    ) -> Result<Written, XrpcError> {
        let mut record = post(text);
        record["reply"] = json!({ "root": root.strong_ref(), "parent": parent.strong_ref() });
        self.create(who, POST, record).await
    }

    async fn quote(
        &mut self,
        who: &Account,
        quoted: &Written,
        text: &str,
    ) -> Result<Written, XrpcError> {
        let mut record = post(text);
        record["embed"] =
            json!({ "$type": "app.bsky.embed.record", "record": quoted.strong_ref() });
        self.create(who, POST, record).await
    }

    async fn like(&mut self, who: &Account, subject: &Written) -> Result<Written, XrpcError> {
        self.create(who, LIKE, like(subject)).await
    }

    async fn follow(&mut self, who: &Account, subject: &Account) -> Result<Written, XrpcError> {
        self.create(who, FOLLOW, follow(subject)).await
    }

    async fn threadgate(
        &mut self,
        who: &Account,
        root: &Written,
        allow: Option<Value>,
        hidden: &[&Written],
    ) -> Result<Written, XrpcError> {
        let mut record =
            json!({ "$type": THREADGATE, "post": root.uri, "createdAt": now_rfc3339() });
        if let Some(allow) = allow {
            record["allow"] = allow;
        }
        if !hidden.is_empty() {
            record["hiddenReplies"] = json!(hidden.iter().map(|w| &w.uri).collect::<Vec<_>>());
        }
        self.create_at(who, THREADGATE, root.rkey(), record).await
    }
}

fn post(text: &str) -> Value {
    json!({ "$type": POST, "text": text, "createdAt": now_rfc3339() })
}

fn like(subject: &Written) -> Value {
    json!({ "$type": LIKE, "subject": subject.strong_ref(), "createdAt": now_rfc3339() })
}

fn repost(subject: &Written) -> Value {
    json!({ "$type": REPOST, "subject": subject.strong_ref(), "createdAt": now_rfc3339() })
}

fn follow(subject: &Account) -> Value {
    json!({ "$type": FOLLOW, "subject": subject.did, "createdAt": now_rfc3339() })
}

/// The six orders of deleting two of three records.
const TWO_OF_THREE: [[usize; 2]; 6] = [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]];

impl CountsScenario {
    /// Runs the scenario on `network`'s PDS, waiting for the AppView
    /// ([`AppViewNetwork::process_all`]) wherever a write by one account
    /// depends on an earlier write by another, so that the AppView's answers
    /// are those of in-order indexing.
    pub async fn run(network: &AppViewNetwork) -> Result<CountsScenario, XrpcError> {
        let pds = network.pds();
        CountsScenario::run_with(&pds, || async { network.process_all().await.map(drop) }).await
    }

    /// Runs the scenario against `pds`: about 160 writes and account
    /// changes over 8 new accounts, calling `settle` (which should wait until
    /// every indexer under test has caught up with the PDS) at each point
    /// where the order of indexing across accounts matters. Can run several
    /// times on one network (handles get a fresh suffix each time).
    pub async fn run_with<S, F>(pds: &Pds, settle: S) -> Result<CountsScenario, XrpcError>
    where
        S: Fn() -> F,
        F: Future<Output = Result<(), XrpcError>>,
    {
        let suffix = unique_suffix();
        let mut accounts = BTreeMap::new();
        for name in ["ann", "bob", "cat", "dan", "eve", "fay", "gus", "hal"] {
            let account = pds.create_account(&format!("{name}-{suffix}.test")).await?;
            accounts.insert(name, account);
        }
        let acct = |name: &str| accounts[name].clone();
        let (ann, bob, cat, dan, mut eve, fay, gus, mut hal) = (
            acct("ann"),
            acct("bob"),
            acct("cat"),
            acct("dan"),
            acct("eve"),
            acct("fay"),
            acct("gus"),
            acct("hal"),
        );
        let mut w = Writer {
            pds,
            ledger: Ledger::default(),
            settle,
        };

        // The graph the gates test against: ann follows bob, cat follows
        // ann, bob is in ann's list.
        w.follow(&ann, &bob).await?;
        w.follow(&cat, &ann).await?;
        let list = w
            .create(
                &ann,
                "app.bsky.graph.list",
                json!({
                    "$type": "app.bsky.graph.list", "purpose": "app.bsky.graph.defs#curatelist",
                    "name": "repliers", "createdAt": now_rfc3339(),
                }),
            )
            .await?;
        w.create(
            &ann,
            "app.bsky.graph.listitem",
            json!({
                "$type": "app.bsky.graph.listitem", "subject": bob.did,
                "list": list.uri, "createdAt": now_rfc3339(),
            }),
        )
        .await?;

        // --- duplicates ---------------------------------------------------
        let dup_post = w
            .post(&ann, "liked twice by bob, three times by cat")
            .await?;
        let bob_likes = w
            .create_many(&bob, LIKE, vec![like(&dup_post), like(&dup_post)])
            .await?;
        let mut cat_likes = Vec::new();
        for _ in 0..3 {
            cat_likes.push(w.create_duplicate(&cat, LIKE, like(&dup_post)).await?);
        }
        let bob_reposts = w
            .create_many(&bob, REPOST, vec![repost(&dup_post), repost(&dup_post)])
            .await?;
        let cat_repost = w.create(&cat, REPOST, repost(&dup_post)).await?;
        let bob_follows = w
            .create_many(&bob, FOLLOW, vec![follow(&ann), follow(&ann)])
            .await?;
        let cat_follows_of_hal = w
            .create_many(&cat, FOLLOW, vec![follow(&hal), follow(&hal), follow(&hal)])
            .await?;
        let mut dup_deleted = Vec::new();
        for (who, record) in [
            (&bob, &bob_likes[0]),
            (&cat, &cat_likes[2]),
            (&bob, &bob_follows[0]),
            (&cat, &cat_follows_of_hal[0]),
            (&cat, &cat_follows_of_hal[2]),
        ] {
            w.delete(who, record).await?;
            dup_deleted.push(record.clone());
        }
        let duplicates = Duplicates {
            post: dup_post,
            bob_likes,
            cat_likes,
            bob_reposts,
            cat_repost,
            bob_follows,
            cat_follows_of_hal,
            deleted: dup_deleted,
        };

        // --- deletes in every order ---------------------------------------
        let mut delete_orders = Vec::new();
        let orders = TWO_OF_THREE
            .iter()
            .map(|o| o.to_vec())
            .chain([vec![2, 0, 1]]);
        for order in orders {
            let post = w
                .post(&ann, &format!("likes deleted in order {order:?}"))
                .await?;
            let mut likes = Vec::new();
            for _ in 0..3 {
                likes.push(w.create_duplicate(&cat, LIKE, like(&post)).await?);
            }
            for &i in &order {
                w.delete(&cat, &likes[i]).await?;
            }
            delete_orders.push(DeleteOrder {
                post,
                likes,
                deleted: order,
            });
        }

        // --- moved likes --------------------------------------------------
        let mut moved_likes = Vec::new();
        let from = w.post(&ann, "liked, then the like moves away").await?;
        let to = w.post(&ann, "the like moves here").await?;
        let before = w.like(&bob, &from).await?;
        let after = w.put(&bob, LIKE, before.rkey(), like(&to)).await?;
        moved_likes.push(MovedLike {
            from,
            to,
            before,
            after,
            already_liking: None,
        });
        let from = w
            .post(&ann, "liked, then the like moves to a liked post")
            .await?;
        let to = w.post(&ann, "already liked by the same account").await?;
        let before = w.like(&bob, &from).await?;
        let already = w.like(&bob, &to).await?;
        // putRecord, unlike createRecord, keeps the other like of `to`.
        let after = w.put(&bob, LIKE, before.rkey(), like(&to)).await?;
        moved_likes.push(MovedLike {
            from,
            to,
            before,
            after,
            already_liking: Some(already),
        });

        // --- a post deleted and written again at its URI -------------------
        let before = w.post(&ann, "first version, to be deleted").await?;
        w.settle().await?;
        let rec_like = w.like(&bob, &before).await?;
        let rec_reply = w
            .reply(&cat, &before, &before, "reply to the first version")
            .await?;
        let rec_quote = w.quote(&eve, &before, "quoting the first version").await?;
        w.settle().await?;
        w.delete(&ann, &before).await?;
        let after = w
            .create_at(&ann, POST, before.rkey(), post("second version, same URI"))
            .await?;
        let recreated = Recreated {
            before,
            after,
            like: rec_like,
            reply: rec_reply,
            quote: rec_quote,
        };

        // --- quotes of edited posts ---------------------------------------
        let mut edited_quotes = Vec::new();
        for requote in [true, false] {
            let before = w.post(&ann, "quoted, then edited").await?;
            w.settle().await?;
            let quote_of_before = w.quote(&dan, &before, "quoting the first version").await?;
            w.settle().await?;
            let after = w
                .put(&ann, POST, before.rkey(), post("edited after a quote"))
                .await?;
            let quote_of_after = if requote {
                w.settle().await?;
                Some(w.quote(&eve, &after, "quoting the edited version").await?)
            } else {
                None
            };
            edited_quotes.push(EditedQuotes {
                before,
                after,
                quote_of_before,
                quote_of_after,
            });
        }

        // --- threadgates --------------------------------------------------
        let mut gated = Vec::new();
        for rule in [
            GateRule::Mention,
            GateRule::Following,
            GateRule::Follower,
            GateRule::List,
            GateRule::Nobody,
        ] {
            let root = if rule == GateRule::Mention {
                let text = format!("only @{} may reply", bob.handle);
                let mention = facet(
                    &text,
                    &format!("@{}", bob.handle),
                    json!({ "$type": "app.bsky.richtext.facet#mention", "did": bob.did }),
                );
                let mut record = post(&text);
                record["facets"] = json!([mention]);
                w.create(&ann, POST, record).await?
            } else {
                w.post(&ann, &format!("gated: {rule:?}")).await?
            };
            let allow = match rule {
                GateRule::Mention => json!([{ "$type": "app.bsky.feed.threadgate#mentionRule" }]),
                GateRule::Following => {
                    json!([{ "$type": "app.bsky.feed.threadgate#followingRule" }])
                }
                GateRule::Follower => json!([{ "$type": "app.bsky.feed.threadgate#followerRule" }]),
                GateRule::List => {
                    json!([{ "$type": "app.bsky.feed.threadgate#listRule", "list": list.uri }])
                }
                GateRule::Nobody | GateRule::NobodyAfterReply => json!([]),
            };
            let gate = w.threadgate(&ann, &root, Some(allow), &[]).await?;
            w.settle().await?;
            let mut allowed = vec![
                w.reply(&ann, &root, &root, "the author may always reply")
                    .await?,
            ];
            let mut denied = Vec::new();
            match rule {
                GateRule::Follower => {
                    allowed.push(w.reply(&cat, &root, &root, "a follower").await?)
                }
                GateRule::Nobody => denied.push(w.reply(&bob, &root, &root, "nobody may").await?),
                _ => allowed.push(w.reply(&bob, &root, &root, "allowed").await?),
            }
            denied.push(w.reply(&dan, &root, &root, "not allowed").await?);
            let nested_denied = if rule == GateRule::Mention {
                w.settle().await?;
                let parent = allowed[1].clone();
                Some(w.reply(&dan, &root, &parent, "not allowed either").await?)
            } else {
                None
            };
            gated.push(GatedThread {
                rule,
                root,
                gate,
                allowed,
                denied,
                nested_denied,
            });
        }
        let root = w.post(&ann, "replied to, then gated").await?;
        w.settle().await?;
        let early = w.reply(&dan, &root, &root, "before the gate").await?;
        w.settle().await?;
        let gate = w.threadgate(&ann, &root, Some(json!([])), &[]).await?;
        w.settle().await?;
        let late = w.reply(&dan, &root, &root, "after the gate").await?;
        gated.push(GatedThread {
            rule: GateRule::NobodyAfterReply,
            root,
            gate,
            allowed: Vec::new(),
            denied: vec![early, late],
            nested_denied: None,
        });

        // --- hidden replies -----------------------------------------------
        let root = w.post(&ann, "some replies get hidden").await?;
        w.settle().await?;
        let replies = vec![
            w.reply(&bob, &root, &root, "a kept reply").await?,
            w.reply(&dan, &root, &root, "a reply the author hides")
                .await?,
        ];
        w.settle().await?;
        let gate = w.threadgate(&ann, &root, None, &[&replies[1]]).await?;
        w.settle().await?;
        let later_reply = w
            .reply(&cat, &root, &root, "a reply after the hiding")
            .await?;
        let hidden = HiddenReplies {
            hidden: replies[1].clone(),
            root,
            replies,
            gate,
            later_reply,
        };

        // --- a postgate ---------------------------------------------------
        let gpost = w.post(&ann, "quotes get detached").await?;
        w.settle().await?;
        let detached_quote = w.quote(&eve, &gpost, "a quote the author detaches").await?;
        w.settle().await?;
        let pg = w
            .create_at(
                &ann,
                POSTGATE,
                gpost.rkey(),
                json!({
                    "$type": POSTGATE, "post": gpost.uri, "createdAt": now_rfc3339(),
                    "detachedEmbeddingUris": [detached_quote.uri],
                    "embeddingRules": [{ "$type": "app.bsky.feed.postgate#disableRule" }],
                }),
            )
            .await?;
        w.settle().await?;
        let later_quote = w
            .quote(&dan, &gpost, "a quote after quoting was disabled")
            .await?;
        let postgated = Postgated {
            post: gpost,
            detached_quote,
            gate: pg,
            later_quote,
        };

        // --- accounts whose status changes --------------------------------
        let status_post = w.post(&ann, "liked by accounts that go away").await?;
        for who in [&bob, &dan, &eve, &fay, &gus] {
            w.like(who, &status_post).await?;
        }
        for who in [&eve, &fay, &gus] {
            w.follow(who, &ann).await?;
        }
        w.follow(&dan, &hal).await?;
        w.settle().await?;

        // Handle changes.
        let mut handles = vec![hal.handle.clone()];
        for name in ["hal2", "hal3"] {
            let handle = format!("{name}-{suffix}.test");
            pds.update_handle(&mut hal, &handle).await?;
            handles.push(handle);
        }

        // Deactivation, deactivation + reactivation, takedown, deletion.
        pds.deactivate_account(&dan).await?;
        pds.deactivate_account(&eve).await?;
        pds.activate_account(&eve).await?;
        pds.login(&mut eve).await?;
        pds.takedown(&fay.did, true).await?;
        pds.delete_account(&gus.did).await?;
        w.ledger.deleted_account(&gus.did);

        let last = w.post(&ann, "the end").await?;
        w.settle().await?;

        accounts.insert("eve", eve.clone());
        accounts.insert("hal", hal.clone());
        Ok(CountsScenario {
            accounts,
            duplicates,
            delete_orders,
            moved_likes,
            recreated,
            edited_quotes,
            gated,
            hidden,
            postgated,
            status_post,
            handle_changes: (hal.did.clone(), handles),
            deactivated: dan.did.clone(),
            reactivated: eve.did.clone(),
            takendown: fay.did.clone(),
            deleted_account: gus.did.clone(),
            ledger: w.ledger,
            last,
        })
    }

    /// The account called `name` (`ann` … `hal`).
    ///
    /// # Panics
    ///
    /// If there is no such account.
    pub fn account(&self, name: &str) -> &Account {
        &self.accounts[name]
    }

    /// Every DID of the scenario (including the deleted account's).
    pub fn dids(&self) -> Vec<&str> {
        self.accounts.values().map(|a| a.did.as_str()).collect()
    }

    /// Every post live at the end (in the repositories, whatever the
    /// author's status), by URI.
    pub fn posts(&self) -> Vec<&str> {
        self.ledger.posts.keys().map(String::as_str).collect()
    }
}
