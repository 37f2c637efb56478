//! The 162 production Jetstream events of `testdata/jetstream/` (152 in
//! `expected_v1.jsonl`, 10 in `golden_v1.jsonl`): every commit gives one raw
//! row and the right typed row, none is a dead letter, and the extracted
//! columns are exactly what the JSON says.

use skyhouse_atproto::jetstream::{Event, Operation, Payload};
use skyhouse_atproto::syntax::Tid;
use skyhouse_transform::{apply, Action, Cid, Op, Rows, Table, Value};

use crate::atproto_testdata;

/// One commit event, converted once.
struct Commit {
    did: String,
    collection: String,
    rkey: String,
    action: Action,
    cid: Option<Cid>,
    record: Option<Value<'static>>,
    record_json: Option<serde_json::Value>,
    version: u64,
    indexed_at: u32,
}

impl Commit {
    fn op(&self) -> Op<'_> {
        Op {
            did: &self.did,
            collection: &self.collection,
            rkey: &self.rkey,
            action: self.action,
            cid: self.cid,
            record: self.record.as_ref(),
            version: self.version,
            indexed_at: self.indexed_at,
        }
    }

    fn rows(&self) -> Rows {
        let mut rows = Rows::default();
        apply(&self.op(), &mut rows);
        rows
    }
}

/// The commit events of a capture file, and how many events it had in all.
fn load(file: &str) -> (Vec<Commit>, usize) {
    let path = atproto_testdata(&format!("jetstream/{file}"));
    let text = std::fs::read_to_string(&path).expect("read corpus");
    let mut commits = Vec::new();
    let mut events = 0;
    for line in text.lines() {
        events += 1;
        let event = Event::from_json(line.as_bytes()).expect("valid event");
        let Payload::Commit { commit } = event.payload else {
            continue;
        };
        let action = match commit.operation {
            Operation::Create => Action::Create,
            Operation::Update => Action::Update,
            Operation::Delete => Action::Delete,
        };
        let record = commit
            .record
            .as_ref()
            .map(|r| skyhouse_atproto::json::from_lex_json(r).expect("record is valid lex-JSON"));
        commits.push(Commit {
            did: event.did,
            collection: commit.collection,
            rkey: commit.rkey,
            action,
            cid: commit.cid.map(|c| c.parse().expect("valid cid")),
            record,
            record_json: commit.record,
            version: Tid::try_from(commit.rev.as_str())
                .expect("rev is a TID")
                .to_u64(),
            indexed_at: u32::try_from(event.time_us / 1_000_000).expect("time fits"),
        });
    }
    (commits, events)
}

fn all() -> Vec<Commit> {
    let (mut commits, events) = load("expected_v1.jsonl");
    assert_eq!(events, 152);
    let (golden, events) = load("golden_v1.jsonl");
    assert_eq!(events, 10);
    commits.extend(golden);
    commits
}

fn find<'c>(commits: &'c [Commit], did: &str, rkey: &str) -> &'c Commit {
    commits
        .iter()
        .find(|c| c.did == did && c.rkey == rkey)
        .unwrap_or_else(|| panic!("no event {did}/{rkey}"))
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn every_event_gives_one_raw_row_and_its_typed_row() {
    let commits = all();
    assert_eq!(commits.len(), 158, "commit events in the capture");
    let mut typed = 0;
    let mut ahead = 0;
    for c in &commits {
        let rows = c.rows();
        let what = format!("{} {}/{}", c.did, c.collection, c.rkey);
        assert_eq!(rows.dead_letters, vec![], "{what}");
        assert_eq!(rows.records.len(), 1, "{what}");
        let table = Table::for_collection(&c.collection);
        assert_eq!(rows.typed_len(), usize::from(table.is_some()), "{what}");
        if let Some(t) = table {
            assert_eq!(rows.table_len(t), 1, "{what}");
            typed += 1;
        }
        assert_eq!(rows.len(), 1 + usize::from(table.is_some()));

        let raw = &rows.records[0];
        assert_eq!(
            (raw.did.as_str(), raw.collection.as_str(), raw.rkey.as_str()),
            (c.did.as_str(), c.collection.as_str(), c.rkey.as_str())
        );
        assert_eq!(raw.version, c.version);
        assert_eq!(raw.indexed_at, c.indexed_at);
        assert!(raw.sort_at <= raw.created_at && raw.sort_at <= raw.indexed_at);
        match c.action {
            Action::Delete => {
                assert_eq!(
                    (raw.deleted, raw.cid.as_str(), raw.record.as_str()),
                    (1, "", "")
                );
            }
            _ => {
                assert_eq!(raw.deleted, 0);
                assert_eq!(raw.cid, c.cid.expect("cid").to_string());
                // The raw record is the event's record, as lex-JSON.
                let back: serde_json::Value =
                    serde_json::from_str(&raw.record).expect("record is JSON");
                assert_eq!(Some(&back), c.record_json.as_ref(), "{what}");
                if raw.created_at > raw.indexed_at {
                    ahead += 1;
                    assert_eq!(raw.sort_at, raw.indexed_at, "{what}");
                }
            }
        }
    }
    assert_eq!(
        typed, 155,
        "all but the three non-app.bsky commits are typed"
    );
    // Clock skew is real: records dated after Jetstream saw them.
    assert_eq!(ahead, 11, "see clock_skew_future_created_at");
}

