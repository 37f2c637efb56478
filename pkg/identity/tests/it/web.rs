//! did:web against a real HTTP server on 127.0.0.1 (axum), which counts the
//! requests it gets so caching can be observed from outside.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use futures_util::future::join_all;
use skyhouse_identity::{PublicKey, ResolveError, Resolver, ResolverConfig};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// A secp256k1 key from the atproto specification's examples.
const DID_KEY: &str = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme";

/// What the server answers for `/.well-known/did.json`.
#[derive(Clone)]
enum Answer {
    Json(String),
    Status(StatusCode),
    Redirect(String),
    /// A body of this many bytes, streamed without a `Content-Length`.
    Chunked(usize),
    /// Wait for `release` before answering with the JSON.
    Gated(String),
    /// Never answer.
    Hang,
}

struct Host {
    answer: Mutex<Answer>,
    requests: AtomicUsize,
    entered: Notify,
    release: Notify,
}

/// A did:web host on 127.0.0.1:0; its DID is `did:web:localhost%3A<port>`.
struct WebHost {
    did: String,
    state: Arc<Host>,
}

impl WebHost {
    async fn start(answer: impl FnOnce(&str) -> Answer) -> WebHost {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let did = format!("did:web:localhost%3A{port}");
        let state = Arc::new(Host {
            answer: Mutex::new(answer(&did)),
            requests: AtomicUsize::new(0),
            entered: Notify::new(),
            release: Notify::new(),
        });
        let app = Router::new()
            .route("/.well-known/did.json", get(serve))
            .with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        WebHost { did, state }
    }

    fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    fn answer(&self, answer: Answer) {
        *self.state.answer.lock().expect("lock") = answer;
    }
}

async fn serve(State(host): State<Arc<Host>>) -> Response {
    host.requests.fetch_add(1, Ordering::SeqCst);
    let answer = host.answer.lock().expect("lock").clone();
    let json = |body: String| {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from(body))
            .expect("response")
    };
    match answer {
        Answer::Json(body) => json(body),
        Answer::Status(status) => Response::builder()
            .status(status)
            .body(Body::empty())
            .expect("response"),
        Answer::Redirect(to) => Response::builder()
            .status(StatusCode::FOUND)
            .header(header::LOCATION, to)
            .body(Body::empty())
            .expect("response"),
        Answer::Chunked(len) => {
            let chunks = (0..len.div_ceil(1024)).map(|_| Ok::<_, std::io::Error>(vec![b' '; 1024]));
            Response::builder()
                .body(Body::from_stream(futures_util::stream::iter(chunks)))
                .expect("response")
        }
        Answer::Gated(body) => {
            host.entered.notify_one();
            host.release.notified().await;
            json(body)
        }
        Answer::Hang => std::future::pending().await,
    }
}

fn document(did: &str, key_multibase: &str) -> String {
    serde_json::json!({
        "@context": ["https://www.w3.org/ns/did/v1", "https://w3id.org/security/multikey/v1"],
        "id": did,
        "alsoKnownAs": ["at://web.example.com"],
        "verificationMethod": [{
            "id": format!("{did}#atproto"),
            "type": "Multikey",
            "controller": did,
            "publicKeyMultibase": key_multibase,
        }],
        "service": [{
            "id": "#atproto_pds",
            "type": "AtprotoPersonalDataServer",
            "serviceEndpoint": "https://pds.example.com/",
        }],
    })
    .to_string()
}

fn key() -> PublicKey {
    PublicKey::from_did_key(DID_KEY).expect("spec key")
}

fn config() -> ResolverConfig {
    ResolverConfig {
        allow_loopback_http: true,
        ..ResolverConfig::default()
    }
}

fn resolver() -> Resolver {
    Resolver::new(config()).expect("valid config")
}

#[tokio::test]
async fn a_did_web_document_is_resolved_once_and_cached() {
    let host = WebHost::start(|did| Answer::Json(document(did, &key().to_multikey()))).await;
    let resolver = resolver();
    let doc = resolver.resolve(&host.did).await.expect("resolves");
    assert_eq!(doc.id, host.did);
    assert_eq!(doc.handle(), Some("web.example.com"));
    assert_eq!(resolver.signing_key(&host.did).await.expect("key"), key());
    assert_eq!(
        resolver.pds_endpoint(&host.did).await.expect("pds"),
        "https://pds.example.com"
    );
    assert_eq!(host.requests(), 1, "three lookups, one request");

    resolver.invalidate(&host.did);
    resolver.resolve(&host.did).await.expect("resolves again");
    assert_eq!(host.requests(), 2, "invalidate refetches");
}

#[tokio::test]
async fn documents_expire_after_the_ttl() {
    let host = WebHost::start(|did| Answer::Json(document(did, &key().to_multikey()))).await;
    let resolver = resolver();
    let ttl = resolver.config().ttl;
    resolver.resolve(&host.did).await.expect("resolves");

    // Move the clock, then let it run again for the real request.
    tokio::time::pause();
    tokio::time::advance(ttl - Duration::from_secs(1)).await;
    tokio::time::resume();
    resolver.resolve(&host.did).await.expect("cached");
    assert_eq!(host.requests(), 1, "still fresh just before the TTL");

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(2)).await;
    tokio::time::resume();
    resolver.resolve(&host.did).await.expect("refetched");
    assert_eq!(host.requests(), 2, "refetched after the TTL");
}

