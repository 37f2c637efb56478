//! Handles, both directions: the DNS client against a real nameserver on
//! loopback (skyhouse-testkit's), and DID documents of the reference PDS
//! whose handles are checked through DNS and through the PDS's own
//! `/.well-known/atproto-did`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use skyhouse_identity::dns::{DnsError, TxtAnswer, TxtClient};
use skyhouse_identity::{
    HandleAnswer, HandleConfig, HandleStatus, Resolver, ResolverConfig, Via, INVALID_HANDLE,
};
use skyhouse_testkit::dns::{DnsMode, DnsServer};
use skyhouse_testkit::Network;

fn client(servers: Vec<SocketAddr>) -> TxtClient {
    TxtClient::new(servers, Duration::from_millis(300), 1)
}

/// A name unique to this test run.
fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{name}{:06}", nanos % 1_000_000)
}

#[tokio::test]
async fn the_dns_client_reads_records_nxdomain_truncation_and_failures() {
    let dns = DnsServer::start();
    let c = client(vec![dns.addr()]);
    dns.set_txt("_atproto.a.example.com", &["did=did:plc:a", "v=spf1 -all"]);
    assert_eq!(
        c.txt("_atproto.A.Example.com").await,
        Ok(TxtAnswer::Records(vec![
            b"did=did:plc:a".to_vec(),
            b"v=spf1 -all".to_vec()
        ]))
    );
    assert_eq!(
        c.txt("_atproto.nobody.example.com").await,
        Ok(TxtAnswer::NxDomain)
    );
    dns.set_txt("_atproto.empty.example.com", &[]);
    assert_eq!(
        c.txt("_atproto.empty.example.com").await,
        Ok(TxtAnswer::Records(Vec::new()))
    );
    // A record longer than one character-string (255 bytes) comes back joined.
    let long = format!("did={}", "x".repeat(600));
    dns.set_txt("_atproto.long.example.com", &[&long]);
    assert_eq!(
        c.txt("_atproto.long.example.com").await,
        Ok(TxtAnswer::Records(vec![long.clone().into_bytes()]))
    );

    // Truncated over UDP: the client asks again over TCP.
    dns.set_mode(DnsMode::Truncate);
    let before = dns.queries();
    assert_eq!(
        c.txt("_atproto.long.example.com").await,
        Ok(TxtAnswer::Records(vec![long.into_bytes()]))
    );
    assert_eq!(dns.queries() - before, 2, "one UDP and one TCP query");

    dns.set_mode(DnsMode::ServFail);
    assert_eq!(
        c.txt("_atproto.a.example.com").await,
        Err(DnsError::Rcode(2))
    );
    dns.set_mode(DnsMode::Silent);
    let err = c
        .txt("_atproto.a.example.com")
        .await
        .expect_err("no answer");
    assert!(matches!(err, DnsError::Timeout { .. }), "{err}");
    assert!(err.to_string().contains(&dns.addr().to_string()), "{err}");

    // A silent first nameserver: the second one answers.
    let good = DnsServer::start();
    good.set_txt("_atproto.a.example.com", &["did=did:plc:a"]);
    let two = client(vec![dns.addr(), good.addr()]);
    assert_eq!(
        two.txt("_atproto.a.example.com").await,
        Ok(TxtAnswer::Records(vec![b"did=did:plc:a".to_vec()]))
    );
}

fn resolver(network: &Network, dns: &DnsServer, http_base: Option<String>) -> Resolver {
    Resolver::new(ResolverConfig {
        plc_url: network.plc_url().to_string(),
        allow_loopback_http: true,
        handles: HandleConfig::loopback(vec![dns.addr()], http_base),
        ..ResolverConfig::default()
    })
    .expect("valid config")
}

#[tokio::test]
async fn the_reference_pds_handles_verify_through_its_well_known_path_unless_dns_says_otherwise() {
    let network = Network::shared();
    let pds = network.pds();
    let dns = DnsServer::start();
    let r = resolver(network, &dns, Some(network.pds_url().to_string()));
    let account = pds
        .create_account(&format!("{}.test", unique("hv")))
        .await
        .expect("account");

    // No TXT record: the PDS answers its well-known path for the handle.
    let id = r.identity(&account.did, false).await.expect("identity");
    assert_eq!(
        (id.status, id.handle.as_str()),
        (HandleStatus::Valid, account.handle.as_str()),
        "{id:?}"
    );
    assert!(id.at_us > 1_700_000_000_000_000, "{id:?}");
    let found = r.resolve_handle(&account.handle, false).await;
    assert_eq!(
        (found.answer, found.via),
        (HandleAnswer::Did(account.did.clone()), Via::Http)
    );

    // Cached: a second check asks nobody; a fresh one asks again.
    let asked = dns.queries();
    r.identity(&account.did, false).await.expect("identity");
    assert_eq!(dns.queries(), asked, "answered from the cache");
    r.identity(&account.did, true).await.expect("identity");
    assert_eq!(dns.queries(), asked + 1, "fresh: resolved again");

    // DNS, asked first, names another DID: the handle does not point back.
    dns.set_txt(
        &format!("_atproto.{}", account.handle),
        &["did=did:plc:someoneelse2222222222222"],
    );
    let id = r.identity(&account.did, true).await.expect("identity");
    assert_eq!(
        (id.status, id.handle.as_str()),
        (HandleStatus::Invalid, INVALID_HANDLE),
        "{id:?}"
    );
    assert!(id.reason.contains("did:plc:someoneelse"), "{}", id.reason);
    assert!(id.version() > 0);

    // A renamed handle is read from the fresh document.
    dns.remove(&format!("_atproto.{}", account.handle));
    let mut account = account;
    let renamed = format!("{}.test", unique("hr"));
    pds.update_handle(&mut account, &renamed)
        .await
        .expect("rename");
    let id = r.identity(&account.did, true).await.expect("identity");
    assert_eq!(
        (id.status, id.handle.as_str()),
        (HandleStatus::Valid, renamed.as_str()),
        "{id:?}"
    );
}

