//! `skyhouse feedgen` run as an operator would: the real binary against the
//! testkit ClickHouse 18.16 and Redis. It becomes ready once its first count
//! refresh ran, serves did.json / describeFeedGenerator / getFeedSkeleton
//! and its metrics, stops cleanly on SIGTERM, and refuses bad flags with one
//! line naming the flag.
#![allow(clippy::unwrap_used)] // a panic is the failure report

use skyhouse_testkit::spare_port;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const DEADLINE: Duration = Duration::from_secs(60);

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn get(url: &str) -> Option<(u16, String)> {
    let resp = reqwest::get(url).await.ok()?;
    let status = resp.status().as_u16();
    Some((status, resp.text().await.ok()?))
}

#[tokio::test]
async fn feedgen_serves_until_sigterm() {
    let ch = skyhouse_testkit::ClickHouse::shared();
    let db = ch.database("feedgen_cli");
    let redis = skyhouse_testkit::Redis::shared();
    let bin = env!("CARGO_BIN_EXE_skyhouse");
    let ch_flags = [
        "--clickhouse-address".to_owned(),
        ch.http_url(),
        "--database".to_owned(),
        db.name().to_owned(),
    ];
    let out = Command::new(bin)
        .env_clear()
        .args(["migrate", "up"])
        .args(&ch_flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (port, metrics) = (spare_port(), spare_port());
    let child = Command::new(bin)
        .env_clear()
        .env("RUST_LOG", "info")
        .arg("feedgen")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(["--public-url", &format!("http://localhost:{port}")])
        .args([
            "--cors-origins",
            "https://app.example, https://other.example",
        ])
        .env("RUST_LOG", "info,tower_http=debug")
        .args(["--redis", &redis.url()])
        .args(["--redis-prefix", &redis.key_prefix("feedgen_cli")])
        .args(&ch_flags)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let start = Instant::now();
    loop {
        if let Some((200, _)) = get(&format!("http://127.0.0.1:{metrics}/health")).await {
            break;
        }
        assert!(
            running.0.try_wait().unwrap().is_none(),
            "feedgen exited early"
        );
        assert!(start.elapsed() < DEADLINE, "feedgen never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let base = format!("http://127.0.0.1:{port}");
    let did = format!("did:web:localhost%3A{port}");

    let (status, body) = get(&format!("{base}/.well-known/did.json")).await.unwrap();
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["id"], did.as_str());
    assert_eq!(doc["service"][0]["id"], "#bsky_fg");
    assert_eq!(
        doc["service"][0]["serviceEndpoint"],
        format!("http://localhost:{port}").as_str()
    );

    let (status, body) = get(&format!("{base}/xrpc/app.bsky.feed.describeFeedGenerator"))
        .await
        .unwrap();
    assert_eq!(status, 200);
    let described: Value = serde_json::from_str(&body).unwrap();
    let uris: Vec<&str> = described["feeds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["uri"].as_str().unwrap())
        .collect();
    let whats_hot = format!("at://{did}/app.bsky.feed.generator/whats-hot");
    assert!(uris.contains(&whats_hot.as_str()), "{uris:?}");
    assert_eq!(uris.len(), 3);

    let feed: String = url::form_urlencoded::byte_serialize(whats_hot.as_bytes()).collect();
    let (status, body) = get(&format!(
        "{base}/xrpc/app.bsky.feed.getFeedSkeleton?feed={feed}&limit=10"
    ))
    .await
    .unwrap();
    assert_eq!((status, body.as_str()), (200, r#"{"feed":[]}"#));
    let (status, _) = get(&format!(
        "{base}/xrpc/app.bsky.feed.getFeedSkeleton?feed={feed}&limit=101"
    ))
    .await
    .unwrap();
    assert_eq!(status, 400);
    let (_, scrape) = get(&format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap();
    assert!(
        scrape
            .contains("skyhouse_feedgen_requests_total{method=\"getFeedSkeleton\",status=\"200\"}"),
        "{scrape}"
    );

    // Compression: each encoding asked for decodes to the same JSON.
    let describe = format!("{base}/xrpc/app.bsky.feed.describeFeedGenerator");
    let raw = reqwest::Client::new();
    for encoding in ["gzip", "br", "zstd"] {
        let resp = raw
            .get(&describe)
            .header("accept-encoding", encoding)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-encoding"], encoding);
        let bytes = resp.bytes().await.unwrap();
        let plain = decode(encoding, &bytes);
        assert_ne!(plain, bytes.to_vec(), "{encoding}: not compressed");
        let json: Value = serde_json::from_slice(&plain).unwrap();
        assert_eq!(json, described, "{encoding}");
    }
    let resp = raw.get(&describe).send().await.unwrap();
    assert!(resp.headers().get("content-encoding").is_none());

    // CORS as configured: a listed origin's preflight is answered with it, another
    // origin's gets no allow-origin.
    let preflight = |origin: &'static str| {
        raw.request(
            reqwest::Method::OPTIONS,
            format!("{base}/xrpc/app.bsky.feed.getFeedSkeleton"),
        )
        .header("origin", origin)
        .header("access-control-request-method", "GET")
        .header("access-control-request-headers", "authorization")
        .send()
    };
    let ok = preflight("https://other.example").await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://other.example"
    );
    let allowed = ok.headers()["access-control-allow-headers"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(allowed.contains("authorization"), "{allowed}");
    let refused = preflight("https://evil.example").await.unwrap();
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none(),
        "{:?}",
        refused.headers()
    );

    // Request ids: a client's is returned, one is made otherwise; both are in the
    // request's log line.
    let resp = raw
        .get(&describe)
        .header("x-request-id", "fg-test-5d1c")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "fg-test-5d1c");
    let resp = raw.get(&describe).send().await.unwrap();
    let made = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(made.len(), 16, "{made}");
    // One with a space is replaced, not logged.
    let resp = raw
        .get(&describe)
        .header("x-request-id", "bad id")
        .send()
        .await
        .unwrap();
    assert_ne!(resp.headers()["x-request-id"], "bad id");

    let pid = running.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let start = Instant::now();
    let status = loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            break status;
        }
        assert!(start.elapsed() < DEADLINE, "feedgen ignored SIGTERM");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status}");
    let mut log = String::new();
    std::io::Read::read_to_string(running.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    for id in ["fg-test-5d1c", made.as_str()] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("request_id={id}")) && l.contains("/xrpc/")),
            "no log line of request {id}:\n{log}"
        );
    }
    assert!(!log.contains("bad id"), "{log}");
}

