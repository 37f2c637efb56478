//! Interaction counts as Bluesky's AppView computes them: per post, the
//! distinct accounts that like or repost it, the replies that keep its
//! thread's threadgate, the quotes; per account, followers, follows, posts
//! and the likes and reposts its posts received.
//!
//! `refresh_interactions` keeps the `interactions` table (migrations 0004,
//! 0008) current from the rows that arrived since its last run; the reads
//! count from it. Likes, reposts and follows are counted per distinct
//! account: an account can hold several like records for one post (written
//! with applyWrites, say) and the AppView counts it once, and deleting one
//! of them leaves the others counting. Hidden accounts (deactivated, taken
//! down, suspended) count for nothing while hidden (the AppView keeps
//! counting them: a documented difference).
//!
//! Replies: each reply row carries `gated` (it breaks the root's
//! threadgate) and `hidden` (the root's author hid it), decided by the gate
//! pass of each refresh ([`gate_pass`]), which writes every reply that
//! arrived (never without its flags) and rewrites every reply of a thread
//! whose gate changed. The rules
//! are the AppView's (`violatesThreadGate`): the root's author may always
//! reply; a gate without `allow` lets anybody reply, an empty `allow` nobody;
//! otherwise the replier must be mentioned in the root post, followed by the
//! root's author, following the root's author, or on one of the gate's
//! lists. As the AppView evaluates them when it indexes the reply, a gate or
//! follow made after the reply does not count against or for it: a gate
//! applies when its `createdAt` is not after the reply's, a follow when its
//! TID key is older than the reply's.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use crate::sql::{self, literal, render, Db, Rendered};
use crate::{ClickHouse, StoreError};

/// How far before the last refresh's start the next one looks again,
/// seconds: covers inserts that began (took their `arrived` time) before a
/// refresh and became visible after it. The next refresh reads again only
/// from the first second of the margin that got rows since (migration
/// 0011; `aggregates::start_run`): usually none. Rows seen twice change
/// nothing.
pub const REFRESH_MARGIN_SECS: u32 = 300;

/// How long likes and reposts of a post count in `recent_interactions`
/// (the feeds' rankings), by the post's TID time: the longest feed window
/// (whats-hot, 48 h) plus a day. Migration 0018's view applies it when a
/// row is written; retention drops older partitions.
pub const RECENT_INTERACTION_SECS: u32 = 3 * 24 * 3600;

/// What a refresh covered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshedUpto {
    /// Rows that arrived at or after this server time (Unix seconds) were read.
    pub after: u32,
    /// The server time the refresh started at; the next one starts from
    /// here (or earlier, within [`REFRESH_MARGIN_SECS`], when rows arrived
    /// before it became visible after it).
    pub upto: u32,
    /// How many windows of arrival time the rows were read in.
    pub windows: usize,
}

/// About how many change rows a refresh reads at once: a backlog (the first
/// refresh after a backfill of millions of likes) is read in windows of
/// arrival time of about this many rows each, so no statement needs more
/// memory than a window's keys (ClickHouse 18.16's default per-query limit
/// is ~3.7 GiB).
pub const REFRESH_WINDOW_ROWS: u64 = 1_000_000;

/// The SQL of a TID's time as a `DateTime`, for the key expression `key`
/// (a 13-character TID; anything else gives time 0). Migration 0012's views
/// use the same expression (0009's computed the same value digit by digit,
/// ~3× the server's CPU).
///
/// The first 11 characters are the time in microseconds, 5 bits each
/// (base32-sortable `234567abc…z`). They are read as two integers, the
/// first 8 bytes and the next 3, and decoded in place: every byte less
/// 50 (`'2'` → 0), 41 less again for letters (a letter's byte + 31 has its
/// top bit set: `'a'` → 6), then the 5-bit digits are packed together by
/// pairs of bytes, of 16-bit and of 32-bit halves.
pub fn tid_time_sql(key: &str) -> String {
    format!(
        "if(match({key}, '^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{{12}}$'), \
         toDateTime(least(intDiv({}, 1000000), 4294967295)), toDateTime(0))",
        tid_micros_sql(key)
    )
}

