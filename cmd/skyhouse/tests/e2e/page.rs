//! The query page of `skyhouse search` in a real browser (headless Chromium
//! driven over WebDriver): over ten days of posts, likes, reposts and
//! follows the indexer took from a capture, a user enters a key, sees the
//! tables and their columns, runs a query and sees the same rows ClickHouse
//! gives and a chart of them, opens the shared URL and gets the query run
//! again, runs an example, and sees the server's one-line message for a bad
//! query and for a wrong key. The screenshot the README shows is taken here
//! (`just page-screenshot` writes it to docs/).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use serde_json::{json, Value};
use skyhouse_atproto::cid::{Cid, CODEC_DAG_CBOR};
use skyhouse_atproto::syntax::{Datetime, Tid};
use skyhouse_testkit::{synth, Browser, Redis};

use crate::{spare_port, strings, Indexer, Setup};

const ADMIN: &str = "page-admin-key-0123456789";

/// Days of activity the capture holds, ending now.
const DAYS: i64 = 10;

/// A Jetstream capture of `DAYS` days of activity by a few accounts, and
/// how many posts each UTC day holds.
struct Capture {
    lines: Vec<String>,
    posts_per_day: BTreeMap<String, u64>,
}

fn capture(now_us: i64) -> Capture {
    let dids: Vec<String> = (0..8).map(synth::did).collect();
    let mut lines = Vec::new();
    let mut posts_per_day = BTreeMap::new();
    let mut cursor = now_us;
    let mut clock = 0u16;
    let mut push = |event: Value| {
        cursor += 1;
        let mut event = event;
        event["time_us"] = json!(cursor);
        lines.push(event.to_string());
    };
    for (i, did) in dids.iter().enumerate() {
        push(json!({"did": did, "kind": "identity",
            "identity": {"did": did, "handle": format!("user{i}.page.test"), "seq": i + 1, "time": "2026-01-01T00:00:00.000Z"}}));
    }
    let tags = ["rust", "clickhouse", "atproto", "bluesky"];
    let mut commit = |did: &str, collection: &str, at_us: i64, record: Value| -> String {
        clock = (clock + 1) % 1024;
        let tid = Tid::from_parts(at_us as u64, clock).unwrap().to_string();
        let mut record = record;
        record["$type"] = json!(collection);
        record["createdAt"] = json!(Datetime::from_timestamp_micros(at_us).unwrap().as_str());
        let cid = Cid::compute(CODEC_DAG_CBOR, record.to_string().as_bytes()).to_string();
        push(json!({"did": did, "kind": "commit", "commit": {
            "rev": tid, "operation": "create", "collection": collection, "rkey": tid,
            "record": record, "cid": cid}}));
        format!("at://{did}/{collection}/{tid}")
    };
    for day in (0..DAYS).rev() {
        // More activity on some days than others, so the chart has a shape.
        let posts = 3 + (day * 7 % 5) as usize + (DAYS - day) as usize / 2;
        for k in 0..posts {
            let at = now_us - day * 86_400_000_000 - (k as i64 + 1) * 3_000_000_000;
            let did = &dids[k % dids.len()];
            let tag = tags[(k + day as usize) % tags.len()];
            let uri = commit(
                did,
                "app.bsky.feed.post",
                at,
                json!({
                    "text": format!("post {k} of day -{day} #{tag}"),
                    "langs": [if k % 3 == 0 { "ja" } else { "en" }],
                    "facets": [{"index": {"byteStart": 0, "byteEnd": 1},
                        "features": [{"$type": "app.bsky.richtext.facet#tag", "tag": tag}]}],
                }),
            );
            let cid = Cid::compute(CODEC_DAG_CBOR, uri.as_bytes()).to_string();
            let day_str = Datetime::from_timestamp_micros(at).unwrap().as_str()[..10].to_owned();
            *posts_per_day.entry(day_str).or_insert(0) += 1;
            for l in 0..(k % 4) {
                let liker = &dids[(k + l + 1) % dids.len()];
                commit(
                    liker,
                    "app.bsky.feed.like",
                    at + (l as i64 + 1) * 1_000_000,
                    json!({"subject": {"uri": uri, "cid": cid}}),
                );
            }
            if k % 3 == 1 {
                let reposter = &dids[(k + 5) % dids.len()];
                commit(
                    reposter,
                    "app.bsky.feed.repost",
                    at + 7_000_000,
                    json!({"subject": {"uri": uri, "cid": cid}}),
                );
            }
        }
        let follower = &dids[day as usize % dids.len()];
        let followed = &dids[(day as usize + 3) % dids.len()];
        commit(
            follower,
            "app.bsky.graph.follow",
            now_us - day * 86_400_000_000 - 600_000_000,
            json!({"subject": followed}),
        );
    }
    Capture {
        lines,
        posts_per_day,
    }
}

