//! Events lost between the relay and the indexer are repaired by resync:
//! the indexer reads the real PDS's firehose through a loopback proxy that
//! drops frames while told to (a relay that lost events, or a stretch the
//! indexer never saw). The next commit of the account shows the gap; the
//! indexer queues the DID for resync; `skyhouse backfill work --resync`
//! fetches the snapshot and tombstones what the lost deletions removed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use skyhouse_testkit::{now_rfc3339, Network, Redis};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::Message;

use crate::{live_records, sentinel, seq_of, spare_port, strings, wait_until, Indexer, Setup};

const POST: &str = "app.bsky.feed.post";

/// A firehose proxy in front of `upstream` (the PDS's ws:// base): every
/// connection is forwarded with its query (the cursor); frames are dropped
/// (and counted in `dropped`) while `drop` is set. Returns the proxy's
/// subscribeRepos URL.
async fn lossy_proxy(upstream: String, drop: Arc<AtomicBool>, dropped: Arc<AtomicUsize>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (upstream, drop, dropped) = (upstream.clone(), drop.clone(), dropped.clone());
            tokio::spawn(async move {
                let mut query = String::new();
                #[allow(clippy::result_large_err)] // tungstenite's callback signature
                let capture = |req: &Request, resp: Response| {
                    query = req.uri().query().unwrap_or("").to_owned();
                    Ok(resp)
                };
                let Ok(mut down) = tokio_tungstenite::accept_hdr_async(tcp, capture).await else {
                    return;
                };
                let url = format!("{upstream}/xrpc/com.atproto.sync.subscribeRepos?{query}");
                let Ok((mut up, _)) = tokio_tungstenite::connect_async(url).await else {
                    return;
                };
                loop {
                    tokio::select! {
                        m = up.next() => match m {
                            Some(Ok(Message::Binary(b))) => {
                                if drop.load(Ordering::SeqCst) {
                                    dropped.fetch_add(1, Ordering::SeqCst);
                                    continue;
                                }
                                if down.send(Message::Binary(b)).await.is_err() {
                                    return;
                                }
                            }
                            Some(Ok(_)) => {}
                            _ => return,
                        },
                        m = down.next() => match m {
                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                            _ => {}
                        },
                    }
                }
            });
        }
    });
    format!("ws://{addr}/xrpc/com.atproto.sync.subscribeRepos")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deletions_the_indexer_never_saw_are_repaired_by_resync() {
    lost_deletions_repaired_by_resync(|proxy| {
        Setup::new("e2e_resync", Redis::shared().url(), "firehose", proxy)
    })
    .await;
}

/// The scenario above on the setup `make` returns for the proxy's URL (a
/// fresh database); then `skyhouse backfill status` reports the queue
/// empty and the repaired repository done.
pub async fn lost_deletions_repaired_by_resync(make: impl FnOnce(String) -> Setup) {
    let network = Network::start();
    let pds = network.pds();
    sentinel(&pds).await;
    let drop = Arc::new(AtomicBool::new(false));
    let dropped = Arc::new(AtomicUsize::new(0));
    let upstream = network.pds_url().replacen("http://", "ws://", 1);
    let proxy = lossy_proxy(
        upstream.trim_end_matches('/').to_owned(),
        drop.clone(),
        dropped.clone(),
    )
    .await;
    let setup = make(proxy);
    setup.set_cursor(0);
    let mut indexer = setup.start(&[]);

    let suffix = std::process::id() % 100_000;
    let who = pds
        .create_account(&format!("lia{suffix}.test"))
        .await
        .unwrap();
    let mut posts = Vec::new();
    for i in 0..8 {
        let p = json!({ "$type": POST, "text": format!("post {i}"), "createdAt": now_rfc3339() });
        posts.push(pds.create_record(&who, POST, p).await.unwrap());
    }
    indexer.wait_for_cursor(&setup, seq_of(&network, posts.last().unwrap()).await);

    // Three deletions the indexer never sees.
    drop.store(true, Ordering::SeqCst);
    for p in &posts[..3] {
        pds.delete_record(&who, POST, p.rkey()).await.unwrap();
    }
    // One commit per deletion: let the proxy swallow all three before it
    // forwards again.
    wait_until(
        "the proxy dropped the three deletions",
        || (dropped.load(Ordering::SeqCst) >= 3).then_some(()),
        || indexer.log_tail(),
    );
    drop.store(false, Ordering::SeqCst);
    let after = pds
        .create_record(
            &who,
            POST,
            json!({ "$type": POST, "text": "after the gap", "createdAt": now_rfc3339() }),
        )
        .await
        .unwrap();
    indexer.wait_for_cursor(&setup, seq_of(&network, &after).await);

    // The lost deletions are still visible, and the DID is queued for resync.
    setup.db.sync_replicas();
    let stale = live_records(&setup);
    for p in &posts[..3] {
        assert!(
            stale[&who.did].contains_key(&(POST.to_owned(), p.rkey().to_owned())),
            "{} should still be visible before the resync",
            p.rkey()
        );
    }
    let state = skyhouse_state::State::connect(&setup.redis_url, &setup.prefix)
        .await
        .unwrap();
    let queued: Vec<(String, String)> = state
        .work_queue(skyhouse_state::RESYNC_STREAM, "backfill")
        .peek(1000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| (e.did, e.reason))
        .collect();
    assert!(
        queued.contains(&(who.did.clone(), "gap".to_owned())),
        "the resync stream holds {queued:?}"
    );

    // A resync worker repairs the repository.
    let port = spare_port();
    let mut args = strings(&[
        "backfill",
        "work",
        "--resync",
        "--drain",
        "--plc",
        network.plc_url(),
    ]);
    args.extend(setup.redis_flags());
    args.extend(setup.clickhouse_flags());
    args.extend(["--metrics-addr".into(), format!("127.0.0.1:{port}")]);
    let mut worker = Indexer::spawn(&args, port);
    let exit = worker.wait_exit();
    assert!(exit.success(), "{exit}:\n{}", worker.log_tail());
    setup.db.sync_replicas();

    let truth = pds.truth(&who.did).await.unwrap();
    let got = live_records(&setup);
    assert_eq!(got.get(&who.did), Some(&truth.records), "after the resync");
    let tombstones = setup.number(&format!(
        "SELECT count() FROM records FINAL WHERE did = '{}' AND deleted = 1",
        who.did
    ));
    assert_eq!(
        tombstones, 3,
        "the three lost deletions, tombstoned by the resync"
    );
    // What an operator sees: nothing queued or in flight, nothing given
    // up, every repository the resync stream held done.
    let repaired = queued
        .iter()
        .map(|(did, _)| did)
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        .to_string();
    let status = setup.backfill_status();
    for (line, want) in [
        ("queue", "0"),
        ("pending", "0"),
        ("dead", "0"),
        ("done", repaired.as_str()),
    ] {
        assert_eq!(
            status.get(line).map(String::as_str),
            Some(want),
            "backfill status: {status:?}"
        );
    }
    let status = indexer.terminate();
    assert!(status.success(), "{status}:\n{}", indexer.log_tail());
}
