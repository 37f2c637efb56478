//! The services `cluster`'s scenario does not run, on the shared 2 × 2
//! cluster (`--clickhouse-cluster`), each through the same function as its
//! single-server test, or beside a run on one server with the same answer:
//!
//! - the indexer on the production capture, Jetstream and firehose frames:
//!   the same tables as each other and as one server, the cursors at the
//!   newest position, a second run changes nothing;
//! - the indexer publishing to `skyhouse relay`: a client receives exactly
//!   the capture's operations;
//! - events lost before the indexer, repaired by `skyhouse backfill work
//!   --resync`; `skyhouse backfill status` reads the cluster's `repo_state`;
//! - `skyhouse monitor`: `--once` stores and prints the same checks as on
//!   one server, and the service loads the hosts of earlier runs from the
//!   cluster;
//! - the search API's keys (`/v1/admin/keys`), created until both shards
//!   hold some: listed and revoked as on one server.
//!
//! `migrate up/down/version/dump-schema` on the cluster are in
//! `tests/migrate_cluster.rs`, the maintenance jobs in
//! `pkg/store/tests/cluster.rs`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use skyhouse_testkit::{Cluster, Network, Redis};

use crate::jetstream::{both_captures_agree, file_url, replay, snapshot};
use crate::{diff_lines, skyhouse, spare_port, strings, text, Indexer, Setup};

fn on_cluster(hint: &str, source: &'static str, url: String) -> Setup {
    Setup::on_cluster(Cluster::shared(), hint, Redis::shared().url(), source, url)
}

