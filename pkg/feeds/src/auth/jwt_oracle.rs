//! `jsonwebtoken` as an oracle for ES256 service-auth tokens.
//!
//! Tokens are signed here with P-256 keys, with headers and claims that
//! follow or break each rule, some tampered with after signing. skyhouse's
//! verifier (`parse` then `check`, everything but the DID document fetch)
//! and jsonwebtoken (ES256, audience set, `exp`/`aud`/`iss` required, no
//! leeway) must agree on every signature, and on every verdict except where a
//! named service-auth rule makes skyhouse stricter. ES256K has no oracle:
//! jsonwebtoken has no secp256k1.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use serde_json::{json, Value};
use skyhouse_atproto::crypto::PublicKey;
use std::cell::RefCell;
use std::collections::BTreeMap;

use super::{check, parse, unix_now, AuthError, MAX_TOKEN_BYTES};

const AUD: &str = "did:web:feeds.example";
const LXM: &str = "app.bsky.feed.getFeedSkeleton";

/// Where skyhouse and jsonwebtoken differ, on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Rule {
    /// `typ` `at+jwt`, `refresh+jwt` or `dpop+jwt` is not service auth.
    Typ,
    /// `lxm` must name the method called.
    Lxm,
    /// `iss` must be a DID.
    IssDid,
    /// `aud` is one string, our DID (the reference verifier compares it
    /// with `!==`); jsonwebtoken also takes an array holding it.
    AudString,
    /// atproto signatures are low-S; p256 (under jsonwebtoken) accepts the
    /// high-S twin of a valid signature.
    LowS,
    /// skyhouse refuses tokens over `MAX_TOKEN_BYTES` before decoding.
    Length,
}

/// How the two verifiers agreed on one token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Verdict {
    BothAccept,
    BothRefuse,
    /// skyhouse refused under the rule; jsonwebtoken accepted.
    Stricter(Rule),
}

/// One departure from a valid ES256 service-auth token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Deviation {
    TypJwt,
    NoTyp,
    TypAccess,
    TypRefresh,
    TypDpop,
    AlgEs256k,
    AlgHs256,
    AlgNone,
    NoAlg,
    IssFragment,
    IssNotDid,
    IssNumber,
    NoIss,
    AudOther,
    AudArray,
    NoAud,
    ExpPast,
    ExpFractional,
    ExpString,
    NoExp,
    LxmOther,
    NoLxm,
    TooLong,
    /// Flip one bit of the signature.
    FlipSignature(u8),
    /// The same signature with `s` negated: valid, but high-S.
    HighS,
    /// Signed by another key.
    OtherKey,
    /// The signature DER-encoded (atproto and JOSE both want `r || s`).
    Der,
    /// Claims changed after signing.
    Payload,
}

impl Deviation {
    const ALL: [Deviation; 28] = [
        Deviation::TypJwt,
        Deviation::NoTyp,
        Deviation::TypAccess,
        Deviation::TypRefresh,
        Deviation::TypDpop,
        Deviation::AlgEs256k,
        Deviation::AlgHs256,
        Deviation::AlgNone,
        Deviation::NoAlg,
        Deviation::IssFragment,
        Deviation::IssNotDid,
        Deviation::IssNumber,
        Deviation::NoIss,
        Deviation::AudOther,
        Deviation::AudArray,
        Deviation::NoAud,
        Deviation::ExpPast,
        Deviation::ExpFractional,
        Deviation::ExpString,
        Deviation::NoExp,
        Deviation::LxmOther,
        Deviation::NoLxm,
        Deviation::TooLong,
        Deviation::FlipSignature(3),
        Deviation::HighS,
        Deviation::OtherKey,
        Deviation::Der,
        Deviation::Payload,
    ];

