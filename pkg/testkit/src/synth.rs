//! A synthetic, deterministic Jetstream stream: as many events as a test
//! wants (the bundled production captures have 150), each computed from its
//! index alone, so a test knows every event's position and the rows it must
//! produce without reading anything back.
//!
//! The mix: posts (some replies, quotes, mentions, links and tags), likes,
//! reposts, follows, blocks, lists and list items, profile creates and
//! updates, deletes of records created earlier (and of keys never created),
//! `chat.bsky.actor.declaration`s, records of a collection the default
//! filter drops, handle changes (`#identity`) and account status changes
//! (`#account`: deactivated, takendown, suspended, active again; never
//! deleted, whose cleanup stamps rows with the time of indexing).
//!
//! Positions (`time_us`) grow by [`STEP_US`] per event. Record versions are
//! TIDs that grow with the index too, so a later event always wins over an
//! earlier one, and `#identity`/`#account` versions are the index + 1.
//! [`Synth::event`] takes a *global* index: index `g` has the content of
//! `g % events` and the position of `g`, so a stream that loops (the soak)
//! replays the same rows at ever higher positions, and its final state
//! after any number of whole loops equals that of one.
//!
//! ```no_run
//! use skyhouse_testkit::synth::Synth;
//!
//! let synth = Synth::new(30_000, 500);
//! synth.write_jsonl(std::path::Path::new("/tmp/stream.jsonl")).unwrap();
//! let last = synth.event(29_999);
//! println!("{} at {}", last.json, last.time_us);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, BufWriter, Write};
use std::path::Path;

use serde_json::{json, Value};
use skyhouse_atproto::cid::{Cid, CODEC_DAG_CBOR};
use skyhouse_atproto::syntax::Tid;

use crate::ClickHouse;

/// `time_us` of event 0: 2026-01-01T00:00:00Z.
pub const BASE_TIME_US: i64 = 1_767_225_600_000_000;

/// Microseconds between two events' positions.
pub const STEP_US: i64 = 10;

/// The TID timestamp of event 0 (2025-01-01T00:00:00Z); event `i`'s records
/// are `i` microseconds later, and their `createdAt` says the same.
const BASE_TID_US: u64 = 1_735_689_600_000_000;

/// A collection the indexer's default filter (`app.bsky.*,chat.bsky.*`) drops.
pub const FILTERED_COLLECTION: &str = "com.example.synth.note";

/// What an event must leave in ClickHouse once it is stored: a row of this
/// key with at least this version (ReplacingMergeTree keeps the newest, so
/// "at least" also holds after later events of the same key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// A row in `records` and in the collection's typed table (a create,
    /// an update or a delete's tombstone).
    Record {
        /// The repository.
        did: String,
        /// The collection NSID.
        collection: String,
        /// The record key.
        rkey: String,
        /// The commit's rev as an integer.
        version: u64,
        /// The collection's typed table (`posts`, `likes`, …).
        table: &'static str,
    },
    /// An `identities` row.
    Identity {
        /// The DID.
        did: String,
        /// The event's seq.
        version: u64,
    },
    /// An `accounts` row.
    Account {
        /// The DID.
        did: String,
        /// The event's seq.
        version: u64,
    },
    /// Nothing (a collection the indexer filters out).
    Nothing,
}

/// One generated event.
#[derive(Debug, Clone)]
pub struct SynthEvent {
    /// Its global index.
    pub index: u64,
    /// Its position (Jetstream cursor).
    pub time_us: i64,
    /// The Jetstream JSON line (no newline).
    pub json: String,
    /// What it leaves in ClickHouse.
    pub expect: Expect,
}

/// The generator: `events` distinct events over `dids` accounts.
#[derive(Debug, Clone, Copy)]
pub struct Synth {
    events: u64,
    dids: u64,
}

/// What event `i` (an index within one loop) is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Post,
    Like,
    Repost,
    Follow,
    Block,
    Profile,
    List,
    ListItem,
    Declaration,
    Filtered,
    Delete,
    Identity,
    Account,
}

