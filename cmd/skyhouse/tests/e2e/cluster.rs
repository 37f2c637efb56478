//! One scenario, indexed and served twice: on one ClickHouse server and on
//! the 2 × 2 cluster (`--clickhouse-cluster`). The reference PDS's firehose
//! (with its deletes, edits, deactivation, takedown and deleted account), a
//! backfill of every repository, and an admin cleanup; then every route of
//! `skyhouse search`, every feed of `skyhouse feedgen` and the current state
//! of every table (the cluster's read through its `Distributed` tables)
//! must be the same on both.
//!
//! The faults (a replica of each shard killed, ZooKeeper stopped, a whole
//! shard down) are in `cluster_faults`, each on a cluster of its own.

use std::collections::BTreeMap;

use serde_json::Value;
use skyhouse_testkit::{Cluster, Network, Redis, Scenario};

use crate::{
    backlog, firehose_url, sentinel, skyhouse, spare_port, strings, text, wait_until, Db, Indexer,
    Setup,
};

pub(crate) const ADMIN: &str = "e2e-cluster-admin-key-0123456789";

/// Tables whose rows say when or in which order things were written
/// (arrival logs, refresh bookkeeping, version floors), not what the data
/// is: left out of the comparison.
const TIMED_TABLES: &[&str] = &[
    "schema_migrations",
    "aggregate_refreshes",
    "interaction_changes",
    "day_changes",
    "account_changes",
    "pending_deletes",
    "stale_days",
];

/// Columns that depend on when a row was written (or, for a uniq state, on
/// the order states were merged in), left out.
const TIMED_COLUMNS: &[&str] = &[
    "indexed_at",
    "inserted_at",
    "updated_at",
    "computed_at",
    "requested_at",
    "finished_at",
    "observed_at",
    "at",
    "arrived",
    "actors_state",
];

pub(crate) async fn get(url: &str) -> (u16, Value) {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    let body = resp.text().await.unwrap();
    let v = serde_json::from_str(&body).unwrap_or(Value::String(body));
    (status, v)
}

/// `skyhouse search` for `setup`, refreshing at start and then every
/// `refresh_secs`; returns it and its base URL once `/health` is 200 (the
/// first refresh done).
pub(crate) async fn search(setup: &Setup, refresh_secs: u32) -> (Indexer, String) {
    let (port, metrics) = (spare_port(), spare_port());
    let mut args = strings(&[
        "search",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-key",
        ADMIN,
        "--refresh-secs",
        &refresh_secs.to_string(),
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
    ]);
    args.extend(setup.clickhouse_flags());
    args.extend(setup.redis_flags());
    let mut s = Indexer::spawn(&args, metrics);
    s.ready().await;
    (s, format!("http://127.0.0.1:{port}"))
}

/// `skyhouse feedgen` for `setup` (same public URL on both sides, so the
/// feed URIs are the same), refreshed once at start.
async fn feedgen(setup: &Setup) -> (Indexer, String) {
    let (port, metrics) = (spare_port(), spare_port());
    let mut args = strings(&[
        "feedgen",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--public-url",
        "https://feeds.example.com",
        "--refresh-secs",
        "3600",
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
    ]);
    args.extend(setup.clickhouse_flags());
    args.extend(setup.redis_flags());
    let mut f = Indexer::spawn(&args, metrics);
    f.ready().await;
    (f, format!("http://127.0.0.1:{port}"))
}

