//! Inter-service auth: the JWT an AppView sends with `getFeedSkeleton`
//! (`Authorization: Bearer <jwt>`), verified as the reference verifier
//! (`@atproto/xrpc-server`) does:
//!
//! - header `typ`, when present, must not be `at+jwt`, `refresh+jwt` or
//!   `dpop+jwt` (access, refresh and DPoP tokens are not service auth);
//! - `alg` is `ES256K` (secp256k1) or `ES256` (P-256), and the issuer's key
//!   must be on that curve;
//! - `iss` is a DID, optionally with a `#fragment` naming the service
//!   (`#atproto_labeler` selects the labeler key, anything else the
//!   account's `#atproto` key);
//! - `aud` is our service DID, `exp` is in the future, `lxm` is the method
//!   called;
//! - the signature is 64-byte compact `r || s`, low-S, over
//!   `base64url(header) . base64url(payload)`, checked against the key in
//!   the issuer's DID document (cached by the resolver; on a mismatch the
//!   document is fetched again once, for a key rotated since it was cached).
//!
//! Parsing never panics and is bounded: tokens over [`MAX_TOKEN_BYTES`] are
//! refused before decoding. Errors name the rule that failed, never the
//! token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::Deserialize;
use skyhouse_atproto::crypto::{Curve, PublicKey};
use skyhouse_atproto::syntax::Did;
use skyhouse_identity::Resolver;

/// A DID's document is fetched again for a bad signature at most this
/// often: tokens with bad signatures must not turn into a stream of
/// requests to the PLC directory or a did:web host.
pub const REFETCH_INTERVAL: Duration = Duration::from_secs(30);

/// Most DIDs whose last re-fetch is remembered (~100 bytes each: ~1 MB).
const REFETCH_TRACKED: usize = 10_000;

/// Longest token accepted, bytes. Real service-auth tokens are ~400–600
/// bytes; the cap bounds the work a hostile header can cause.
pub const MAX_TOKEN_BYTES: usize = 4096;

/// Why a token was refused. The message names the rule, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Not three base64url parts of JSON, or too long.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `typ` says it is an access, refresh or DPoP token.
    #[error("token type {0:?} is not service auth")]
    WrongType(String),
    /// `alg` is neither ES256K nor ES256.
    #[error("unsupported alg {0:?}")]
    Alg(String),
    /// `iss` is missing or not a DID.
    #[error("iss is not a DID")]
    Issuer,
    /// `aud` is not our service DID.
    #[error("aud does not match this service")]
    Audience,
    /// `exp` is missing or in the past.
    #[error("token expired")]
    Expired,
    /// `lxm` is missing or names another method.
    #[error("lxm does not permit this method")]
    Method,
    /// The issuer's DID document could not be had or holds no usable key.
    #[error("issuer key unavailable: {0}")]
    Key(String),
    /// The signature is not the issuer's key's over the token.
    #[error("bad token signature")]
    Signature,
}

impl AuthError {
    /// Every [`AuthError::reason`] (the closed label set).
    pub const REASONS: [&'static str; 9] = [
        "malformed",
        "typ",
        "alg",
        "iss",
        "aud",
        "exp",
        "lxm",
        "key",
        "signature",
    ];

    /// A closed-set label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::Malformed(_) => "malformed",
            AuthError::WrongType(_) => "typ",
            AuthError::Alg(_) => "alg",
            AuthError::Issuer => "iss",
            AuthError::Audience => "aud",
            AuthError::Expired => "exp",
            AuthError::Method => "lxm",
            AuthError::Key(_) => "key",
            AuthError::Signature => "signature",
        }
    }
}

#[derive(Deserialize)]
struct Header {
    alg: Option<String>,
    typ: Option<String>,
}

#[derive(Deserialize)]
struct Claims {
    iss: Option<String>,
    aud: Option<String>,
    exp: Option<serde_json::Number>,
    lxm: Option<String>,
}

/// A token that passed every check except the signature.
#[derive(Debug)]
struct Parsed<'a> {
    signed: &'a str,
    signature: Vec<u8>,
    curve: Curve,
    /// The issuer DID, without fragment.
    did: String,
    /// The fragment of `iss`, if any (without `#`).
    fragment: Option<String>,
}

