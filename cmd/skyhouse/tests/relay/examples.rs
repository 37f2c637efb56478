//! The ingester examples, tested: the Rust one (`pkg/relay/examples/ingester.rs`,
//! included here and run in-process) and the Python one
//! (`pkg/relay/examples/ingester.py`, grpcio; `just deps` installs it) each
//! store what they receive, authenticate with a token and run as one group of
//! two against the real relay. Together they stored the stream, each
//! operation once.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use crate::groups::{newest, ops, publish};
use crate::ingester;
use crate::*;

/// What a store holds: (cursor, did, rkey, action), in arrival order (a line
/// still being written is left out).
fn stored(store: &Path) -> Vec<(u64, String, String, String)> {
    let text = fs::read_to_string(store.join("operations.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .map(|v| {
            (
                v["cursor"].as_u64().unwrap(),
                v["did"].as_str().unwrap().to_owned(),
                v["rkey"].as_str().unwrap().to_owned(),
                v["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_and_python_ingesters_share_the_stream_as_a_group_and_store_it_once() {
    let dir = scratch("examples");
    let tokens = dir.join("tokens.json");
    let sub = create_token(&tokens, "ingesters", "subscribe");
    let publ = create_token(&tokens, "indexer", "publish");
    let mut relay = Relay::start(
        &dir,
        &[
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--group-partitions",
            "16",
        ],
    );
    let mut writer = relay.client(Some(&publ)).await;
    let start = newest(&mut writer).await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../pkg/relay/examples/ingester.py")
        .canonicalize()
        .unwrap();
    let py_store = dir.join("python");
    let py_log = fs::File::create(dir.join("python.log")).unwrap();
    let mut python = Command::new("python3")
        .arg(&script)
        .arg(format!("127.0.0.1:{}", relay.grpc))
        .arg(&py_store)
        .env("RELAY_TOKEN", &sub)
        .env("INGESTER_GROUP", "examples")
        .stdout(py_log.try_clone().unwrap())
        .stderr(py_log)
        .spawn()
        .unwrap();
    let rust_store = dir.join("rust");
    let rust = tokio::spawn(ingester::run(ingester::Config {
        url: relay.url(),
        token: Some(sub.clone()),
        group: Some("examples".into()),
        store: rust_store.clone(),
        collections: Vec::new(),
        max_ops: None,
    }));
    let py_log = || fs::read_to_string(dir.join("python.log")).unwrap_or_default();
    // Both joined before anything is published: no rebalance while it flows.
    let deadline = Instant::now() + DEADLINE;
    while !relay
        .scrape()
        .await
        .contains("skyhouse_relay_group_members{group=\"examples\"} 2")
    {
        if let Some(s) = python.try_wait().unwrap() {
            panic!(
                "ingester.py exited ({s}; grpcio-tools missing? `just deps`):\n{}",
                py_log()
            );
        }
        assert!(!rust.is_finished(), "the Rust ingester stopped");
        assert!(
            Instant::now() < deadline,
            "the ingesters never joined:\n{}",
            py_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let published = ops(0, 6_000);
    let mut last = 0;
    for chunk in published.chunks(1_500) {
        last = publish(&mut writer, chunk.to_vec()).await;
    }
    assert_eq!(last, start + published.len() as u64);
    let want: BTreeSet<u64> = (start + 1..=last).collect();
    let deadline = Instant::now() + DEADLINE;
    let (in_rust, in_python) = loop {
        let (r, p) = (stored(&rust_store), stored(&py_store));
        let seen: BTreeSet<u64> = r.iter().chain(&p).map(|o| o.0).collect();
        if want.is_subset(&seen) {
            break (r, p);
        }
        assert!(
            python.try_wait().unwrap().is_none(),
            "ingester.py exited:\n{}",
            py_log()
        );
        assert!(!rust.is_finished(), "the Rust ingester stopped");
        assert!(
            Instant::now() < deadline,
            "{} of {} stored:\n{}",
            seen.len(),
            want.len(),
            py_log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    rust.abort();

    assert!(
        !in_rust.is_empty() && !in_python.is_empty(),
        "both got a share"
    );
    // The union is the stream: each operation once (no rebalance happened),
    // as published.
    let mut by_cursor: BTreeMap<u64, &(u64, String, String, String)> = BTreeMap::new();
    for op in in_rust.iter().chain(&in_python) {
        assert!(
            by_cursor.insert(op.0, op).is_none(),
            "cursor {} stored twice",
            op.0
        );
    }
    assert_eq!(by_cursor.keys().copied().collect::<BTreeSet<_>>(), want);
    for (cursor, (_, did, rkey, action)) in &by_cursor {
        let p = &published[(cursor - start - 1) as usize];
        assert_eq!((did, rkey), (&p.did, &p.rkey), "cursor {cursor}");
        assert_eq!(action, "ACTION_CREATE");
    }
    // One repository, one ingester, in order.
    let dids = |s: &[(u64, String, String, String)]| -> BTreeSet<String> {
        s.iter().map(|o| o.1.clone()).collect()
    };
    assert!(dids(&in_rust).is_disjoint(&dids(&in_python)));
    for s in [&in_rust, &in_python] {
        assert!(s.windows(2).all(|w| w[0].0 < w[1].0), "cursor order");
    }

    // The Python ingester is killed; the Rust one is started again on the
    // same store and, alone in the group, takes every partition over from
    // the acknowledged positions: what follows is stored, and nothing twice
    // but what the killed member may have stored without acknowledging.
    let _ = python.kill();
    let _ = python.wait();
    let rust = tokio::spawn(ingester::run(ingester::Config {
        url: relay.url(),
        token: Some(sub.clone()),
        group: Some("examples".into()),
        store: rust_store.clone(),
        collections: Vec::new(),
        max_ops: None,
    }));
    let more = publish(&mut writer, ops(6_000, 2_000)).await;
    let want_all: BTreeSet<u64> = (start + 1..=more).collect();
    let deadline = Instant::now() + DEADLINE;
    let after = loop {
        let r = stored(&rust_store);
        let seen: BTreeSet<u64> = r.iter().chain(&in_python).map(|o| o.0).collect();
        if want_all.is_subset(&seen) {
            break r;
        }
        assert!(!rust.is_finished(), "the Rust ingester stopped");
        assert!(
            Instant::now() < deadline,
            "{} of {} stored",
            seen.len(),
            want_all.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    rust.abort();
    let python_had: BTreeSet<u64> = in_python.iter().map(|o| o.0).collect();
    let mut count: BTreeMap<u64, u32> = BTreeMap::new();
    for op in after.iter().chain(&in_python) {
        *count.entry(op.0).or_default() += 1;
    }
    for (cursor, n) in count {
        assert!(
            n == 1 || (n == 2 && python_had.contains(&cursor)),
            "cursor {cursor} stored {n} times outside a rebalance"
        );
    }
}
