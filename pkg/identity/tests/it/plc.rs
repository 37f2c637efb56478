//! did:plc through the real PLC directory of the test network.

use std::net::{Ipv4Addr, TcpListener};

use skyhouse_atproto::car::CarOptions;
use skyhouse_atproto::repo::Repo;
use skyhouse_identity::{ResolveError, Resolver, ResolverConfig};
use skyhouse_testkit::{now_rfc3339, Network, Pds};

fn resolver(network: &Network) -> Resolver {
    Resolver::new(ResolverConfig {
        plc_url: network.plc_url().to_string(),
        ..ResolverConfig::default()
    })
    .expect("valid config")
}

/// A handle unique to this test run (the network is shared by the binary).
fn handle(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{name}{:06}.test", nanos % 1_000_000)
}

#[tokio::test]
async fn a_plc_document_names_the_pds_and_the_key_that_signs_its_commits() {
    let network = Network::shared();
    let pds: Pds = network.pds();
    let account = pds.create_account(&handle("key")).await.expect("account");
    pds.create_record(
        &account,
        "app.bsky.feed.post",
        serde_json::json!({ "$type": "app.bsky.feed.post", "text": "signed", "createdAt": now_rfc3339() }),
    )
    .await
    .expect("post");

    let resolver = resolver(network);
    let doc = resolver.resolve(&account.did).await.expect("resolves");
    assert_eq!(doc.id, account.did);
    assert_eq!(doc.handle(), Some(account.handle.as_str()));
    assert_eq!(
        resolver.pds_endpoint(&account.did).await.expect("pds"),
        network.info().pds_public_url
    );

    // The key from the directory verifies the repository's signed commit.
    let key = resolver
        .signing_key(&account.did)
        .await
        .expect("signing key");
    let car = pds.get_repo(&account.did).await.expect("getRepo");
    let repo = Repo::from_bytes(&car, CarOptions::default()).expect("repo CAR");
    repo.commit
        .verify(&key)
        .expect("commit signature verifies with the resolved key");
}

#[tokio::test]
async fn invalidate_makes_the_next_resolve_see_a_handle_change() {
    let network = Network::shared();
    let pds = network.pds();
    let mut account = pds.create_account(&handle("move")).await.expect("account");
    let old = account.handle.clone();
    let resolver = resolver(network);
    assert_eq!(
        resolver
            .resolve(&account.did)
            .await
            .expect("resolves")
            .handle(),
        Some(old.as_str())
    );

    let new = handle("moved");
    pds.update_handle(&mut account, &new)
        .await
        .expect("handle change");
    // Cached: still the old document.
    assert_eq!(
        resolver
            .resolve(&account.did)
            .await
            .expect("cached")
            .handle(),
        Some(old.as_str())
    );
    resolver.invalidate(&account.did);
    assert_eq!(
        resolver
            .resolve(&account.did)
            .await
            .expect("fresh")
            .handle(),
        Some(new.as_str())
    );
    assert_eq!(resolver.cached_len(), 1);
}

#[tokio::test]
async fn an_unknown_plc_did_is_not_found() {
    let network = Network::shared();
    let resolver = resolver(network);
    let did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    let err = resolver.resolve(did).await.expect_err("not registered");
    assert!(
        matches!(err, ResolveError::NotFound { status: 404, .. }),
        "{err:?}"
    );
    assert!(!err.is_retriable());
    let message = err.to_string();
    assert!(
        message.starts_with(did) && !message.contains('\n'),
        "{message}"
    );
}

#[tokio::test]
async fn an_unreachable_directory_is_a_retriable_error() {
    // A port that was free a moment ago: nothing listens on it.
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("spare port")
        .port();
    let resolver = Resolver::new(ResolverConfig {
        plc_url: format!("http://127.0.0.1:{port}"),
        ..ResolverConfig::default()
    })
    .expect("valid config");
    let did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa";
    let err = resolver.resolve(did).await.expect_err("nothing listens");
    assert!(matches!(err, ResolveError::Transport { .. }), "{err:?}");
    assert!(err.is_retriable());
    assert!(err.to_string().starts_with(did), "{err}");
    assert_eq!(resolver.cached_len(), 0, "transport errors are not cached");
}
