//! The dataset: a stream of repository operations shaped like the network's,
//! turned into rows by the real transform (`skyhouse_transform::apply` for
//! commits, the Jetstream [`Decoder`] for identity and account events), so
//! the rows are exactly what the indexer writes.
//!
//! - Accounts: `dids` DIDs, each acting with Zipf–Mandelbrot activity
//!   ([`Zipf`], q = 50: the busiest ~0.2% of all records, the top 1% of
//!   accounts about half, the median a handful). An account's first record
//!   brings its `#identity` (handle) and `#account` (active) events.
//! - Operations: the collection mix of the Jetstream corpus ([`MIX`]: likes
//!   about two thirds, then posts, reposts, follows, blocks, list items,
//!   profiles, threadgates, lists, …, ~0.75% other apps' collections that
//!   have no typed table, 0.01% invalid records that go to dead letters),
//!   plus 3% deletes of recent records and 1% replays of earlier operations
//!   (the same version again, sometimes after the record's delete). Profiles,
//!   statuses, declarations, lists and threadgates are updated as often as
//!   created once they exist; 2% of post operations edit a recent post.
//! - Subjects: likes, reposts, replies and quotes pick a post in proportion
//!   to a heavy-tailed weight each post gets ([`pareto_weight`]): mostly
//!   among the newest posts (a day's worth), some over the last weeks, 15%
//!   over all posts ever; at 100M records a few posts collect 100k+ likes.
//!   Follows, blocks and mentions pick accounts with the activity law.
//! - Time: records spread over the phase's time range, with a daily cycle
//!   (±40%) and activity growing from half to 1.5× the average over the
//!   range (the bulk load: two years); record keys and revs are TIDs of
//!   the creation and commit times (a client clock a second or two behind).
//! - Accounts hidden: 1% of accounts get an `#account` event during the
//!   bulk range (0.5% deactivated, 0.3% taken down, 0.1% suspended, 0.1%
//!   deleted) and act no more; [`Phase::deletions`] more are deleted in a
//!   later phase.
//! - Text: posts in ten languages from the built-in vocabulary
//!   ([`crate::text`]), with hashtags, links, mentions, images, link cards,
//!   quotes, replies and self-labels; 0.5% carry a unique token (a rare
//!   search term).
//!
//! Everything is drawn from one seeded generator, so a seed and a time
//! range give the same operations every time.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use skyhouse_atproto::cbor::{Map, Value};
use skyhouse_atproto::cid::{Cid, CODEC_DAG_CBOR, CODEC_RAW};
use skyhouse_transform::{apply, Action, CollectionFilter, Decoder, Op, Rows};

use crate::clock::{datetime, tid, tid_str, tid_string};
use crate::dist::{pareto_weight, WeightedRing, Zipf};
use crate::text::{Language, DOMAINS, EMOJI, HANDLE_DOMAINS, LANGUAGES, NAMES, TAGS};

/// What an operation of the mix does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Like,
    Post,
    Repost,
    Follow,
    Block,
    ListItem,
    Profile,
    Threadgate,
    Postgate,
    List,
    ListBlock,
    StarterPack,
    FeedGenerator,
    ActorStatus,
    ChatDeclaration,
    NotificationDeclaration,
    ContentVisibility,
    Verification,
    Other,
    Invalid,
}

/// The operation mix (before deletes and replays), relative weights: the
/// Jetstream corpus's proportions (pkg/sources/testdata/corpus.jsonl and
/// the live stream it was captured from).
const MIX: &[(Kind, f64)] = &[
    (Kind::Like, 0.690),
    (Kind::Post, 0.125),
    (Kind::Repost, 0.090),
    (Kind::Follow, 0.055),
    (Kind::Block, 0.010),
    (Kind::ListItem, 0.008),
    (Kind::Profile, 0.006),
    (Kind::Threadgate, 0.004),
    (Kind::Postgate, 0.001),
    (Kind::List, 0.001),
    (Kind::ListBlock, 0.0005),
    (Kind::StarterPack, 0.0003),
    (Kind::FeedGenerator, 0.0001),
    (Kind::ActorStatus, 0.001),
    (Kind::ChatDeclaration, 0.0005),
    (Kind::NotificationDeclaration, 0.0003),
    (Kind::ContentVisibility, 0.0001),
    (Kind::Verification, 0.0001),
    (Kind::Other, 0.0075),
    (Kind::Invalid, 0.0001),
];

/// Share of operations that delete a recent record.
const DELETE_SHARE: f64 = 0.03;
/// Share of operations that replay an earlier one.
const REPLAY_SHARE: f64 = 0.01;

/// Collections of other apps (no typed table: `records` only).
const OTHER_COLLECTIONS: &[&str] = &[
    "fm.teal.alpha.feed.play",
    "place.stream.chat.message",
    "sh.tangled.feed.star",
    "blue.flashes.feed.post",
    "app.popsky.review",
];

const POST: &str = "app.bsky.feed.post";
const LIKE: &str = "app.bsky.feed.like";
const REPOST: &str = "app.bsky.feed.repost";
const FOLLOW: &str = "app.bsky.graph.follow";
const BLOCK: &str = "app.bsky.graph.block";
const LIST: &str = "app.bsky.graph.list";
const LIST_ITEM: &str = "app.bsky.graph.listitem";
const THREADGATE: &str = "app.bsky.feed.threadgate";
const POSTGATE: &str = "app.bsky.feed.postgate";

/// Collections whose records the generator deletes (index = `Deletable::kind`).
const DELETABLE: &[&str] = &[LIKE, REPOST, FOLLOW, POST, BLOCK, LIST_ITEM, THREADGATE];

/// Label value some accounts hold (`actor_labels`), for a label feed.
pub const LABEL: &str = "artist";

/// Hidden statuses by share of hidden accounts: (status, per cent).
const HIDDEN: &[(&str, u64)] = &[
    ("deactivated", 50),
    ("takendown", 30),
    ("suspended", 10),
    ("deleted", 10),
];

/// One stretch of the stream: how many record operations over which times.
#[derive(Debug, Clone, Copy)]
pub struct Phase {
    /// Record operations (creates, updates, deletes, replays).
    pub records: u64,
    /// First operation's time, Unix microseconds.
    pub start_us: u64,
    /// Last operation's time, Unix microseconds.
    pub end_us: u64,
    /// Activity grows over the range and follows the daily cycle (the bulk
    /// load); otherwise it is flat (live traffic).
    pub shaped: bool,
    /// Accounts hidden during this phase: the 1% of all accounts
    /// ([`HIDDEN`]) for the first phase (true), none otherwise.
    pub hide_accounts: bool,
    /// Accounts deleted during this phase besides those.
    pub deletions: u32,
}

/// A recent record that a delete may remove.
#[derive(Debug, Clone, Copy)]
struct Deletable {
    did: u32,
    /// Index into [`DELETABLE`]; `u8::MAX` once deleted.
    kind: u8,
    tid: u64,
    /// The liked post (likes only), else `u32::MAX`.
    subject: u32,
}