/// Every read route of the search API (and each feed of the feed
/// generator) with the scenario's accounts and posts: path → answer.
async fn answers(api: &str, feeds: &str, scenario: &Scenario) -> BTreeMap<String, Value> {
    let alice = &scenario.accounts["alice"];
    let mut paths = vec![
        "/v1/stats".to_owned(),
        "/v1/search/posts?q=guten%20MORGEN".to_owned(),
        "/v1/search/posts?q=here".to_owned(),
        "/v1/search/posts?lang=de".to_owned(),
        format!("/v1/search/posts?tag=%23{}", scenario.facets.tag),
        format!("/v1/search/posts?author={}", alice.handle),
        format!("/v1/search/posts?author={}&limit=2", alice.did),
        format!("/v1/search/actors?q={}", &alice.handle[..3]),
        format!(
            "/v1/stats/posts?uris={},{},{}",
            scenario.facet_post.uri, scenario.german_post.uri, scenario.reply.uri
        ),
    ];
    for a in skyhouse_store::stats::Analytics::ALL {
        paths.push(format!("/v1/stats/analytics/{}?window=31536000", a.name()));
    }
    for did in scenario.dids() {
        paths.push(format!("/v1/stats/actors/{did}"));
        paths.push(format!("/v1/repos/{did}?limit=1000"));
    }
    let mut out = BTreeMap::new();
    for p in paths {
        let (status, v) = get(&format!("{api}{p}")).await;
        out.insert(p, serde_json::json!({"status": status, "body": v}));
    }
    // Every feed the generator describes.
    let (status, described) =
        get(&format!("{feeds}/xrpc/app.bsky.feed.describeFeedGenerator")).await;
    assert_eq!(status, 200, "{described}");
    for f in described["feeds"].as_array().unwrap() {
        let uri = f["uri"].as_str().unwrap();
        let enc: String = url::form_urlencoded::byte_serialize(uri.as_bytes()).collect();
        let (status, mut v) = get(&format!(
            "{feeds}/xrpc/app.bsky.feed.getFeedSkeleton?feed={enc}&limit=100"
        ))
        .await;
        if uri.ends_with("/whats-hot") {
            // Ranked by age as well: the order moves with the clock.
            if let Some(items) = v["feed"].as_array_mut() {
                items.sort_by_key(|i| i["post"].as_str().unwrap_or_default().to_owned());
            }
            v["cursor"] = Value::Null;
        }
        out.insert(
            format!("feed {uri}"),
            serde_json::json!({"status": status, "body": v}),
        );
    }
    out
}

/// The current state of every data table: table → sorted TSV lines.
fn contents(db: &Db, reference: &Db) -> BTreeMap<String, Vec<String>> {
    let name = reference.name();
    let tables = reference.query(&format!(
        "SELECT name, engine FROM system.tables WHERE database = '{name}' \
         AND engine NOT LIKE '%View' ORDER BY name FORMAT TSV"
    ));
    let mut out = BTreeMap::new();
    for line in tables.lines() {
        let (table, engine) = line.split_once('\t').unwrap();
        if TIMED_TABLES.contains(&table) {
            continue;
        }
        let columns = reference.query(&format!(
            "SELECT name FROM system.columns WHERE database = '{name}' AND table = '{table}' \
             AND default_kind NOT IN ('MATERIALIZED', 'ALIAS') FORMAT TSV"
        ));
        let indexed_at = columns.lines().any(|c| c == "indexed_at");
        let deleted = columns.lines().any(|c| c == "deleted");
        let list: Vec<String> = columns
            .lines()
            .filter(|c| !TIMED_COLUMNS.contains(c))
            // Versions written with a clock (refreshes, cleanups, backfills).
            .filter(|c| {
                !(*c == "version"
                    && matches!(
                        table,
                        "daily_stats"
                            | "hidden_accounts"
                            | "repo_cleanup_jobs"
                            | "repo_state"
                            | "accounts"
                            | "identities"
                    ))
            })
            .map(|c| {
                // A tombstone's times are the time of indexing.
                if indexed_at && matches!(c, "created_at" | "sort_at") {
                    format!("if({c} = indexed_at, toDateTime(0), {c})")
                } else if deleted && matches!(c, "created_at" | "sort_at") {
                    // No indexed_at beside it (interactions): a tombstone's.
                    format!("if(deleted = 1, toDateTime(0), {c})")
                } else if table == "repo_cleanup_jobs" && c == "id" {
                    // An admin request's job id is random.
                    "if(startsWith(id, 'admin-'), 'admin', id)".to_owned()
                } else if deleted && c == "version" {
                    // A cleanup's tombstones carry the clock of the cleanup.
                    "if(deleted = 1, 0, version)".to_owned()
                } else {
                    c.to_owned()
                }
            })
            .collect();
        let final_ = if engine.contains("Replacing") {
            " FINAL"
        } else {
            ""
        };
        let mut rows: Vec<String> = db
            .query(&format!(
                "SELECT {} FROM {}.{table}{final_} FORMAT TSV",
                list.join(", "),
                db.name()
            ))
            .lines()
            .map(str::to_owned)
            .collect();
        rows.sort();
        out.insert(table.to_owned(), rows);
    }
    out
}