/// The microseconds of a TID's first 11 characters, assumed valid (see
/// [`tid_time_sql`]).
fn tid_micros_sql(key: &str) -> String {
    let a = format!("reinterpretAsUInt64(reverse(substring({key}, 1, 8)))");
    let b = format!("reinterpretAsUInt64(reverse(substring({key}, 9, 3)))");
    // Digit values, one per byte.
    let digits = |x: &str, bytes: u32| {
        let ones = u64::MAX >> (64 - 8 * bytes) & 0x0101_0101_0101_0101;
        format!(
            "({x} - {} - 41 * bitShiftRight(bitAnd({x} + {}, {}), 7))",
            ones * 50,
            ones * 31,
            ones * 128
        )
    };
    let (va, vb) = (digits(&a, 8), digits(&b, 3));
    // 8 digits of 8 bits → 4 of 10 → 2 of 20 → 40 bits.
    let pack = |x: &str, lane: u32, width: u32| {
        let mut lo = 0u64;
        let mut lane_at = 0;
        while lane_at < 64 {
            lo |= ((1u64 << width) - 1) << lane_at;
            lane_at += lane;
        }
        let hi = lo << (lane / 2);
        format!(
            "bitOr(bitShiftRight(bitAnd({x}, {hi}), {}), bitAnd({x}, {lo}))",
            lane / 2 - width
        )
    };
    let first = pack(&pack(&pack(&va, 16, 5), 32, 10), 64, 20);
    let last = format!(
        "bitOr(bitOr(bitShiftLeft(bitAnd(bitShiftRight({vb}, 16), 31), 10), \
         bitShiftLeft(bitAnd(bitShiftRight({vb}, 8), 31), 5)), bitAnd({vb}, 31))"
    );
    format!("bitOr(bitShiftLeft({first}, 15), {last})")
}

/// Bring `interactions` up to date with what
/// arrived in `interaction_changes` since the last refresh. Safe to run at
/// any time, repeatedly or concurrently: every row it writes follows from
/// the keys' state in `interaction_keys` (every version the change log
/// carried, copied there by each window before its lookups). Migration
/// 0018's view copies the rows of likes and reposts of recent posts into
/// `recent_interactions` (the feeds' rankings) as they are written.
pub async fn refresh_interactions(ch: &ClickHouse) -> Result<RefreshedUpto, StoreError> {
    refresh_interactions_in_windows(ch, REFRESH_WINDOW_ROWS).await
}

/// [`refresh_interactions`] reading about `window_rows` change rows per
/// window (at least one second of arrivals each). The watermark moves after
/// each window, so an interrupted refresh resumes near where it was.
pub async fn refresh_interactions_in_windows(
    ch: &ClickHouse,
    window_rows: u64,
) -> Result<RefreshedUpto, StoreError> {
    // The counts leave hidden accounts out: bring them up to date first.
    crate::aggregates::refresh_hidden_accounts(ch).await?;
    let run = crate::aggregates::start_run(ch, "interactions", "interaction_changes").await?;
    let (after, now) = (run.after, run.now);
    let bounds = window_bounds(ch, after, window_rows.max(1)).await?;
    // Windows [lo, hi): the last one is open-ended (rows arriving during the
    // refresh are read now and again by the next one).
    let mut edges = vec![after];
    edges.extend(bounds.into_iter().filter(|b| *b > after && *b < now));
    edges.push(u32::MAX);
    for pair in edges.windows(2) {
        refresh_window(ch, pair[0], pair[1]).await?;
        if pair[1] == u32::MAX {
            crate::aggregates::finish_run(ch, "interactions", &run).await?;
        } else {
            // Stopped here, the next run starts a margin before this window's end.
            crate::aggregates::save_watermark(ch, "interactions", pair[1], None).await?;
        }
    }
    Ok(RefreshedUpto {
        after,
        upto: now,
        windows: edges.len() - 1,
    })
}

/// A window's statements before the gate pass: creates (replies aside),
/// then the keys (a delete in the same window as its create finds it),
/// deletes and updates (every kind at once).
const BEFORE_GATE_PASS: [&str; 3] = [
    "interaction_live",
    "interaction_keys_add",
    "refresh_interactions",
];

/// A window's statements after the gate pass, which writes the replies with
/// their flags: after the deletes and updates, whose rows for an updated
/// reply (the flags at 0) it rewrites at the same version; before the
/// version floors' tombstones, which then come later than a stale create's
/// row at the version just below.
const AFTER_GATE_PASS: [&str; 2] = ["pending_deletes_add", "interaction_pending_matches"];

/// One window of arrivals: see queries/counts.sql for each statement.
async fn refresh_window(ch: &ClickHouse, lo: u32, hi: u32) -> Result<(), StoreError> {
    // Inserts here may rely on the later of two inserts winning at equal
    // versions (the gate pass's verdicts over the replies' rows). On a
    // cluster each run reads the whole margin again (rewriting its updated
    // replies with the flags at 0 before the gate pass), and a replicated
    // table drops an insert identical to one of its recent blocks: the same
    // verdicts as the last run's were dropped and those replies counted
    // ungated. Never deduplicated, then.
    let deduplicated_not = ch.with_statement_setting("insert_deduplicate", "0".to_owned());
    let ch = &deduplicated_not;
    let db = ch.db();
    for name in BEFORE_GATE_PASS {
        let sql = window_sql(db, name, lo, hi)?;
        ch.execute(name, &sql).await?;
    }
    gate_pass(ch, lo, hi).await?;
    for name in AFTER_GATE_PASS {
        let sql = window_sql(db, name, lo, hi)?;
        ch.execute(name, &sql).await?;
    }
    Ok(())
}

