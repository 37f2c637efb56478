//! `skyhouse search` on data the real indexer took from the reference PDS's
//! firehose: search finds what was posted and not what was deleted or
//! hidden; stats and records equal the PDS's truth; cursors page without
//! duplicates or gaps while new posts arrive; keys and scopes; the SQL
//! explorer refuses writes; hostile parameters are 400s or correct empty
//! results, never a 5xx; `/openapi.json` lists exactly the served routes.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};
use skyhouse_testkit::{now_rfc3339, AccountStatus, Network, Redis, Scenario};

use crate::{backlog, firehose_url, sentinel, spare_port, strings, Indexer, Setup};

const ADMIN: &str = "e2e-admin-key-0123456789";

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let mut req = match method {
            "get" => self.http.get(&url),
            "post" => self.http.post(&url),
            "delete" => self.http.delete(&url),
            other => panic!("method {other}"),
        };
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        let v = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path}: not JSON ({e}): {text}"));
        (status, v)
    }

    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.call("get", path, None, None).await;
        assert_eq!(status, 200, "GET {path}: {v}");
        v
    }

    /// The URIs of a post search.
    async fn post_uris(&self, query: &str) -> Vec<String> {
        let v = self.get(&format!("/v1/search/posts?{query}")).await;
        v["posts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["uri"].as_str().unwrap().to_owned())
            .collect()
    }
}