/// What decides the reply counts and the stats on each side (a failure's
/// context): the replies' rows in `interactions` (every stored row, with its
/// part), the threadgates, the replies' change rows, the refreshes'
/// watermarks, the daily stats, the days marked stale and the day log's rows
/// by second of arrival.
fn answer_state(sides: &[(&str, &Db)]) -> String {
    let mut out = String::new();
    for (side, db) in sides {
        let d = db.name();
        for sql in [
            format!("SELECT subject_uri, did, rkey, version, deleted, gated, hidden, sort_at, _part FROM {d}.interactions WHERE kind = 'reply' ORDER BY did, rkey, version, _part"),
            format!("SELECT did, rkey, version, deleted, created_at, inserted_at FROM {d}.threadgates ORDER BY did, rkey, version"),
            format!("SELECT arrived, kind, did, rkey, version, deleted, action, sort_at FROM {d}.interaction_changes WHERE kind IN ('reply', 'thread') ORDER BY did, rkey, arrived"),
            format!("SELECT * FROM {d}.aggregate_refreshes ORDER BY version"),
            format!("SELECT day, collection, records, actors, computed_at, version FROM {d}.daily_stats FINAL ORDER BY day, collection"),
            format!("SELECT collection, day, pending, version FROM {d}.stale_days FINAL ORDER BY day, collection"),
            format!("SELECT toUInt32(arrived) AS s, collection, day, count() FROM {d}.day_changes GROUP BY s, collection, day ORDER BY s, collection, day"),
        ] {
            out.push_str(&format!("-- {side}: {sql}\n{}\n", db.query(&format!("{sql} FORMAT TSV"))));
        }
    }
    out
}

