//! The state against a real Redis (testkit starts it on a spare port).

use skyhouse_state::{cursor_key, Skipped, State, StateError};
use skyhouse_testkit::{Redis, Reply};

async fn state(hint: &str) -> (State, String) {
    let redis = Redis::shared();
    let prefix = redis.key_prefix(hint);
    let state = State::connect(&redis.url(), &prefix)
        .await
        .expect("connect");
    (state, prefix)
}

#[tokio::test]
async fn cursor_set_get_reset() {
    let (state, prefix) = state("cursor").await;
    let key = cursor_key("firehose", "ws://127.0.0.1:1/");
    assert_eq!(state.cursor(&key).await.unwrap(), None);
    state.set_cursor(&key, 42).await.unwrap();
    assert_eq!(state.cursor(&key).await.unwrap(), Some(42));
    // Stored as plain decimal text under the prefix (operators can read it).
    let raw = Redis::shared().command(&["GET", &format!("{prefix}{key}")]);
    assert_eq!(raw.as_text().as_deref(), Some("42"));
    assert!(state.reset_cursor(&key).await.unwrap());
    assert_eq!(state.cursor(&key).await.unwrap(), None);
    assert!(!state.reset_cursor(&key).await.unwrap());
}

#[tokio::test]
async fn a_foreign_value_is_reported_not_used() {
    let (state, prefix) = state("corrupt").await;
    Redis::shared().command(&["SET", &format!("{prefix}cursor:x"), "abc"]);
    let err = state.cursor("cursor:x").await.unwrap_err();
    assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
    assert!(!err.is_retriable());
    assert!(err.to_string().contains("cursor:x"), "{err}");
}

#[tokio::test]
async fn resync_requests_go_to_a_stream() {
    let (state, prefix) = state("resync").await;
    state.queue_resync("did:plc:a", "gap", 7).await.unwrap();
    state.queue_resync("did:plc:b", "sync", 9).await.unwrap();
    assert_eq!(state.resync_len().await.unwrap(), 2);
    let reply = Redis::shared().command(&["XRANGE", &format!("{prefix}resync"), "-", "+"]);
    let mut words = Vec::new();
    flatten(&reply, &mut words);
    // Two entries: id, then field/value pairs.
    assert_eq!(words.len(), 2 * 7, "{words:?}");
    assert_eq!(
        &words[1..7],
        ["did", "did:plc:a", "reason", "gap", "at", "7"]
    );
    assert_eq!(
        &words[8..14],
        ["did", "did:plc:b", "reason", "sync", "at", "9"]
    );
}

#[tokio::test]
async fn skipped_ranges_go_to_a_stream_an_operator_can_read() {
    let (state, prefix) = state("skipped").await;
    let skip = Skipped {
        cursor: "cursor:firehose:relay.example".to_owned(),
        reason: "future_cursor".to_owned(),
        after: Some(5000),
        resumed_at: 12,
        time: 1_783_000_000,
    };
    state.record_skip(&skip).await.unwrap();
    let unknown = Skipped {
        after: None,
        ..skip.clone()
    };
    state.record_skip(&unknown).await.unwrap();
    assert_eq!(state.skips(10).await.unwrap(), [skip, unknown]);
    let reply = Redis::shared().command(&["XRANGE", &format!("{prefix}skipped"), "-", "+"]);
    let mut words = Vec::new();
    flatten(&reply, &mut words);
    assert_eq!(
        &words[1..11],
        [
            "cursor",
            "cursor:firehose:relay.example",
            "reason",
            "future_cursor",
            "after",
            "5000",
            "resumed_at",
            "12",
            "time",
            "1783000000"
        ]
    );
}

fn flatten(reply: &Reply, out: &mut Vec<String>) {
    match reply {
        Reply::Array(Some(items)) => items.iter().for_each(|r| flatten(r, out)),
        other => out.extend(other.as_text()),
    }
}

#[tokio::test]
async fn a_down_server_fails_commands_quickly_and_retriably() {
    // Nothing listens on this port: connect succeeds (reconnects in the
    // background), commands time out as Unavailable.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let state = State::connect(&format!("redis://127.0.0.1:{port}"), "t:")
        .await
        .expect("connect does not wait for the server");
    let err = state.set_cursor("cursor:x", 1).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(!state.ping().await);
}

#[tokio::test]
async fn a_lease_has_one_holder_until_it_expires() {
    let (state, prefix) = state("lease").await;
    let long = std::time::Duration::from_secs(60);
    assert!(state.lease("walk", "a", long).await.unwrap());
    assert!(!state.lease("walk", "b", long).await.unwrap(), "held by a");
    // The holder extends it.
    Redis::shared().command(&["PEXPIRE", &format!("{prefix}walk"), "5000"]);
    assert!(state.lease("walk", "a", long).await.unwrap());
    let skyhouse_testkit::Reply::Integer(left) =
        Redis::shared().command(&["PTTL", &format!("{prefix}walk")])
    else {
        panic!("PTTL is an integer");
    };
    assert!(left > 50_000, "extended to the full TTL: {left} ms left");
    assert!(!state.lease("walk", "b", long).await.unwrap());
    // A holder that stops renewing loses it once it expires.
    let short = std::time::Duration::from_millis(100);
    assert!(state.lease("walk2", "a", short).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(state.lease("walk2", "b", long).await.unwrap());
    assert!(!state.lease("walk2", "a", long).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_cache_command_skips_the_caches_for_a_while_then_they_come_back() {
    let redis = Redis::start_private();
    let state = State::connect(&redis.url(), "t:").await.expect("connect");
    let clone = state.clone();
    state
        .cache_set("page", "v1", std::time::Duration::from_secs(600))
        .await
        .expect("cache set");
    assert_eq!(
        state.cache_get("page").await.unwrap().as_deref(),
        Some("v1")
    );
    assert!(!state.cache_skipped());

    // Redis stalls (every client paused for four cache timeouts): the cache read gives
    // up at its own timeout, and the caches of this state and its clones are skipped.
    let pause = (4 * skyhouse_state::CACHE_TIMEOUT.as_millis()).to_string();
    assert_eq!(
        redis.command(&["CLIENT", "PAUSE", pause.as_str(), "ALL"]),
        Reply::Status("OK".into())
    );
    let err = state.cache_get("page").await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(err.to_string().contains("took over"), "{err}");
    assert!(state.cache_skipped() && clone.cache_skipped());

    // Redis answers again, but while skipped a cache command does not ask it.
    let pinged = tokio::task::spawn_blocking(move || {
        let pong = redis.command(&["PING"]);
        (redis, pong)
    })
    .await
    .unwrap();
    let redis = pinged.0;
    assert_eq!(pinged.1, Reply::Status("PONG".into()));
    if clone.cache_skipped() {
        let err = clone.cache_get("page").await.unwrap_err();
        assert!(err.to_string().contains("skipped"), "{err}");
        let err = clone
            .cache_set("page", "v2", std::time::Duration::from_secs(600))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("skipped"), "{err}");
    }

    // After CACHE_RETRY_AFTER the next command asks Redis again.
    let deadline = std::time::Instant::now() + 10 * skyhouse_state::CACHE_RETRY_AFTER;
    while state.cache_skipped() {
        assert!(std::time::Instant::now() < deadline, "still skipped");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        state.cache_get("page").await.unwrap().as_deref(),
        Some("v1")
    );
    assert_eq!(
        redis.command(&["GET", "t:page"]).as_text().as_deref(),
        Some("v1"),
        "the skipped write wrote nothing"
    );
}