impl Kind {
    /// The typed table of the collection (the filtered one has none).
    fn table(self) -> &'static str {
        match self {
            Kind::Post => "posts",
            Kind::Like => "likes",
            Kind::Repost => "reposts",
            Kind::Follow => "follows",
            Kind::Block => "blocks",
            Kind::Profile => "profiles",
            Kind::List => "lists",
            Kind::ListItem => "list_items",
            Kind::Declaration => "chat_declarations",
            _ => "",
        }
    }

    fn collection(self) -> Option<&'static str> {
        Some(match self {
            Kind::Post => "app.bsky.feed.post",
            Kind::Like => "app.bsky.feed.like",
            Kind::Repost => "app.bsky.feed.repost",
            Kind::Follow => "app.bsky.graph.follow",
            Kind::Block => "app.bsky.graph.block",
            Kind::Profile => "app.bsky.actor.profile",
            Kind::List => "app.bsky.graph.list",
            Kind::ListItem => "app.bsky.graph.listitem",
            Kind::Declaration => "chat.bsky.actor.declaration",
            Kind::Filtered => FILTERED_COLLECTION,
            Kind::Delete | Kind::Identity | Kind::Account => return None,
        })
    }
}

impl Synth {
    /// `events` events per loop (at least 1) over `dids` accounts (at least 1).
    pub fn new(events: u64, dids: u64) -> Synth {
        Synth {
            events: events.max(1),
            dids: dids.max(1),
        }
    }

    /// Events per loop.
    pub fn len(&self) -> u64 {
        self.events
    }

    /// Never: a stream has at least one event.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The position of global index `g`.
    pub fn time_us(g: u64) -> i64 {
        BASE_TIME_US + g as i64 * STEP_US
    }

    /// The global index at position `time_us` or just before it (`None`
    /// before the first event).
    pub fn index_at(time_us: i64) -> Option<u64> {
        (time_us >= BASE_TIME_US).then(|| ((time_us - BASE_TIME_US) / STEP_US) as u64)
    }

    /// Event at global index `g`.
    pub fn event(&self, g: u64) -> SynthEvent {
        let i = g % self.events;
        let time_us = Synth::time_us(g);
        let (payload, expect) = self.payload(i);
        let mut event = payload;
        event["time_us"] = json!(time_us);
        SynthEvent {
            index: g,
            time_us,
            json: event.to_string(),
            expect,
        }
    }

    /// Writes events `0..len()` as JSON lines (a `file://` capture).
    pub fn write_jsonl(&self, path: &Path) -> io::Result<()> {
        let mut out = BufWriter::new(std::fs::File::create(path)?);
        for g in 0..self.events {
            out.write_all(self.event(g).json.as_bytes())?;
            out.write_all(b"\n")?;
        }
        out.flush()
    }

    /// What events `first..=last` (global indices) leave in ClickHouse.
    pub fn expected(&self, first: u64, last: u64) -> Vec<(u64, Expect)> {
        (first..=last)
            .map(|g| (g, self.event(g).expect))
            .filter(|(_, e)| *e != Expect::Nothing)
            .collect()
    }

    /// Checks that ClickHouse database `db` holds what the last `n` events
    /// at or before position `time_us` leave there: see
    /// [`check_range`](Self::check_range). Nothing to check before event 0.
    ///
    /// # Panics
    ///
    /// If a query fails.
    pub fn check_stored(
        &self,
        server: &ClickHouse,
        db: &str,
        time_us: i64,
        n: u64,
    ) -> Result<usize, Vec<String>> {
        match Synth::index_at(time_us) {
            Some(last) if n > 0 => self.check_range(server, db, last.saturating_sub(n - 1), last),
            _ => Ok(0),
        }
    }

