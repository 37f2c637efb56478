//! Tokens and TLS on the real binary: each refusal with its code, revocation
//! ending a live stream, tokens never in the log, `--insecure-no-auth` only on
//! loopback, TLS with and without client certificates.

use std::time::Duration;

use skyhouse_relay::pb::{Action, Operation, OperationBatch, StreamRequest};
use skyhouse_relay::tonic::Code;
use skyhouse_relay::ClientConfig;

use crate::*;

fn op(rkey: &str) -> Operation {
    Operation {
        did: "did:plc:authtest".into(),
        collection: "app.bsky.feed.like".into(),
        rkey: rkey.into(),
        record_json: "{}".into(),
        action: Action::Create as i32,
        ..Default::default()
    }
}

fn refused<T>(r: Result<T, skyhouse_relay::tonic::Status>) -> skyhouse_relay::tonic::Status {
    match r {
        Ok(_) => panic!("not refused"),
        Err(s) => s,
    }
}

fn token_id(tokens: &Path, name: &str) -> String {
    let (ok, out, err) = skyhouse(&[
        "relay",
        "token",
        "list",
        "--tokens-file",
        tokens.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    out.lines()
        .find(|l| l.split_whitespace().nth(1) == Some(name))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("{name} not listed:\n{out}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_its_code_revocation_ends_streams_and_no_token_is_logged() {
    let dir = scratch("auth");
    let tokens = dir.join("tokens.json");
    let sub = create_token(&tokens, "reader", "subscribe");
    let publ = create_token(&tokens, "writer", "publish");
    let both = create_token(&tokens, "both", "subscribe,publish");
    // trace: the most the relay (and its HTTP/2 stack) can log.
    let mut relay =
        Relay::start_with_log(&dir, &["--tokens-file", tokens.to_str().unwrap()], "trace");

    // HealthCheck needs no token.
    let mut anonymous = relay.client(None).await;
    let e = refused(anonymous.stream_operations(StreamRequest::default()).await);
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.message().contains("authorization: Bearer"), "{e}");
    let e = refused(anonymous.ingest(op("a")).await);
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    let e = refused(
        anonymous
            .ingest_stream(futures_util::stream::iter(vec![OperationBatch {
                operations: vec![op("a")],
                ..OperationBatch::default()
            }]))
            .await,
    );
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    let forged = "shr_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut wrong = relay.client(Some(forged)).await;
    let e = refused(wrong.stream_operations(StreamRequest::default()).await);
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    assert!(e.message().contains("unknown or revoked"), "{e}");

    // Each scope opens its own methods only.
    let mut reader = relay.client(Some(&sub)).await;
    let e = refused(reader.ingest(op("a")).await);
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("publish"), "{e}");
    let mut writer = relay.client(Some(&publ)).await;
    let e = refused(writer.stream_operations(StreamRequest::default()).await);
    assert_eq!(e.code(), Code::PermissionDenied, "{e}");
    assert!(e.message().contains("subscribe"), "{e}");

    // Allowed: the reader sees what the writer publishes.
    let newest = reader
        .health_check(skyhouse_relay::pb::HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner()
        .newest_cursor;
    let mut stream = reader
        .stream_operations(StreamRequest {
            cursor: Some(newest),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let reply = writer.ingest(op("first")).await.unwrap().into_inner();
    assert_eq!(reply.accepted, 1);
    let got = stream.message().await.unwrap().unwrap();
    assert_eq!(got.operations[0].rkey, "first");
    let mut both_client = relay.client(Some(&both)).await;
    both_client.ingest(op("second")).await.unwrap();
    let mut both_stream = both_client
        .stream_operations(StreamRequest::default())
        .await
        .unwrap()
        .into_inner();

    // Revoked while streaming: the stream ends with UNAUTHENTICATED (the relay
    // re-reads the file within seconds), new calls are refused, other tokens
    // go on.
    let (ok, _, err) = skyhouse(&[
        "relay",
        "token",
        "revoke",
        "--tokens-file",
        tokens.to_str().unwrap(),
        &token_id(&tokens, "reader"),
    ]);
    assert!(ok, "{err}");
    let ended = loop {
        match tokio::time::timeout(DEADLINE, stream.message()).await {
            Ok(Ok(Some(_))) => continue,
            Ok(Ok(None)) => panic!("the stream ended without a status"),
            Ok(Err(s)) => break s,
            Err(_) => panic!("the revoked token's stream was not ended:\n{}", relay.log()),
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended}");
    assert!(ended.message().contains("revoked"), "{ended}");
    let e = refused(reader.stream_operations(StreamRequest::default()).await);
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");
    writer.ingest(op("third")).await.unwrap();
    let mut seen = Vec::new();
    while !seen.contains(&"third".to_owned()) {
        let b = tokio::time::timeout(DEADLINE, both_stream.message())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.extend(b.operations.into_iter().map(|o| o.rkey));
    }

    let scrape = relay.scrape().await;
    for line in [
        "skyhouse_relay_auth_refused_total{reason=\"missing\"} 3",
        "skyhouse_relay_auth_refused_total{reason=\"scope\"} 2",
        "skyhouse_relay_disconnects_total{reason=\"revoked\"} 1",
    ] {
        assert!(scrape.contains(line), "{line} not in\n{scrape}");
    }
    // 1 forged + 1 revoked, at least (clients may retry nothing else).
    assert!(
        scrape.contains("skyhouse_relay_auth_refused_total{reason=\"invalid\"} 2"),
        "{scrape}"
    );

    // Nothing of a token in the log, at trace level: not the tokens, not their hashes.
    relay.kill9();
    let log = relay.log();
    assert!(
        log.contains("Relay serving gRPC; calls need a token"),
        "{log}"
    );
    assert!(
        log.len() > 10_000,
        "trace logging was on: {} bytes",
        log.len()
    );
    for secret in [&sub, &publ, &both, &forged.to_owned()] {
        assert!(!log.contains(secret.as_str()), "a token is in the log");
        let b64 = &secret[4..];
        assert!(!log.contains(b64), "a token's secret part is in the log");
        assert!(
            !log.contains(&skyhouse_relay::auth::token_hash(secret)),
            "a token's hash is in the log"
        );
    }
}

#[test]
fn token_commands_list_revoke_and_refuse_bad_input_clearly() {
    let dir = scratch("token-cli");
    let tokens = dir.join("tokens.json");
    let file = tokens.to_str().unwrap();
    let token = create_token(&tokens, "ingester-a", "subscribe");
    let (ok, out, _) = skyhouse(&["relay", "token", "list", "--tokens-file", file]);
    assert!(ok);
    assert!(
        out.contains("ingester-a") && out.contains("subscribe"),
        "{out}"
    );
    assert!(!out.contains(&token), "list never shows a token");
    let stored = std::fs::read_to_string(&tokens).unwrap();
    assert!(!stored.contains(&token) && stored.contains(&skyhouse_relay::auth::token_hash(&token)));

    let (ok, _, err) = skyhouse(&[
        "relay",
        "token",
        "create",
        "--tokens-file",
        file,
        "--name",
        "x",
        "--scope",
        "admin",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--scope") && err.contains("\"admin\""),
        "{err}"
    );
    let (ok, _, err) = skyhouse(&[
        "relay",
        "token",
        "create",
        "--tokens-file",
        file,
        "--name",
        "a b",
        "--scope",
        "publish",
    ]);
    assert!(!ok);
    assert!(err.contains("token name \"a b\""), "{err}");
    let (ok, _, err) = skyhouse(&[
        "relay",
        "token",
        "revoke",
        "--tokens-file",
        file,
        "0123456789abcdef",
    ]);
    assert!(!ok);
    assert!(
        err.contains("no token with id \"0123456789abcdef\""),
        "{err}"
    );
    let id = token_id(&tokens, "ingester-a");
    let (ok, _, err) = skyhouse(&["relay", "token", "revoke", "--tokens-file", file, &id]);
    assert!(ok, "{err}");
    let (_, out, _) = skyhouse(&["relay", "token", "list", "--tokens-file", file]);
    let line = out.lines().find(|l| l.contains("ingester-a")).unwrap();
    assert!(
        !line.trim_end().ends_with('-'),
        "revoked time shown: {line}"
    );

    std::fs::write(&tokens, "{oops").unwrap();
    let (ok, _, err) = skyhouse(&["relay", "--tokens-file", file, "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(
        err.contains("--tokens-file") && err.contains("not a relay tokens file"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tokens_the_relay_serves_only_on_loopback_and_says_so() {
    let (ok, _, err) = skyhouse(&["relay", "--listen", "127.0.0.1:0"]);
    assert!(!ok);
    assert!(
        err.contains("--tokens-file (RELAY_TOKENS_FILE) is required"),
        "{err}"
    );
    let (ok, _, err) = skyhouse(&["relay", "--insecure-no-auth", "--listen", "0.0.0.0:0"]);
    assert!(!ok);
    assert!(err.contains("loopback"), "{err}");

    let dir = scratch("insecure");
    let mut relay = Relay::start(&dir, &["--insecure-no-auth"]);
    let mut c = relay.client(None).await;
    c.ingest(op("a")).await.unwrap();
    c.stream_operations(StreamRequest::default()).await.unwrap();
    assert!(
        relay.log().contains("WITHOUT AUTHENTICATION"),
        "{}",
        relay.log()
    );
}

struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |names: Vec<String>| {
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(names)
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca_cert.pem(),
        server: leaf(vec!["localhost".into()]),
        client: leaf(vec!["ingester.test".into()]),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_required_client_certificates_and_a_token() {
    let dir = scratch("tls");
    let pki = pki();
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (ca, cert, key) = (
        write("ca.pem", &pki.ca),
        write("server.pem", &pki.server.0),
        write("server.key", &pki.server.1),
    );
    let tokens = dir.join("tokens.json");
    let token = create_token(&tokens, "tls", "subscribe,publish");

    // A key that does not go with the certificate is a clear error at start.
    let wrong_key = write("other.key", &pki.client.1);
    let (ok, _, err) = skyhouse(&[
        "relay",
        "--listen",
        "127.0.0.1:0",
        "--tokens-file",
        tokens.to_str().unwrap(),
        "--tls-cert",
        &cert,
        "--tls-key",
        &wrong_key,
    ]);
    assert!(!ok);
    assert!(
        err.contains("--tls-key") && err.contains("does not go with the certificate"),
        "{err}"
    );

    let mut relay = Relay::start(
        &dir,
        &[
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--tls-cert",
            &cert,
            "--tls-key",
            &key,
            "--tls-client-ca",
            &ca,
        ],
    );
    let url = format!("https://localhost:{}", relay.grpc);
    let with_cert = ClientConfig {
        url: url.clone(),
        token: Some(token.clone()),
        ca_pem: Some(pki.ca.clone().into_bytes()),
        identity_pem: Some((
            pki.client.0.clone().into_bytes(),
            pki.client.1.clone().into_bytes(),
        )),
    };
    let mut c = relay.client_with(with_cert.clone()).await;
    let reply = c.ingest(op("over-tls")).await.unwrap().into_inner();
    assert_eq!(reply.accepted, 1);

    // No client certificate: the handshake fails.
    let no_cert = ClientConfig {
        identity_pem: None,
        ..with_cert.clone()
    };
    let failed = match no_cert.connect().await {
        Err(_) => true,
        Ok(mut c) => c
            .health_check(skyhouse_relay::pb::HealthCheckRequest {})
            .await
            .is_err(),
    };
    assert!(failed, "a client without a certificate was served");
    // Plain HTTP/2 to a TLS port: refused.
    let plain = ClientConfig::new(relay.url(), Some(token.clone()));
    let failed = match tokio::time::timeout(Duration::from_secs(30), plain.connect()).await {
        Ok(Err(_)) | Err(_) => true,
        Ok(Ok(mut c)) => c
            .health_check(skyhouse_relay::pb::HealthCheckRequest {})
            .await
            .is_err(),
    };
    assert!(failed, "plain HTTP/2 was served on the TLS port");
    // TLS and a certificate but no token: still UNAUTHENTICATED.
    let mut no_token = ClientConfig {
        token: None,
        ..with_cert
    }
    .connect()
    .await
    .unwrap();
    let e = no_token.ingest(op("x")).await.expect_err("no token");
    assert_eq!(e.code(), Code::Unauthenticated);
}