#[test]
fn the_captures_give_the_same_tables_on_the_cluster_as_on_one_server() {
    let js = on_cluster("e2e_js_cluster", "jetstream", file_url("corpus.jsonl"));
    let fh = on_cluster("e2e_js_fh_cluster", "firehose", file_url("corpus.frames"));
    let cluster = both_captures_agree(&js, &fh);

    let single = Setup::new(
        "e2e_js_single",
        Redis::shared().url(),
        "jetstream",
        file_url("corpus.jsonl"),
    );
    replay(&single);
    for ((name, a), (_, b)) in snapshot(&single).iter().zip(&cluster) {
        assert!(
            a == b,
            "{name}: one server (-) and the cluster (+) differ:\n{}",
            diff_lines(a, b)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_indexer_on_the_cluster_feeds_the_relay() {
    let setup = on_cluster(
        "relay_push_cluster",
        "jetstream",
        crate::relay::capture_url(),
    );
    crate::relay::the_indexer_feeds_the_relay(&setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_deletions_are_repaired_by_resync_on_the_cluster() {
    crate::resync::lost_deletions_repaired_by_resync(|proxy| {
        on_cluster("e2e_resync_cluster", "firehose", proxy)
    })
    .await;
}

/// What `monitor --once` printed of each host, without times: host →
/// (state, result, describeServer status).
fn checks(stdout: &[u8]) -> BTreeSet<(String, String, String, String)> {
    let body: Value = serde_json::from_slice(stdout).unwrap();
    body["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["host"].as_str().unwrap().to_owned(),
                h["state"].as_str().unwrap().to_owned(),
                h["last_check"]["result"].to_string(),
                h["last_check"]["describe_status"].to_string(),
            )
        })
        .collect()
}

/// `skyhouse monitor` serving on `setup`'s database, checking `host`;
/// returns it and its `--listen` URL once `/health` is 200 (the first
/// round stored).
async fn monitor_service(setup: &Setup, host: &str) -> (Indexer, String) {
    let (port, metrics) = (spare_port(), spare_port());
    let mut args = strings(&[
        "monitor",
        "--host",
        host,
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
    ]);
    args.extend(setup.clickhouse_flags());
    let mut m = Indexer::spawn(&args, metrics);
    m.ready().await;
    (m, format!("http://127.0.0.1:{port}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_monitor_on_the_cluster_stores_and_loads_hosts_as_on_one_server() {
    let pds = Network::shared().pds_url().to_owned();
    let dead = format!("http://127.0.0.1:{}", spare_port());
    // The monitor has no source; the setups only hold the databases.
    let single = Setup::new(
        "e2e_monitor_single",
        Redis::shared().url(),
        "firehose",
        pds.clone(),
    );
    let cluster = on_cluster("e2e_monitor_cluster", "firehose", pds.clone());
    let mut printed = Vec::new();
    let mut stored = Vec::new();
    let mut served = Vec::new();
    for setup in [&single, &cluster] {
        // One round over both hosts: one is down, so exit 1.
        let mut args = strings(&["monitor", "--once", "--host", &pds, "--host", &dead]);
        args.extend(setup.clickhouse_flags());
        let out = skyhouse(&args);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        printed.push(checks(&out.stdout));
        setup.db.sync_replicas();
        // Sorted here: see the comment of list_api_keys (pkg/store/queries/keys.sql).
        let mut rows: Vec<String> = setup
            .db
            .query("SELECT host, up, result FROM host_checks FINAL")
            .lines()
            .map(str::to_owned)
            .collect();
        rows.sort();
        stored.push(rows.join("\n") + "\n");

        // The service, told of the PDS only, loads the dead host from the
        // checks stored by the round above and checks it too.
        let (mut m, url) = monitor_service(setup, &pds).await;
        let hosts: Value = reqwest::get(format!("{url}/v1/hosts"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let states: BTreeSet<(String, String)> = hosts["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| {
                (
                    h["host"].as_str().unwrap().to_owned(),
                    h["state"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        served.push(states);
        let exit = m.terminate();
        assert!(exit.success(), "monitor: {exit}\n{}", m.log_tail());
    }
    // Not vacuous: the PDS up, the closed port down, both stored.
    let want: BTreeSet<(String, String)> =
        [(pds.clone(), "up".into()), (dead.clone(), "down".into())]
            .into_iter()
            .collect();
    assert_eq!(served[0], want, "one server's /v1/hosts");
    let mut lines = [format!("{pds}\t1\tok"), format!("{dead}\t0\tconnect")];
    lines.sort();
    assert_eq!(
        stored[0],
        lines.join("\n") + "\n",
        "one server's host_checks"
    );
    assert_eq!(printed[1], printed[0], "--once printed differently");
    assert_eq!(stored[1], stored[0], "host_checks differ");
    assert_eq!(served[1], served[0], "/v1/hosts differs");
}

/// The shards (0-based) the `Distributed` table `api_keys` routes `ids` to
/// (`cityHash64(id)` modulo 2 shards of weight 1), asked of ClickHouse.
fn shards_of(setup: &Setup, ids: &[String]) -> BTreeSet<String> {
    let list: Vec<String> = ids.iter().map(|id| format!("'{id}'")).collect();
    setup
        .db
        .query(&format!(
            "SELECT DISTINCT cityHash64(id) % 2 FROM (SELECT arrayJoin([{}]) AS id)",
            list.join(",")
        ))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// `GET /v1/admin/keys`: (name, scopes, revoked) of each key by id.
async fn listed_keys(api: &str) -> BTreeMap<String, (String, String, String)> {
    let resp = reqwest::Client::new()
        .get(format!("{api}/v1/admin/keys"))
        .bearer_auth(crate::cluster::ADMIN)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| {
            (
                k["id"].as_str().unwrap().to_owned(),
                (
                    k["name"].to_string(),
                    k["scopes"].to_string(),
                    k["revoked"].to_string(),
                ),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_keys_on_both_shards_are_listed_and_revoked_as_on_one_server() {
    // The search API has no source; the setups only hold the databases.
    let url = "ws://127.0.0.1:1".to_owned();
    let cluster = on_cluster("e2e_keys_cluster", "firehose", url.clone());
    let single = Setup::new("e2e_keys_single", Redis::shared().url(), "firehose", url);
    let client = reqwest::Client::new();
    let mut answers = Vec::new();
    let mut wanted = None;
    for setup in [&cluster, &single] {
        let (mut s, api) = crate::cluster::search(setup, 3600).await;
        let mut ids = Vec::new();
        // Key ids are random: on the cluster, create keys until both shards
        // hold one; on one server, as many.
        loop {
            let resp = client
                .post(format!("{api}/v1/admin/keys"))
                .bearer_auth(crate::cluster::ADMIN)
                .json(
                    &serde_json::json!({"name": format!("key {}", ids.len()), "scopes": ["read"]}),
                )
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status().as_u16(), 201);
            let created: Value = resp.json().await.unwrap();
            ids.push(created["id"].as_str().unwrap().to_owned());
            let enough = match wanted {
                None => shards_of(setup, &ids).len() == 2,
                Some(n) => ids.len() == n,
            };
            if enough {
                break;
            }
            assert!(ids.len() < 64, "64 keys on one shard");
        }
        wanted = Some(ids.len());
        setup.db.sync_replicas();
        let listed = listed_keys(&api).await;
        let got: BTreeSet<&String> = listed.keys().collect();
        assert_eq!(got, ids.iter().collect(), "the keys listed");

        // Revoke the first; it is listed revoked.
        let resp = client
            .delete(format!("{api}/v1/admin/keys/{}", ids[0]))
            .bearer_auth(crate::cluster::ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        setup.db.sync_replicas();
        let listed = listed_keys(&api).await;
        assert_eq!(listed[&ids[0]].2, "1", "{listed:?}");
        // What is the same on both sides: names, scopes and states (the
        // ids are random).
        let mut same: Vec<(String, String, String)> = listed.into_values().collect();
        same.sort();
        answers.push(same);
        let exit = s.terminate();
        assert!(exit.success(), "search: {exit}\n{}", s.log_tail());
    }
    assert_eq!(answers[0], answers[1], "the cluster lists differently");
}