    /// Checks that ClickHouse database `db` holds what events `first..=last`
    /// (global indices) leave there: for each, a row of its key with at
    /// least its version in `records` and its typed table, `identities` or
    /// `accounts`. Returns how many events were checked, or one line per
    /// missing (or older) row. Used on a saved cursor: whatever it covers
    /// must be stored.
    ///
    /// # Panics
    ///
    /// If a query fails.
    pub fn check_range(
        &self,
        server: &ClickHouse,
        db: &str,
        first: u64,
        last: u64,
    ) -> Result<usize, Vec<String>> {
        let expects = self.expected(first, last);
        let quote = |s: &str| format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"));
        let mut dids = BTreeSet::new();
        let mut tables = BTreeSet::new();
        for (_, e) in &expects {
            match e {
                Expect::Record { did, table, .. } => {
                    dids.insert(quote(did));
                    tables.insert(*table);
                }
                Expect::Identity { did, .. } | Expect::Account { did, .. } => {
                    dids.insert(quote(did));
                }
                Expect::Nothing => {}
            }
        }
        if dids.is_empty() {
            return Ok(0);
        }
        let in_list = dids.into_iter().collect::<Vec<_>>().join(",");
        let newest = |sql: String| -> BTreeMap<String, u64> {
            server
                .query(&sql)
                .lines()
                .filter_map(|l| l.rsplit_once('\t'))
                .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or(0)))
                .collect()
        };
        let records = newest(format!(
            "SELECT concat(did, '/', collection, '/', rkey), max(version) FROM {db}.records \
             WHERE did IN ({in_list}) GROUP BY did, collection, rkey FORMAT TSV"
        ));
        // One query per table: the DID list repeated in a UNION could pass
        // ClickHouse's max_query_size (256 KiB).
        let mut typed = BTreeMap::new();
        for t in &tables {
            typed.extend(newest(format!(
                "SELECT concat('{t}/', did, '/', rkey), max(version) FROM {db}.{t} \
                 WHERE did IN ({in_list}) GROUP BY did, rkey FORMAT TSV"
            )));
        }
        let identities = newest(format!(
            "SELECT did, max(version) FROM {db}.identities WHERE did IN ({in_list}) GROUP BY did FORMAT TSV"
        ));
        let accounts = newest(format!(
            "SELECT did, max(version) FROM {db}.accounts WHERE did IN ({in_list}) GROUP BY did FORMAT TSV"
        ));
        let mut missing = Vec::new();
        for (g, e) in &expects {
            let rows: Vec<(&str, &BTreeMap<String, u64>, String, u64)> = match e {
                Expect::Record {
                    did,
                    collection,
                    rkey,
                    version,
                    table,
                } => vec![
                    (
                        "records",
                        &records,
                        format!("{did}/{collection}/{rkey}"),
                        *version,
                    ),
                    (table, &typed, format!("{table}/{did}/{rkey}"), *version),
                ],
                Expect::Identity { did, version } => {
                    vec![("identities", &identities, did.clone(), *version)]
                }
                Expect::Account { did, version } => {
                    vec![("accounts", &accounts, did.clone(), *version)]
                }
                Expect::Nothing => continue,
            };
            for (table, stored, key, version) in rows {
                match stored.get(&key) {
                    Some(v) if *v >= version => {}
                    got => missing.push(format!(
                        "event {g} (time_us {}): {table} {key} version {version}, stored {got:?}",
                        Synth::time_us(*g)
                    )),
                }
            }
        }
        if missing.is_empty() {
            Ok(expects.len())
        } else {
            Err(missing)
        }
    }

    fn kind(&self, i: u64) -> Kind {
        match mix(i, 1) % 1000 {
            0..350 => Kind::Post,
            350..580 => Kind::Like,
            580..650 => Kind::Repost,
            650..730 => Kind::Follow,
            730..750 => Kind::Block,
            750..800 => Kind::Profile,
            800..815 => Kind::List,
            815..840 => Kind::ListItem,
            840..850 => Kind::Declaration,
            850..865 => Kind::Filtered,
            865..940 => Kind::Delete,
            940..970 => Kind::Identity,
            _ => Kind::Account,
        }
    }

    fn did(&self, i: u64) -> String {
        did(mix(i, 2) % self.dids)
    }

    /// The rkey an event at `i` creates (profiles and declarations: `self`).
    fn rkey(&self, i: u64) -> String {
        match self.kind(i) {
            Kind::Profile | Kind::Declaration => "self".to_owned(),
            _ => tid(i).to_string(),
        }
    }

    /// The newest post created at or before `i - 1` within 64 events, if any.
    fn post_before(&self, i: u64) -> Option<u64> {
        (i.saturating_sub(64)..i)
            .rev()
            .find(|&j| self.kind(j) == Kind::Post)
    }

    /// `(uri, cid)` of the record event `j` creates.
    fn strong_ref(&self, j: u64) -> (String, String) {
        let kind = self.kind(j);
        let uri = format!(
            "at://{}/{}/{}",
            self.did(j),
            kind.collection().unwrap_or(FILTERED_COLLECTION),
            self.rkey(j)
        );
        (uri, cid_of(&self.record(j)).to_string())
    }

    /// The record event `j` creates (lex-JSON), for kinds that create one.
    fn record(&self, j: u64) -> Value {
        let created_at = rfc3339(BASE_TID_US + j);
        let h = mix(j, 3);
        match self.kind(j) {
            Kind::Post => {
                let mut text = format!("synthetic post {j}");
                let mut post = json!({
                    "$type": "app.bsky.feed.post",
                    "createdAt": created_at,
                    "langs": [if h.is_multiple_of(4) { "ja" } else { "en" }],
                });
                let mut facets = Vec::new();
                if h % 5 == 1 {
                    let mention = did(h % self.dids);
                    let start = text.len() + 1;
                    text.push_str(&format!(" @{mention}"));
                    facets.push(json!({
                        "index": {"byteStart": start, "byteEnd": text.len()},
                        "features": [{"$type": "app.bsky.richtext.facet#mention", "did": mention}],
                    }));
                }
                if h % 7 == 2 {
                    let link = format!("https://example.com/{j}");
                    let start = text.len() + 1;
                    text.push_str(&format!(" {link}"));
                    facets.push(json!({
                        "index": {"byteStart": start, "byteEnd": text.len()},
                        "features": [{"$type": "app.bsky.richtext.facet#link", "uri": link}],
                    }));
                }
                if h % 6 == 3 {
                    let start = text.len() + 1;
                    text.push_str(&format!(" #tag{}", h % 10));
                    facets.push(json!({
                        "index": {"byteStart": start, "byteEnd": text.len()},
                        "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": format!("tag{}", h % 10)}],
                    }));
                }
                post["text"] = json!(text);
                if !facets.is_empty() {
                    post["facets"] = json!(facets);
                }
                if let Some(parent) = self.post_before(j).filter(|_| h.is_multiple_of(3)) {
                    let (uri, cid) = self.strong_ref(parent);
                    let r = json!({"uri": uri, "cid": cid});
                    post["reply"] = json!({"root": r.clone(), "parent": r});
                } else if let Some(quoted) = self.post_before(j).filter(|_| h % 11 == 4) {
                    let (uri, cid) = self.strong_ref(quoted);
                    post["embed"] = json!({
                        "$type": "app.bsky.embed.record",
                        "record": {"uri": uri, "cid": cid},
                    });
                }
                post
            }
            Kind::Like | Kind::Repost => {
                let subject = match self.post_before(j) {
                    Some(p) => self.strong_ref(p),
                    None => (
                        format!("at://{}/app.bsky.feed.post/{}", did(0), tid(0)),
                        cid_of(&json!({"seed": 0})).to_string(),
                    ),
                };
                json!({
                    "$type": self.kind(j).collection(),
                    "createdAt": created_at,
                    "subject": {"uri": subject.0, "cid": subject.1},
                })
            }
            Kind::Follow | Kind::Block => json!({
                "$type": self.kind(j).collection(),
                "createdAt": created_at,
                "subject": did(h % self.dids),
            }),
            Kind::Profile => json!({
                "$type": "app.bsky.actor.profile",
                "displayName": format!("Synthetic {j}"),
                "description": format!("profile version {j}"),
                "createdAt": created_at,
            }),
            Kind::List => json!({
                "$type": "app.bsky.graph.list",
                "name": format!("list {j}"),
                "purpose": "app.bsky.graph.defs#curatelist",
                "createdAt": created_at,
            }),
            Kind::ListItem => json!({
                "$type": "app.bsky.graph.listitem",
                "list": format!("at://{}/app.bsky.graph.list/{}", self.did(j), tid(j / 2)),
                "subject": did(h % self.dids),
                "createdAt": created_at,
            }),
            Kind::Declaration => json!({
                "$type": "chat.bsky.actor.declaration",
                "allowIncoming": if h.is_multiple_of(2) { "following" } else { "all" },
            }),
            Kind::Filtered => json!({
                "$type": FILTERED_COLLECTION,
                "text": format!("filtered {j}"),
                "createdAt": created_at,
            }),
            Kind::Delete | Kind::Identity | Kind::Account => Value::Null,
        }
    }

    /// The event at loop index `i` without its `time_us`, and its expectation.
    fn payload(&self, i: u64) -> (Value, Expect) {
        let kind = self.kind(i);
        let seq = i + 1;
        match kind {
            Kind::Identity => {
                let did = self.did(i);
                let handle = format!("user{}-v{i}.synth.test", mix(i, 2) % self.dids);
                (
                    json!({
                        "did": did,
                        "kind": "identity",
                        "identity": {"did": did, "handle": handle, "seq": seq, "time": rfc3339(BASE_TID_US + i)},
                    }),
                    Expect::Identity { did, version: seq },
                )
            }
            Kind::Account => {
                let did = self.did(i);
                let mut account = json!({"did": did, "seq": seq, "time": rfc3339(BASE_TID_US + i)});
                match mix(i, 4) % 4 {
                    0 => account["active"] = json!(true),
                    n => {
                        account["active"] = json!(false);
                        account["status"] =
                            json!(["deactivated", "takendown", "suspended"][n as usize - 1]);
                    }
                }
                (
                    json!({"did": did, "kind": "account", "account": account}),
                    Expect::Account { did, version: seq },
                )
            }
            Kind::Delete => {
                // The record an event up to 500 back created, or (when that
                // event created nothing) a key never created.
                let j = i.checked_sub(1 + mix(i, 5) % 500);
                let target = j.filter(|&j| {
                    !matches!(
                        self.kind(j),
                        Kind::Delete | Kind::Identity | Kind::Account | Kind::Filtered
                    )
                });
                let (did, collection, rkey, table) = match target {
                    Some(j) => (
                        self.did(j),
                        self.kind(j).collection().unwrap_or_default().to_owned(),
                        self.rkey(j),
                        self.kind(j).table(),
                    ),
                    None => (
                        self.did(i),
                        "app.bsky.feed.post".to_owned(),
                        tid(i).to_string(),
                        Kind::Post.table(),
                    ),
                };
                let version = tid(i).to_u64();
                (
                    json!({
                        "did": did,
                        "kind": "commit",
                        "commit": {"rev": tid(i).to_string(), "operation": "delete", "collection": collection, "rkey": rkey},
                    }),
                    Expect::Record {
                        did,
                        collection,
                        rkey,
                        version,
                        table,
                    },
                )
            }
            _ => {
                let did = self.did(i);
                let collection = kind.collection().unwrap_or_default().to_owned();
                let rkey = self.rkey(i);
                let record = self.record(i);
                let operation = if rkey == "self" && mix(i, 6).is_multiple_of(2) {
                    "update"
                } else {
                    "create"
                };
                let version = tid(i).to_u64();
                let expect = if kind == Kind::Filtered {
                    Expect::Nothing
                } else {
                    Expect::Record {
                        did: did.clone(),
                        collection: collection.clone(),
                        rkey: rkey.clone(),
                        version,
                        table: kind.table(),
                    }
                };
                (
                    json!({
                        "did": did,
                        "kind": "commit",
                        "commit": {
                            "rev": tid(i).to_string(),
                            "operation": operation,
                            "collection": collection,
                            "rkey": rkey,
                            "record": record,
                            "cid": cid_of(&record).to_string(),
                        },
                    }),
                    expect,
                )
            }
        }
    }
}