/// A statement of one refresh window.
fn window_sql(db: Db<'_>, name: &str, lo: u32, hi: u32) -> Result<String, StoreError> {
    render(
        db,
        name,
        &[("after", &lo.to_string()), ("before", &hi.to_string())],
    )
}

/// A window's backlog: change rows since the watermark, quantiles of arrival time.
#[derive(clickhouse::Row, serde::Deserialize)]
struct Backlog {
    rows: u64,
    bounds: Vec<u32>,
}

/// Arrival times (Unix seconds, increasing) splitting the change rows
/// since `after` into windows of about `window_rows`.
async fn window_bounds(
    ch: &ClickHouse,
    after: u32,
    window_rows: u64,
) -> Result<Vec<u32>, StoreError> {
    let sql = backlog_sql(ch.db(), "0.5", after)?;
    let Backlog { rows, .. } = ch.fetch_one("interaction_backlog", &sql).await?;
    let windows = rows.div_ceil(window_rows);
    if windows <= 1 {
        return Ok(Vec::new());
    }
    let windows = windows.min(1000);
    let levels: Vec<String> = (1..windows)
        .map(|i| format!("{:.6}", i as f64 / windows as f64))
        .collect();
    let sql = backlog_sql(ch.db(), &levels.join(", "), after)?;
    let backlog: Backlog = ch.fetch_one("interaction_backlog", &sql).await?;
    let mut bounds = backlog.bounds;
    bounds.sort_unstable();
    bounds.dedup();
    Ok(bounds)
}

/// Live interactions with one post, as of the last [`refresh_interactions`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PostCounts {
    /// The post's AT-URI.
    pub uri: String,
    /// Accounts that like it (`app.bsky.feed.like` with this subject; an
    /// account with several like records counts once).
    pub likes: u64,
    /// Accounts that repost it (as likes).
    pub reposts: u64,
    /// Direct replies (posts whose `reply.parent` is this post) that keep
    /// the thread root's threadgate: the number Bluesky shows (its
    /// `replyCount` counts the replies the root's author hid too).
    pub replies: u64,
    /// Those replies without the ones the root's author hid
    /// (`hiddenReplies`): what a reader of the thread sees.
    pub replies_visible: u64,
    /// Every live direct reply, gated or hidden ones included.
    pub replies_all: u64,
    /// Quote posts (posts embedding this one).
    pub quotes: u64,
}

/// Most URIs one [`post_counts`] call takes (the SQL lists them inline).
pub const MAX_COUNT_URIS: usize = 1_000;

/// Counts for each of `uris` (AT-URIs, at most [`MAX_COUNT_URIS`]), in the
/// same order; a post nobody interacted with gets zeros. Hidden accounts'
/// interactions are left out.
pub async fn post_counts(ch: &ClickHouse, uris: &[&str]) -> Result<Vec<PostCounts>, StoreError> {
    if uris.len() > MAX_COUNT_URIS {
        return Err(StoreError::Config(format!(
            "post_counts takes at most {MAX_COUNT_URIS} URIs, got {}",
            uris.len()
        )));
    }
    if let Some(bad) = uris.iter().find(|u| !u.starts_with("at://")) {
        return Err(StoreError::Config(format!("not an AT-URI: {bad:?}")));
    }
    let mut out: Vec<PostCounts> = uris
        .iter()
        .map(|u| PostCounts {
            uri: (*u).to_owned(),
            ..PostCounts::default()
        })
        .collect();
    if uris.is_empty() {
        return Ok(out);
    }
    let list = uris
        .iter()
        .map(|u| literal(u))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = render(ch.db(), "post_counts", &[("uris", &list)])?;
    let rows: Vec<CountsRow> = ch.fetch_all("post_counts", &sql).await?;
    for r in rows {
        for c in out.iter_mut().filter(|c| c.uri == r.uri) {
            c.likes = r.likes;
            c.reposts = r.reposts;
            c.replies = r.replies;
            c.replies_visible = r.replies_visible;
            c.replies_all = r.replies_all;
            c.quotes = r.quotes;
        }
    }
    Ok(out)
}

/// The change log's backlog since `after`, with quantiles at `levels`.
fn backlog_sql(db: Db<'_>, levels: &str, after: u32) -> Result<String, StoreError> {
    render(
        db,
        "interaction_backlog",
        &[("levels", levels), ("after", &after.to_string())],
    )
}

/// A row of `post_counts`.
#[derive(clickhouse::Row, serde::Deserialize)]
struct CountsRow {
    uri: String,
    likes: u64,
    reposts: u64,
    replies: u64,
    replies_visible: u64,
    replies_all: u64,
    quotes: u64,
}

// --- the gate pass --------------------------------------------------------

/// A reply whose flags the gate pass decides, with its root's current gate.
#[derive(Debug, Clone, clickhouse::Row, serde::Deserialize)]
struct Candidate {
    did: String,
    rkey: String,
    parent: String,
    root: String,
    version: u64,
    sort_at: u32,
    created_at: u32,
    allow_set: u8,
    allow: Vec<String>,
    hidden_replies: Vec<String>,
    gate_created_at: u32,
}