fn decode_part(part: &str) -> Result<Vec<u8>, AuthError> {
    URL_SAFE_NO_PAD
        .decode(part.as_bytes())
        .map_err(|_| AuthError::Malformed("a part is not base64url"))
}

/// Checks everything but the signature; `now` is Unix seconds.
fn parse<'a>(token: &'a str, aud: &str, lxm: &str, now: u64) -> Result<Parsed<'a>, AuthError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Malformed("too long"));
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed("not three dot-separated parts"));
    };
    let header: Header = serde_json::from_slice(&decode_part(h)?)
        .map_err(|_| AuthError::Malformed("header is not a JSON object"))?;
    if let Some(typ) = &header.typ {
        if matches!(typ.as_str(), "at+jwt" | "refresh+jwt" | "dpop+jwt") {
            return Err(AuthError::WrongType(typ.clone()));
        }
    }
    let alg = header.alg.unwrap_or_default();
    let curve = Curve::from_jwt_alg(&alg)
        .ok_or_else(|| AuthError::Alg(alg.chars().take(16).collect::<String>()))?;
    let claims: Claims = serde_json::from_slice(&decode_part(p)?)
        .map_err(|_| AuthError::Malformed("payload is not a JSON object of claims"))?;
    let iss = claims.iss.ok_or(AuthError::Issuer)?;
    let (did, fragment) = match iss.split_once('#') {
        Some((d, f)) => (d.to_owned(), Some(f.to_owned())),
        None => (iss, None),
    };
    if !Did::is_valid(&did) {
        return Err(AuthError::Issuer);
    }
    if claims.aud.as_deref() != Some(aud) {
        return Err(AuthError::Audience);
    }
    // `exp` is a NumericDate: seconds, possibly fractional.
    let exp = claims
        .exp
        .and_then(|n| n.as_f64())
        .ok_or(AuthError::Expired)?;
    // NaN cannot come out of JSON; anything not after `now` is expired.
    if exp.partial_cmp(&(now as f64)) != Some(std::cmp::Ordering::Greater) {
        return Err(AuthError::Expired);
    }
    if claims.lxm.as_deref() != Some(lxm) {
        return Err(AuthError::Method);
    }
    let signature = decode_part(s)?;
    Ok(Parsed {
        signed: &token[..h.len() + 1 + p.len()],
        signature,
        curve,
        did,
        fragment,
    })
}

/// Where issuers' keys come from: their DID documents, through a
/// [`Resolver`] (which caches them).
#[derive(Debug, Clone)]
pub struct ServiceAuth {
    resolver: Arc<Resolver>,
    service_did: String,
    /// When each DID's document was last re-fetched for a bad signature.
    refetched: Arc<Mutex<HashMap<String, Instant>>>,
}

