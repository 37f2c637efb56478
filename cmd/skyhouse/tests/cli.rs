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