#[test]
fn post_with_images_link_and_tags() {
    let commits = all();
    let c = find(
        &commits,
        "did:plc:ynfp6wddjqpl44gordpsqkuw",
        "3mptbyo7tas2u",
    );
    let rows = c.rows();
    let p = &rows.posts[0];
    assert_eq!(p.did, "did:plc:ynfp6wddjqpl44gordpsqkuw");
    assert_eq!(p.rkey, "3mptbyo7tas2u");
    assert_eq!(
        p.cid,
        "bafyreif3yyrzwtq3bc6verdxc764qa3u3lbxrhdyaacgawuke2k36dvu34"
    );
    assert_eq!(
        p.version,
        Tid::try_from("3mptbyplt4524").expect("tid").to_u64()
    );
    assert_eq!(p.deleted, 0);
    assert!(p.text.starts_with("\"Behind them, Timmi"));
    assert_eq!(p.langs, strings(&["es", "en"]));
    assert_eq!(p.embed_kind, "images");
    assert_eq!(p.image_count, 1);
    assert_eq!(
        p.links,
        strings(&["https://www.tumblr.com/tempo-tales/765681292369166336/behind-them-timmi-and-wankyu-follow-silently-but?source=share"])
    );
    assert_eq!(
        p.tags,
        strings(&["talesatwonderworld", "balanwonderworldoc"])
    );
    assert_eq!(p.mentions, Vec::<String>::new());
    assert_eq!(p.reply_root_uri, "");
    assert_eq!(p.quote_uri, "");
    assert_eq!(p.external_uri, "");
    // createdAt 2026-07-04T14:38:06.071Z, seen at 14:38:08.
    assert_eq!(p.created_at, 1_783_175_886);
    assert_eq!(p.indexed_at, 1_783_175_888);
    assert_eq!(p.sort_at, 1_783_175_886);
}

#[test]
fn post_with_two_facet_tags() {
    let commits = all();
    let c = find(
        &commits,
        "did:plc:tn3hni2jpphsgl6amfbb7ja6",
        "3mptbypfywk2v",
    );
    let p = &c.rows().posts[0];
    assert_eq!(p.tags, strings(&["HowToTellAiToShutUp", "IndieRebellion"]));
    assert_eq!(p.langs, strings(&["de"]));
    assert_eq!(p.embed_kind, "");
    assert_eq!(p.image_count, 0);
}

#[test]
fn reply_post() {
    let commits = all();
    let c = find(
        &commits,
        "did:plc:o2rolxey6s5k7d4lxcz3inl4",
        "3mptbyp7lu223",
    );
    let p = &c.rows().posts[0];
    let uri = "at://did:plc:i5y2f3gtpjxs3qg6fwgb6jb4/app.bsky.feed.post/3mpt7u2vlgs2c";
    let cid = "bafyreifzanogmt75wega3mdkjqiv5rg6usowy6hr3nrlvioezvu7jur3cq";
    assert_eq!(p.reply_root_uri, uri);
    assert_eq!(p.reply_root_cid, cid);
    assert_eq!(p.reply_parent_uri, uri);
    assert_eq!(p.reply_parent_cid, cid);
    assert_eq!(p.text, "이쁘시네용~~~");
    assert_eq!(p.langs, strings(&["ko"]));
}