/// A root post's mentions.
#[derive(clickhouse::Row, serde::Deserialize)]
struct Mentions {
    uri: String,
    mentions: Vec<String>,
}

/// A reply row of `interactions` with its flags.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize)]
struct ReplyRow {
    subject_uri: String,
    kind: &'static str,
    did: String,
    rkey: String,
    version: u64,
    deleted: u8,
    sort_at: u32,
    gated: u8,
    hidden: u8,
}

/// A reply's row in `thread_replies` (migration 0019): by its root, with
/// its parent.
#[derive(Debug, Clone, clickhouse::Row, serde::Serialize)]
struct ThreadRow {
    root_uri: String,
    replier: String,
    rkey: String,
    parent_uri: String,
    version: u64,
    deleted: u8,
    sort_at: u32,
}

/// The DID of an AT-URI (`at://<did>/…`), if it has one.
fn uri_did(uri: &str) -> Option<&str> {
    uri.strip_prefix("at://")?.split('/').next()
}

/// What a gate's `allow` asks of a replier that the data must answer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Rules {
    mention: bool,
    follower: bool,
    following: bool,
    lists: Vec<String>,
}

impl Rules {
    fn parse(allow: &[String]) -> Rules {
        let mut r = Rules::default();
        for rule in allow {
            match rule.as_str() {
                "mentionRule" => r.mention = true,
                "followerRule" => r.follower = true,
                "followingRule" => r.following = true,
                other => {
                    if let Some(list) = other.strip_prefix("list:") {
                        r.lists.push(list.to_owned());
                    }
                }
            }
        }
        r
    }
}

/// The graph facts the verdicts need, read in batches.
#[derive(Debug, Default)]
struct Graph {
    /// Root post URI → the DIDs it mentions.
    mentions: HashMap<String, Vec<String>>,
    /// (follower, followed) → the TID keys of its live follow records.
    follows: HashMap<(String, String), Vec<String>>,
    /// (list URI, member DID) pairs.
    members: HashSet<(String, String)>,
}

impl Graph {
    /// Whether `from` had a live follow of `to` made before the reply keyed
    /// `reply_rkey` (TID keys sort by time; a non-TID key counts as before).
    fn followed_before(&self, from: &str, to: &str, reply_rkey: &str) -> bool {
        self.follows
            .get(&(from.to_owned(), to.to_owned()))
            .is_some_and(|keys| {
                keys.iter()
                    .any(|k| !(k.len() == 13 && reply_rkey.len() == 13) || k.as_str() < reply_rkey)
            })
    }
}

/// Whether the root's gate rules apply to the reply `c` by `owner` (the
/// root's author): a gate with rules, not the owner's own reply, and not a
/// gate made after the reply was indexed.
fn gate_applies(c: &Candidate, owner: &str) -> bool {
    c.allow_set == 1 && c.did != owner && c.gate_created_at <= c.created_at
}

/// `(gated, hidden)` of a reply, as the AppView's `violatesThreadGate`
/// and the root's `hiddenReplies` decide.
fn verdict(c: &Candidate, graph: &Graph) -> (u8, u8) {
    let uri = format!("at://{}/app.bsky.feed.post/{}", c.did, c.rkey);
    let hidden = u8::from(c.hidden_replies.contains(&uri));
    let owner = uri_did(&c.root).unwrap_or_default();
    // No gate that applies: the reply keeps it.
    if !gate_applies(c, owner) {
        return (0, hidden);
    }
    let rules = Rules::parse(&c.allow);
    let mentioned = rules.mention
        && graph
            .mentions
            .get(&c.root)
            .is_some_and(|m| m.contains(&c.did));
    let following = rules.following && graph.followed_before(owner, &c.did, &c.rkey);
    let follower = rules.follower && graph.followed_before(&c.did, owner, &c.rkey);
    let listed = rules
        .lists
        .iter()
        .any(|l| graph.members.contains(&(l.clone(), c.did.clone())));
    let allowed = mentioned || following || follower || listed;
    (u8::from(!allowed), hidden)
}

/// How many values one statement lists inline at most.
const CHUNK: usize = 500;

/// Most bytes of SQL the two lists of one follows lookup take together:
/// with the statement this stays under ClickHouse's 256 KiB
/// `max_query_size`.
const LOOKUP_BYTES: usize = 192 * 1024;