#[tokio::test]
async fn not_found_is_remembered_for_the_negative_ttl_only() {
    let host = WebHost::start(|_| Answer::Status(StatusCode::NOT_FOUND)).await;
    let resolver = resolver();
    let negative_ttl = resolver.config().negative_ttl;
    assert!(negative_ttl < resolver.config().ttl);
    for _ in 0..3 {
        let err = resolver.resolve(&host.did).await.expect_err("404");
        assert!(
            matches!(err, ResolveError::NotFound { status: 404, .. }),
            "{err:?}"
        );
        assert!(!err.is_retriable());
    }
    assert_eq!(host.requests(), 1, "not-found is cached");

    // The DID appears; once the negative TTL passed it resolves.
    host.answer(Answer::Json(document(&host.did, &key().to_multikey())));
    tokio::time::pause();
    tokio::time::advance(negative_ttl + Duration::from_secs(1)).await;
    tokio::time::resume();
    resolver.resolve(&host.did).await.expect("found now");
    assert_eq!(host.requests(), 2);
}

#[tokio::test]
async fn server_errors_are_retriable_and_not_cached() {
    let host = WebHost::start(|_| Answer::Status(StatusCode::SERVICE_UNAVAILABLE)).await;
    let resolver = resolver();
    for attempt in 1..=2 {
        let err = resolver.resolve(&host.did).await.expect_err("503");
        assert!(
            matches!(err, ResolveError::Http { status: 503, .. }),
            "{err:?}"
        );
        assert!(err.is_retriable());
        assert_eq!(host.requests(), attempt);
    }
    assert_eq!(resolver.cached_len(), 0);
}

#[tokio::test]
async fn oversized_documents_are_refused() {
    let max = config().max_document_bytes;
    // With a Content-Length…
    let host = WebHost::start(|_| Answer::Json(" ".repeat(max + 1))).await;
    let err = resolver().resolve(&host.did).await.expect_err("too large");
    assert!(matches!(err, ResolveError::TooLarge { .. }), "{err:?}");
    // …and streamed without one.
    let host = WebHost::start(|_| Answer::Chunked(max + 1024)).await;
    let err = resolver().resolve(&host.did).await.expect_err("too large");
    assert!(matches!(err, ResolveError::TooLarge { .. }), "{err:?}");
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn a_document_for_another_did_is_rejected() {
    let host = WebHost::start(|_| {
        Answer::Json(document("did:web:evil.example.com", &key().to_multikey()))
    })
    .await;
    let err = resolver().resolve(&host.did).await.expect_err("wrong id");
    assert!(
        matches!(err, ResolveError::InvalidDocument { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("evil.example.com"), "{err}");

    host.answer(Answer::Json("{not json".into()));
    let err = resolver().resolve(&host.did).await.expect_err("bad JSON");
    assert!(
        matches!(err, ResolveError::InvalidDocument { .. }),
        "{err:?}"
    );
    assert!(!err.to_string().contains('\n'), "{err}");
}

#[tokio::test]
async fn a_document_without_a_usable_key_or_pds_says_so() {
    let host = WebHost::start(|did| {
        Answer::Json(
            serde_json::json!({ "id": did, "verificationMethod": null, "service": [] }).to_string(),
        )
    })
    .await;
    let resolver = resolver();
    let err = resolver.signing_key(&host.did).await.expect_err("no key");
    assert!(matches!(err, ResolveError::Key { .. }), "{err:?}");
    assert!(err.to_string().contains(&host.did), "{err}");
    let err = resolver.pds_endpoint(&host.did).await.expect_err("no pds");
    assert!(matches!(err, ResolveError::NoPds { .. }), "{err:?}");
    assert_eq!(host.requests(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let host = WebHost::start(|_| Answer::Redirect("http://127.0.0.1:1/elsewhere".into())).await;
    let err = resolver().resolve(&host.did).await.expect_err("302");
    assert!(
        matches!(err, ResolveError::Http { status: 302, .. }),
        "{err:?}"
    );
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn a_host_that_never_answers_times_out_retriably() {
    let host = WebHost::start(|_| Answer::Hang).await;
    let resolver = Resolver::new(ResolverConfig {
        timeout: Duration::from_millis(300),
        ..config()
    })
    .expect("valid config");
    let err = resolver.resolve(&host.did).await.expect_err("timeout");
    assert!(matches!(err, ResolveError::Transport { .. }), "{err:?}");
    assert!(err.to_string().contains("timed out"), "{err}");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn concurrent_lookups_of_one_did_share_one_request() {
    let host = WebHost::start(|did| Answer::Gated(document(did, &key().to_multikey()))).await;
    let resolver = resolver();
    let lookups = join_all((0..10).map(|_| resolver.resolve(&host.did)));
    let release = async {
        host.state.entered.notified().await;
        host.state.release.notify_one();
    };
    let (results, ()) = tokio::join!(lookups, release);
    for result in results {
        assert_eq!(result.expect("resolves").id, host.did);
    }
    assert_eq!(host.requests(), 1, "ten concurrent lookups, one request");
}

#[test]
fn loopback_did_web_needs_the_test_switch() {
    let resolver = Resolver::new(ResolverConfig::default()).expect("valid");
    let err = resolver
        .document_url("did:web:localhost%3A8080")
        .expect_err("refused in production");
    assert!(matches!(err, ResolveError::Unsupported { .. }), "{err:?}");
}