/// `bytes` decoded from `encoding` (at most 1 MiB).
fn decode(encoding: &str, bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    const CAP: u64 = 1 << 20;
    let mut out = Vec::new();
    let reader: Box<dyn Read + '_> = match encoding {
        "gzip" => Box::new(flate2::read::GzDecoder::new(bytes)),
        "br" => Box::new(brotli::Decompressor::new(bytes, 4096)),
        "zstd" => Box::new(zstd::stream::read::Decoder::new(bytes).unwrap()),
        other => panic!("{other}"),
    };
    reader.take(CAP).read_to_end(&mut out).unwrap();
    out
}

#[test]
fn bad_flags_are_one_line_errors_naming_the_flag() {
    let bin = env!("CARGO_BIN_EXE_skyhouse");
    for (args, flag) in [
        (&["feedgen"][..], "--public-url"),
        (
            &["feedgen", "--public-url", "ftp://feeds.example"][..],
            "--public-url",
        ),
        (
            &[
                "feedgen",
                "--public-url",
                "https://f.example",
                "--service-did",
                "nope",
            ][..],
            "--service-did",
        ),
        (
            &[
                "feedgen",
                "--public-url",
                "https://f.example",
                "--feeds-config",
                "/nonexistent.json",
            ][..],
            "--feeds-config",
        ),
        (
            &[
                "feedgen",
                "--public-url",
                "https://f.example",
                "--redis",
                "http://x",
            ][..],
            "--redis",
        ),
    ] {
        let out = Command::new(bin).env_clear().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(flag), "{args:?}: {err}");
        if flag != "--public-url" || args.len() > 1 {
            assert_eq!(err.trim().lines().count(), 1, "{args:?}: {err}");
        }
    }
}