fn quoted(items: &[&str]) -> String {
    items
        .iter()
        .map(|s| literal(s))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The follows lookups for `pairs` of (follower, followed) DIDs: each a
/// `did IN (…)` list of followers and a `subject_did IN (…)` list of the
/// accounts they are asked about, quoted as [`quoted`] does, both together
/// at most `max_bytes` (an account alone with a list longer than that gets
/// several lookups). A lookup reads the granules of its followers (`follows`
/// is sorted by did), and each follower is in one lookup only: its granules
/// are read once, and a lookup's second list holds only what its followers
/// are asked about, not every account of the window (at 100M records a
/// window's owners were read once per 128 KiB of all its repliers, seven
/// times). A lookup may answer pairs not asked (a follower with another's
/// partner): the verdicts look up only theirs.
fn follow_lookups(pairs: &[(&str, &str)], max_bytes: usize) -> Vec<(String, String)> {
    let mut partners: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (from, to) in pairs {
        partners.entry(from).or_default().insert(to);
    }
    let mut lookups = Vec::new();
    let mut froms: Vec<&str> = Vec::new();
    let mut tos: BTreeSet<&str> = BTreeSet::new();
    let mut bytes = 0;
    let mut flush = |froms: &mut Vec<&str>, tos: &mut BTreeSet<&str>, bytes: &mut usize| {
        if !froms.is_empty() {
            let tos: Vec<&str> = std::mem::take(tos).into_iter().collect();
            lookups.push((quoted(froms), quoted(&tos)));
            froms.clear();
        }
        *bytes = 0;
    };
    for (from, to) in &partners {
        let from_bytes = literal(from).len() + 2;
        let new_bytes: usize = to
            .iter()
            .filter(|t| !tos.contains(*t))
            .map(|t| literal(t).len() + 2)
            .sum();
        if bytes + from_bytes + new_bytes <= max_bytes {
            froms.push(from);
            tos.extend(to.iter().copied());
            bytes += from_bytes + new_bytes;
            continue;
        }
        flush(&mut froms, &mut tos, &mut bytes);
        // Alone: its partners in as many lookups as they need.
        for to in to {
            let to_bytes = literal(to).len() + 2;
            if !tos.is_empty() && bytes + to_bytes > max_bytes {
                flush(&mut froms, &mut tos, &mut bytes);
            }
            if froms.is_empty() {
                froms.push(from);
                bytes = from_bytes;
            }
            tos.insert(to);
            bytes += to_bytes;
        }
        if bytes >= max_bytes / 2 {
            flush(&mut froms, &mut tos, &mut bytes);
        }
    }
    flush(&mut froms, &mut tos, &mut bytes);
    lookups
}

/// Read the mentions, follows and list members the candidates' gates ask about.
async fn read_graph(ch: &ClickHouse, candidates: &[Candidate]) -> Result<Graph, StoreError> {
    let mut graph = Graph::default();
    // The replies whose verdict reads the graph (see [`verdict`]), with
    // their roots' owners and rules: only what those rules ask is read.
    let gated: Vec<(&Candidate, &str, Rules)> = candidates
        .iter()
        .filter(|c| !c.allow.is_empty())
        .filter_map(|c| Some((c, uri_did(&c.root)?, Rules::parse(&c.allow))))
        .filter(|(c, owner, _)| gate_applies(c, owner))
        .collect();
    if gated.is_empty() {
        return Ok(graph);
    }
    let db = ch.db();
    // Root posts' mentions, for the mention rule.
    let mut roots: Vec<(&str, &str)> = gated
        .iter()
        .filter(|(_, _, rules)| rules.mention)
        .filter_map(|(c, _, _)| {
            let rest = c.root.strip_prefix("at://")?;
            let mut parts = rest.split('/');
            let did = parts.next()?;
            let _collection = parts.next()?;
            Some((did, parts.next()?))
        })
        .collect();
    roots.sort_unstable();
    roots.dedup();
    for chunk in roots.chunks(CHUNK) {
        let keys = chunk
            .iter()
            .map(|(d, r)| format!("({}, {})", literal(d), literal(r)))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = render(db, "root_mentions", &[("keys", &keys)])?;
        let rows: Vec<Mentions> = ch.fetch_all("root mentions", &sql).await?;
        graph
            .mentions
            .extend(rows.into_iter().map(|m| (m.uri, m.mentions)));
    }
    // Follows between each replier and its root's owner, in the directions
    // the gate's rules ask about.
    let mut pairs: Vec<(&str, &str)> = Vec::new();
    for (c, owner, rules) in &gated {
        if rules.following {
            pairs.push((owner, c.did.as_str()));
        }
        if rules.follower {
            pairs.push((c.did.as_str(), owner));
        }
    }
    for (froms, tos) in follow_lookups(&pairs, LOOKUP_BYTES) {
        let sql = render(
            db,
            "live_follows_between",
            &[("froms", &froms), ("tos", &tos)],
        )?;
        let rows: Vec<(String, String, String)> =
            ch.fetch_all("follows for threadgates", &sql).await?;
        for (a, b, rkey) in rows {
            graph.follows.entry((a, b)).or_default().push(rkey);
        }
    }
    // List members.
    let mut lists: Vec<&str> = gated
        .iter()
        .flat_map(|(_, _, rules)| rules.lists.iter().map(String::as_str))
        .collect();
    lists.sort_unstable();
    lists.dedup();
    if !lists.is_empty() {
        let mut list_owners: Vec<&str> = lists.iter().filter_map(|l| uri_did(l)).collect();
        list_owners.sort_unstable();
        list_owners.dedup();
        let mut repliers: Vec<&str> = gated
            .iter()
            .filter(|(_, _, rules)| !rules.lists.is_empty())
            .map(|(c, _, _)| c.did.as_str())
            .collect();
        repliers.sort_unstable();
        repliers.dedup();
        for chunk in repliers.chunks(CHUNK) {
            let sql = render(
                db,
                "list_members",
                &[
                    ("owners", &quoted(&list_owners)),
                    ("lists", &quoted(&lists)),
                    ("dids", &quoted(chunk)),
                ],
            )?;
            let rows: Vec<(String, String)> = ch.fetch_all("list members", &sql).await?;
            graph.members.extend(rows);
        }
    }
    Ok(graph)
}

/// Write the reply rows of the window `[lo, hi)` with `gated` and `hidden`
/// decided (see the module docs): every reply that arrived, and every reply
/// of a thread whose gate arrived or changed.
async fn gate_pass(ch: &ClickHouse, lo: u32, hi: u32) -> Result<(), StoreError> {
    let sql = render(
        ch.db(),
        "gate_candidates",
        &[("after", &lo.to_string()), ("before", &hi.to_string())],
    )?;
    let candidates: Vec<Candidate> = ch.fetch_all("gate candidates", &sql).await?;
    if candidates.is_empty() {
        return Ok(());
    }
    let graph = read_graph(ch, &candidates).await?;
    let rows: Vec<ReplyRow> = candidates
        .iter()
        .map(|c| {
            let (gated, hidden) = verdict(c, &graph);
            ReplyRow {
                subject_uri: c.parent.clone(),
                kind: "reply",
                did: c.did.clone(),
                rkey: c.rkey.clone(),
                version: c.version,
                deleted: 0,
                sort_at: c.sort_at,
                gated,
                hidden,
            }
        })
        .collect();
    // Each reply's thread row with its parent: a later gate of the thread
    // finds the reply there.
    let threads: Vec<ThreadRow> = candidates
        .iter()
        .filter(|c| !c.root.is_empty())
        .map(|c| ThreadRow {
            root_uri: c.root.clone(),
            replier: c.did.clone(),
            rkey: c.rkey.clone(),
            parent_uri: c.parent.clone(),
            version: c.version,
            deleted: 0,
            sort_at: c.sort_at,
        })
        .collect();
    if !threads.is_empty() {
        ch.insert("thread_replies", &threads).await?;
    }
    // Same key and version as a row the refresh may have written (an
    // updated reply's, with the flags at 0): the later insert wins
    // (ReplacingMergeTree keeps the last of equal versions). Not
    // deduplicated ([`refresh_window`]).
    ch.insert("interactions", &rows).await
}

// --- per-account counts ---------------------------------------------------

/// One account's counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ActorCounts {
    /// The account's DID.
    pub did: String,
    /// Distinct visible accounts following it.
    pub followers: u64,
    /// Distinct accounts it follows.
    pub follows: u64,
    /// Its live posts (replies included, as the AppView counts them).
    pub posts: u64,
    /// Likes its posts received (each post's distinct visible accounts, summed).
    pub likes_received: u64,
    /// Reposts its posts received (as likes).
    pub reposts_received: u64,
}