/// An operation kept for replaying.
#[derive(Debug, Clone)]
struct Stored {
    did: u32,
    collection: &'static str,
    rkey: String,
    action: Action,
    cid: Option<Cid>,
    record: Option<Value<'static>>,
    version: u64,
}

/// Counts of what was generated.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GenStats {
    /// Record operations (creates, updates, deletes, replays).
    pub records: u64,
    /// Creates.
    pub creates: u64,
    /// Updates.
    pub updates: u64,
    /// Deletes.
    pub deletes: u64,
    /// Replays of an earlier operation.
    pub replays: u64,
    /// Records that do not fit their lexicon (dead letters).
    pub invalid: u64,
    /// `#identity` events.
    pub identity_events: u64,
    /// `#account` events.
    pub account_events: u64,
    /// Accounts that acted at least once.
    pub accounts_seen: u64,
    /// Accounts hidden (deactivated, taken down, suspended, deleted).
    pub accounts_hidden: u64,
    /// Posts created.
    pub posts: u64,
    /// Operations per collection.
    pub by_collection: BTreeMap<String, u64>,
}

/// Values the generated data is known to hold, for the benchmark's queries.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    /// Terms that occur in exactly one post each (of a visible account).
    pub rare_terms: Vec<String>,
    /// Busy visible accounts, busiest first.
    pub authors: Vec<String>,
    /// Handles of visible accounts (search terms for actor search).
    pub handles: Vec<String>,
    /// Post URIs of visible accounts (a pinned feed of two pages).
    pub pinned: Vec<String>,
    /// Accounts whose deletion is pending a cleanup job, oldest first.
    pub deleted_accounts: Vec<String>,
    /// Visible accounts holding [`LABEL`].
    pub label_holders: Vec<String>,
}

/// A 64-bit mix of `x` (SplitMix64's finaliser).
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn bit(bits: &[u64], i: u32) -> bool {
    bits[(i / 64) as usize] & (1 << (i % 64)) != 0
}

fn set_bit(bits: &mut [u64], i: u32) {
    bits[(i / 64) as usize] |= 1 << (i % 64);
}

fn s(text: &'static str) -> Value<'static> {
    Value::String(Cow::Borrowed(text))
}

fn owned(text: String) -> Value<'static> {
    Value::String(Cow::Owned(text))
}

fn obj(entries: Vec<(&'static str, Value<'static>)>) -> Value<'static> {
    let mut m = Map::new();
    for (k, v) in entries {
        m.insert(k, v);
    }
    Value::Map(m)
}

fn strong_ref(uri: String, cid: &Cid) -> Value<'static> {
    obj(vec![("uri", owned(uri)), ("cid", owned(cid.to_string()))])
}