/// Replicas of every replicated table of `db` have nothing left to fetch:
/// each pulled the shared log and ran its queue ([`Cluster::sync_replicas`];
/// an empty queue alone can be one that has not pulled the last writes).
fn replicas_converged(db: &str) -> Option<()> {
    Cluster::shared().sync_replicas(db);
    (crate::cluster_faults::replicas_behind(Cluster::shared(), db) == 0).then_some(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_scenario_on_one_server_and_on_the_cluster_answers_the_same() {
    let network = Network::start();
    let pds = network.pds();
    sentinel(&pds).await;
    let scenario = Scenario::run(&pds).await.expect("scenario");
    let messages = backlog(&network, &scenario.last).await;
    let last_seq = messages.last().and_then(|m| m.frame.seq()).unwrap();
    let redis = Redis::shared();
    let single = Setup::new(
        "e2e_same_single",
        redis.url(),
        "firehose",
        firehose_url(&network),
    );
    let cluster = Setup::on_cluster(
        Cluster::shared(),
        "e2e_same_cluster",
        redis.url(),
        "firehose",
        firehose_url(&network),
    );
    let sides = [("one server", &single), ("cluster", &cluster)];

    // The firehose, then a backfill of every repository (the same records
    // again, and the repositories' state), on each side.
    for (side, setup) in sides {
        let mut indexer = setup.start(&["--cursor", "1", "--batch-age-ms", "100"]);
        indexer.wait_for_cursor(setup, last_seq);
        let exit = indexer.terminate();
        assert!(
            exit.success(),
            "{side} indexer: {exit}\n{}",
            indexer.log_tail()
        );
        let mut args = strings(&["backfill", "enqueue"]);
        for did in scenario.dids() {
            args.extend(["--did".to_owned(), did.to_owned()]);
        }
        args.extend(setup.redis_flags());
        let out = skyhouse(&args);
        assert!(out.status.success(), "{side} enqueue: {}", text(&out));
        let port = spare_port();
        let mut args = strings(&["backfill", "work", "--plc", network.plc_url(), "--drain"]);
        args.extend(setup.redis_flags());
        args.extend(setup.clickhouse_flags());
        args.extend(["--metrics-addr".into(), format!("127.0.0.1:{port}")]);
        let mut work = Indexer::spawn(&args, port);
        let exit = work.wait_exit();
        assert!(
            exit.success(),
            "{side} backfill: {exit}\n{}",
            work.log_tail()
        );
    }

    // An admin cleanup of erin's repository on each side.
    let erin = &scenario.accounts["erin"];
    for (side, setup) in sides {
        let (mut s, api) = search(setup, 3600).await;
        let resp = reqwest::Client::new()
            .post(format!("{api}/v1/admin/repos/{}/cleanup", erin.did))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let job = resp.text().await.unwrap();
        assert_eq!(status, 200, "{side} cleanup: {job}");
        let exit = s.terminate();
        assert!(exit.success(), "{side} search: {exit}");
    }
    wait_until(
        "the cluster's replicas converged",
        || replicas_converged(cluster.db.name()),
        String::new,
    );

    // Fresh services (their first refresh sees everything), then every
    // answer of both.
    let mut got = Vec::new();
    let mut services = Vec::new();
    for (_, setup) in sides {
        let (s, api) = search(setup, 3600).await;
        let (f, feeds) = feedgen(setup).await;
        // The refreshes wrote through one replica of each shard; a read may
        // go to the other (README: "The services on a cluster").
        wait_until(
            "the cluster's replicas converged after the refresh",
            || replicas_converged(cluster.db.name()),
            String::new,
        );
        got.push(answers(&api, &feeds, &scenario).await);
        services.push((s, f));
    }
    let (want, on_cluster) = (&got[0], &got[1]);
    // Not an empty match: the answers hold the scenario.
    let stats = &want["/v1/stats"];
    assert_eq!(stats["status"], 200, "{stats}");
    assert!(stats.to_string().contains("app.bsky.feed.post"), "{stats}");
    let german = &want["/v1/search/posts?lang=de"]["body"]["posts"];
    assert_eq!(german.as_array().map(Vec::len), Some(1), "{german}");
    for (path, answer) in want {
        let other = on_cluster.get(path);
        // The two answers first: the rows after them are long.
        assert!(
            other == Some(answer),
            "{path}: the cluster answers differently\n-- one server: {answer}\n-- cluster: {}\n{}",
            other.map_or("none".to_owned(), Value::to_string),
            answer_state(&[("one server", &single.db), ("cluster", &cluster.db)])
        );
    }
    assert_eq!(want.len(), on_cluster.len());

    // The same current state in every table.
    let (a, b) = (
        contents(&single.db, &single.db),
        contents(&cluster.db, &single.db),
    );
    assert!(a["posts"].len() > 5, "{:?}", a["posts"]);
    for (table, rows) in &a {
        let other = &b[table];
        if rows != other {
            let only_a: Vec<_> = rows.iter().filter(|r| !other.contains(r)).take(5).collect();
            let only_b: Vec<_> = other.iter().filter(|r| !rows.contains(r)).take(5).collect();
            panic!(
                "{table} differs: only on one server {only_a:#?}, only on the cluster {only_b:#?}"
            );
        }
    }
    for (mut s, mut f) in services {
        assert!(s.terminate().success());
        assert!(f.terminate().success());
    }
}