/// Most DIDs one [`actor_counts`] call takes.
pub const MAX_COUNT_DIDS: usize = 100;

/// Counts for each of `dids`, in the same order (zeros for an unknown one).
pub async fn actor_counts(ch: &ClickHouse, dids: &[&str]) -> Result<Vec<ActorCounts>, StoreError> {
    if dids.len() > MAX_COUNT_DIDS {
        return Err(StoreError::Config(format!(
            "actor_counts takes at most {MAX_COUNT_DIDS} DIDs, got {}",
            dids.len()
        )));
    }
    if let Some(bad) = dids
        .iter()
        .find(|d| !skyhouse_atproto::syntax::Did::is_valid(d))
    {
        return Err(StoreError::Config(format!("invalid DID {bad:?}")));
    }
    let mut out: Vec<ActorCounts> = dids
        .iter()
        .map(|d| ActorCounts {
            did: (*d).to_owned(),
            ..ActorCounts::default()
        })
        .collect();
    if dids.is_empty() {
        return Ok(out);
    }
    let db = ch.db();
    let list = quoted(dids);
    let find = |out: &mut Vec<ActorCounts>, did: &str| out.iter().position(|c| c.did == did);
    let rows: Vec<(String, u64)> = ch
        .fetch_all(
            "followers",
            &render(db, "actor_followers", &[("dids", &list)])?,
        )
        .await?;
    for (did, n) in rows {
        if let Some(i) = find(&mut out, &did) {
            out[i].followers = n;
        }
    }
    let rows: Vec<(String, u64)> = ch
        .fetch_all("follows", &render(db, "actor_follows", &[("dids", &list)])?)
        .await?;
    for (did, n) in rows {
        if let Some(i) = find(&mut out, &did) {
            out[i].follows = n;
        }
    }
    let rows: Vec<(String, u64)> = ch
        .fetch_all(
            "posts",
            &render(db, "actor_post_counts", &[("dids", &list)])?,
        )
        .await?;
    for (did, n) in rows {
        if let Some(i) = find(&mut out, &did) {
            out[i].posts = n;
        }
    }
    let rows: Vec<(String, u64, u64)> = ch
        .fetch_all(
            "likes received",
            &render(db, "actor_received", &[("prefixes", &post_prefixes(dids))])?,
        )
        .await?;
    for (did, likes, reposts) in rows {
        if let Some(i) = find(&mut out, &did) {
            out[i].likes_received = likes;
            out[i].reposts_received = reposts;
        }
    }
    Ok(out)
}