fn blob(cid: Cid, mime: &'static str, size: i64) -> Value<'static> {
    obj(vec![
        ("$type", s("blob")),
        ("ref", Value::Link(cid)),
        ("mimeType", s(mime)),
        ("size", Value::Integer(size)),
    ])
}

/// The generator: state that spans operations (who acted, recent posts and
/// records, the clock), advanced one phase at a time.
#[derive(Debug)]
pub struct Generator {
    rng: fastrand::Rng,
    seed: u64,
    dids: u32,
    /// `did:plc:` + 24 characters per account, back to back.
    did_text: String,
    activity: Zipf,
    seen: Vec<u64>,
    hidden: Vec<u64>,
    has_profile: Vec<u64>,
    has_status: Vec<u64>,
    has_chat: Vec<u64>,
    /// Each account's first list's TID.
    list_of: HashMap<u32, u64>,
    /// Every list: (owner, TID).
    lists: Vec<(u32, u64)>,
    /// Every threadgate: (owner, the gated post's TID).
    threadgates: Vec<(u32, u64)>,
    post_did: Vec<u32>,
    post_tid: Vec<u64>,
    /// The thread root of each post (itself for a top-level post).
    post_root: Vec<u32>,
    /// Live likes per post, as generated.
    post_likes: Vec<u32>,
    recent: WeightedRing,
    /// Posts that count as the newest (about a day's worth at 100M).
    hot: u64,
    deletable: Vec<Deletable>,
    deletable_next: usize,
    replayable: Vec<Stored>,
    replayable_next: usize,
    /// Pending `#account` events: (time µs, account, status), latest first.
    account_changes: Vec<(u64, u32, &'static str)>,
    decoder: Decoder,
    words: Vec<Zipf>,
    tags: Zipf,
    mix_cumulative: Vec<(Kind, f64)>,
    phase: Phase,
    /// Now, Unix microseconds (fractional: the next gap is added).
    now_us: f64,
    /// Record operations done in this phase.
    done: u64,
    /// The next `#identity` / `#account` event's seq.
    seq: i64,
    /// Counts of everything generated.
    pub stats: GenStats,
    /// Values the data holds, for queries.
    pub samples: Samples,
}

impl Generator {
    /// A generator over `dids` accounts with `seed`, and the posts it
    /// expects (`expected_records`: sizes its ring of recent posts).
    pub fn new(dids: u32, seed: u64, expected_records: u64) -> Generator {
        let dids = dids.max(10);
        let mut did_text = String::with_capacity(dids as usize * 32);
        for i in 0..dids {
            did_text.push_str("did:plc:");
            let mut v = mix64(seed ^ u64::from(i).wrapping_mul(0x9E37_79B9));
            for k in 0..24 {
                if k == 12 {
                    v = mix64(v);
                }
                did_text.push(char::from(
                    b"abcdefghijklmnopqrstuvwxyz234567"[(v & 31) as usize],
                ));
                v >>= 5;
            }
        }
        let words_per_bitset = (dids as usize).div_ceil(64);
        // Posts are ~12.5% of records; the ring holds about two weeks of
        // them over a two-year range, the hot part about a day.
        let posts = (expected_records as f64 * 0.12) as u64;
        let ring = (posts / 50).clamp(1024, 1 << 18) as usize;
        let total: f64 = MIX.iter().map(|(_, w)| w).sum();
        let mut acc = 0.0;
        let mix_cumulative = MIX
            .iter()
            .map(|(k, w)| {
                acc += w / total;
                (*k, acc)
            })
            .collect();
        Generator {
            rng: fastrand::Rng::with_seed(seed),
            seed,
            dids,
            did_text,
            activity: Zipf::new(dids, 50.0),
            seen: vec![0; words_per_bitset],
            hidden: vec![0; words_per_bitset],
            has_profile: vec![0; words_per_bitset],
            has_status: vec![0; words_per_bitset],
            has_chat: vec![0; words_per_bitset],
            list_of: HashMap::new(),
            lists: Vec::new(),
            threadgates: Vec::new(),
            post_did: Vec::with_capacity(posts as usize),
            post_tid: Vec::with_capacity(posts as usize),
            post_root: Vec::with_capacity(posts as usize),
            post_likes: Vec::with_capacity(posts as usize),
            recent: WeightedRing::new(ring),
            hot: (ring as u64 / 14).max(64),
            deletable: Vec::with_capacity(1 << 16),
            deletable_next: 0,
            replayable: Vec::with_capacity(4096),
            replayable_next: 0,
            account_changes: Vec::new(),
            decoder: Decoder::new(CollectionFilter::default()),
            words: LANGUAGES
                .iter()
                .map(|l| Zipf::new(l.words.len() as u32, 1.5))
                .collect(),
            tags: Zipf::new(TAGS.len() as u32, 1.0),
            mix_cumulative,
            phase: Phase {
                records: 0,
                start_us: 0,
                end_us: 0,
                shaped: false,
                hide_accounts: false,
                deletions: 0,
            },
            now_us: 0.0,
            done: 0,
            seq: 1,
            stats: GenStats::default(),
            samples: Samples::default(),
        }
    }

    /// Accounts in the dataset.
    pub fn dids(&self) -> u32 {
        self.dids
    }

    /// Account `i`'s DID.
    pub fn did(&self, i: u32) -> &str {
        let at = i as usize * 32;
        &self.did_text[at..at + 32]
    }

    /// Account `i`'s handle: `<name><i>.bsky.social`, or a domain of its own
    /// for one account in twenty.
    pub fn handle(&self, i: u32) -> String {
        let h = mix64(self.seed ^ 0x4a4e ^ u64::from(i));
        let name = NAMES[(h % NAMES.len() as u64) as usize];
        if h.is_multiple_of(20) {
            let tld = HANDLE_DOMAINS[((h >> 8) % HANDLE_DOMAINS.len() as u64) as usize];
            format!("{name}{i}.{tld}")
        } else {
            format!("{name}{i}.bsky.social")
        }
    }

    /// The status account `i` is hidden with (1% of accounts), if any.
    fn hidden_status(&self, i: u32) -> Option<&'static str> {
        let h = mix64(self.seed ^ 0x5eed_0001 ^ (u64::from(i) << 20));
        if h % 10_000 >= 100 {
            return None;
        }
        let mut pick = (h / 10_000) % 100;
        for (status, share) in HIDDEN {
            if pick < *share {
                return Some(status);
            }
            pick -= share;
        }
        Some("deactivated")
    }

    /// Whether account `i` holds [`LABEL`]: 1% of visible accounts, and one
    /// in ten of the busiest 1% (a labeler labels who it sees).
    fn holds_label(&self, i: u32) -> bool {
        let busy = i < (self.dids / 100).max(10) && i % 10 == 3;
        (busy || mix64(self.seed ^ 0x1abe1 ^ u64::from(i)).is_multiple_of(100))
            && self.hidden_status(i).is_none()
    }

    /// Whether account `i` is hidden now.
    pub fn is_hidden(&self, i: u32) -> bool {
        bit(&self.hidden, i)
    }

    /// Start `phase`; [`Generator::fill`] then runs it.
    pub fn begin(&mut self, phase: Phase) {
        self.phase = phase;
        self.done = 0;
        self.now_us = phase.start_us as f64;
        let span = phase.end_us.saturating_sub(phase.start_us).max(1);
        let mut changes = Vec::new();
        if phase.hide_accounts {
            for i in 0..self.dids {
                if let Some(status) = self.hidden_status(i) {
                    let at = phase.start_us + mix64(self.seed ^ u64::from(i)) % span;
                    changes.push((at, i, status));
                }
            }
        }
        // Deletions: visible accounts of middling activity.
        let mut picked = 0;
        let mut i = (self.dids / 20).max(1);
        while picked < phase.deletions && i < self.dids {
            if self.hidden_status(i).is_none() && !self.is_hidden(i) && bit(&self.seen, i) {
                let at = phase.start_us + mix64(self.seed ^ 0xde1 ^ u64::from(i)) % span;
                changes.push((at, i, "deleted"));
                picked += 1;
            }
            i += 7;
        }
        changes.sort_by_key(|c| std::cmp::Reverse(c.0));
        self.account_changes = changes;
    }

    /// Whether the phase's operations are all generated.
    pub fn finished(&self) -> bool {
        self.done >= self.phase.records
    }

    /// Generate operations into `rows` until it holds `max_rows` rows or the
    /// phase ends; returns the record operations generated. With `transform`
    /// false the operations are built and dropped without `apply` (to time
    /// the generation alone).
    pub fn fill(&mut self, rows: &mut Rows, max_rows: usize, transform: bool) -> u64 {
        let before = self.done;
        while self.done < self.phase.records && rows.len() < max_rows {
            self.step(rows, transform);
        }
        if self.done >= self.phase.records {
            // The phase's remaining account changes happen by its end.
            while let Some((at, did, status)) = self.account_changes.pop() {
                self.account_event(rows, did, status, at);
            }
        }
        self.done - before
    }

    /// The activity density at `t` relative to the average: a daily cycle
    /// (peak around 18:00 UTC) times a ramp from 0.5 to 1.5 over the range.
    fn density(&self, t_us: f64) -> f64 {
        if !self.phase.shaped {
            return 1.0;
        }
        let p = &self.phase;
        let x =
            ((t_us - p.start_us as f64) / (p.end_us - p.start_us).max(1) as f64).clamp(0.0, 1.0);
        let hour = (t_us / 3.6e9) % 24.0;
        let daily = 1.0 + 0.4 * ((hour - 12.0) / 24.0 * std::f64::consts::TAU).sin();
        (0.5 + x) * daily
    }

    fn advance(&mut self) -> u64 {
        let p = self.phase;
        let span = (p.end_us.saturating_sub(p.start_us)).max(1) as f64;
        let rate = p.records.max(1) as f64 / span * self.density(self.now_us);
        let gap = -(self.rng.f64().max(1e-12)).ln() / rate;
        self.now_us = (self.now_us + gap).min(p.end_us as f64);
        self.now_us as u64
    }

    fn step(&mut self, rows: &mut Rows, transform: bool) {
        let now = self.advance();
        while self.account_changes.last().is_some_and(|c| c.0 <= now) {
            if let Some((at, did, status)) = self.account_changes.pop() {
                self.account_event(rows, did, status, at);
            }
        }
        self.done += 1;
        self.stats.records += 1;
        let r = self.rng.f64();
        if r < DELETE_SHARE && self.delete(rows, now, transform) {
            return;
        }
        if (DELETE_SHARE..DELETE_SHARE + REPLAY_SHARE).contains(&r)
            && self.replay(rows, now, transform)
        {
            return;
        }
        let did = self.actor(rows, now);
        let u = self.rng.f64();
        let kind = self
            .mix_cumulative
            .iter()
            .find(|(_, c)| u < *c)
            .map_or(Kind::Like, |(k, _)| *k);
        self.create(rows, did, kind, now, transform);
    }

    /// An account that acts now (visible), announced on its first record.
    fn actor(&mut self, rows: &mut Rows, now: u64) -> u32 {
        let mut did = self.activity.draw(&mut self.rng);
        for _ in 0..4 {
            if !self.is_hidden(did) {
                break;
            }
            did = self.activity.draw(&mut self.rng);
        }
        self.announce(rows, did, now);
        did
    }

    /// The `#identity` and `#account` events of an account's first record.
    fn announce(&mut self, rows: &mut Rows, did: u32, now: u64) {
        if bit(&self.seen, did) {
            return;
        }
        set_bit(&mut self.seen, did);
        self.stats.accounts_seen += 1;
        let d = self.did(did).to_owned();
        let handle = self.handle(did);
        let time = datetime(now.saturating_sub(2_000_000));
        let seq = self.seq;
        self.seq += 2;
        let identity = format!(
            r#"{{"did":"{d}","time_us":{now},"kind":"identity","identity":{{"did":"{d}","handle":"{handle}","seq":{seq},"time":"{time}"}}}}"#
        );
        let account = format!(
            r#"{{"did":"{d}","time_us":{now},"kind":"account","account":{{"active":true,"did":"{d}","seq":{},"time":"{time}"}}}}"#,
            seq + 1
        );
        self.decoder.jetstream(identity.as_bytes(), rows);
        self.decoder.jetstream(account.as_bytes(), rows);
        self.stats.identity_events += 1;
        self.stats.account_events += 1;
        if self.samples.handles.len() < 64
            && self.hidden_status(did).is_none()
            && did.is_multiple_of(3)
        {
            self.samples.handles.push(handle);
        }
        if self.holds_label(did) && self.samples.label_holders.len() < 100_000 {
            self.samples.label_holders.push(d);
        }
    }

    /// An `#account` event hiding `did` with `status`.
    fn account_event(&mut self, rows: &mut Rows, did: u32, status: &'static str, at: u64) {
        if self.is_hidden(did) {
            return;
        }
        set_bit(&mut self.hidden, did);
        self.stats.accounts_hidden += 1;
        self.stats.account_events += 1;
        let d = self.did(did).to_owned();
        let time = datetime(at);
        let seq = self.seq;
        self.seq += 1;
        let line = format!(
            r#"{{"did":"{d}","time_us":{at},"kind":"account","account":{{"active":false,"did":"{d}","seq":{seq},"status":"{status}","time":"{time}"}}}}"#
        );
        self.decoder.jetstream(line.as_bytes(), rows);
        if status == "deleted" {
            self.samples.deleted_accounts.push(d);
        }
    }

    /// Apply one operation (or only build it) and count it.
    #[allow(clippy::too_many_arguments)]
    fn emit(
        &mut self,
        rows: &mut Rows,
        did: u32,
        collection: &'static str,
        rkey: &str,
        action: Action,
        cid: Option<Cid>,
        record: Option<Value<'static>>,
        version: u64,
        now: u64,
        transform: bool,
    ) {
        *self
            .stats
            .by_collection
            .entry(collection.to_owned())
            .or_default() += 1;
        match action {
            Action::Create => self.stats.creates += 1,
            Action::Update => self.stats.updates += 1,
            Action::Delete => self.stats.deletes += 1,
        }
        let indexed_at = (now / 1_000_000) as u32 + (self.rng.u32(..4) / 3);
        if transform {
            let at = did as usize * 32;
            apply(
                &Op {
                    did: &self.did_text[at..at + 32],
                    collection,
                    rkey,
                    action,
                    cid,
                    record: record.as_ref(),
                    version,
                    indexed_at,
                },
                rows,
            );
        }
        // Keep one operation in fifty for replays.
        if self.rng.u32(..50) == 0 {
            let stored = Stored {
                did,
                collection,
                rkey: rkey.to_owned(),
                action,
                cid,
                record,
                version,
            };
            if self.replayable.len() < 4096 {
                self.replayable.push(stored);
            } else {
                self.replayable[self.replayable_next] = stored;
                self.replayable_next = (self.replayable_next + 1) % 4096;
            }
        }
    }

    /// Replay a kept operation: the same version again (a reconnect's
    /// overlap), maybe after the record's delete. False when none is kept.
    fn replay(&mut self, rows: &mut Rows, now: u64, transform: bool) -> bool {
        if self.replayable.is_empty() {
            return false;
        }
        let i = self.rng.usize(..self.replayable.len());
        let op = self.replayable[i].clone();
        if self.is_hidden(op.did) {
            return false;
        }
        self.stats.replays += 1;
        *self
            .stats
            .by_collection
            .entry(op.collection.to_owned())
            .or_default() += 1;
        if transform {
            let at = op.did as usize * 32;
            apply(
                &Op {
                    did: &self.did_text[at..at + 32],
                    collection: op.collection,
                    rkey: &op.rkey,
                    action: op.action,
                    cid: op.cid,
                    record: op.record.as_ref(),
                    version: op.version,
                    indexed_at: (now / 1_000_000) as u32,
                },
                rows,
            );
        }
        true
    }

    /// Delete a recent record. False when none is at hand.
    fn delete(&mut self, rows: &mut Rows, now: u64, transform: bool) -> bool {
        for _ in 0..4 {
            if self.deletable.is_empty() {
                return false;
            }
            let i = self.rng.usize(..self.deletable.len());
            let d = self.deletable[i];
            if d.kind == u8::MAX || self.is_hidden(d.did) {
                continue;
            }
            self.deletable[i].kind = u8::MAX;
            if d.subject != u32::MAX {
                let likes = &mut self.post_likes[d.subject as usize];
                *likes = likes.saturating_sub(1);
            }
            let mut buf = [0u8; 13];
            let rkey = tid_str(d.tid, &mut buf).to_owned();
            let version = self.rev(now);
            self.emit(
                rows,
                d.did,
                DELETABLE[d.kind as usize],
                &rkey,
                Action::Delete,
                None,
                None,
                version,
                now,
                transform,
            );
            return true;
        }
        false
    }

    fn deletable(&mut self, did: u32, collection: &str, tid: u64, subject: u32) {
        let Some(kind) = DELETABLE.iter().position(|c| *c == collection) else {
            return;
        };
        let d = Deletable {
            did,
            kind: kind as u8,
            tid,
            subject,
        };
        if self.deletable.len() < 1 << 16 {
            self.deletable.push(d);
        } else {
            self.deletable[self.deletable_next] = d;
            self.deletable_next = (self.deletable_next + 1) & ((1 << 16) - 1);
        }
    }

    /// The commit rev of an operation now (a TID a little after the record's key).
    fn rev(&mut self, now: u64) -> u64 {
        tid(now, self.rng.u16(..1024))
    }

    /// A record key for a record created now: the client's clock is a
    /// second or two behind the commit.
    fn key_tid(&mut self, now: u64) -> (u64, u64) {
        let created = now.saturating_sub(self.rng.u64(..2_000_000));
        (tid(created, self.rng.u16(..1024)), created)
    }

    /// A CID of `seed`'s content.
    fn cid(&self, codec: u64, seed: u64) -> Cid {
        let mut digest = [0u8; 32];
        let mut v = seed ^ self.seed;
        for chunk in digest.chunks_mut(8) {
            v = mix64(v);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        Cid::from_sha256(codec, digest)
    }

    fn post_uri(&self, post: u32) -> String {
        let mut buf = [0u8; 13];
        format!(
            "at://{}/{POST}/{}",
            self.did(self.post_did[post as usize]),
            tid_str(self.post_tid[post as usize], &mut buf)
        )
    }

    fn post_cid(&self, post: u32) -> Cid {
        self.cid(
            CODEC_DAG_CBOR,
            u64::from(self.post_did[post as usize]) ^ self.post_tid[post as usize],
        )
    }

    /// A post to like, repost, reply to or quote: by weight among the
    /// newest (`hot` share of the time), the recent ring, or any post.
    fn subject(&mut self, hot: f64, ring: f64) -> Option<u32> {
        let n = self.post_did.len() as u64;
        if n == 0 {
            return None;
        }
        let r = self.rng.f64();
        let item = if r < hot {
            self.recent.draw(&mut self.rng, self.hot)
        } else if r < hot + ring {
            self.recent.draw(&mut self.rng, u64::MAX)
        } else {
            Some(self.rng.u64(..n))
        };
        item.map(|i| i as u32)
    }

    fn create(&mut self, rows: &mut Rows, did: u32, kind: Kind, now: u64, transform: bool) {
        let created_at = |micros: u64| owned(datetime(micros));
        match kind {
            Kind::Like | Kind::Repost | Kind::Invalid => {
                let Some(post) = self.subject(0.55, 0.30) else {
                    return self.create(rows, did, Kind::Post, now, transform);
                };
                let (key, created) = self.key_tid(now);
                let collection = if kind == Kind::Repost { REPOST } else { LIKE };
                let mut subject = strong_ref(self.post_uri(post), &self.post_cid(post));
                if kind == Kind::Invalid {
                    self.stats.invalid += 1;
                    subject = obj(vec![("uri", s("not an at-uri")), ("cid", s("x"))]);
                }
                let mut fields = vec![
                    ("$type", s(collection)),
                    ("createdAt", created_at(created)),
                    ("subject", subject),
                ];
                if self.rng.u32(..10) == 0 {
                    // Liked through a repost.
                    let via = self.subject(0.9, 0.1).unwrap_or(post);
                    let mut buf = [0u8; 13];
                    let uri = format!(
                        "at://{}/{REPOST}/{}",
                        self.did(self.post_did[via as usize]),
                        tid_str(self.post_tid[via as usize] ^ 1, &mut buf)
                    );
                    fields.push(("via", strong_ref(uri, &self.cid(CODEC_DAG_CBOR, key))));
                }
                if kind == Kind::Like {
                    self.post_likes[post as usize] += 1;
                }
                let liked = if kind == Kind::Like { post } else { u32::MAX };
                self.deletable(did, collection, key, liked);
                self.put(rows, did, collection, key, obj(fields), now, transform);
            }
            Kind::Post => self.post(rows, did, now, transform),
            Kind::Follow | Kind::Block => {
                let mut subject = self.activity.draw(&mut self.rng);
                if subject == did {
                    subject = (subject + 1) % self.dids;
                }
                let (key, created) = self.key_tid(now);
                let collection = if kind == Kind::Follow { FOLLOW } else { BLOCK };
                let record = obj(vec![
                    ("$type", s(collection)),
                    ("createdAt", created_at(created)),
                    ("subject", owned(self.did(subject).to_owned())),
                ]);
                self.deletable(did, collection, key, u32::MAX);
                self.put(rows, did, collection, key, record, now, transform);
            }
            Kind::List => {
                let (key, created) = match self.list_of.get(&did) {
                    // An existing list: an update (new description).
                    Some(&t) if self.rng.bool() => (t, now),
                    _ => self.key_tid(now),
                };
                let update = self.list_of.get(&did) == Some(&key);
                let purpose = if self.rng.u32(..4) == 0 {
                    "app.bsky.graph.defs#modlist"
                } else {
                    "app.bsky.graph.defs#curatelist"
                };
                let name = NAMES[self.rng.usize(..NAMES.len())];
                let record = obj(vec![
                    ("$type", s(LIST)),
                    ("name", owned(format!("{name}'s list"))),
                    ("purpose", s(purpose)),
                    ("description", owned(self.sentence(0, 12))),
                    ("createdAt", created_at(created)),
                ]);
                if !update {
                    self.list_of.entry(did).or_insert(key);
                    self.lists.push((did, key));
                }
                let action = if update {
                    Action::Update
                } else {
                    Action::Create
                };
                self.put_as(rows, did, LIST, key, action, record, now, transform);
            }
            Kind::ListItem | Kind::StarterPack => {
                let Some(&list) = self.list_of.get(&did) else {
                    return self.create(rows, did, Kind::List, now, transform);
                };
                let mut buf = [0u8; 13];
                let list_uri = format!("at://{}/{LIST}/{}", self.did(did), tid_str(list, &mut buf));
                let (key, created) = self.key_tid(now);
                if kind == Kind::ListItem {
                    let subject = self.activity.draw(&mut self.rng);
                    let record = obj(vec![
                        ("$type", s(LIST_ITEM)),
                        ("list", owned(list_uri)),
                        ("subject", owned(self.did(subject).to_owned())),
                        ("createdAt", created_at(created)),
                    ]);
                    self.deletable(did, LIST_ITEM, key, u32::MAX);
                    self.put(rows, did, LIST_ITEM, key, record, now, transform);
                } else {
                    let record = obj(vec![
                        ("$type", s("app.bsky.graph.starterpack")),
                        ("name", owned(self.sentence(0, 3))),
                        ("description", owned(self.sentence(0, 15))),
                        ("list", owned(list_uri)),
                        ("feeds", Value::Array(Vec::new())),
                        ("createdAt", created_at(created)),
                    ]);
                    self.put(
                        rows,
                        did,
                        "app.bsky.graph.starterpack",
                        key,
                        record,
                        now,
                        transform,
                    );
                }
            }
            Kind::ListBlock => {
                if self.lists.is_empty() {
                    return self.create(rows, did, Kind::Block, now, transform);
                }
                let (owner, list) = self.lists[self.rng.usize(..self.lists.len())];
                let mut buf = [0u8; 13];
                let uri = format!(
                    "at://{}/{LIST}/{}",
                    self.did(owner),
                    tid_str(list, &mut buf)
                );
                let (key, created) = self.key_tid(now);
                let record = obj(vec![
                    ("$type", s("app.bsky.graph.listblock")),
                    ("subject", owned(uri)),
                    ("createdAt", created_at(created)),
                ]);
                self.put(
                    rows,
                    did,
                    "app.bsky.graph.listblock",
                    key,
                    record,
                    now,
                    transform,
                );
            }
            Kind::Threadgate | Kind::Postgate => {
                // Gates are written by the post's author, under its key.
                let Some(post) = self.subject(0.9, 0.1) else {
                    return;
                };
                let author = self.post_did[post as usize];
                if self.is_hidden(author) {
                    return;
                }
                let key = self.post_tid[post as usize];
                let uri = self.post_uri(post);
                let collection = if kind == Kind::Threadgate {
                    THREADGATE
                } else {
                    POSTGATE
                };
                let record = if kind == Kind::Threadgate {
                    let rules: &[&'static str] = match self.rng.u32(..4) {
                        0 => &[],
                        1 => &["app.bsky.feed.threadgate#mentionRule"],
                        2 => &["app.bsky.feed.threadgate#followingRule"],
                        _ => &[
                            "app.bsky.feed.threadgate#mentionRule",
                            "app.bsky.feed.threadgate#followerRule",
                        ],
                    };
                    let allow = rules.iter().map(|r| obj(vec![("$type", s(r))])).collect();
                    obj(vec![
                        ("$type", s(THREADGATE)),
                        ("post", owned(uri)),
                        ("allow", Value::Array(allow)),
                        ("hiddenReplies", Value::Array(Vec::new())),
                        ("createdAt", created_at(now)),
                    ])
                } else {
                    obj(vec![
                        ("$type", s(POSTGATE)),
                        ("post", owned(uri)),
                        (
                            "embeddingRules",
                            Value::Array(vec![obj(vec![(
                                "$type",
                                s("app.bsky.feed.postgate#disableRule"),
                            )])]),
                        ),
                        ("detachedEmbeddingUris", Value::Array(Vec::new())),
                        ("createdAt", created_at(now)),
                    ])
                };
                if kind == Kind::Threadgate {
                    self.deletable(author, THREADGATE, key, u32::MAX);
                    self.threadgates.push((author, key));
                }
                self.announce(rows, author, now);
                self.put(rows, author, collection, key, record, now, transform);
            }
            Kind::Profile => {
                let update = bit(&self.has_profile, did);
                set_bit(&mut self.has_profile, did);
                let name = NAMES[self.rng.usize(..NAMES.len())];
                let mut fields = vec![
                    ("$type", s("app.bsky.actor.profile")),
                    ("displayName", owned(format!("{name} {}", self.word(0)))),
                    ("description", owned(self.sentence(0, 25))),
                    (
                        "avatar",
                        blob(self.cid(CODEC_RAW, now ^ 0xa7a7), "image/jpeg", 80_000),
                    ),
                    ("createdAt", created_at(now)),
                ];
                if self.rng.bool() {
                    fields.push((
                        "banner",
                        blob(self.cid(CODEC_RAW, now ^ 0xba11), "image/jpeg", 300_000),
                    ));
                }
                let action = if update {
                    Action::Update
                } else {
                    Action::Create
                };
                self.put_self(
                    rows,
                    did,
                    "app.bsky.actor.profile",
                    action,
                    obj(fields),
                    now,
                    transform,
                );
            }
            Kind::ActorStatus => {
                let update = bit(&self.has_status, did);
                set_bit(&mut self.has_status, did);
                let record = obj(vec![
                    ("$type", s("app.bsky.actor.status")),
                    ("status", s("app.bsky.actor.status#live")),
                    (
                        "durationMinutes",
                        Value::Integer(i64::from(self.rng.u32(30..300))),
                    ),
                    (
                        "embed",
                        obj(vec![
                            ("$type", s("app.bsky.embed.external")),
                            (
                                "external",
                                obj(vec![
                                    (
                                        "uri",
                                        owned(format!("https://www.twitch.tv/{}", self.word(0))),
                                    ),
                                    ("title", owned(self.sentence(0, 6))),
                                    ("description", owned(self.sentence(0, 12))),
                                ]),
                            ),
                        ]),
                    ),
                    ("createdAt", created_at(now)),
                ]);
                let action = if update {
                    Action::Update
                } else {
                    Action::Create
                };
                self.put_self(
                    rows,
                    did,
                    "app.bsky.actor.status",
                    action,
                    record,
                    now,
                    transform,
                );
            }
            Kind::ChatDeclaration => {
                let update = bit(&self.has_chat, did);
                set_bit(&mut self.has_chat, did);
                let allow = ["all", "following", "none"][self.rng.usize(..3)];
                let record = obj(vec![
                    ("$type", s("chat.bsky.actor.declaration")),
                    ("allowIncoming", s(allow)),
                ]);
                let action = if update {
                    Action::Update
                } else {
                    Action::Create
                };
                self.put_self(
                    rows,
                    did,
                    "chat.bsky.actor.declaration",
                    action,
                    record,
                    now,
                    transform,
                );
            }
            Kind::NotificationDeclaration => {
                let allow = ["followers", "mutuals", "none"][self.rng.usize(..3)];
                let record = obj(vec![
                    ("$type", s("app.bsky.notification.declaration")),
                    ("allowSubscriptions", s(allow)),
                ]);
                self.put_self(
                    rows,
                    did,
                    "app.bsky.notification.declaration",
                    Action::Create,
                    record,
                    now,
                    transform,
                );
            }
            Kind::ContentVisibility => {
                let record = obj(vec![
                    ("$type", s("app.bsky.actor.contentVisibilityDeclaration")),
                    (
                        "hideFromAlgorithmicRecommendations",
                        Value::Bool(self.rng.bool()),
                    ),
                ]);
                self.put_self(
                    rows,
                    did,
                    "app.bsky.actor.contentVisibilityDeclaration",
                    Action::Create,
                    record,
                    now,
                    transform,
                );
            }
            Kind::FeedGenerator => {
                let (key, created) = self.key_tid(now);
                let record = obj(vec![
                    ("$type", s("app.bsky.feed.generator")),
                    ("did", s("did:web:feeds.example.com")),
                    ("displayName", owned(self.sentence(0, 3))),
                    ("description", owned(self.sentence(0, 20))),
                    ("createdAt", created_at(created)),
                ]);
                self.put(
                    rows,
                    did,
                    "app.bsky.feed.generator",
                    key,
                    record,
                    now,
                    transform,
                );
            }
            Kind::Verification => {
                let subject = self.activity.draw(&mut self.rng);
                let (key, created) = self.key_tid(now);
                let record = obj(vec![
                    ("$type", s("app.bsky.graph.verification")),
                    ("subject", owned(self.did(subject).to_owned())),
                    ("handle", owned(self.handle(subject))),
                    (
                        "displayName",
                        owned(NAMES[subject as usize % NAMES.len()].to_owned()),
                    ),
                    ("createdAt", created_at(created)),
                ]);
                self.put(
                    rows,
                    did,
                    "app.bsky.graph.verification",
                    key,
                    record,
                    now,
                    transform,
                );
            }
            Kind::Other => {
                let collection = OTHER_COLLECTIONS[self.rng.usize(..OTHER_COLLECTIONS.len())];
                let (key, created) = self.key_tid(now);
                let record = obj(vec![
                    ("$type", s(collection)),
                    ("text", owned(self.sentence(0, 10))),
                    ("trackName", owned(self.sentence(0, 3))),
                    ("duration", Value::Integer(i64::from(self.rng.u32(60..400)))),
                    ("createdAt", created_at(created)),
                ]);
                self.put(rows, did, collection, key, record, now, transform);
            }
        }
    }

    /// Create a TID-keyed record.
    #[allow(clippy::too_many_arguments)]
    fn put(
        &mut self,
        rows: &mut Rows,
        did: u32,
        collection: &'static str,
        key: u64,
        record: Value<'static>,
        now: u64,
        transform: bool,
    ) {
        self.put_as(
            rows,
            did,
            collection,
            key,
            Action::Create,
            record,
            now,
            transform,
        );
    }

    #[allow(clippy::too_many_arguments)]
    fn put_as(
        &mut self,
        rows: &mut Rows,
        did: u32,
        collection: &'static str,
        key: u64,
        action: Action,
        record: Value<'static>,
        now: u64,
        transform: bool,
    ) {
        let mut buf = [0u8; 13];
        let rkey = tid_str(key, &mut buf).to_owned();
        let version = self.rev(now);
        let cid = self.cid(CODEC_DAG_CBOR, key ^ version);
        self.emit(
            rows,
            did,
            collection,
            &rkey,
            action,
            Some(cid),
            Some(record),
            version,
            now,
            transform,
        );
    }

    /// Create or update a `self`-keyed record.
    #[allow(clippy::too_many_arguments)]
    fn put_self(
        &mut self,
        rows: &mut Rows,
        did: u32,
        collection: &'static str,
        action: Action,
        record: Value<'static>,
        now: u64,
        transform: bool,
    ) {
        let version = self.rev(now);
        let cid = self.cid(CODEC_DAG_CBOR, u64::from(did) ^ version);
        self.emit(
            rows,
            did,
            collection,
            "self",
            action,
            Some(cid),
            Some(record),
            version,
            now,
            transform,
        );
    }

    /// A word of language `lang` (index into [`LANGUAGES`]).
    fn word(&mut self, lang: usize) -> &'static str {
        let l: &Language = &LANGUAGES[lang];
        l.words[self.words[lang].draw(&mut self.rng) as usize]
    }

    /// `lo..=hi`-ish words of language `lang`, joined as the language writes them.
    fn sentence(&mut self, lang: usize, max: usize) -> String {
        let n = 1 + self.rng.usize(..max.max(1));
        let mut out = String::new();
        for i in 0..n {
            if i > 0 && LANGUAGES[lang].spaced {
                out.push(' ');
            }
            out.push_str(self.word(lang));
        }
        out
    }

    /// A post: text in a language, maybe a reply, facets, an embed.
    fn post(&mut self, rows: &mut Rows, did: u32, now: u64, transform: bool) {
        // 2% of post operations edit a recent post of a visible author.
        if self.rng.u32(..50) == 0 {
            if let Some(post) = self.subject(1.0, 0.0) {
                let author = self.post_did[post as usize];
                if !self.is_hidden(author) {
                    let key = self.post_tid[post as usize];
                    let record = obj(vec![
                        ("$type", s(POST)),
                        ("text", owned(self.sentence(0, 20))),
                        ("langs", Value::Array(vec![s("en")])),
                        ("createdAt", owned(datetime(key >> 10))),
                    ]);
                    self.announce(rows, author, now);
                    self.put_as(
                        rows,
                        author,
                        POST,
                        key,
                        Action::Update,
                        record,
                        now,
                        transform,
                    );
                    return;
                }
            }
        }
        let (key, created) = self.key_tid(now);
        let index = self.post_did.len() as u32;
        let pick = self.rng.u32(..1000);
        let mut acc = 0;
        let lang = LANGUAGES.iter().position(|l| {
            acc += l.per_mille;
            pick < acc
        });
        let li = lang.unwrap_or(0);
        let spaced = LANGUAGES[li].spaced;
        let mut text = String::with_capacity(120);
        let n = 2 + (self.rng.f64().powi(2) * 28.0) as usize;
        for i in 0..n {
            if i > 0 && spaced {
                text.push(' ');
            }
            text.push_str(self.word(li));
        }
        if self.rng.u32(..5) == 0 {
            text.push(' ');
            text.push_str(EMOJI[self.rng.usize(..EMOJI.len())]);
        }
        let mut facets = Vec::new();
        let mut push_facet = |text: &mut String, token: &str, feature: Value<'static>| {
            text.push(' ');
            let start = text.len();
            text.push_str(token);
            facets.push(obj(vec![
                (
                    "index",
                    obj(vec![
                        ("byteStart", Value::Integer(start as i64)),
                        ("byteEnd", Value::Integer(text.len() as i64)),
                    ]),
                ),
                ("features", Value::Array(vec![feature])),
            ]));
        };
        let visible = self.hidden_status(did).is_none();
        if self.rng.u32(..200) == 0 {
            let token = format!(
                "q{}",
                &tid_string(mix64(self.seed ^ 0x7a7e ^ u64::from(index)))[5..]
            );
            text.push(' ');
            text.push_str(&token);
            if visible && self.samples.rare_terms.len() < 256 {
                self.samples.rare_terms.push(token);
            }
        }
        let mut tags = Vec::new();
        if self.rng.u32(..100) < 15 {
            for _ in 0..1 + self.rng.usize(..3) {
                let tag = TAGS[self.tags.draw(&mut self.rng) as usize];
                if tags.contains(&tag) {
                    continue;
                }
                tags.push(tag);
                push_facet(
                    &mut text,
                    &format!("#{tag}"),
                    obj(vec![
                        ("$type", s("app.bsky.richtext.facet#tag")),
                        ("tag", s(tag)),
                    ]),
                );
            }
        }
        let mut link = None;
        if self.rng.u32(..10) == 0 {
            let domain = DOMAINS[self.rng.usize(..DOMAINS.len())];
            let url = format!("https://{domain}/{}", &tid_string(self.rng.u64(..))[4..]);
            push_facet(
                &mut text,
                &url,
                obj(vec![
                    ("$type", s("app.bsky.richtext.facet#link")),
                    ("uri", owned(url.clone())),
                ]),
            );
            link = Some(url);
        }
        if self.rng.u32(..100) < 8 {
            let who = self.activity.draw(&mut self.rng);
            let handle = self.handle(who);
            push_facet(
                &mut text,
                &format!("@{handle}"),
                obj(vec![
                    ("$type", s("app.bsky.richtext.facet#mention")),
                    ("did", owned(self.did(who).to_owned())),
                ]),
            );
        }
        let mut fields = vec![
            ("$type", s(POST)),
            ("text", owned(text)),
            ("createdAt", owned(datetime(created))),
        ];
        if let Some(l) = lang {
            fields.push(("langs", Value::Array(vec![s(LANGUAGES[l].tag)])));
        }
        if !facets.is_empty() {
            fields.push(("facets", Value::Array(facets)));
        }
        let mut root = index;
        if self.rng.u32(..100) < 30 {
            if let Some(parent) = self.subject(0.7, 0.3) {
                root = self.post_root[parent as usize];
                fields.push((
                    "reply",
                    obj(vec![
                        (
                            "root",
                            strong_ref(self.post_uri(root), &self.post_cid(root)),
                        ),
                        (
                            "parent",
                            strong_ref(self.post_uri(parent), &self.post_cid(parent)),
                        ),
                    ]),
                ));
            }
        }
        let images = if self.rng.u32(..5) == 0 {
            let n = 1 + self.rng.usize(..4);
            let images: Vec<Value<'static>> = (0..n)
                .map(|i| {
                    let alt = if self.rng.bool() {
                        self.sentence(li, 10)
                    } else {
                        String::new()
                    };
                    obj(vec![
                        ("alt", owned(alt)),
                        (
                            "image",
                            blob(
                                self.cid(CODEC_RAW, key ^ i as u64),
                                "image/jpeg",
                                i64::from(self.rng.u32(40_000..900_000)),
                            ),
                        ),
                        (
                            "aspectRatio",
                            obj(vec![
                                ("width", Value::Integer(2000)),
                                ("height", Value::Integer(i64::from(self.rng.u32(800..2400)))),
                            ]),
                        ),
                    ])
                })
                .collect();
            Some(obj(vec![
                ("$type", s("app.bsky.embed.images")),
                ("images", Value::Array(images)),
            ]))
        } else {
            None
        };
        let quote = if self.rng.u32(..20) == 0 {
            self.subject(0.6, 0.3)
                .map(|q| strong_ref(self.post_uri(q), &self.post_cid(q)))
        } else {
            None
        };
        let embed = match (quote, images, link) {
            (Some(q), Some(media), _) => Some(obj(vec![
                ("$type", s("app.bsky.embed.recordWithMedia")),
                ("record", obj(vec![("record", q)])),
                ("media", media),
            ])),
            (Some(q), None, _) => Some(obj(vec![
                ("$type", s("app.bsky.embed.record")),
                ("record", q),
            ])),
            (None, Some(media), _) => Some(media),
            (None, None, Some(url)) if self.rng.u32(..10) < 7 => Some(obj(vec![
                ("$type", s("app.bsky.embed.external")),
                (
                    "external",
                    obj(vec![
                        ("uri", owned(url)),
                        ("title", owned(self.sentence(li, 8))),
                        ("description", owned(self.sentence(li, 20))),
                        (
                            "thumb",
                            blob(self.cid(CODEC_RAW, key ^ 0x7407), "image/jpeg", 120_000),
                        ),
                    ]),
                ),
            ])),
            _ => None,
        };
        if let Some(embed) = embed {
            fields.push(("embed", embed));
        }
        if self.rng.u32(..200) == 0 {
            fields.push((
                "labels",
                obj(vec![
                    ("$type", s("com.atproto.label.defs#selfLabels")),
                    (
                        "values",
                        Value::Array(vec![obj(vec![("val", s("nudity"))])]),
                    ),
                ]),
            ));
        }
        if !tags.is_empty() && self.rng.u32(..4) == 0 {
            fields.push(("tags", Value::Array(tags.iter().map(|t| s(t)).collect())));
        }
        self.post_did.push(did);
        self.post_tid.push(key);
        self.post_root.push(root);
        self.post_likes.push(0);
        self.recent.push(pareto_weight(&mut self.rng));
        self.stats.posts += 1;
        if visible && self.samples.pinned.len() < 60 && self.rng.u32(..10) == 0 {
            let uri = self.post_uri(index);
            self.samples.pinned.push(uri);
        }
        self.deletable(did, POST, key, u32::MAX);
        self.put(rows, did, POST, key, obj(fields), now, transform);
    }

    /// The busiest visible accounts, busiest first (`n` of them).
    pub fn busy_authors(&self, n: usize) -> Vec<String> {
        (0..self.dids)
            .filter(|&i| !self.is_hidden(i) && bit(&self.seen, i))
            .take(n)
            .map(|i| self.did(i).to_owned())
            .collect()
    }

    /// Visible accounts of middling activity (ranks around a tenth of all).
    pub fn middling_authors(&self, n: usize) -> Vec<String> {
        (self.dids / 10..self.dids)
            .filter(|&i| !self.is_hidden(i) && bit(&self.seen, i))
            .take(n)
            .map(|i| self.did(i).to_owned())
            .collect()
    }

    /// Every account that acted, in index order.
    pub fn seen_accounts(&self) -> impl Iterator<Item = u32> + '_ {
        (0..self.dids).filter(|&i| bit(&self.seen, i))
    }

    /// Live likes of the most liked posts, most first (`n` of them).
    pub fn top_likes(&self, n: usize) -> Vec<u32> {
        let mut v = self.post_likes.clone();
        let n = n.min(v.len());
        if n == 0 {
            return Vec::new();
        }
        v.select_nth_unstable_by(n - 1, |a, b| b.cmp(a));
        v.truncate(n);
        v.sort_unstable_by(|a, b| b.cmp(a));
        v
    }

    /// Posts with at least `likes` live likes.
    pub fn posts_with_likes(&self, likes: u32) -> u64 {
        self.post_likes.iter().filter(|&&n| n >= likes).count() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn phase(records: u64) -> Phase {
        Phase {
            records,
            start_us: 1_700_000_000_000_000,
            end_us: 1_700_000_000_000_000 + 30 * 86_400_000_000,
            shaped: true,
            hide_accounts: true,
            deletions: 0,
        }
    }

    fn run(seed: u64, records: u64) -> (Generator, Rows) {
        let mut g = Generator::new(1000, seed, records);
        g.begin(phase(records));
        let mut rows = Rows::default();
        while !g.finished() {
            g.fill(&mut rows, usize::MAX, true);
        }
        (g, rows)
    }

    #[test]
    fn the_same_seed_gives_the_same_rows() {
        let (_, a) = run(42, 5_000);
        let (_, b) = run(42, 5_000);
        let (_, c) = run(43, 5_000);
        assert_eq!(a.records, b.records);
        assert_eq!(a.posts, b.posts);
        assert_ne!(a.records, c.records);
    }

    #[test]
    fn the_mix_looks_like_the_network() {
        let (g, rows) = run(7, 50_000);
        let st = &g.stats;
        assert_eq!(st.records, 50_000);
        let share = |c: &str| st.by_collection.get(c).copied().unwrap_or(0) as f64 / 50_000.0;
        assert!((0.60..0.72).contains(&share(LIKE)), "likes {}", share(LIKE));
        assert!((0.09..0.16).contains(&share(POST)), "posts {}", share(POST));
        assert!(
            (0.025..0.035).contains(&(st.deletes as f64 / 50_000.0)),
            "{}",
            st.deletes
        );
        assert!(
            (0.007..0.013).contains(&(st.replays as f64 / 50_000.0)),
            "{}",
            st.replays
        );
        assert!(st.updates > 0 && st.invalid > 0);
        // Every operation gives a raw row; identity and account events theirs.
        assert_eq!(rows.records.len() as u64, st.records);
        assert_eq!(rows.identities.len() as u64, st.identity_events);
        assert_eq!(rows.accounts.len() as u64, st.account_events);
        // Only the invalid records are dead letters.
        assert_eq!(
            rows.dead_letters.len() as u64,
            st.invalid,
            "{:?}",
            rows.dead_letters.first()
        );
        assert!(
            st.accounts_hidden > 0 && st.accounts_hidden < 40,
            "{}",
            st.accounts_hidden
        );
        // Times stay in the range, record keys are valid TIDs.
        for r in rows.records.iter().take(2000) {
            assert!((1_700_000_000..1_700_000_000 + 30 * 86_400 + 5).contains(&r.indexed_at));
            if r.rkey != "self" {
                skyhouse_atproto::syntax::Tid::try_from(r.rkey.as_str()).expect("TID");
            }
        }
        assert!(!g.samples.rare_terms.is_empty());
        let top = g.top_likes(3);
        assert!(top[0] >= top[2] && top[0] > 20, "{top:?}");
    }
}
