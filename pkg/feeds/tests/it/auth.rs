//! Service-auth tokens: real ones from the PDS, and ES256/ES256K ones
//! minted here for a did:web host on loopback whose key this test holds.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::get;
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use skyhouse_atproto::crypto::PublicKey;
use skyhouse_feeds::{builtin_feeds, GET_FEED_SKELETON};
use skyhouse_testkit::Network;

use crate::Feedgen;

/// A signing key on one of the two curves.
#[derive(Clone)]
pub enum Key {
    K256(k256::ecdsa::SigningKey),
    P256(p256::ecdsa::SigningKey),
}

fn secret() -> [u8; 32] {
    let mut b = [0u8; 32];
    b.iter_mut().for_each(|x| *x = fastrand::u8(..));
    b[0] = b[0].clamp(1, 0x7f); // below both group orders
    b
}

impl Key {
    pub fn k256() -> Key {
        Key::K256(k256::ecdsa::SigningKey::from_slice(&secret()).unwrap())
    }

    pub fn p256() -> Key {
        Key::P256(p256::ecdsa::SigningKey::from_slice(&secret()).unwrap())
    }

    fn public(&self) -> PublicKey {
        match self {
            Key::K256(k) => PublicKey::K256(*k.verifying_key()),
            Key::P256(k) => PublicKey::P256(*k.verifying_key()),
        }
    }

    fn alg(&self) -> &'static str {
        match self {
            Key::K256(_) => "ES256K",
            Key::P256(_) => "ES256",
        }
    }

    /// Compact low-S `r || s` over sha256(`msg`); `high_s` gives the
    /// malleable twin instead.
    fn sign(&self, msg: &[u8], high_s: bool) -> Vec<u8> {
        use k256::ecdsa::signature::Signer;
        match self {
            Key::K256(k) => {
                let s: k256::ecdsa::Signature = k.sign(msg);
                let s = s.normalize_s().unwrap_or(s);
                let s = if high_s { negate_s_k256(&s) } else { s };
                s.to_bytes().to_vec()
            }
            Key::P256(k) => {
                let s: p256::ecdsa::Signature = k.sign(msg);
                let s = s.normalize_s().unwrap_or(s);
                let s = if high_s { negate_s_p256(&s) } else { s };
                s.to_bytes().to_vec()
            }
        }
    }
}

fn negate_s_k256(s: &k256::ecdsa::Signature) -> k256::ecdsa::Signature {
    let (r, s) = s.split_scalars();
    k256::ecdsa::Signature::from_scalars(r, -*s).unwrap()
}