    /// The verdict when this is the token's only departure.
    fn alone(self) -> Verdict {
        use Deviation::*;
        match self {
            // A NumericDate may be fractional (RFC 7519 §2): both take one.
            TypJwt | NoTyp | IssFragment | ExpFractional => Verdict::BothAccept,
            TypAccess | TypRefresh | TypDpop => Verdict::Stricter(Rule::Typ),
            IssNotDid => Verdict::Stricter(Rule::IssDid),
            AudArray => Verdict::Stricter(Rule::AudString),
            LxmOther | NoLxm => Verdict::Stricter(Rule::Lxm),
            TooLong => Verdict::Stricter(Rule::Length),
            HighS => Verdict::Stricter(Rule::LowS),
            AlgEs256k | AlgHs256 | AlgNone | NoAlg | IssNumber | NoIss | AudOther | NoAud
            | ExpPast | ExpString | NoExp | FlipSignature(_) | OtherKey | Der | Payload => {
                Verdict::BothRefuse
            }
        }
    }

    /// Change the header or claims before signing.
    fn apply(self, header: &mut Value, claims: &mut Value, now: u64) {
        use Deviation::*;
        let (h, c) = (header, claims);
        match self {
            TypJwt => h["typ"] = json!("JWT"),
            NoTyp => drop(h.as_object_mut().map(|m| m.remove("typ"))),
            TypAccess => h["typ"] = json!("at+jwt"),
            TypRefresh => h["typ"] = json!("refresh+jwt"),
            TypDpop => h["typ"] = json!("dpop+jwt"),
            AlgEs256k => h["alg"] = json!("ES256K"),
            AlgHs256 => h["alg"] = json!("HS256"),
            AlgNone => h["alg"] = json!("none"),
            NoAlg => drop(h.as_object_mut().map(|m| m.remove("alg"))),
            IssFragment => c["iss"] = json!("did:web:appview.example#bsky_appview"),
            IssNotDid => c["iss"] = json!("alice.test"),
            IssNumber => c["iss"] = json!(42),
            NoIss => drop(c.as_object_mut().map(|m| m.remove("iss"))),
            AudOther => c["aud"] = json!("did:web:elsewhere.example"),
            AudArray => c["aud"] = json!([AUD]),
            NoAud => drop(c.as_object_mut().map(|m| m.remove("aud"))),
            // An hour away, so the two verifiers' clocks cannot straddle it.
            ExpPast => c["exp"] = json!(now - 3600),
            ExpFractional => c["exp"] = json!(now as f64 + 3600.5),
            ExpString => c["exp"] = json!((now + 3600).to_string()),
            NoExp => drop(c.as_object_mut().map(|m| m.remove("exp"))),
            LxmOther => c["lxm"] = json!("app.bsky.feed.getTimeline"),
            NoLxm => drop(c.as_object_mut().map(|m| m.remove("lxm"))),
            TooLong => c["pad"] = json!("p".repeat(MAX_TOKEN_BYTES)),
            FlipSignature(_) | HighS | OtherKey | Der | Payload => {}
        }
    }
}

fn key(seed: [u8; 32]) -> SigningKey {
    let mut b = seed;
    b[0] = b[0].clamp(1, 0x7f); // non-zero and below the group order
    SigningKey::from_slice(&b).expect("scalar in range")
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(v.to_string())
}

