//! Captures in, the same final state out: firehose frames and Jetstream
//! lines of the same real events; replays; resume; Redis down.

use skyhouse_sources::SourceKind;

use crate::{assert_same_records, expected_from_jetstream, file_url, fresh, index, records, state};

const FIRST_SEQ: i64 = 31_527_015_322;
const LAST_SEQ: i64 = 31_527_015_471;

#[tokio::test]
async fn firehose_capture_lands_exactly_and_saves_the_cursor() {
    let (db, ch) = fresh("fh_capture").await;
    let st = state("fh_capture").await;
    let summary = index(
        SourceKind::Firehose,
        &file_url("corpus.frames"),
        &ch,
        &st,
        None,
    )
    .await;
    assert_eq!(summary.messages, 150);
    assert_eq!(summary.cursor, Some(LAST_SEQ));
    assert_eq!(
        st.cursor("cursor:firehose:test").await.unwrap(),
        Some(LAST_SEQ)
    );
    let expected = expected_from_jetstream();
    // 150 distinct keys, one of them outside app.bsky/chat.bsky (filtered).
    assert_eq!(expected.len(), 149);
    assert_same_records(&records(&db), &expected);
    // Typed tables got their rows, identity and account events theirs.
    assert_eq!(
        db.query("SELECT count() FROM likes FINAL WHERE deleted = 0"),
        "105\n"
    );
    // The capture's one #identity carries no handle: nothing to record
    // (a known handle is not overwritten with nothing).
    assert_eq!(db.query("SELECT count() FROM identities FINAL"), "0\n");
    assert_eq!(db.query("SELECT count() FROM accounts FINAL"), "1\n");
    assert_eq!(db.query("SELECT count() FROM dead_letters"), "0\n");
}

#[tokio::test]
async fn jetstream_capture_gives_the_same_records_as_the_firehose() {
    let (fh_db, fh) = fresh("fh_vs_js_a").await;
    let (js_db, js) = fresh("fh_vs_js_b").await;
    let st = state("fh_vs_js").await;
    index(
        SourceKind::Firehose,
        &file_url("corpus.frames"),
        &fh,
        &st,
        None,
    )
    .await;
    let s = index(
        SourceKind::Jetstream,
        &file_url("corpus.jsonl"),
        &js,
        &st,
        None,
    )
    .await;
    assert_eq!(s.messages, 152);
    assert_same_records(&records(&js_db), &records(&fh_db));
    // The typed columns agree too (posts: text, reply, embed, facets).
    let posts = "SELECT did, rkey, cid, text, langs, reply_root_uri, reply_parent_uri, quote_uri, \
                 embed_kind, mentions, links, tags FROM posts FINAL ORDER BY did, rkey FORMAT TSV";
    assert_eq!(js_db.query(posts), fh_db.query(posts));
    assert_eq!(js_db.query(posts).lines().count(), 18);
    let ids = "SELECT did, handle FROM identities FINAL ORDER BY did FORMAT TSV";
    assert_eq!(js_db.query(ids), fh_db.query(ids));
    let accts = "SELECT did, active, status FROM accounts FINAL ORDER BY did FORMAT TSV";
    assert_eq!(js_db.query(accts), fh_db.query(accts));
}

#[tokio::test]
async fn replaying_twice_changes_nothing() {
    let (db, ch) = fresh("fh_twice").await;
    let st = state("fh_twice").await;
    index(
        SourceKind::Firehose,
        &file_url("corpus.frames"),
        &ch,
        &st,
        None,
    )
    .await;
    let once = records(&db);
    let counts = "SELECT collection, count() FROM records FINAL WHERE deleted = 0 GROUP BY collection ORDER BY collection FORMAT TSV";
    let once_counts = db.query(counts);
    index(
        SourceKind::Firehose,
        &file_url("corpus.frames"),
        &ch,
        &st,
        Some(0),
    )
    .await;
    index(
        SourceKind::Jetstream,
        &file_url("corpus.jsonl"),
        &ch,
        &st,
        Some(0),
    )
    .await;
    assert_same_records(&records(&db), &once);
    assert_eq!(db.query(counts), once_counts);
}

#[tokio::test]
async fn a_saved_cursor_resumes_after_it() {
    let (db, ch) = fresh("fh_resume").await;
    let st = state("fh_resume").await;
    let mid = FIRST_SEQ + 99;
    st.set_cursor("cursor:firehose:test", mid).await.unwrap();
    let s = index(
        SourceKind::Firehose,
        &file_url("corpus.frames"),
        &ch,
        &st,
        None,
    )
    .await;
    assert_eq!(s.messages, (LAST_SEQ - mid) as u64);
    assert_eq!(s.cursor, Some(LAST_SEQ));
    let stored: u64 = db
        .query("SELECT count() FROM records FINAL")
        .trim()
        .parse()
        .unwrap();
    assert!(stored > 0 && stored < 150, "{stored}");
}

#[tokio::test]
async fn redis_down_keeps_indexing_and_holds_the_cursor() {
    let (db, ch) = fresh("fh_noredis").await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let st = skyhouse_state::State::connect(&format!("redis://127.0.0.1:{port}"), "x:")
        .await
        .unwrap();
    // --cursor given: no need to read Redis at startup.
    let s = index(
        SourceKind::Firehose,
        &file_url("corpus.frames"),
        &ch,
        &st,
        Some(0),
    )
    .await;
    assert_eq!(s.messages, 150);
    // Everything is in ClickHouse, and the acknowledged cursor is known
    // even though it could not be saved.
    assert_same_records(&records(&db), &expected_from_jetstream());
    assert_eq!(s.cursor, Some(LAST_SEQ));
}