/// The texts of the result table's cells, row by row.
const TABLE_CELLS: &str = "return [...document.querySelectorAll('#result tbody tr')]\
    .map(tr => [...tr.cells].map(td => td.textContent))";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_query_page_in_a_browser() {
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    let capture = capture(now_us);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("page");
    fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("capture-{}.jsonl", std::process::id()));
    fs::write(&file, capture.lines.join("\n") + "\n").unwrap();
    let setup = Setup::new(
        "e2e_page",
        Redis::shared().url(),
        "jetstream",
        format!("file://{}", file.display()),
    );
    let mut indexer = setup.start(&[]);
    let status = indexer.wait_exit();
    assert!(status.success(), "{status}\n{}", indexer.log_tail());
    let posts: u64 = capture.posts_per_day.values().sum();
    assert_eq!(
        setup.number("SELECT count() FROM posts FINAL WHERE deleted = 0"),
        posts
    );

    let (port, metrics) = (spare_port(), spare_port());
    let mut args = strings(&[
        "search",
        "--listen",
        &format!("127.0.0.1:{port}"),
        "--admin-key",
        ADMIN,
        "--metrics-addr",
        &format!("127.0.0.1:{metrics}"),
        "--refresh-secs",
        "1",
    ]);
    args.extend(setup.clickhouse_flags());
    args.extend(setup.redis_flags());
    let mut search = Indexer::spawn(&args, metrics);
    search.metrics_until("the API up", |_| true).await;
    let base = format!("http://127.0.0.1:{port}");

    // The page and its assets come from the binary, with a CSP.
    let resp = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(resp.status(), 200);
    let csp = resp.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(csp.contains("script-src 'self'"), "{csp}");
    assert!(resp.text().await.unwrap().contains("/page/query.js"));

    let browser = Browser::start();
    let page = browser.session().await;
    page.goto(&format!("{base}/")).await;
    assert_eq!(
        page.find("#tables").await.text().await,
        "Enter a key to list the tables."
    );

    // --- a wrong key: the server's message, one line.
    page.find("#key").await.send_keys("sh_not-a-key").await;
    page.find("#save-key").await.click().await;
    let shown = page
        .wait_for("the wrong key's error", "return document.getElementById('error').hidden ? null : document.getElementById('error').textContent", &[])
        .await;
    assert_eq!(shown, "unknown or revoked API key");

    // --- the right key lists the tables and their columns.
    page.find("#key").await.send_keys(ADMIN).await;
    page.find("#save-key").await.click().await;
    page.wait_for(
        "the posts table",
        "return document.querySelector('#tables details[data-table=posts]')",
        &[],
    )
    .await;
    let columns = page
        .execute(
            "return [...document.querySelectorAll('#tables details[data-table=posts] li .col')].map(c => c.textContent)",
            &[],
        )
        .await;
    let expected: Vec<String> = setup
        .rows("SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'posts'")
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(columns, json!(expected), "the columns of posts, in order");
    assert!(page.find("#error").await.property("hidden").await == json!(true));

    // --- a query: the rows ClickHouse gives, and a chart of them.
    let sql = "SELECT toDate(created_at) AS day, count() AS posts, uniqExact(did) AS accounts\nFROM posts FINAL\nWHERE deleted = 0\nGROUP BY day\nORDER BY day";
    let sql_box = page.find("#sql").await;
    sql_box.clear().await;
    sql_box.send_keys(sql).await;
    page.find("#run").await.click().await;
    let want: Vec<Vec<String>> = setup
        .rows(sql)
        .iter()
        .map(|r| {
            r.values()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect()
        })
        .collect();
    // The server's time zone is UTC, as the capture's days are.
    let per_day: BTreeMap<String, u64> = want
        .iter()
        .map(|r| (r[1].clone(), r[2].parse::<u64>().unwrap()))
        .collect();
    assert_eq!(per_day, capture.posts_per_day);
    let days = want.len();
    let cells = page
        .wait_for(
            "the result rows",
            &format!("const c = (() => {{ {TABLE_CELLS} }})(); return c.length ? c : null"),
            &[],
        )
        .await;
    // setup.rows' maps sort their keys: accounts, day, posts.
    let shown: Vec<Vec<String>> = serde_json::from_value(cells).unwrap();
    let reordered: Vec<Vec<String>> = shown
        .iter()
        .map(|r| vec![r[2].clone(), r[0].clone(), r[1].clone()])
        .collect();
    assert_eq!(reordered, want);
    let headers = page
        .execute(
            "return [...document.querySelectorAll('#result th')].map(th => th.textContent)",
            &[],
        )
        .await;
    assert_eq!(
        headers,
        json!(["day", "posts", "accounts"]),
        "the statement's column order"
    );
    let chart = page
        .execute(
            "return [...document.querySelectorAll('#chart polyline')].map(p => [p.dataset.series, p.getAttribute('points').split(' ').length])",
            &[],
        )
        .await;
    assert_eq!(
        chart,
        json!([["posts", days], ["accounts", days]]),
        "one line per numeric column"
    );
    assert_eq!(
        page.find("#status").await.text().await.split(' ').next(),
        Some(days.to_string().as_str())
    );

    // --- the URL holds the query: opened afresh, it runs again.
    let shared = page.url().await;
    assert!(shared.contains("#q="), "{shared}");
    page.goto("about:blank").await;
    page.goto(&shared).await;
    let again = page
        .wait_for(
            "the shared query's rows",
            &format!("const c = (() => {{ {TABLE_CELLS} }})(); return c.length ? c : null"),
            &[],
        )
        .await;
    assert_eq!(
        serde_json::from_value::<Vec<Vec<String>>>(again).unwrap(),
        shown
    );
    assert_eq!(page.find("#sql").await.property("value").await, json!(sql));

    // --- a bad query: the server's one-line message.
    let bad = "SELECT no_such_column FROM posts";
    let answer: Value = reqwest::Client::new()
        .post(format!("{base}/v1/sql"))
        .bearer_auth(ADMIN)
        .body(json!({ "query": bad }).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let message = answer["message"].as_str().unwrap();
    assert!(
        message.starts_with("ClickHouse refused the query"),
        "{message}"
    );
    let sql_box = page.find("#sql").await;
    sql_box.clear().await;
    sql_box.send_keys(bad).await;
    page.find("#run").await.click().await;
    let shown = page
        .wait_for("the error", "return document.getElementById('error').hidden ? null : document.getElementById('error').textContent", &[])
        .await;
    assert_eq!(shown, message);
    assert!(!message.contains('\n'));
    assert_eq!(
        page.execute(
            "return document.querySelectorAll('#result tbody tr, #chart svg').length",
            &[]
        )
        .await,
        json!(0),
        "no stale result under the error"
    );

    // --- each example runs without an error.
    let examples = page
        .execute("return [...document.querySelectorAll('#examples option')].slice(1).map(o => o.textContent)", &[])
        .await;
    let examples: Vec<String> = serde_json::from_value(examples).unwrap();
    assert!(examples.len() >= 3, "{examples:?}");
    for (i, label) in examples.iter().enumerate() {
        page.execute(
            "document.getElementById('status').textContent = ''; const s = document.getElementById('examples'); s.value = String(arguments[0]); s.dispatchEvent(new Event('change'));",
            &[json!(i)],
        )
        .await;
        let outcome = page
            .wait_for(
                label,
                "const e = document.getElementById('error'); const s = document.getElementById('status').textContent; \
                 if (!e.hidden) return 'error: ' + e.textContent; return / rows? in /.test(s) ? s : null",
                &[],
            )
            .await;
        assert!(
            !outcome.as_str().unwrap().starts_with("error"),
            "{label}: {outcome}"
        );
    }

    // --- the screenshot of the README: the daily records per collection
    // example, once the refresh has counted every record into daily_stats.
    let records = setup.number("SELECT count() FROM records FINAL WHERE deleted = 0");
    crate::wait_until(
        "daily_stats counting every record",
        || {
            (setup.number("SELECT toUInt64(sum(records)) FROM daily_stats FINAL") == records)
                .then_some(())
        },
        || format!("{:?}", setup.rows("SELECT * FROM daily_stats FINAL")),
    );
    let example = examples
        .iter()
        .position(|l| l.starts_with("Daily records per collection"))
        .expect("the daily records example");
    page.execute(
        "document.getElementById('status').textContent = ''; const s = document.getElementById('examples'); s.value = String(arguments[0]); s.dispatchEvent(new Event('change'));",
        &[json!(example)],
    )
    .await;
    let lines = page
        .wait_for(
            "the chart",
            "return / rows? in /.test(document.getElementById('status').textContent) && document.querySelectorAll('#chart polyline').length",
            &[],
        )
        .await;
    assert_eq!(lines, json!(4), "posts, likes, reposts, follows");
    let png = page.screenshot().await;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    fs::write(dir.join("query-page.png"), &png).unwrap();
    if let Ok(to) = std::env::var("SKYHOUSE_PAGE_SCREENSHOT") {
        fs::write(&to, &png).unwrap_or_else(|e| panic!("{to}: {e}"));
    }

    page.close().await;
    drop(browser);
    let exit = search.terminate();
    assert!(exit.success(), "{exit}");
}