/// `[{"collection", "records"}, …]` (stats answers) as a map.
fn per_collection(list: &Value) -> BTreeMap<String, u64> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["collection"].as_str().unwrap().to_owned(),
                c["records"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn search_api_over_the_indexed_reference_pds() {
    let network = Network::start();
    let pds = network.pds();
    sentinel(&pds).await;
    let scenario = Scenario::run(&pds).await.expect("scenario");
    let messages = backlog(&network, &scenario.last).await;
    let last_seq = messages.last().and_then(|m| m.frame.seq()).unwrap();
    let setup = Setup::new(
        "e2e_search",
        Redis::shared().url(),
        "firehose",
        firehose_url(&network),
    );
    let mut indexer = setup.start(&["--cursor", "1", "--batch-age-ms", "100"]);
    indexer.wait_for_cursor(&setup, last_seq);

    let (port, metrics) = (spare_port(), spare_port());
    let mut args = strings(&[
        "search",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-key",
        ADMIN,
    ]);
    args.extend(setup.clickhouse_flags());
    args.extend(setup.redis_flags());
    args.extend(strings(&[
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
        "--refresh-secs",
        "1",
    ]));
    let mut search = Indexer::spawn(&args, metrics);
    let first_scrape = search.metrics_until("the API up", |_| true).await;
    // Stats and counts are those of the last refresh: wait for the first.
    search.ready().await;
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    let alice = &scenario.accounts["alice"];

    // --- search finds what was posted, not what was deleted or hidden.
    assert_eq!(
        api.post_uris("q=guten%20MORGEN").await,
        [scenario.german_post.uri.as_str()]
    );
    assert_eq!(
        api.post_uris("lang=de").await,
        [scenario.german_post.uri.as_str()]
    );
    assert_eq!(
        api.post_uris(&format!("tag=%23{}", scenario.facets.tag.to_uppercase()))
            .await,
        [scenario.facet_post.uri.as_str()]
    );
    assert!(
        api.post_uris("q=will%20be%20deleted").await.is_empty(),
        "deleted post"
    );
    assert!(
        api.post_uris("q=will%20be%20edited").await.is_empty(),
        "edited away"
    );
    assert_eq!(api.post_uris("q=was%20edited").await.len(), 1, "the edit");
    assert!(
        api.post_uris("q=frank%20here").await.is_empty(),
        "deleted account"
    );
    assert!(
        api.post_uris("q=gina%20here").await.is_empty(),
        "taken-down account"
    );
    let by_alice = api.post_uris(&format!("author={}", alice.handle)).await;
    assert!(by_alice.contains(&scenario.facet_post.uri), "{by_alice:?}");
    assert_eq!(
        by_alice,
        api.post_uris(&format!("author={}", alice.did)).await
    );

    // --- stats and records equal the PDS's truth (visible accounts).
    let mut truth_by_collection: BTreeMap<String, u64> = BTreeMap::new();
    let mut visible = Vec::new();
    for did in scenario.dids() {
        let truth = pds.truth(did).await.expect("truth");
        if truth.status != AccountStatus::Active {
            let (status, _) = api
                .call("get", &format!("/v1/stats/actors/{did}"), None, None)
                .await;
            assert_eq!(status, 404, "{did} is hidden ({:?})", truth.status);
            continue;
        }
        let mut mine: BTreeMap<String, u64> = BTreeMap::new();
        for (collection, _) in truth.records.keys() {
            *truth_by_collection.entry(collection.clone()).or_default() += 1;
            *mine.entry(collection.clone()).or_default() += 1;
        }
        let actor = api.get(&format!("/v1/stats/actors/{did}")).await;
        let got = per_collection(&actor["collections"]);
        assert_eq!(got, mine, "{did}");
        let repo = api.get(&format!("/v1/repos/{did}?limit=1000")).await;
        let cids: BTreeMap<(String, String), String> = repo["records"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let s = |k: &str| r[k].as_str().unwrap().to_owned();
                ((s("collection"), s("rkey")), s("cid"))
            })
            .collect();
        assert_eq!(cids, truth.records, "{did}: /v1/repos vs the PDS");
        visible.push(did.to_owned());
    }
    assert!(visible.len() >= 3);
    let stats = api.get("/v1/stats").await;
    let got = per_collection(&stats["collections"]);
    // The sentinel account is visible too: count its records from the truth.
    let mut expected = truth_by_collection.clone();
    for did in setup
        .rows("SELECT DISTINCT did FROM records FINAL WHERE deleted = 0")
        .iter()
        .map(|r| r["did"].as_str().unwrap().to_owned())
    {
        if scenario.dids().any(|d| d == did) {
            continue;
        }
        for (collection, _) in pds.truth(&did).await.expect("truth").records.keys() {
            *expected.entry(collection.clone()).or_default() += 1;
        }
    }
    assert_eq!(got, expected, "/v1/stats vs the PDS");
    let actors = api
        .get(&format!("/v1/search/actors?q={}", &alice.handle[..5]))
        .await;
    assert!(
        actors["actors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["did"] == alice.did.as_str()),
        "{actors}"
    );
    let analytics = api.get("/v1/stats/analytics/creates-and-users").await;
    let posts_row = analytics["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["collection"] == "app.bsky.feed.post")
        .cloned()
        .unwrap();
    assert_eq!(
        posts_row["records"].as_u64(),
        expected.get("app.bsky.feed.post").copied()
    );
    // The whole-history analytics are cached in Redis as `/v1/stats` is (the
    // second answer is the first's body, from the cache); windowed ones are not.
    let fetch = |path: &str| {
        let req = api.http.get(format!("{}{path}", api.base));
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            let cache = resp.headers()["x-cache"].to_str().unwrap().to_owned();
            (cache, resp.text().await.unwrap())
        }
    };
    let (first, body) = fetch("/v1/stats/analytics/earliest-posters").await;
    assert_eq!(first, "miss", "{body}");
    assert_eq!(
        fetch("/v1/stats/analytics/earliest-posters?limit=3").await,
        ("hit".to_owned(), body)
    );
    let (cached, body) = fetch("/v1/stats/analytics/creates-and-users").await;
    assert_eq!(cached, "hit", "{body}");
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), analytics);
    for _ in 0..2 {
        assert_eq!(fetch("/v1/stats/analytics/languages").await.0, "none");
    }
    // With Redis gone the whole-history analytics still answer, from ClickHouse,
    // the same as the cached answers above: nothing is cached, nothing fails.
    let (gone_port, gone_metrics, dead) = (spare_port(), spare_port(), spare_port());
    let mut gone_args = strings(&["search", "--listen", &format!("127.0.0.1:{gone_port}")]);
    gone_args.extend(setup.clickhouse_flags());
    gone_args.extend(strings(&[
        "--redis",
        &format!("redis://127.0.0.1:{dead}"),
        "--metrics-addr",
        &format!("127.0.0.1:{gone_metrics}"),
    ]));
    let mut gone = Indexer::spawn(&gone_args, gone_metrics);
    gone.metrics_until("the API up", |_| true).await;
    for path in [
        "/v1/stats/analytics/creates-and-users",
        "/v1/stats/analytics/earliest-posters",
    ] {
        let (cached, body) = fetch(path).await;
        assert_eq!(cached, "hit", "{path}: {body}");
        let want: Value = serde_json::from_str(&body).unwrap();
        for _ in 0..2 {
            let resp = api
                .http
                .get(format!("http://127.0.0.1:{gone_port}{path}"))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{path}");
            assert_eq!(resp.headers()["x-cache"], "miss", "{path}");
            let got: Value = resp.json().await.unwrap();
            assert_eq!(got, want, "{path}");
        }
    }
    assert!(gone.terminate().success());

    // --- cursors page without duplicates or gaps while new posts arrive.
    let all = api.post_uris("limit=100").await;
    assert!(all.len() >= 5, "{all:?}");
    let mut paged: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    let mut arrivals = 0;
    loop {
        let q = match &cursor {
            Some(c) => format!("limit=2&cursor={c}"),
            None => "limit=2".to_owned(),
        };
        let page = api.get(&format!("/v1/search/posts?{q}")).await;
        paged.extend(
            page["posts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p["uri"].as_str().unwrap().to_owned()),
        );
        // A new post lands (and is indexed) between two pages.
        if arrivals < 2 {
            arrivals += 1;
            let marker = format!("arrival{arrivals}x{}", std::process::id());
            pds.create_record(
                alice,
                "app.bsky.feed.post",
                json!({"$type": "app.bsky.feed.post", "text": marker, "createdAt": now_rfc3339()}),
            )
            .await
            .unwrap();
            let deadline = std::time::Instant::now() + crate::DEADLINE;
            while api.post_uris(&format!("q={marker}")).await.is_empty() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{marker} never indexed"
                );
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, all, "pages = the result set when paging began");

    // --- keys and scopes.
    let (s, _) = api.call("get", "/v1/admin/keys", None, None).await;
    assert_eq!(s, 401);
    let (s, _) = api
        .call("get", "/v1/admin/keys", Some("sh_not-a-key"), None)
        .await;
    assert_eq!(s, 401);
    let (s, made) = api
        .call(
            "post",
            "/v1/admin/keys",
            Some(ADMIN),
            Some(json!({"name": "reader", "scopes": ["read"]})),
        )
        .await;
    assert_eq!(s, 201, "{made}");
    let read_key = made["key"].as_str().unwrap().to_owned();
    let (s, _) = api
        .call(
            "post",
            "/v1/sql",
            Some(&read_key),
            Some(json!({"query": "SELECT 1"})),
        )
        .await;
    assert_eq!(s, 403, "a read key on an admin route");
    let (s, listed) = api.call("get", "/v1/admin/keys", Some(ADMIN), None).await;
    assert_eq!(s, 200);
    assert!(
        !listed.to_string().contains(&read_key),
        "the key is never listed"
    );
    let stored = setup.rows("SELECT key_hash FROM api_keys FINAL");
    assert!(
        stored
            .iter()
            .all(|r| !r["key_hash"].as_str().unwrap().contains(&read_key[3..])),
        "only a hash is stored"
    );

    // --- the SQL explorer reads and refuses writes.
    let count = |s: &Setup| s.number("SELECT count() FROM posts");
    let before = count(&setup);
    let (s, v) = api
        .call(
            "post",
            "/v1/sql",
            Some(ADMIN),
            Some(json!({"query": "SELECT count() AS n FROM posts"})),
        )
        .await;
    assert_eq!((s, v["data"][0]["n"].as_u64()), (200, Some(before)), "{v}");
    for write in [
        "DROP TABLE posts",
        "INSERT INTO posts (did) VALUES ('x')",
        "TRUNCATE TABLE posts",
        "SELECT 1 SETTINGS readonly = 0",
    ] {
        let (s, v) = api
            .call(
                "post",
                "/v1/sql",
                Some(ADMIN),
                Some(json!({ "query": write })),
            )
            .await;
        assert_eq!(s, 400, "{write}: {v}");
    }
    assert_eq!(count(&setup), before, "nothing written");

    // --- admin cleanup: erin's rows are tombstoned and vanish from search.
    let erin = &scenario.accounts["erin"];
    assert!(!api.post_uris("q=erin%20here").await.is_empty());
    let (s, job) = api
        .call(
            "post",
            &format!("/v1/admin/repos/{}/cleanup", erin.did),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(s, 200, "{job}");
    let (s, state) = api
        .call(
            "get",
            &format!("/v1/admin/jobs/{}", job["job"].as_str().unwrap()),
            Some(ADMIN),
            None,
        )
        .await;
    assert_eq!(
        (s, state["status"].as_str()),
        (200, Some("done")),
        "{state}"
    );
    assert!(api.post_uris("q=erin%20here").await.is_empty());

    // --- revoked keys stop working.
    let id = made["id"].as_str().unwrap();
    let (s, _) = api
        .call("delete", &format!("/v1/admin/keys/{id}"), Some(ADMIN), None)
        .await;
    assert_eq!(s, 200);
    let (s, _) = api.call("get", "/v1/stats", Some(&read_key), None).await;
    assert_eq!(s, 200, "read routes are open by default");

    // --- hostile parameters: 400 or a correct (empty) answer, never 5xx.
    let before = count(&setup); // the cleanup above wrote tombstones
    let long = "x".repeat(10_000);
    let hostile = [
        "'",
        "%25",
        "%5C",
        "%27%3B%20DROP%20TABLE%20posts%3B--",
        "%FF%FE",
        "-1",
        "99999999999999999999",
        "%00",
        "%3F%3F",
        long.as_str(),
        "did:plc:",
        "\\u0000",
    ];
    let paths = [
        "/v1/search/posts?q=",
        "/v1/search/posts?author=",
        "/v1/search/posts?lang=",
        "/v1/search/posts?tag=",
        "/v1/search/posts?since=",
        "/v1/search/posts?until=",
        "/v1/search/posts?limit=",
        "/v1/search/posts?cursor=",
        "/v1/search/actors?q=",
        "/v1/search/actors?q=a&limit=",
        "/v1/repos/",
        "/v1/stats/actors/",
        "/v1/stats/analytics/",
        "/v1/stats/analytics/hashtags?window=",
        "/v1/repos/did:plc:abc?limit=",
    ];
    for path in paths {
        for value in hostile {
            let url = format!("{path}{value}");
            let (s, v) = api.call("get", &url, None, None).await;
            assert!(
                matches!(s, 200 | 400 | 404),
                "GET {}: {s} {v}",
                &url[..url.len().min(120)]
            );
            if s != 200 {
                assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
                assert!(
                    !v["message"].as_str().unwrap().contains("DB::Exception"),
                    "{v}"
                );
            }
        }
    }
    assert_eq!(count(&setup), before, "still nothing written");

    // --- /openapi.json lists exactly the served routes, and each answers.
    let doc = api.get("/openapi.json").await;
    let listed: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(p, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), p.clone()))
        })
        .collect();
    let routes: BTreeSet<(String, String)> = skyhouse_api::ROUTES
        .iter()
        .map(|r| (r.0.to_owned(), r.1.to_owned()))
        .collect();
    assert_eq!(listed, routes);
    for (method, path) in &routes {
        let concrete = path
            .replace("{did}", &alice.did)
            .replace("{name}", "languages")
            .replace("{id}", "0123456789abcdef");
        let (s, v) = api
            .call(method, &concrete, Some(ADMIN), Some(json!({})))
            .await;
        assert!(
            v["message"] != "no such route (see /openapi.json)" && s != 405,
            "{method} {path}: {s} {v}"
        );
    }

    // Every series the requests above counted was exported from the first scrape on
    // (routes and status classes at 0; the dashboard is checked against a fresh search
    // service's scrape in tests/ops).
    let parse = skyhouse_testkit::dashboards::parse_scrape;
    let scrape = search
        .metrics_until("requests counted", |m| {
            skyhouse_testkit::dashboards::sum(&parse(m), "skyhouse_api_requests_total", None) > 0.0
        })
        .await;
    let new = skyhouse_testkit::dashboards::new_series(
        &parse(&first_scrape),
        &parse(&scrape),
        "skyhouse_api_",
    );
    assert!(new.is_empty(), "not exported from the start: {new:?}");

    let exit = search.terminate();
    assert!(exit.success(), "{exit}");
    indexer.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_clickhouse_down_the_api_answers_503_json_and_health_says_why() {
    let (port, metrics, dead) = (spare_port(), spare_port(), spare_port());
    let redis = Redis::shared();
    let mut args = strings(&["search", "--listen", &format!("127.0.0.1:{port}")]);
    args.extend(strings(&[
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
    ]));
    args.extend(strings(&[
        "--clickhouse-address",
        &format!("http://127.0.0.1:{dead}"),
    ]));
    args.extend(strings(&[
        "--redis",
        &redis.url(),
        "--redis-prefix",
        &redis.key_prefix("e2e_search_down"),
    ]));
    let mut search = Indexer::spawn(&args, metrics);
    let first_scrape = search.metrics_until("the API up", |_| true).await;
    let api = Api {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
    };
    for path in [
        "/v1/stats",
        "/v1/search/posts?q=x",
        "/v1/search/actors?q=x",
        "/v1/stats/analytics/languages",
    ] {
        let (s, v) = api.call("get", path, None, None).await;
        assert_eq!(s, 503, "{path}: {v}");
        assert_eq!(v["error"], "Unavailable", "{path}: {v}");
        let message = v["message"].as_str().unwrap();
        assert!(
            !message.contains("127.0.0.1") && !message.contains("Connection"),
            "{path}: {v}"
        );
    }
    // The request id: a client's is returned and is in the log line of the failure
    // (the handler's warning, inside the request's span); a missing one is made.
    let resp = api
        .http
        .get(format!("{}/v1/stats", api.base))
        .header("x-request-id", "e2e-down-7f3a")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 503);
    assert_eq!(resp.headers()["x-request-id"], "e2e-down-7f3a");
    let made = api
        .http
        .get(format!("{}/v1/stats", api.base))
        .send()
        .await
        .unwrap();
    let made = made.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 16, "{made}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let log = search.log();
        let tagged = |id: &str| log.lines().any(|l| l.contains(id) && l.contains("WARN"));
        if tagged("e2e-down-7f3a") && tagged(&made) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no warning line with the request ids:\n{log}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // CORS: a browser preflight for a read route is answered for any origin; the
    // admin routes answer none (the defaults).
    let preflight = |path: &str, method: &str| {
        api.http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", api.base))
            .header("origin", "https://app.example")
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization")
            .send()
    };
    let read = preflight("/v1/stats", "GET").await.unwrap();
    assert_eq!(read.status(), 200);
    assert_eq!(read.headers()["access-control-allow-origin"], "*");
    assert!(read.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("GET"));
    let admin = preflight("/v1/admin/keys", "POST").await.unwrap();
    assert!(
        admin.headers().get("access-control-allow-origin").is_none(),
        "{:?}",
        admin.headers()
    );
    let admin = preflight("/v1/sql", "POST").await.unwrap();
    assert!(admin.headers().get("access-control-allow-origin").is_none());
    // Bad input is still a 400, before any query.
    let (s, _) = api
        .call("get", "/v1/search/posts?limit=0", None, None)
        .await;
    assert_eq!(s, 400);
    let (code, body) = search.get("/health").await;
    assert_eq!(code, 503, "{body}");
    let health: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(health["checks"]["clickhouse"], false, "{body}");
    // The 5xx and 4xx answers were counted in series exported from the first scrape on.
    let parse = skyhouse_testkit::dashboards::parse_scrape;
    let scrape = search
        .metrics_until("5xx counted", |m| {
            skyhouse_testkit::dashboards::sum(
                &parse(m),
                "skyhouse_api_requests_total",
                Some(("status", "5xx")),
            ) >= 4.0
        })
        .await;
    let new = skyhouse_testkit::dashboards::new_series(
        &parse(&first_scrape),
        &parse(&scrape),
        "skyhouse_api_",
    );
    assert!(new.is_empty(), "not exported from the start: {new:?}");
    let exit = search.terminate();
    assert!(exit.success(), "{exit}");
}
