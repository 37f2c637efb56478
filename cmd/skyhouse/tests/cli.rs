//! The `skyhouse repo` commands, run as a user would: the real binary on the
//! real fixture CARs in pkg/atproto/testdata.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn testdata(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../pkg/atproto/testdata")
        .join(rel)
}

fn skyhouse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .args(args)
        .output()
        .expect("run skyhouse")
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf8")
}

fn stderr(o: &Output) -> String {
    String::from_utf8(o.stderr.clone()).expect("utf8")
}

/// `(car, expected listing)` pairs: every repository CAR in testdata and the
/// listing an independent implementation made (testdata/expected/cars.tsv).
fn repo_cars() -> Vec<(String, String)> {
    skyhouse_testkit::repo_cars(&testdata(""))
}

#[test]
fn repo_ls_matches_expected_listing_for_every_fixture_car() {
    let mut total = 0;
    for (car, expected) in repo_cars() {
        let out = skyhouse(&["repo", "ls", testdata(&car).to_str().expect("path")]);
        assert!(out.status.success(), "{car}: {}", stderr(&out));
        let got: Vec<String> = stdout(&out)
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                assert!(v["record"].is_object(), "{car}: record is an object");
                let keys: Vec<&str> = v
                    .as_object()
                    .expect("obj")
                    .keys()
                    .map(String::as_str)
                    .collect();
                assert_eq!(keys.len(), 4, "{car}: {keys:?}");
                format!(
                    "{}/{}\t{}",
                    v["collection"].as_str().expect("c"),
                    v["rkey"].as_str().expect("r"),
                    v["cid"].as_str().expect("cid")
                )
            })
            .collect();
        let want: Vec<String> = std::fs::read_to_string(testdata(&expected))
            .expect("expected")
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect();
        assert_eq!(got, want, "{car}");
        total += got.len();
    }
    assert!(total > 500);
}

#[test]
fn repo_ls_reads_stdin_and_prints_lex_json() {
    let car = std::fs::read(testdata("jetstream/repo.car")).expect("car");
    let mut child = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .args(["repo", "ls", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), &car).expect("write");
    let out = child.wait_with_output().expect("wait");
    assert!(out.status.success());
    let first: serde_json::Value =
        serde_json::from_str(stdout(&out).lines().next().expect("line")).expect("json");
    assert_eq!(first["collection"], "app.bsky.actor.profile");
    assert_eq!(first["rkey"], "self");
    // Blob references come out in lex-JSON, links as {"$link"}.
    let text = stdout(&out);
    assert!(text.contains("\"$link\":\"baf"), "links are lex-JSON");
}