#[test]
fn post_with_external_card() {
    let commits = all();
    let c = find(
        &commits,
        "did:plc:dclwtltrt2ggsryagfzk7dp4",
        "3mptbyoeyc22k",
    );
    let p = &c.rows().posts[0];
    assert_eq!(p.embed_kind, "external");
    assert_eq!(
        p.external_uri,
        "https://www.youtube.com/watch?v=V5lDo-jw8mA"
    );
    assert_eq!(
        p.links,
        strings(&["https://www.youtube.com/watch?v=V5lDo-jw8mA"])
    );
}

#[test]
fn like_via_repost() {
    let commits = all();
    let c = find(
        &commits,
        "did:plc:olddpd7kjwh4gmjw7llf2eej",
        "3mptbypdnwe2h",
    );
    let rows = c.rows();
    let l = &rows.likes[0];
    assert_eq!(
        l.subject_uri,
        "at://did:plc:pmzxw77fwfa56xrn7un6muy5/app.bsky.feed.post/3mpqnk4o3xw2y"
    );
    assert_eq!(
        l.subject_cid,
        "bafyreigfy566p2sv26cwbt2lnutyvdi45ws5lttliqjls25csbzvtj4uuy"
    );
    assert_eq!(l.subject_did, "did:plc:pmzxw77fwfa56xrn7un6muy5");
    assert_eq!(
        l.via_uri,
        "at://did:plc:z6rujpf4u56jfie7aqic2nfg/app.bsky.feed.repost/3mptbtxwtn32y"
    );
    assert_eq!(l.created_at, 1_783_175_887);
}

#[test]
fn repost_block_follow() {
    let commits = all();
    let r = &find(
        &commits,
        "did:plc:eizxoqcsvvvarxeb3pjkblrp",
        "3mmoojpbade2i",
    )
    .rows()
    .reposts[0];
    assert_eq!(
        r.subject_uri,
        "at://did:plc:hjloomm2tkve3pmfgbxegl3v/app.bsky.feed.post/3mmood3a6hc25"
    );
    assert_eq!(r.subject_did, "did:plc:hjloomm2tkve3pmfgbxegl3v");
    assert_eq!(r.via_uri, "");

    let b = &find(
        &commits,
        "did:plc:zrrwgoryvpxlntwduw247p2w",
        "3mptbypkpqx2g",
    )
    .rows()
    .blocks[0];
    assert_eq!(b.subject_did, "did:plc:wmv3rxaywejtjg4kmrq7bhsy");

    let follows: Vec<_> = commits
        .iter()
        .filter(|c| c.collection == "app.bsky.graph.follow" && c.action == Action::Create)
        .collect();
    assert_eq!(follows.len(), 7);
    for c in follows {
        let f = &c.rows().follows[0];
        let subject = c.record_json.as_ref().expect("record")["subject"]
            .as_str()
            .expect("subject");
        assert_eq!(f.subject_did, subject);
    }
}

#[test]
fn actor_status_live() {
    let commits = all();
    let c = commits
        .iter()
        .find(|c| c.collection == "app.bsky.actor.status")
        .expect("status event");
    let s = &c.rows().actor_statuses[0];
    assert_eq!(s.did, "did:plc:mb6o6ohnafbk33xaw5jpn63c");
    assert_eq!(s.rkey, "self");
    assert_eq!(s.status, "app.bsky.actor.status#live");
    assert_eq!(s.embed_uri, "https://www.twitch.tv/Zarynos_VT");
    assert_eq!(s.duration_minutes, 240);
}

#[test]
fn profile_update() {
    let commits = all();
    let c = find(&commits, "did:plc:o6t5vwyr7ae73foww7bgye4r", "self");
    assert_eq!(c.action, Action::Update);
    let p = &c.rows().profiles[0];
    assert_eq!(p.display_name, "Multiversal Lokis Unit🔞");
    assert!(p.description.starts_with("Damian Lokison, 32"));
    assert_eq!(
        p.avatar_cid,
        "bafkreieajxclqzwk2mczx7hxmoboqpuiveqlbm35gsda5xlaqfmlryu4ri"
    );
    assert_eq!(
        p.banner_cid,
        "bafkreicd6csmqjikxnkuwxu4sjre6gqy6pcts7cwab7lg4kixca2k2nfd4"
    );
    assert_eq!(
        p.pinned_post_uri,
        "at://did:plc:o6t5vwyr7ae73foww7bgye4r/app.bsky.feed.post/3meuab5it2s2g"
    );
    assert_eq!(p.joined_via_starter_pack_uri, "");
    assert_eq!(p.labels, Vec::<String>::new());
    // createdAt 2026-02-14T23:48:34.991Z: months before it was seen.
    assert_eq!(p.created_at, 1_771_112_914);
    assert_eq!(p.sort_at, p.created_at);
}