/// `skyhouse feedgen publish|unpublish` with `args`: its status and standard output lines.
fn publish(verb: &str, args: &[String]) -> (std::process::ExitStatus, Vec<String>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .env_clear()
        .args(["feedgen", verb])
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    (
        out.status,
        stdout.lines().map(str::to_owned).collect(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A 1×1 PNG.
const AVATAR: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1f, 0x15, 0xc4,
    0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x00, 0x05, 0x00, 0x01, 0xff, 0x89, 0x99, 0x3d, 0x1d, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
    0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// The real client of a feed generator: the reference AppView. The feeds are published
/// with `skyhouse feedgen publish` (an app password, idempotent), the AppView indexes the
/// generator records, resolves the generator's did:plc to skyhouse's `#bsky_fg` endpoint,
/// calls `getFeedSkeleton` there with the viewer's service-auth token (which skyhouse
/// verifies against the test PLC) and hydrates the posts skyhouse ranked from what its
/// indexer took from the same PDS's firehose: the expected posts, in the expected order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_appview_serves_a_published_skyhouse_feed() {
    use skyhouse_testkit::{now_rfc3339, AppViewNetwork, Auth, Viewer};
    let network = AppViewNetwork::shared();
    let pds = network.pds();
    let n = std::process::id() % 100_000;
    let handle = |name: &str| format!("{name}{n}.test");
    let publisher = pds.create_account(&handle("pub")).await.unwrap();
    let author = pds.create_account(&handle("author")).await.unwrap();
    let mut likers = Vec::new();
    for name in ["la", "lb", "lc"] {
        likers.push(pds.create_account(&handle(name)).await.unwrap());
    }
    // Posts liked 1, 3 and 2 times: top-24h ranks them 3, 2, 1.
    let mut posts = Vec::new();
    for (i, likes) in [1usize, 3, 2].into_iter().enumerate() {
        let post = pds
            .create_record(
                &author,
                "app.bsky.feed.post",
                serde_json::json!({"$type": "app.bsky.feed.post", "text": format!("post {i}"),
                                   "createdAt": now_rfc3339()}),
            )
            .await
            .unwrap();
        for liker in &likers[..likes] {
            pds.create_record(
                liker,
                "app.bsky.feed.like",
                serde_json::json!({"$type": "app.bsky.feed.like", "subject": post.strong_ref(),
                                   "createdAt": now_rfc3339()}),
            )
            .await
            .unwrap();
        }
        posts.push((post.uri, likes));
    }
    let mut expected = posts.clone();
    expected.sort_by_key(|(_, likes)| std::cmp::Reverse(*likes));

    // skyhouse indexes the PDS's firehose.
    let ch = skyhouse_testkit::ClickHouse::shared();
    let db = ch.database("feedgen_appview");
    let redis = skyhouse_testkit::Redis::shared();
    let bin = env!("CARGO_BIN_EXE_skyhouse");
    let ch_flags = [
        "--clickhouse-address".to_owned(),
        ch.http_url(),
        "--database".to_owned(),
        db.name().to_owned(),
    ];
    let out = Command::new(bin)
        .env_clear()
        .args(["migrate", "up"])
        .args(&ch_flags)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = std::env::temp_dir().join(format!("skyhouse-feedgen-appview-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let indexer = Command::new(bin)
        .env_clear()
        .env("RUST_LOG", "info")
        .args(["indexer", "--source", "firehose", "--cursor", "0"])
        .args(["--url", &network.firehose_url(None)])
        .args(["--metrics-addr", &format!("127.0.0.1:{}", spare_port())])
        .args(["--redis", &redis.url()])
        .args([
            "--redis-prefix",
            &redis.key_prefix("feedgen_appview_indexer"),
        ])
        .args(&ch_flags)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("indexer.log")).unwrap())
        .spawn()
        .unwrap();
    let _indexer = Running(indexer);

    // The generator's DID: a did:plc in the test PLC naming skyhouse's endpoint.
    let port = spare_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let fg_did = network.create_feedgen_did(&endpoint).await.unwrap();

    // Publish with an app password; a second run changes nothing.
    let app_password = pds
        .procedure(
            "com.atproto.server.createAppPassword",
            &serde_json::json!({"name": "skyhouse feeds"}),
            Auth::User(&publisher),
        )
        .await
        .unwrap()["password"]
        .as_str()
        .unwrap()
        .to_owned();
    std::fs::write(dir.join("avatar.png"), AVATAR).unwrap();
    let config = dir.join("feeds.json");
    let write_config = |description: &str| {
        std::fs::write(
            &config,
            serde_json::json!({"feeds": [{"rkey": "top-24h", "displayName": "Top today",
                                          "description": description, "avatar": "avatar.png"}]})
            .to_string(),
        )
        .unwrap()
    };
    write_config("The most liked posts of the day.");
    let flags: Vec<String> = [
        "--pds",
        network.pds_url(),
        "--handle",
        &publisher.handle,
        "--service-did",
        &fg_did,
        "--publisher-did",
        &publisher.did,
        "--feeds-config",
        config.to_str().unwrap(),
    ]
    .map(str::to_owned)
    .to_vec();
    let with_password = |mut f: Vec<String>, password: &str| {
        f.extend(["--app-password".to_owned(), password.to_owned()]);
        f
    };
    let uri = |rkey: &str| format!("at://{}/app.bsky.feed.generator/{rkey}", publisher.did);
    let lines = |rkeys: &[(&str, &str)]| -> Vec<String> {
        rkeys
            .iter()
            .map(|(outcome, rkey)| format!("{outcome} {}", uri(rkey)))
            .collect()
    };
    let (status, out, err) = publish("publish", &with_password(flags.clone(), &app_password));
    assert!(status.success(), "{err}");
    assert_eq!(
        out,
        lines(&[
            ("created", "top-1h"),
            ("created", "top-24h"),
            ("created", "whats-hot")
        ]),
        "{err}"
    );
    let (status, out, err) = publish("publish", &with_password(flags.clone(), &app_password));
    assert!(status.success(), "{err}");
    assert_eq!(
        out,
        lines(&[
            ("unchanged", "top-1h"),
            ("unchanged", "top-24h"),
            ("unchanged", "whats-hot")
        ])
    );
    write_config("The day's most liked posts.");
    let (status, out, err) = publish("publish", &with_password(flags.clone(), &app_password));
    assert!(status.success(), "{err}");
    assert_eq!(
        out,
        lines(&[
            ("unchanged", "top-1h"),
            ("updated", "top-24h"),
            ("unchanged", "whats-hot")
        ])
    );
    let records = pds
        .list_records(&publisher.did, "app.bsky.feed.generator")
        .await
        .unwrap();
    assert_eq!(records.len(), 3);
    let top = records.iter().find(|r| r.uri == uri("top-24h")).unwrap();
    assert_eq!(top.value["did"], fg_did.as_str());
    assert_eq!(top.value["displayName"], "Top today");
    assert_eq!(top.value["description"], "The day's most liked posts.");
    assert_eq!(top.value["avatar"]["mimeType"], "image/png");
    assert_eq!(top.value["avatar"]["size"], AVATAR.len());
    let hot = records.iter().find(|r| r.uri == uri("whats-hot")).unwrap();
    assert_eq!(hot.value["displayName"], "What's hot");
    // A wrong app password is a one-line error naming the flag, without the password.
    let (status, _, err) = publish(
        "publish",
        &with_password(flags.clone(), "wrong-pass-word-0000"),
    );
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("--handle") && !err.contains("wrong-pass-word-0000"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    // skyhouse serves the feeds as the generator DID, publisher = the publishing account.
    let metrics = spare_port();
    let child = Command::new(bin)
        .env_clear()
        .env("RUST_LOG", "info")
        .arg("feedgen")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--metrics-addr", &format!("127.0.0.1:{metrics}")])
        .args(["--public-url", &endpoint])
        .args(["--service-did", &fg_did])
        .args(["--publisher-did", &publisher.did])
        .args(["--feeds-config", config.to_str().unwrap()])
        .args(["--plc", network.plc_url()])
        .args(["--refresh-secs", "1", "--cache-ttl-secs", "1"])
        .args(["--redis", &redis.url()])
        .args(["--redis-prefix", &redis.key_prefix("feedgen_appview")])
        .args(&ch_flags)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("feedgen.log")).unwrap())
        .spawn()
        .unwrap();
    let mut running = Running(child);
    let logs = || {
        format!(
            "--- feedgen\n{}\n--- indexer\n{}",
            std::fs::read_to_string(dir.join("feedgen.log")).unwrap_or_default(),
            std::fs::read_to_string(dir.join("indexer.log")).unwrap_or_default()
        )
    };

    // The AppView: a viewer's service-auth token for the generator, passed on.
    network.process_all().await.unwrap();
    let viewer = &likers[0];
    // Service-auth tokens live a minute: a fresh one for each try.
    let token = || pds.service_auth(viewer, &fg_did, Some("app.bsky.feed.getFeedSkeleton"));
    let appview = network.appview();
    let want: Vec<&str> = expected.iter().map(|(u, _)| u.as_str()).collect();
    let start = Instant::now();
    let mut seen = Vec::new();
    let page = loop {
        assert!(
            running.0.try_wait().unwrap().is_none(),
            "feedgen exited:\n{}",
            logs()
        );
        let token = token().await.unwrap();
        let got = appview
            .get_feed(&uri("top-24h"), Some(10), None, Viewer::Bearer(&token))
            .await;
        match &got {
            Ok(page) => {
                let uris: Vec<&str> = page.feed.iter().map(|i| i.post.uri.as_str()).collect();
                if uris == want && page.feed.iter().all(|i| i.post.like_count > 0) {
                    break page.clone();
                }
            }
            Err(e) => {
                let e = e.to_string();
                if !seen.contains(&e) {
                    seen.push(e);
                }
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the AppView's getFeed never gave {want:?}: {got:?}\nerrors: {seen:#?}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    for (item, (uri, likes)) in page.feed.iter().zip(&expected) {
        assert_eq!(&item.post.uri, uri);
        assert_eq!(item.post.like_count as usize, *likes, "{uri}");
        assert_eq!(item.post.author.did, author.did);
    }
    // skyhouse checked the token: the viewer is known (auth failures stay 0).
    let (_, scrape) = get(&format!("http://127.0.0.1:{metrics}/metrics"))
        .await
        .unwrap();
    let failures: f64 = scrape
        .lines()
        .filter(|l| l.starts_with("skyhouse_feedgen_auth_failures_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert_eq!(failures, 0.0, "{scrape}");

    // Unpublish: the records go (twice: nothing left), and the AppView no longer has the feed.
    let (status, out, err) = publish("unpublish", &with_password(flags.clone(), &app_password));
    assert!(status.success(), "{err}");
    assert_eq!(
        out,
        lines(&[
            ("deleted", "top-1h"),
            ("deleted", "top-24h"),
            ("deleted", "whats-hot")
        ])
    );
    let (status, out, err) = publish("unpublish", &with_password(flags, &app_password));
    assert!(status.success(), "{err}");
    assert_eq!(
        out,
        lines(&[
            ("absent", "top-1h"),
            ("absent", "top-24h"),
            ("absent", "whats-hot")
        ])
    );
    assert!(pds
        .list_records(&publisher.did, "app.bsky.feed.generator")
        .await
        .unwrap()
        .is_empty());
    network.process_all().await.unwrap();
    let token = token().await.unwrap();
    let gone = appview
        .get_feed(&uri("top-24h"), Some(10), None, Viewer::Bearer(&token))
        .await;
    assert!(gone.is_err(), "{gone:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