#[test]
fn repo_ls_errors_are_one_line_and_name_the_problem() {
    let dir = std::env::temp_dir().join(format!("skyhouse-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let car = std::fs::read(testdata("rsky/valid_repo.car")).expect("car");
    // truncated
    let truncated = dir.join("truncated.car");
    std::fs::write(&truncated, &car[..car.len() - 10]).expect("write");
    let out = skyhouse(&["repo", "ls", truncated.to_str().expect("p")]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(
        err.contains("truncated.car") && err.contains("byte"),
        "{err}"
    );
    // corrupt
    let mut bad = car.clone();
    let n = bad.len();
    bad[n - 3] ^= 1;
    let corrupt = dir.join("corrupt.car");
    std::fs::write(&corrupt, &bad).expect("write");
    let err = stderr(&skyhouse(&["repo", "ls", corrupt.to_str().expect("p")]));
    assert!(
        err.contains("does not match its CID") && err.contains("bafyrei"),
        "{err}"
    );
    // oversized
    let big = skyhouse(&[
        "repo",
        "ls",
        "--max-size",
        "1000",
        testdata("repo-stream/little.car").to_str().expect("p"),
    ]);
    assert!(stderr(&big).contains("size cap"), "{}", stderr(&big));
    // missing file
    let err = stderr(&skyhouse(&["repo", "ls", "/nonexistent/x.car"]));
    assert!(err.contains("/nonexistent/x.car"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn repo_verify_accepts_signed_repos() {
    // A real v2 repo with its (legacy EcdsaSecp256k1VerificationKey2019) DID document.
    let out = skyhouse(&[
        "repo",
        "verify",
        testdata("indigo/paul_staging.repo.car")
            .to_str()
            .expect("p"),
        "--did-doc",
        testdata("indigo/paul_staging.didDoc.json")
            .to_str()
            .expect("p"),
    ]);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert!(
        stdout(&out).starts_with("ok: ") && stdout(&out).contains("185 records"),
        "{}",
        stdout(&out)
    );
    // v3 repos signed by @atproto/repo with secp256k1 and P-256 (testdata/generated/README.md).
    for (car, key) in [
        (
            "generated/k256-300.car",
            "did:key:zQ3shUtTGhVZ99oPVEpNi676ngVPXVDf88XVq6oyqHgqsnH9B",
        ),
        (
            "generated/p256-300.car",
            "did:key:zDnaey71G7Y8aEhQ2W6a4tGzB4S66UW9jdLn2nrPj1YNqLvY1",
        ),
    ] {
        let out = skyhouse(&[
            "repo",
            "verify",
            testdata(car).to_str().expect("p"),
            "--key",
            key,
        ]);
        assert!(
            out.status.success(),
            "{car}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        assert!(stdout(&out).contains("300 records"), "{}", stdout(&out));
    }
}

#[test]
fn repo_verify_rejects_a_high_s_signature() {
    // fakermaker is a real 2023 repo whose P-256 commit signature has a high S:
    // valid ECDSA, but atproto requires low-S, so it must be refused.
    let out = skyhouse(&[
        "repo",
        "verify",
        testdata("indigo/fakermaker.repo.car").to_str().expect("p"),
        "--did-doc",
        testdata("indigo/fakermaker.didDoc.json")
            .to_str()
            .expect("p"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("high S"), "{}", stdout(&out));
}

#[test]
fn repo_verify_rejects_the_wrong_key_with_exit_1() {
    let car = testdata("generated/k256-300.car");
    // Another account's DID document: the DID check fires first.
    let out = skyhouse(&[
        "repo",
        "verify",
        car.to_str().expect("p"),
        "--did-doc",
        testdata("indigo/paul_staging.didDoc.json")
            .to_str()
            .expect("p"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("invalid: "), "{}", stdout(&out));
    assert_eq!(stdout(&out).lines().count(), 1);
    // A valid did:key that is not the signer.
    let other = "did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc";
    let out = skyhouse(&["repo", "verify", car.to_str().expect("p"), "--key", other]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("signature"), "{}", stdout(&out));
    // A malformed key is a flag error naming the flag.
    let out = skyhouse(&[
        "repo",
        "verify",
        car.to_str().expect("p"),
        "--key",
        "did:key:nope",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--key"), "{}", stderr(&out));
}

#[test]
fn backfill_bad_flags_are_one_line_errors_naming_the_flag() {
    for (args, flag) in [
        (&["backfill", "enqueue"][..], "--hosts-from"),
        (
            &["backfill", "enqueue", "--hosts-from", "ftp://relay.example"][..],
            "--hosts-from",
        ),
        (
            &[
                "backfill",
                "enqueue",
                "--hosts-from",
                "https://r.example",
                "--max-hosts",
                "0",
            ][..],
            "--max-hosts",
        ),
        (&["backfill", "work", "--per-host", "0"][..], "--per-host"),
        (
            &["backfill", "work", "--did-cache-secs", "90000"][..],
            "--did-cache-secs",
        ),
        (
            &["backfill", "work", "--batch-rows", "0"][..],
            "--batch-rows",
        ),
        (
            &["backfill", "work", "--progress", "sometimes"][..],
            "--progress",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
            .env_clear()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run skyhouse");
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(err.contains(flag), "{args:?}: {err}");
        if flag != "--progress" {
            // clap's own usage errors span lines; ours are one line.
            assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
        }
    }
}

/// Every long-running service takes `--shutdown-grace-secs` (1 to 3600) and names
/// the flag when the value is out of range, before any I/O.
#[test]
fn every_service_refuses_a_shutdown_grace_out_of_range_naming_the_flag() {
    for service in [
        &["indexer"][..],
        &["backfill", "work"],
        &["search"],
        &["feedgen", "--public-url", "https://feeds.example.com"],
        &["relay"],
        &["monitor", "--host", "https://pds.example.com"],
    ] {
        for bad in ["0", "3601", "soon"] {
            let mut args = service.to_vec();
            args.extend(["--shutdown-grace-secs", bad]);
            let out = skyhouse(&args);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
            let err = stderr(&out);
            assert!(err.contains("--shutdown-grace-secs"), "{args:?}: {err}");
        }
        // The variable is read the same way.
        let out = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
            .env_clear()
            .env("SKYHOUSE_SHUTDOWN_GRACE_SECS", "0")
            .args(service)
            .stdin(Stdio::null())
            .output()
            .expect("run skyhouse");
        assert_eq!(out.status.code(), Some(2), "{service:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("--shutdown-grace-secs"),
            "{service:?}"
        );
    }
}

/// A port nothing listens on (bound a moment ago, released).
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("spare port")
        .port()
}

/// `skyhouse` with an empty environment and no standard input.
fn clean(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .env_clear()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run skyhouse")
}

/// The README's exit statuses, across subcommands: 2 when the command line is wrong (a bad
/// flag value, a file it names missing), 1 when a check fails or a server does not answer.
/// Every case fails before or at its first connection: no server is needed.
#[test]
fn exit_status_is_2_for_the_command_line_and_1_for_a_failed_check() {
    let closed = |scheme: &str| format!("{scheme}://127.0.0.1:{}", closed_port());
    let (ch, redis) = (closed("http"), closed("redis"));
    let car = testdata("generated/k256-300.car");
    let car = car.to_str().expect("path");
    let other_key = "did:key:zQ3shqwJEJyMBsBXCWyCBpUBMqxcon9oHB7mCvx4sSpMdLJwc";
    let missing = "/nonexistent/skyhouse-input";
    let cases: &[(&[&str], i32, &str)] = &[
        // Flag values clap refuses.
        (&["indexer", "--batch-rows", "many"], 2, "--batch-rows"),
        (&["monitor", "--listen", "nowhere"], 2, "--listen"),
        (&["migrate", "down", "--all", "2"], 2, "--all"),
        // Flag values skyhouse refuses.
        (
            &["indexer", "--collections", "not an nsid"],
            2,
            "--collections",
        ),
        (&["backfill", "work", "--per-host", "0"], 2, "--per-host"),
        (&["backfill", "enqueue", "--did", "did:nope"], 2, "--did"),
        (&["backfill", "status", "--redis", "http://r"], 2, "--redis"),
        (&["cursor", "get", "--url", "ftp://x"], 2, "--url"),
        (&["search", "--sql-max-rows", "0"], 2, "--sql-max-rows"),
        (
            &["feedgen", "--public-url", "https://x.example/p"],
            2,
            "--public-url",
        ),
        (&["relay", "--retain-ops", "0"], 2, "--retain-ops"),
        (&["monitor", "--host", "ftp://pds.example"], 2, "--host"),
        (
            &["migrate", "up", "--clickhouse-address", "ftp://ch"],
            2,
            "--clickhouse-address",
        ),
        (
            &["repo", "verify", car, "--key", "did:key:nope"],
            2,
            "--key",
        ),
        (
            &["--otel-endpoint", "ftp://otel", "repo", "ls", car],
            2,
            "--otel-endpoint",
        ),
        // Files the command line names that are not there.
        (&["repo", "ls", missing], 2, missing),
        (&["repo", "verify", missing, "--key", other_key], 2, missing),
        (
            &["repo", "verify", car, "--did-doc", missing],
            2,
            "--did-doc",
        ),
        (&["backfill", "enqueue", "--dids", missing], 2, "--dids"),
        (&["monitor", "--hosts-file", missing], 2, "--hosts-file"),
        (
            &[
                "feedgen",
                "--public-url",
                "https://f.example",
                "--feeds-config",
                missing,
            ],
            2,
            "--feeds-config",
        ),
        (&["migrate", "up", "--dir", missing], 2, "--dir"),
        // Failed checks and servers that do not answer.
        (&["repo", "verify", car, "--key", other_key], 1, "invalid: "),
        (
            &[
                "monitor",
                "--once",
                "--host",
                &closed("http"),
                "--clickhouse-address",
                &ch,
            ],
            1,
            "\"down\"",
        ),
        (
            &["migrate", "version", "--clickhouse-address", &ch],
            1,
            "does not answer (--clickhouse-address",
        ),
        (
            &[
                "backfill",
                "status",
                "--clickhouse-address",
                &ch,
                "--redis",
                &redis,
            ],
            1,
            "does not answer (--redis",
        ),
        (
            &["cursor", "get", "--redis", &redis],
            1,
            "does not answer (--redis",
        ),
        (
            &[
                "backfill",
                "enqueue",
                "--did",
                "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa",
                "--redis",
                &redis,
            ],
            1,
            "does not answer (--redis",
        ),
    ];
    for (args, code, says) in cases {
        let out = clean(args);
        let all = format!("{}{}", stdout(&out), stderr(&out));
        assert_eq!(out.status.code(), Some(*code), "{args:?}: {all}");
        assert!(all.contains(says), "{args:?}: expected {says:?} in {all}");
        if *code == 2 && stderr(&out).starts_with("skyhouse: ") {
            // skyhouse's own usage errors are one line (clap's carry a hint).
            assert_eq!(
                stderr(&out).trim_end().lines().count(),
                1,
                "{args:?}: {all}"
            );
        }
    }
}

/// Every long-running service takes `--metrics-addr`, and those with an address of their
/// own take `--listen`; none still shows the monitor's old `--addr`.
#[test]
fn every_service_listens_with_listen_and_metrics_addr() {
    for (service, listen) in [
        (&["indexer"][..], false),
        (&["backfill", "work"], false),
        (&["search"], true),
        (&["feedgen"], true),
        (&["relay"], true),
        (&["monitor"], true),
    ] {
        let mut args = service.to_vec();
        args.push("--help");
        let help = stdout(&clean(&args));
        assert!(help.contains("--metrics-addr <"), "{service:?}: {help}");
        assert_eq!(help.contains("--listen <"), listen, "{service:?}: {help}");
        assert!(!help.contains("--addr"), "{service:?}: {help}");
    }
    // The monitor's old flag still works, as a hidden alias of --listen.
    let out = clean(&["monitor", "--addr", "nowhere"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--listen"), "{}", stderr(&out));
}

/// `--help` of each subcommand: its own flags first (under "Options"), then the shared
/// ClickHouse and Redis groups, then the global flags under their own heading.
#[test]
fn help_shows_a_subcommands_own_flags_first_and_the_global_ones_apart() {
    const GLOBAL: [&str; 3] = ["--log-format", "--otel-endpoint", "--otel-service-name"];
    for sub in [
        &["indexer"][..],
        &["backfill", "enqueue"],
        &["backfill", "work"],
        &["backfill", "status"],
        &["search"],
        &["feedgen"],
        &["relay"],
        &["monitor"],
        &["migrate", "up"],
        &["migrate", "down"],
        &["cursor", "get"],
        &["repo", "ls"],
    ] {
        let mut args = sub.to_vec();
        args.push("--help");
        let help = stdout(&clean(&args));
        // Section headings in order, with the flags under each.
        let mut sections: Vec<(String, Vec<String>)> = Vec::new();
        for line in help.lines() {
            if !line.starts_with(' ') && line.ends_with(':') && !line.starts_with("Usage") {
                sections.push((line.trim_end_matches(':').to_owned(), Vec::new()));
            } else if let (Some((_, flags)), Some(flag)) = (
                sections.last_mut(),
                line.split_whitespace()
                    .find(|w| w.starts_with("--"))
                    .filter(|_| line.trim_start().starts_with('-')),
            ) {
                flags.push(flag.trim_end_matches(',').to_owned());
            }
        }
        // Positional arguments and subcommands come first under their own headings.
        sections.retain(|(n, _)| n != "Arguments" && n != "Commands");
        let names: Vec<&str> = sections.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names.first(), Some(&"Options"), "{sub:?}: {help}");
        assert_eq!(names.last(), Some(&"Global options"), "{sub:?}: {help}");
        for (name, flags) in &sections {
            for flag in flags {
                let global = GLOBAL.contains(&flag.as_str());
                assert_eq!(
                    global,
                    name == "Global options",
                    "{sub:?}: {flag} under {name}"
                );
                if flag.starts_with("--clickhouse") || flag == "--database" {
                    assert_eq!(name, "ClickHouse options", "{sub:?}: {flag}");
                }
                if flag.starts_with("--redis") {
                    assert_eq!(name, "Redis options", "{sub:?}: {flag}");
                }
            }
        }
        let own = &sections[0].1;
        assert!(
            own.iter().any(|f| f != "--help" && f != "--version") || *sub == ["backfill", "status"],
            "{sub:?}: no flag of its own first: {help}"
        );
    }
}

/// Started while Redis is down, the indexer says that it waits for Redis (it must read the
/// saved cursor before indexing), and a SIGTERM still stops it cleanly.
#[test]
fn the_indexer_says_it_is_waiting_for_redis() {
    let log = std::env::temp_dir().join(format!(
        "skyhouse-cli-redis-wait-{}.log",
        std::process::id()
    ));
    let mut child = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .env_clear()
        .env("RUST_LOG", "info")
        .args([
            "indexer",
            "--url",
            &format!("ws://127.0.0.1:{}/subscribe", closed_port()),
            "--redis",
            &format!("redis://127.0.0.1:{}", closed_port()),
            "--clickhouse-address",
            &format!("http://127.0.0.1:{}", closed_port()),
            "--metrics-addr",
            &format!("127.0.0.1:{}", closed_port()),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log"))
        .spawn()
        .expect("start the indexer");
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    while !read().contains("Waiting for Redis") {
        if std::time::Instant::now() > deadline || child.try_wait().expect("wait").is_some() {
            let _ = child.kill();
            panic!("no \"Waiting for Redis\" line:\n{}", read());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(read().contains("Connecting to Redis."), "{}", read());
    assert!(!read().contains("Indexer starting"), "{}", read());
    let kill = Command::new("sh")
        .args(["-c", "kill -TERM \"$0\"", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no exit after SIGTERM:\n{}",
            read()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status}:\n{}", read());
    std::fs::remove_file(&log).ok();
}

/// `backfill status` on a database that does not exist says so (and how to create it),
/// against real servers.
#[test]
fn backfill_status_names_a_missing_database() {
    let ch = skyhouse_testkit::ClickHouse::shared();
    let redis = skyhouse_testkit::Redis::shared();
    let name = format!("cli_missing_{}", std::process::id());
    let out = clean(&[
        "backfill",
        "status",
        "--clickhouse-address",
        &ch.http_url(),
        "--database",
        &name,
        "--redis",
        &redis.url(),
        "--redis-prefix",
        &redis.key_prefix("cli_missing"),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("database \"{name}\" does not exist"))
            && err.contains("skyhouse migrate up"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