/// A valid token from `signer` (issued by a did:plc, for our DID and
/// method, expiring in an hour) with `deviations` applied.
fn token(signer: &SigningKey, deviations: &[Deviation], now: u64) -> String {
    let mut header = json!({"alg": "ES256", "typ": "JWT"});
    let mut claims = json!({"iss": "did:plc:abcdefghijklmnopqrstuvwx", "aud": AUD,
                            "exp": now + 3600, "iat": now, "lxm": LXM, "jti": "x"});
    for d in deviations {
        d.apply(&mut header, &mut claims, now);
    }
    let signed = format!("{}.{}", b64(&header), b64(&claims));
    let other = key([9; 32]);
    let by = if deviations.contains(&Deviation::OtherKey) {
        &other
    } else {
        signer
    };
    let sig: Signature = by.sign(signed.as_bytes());
    let mut sig = sig.normalize_s().unwrap_or(sig).to_vec();
    for d in deviations {
        match d {
            Deviation::HighS => {
                if let Ok(parsed) = Signature::from_slice(&sig) {
                    let (r, s) = parsed.split_scalars();
                    sig = Signature::from_scalars(r, -*s).expect("scalars").to_vec();
                }
            }
            Deviation::Der => {
                if let Ok(parsed) = Signature::from_slice(&sig) {
                    sig = parsed.to_der().as_bytes().to_vec();
                }
            }
            Deviation::FlipSignature(bit) => {
                let at = usize::from(*bit) % sig.len();
                sig[at] ^= 1 << (bit % 8);
            }
            _ => {}
        }
    }
    let signed = if deviations.contains(&Deviation::Payload) {
        claims["jti"] = json!("changed");
        format!("{}.{}", b64(&header), b64(&claims))
    } else {
        signed
    };
    format!("{signed}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// skyhouse's verdict: the issuer DID, or the rule that failed.
fn skyhouse(token: &str, public: &PublicKey, now: u64) -> Result<String, AuthError> {
    let parsed = parse(token, AUD, LXM, now)?;
    if check(public, &parsed)? {
        Ok(parsed.did)
    } else {
        Err(AuthError::Signature)
    }
}

/// jsonwebtoken's verdict: the claims, or its error.
fn oracle(token: &str, key: &DecodingKey) -> Result<Value, String> {
    let mut v = Validation::new(Algorithm::ES256);
    v.leeway = 0;
    v.set_audience(&[AUD]);
    v.set_required_spec_claims(&["exp", "aud", "iss"]);
    jsonwebtoken::decode::<Value>(token, key, &v)
        .map(|t| t.claims)
        .map_err(|e| e.to_string())
}

/// The decoded JSON of part `i` of a token this test built.
fn part(token: &str, i: usize) -> Value {
    let p = token.split('.').nth(i).expect("part");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("json")
}

/// Whether the token's signature is a well-formed, high-S P-256 `r || s`.
fn high_s(token: &str) -> bool {
    let s = token.rsplit('.').next().unwrap_or_default();
    URL_SAFE_NO_PAD
        .decode(s)
        .ok()
        .and_then(|b| Signature::from_slice(&b).ok())
        .is_some_and(|sig| sig.normalize_s().is_some())
}

/// Compare the two verifiers on `token`; `Err` describes a divergence.
fn compare(token: &str, public: &PublicKey, key: &DecodingKey) -> Result<Verdict, String> {
    // The signatures alone: the same answer, but for high S.
    let (message, sig) = token.rsplit_once('.').expect("three parts");
    if let Ok(sig_bytes) = URL_SAFE_NO_PAD.decode(sig) {
        let ours = public.verify(message.as_bytes(), &sig_bytes).is_ok();
        let theirs = jsonwebtoken::crypto::verify(sig, message.as_bytes(), key, Algorithm::ES256)
            .unwrap_or(false);
        if ours != theirs && !(theirs && high_s(token)) {
            return Err(format!("signature: skyhouse {ours}, jsonwebtoken {theirs}"));
        }
    }
    let now = unix_now();
    let ours = skyhouse(token, public, now);
    let theirs = oracle(token, key);
    let header = part(token, 0);
    let claims = part(token, 1);
    let verdict = match (&ours, &theirs) {
        (Ok(did), Ok(c)) => {
            let iss = c["iss"].as_str().unwrap_or_default();
            if iss.split('#').next() != Some(did.as_str()) {
                return Err(format!("skyhouse says issuer {did}, jsonwebtoken {iss}"));
            }
            Verdict::BothAccept
        }
        (Err(_), Err(_)) => Verdict::BothRefuse,
        (Err(e), Ok(_)) => {
            let rule = match e {
                AuthError::WrongType(t)
                    if matches!(t.as_str(), "at+jwt" | "refresh+jwt" | "dpop+jwt")
                        && header["typ"] == json!(t) =>
                {
                    Some(Rule::Typ)
                }
                AuthError::Method if claims["lxm"] != json!(LXM) => Some(Rule::Lxm),
                AuthError::Issuer
                    if claims["iss"]
                        .as_str()
                        .is_some_and(|s| !s.starts_with("did:")) =>
                {
                    Some(Rule::IssDid)
                }
                AuthError::Malformed(_) if token.len() > MAX_TOKEN_BYTES => Some(Rule::Length),
                AuthError::Malformed(_) if claims["aud"].is_array() => Some(Rule::AudString),
                AuthError::Signature if high_s(token) => Some(Rule::LowS),
                _ => None,
            };
            Verdict::Stricter(
                rule.ok_or_else(|| format!("skyhouse refuses ({e}), jsonwebtoken accepts"))?,
            )
        }
        (Ok(_), Err(e)) => return Err(format!("skyhouse accepts, jsonwebtoken refuses: {e}")),
    };
    Ok(verdict)
}

/// A P-256 key pair: the signer, skyhouse's public key, jsonwebtoken's.
fn keys(seed: [u8; 32]) -> (SigningKey, PublicKey, DecodingKey) {
    let signer = key(seed);
    let public = PublicKey::P256(*signer.verifying_key());
    let point = signer.verifying_key().to_encoded_point(false);
    let decoding = DecodingKey::from_ec_components(
        &URL_SAFE_NO_PAD.encode(point.x().expect("x")),
        &URL_SAFE_NO_PAD.encode(point.y().expect("y")),
    )
    .expect("key");
    (signer, public, decoding)
}

/// Each departure alone gets its verdict: both accept, both refuse, or the
/// named rule (every rule is here).
#[test]
fn each_departure_alone_agrees_or_names_its_rule() {
    let now = unix_now();
    let (signer, public, decoding) = keys([7; 32]);
    assert_eq!(
        compare(&token(&signer, &[], now), &public, &decoding),
        Ok(Verdict::BothAccept)
    );
    for d in Deviation::ALL {
        let t = token(&signer, &[d], now);
        assert_eq!(compare(&t, &public, &decoding), Ok(d.alone()), "{d:?}");
    }
}

fn deviation() -> impl Strategy<Value = Deviation> {
    prop_oneof![
        27 => prop::sample::select(&Deviation::ALL[..]),
        1 => any::<u8>().prop_map(Deviation::FlipSignature),
    ]
}

/// Any key, up to three departures at once: never a divergence, and one
/// departure alone gets its verdict.
#[test]
fn es256_tokens_agree_with_jsonwebtoken_or_break_a_named_rule() {
    let now = unix_now();
    let seen = RefCell::new(BTreeMap::<Verdict, usize>::new());
    let mut runner = TestRunner::new(Config {
        cases: 300,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (any::<[u8; 32]>(), prop::collection::vec(deviation(), 0..=3));
    runner
        .run(&strategy, |(seed, deviations)| {
            let (signer, public, decoding) = keys(seed);
            let verdict = compare(&token(&signer, &deviations, now), &public, &decoding)
                .map_err(|e| TestCaseError::fail(format!("{e} ({deviations:?})")))?;
            if let [d] = deviations[..] {
                prop_assert_eq!(verdict, d.alone(), "{:?}", d);
            }
            *seen.borrow_mut().entry(verdict).or_insert(0) += 1;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    let seen = seen.into_inner();
    println!("ES256 tokens against jsonwebtoken: {seen:?}");
    assert!(seen.contains_key(&Verdict::BothAccept), "{seen:?}");
    assert!(seen.contains_key(&Verdict::BothRefuse), "{seen:?}");
}