#[test]
fn deletes_are_tombstones() {
    let commits = all();
    let deletes: Vec<_> = commits
        .iter()
        .filter(|c| c.action == Action::Delete)
        .collect();
    assert_eq!(deletes.len(), 5);
    for c in deletes {
        let rows = c.rows();
        let raw = &rows.records[0];
        assert_eq!((raw.deleted, raw.version), (1, c.version));
        match c.collection.as_str() {
            "app.bsky.graph.follow" => {
                let f = &rows.follows[0];
                assert_eq!((f.deleted, f.version), (1, c.version));
                assert_eq!(
                    (f.did.as_str(), f.rkey.as_str()),
                    (c.did.as_str(), c.rkey.as_str())
                );
                assert_eq!((f.cid.as_str(), f.subject_did.as_str()), ("", ""));
                assert_eq!(f.created_at, c.indexed_at);
            }
            "app.bsky.feed.post" => {
                let p = &rows.posts[0];
                assert_eq!(
                    (p.deleted, p.version, p.rkey.as_str()),
                    (1, c.version, "3mpt73z3ejc2p")
                );
                assert_eq!(p.text, "");
            }
            other => {
                assert_eq!(other, "org.hypercerts.claim.activity");
                assert_eq!(rows.typed_len(), 0);
            }
        }
    }
}

#[test]
fn clock_skew_future_created_at() {
    // createdAt 14:38:09.020Z, seen by Jetstream at 14:38:08.196: a second
    // ahead. created_at keeps the claim, sort_at the time we saw it.
    let commits = all();
    let c = find(
        &commits,
        "did:plc:5zt4dhhiiqf677kbaz7o2dmf",
        "3mptbyprbiu2r",
    );
    let l = &c.rows().likes[0];
    assert_eq!(
        (l.created_at, l.indexed_at, l.sort_at),
        (1_783_175_889, 1_783_175_888, 1_783_175_888)
    );
}

#[test]
fn unknown_collections_are_raw_only() {
    let commits = all();
    let c = commits
        .iter()
        .find(|c| c.collection == "fm.teal.alpha.actor.status")
        .expect("teal event");
    let rows = c.rows();
    assert_eq!(
        (
            rows.records.len(),
            rows.typed_len(),
            rows.dead_letters.len()
        ),
        (1, 0, 0)
    );
    assert!(rows.records[0].record.contains("Sacred Sands"));
    // No createdAt: created_at falls back to indexed_at.
    assert_eq!(rows.records[0].created_at, c.indexed_at);
}

#[test]
fn batch_of_the_whole_capture() {
    let commits = all();
    let mut rows = Rows::default();
    for c in &commits {
        apply(&c.op(), &mut rows);
    }
    assert_eq!(rows.records.len(), 158);
    assert_eq!(rows.likes.len(), 106);
    assert_eq!(rows.posts.len(), 19);
    assert_eq!(rows.reposts.len(), 16);
    assert_eq!(rows.follows.len(), 10);
    assert_eq!(rows.blocks.len(), 2);
    assert_eq!(rows.profiles.len(), 1);
    assert_eq!(rows.actor_statuses.len(), 1);
    assert_eq!(rows.len(), 158 + 155);
    // approx_bytes is the sum of the rows' RowBinary sizes, and clear resets it.
    let raw: usize = rows.records.iter().map(|r| r.record.len()).sum();
    assert!(
        rows.approx_bytes() > raw,
        "{} <= {raw}",
        rows.approx_bytes()
    );
    assert!(rows.approx_bytes() < raw * 3);
    rows.clear();
    assert_eq!((rows.len(), rows.approx_bytes()), (0, 0));
    assert!(rows.is_empty());
}