impl ServiceAuth {
    /// Verify tokens addressed to `service_did` with keys found by `resolver`.
    pub fn new(resolver: Arc<Resolver>, service_did: impl Into<String>) -> ServiceAuth {
        ServiceAuth {
            resolver,
            service_did: service_did.into(),
            refetched: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Our service DID (what `aud` must be).
    pub fn service_did(&self) -> &str {
        &self.service_did
    }

    /// Verify `token` for a call of method `lxm`; the caller's DID on success.
    pub async fn verify(&self, token: &str, lxm: &str) -> Result<String, AuthError> {
        self.verify_at(token, lxm, unix_now()).await
    }

    /// [`verify`](Self::verify) as if the time were `now` (Unix seconds).
    pub async fn verify_at(&self, token: &str, lxm: &str, now: u64) -> Result<String, AuthError> {
        let parsed = parse(token, &self.service_did, lxm, now)?;
        let key = self.key(&parsed, false).await?;
        if check(&key, &parsed)? {
            return Ok(parsed.did);
        }
        // The key may have rotated since the document was cached: once more
        // with a fresh document (at most every REFETCH_INTERVAL per DID),
        // and only if that gives another key.
        if !self.may_refetch(&parsed.did) {
            return Err(AuthError::Signature);
        }
        let fresh = self.key(&parsed, true).await?;
        if fresh != key && check(&fresh, &parsed)? {
            return Ok(parsed.did);
        }
        Err(AuthError::Signature)
    }

    /// Whether `did` may be re-fetched now (and note that it is).
    fn may_refetch(&self, did: &str) -> bool {
        let now = Instant::now();
        let mut seen = self.refetched.lock().unwrap_or_else(|e| e.into_inner());
        if seen
            .get(did)
            .is_some_and(|at| now.duration_since(*at) < REFETCH_INTERVAL)
        {
            return false;
        }
        if seen.len() >= REFETCH_TRACKED {
            seen.retain(|_, at| now.duration_since(*at) < REFETCH_INTERVAL);
            if seen.len() >= REFETCH_TRACKED {
                seen.clear();
            }
        }
        seen.insert(did.to_owned(), now);
        true
    }

    async fn key(&self, parsed: &Parsed<'_>, fresh: bool) -> Result<PublicKey, AuthError> {
        let doc = if fresh {
            self.resolver.refresh(&parsed.did).await
        } else {
            self.resolver.resolve(&parsed.did).await
        }
        .map_err(|e| AuthError::Key(e.to_string()))?;
        let key = match parsed.fragment.as_deref() {
            Some("atproto_labeler") => doc.labeler_key(),
            _ => doc.signing_key(),
        }
        .map_err(|e| AuthError::Key(e.to_string()))?;
        Ok(key)
    }
}

/// Whether the signature verifies; a key on the other curve than `alg`
/// names is a refusal, not a retry.
fn check(key: &PublicKey, parsed: &Parsed<'_>) -> Result<bool, AuthError> {
    if key.curve() != parsed.curve {
        return Err(AuthError::Alg(parsed.curve.jwt_alg().to_owned()));
    }
    Ok(key
        .verify(parsed.signed.as_bytes(), &parsed.signature)
        .is_ok())
}

/// Seconds since the Unix epoch.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

#[cfg(test)]
mod jwt_oracle;

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    fn token(header: &str, claims: &str) -> String {
        format!("{}.{}.{}", b64(header), b64(claims), b64("sig"))
    }

    const AUD: &str = "did:web:feeds.example";
    const LXM: &str = "app.bsky.feed.getFeedSkeleton";

    fn claims(exp: u64) -> String {
        format!(
            r#"{{"iss":"did:plc:abcdefghijklmnopqrstuvwx","aud":"{AUD}","exp":{exp},"lxm":"{LXM}"}}"#
        )
    }

    #[test]
    fn well_formed_claims_parse() {
        let t = token(r#"{"alg":"ES256K","typ":"JWT"}"#, &claims(2000));
        let p = parse(&t, AUD, LXM, 1000).expect("parses");
        assert_eq!(p.did, "did:plc:abcdefghijklmnopqrstuvwx");
        assert_eq!(p.curve, Curve::K256);
        assert_eq!(p.signature, b"sig");
    }

    #[test]
    fn each_rule_refuses() {
        let ok_h = r#"{"alg":"ES256"}"#;
        for typ in ["at+jwt", "refresh+jwt", "dpop+jwt"] {
            let h = format!(r#"{{"alg":"ES256K","typ":"{typ}"}}"#);
            assert!(matches!(
                parse(&token(&h, &claims(2000)), AUD, LXM, 1000),
                Err(AuthError::WrongType(_))
            ));
        }
        for alg in [r#"{"alg":"HS256"}"#, r#"{"alg":"none"}"#, "{}"] {
            assert!(matches!(
                parse(&token(alg, &claims(2000)), AUD, LXM, 1000),
                Err(AuthError::Alg(_))
            ));
        }
        assert_eq!(
            parse(&token(ok_h, &claims(1000)), AUD, LXM, 1000).err(),
            Some(AuthError::Expired)
        );
        assert_eq!(
            parse(&token(ok_h, &claims(2000)), "did:web:other", LXM, 1000).err(),
            Some(AuthError::Audience)
        );
        assert_eq!(
            parse(
                &token(ok_h, &claims(2000)),
                AUD,
                "app.bsky.feed.other",
                1000
            )
            .err(),
            Some(AuthError::Method)
        );
        let no_lxm = format!(r#"{{"iss":"did:plc:abc","aud":"{AUD}","exp":2000}}"#);
        assert_eq!(
            parse(&token(ok_h, &no_lxm), AUD, LXM, 1000).err(),
            Some(AuthError::Method)
        );
        let bad_iss = format!(r#"{{"iss":"alice","aud":"{AUD}","exp":2000,"lxm":"{LXM}"}}"#);
        assert_eq!(
            parse(&token(ok_h, &bad_iss), AUD, LXM, 1000).err(),
            Some(AuthError::Issuer)
        );
        let frag = format!(
            r#"{{"iss":"did:plc:abc#atproto_labeler","aud":"{AUD}","exp":2000,"lxm":"{LXM}"}}"#
        );
        let t = token(ok_h, &frag);
        let p = parse(&t, AUD, LXM, 1000).expect("fragment allowed");
        assert_eq!(p.fragment.as_deref(), Some("atproto_labeler"));
    }

    #[test]
    fn hostile_bytes_never_panic() {
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        let cases = [
            "",
            ".",
            "..",
            "...",
            "a.b.c",
            "a.b.c.d",
            "\u{0}.\u{0}.\u{0}",
            "é.é.é",
            &long,
            "eyJ9.eyJ9.",
            "W10.W10.W10",
            "bnVsbA.bnVsbA.",
        ];
        for c in cases {
            assert!(parse(c, AUD, LXM, 0).is_err(), "{c:?}");
        }
        let weird = [
            r#"{"alg":1}"#,
            r#"{"alg":"ES256","typ":null}"#,
            r#"[1,2]"#,
            "1e999",
            r#"{"alg":"ES256K","alg":"ES256"}"#,
        ];
        for h in weird {
            let _ = parse(&token(h, &claims(2000)), AUD, LXM, 1000);
        }
        let exps = [r#""2000""#, "1e400", "-1", "null", "18446744073709551616"];
        for e in exps {
            let c = format!(r#"{{"iss":"did:plc:abc","aud":"{AUD}","exp":{e},"lxm":"{LXM}"}}"#);
            let _ = parse(&token(r#"{"alg":"ES256"}"#, &c), AUD, LXM, 1000);
        }
    }

    proptest::proptest! {
        /// Any text, and any bytes base64url-encoded into the three parts,
        /// is refused or accepted without a panic.
        #[test]
        fn arbitrary_tokens_never_panic(text in ".{0,600}", h in proptest::collection::vec(proptest::num::u8::ANY, 0..200),
                                        p in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
                                        s in proptest::collection::vec(proptest::num::u8::ANY, 0..80)) {
            let _ = parse(&text, AUD, LXM, 1000);
            let t = format!("{}.{}.{}", URL_SAFE_NO_PAD.encode(&h), URL_SAFE_NO_PAD.encode(&p), URL_SAFE_NO_PAD.encode(&s));
            let _ = parse(&t, AUD, LXM, 1000);
        }

        /// Well-formed JSON with arbitrary claim values never panics, and
        /// is accepted only when every rule holds.
        #[test]
        fn arbitrary_claims_follow_the_rules(alg in "(ES256K|ES256|HS256|none|)", typ in "(JWT|at\\+jwt|dpop\\+jwt|refresh\\+jwt|)",
                                             exp in proptest::num::i64::ANY, aud_ok in proptest::bool::ANY, lxm_ok in proptest::bool::ANY) {
            let header = serde_json::json!({"alg": alg, "typ": typ});
            let claims = serde_json::json!({"iss": "did:plc:abc", "aud": if aud_ok { AUD } else { "did:web:x" },
                                             "exp": exp, "lxm": if lxm_ok { LXM } else { "x.y.z" }});
            let t = token(&header.to_string(), &claims.to_string());
            let ok = parse(&t, AUD, LXM, 1000).is_ok();
            let typ_ok = !matches!(typ.as_str(), "at+jwt" | "dpop+jwt" | "refresh+jwt");
            let alg_ok = alg == "ES256K" || alg == "ES256";
            proptest::prop_assert_eq!(ok, typ_ok && alg_ok && aud_ok && lxm_ok && exp > 1000);
        }
    }

    #[test]
    fn bearer_headers() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer "), None);
        assert_eq!(bearer("Bearer"), None);
    }
}
