//! Politeness towards hosts, and the shared DID cache, against the real PDS
//! and PLC seen through a loopback gateway: the gateway serves the PLC's
//! documents with the PDS endpoint pointed at itself and forwards every
//! request to the real PDS, counting what reaches it and failing in
//! controlled ways (a 429 with `Retry-After`, a down host).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use skyhouse_backfill::{enqueue_dids, UnhealthyHosts, BACKFILL_STREAM, GROUP};
use skyhouse_monitor::{Host, HostKind, Monitor, MonitorConfig};
use skyhouse_testkit::{Network, Scenario};

use crate::{config, fresh, repo_state, state, stored};

/// What the gateway saw and how it misbehaves.
#[derive(Default)]
struct Gate {
    pds: String,
    plc: String,
    me: OnceLock<String>,
    plc_requests: AtomicUsize,
    repo_requests: AtomicUsize,
    inflight: AtomicUsize,
    max_inflight: AtomicUsize,
    delay: Mutex<Duration>,
    throttle_once: AtomicBool,
    /// When the 429 went out, and when the next getRepo arrived.
    throttled: Mutex<(Option<Instant>, Option<Instant>)>,
    down: AtomicBool,
    /// Send getRepo bodies in 1 KiB chunks without a Content-Length.
    chunked: AtomicBool,
}

type Shared = Arc<Gate>;

async fn forward(gate: &Gate, path: &str, query: Option<String>) -> Response {
    let url = match query {
        Some(q) => format!("{}{path}?{q}", gate.pds),
        None => format!("{}{path}", gate.pds),
    };
    let resp = reqwest::get(&url).await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let ctype = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream")
        .to_owned();
    let body = resp.bytes().await.unwrap();
    (status, [("content-type", ctype)], Body::from(body)).into_response()
}

async fn plc_doc(AxState(gate): AxState<Shared>, Path(did): Path<String>) -> Response {
    gate.plc_requests.fetch_add(1, Ordering::SeqCst);
    let resp = reqwest::get(format!("{}/{did}", gate.plc)).await.unwrap();
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap();
    let mut doc: Value = match resp.json().await {
        Ok(v) => v,
        Err(_) => return status.into_response(),
    };
    if let Some(services) = doc.get_mut("service").and_then(Value::as_array_mut) {
        for s in services {
            if s["id"]
                .as_str()
                .is_some_and(|i| i.ends_with("#atproto_pds"))
            {
                s["serviceEndpoint"] = Value::String(gate.me.get().unwrap().clone());
            }
        }
    }
    let body = serde_json::to_vec(&doc).unwrap();
    (status, [("content-type", "application/json")], body).into_response()
}

async fn get_repo(AxState(gate): AxState<Shared>, RawQuery(q): RawQuery) -> Response {
    if gate.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    gate.repo_requests.fetch_add(1, Ordering::SeqCst);
    if gate.throttle_once.swap(false, Ordering::SeqCst) {
        gate.throttled.lock().unwrap().0 = Some(Instant::now());
        let body = r#"{"error":"RateLimitExceeded","message":"slow down"}"#;
        return (StatusCode::TOO_MANY_REQUESTS, [("retry-after", "2")], body).into_response();
    }
    {
        let mut t = gate.throttled.lock().unwrap();
        if t.0.is_some() && t.1.is_none() {
            t.1 = Some(Instant::now());
        }
    }
    let now = gate.inflight.fetch_add(1, Ordering::SeqCst) + 1;
    gate.max_inflight.fetch_max(now, Ordering::SeqCst);
    let delay = *gate.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
    let resp = forward(&gate, "/xrpc/com.atproto.sync.getRepo", q).await;
    gate.inflight.fetch_sub(1, Ordering::SeqCst);
    if !gate.chunked.load(Ordering::SeqCst) || resp.status() != StatusCode::OK {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), usize::MAX)
        .await
        .unwrap();
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = body
        .chunks(1024)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let stream = futures_util::stream::iter(chunks);
    (
        [("content-type", "application/vnd.ipld.car")],
        Body::from_stream(stream),
    )
        .into_response()
}