/// `did:plc:` and 24 base32 characters encoding `k`.
pub fn did(k: u64) -> String {
    const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";
    let mut s = String::from("did:plc:synth");
    let mut v = k;
    for _ in 0..19 {
        s.push(char::from(ALPHABET[(v % 32) as usize]));
        v /= 32;
    }
    s
}

/// The TID of event `i`'s commit (and of the record it creates).
fn tid(i: u64) -> Tid {
    // Clock id from the index: distinct TIDs even for equal timestamps.
    Tid::from_parts(BASE_TID_US + i, (i % 1024) as u16).expect("synthetic TIDs stay within 53 bits")
}

/// A CID for a record (of its JSON text: the indexer does not check it).
fn cid_of(record: &Value) -> Cid {
    Cid::compute(CODEC_DAG_CBOR, record.to_string().as_bytes())
}

/// A well-mixed 64-bit value of `(i, salt)` (splitmix64).
fn mix(i: u64, salt: u64) -> u64 {
    let mut z = i
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(salt.wrapping_mul(0xD1B5_4A32_D192_ED03));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// RFC 3339 with milliseconds, UTC, of microseconds since the epoch.
fn rfc3339(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = skyhouse_atproto::syntax::civil_from_days(days as i64);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        micros % 1_000_000 / 1000
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_dids_are_well_formed() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(BASE_TID_US), "2025-01-01T00:00:00.000Z");
        assert_eq!(
            rfc3339(BASE_TIME_US as u64 + 86_400_000_000 * 59 + 1_500),
            "2026-03-01T00:00:00.001Z"
        );
        assert_eq!(did(0).len(), "did:plc:".len() + 24);
        assert_ne!(did(1), did(32));
    }

    #[test]
    fn events_are_deterministic_and_loops_repeat_content_at_higher_positions() {
        let s = Synth::new(1000, 50);
        let (a, b) = (s.event(123), s.event(1123));
        assert_eq!(a.json, Synth::new(1000, 50).event(123).json);
        assert_eq!(a.expect, b.expect);
        assert_eq!(b.time_us - a.time_us, 1000 * STEP_US);
        assert_eq!(Synth::index_at(b.time_us), Some(1123));
        assert_eq!(Synth::index_at(b.time_us + STEP_US - 1), Some(1123));
        assert_eq!(Synth::index_at(BASE_TIME_US - 1), None);
        let parsed: Value = serde_json::from_str(&a.json).unwrap();
        assert_eq!(parsed["time_us"], a.time_us);
    }

    #[test]
    fn the_mix_has_every_kind_and_deletes_hit_earlier_creates() {
        let s = Synth::new(20_000, 500);
        let mut kinds = std::collections::BTreeSet::new();
        let mut deletes_of_creates = 0;
        for i in 0..20_000 {
            let v: Value = serde_json::from_str(&s.event(i).json).unwrap();
            let kind = v["kind"].as_str().unwrap().to_owned();
            let op = v["commit"]["operation"].as_str().unwrap_or("").to_owned();
            if op == "delete"
                && !v["commit"]["rkey"]
                    .as_str()
                    .unwrap()
                    .eq(&tid(i).to_string())
            {
                deletes_of_creates += 1;
            }
            kinds.insert(format!(
                "{kind}:{op}:{}",
                v["commit"]["collection"].as_str().unwrap_or("")
            ));
        }
        assert!(kinds.len() >= 14, "{kinds:?}");
        assert!(deletes_of_creates > 1000, "{deletes_of_creates}");
    }
}