/// `subject_uri` ranges of the accounts' posts: a disjunction of
/// `subject_uri >= 'at://<did>/app.bsky.feed.post/' AND subject_uri < …0'`
/// (`0` follows `/`), which reads each range by the sorting key.
fn post_prefixes(dids: &[&str]) -> String {
    dids.iter()
        .map(|d| {
            let lo = format!("at://{d}/app.bsky.feed.post/");
            let hi = format!("at://{d}/app.bsky.feed.post0");
            format!(
                "(subject_uri >= {} AND subject_uri < {})",
                literal(&lo),
                literal(&hi)
            )
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    for name in BEFORE_GATE_PASS.into_iter().chain(AFTER_GATE_PASS) {
        out.push(Rendered {
            name: name.into(),
            sql: window_sql(db, name, 0, u32::MAX)?,
        });
    }
    out.push(Rendered {
        name: "interaction_backlog".into(),
        sql: backlog_sql(db, "0.25, 0.5", 0)?,
    });
    sql::sample(
        out,
        db,
        "post_counts",
        &[("uris", "'at://did:plc:alice/app.bsky.feed.post/3kpost1'")],
    )?;
    let dids = quoted(&["did:plc:alice", "did:plc:bob"]);
    sql::sample(out, db, "actor_followers", &[("dids", &dids)])?;
    sql::sample(out, db, "actor_follows", &[("dids", &dids)])?;
    sql::sample(out, db, "actor_post_counts", &[("dids", &dids)])?;
    sql::sample(
        out,
        db,
        "actor_received",
        &[(
            "prefixes",
            &post_prefixes(&["did:plc:alice", "did:plc:bob"]),
        )],
    )?;
    sql::sample(
        out,
        db,
        "gate_candidates",
        &[("after", "0"), ("before", "4294967295")],
    )?;
    sql::sample(
        out,
        db,
        "root_mentions",
        &[("keys", "('did:plc:alice', '3kpost1')")],
    )?;
    sql::sample(
        out,
        db,
        "live_follows_between",
        &[("froms", &dids), ("tos", &dids)],
    )?;
    sql::sample(
        out,
        db,
        "list_members",
        &[
            ("owners", "'did:plc:alice'"),
            ("lists", "'at://did:plc:alice/app.bsky.graph.list/3klist'"),
            ("dids", &dids),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The DIDs of a list as [`quoted`] writes it.
    fn unquoted(list: &str) -> Vec<String> {
        list.split(", ")
            .map(|v| v.trim_matches('\'').to_owned())
            .collect()
    }

    #[test]
    fn follow_lookups_ask_every_pair_and_read_each_follower_once() {
        // 300 followers with 1-40 partners each from 2,000 accounts, and one
        // follower with more partners than one lookup holds.
        let dids: Vec<String> = (0..2_000).map(|i| format!("did:plc:{i:024}")).collect();
        let mut pairs: Vec<(&str, &str)> = Vec::new();
        for f in 0..300 {
            for k in 0..(f * 7 % 40 + 1) {
                pairs.push((&dids[f], &dids[(f * 13 + k * 101) % 2_000]));
            }
        }
        for t in 0..1_500 {
            pairs.push((&dids[1_999], &dids[t]));
        }
        let bound = 8 * 1024;
        let lookups = follow_lookups(&pairs, bound);
        let lists: Vec<(Vec<String>, Vec<String>)> = lookups
            .iter()
            .map(|(f, t)| (unquoted(f), unquoted(t)))
            .collect();
        for (from, to) in &pairs {
            assert!(
                lists
                    .iter()
                    .any(|(f, t)| f.iter().any(|x| x == from) && t.iter().any(|x| x == to)),
                "({from}, {to}) asked by no lookup"
            );
        }
        for (f, t) in &lookups {
            assert!(
                f.len() + t.len() + 4 <= bound,
                "{} + {} bytes",
                f.len(),
                t.len()
            );
        }
        // Each follower in one lookup, but the one whose partners need several.
        let mut seen: HashMap<&str, usize> = HashMap::new();
        for (f, _) in &lists {
            for d in f {
                *seen.entry(d).or_default() += 1;
            }
        }
        assert!(seen.len() == 301, "{} followers", seen.len());
        for (d, n) in &seen {
            if *d == dids[1_999] {
                assert!(*n > 1, "{n} lookups");
            } else {
                assert_eq!(*n, 1, "{d} in {n} lookups");
            }
        }
        // All in one when they fit; nothing for nothing.
        assert_eq!(follow_lookups(&pairs, 1 << 30).len(), 1);
        assert!(follow_lookups(&[], bound).is_empty());
    }

    fn candidate(replier: &str, allow: &[&str]) -> Candidate {
        Candidate {
            did: replier.into(),
            rkey: "3kreply000000".into(),
            parent: "at://did:plc:owner/app.bsky.feed.post/3kroot0000000".into(),
            root: "at://did:plc:owner/app.bsky.feed.post/3kroot0000000".into(),
            version: 10,
            sort_at: 100,
            created_at: 100,
            allow_set: 1,
            allow: allow.iter().map(|s| (*s).to_owned()).collect(),
            hidden_replies: vec![],
            gate_created_at: 90,
        }
    }

    #[test]
    fn the_appviews_rules() {
        let mut g = Graph::default();
        // No rules: nobody but the owner.
        assert_eq!(verdict(&candidate("did:plc:x", &[]), &g), (1, 0));
        assert_eq!(verdict(&candidate("did:plc:owner", &[]), &g), (0, 0));
        // No allow at all: anybody.
        let mut open = candidate("did:plc:x", &[]);
        open.allow_set = 0;
        assert_eq!(verdict(&open, &g), (0, 0));
        // A gate made after the reply does not apply.
        let mut late = candidate("did:plc:x", &[]);
        late.gate_created_at = 101;
        assert_eq!(verdict(&late, &g), (0, 0));
        // Mentioned in the root post.
        let root = candidate("did:plc:x", &[]).root;
        g.mentions.insert(root, vec!["did:plc:x".into()]);
        assert_eq!(
            verdict(&candidate("did:plc:x", &["mentionRule"]), &g),
            (0, 0)
        );
        assert_eq!(
            verdict(&candidate("did:plc:y", &["mentionRule"]), &g),
            (1, 0)
        );
        // Followed by the owner, before the reply only.
        g.follows.insert(
            ("did:plc:owner".into(), "did:plc:y".into()),
            vec!["3kfollow00000".into()],
        );
        g.follows.insert(
            ("did:plc:owner".into(), "did:plc:z".into()),
            vec!["3kzzzzzzzzzzz".into()],
        );
        assert_eq!(
            verdict(&candidate("did:plc:y", &["followingRule"]), &g),
            (0, 0)
        );
        assert_eq!(
            verdict(&candidate("did:plc:z", &["followingRule"]), &g),
            (1, 0)
        );
        assert_eq!(
            verdict(&candidate("did:plc:y", &["followerRule"]), &g),
            (1, 0)
        );
        // Following the owner.
        g.follows.insert(
            ("did:plc:w".into(), "did:plc:owner".into()),
            vec!["3kfollow00000".into()],
        );
        assert_eq!(
            verdict(&candidate("did:plc:w", &["followerRule"]), &g),
            (0, 0)
        );
        // On a list.
        let list = "at://did:plc:owner/app.bsky.graph.list/3kl";
        g.members.insert((list.into(), "did:plc:v".into()));
        let rule = format!("list:{list}");
        assert_eq!(
            verdict(&candidate("did:plc:v", &[rule.as_str()]), &g),
            (0, 0)
        );
        assert_eq!(
            verdict(&candidate("did:plc:u", &[rule.as_str()]), &g),
            (1, 0)
        );
        // Hidden by the owner, whatever the rules.
        let mut hidden = candidate("did:plc:x", &["mentionRule"]);
        hidden.hidden_replies = vec!["at://did:plc:x/app.bsky.feed.post/3kreply000000".into()];
        assert_eq!(verdict(&hidden, &g), (0, 1));
    }

    #[test]
    fn the_recent_interactions_view_keeps_the_window_of_this_constant() {
        // Migration 0018's view writes the rankings' rows: its subject time
        // and window are this module's.
        let view = crate::migrate::embedded()
            .expect("migrations")
            .into_iter()
            .find(|m| m.name == "recent_interactions_view")
            .expect("migration 0018")
            .up;
        let subject_time = tid_time_sql("splitByChar('/', subject_uri)[5]");
        assert!(view.contains(&format!("SELECT {subject_time} AS subject_time,")));
        assert!(view.contains(&format!(
            "AND subject_time >= now() - {RECENT_INTERACTION_SECS};"
        )));
    }

    #[test]
    fn prefixes_bound_an_accounts_posts() {
        let p = post_prefixes(&["did:plc:a"]);
        assert_eq!(
            p,
            "(subject_uri >= 'at://did:plc:a/app.bsky.feed.post/' AND subject_uri < 'at://did:plc:a/app.bsky.feed.post0')"
        );
    }
}