async fn health(AxState(gate): AxState<Shared>) -> Response {
    if gate.down.load(Ordering::SeqCst) {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    forward(&gate, "/xrpc/_health", None).await
}

async fn rest(AxState(gate): AxState<Shared>, uri: Uri) -> Response {
    forward(&gate, uri.path(), uri.query().map(str::to_owned)).await
}

/// Start a gateway in front of `network`'s PDS and PLC.
async fn gateway(network: &Network) -> Shared {
    let gate = Arc::new(Gate {
        pds: network.pds_url().trim_end_matches('/').to_owned(),
        plc: network.plc_url().trim_end_matches('/').to_owned(),
        ..Gate::default()
    });
    let app = Router::new()
        .route("/xrpc/com.atproto.sync.getRepo", get(get_repo))
        .route("/xrpc/_health", get(health))
        .route("/{did}", get(plc_doc))
        .fallback(rest)
        .with_state(gate.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    gate.me.set(format!("http://{addr}")).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    gate
}

/// A resolver reading DID documents from the gateway.
fn gate_network_resolver(gate: &Gate) -> Arc<skyhouse_identity::Resolver> {
    Arc::new(
        skyhouse_identity::Resolver::new(skyhouse_identity::ResolverConfig {
            plc_url: gate.me.get().unwrap().clone(),
            allow_loopback_http: true,
            handles: crate::handles(Network::shared()),
            ..Default::default()
        })
        .unwrap(),
    )
}

async fn run_through(
    gate: &Gate,
    cfg: skyhouse_backfill::WorkerConfig,
    ch: &skyhouse_store::ClickHouse,
    st: &skyhouse_state::State,
) -> skyhouse_backfill::Summary {
    skyhouse_backfill::run(
        cfg,
        ch.clone(),
        st.clone(),
        gate_network_resolver(gate),
        skyhouse_backfill::CancellationToken::new(),
    )
    .await
    .unwrap()
}

/// One test's world: the scenario's DIDs queued, a fresh database, a gateway.
struct Case {
    db: skyhouse_testkit::TestDatabase,
    ch: skyhouse_store::ClickHouse,
    st: skyhouse_state::State,
    gate: Shared,
    queue: skyhouse_state::WorkQueue,
    dids: Vec<String>,
}

async fn case(hint: &str) -> Case {
    let network = Network::shared();
    let scenario = Scenario::run(&network.pds()).await.unwrap();
    let (db, ch) = fresh(hint).await;
    let st = state(hint).await;
    let gate = gateway(network).await;
    let queue = st.work_queue(BACKFILL_STREAM, GROUP);
    queue.create_group().await.unwrap();
    let dids: Vec<String> = scenario.dids().map(str::to_owned).collect();
    enqueue_dids(&queue, &dids, "did").await.unwrap();
    Case {
        db,
        ch,
        st,
        gate,
        queue,
        dids,
    }
}

#[tokio::test]
async fn the_per_host_limit_holds_and_dids_are_resolved_once_for_every_worker() {
    let network = Network::shared();
    let Case {
        db,
        ch,
        st,
        gate,
        queue,
        dids,
    } = case("backfill_per_host").await;
    *gate.delay.lock().unwrap() = Duration::from_millis(150);

    let mut cfg = config("per-host");
    cfg.concurrency = 6;
    cfg.per_host = 2;
    run_through(&gate, cfg, &ch, &st).await;
    let max = gate.max_inflight.load(Ordering::SeqCst);
    assert!(max <= 2, "{max} getRepo requests in flight to one host");
    assert_eq!(
        gate.plc_requests.load(Ordering::SeqCst),
        dids.len(),
        "one PLC lookup per DID"
    );
    // What landed equals the PDS's truth (the gateway changed nothing).
    let got = stored(&db);
    let pds = network.pds();
    for did in &dids {
        let truth = pds.truth(did).await.unwrap();
        if truth.status == skyhouse_testkit::AccountStatus::Active {
            assert_eq!(got.get(did), Some(&truth.records), "{did}");
        }
    }

    // A second run over the same DIDs, by a new process (empty memory
    // cache): the PDS endpoints come from Redis. Only a repository the host
    // no longer serves makes it look again (the account may have moved).
    let states = repo_state(&db);
    let unavailable = states.values().filter(|s| s.0 != "done").count();
    assert!(
        unavailable > 0,
        "the scenario has deactivated/deleted accounts: {states:?}"
    );
    enqueue_dids(&queue, &dids, "did").await.unwrap();
    gate.plc_requests.store(0, Ordering::SeqCst);
    *gate.delay.lock().unwrap() = Duration::ZERO;
    let summary = run_through(&gate, config("per-host-2"), &ch, &st).await;
    assert_eq!(summary.repos.values().sum::<u64>(), dids.len() as u64);
    assert_eq!(
        gate.plc_requests.load(Ordering::SeqCst),
        unavailable,
        "PLC asked again only for repositories the host did not serve"
    );
    // The cache can be turned off: then every DID is looked up again.
    enqueue_dids(&queue, &dids, "did").await.unwrap();
    gate.plc_requests.store(0, Ordering::SeqCst);
    let mut off = config("per-host-3");
    off.did_cache_ttl = Duration::ZERO;
    run_through(&gate, off, &ch, &st).await;
    assert_eq!(gate.plc_requests.load(Ordering::SeqCst), dids.len());
}

#[tokio::test]
async fn a_host_that_asks_to_wait_is_paused_for_every_worker() {
    let Case {
        db,
        ch,
        st,
        gate,
        dids,
        ..
    } = case("backfill_pause").await;
    gate.throttle_once.store(true, Ordering::SeqCst);

    let mut cfg = config("pause");
    cfg.concurrency = 4;
    let summary = run_through(&gate, cfg, &ch, &st).await;
    let (throttled, next) = *gate.throttled.lock().unwrap();
    let (throttled, next) = (throttled.unwrap(), next.unwrap());
    // Retry-After: 2 — no worker asked the host anything for 2 s, although
    // three other workers had repositories to fetch and retries start at 100 ms.
    assert!(
        next.duration_since(throttled) >= Duration::from_millis(1900),
        "the next getRepo came {:?} after the 429",
        next.duration_since(throttled)
    );
    assert_eq!(summary.repos.values().sum::<u64>(), dids.len() as u64);
    let states = repo_state(&db);
    assert!(states.values().all(|s| s.0 != "failed"), "{states:?}");
}

#[tokio::test]
async fn repositories_on_a_host_the_monitor_found_down_wait_at_the_back_of_the_queue() {
    let Case {
        db,
        ch,
        st,
        gate,
        queue,
        dids,
    } = case("backfill_down_host").await;
    let monitor = Monitor::new(
        MonitorConfig {
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
            ..MonitorConfig::default()
        },
        Some(ch.clone()),
        skyhouse_telemetry::Health::default(),
    )
    .unwrap();
    monitor.add_hosts([Host::parse(gate.me.get().unwrap(), HostKind::Pds).unwrap()]);
    gate.down.store(true, Ordering::SeqCst);
    let snaps = monitor.round().await;
    assert!(!snaps[0].up, "{:?}", snaps[0]);

    let mut cfg = config("down-host");
    cfg.host_health = Some(UnhealthyHosts::new(
        ch.clone(),
        Duration::from_secs(600),
        Duration::from_millis(100),
    ));
    let worker = tokio::spawn(run_through_owned(gate.clone(), cfg, ch.clone(), st.clone()));

    // While the host is down its repositories go round the queue: deferred
    // entries appear, nothing is fetched, nothing is recorded as failed.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let deferred = queue
            .peek(10_000)
            .await
            .unwrap()
            .into_iter()
            .filter(|e| e.reason == "deferred")
            .count();
        if deferred >= dids.len() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {deferred} entries deferred"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        gate.repo_requests.load(Ordering::SeqCst),
        0,
        "a down host was asked"
    );
    assert!(repo_state(&db).is_empty(), "{:?}", repo_state(&db));

    // The host comes back; the monitor sees it; the queue drains.
    gate.down.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2100)).await; // the next check bucket
    let snaps = monitor.round().await;
    assert!(snaps[0].up, "{:?}", snaps[0]);
    let summary = tokio::time::timeout(Duration::from_secs(120), worker)
        .await
        .expect("the queue drained once the host was up")
        .unwrap();
    assert_eq!(
        summary.repos.values().sum::<u64>(),
        dids.len() as u64,
        "{summary:?}"
    );
    assert_eq!(repo_state(&db).len(), dids.len());
    assert_eq!(queue.pending().await.unwrap().0, 0);
}