fn negate_s_p256(s: &p256::ecdsa::Signature) -> p256::ecdsa::Signature {
    let (r, s) = s.split_scalars();
    p256::ecdsa::Signature::from_scalars(r, -*s).unwrap()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A JWT with `header` and `claims`, signed by `key`.
pub fn mint(key: &Key, header: Value, claims: Value, high_s: bool) -> String {
    let signed = format!("{}.{}", b64(&header), b64(&claims));
    let sig = key.sign(signed.as_bytes(), high_s);
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Standard claims: `iss`, `aud`, `exp` in a minute, `lxm` getFeedSkeleton.
pub fn claims(iss: &str, aud: &str) -> Value {
    json!({"iss": iss, "aud": aud, "exp": now() + 60, "iat": now(), "lxm": GET_FEED_SKELETON, "jti": fastrand::u64(..).to_string()})
}

/// A did:web host on loopback serving a document with `#atproto` = the
/// current key; counts document fetches.
pub struct WebDid {
    pub did: String,
    key: Arc<Mutex<PublicKey>>,
    fetches: Arc<AtomicUsize>,
}

impl WebDid {
    pub async fn start(key: &Key) -> WebDid {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let did = format!("did:web:localhost%3A{port}");
        let shared = Arc::new(Mutex::new(key.public()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let state = (did.clone(), shared.clone(), fetches.clone());
        let app = Router::new()
            .route(
                "/.well-known/did.json",
                get(
                    |State((did, key, n)): State<(
                        String,
                        Arc<Mutex<PublicKey>>,
                        Arc<AtomicUsize>,
                    )>| async move {
                        n.fetch_add(1, Ordering::SeqCst);
                        let multikey = key.lock().unwrap().to_multikey();
                        json!({
                            "@context": ["https://www.w3.org/ns/did/v1"],
                            "id": did,
                            "verificationMethod": [{
                                "id": format!("{did}#atproto"),
                                "type": "Multikey",
                                "controller": did,
                                "publicKeyMultibase": multikey,
                            }],
                        })
                        .to_string()
                    },
                ),
            )
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        WebDid {
            did,
            key: shared,
            fetches,
        }
    }

    pub fn rotate(&self, key: &Key) {
        *self.key.lock().unwrap() = key.public();
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

fn jwt_header(alg: &str) -> Value {
    json!({"typ": "JWT", "alg": alg})
}

/// Swap the payload of a real token for `claims` (signature kept).
fn with_payload(token: &str, claims: &Value) -> String {
    let mut parts: Vec<&str> = token.split('.').collect();
    let payload = b64(claims);
    parts[1] = &payload;
    parts.join(".")
}

fn payload(token: &str) -> Value {
    let p = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).unwrap()).unwrap()
}

#[tokio::test]
async fn pds_tokens_are_accepted_and_bad_ones_refused() {
    let fg = Feedgen::start("feeds_pds_tokens", builtin_feeds()).await;
    let net = Network::shared();
    let pds = net.pds();
    let alice = pds
        .create_account(&format!("tok{}.test", fastrand::u32(..)))
        .await
        .unwrap();
    let bob = pds
        .create_account(&format!("tob{}.test", fastrand::u32(..)))
        .await
        .unwrap();

    // Accepted: a real ES256K token for our DID and method; and no token at all.
    let good = pds
        .service_auth(&alice, &fg.service_did, Some(GET_FEED_SKELETON))
        .await
        .unwrap();
    assert_eq!(payload(&good)["iss"], json!(alice.did));
    let (status, body) = fg.skeleton("top-1h", "", Some(&good)).await;
    assert_eq!(status, 200, "{body}");
    let (status, _) = fg.skeleton("top-1h", "", None).await;
    assert_eq!(status, 200);

    let mut refused: Vec<(&str, String)> = Vec::new();
    refused.push((
        "wrong aud",
        pds.service_auth(
            &alice,
            "did:web:someone-else.example",
            Some(GET_FEED_SKELETON),
        )
        .await
        .unwrap(),
    ));
    refused.push((
        "wrong lxm",
        pds.service_auth(&alice, &fg.service_did, Some("app.bsky.feed.getTimeline"))
            .await
            .unwrap(),
    ));
    refused.push((
        "missing lxm",
        pds.service_auth(&alice, &fg.service_did, None)
            .await
            .unwrap(),
    ));
    // Tampered: alice's signature over bob as issuer; a flipped signature byte.
    let mut forged = payload(&good);
    forged["iss"] = json!(bob.did);
    refused.push(("tampered payload", with_payload(&good, &forged)));
    let mut longer = payload(&good);
    longer["exp"] = json!(longer["exp"].as_u64().unwrap() + 3600);
    refused.push(("tampered exp", with_payload(&good, &longer)));
    let mut sig_flip = good.clone().into_bytes();
    let last = sig_flip.len() - 5;
    sig_flip[last] = if sig_flip[last] == b'A' { b'B' } else { b'A' };
    refused.push(("tampered signature", String::from_utf8(sig_flip).unwrap()));
    // The PDS's own access token is `at+jwt`.
    refused.push(("access token (at+jwt)", alice.access_jwt.clone()));
    // Signed by a key that is not alice's.
    let stranger = Key::k256();
    refused.push((
        "wrong key",
        mint(
            &stranger,
            jwt_header("ES256K"),
            claims(&alice.did, &fg.service_did),
            false,
        ),
    ));
    refused.push(("garbage", "not.a.jwt".to_owned()));
    for (what, token) in &refused {
        let (status, body) = fg.skeleton("top-1h", "", Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"], "AuthenticationRequired", "{what}");
        let message = body["message"].as_str().unwrap();
        assert!(!message.contains(token.as_str()), "{what}: token echoed");
    }
    // A non-Bearer header is refused too.
    let resp = fg
        .http
        .get(format!(
            "{}/xrpc/app.bsky.feed.getFeedSkeleton?feed={}",
            fg.base,
            crate::enc(&fg.feed_uri("top-1h"))
        ))
        .header("authorization", "Basic YWxpY2U6c2VjcmV0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

#[tokio::test]
async fn expired_real_token_is_refused() {
    // The real token's own signature and claims, checked after its exp.
    let fg = Feedgen::start("feeds_expired", builtin_feeds()).await;
    let pds = Network::shared().pds();
    let alice = pds
        .create_account(&format!("exp{}.test", fastrand::u32(..)))
        .await
        .unwrap();
    let token = pds
        .service_auth(&alice, &fg.service_did, Some(GET_FEED_SKELETON))
        .await
        .unwrap();
    let exp = payload(&token)["exp"].as_u64().unwrap();
    let resolver = skyhouse_identity::Resolver::new(skyhouse_identity::ResolverConfig {
        plc_url: Network::shared().plc_url().to_owned(),
        ..Default::default()
    })
    .unwrap();
    let auth = skyhouse_feeds::ServiceAuth::new(Arc::new(resolver), fg.service_did.clone());
    assert_eq!(
        auth.verify_at(&token, GET_FEED_SKELETON, exp - 1).await,
        Ok(alice.did.clone())
    );
    assert_eq!(
        auth.verify_at(&token, GET_FEED_SKELETON, exp).await,
        Err(skyhouse_feeds::AuthError::Expired)
    );
    // And over HTTP: a correctly signed token whose exp has passed.
    let key = Key::p256();
    let web = WebDid::start(&key).await;
    let mut c = claims(&web.did, &fg.service_did);
    c["exp"] = json!(now() - 1);
    let (status, body) = fg
        .skeleton(
            "top-1h",
            "",
            Some(&mint(&key, jwt_header("ES256"), c, false)),
        )
        .await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn es256_and_es256k_tokens_minted_here_are_accepted() {
    let fg = Feedgen::start("feeds_minted", builtin_feeds()).await;
    for key in [Key::p256(), Key::k256()] {
        let web = WebDid::start(&key).await;
        let alg = key.alg();
        let ok = mint(
            &key,
            jwt_header(alg),
            claims(&web.did, &fg.service_did),
            false,
        );
        let (status, body) = fg.skeleton("whats-hot", "", Some(&ok)).await;
        assert_eq!(status, 200, "{alg}: {body}");
        // With a service fragment on iss, and without typ.
        let mut c = claims(&format!("{}#bsky_appview", web.did), &fg.service_did);
        c["jti"] = json!("x");
        let (status, _) = fg
            .skeleton(
                "whats-hot",
                "",
                Some(&mint(&key, json!({"alg": alg}), c, false)),
            )
            .await;
        assert_eq!(status, 200, "{alg} with #fragment");

        let other_alg = if alg == "ES256" { "ES256K" } else { "ES256" };
        let bad: Vec<(&str, String)> = vec![
            (
                "high S",
                mint(
                    &key,
                    jwt_header(alg),
                    claims(&web.did, &fg.service_did),
                    true,
                ),
            ),
            (
                "alg of the other curve",
                mint(
                    &key,
                    jwt_header(other_alg),
                    claims(&web.did, &fg.service_did),
                    false,
                ),
            ),
            (
                "alg none",
                mint(
                    &key,
                    json!({"alg": "none"}),
                    claims(&web.did, &fg.service_did),
                    false,
                ),
            ),
            (
                "typ at+jwt",
                mint(
                    &key,
                    json!({"alg": alg, "typ": "at+jwt"}),
                    claims(&web.did, &fg.service_did),
                    false,
                ),
            ),
            (
                "typ refresh+jwt",
                mint(
                    &key,
                    json!({"alg": alg, "typ": "refresh+jwt"}),
                    claims(&web.did, &fg.service_did),
                    false,
                ),
            ),
            (
                "typ dpop+jwt",
                mint(
                    &key,
                    json!({"alg": alg, "typ": "dpop+jwt"}),
                    claims(&web.did, &fg.service_did),
                    false,
                ),
            ),
            (
                "wrong aud",
                mint(
                    &key,
                    jwt_header(alg),
                    claims(&web.did, "did:web:elsewhere.example"),
                    false,
                ),
            ),
            (
                "iss not a DID",
                mint(
                    &key,
                    jwt_header(alg),
                    claims("alice.test", &fg.service_did),
                    false,
                ),
            ),
        ];
        for (what, token) in bad {
            let (status, body) = fg.skeleton("whats-hot", "", Some(&token)).await;
            assert_eq!(status, 401, "{alg} {what}: {body}");
        }
    }
}

#[tokio::test]
async fn a_rotated_key_is_fetched_again_once() {
    let fg = Feedgen::start("feeds_rotation", builtin_feeds()).await;
    let old = Key::k256();
    let web = WebDid::start(&old).await;
    let t1 = mint(
        &old,
        jwt_header("ES256K"),
        claims(&web.did, &fg.service_did),
        false,
    );
    assert_eq!(fg.skeleton("top-24h", "", Some(&t1)).await.0, 200);
    let (status, _) = fg.skeleton("top-24h", "", Some(&t1)).await;
    assert_eq!(status, 200);
    assert_eq!(web.fetches(), 1, "the document is cached");
    let new = Key::k256();
    web.rotate(&new);
    let t2 = mint(
        &new,
        jwt_header("ES256K"),
        claims(&web.did, &fg.service_did),
        false,
    );
    assert_eq!(fg.skeleton("top-24h", "", Some(&t2)).await.0, 200);
    assert_eq!(web.fetches(), 2, "one re-fetch after the bad signature");
    // The old key no longer verifies: 401, and no further fetch so soon
    // (bad signatures re-fetch a DID at most every REFETCH_INTERVAL).
    for _ in 0..3 {
        assert_eq!(fg.skeleton("top-24h", "", Some(&t1)).await.0, 401);
    }
    assert_eq!(web.fetches(), 2);
}