/// What the did:web host serves.
#[derive(Default)]
struct Served {
    /// The handle its DID document claims.
    claim: String,
    /// `/.well-known/atproto-did` by `Host` header: a body, or a status.
    well_known: HashMap<String, Result<String, u16>>,
}

/// A did:web host on 127.0.0.1 that also answers `/.well-known/atproto-did`
/// for whatever `Host` it is asked with.
async fn web_host() -> (String, String, Arc<Mutex<Served>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let did = format!("did:web:localhost%3A{}", addr.port());
    let served = Arc::new(Mutex::new(Served::default()));
    let doc_did = did.clone();
    let app = Router::new()
        .route(
            "/.well-known/did.json",
            get({
                let served = served.clone();
                move || {
                    let claim = served.lock().expect("lock").claim.clone();
                    let body = serde_json::json!({
                        "id": doc_did,
                        "alsoKnownAs": [format!("at://{claim}")],
                        "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                                     "serviceEndpoint": "https://pds.example.com"}],
                    })
                    .to_string();
                    async move { ([("content-type", "application/json")], body).into_response() }
                }
            }),
        )
        .route(
            "/.well-known/atproto-did",
            get({
                let served = served.clone();
                move |headers: HeaderMap| {
                    let host = headers
                        .get("host")
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    let answer = served.lock().expect("lock").well_known.get(&host).cloned();
                    async move {
                        match answer {
                            Some(Ok(body)) => (StatusCode::OK, body).into_response(),
                            Some(Err(code)) => {
                                StatusCode::from_u16(code).expect("status").into_response()
                            }
                            None => StatusCode::NOT_FOUND.into_response(),
                        }
                    }
                }
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (did, format!("http://{addr}"), served)
}

#[tokio::test]
async fn a_claimed_domain_verifies_by_dns_or_https_and_otherwise_shows_handle_invalid() {
    let network = Network::shared();
    let dns = DnsServer::start();
    let (did, base, served) = web_host().await;
    let r = resolver(network, &dns, Some(base));
    let handle = format!("{}.elsewhere.dev", unique("ew"));
    served.lock().expect("lock").claim = handle.to_uppercase();

    // Neither DNS nor HTTPS names the DID.
    let id = r.identity(&did, true).await.expect("identity");
    assert_eq!(
        (id.status, id.handle.as_str()),
        (HandleStatus::Invalid, INVALID_HANDLE),
        "{id:?}"
    );
    assert!(id.reason.contains(&handle), "{}", id.reason);

    // HTTPS names it (asked with the handle as Host): valid, lower case.
    served
        .lock()
        .expect("lock")
        .well_known
        .insert(handle.clone(), Ok(format!("{did}\n")));
    let id = r.identity(&did, true).await.expect("identity");
    assert_eq!(
        (id.status, id.handle.as_str()),
        (HandleStatus::Valid, handle.as_str()),
        "{id:?}"
    );

    // DNS names it too, and DNS decides.
    dns.set_txt(&format!("_atproto.{handle}"), &[&format!("did={did}")]);
    r.identity(&did, true).await.expect("identity");
    assert_eq!(r.resolve_handle(&handle, false).await.via, Via::Dns);

    // DNS gone, HTTPS failing with 503: nothing is known.
    dns.remove(&format!("_atproto.{handle}"));
    served
        .lock()
        .expect("lock")
        .well_known
        .insert(handle.clone(), Err(503));
    let id = r.identity(&did, true).await.expect("identity");
    assert_eq!(
        (id.status, id.handle.as_str(), id.version()),
        (HandleStatus::Unknown, INVALID_HANDLE, 0),
        "{id:?}"
    );

    // HTTPS answering something that is not a DID: no.
    served
        .lock()
        .expect("lock")
        .well_known
        .insert(handle.clone(), Ok("<html>hello</html>".into()));
    assert_eq!(
        r.identity(&did, true).await.expect("identity").status,
        HandleStatus::Invalid
    );
}

#[tokio::test]
async fn a_check_that_cannot_be_made_is_unknown_and_not_cached() {
    let network = Network::shared();
    let pds = network.pds();
    let dns = DnsServer::start();
    dns.set_mode(DnsMode::Silent);
    // The well-known path on a port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let r = resolver(network, &dns, Some(format!("http://{closed}")));
    let account = pds
        .create_account(&format!("{}.test", unique("hu")))
        .await
        .expect("account");
    let id = r.identity(&account.did, false).await.expect("identity");
    assert_eq!(
        (id.status, id.handle.as_str(), id.version()),
        (HandleStatus::Unknown, INVALID_HANDLE, 0),
        "{id:?}"
    );
    assert!(id.reason.contains("DNS"), "{}", id.reason);
    let asked = dns.queries();
    r.identity(&account.did, false).await.expect("identity");
    assert!(dns.queries() > asked, "an unknown answer is not cached");

    // DNS back, the HTTP path still closed: DNS answered (no record), and
    // nothing serves the name: a "no", not an "unknown".
    dns.set_mode(DnsMode::Answer);
    let id = r.identity(&account.did, false).await.expect("identity");
    assert_eq!(id.status, HandleStatus::Invalid, "{id:?}");
}