async fn run_through_owned(
    gate: Shared,
    cfg: skyhouse_backfill::WorkerConfig,
    ch: skyhouse_store::ClickHouse,
    st: skyhouse_state::State,
) -> skyhouse_backfill::Summary {
    run_through(&gate, cfg, &ch, &st).await
}

/// A PDS that lists `dids` two per page and refuses page 2 until `open`.
async fn paging_host(dids: Vec<String>, open: Arc<AtomicBool>) -> String {
    let app = Router::new().route(
        "/xrpc/com.atproto.sync.listRepos",
        get(move |RawQuery(q): RawQuery| {
            let (dids, open) = (dids.clone(), open.clone());
            async move {
                let q = q.unwrap_or_default();
                let start: usize = q
                    .split('&')
                    .find_map(|kv| kv.strip_prefix("cursor="))
                    .map_or(0, |c| c.parse().unwrap());
                if start > 0 && !open.load(Ordering::SeqCst) {
                    let body = r#"{"error":"InvalidRequest","message":"not today"}"#;
                    return (StatusCode::BAD_REQUEST, body).into_response();
                }
                let page: Vec<Value> = dids
                    .iter()
                    .skip(start)
                    .take(2)
                    .map(|d| serde_json::json!({"did": d, "head": "x", "rev": "x"}))
                    .collect();
                let next = start + page.len();
                let mut body = serde_json::json!({ "repos": page });
                if next < dids.len() {
                    body["cursor"] = Value::String(next.to_string());
                }
                axum::response::Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from(body.to_string()))
                    .unwrap()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("127.0.0.1:{}", addr.port())
}

#[tokio::test]
async fn hosts_from_a_relay_are_each_listed_and_a_failed_host_resumes_where_it_stopped() {
    let network = Network::shared();
    let pds = network.pds();
    Scenario::run(&pds).await.unwrap();
    let st = state("backfill_hosts_from").await;
    let queue = st.work_queue(BACKFILL_STREAM, GROUP);
    queue.create_group().await.unwrap();
    let fake: Vec<String> = (0..5).map(|i| format!("did:plc:fakehost{i:017}")).collect();
    let open = Arc::new(AtomicBool::new(false));
    let paging = paging_host(fake.clone(), open.clone()).await;
    // The relay lists the real PDS by its bare host name (loopback: http) and the paging host.
    let pds_host = network
        .pds_url()
        .split("://")
        .nth(1)
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    let hosts = serde_json::json!({"hosts": [
        {"hostname": pds_host, "seq": 1, "status": "active"},
        {"hostname": paging, "seq": 2, "status": "active"},
    ]})
    .to_string();
    let relay = Router::new().route(
        "/xrpc/com.atproto.sync.listHosts",
        get(move || {
            let hosts = hosts.clone();
            async move { ([("content-type", "application/json")], hosts) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, relay).await });

    // The PDS's own listing: what the real host should contribute.
    let http = reqwest::Client::new();
    let listed: Value = http
        .get(format!(
            "{}/xrpc/com.atproto.sync.listRepos?limit=1000",
            network.pds_url()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let pds_dids: Vec<String> = listed["repos"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["did"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        pds_dids.len() >= 5 && pds_dids.len() < 1000,
        "{}",
        pds_dids.len()
    );

    let first = skyhouse_backfill::enqueue_hosts(&http, &relay_url, 100, &st, &queue)
        .await
        .unwrap();
    assert_eq!(first.hosts, 2);
    assert_eq!(first.failed.len(), 1, "{:?}", first.failed);
    assert!(first.failed[0].contains(&paging), "{:?}", first.failed);
    assert_eq!(first.dids, pds_dids.len() as u64 + 2);

    // Run again once the host answers: only what was missing is queued.
    open.store(true, Ordering::SeqCst);
    let second = skyhouse_backfill::enqueue_hosts(&http, &relay_url, 100, &st, &queue)
        .await
        .unwrap();
    assert!(second.failed.is_empty(), "{:?}", second.failed);
    assert_eq!(
        second.dids, 3,
        "pages 2 and 3 of the paging host, nothing else again"
    );
    let queued: Vec<String> = queue
        .peek(10_000)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.did)
        .collect();
    let mut want: Vec<String> = pds_dids.iter().chain(&fake).cloned().collect();
    let mut got = queued.clone();
    want.sort();
    got.sort();
    assert_eq!(got, want, "every DID of every host exactly once");
    // A finished listing leaves no cursor behind: the next run starts over.
    for host in [
        network.pds_url().trim_end_matches('/').to_owned(),
        format!("http://{paging}"),
    ] {
        let key = skyhouse_backfill::list_repos_cursor_key(&host);
        assert_eq!(st.value(&key).await.unwrap(), None, "{key}");
    }
}

#[tokio::test]
async fn repositories_are_parsed_while_they_download_under_the_size_cap() {
    let network = Network::shared();
    let Case {
        db,
        ch,
        st,
        gate,
        dids,
        ..
    } = case("backfill_stream").await;
    gate.chunked.store(true, Ordering::SeqCst);

    // No Content-Length: every body is parsed as it arrives, 1 KiB at a time.
    run_through(&gate, config("stream"), &ch, &st).await;
    let got = stored(&db);
    let pds = network.pds();
    let mut sizes = Vec::new();
    for did in &dids {
        let truth = pds.truth(did).await.unwrap();
        if truth.status == skyhouse_testkit::AccountStatus::Active {
            assert_eq!(got.get(did), Some(&truth.records), "{did}");
            let car = reqwest::get(format!(
                "{}/xrpc/com.atproto.sync.getRepo?did={did}",
                network.pds_url()
            ))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
            sizes.push((did.clone(), car.len() as u64));
        }
    }

    // A cap between the smallest and the largest repository: the larger
    // ones are refused mid-download (no retry: it cannot shrink), the
    // smaller ones land.
    sizes.sort_by_key(|s| s.1);
    let cap = (sizes[0].1 + sizes[sizes.len() - 1].1) / 2;
    assert!(
        sizes[0].1 < cap && cap < sizes[sizes.len() - 1].1,
        "{sizes:?}"
    );
    let (db2, ch2) = fresh("backfill_stream_cap").await;
    let st2 = state("backfill_stream_cap").await;
    let queue2 = st2.work_queue(BACKFILL_STREAM, GROUP);
    queue2.create_group().await.unwrap();
    let active: Vec<String> = sizes.iter().map(|s| s.0.clone()).collect();
    enqueue_dids(&queue2, &active, "did").await.unwrap();
    let mut capped = config("stream-cap");
    capped.max_repo_bytes = cap;
    let before = gate.repo_requests.load(Ordering::SeqCst);
    run_through(&gate, capped, &ch2, &st2).await;
    assert_eq!(
        gate.repo_requests.load(Ordering::SeqCst) - before,
        active.len(),
        "one request per repository: a repository over the cap is not retried"
    );
    let states = repo_state(&db2);
    for (did, size) in &sizes {
        let (status, _, _) = &states[did];
        if *size > cap {
            assert_eq!(status, "failed", "{did} ({size} bytes > {cap})");
        } else {
            assert_eq!(status, "done", "{did} ({size} bytes <= {cap})");
        }
    }
    let errors =
        db2.query("SELECT error FROM repo_state FINAL WHERE status = 'failed' FORMAT TabSeparated");
    assert!(
        errors
            .lines()
            .all(|e| e.contains(&format!("larger than {cap} bytes"))),
        "{errors}"
    );
}
