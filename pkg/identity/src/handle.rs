//! Handles, verified in both directions as the atproto spec requires: the
//! DID document claims a handle (`alsoKnownAs`, the first `at://` entry),
//! and the handle must name the DID back, by a DNS TXT record
//! `_atproto.<handle>` = `did=<DID>` or else by
//! `https://<handle>/.well-known/atproto-did`. A claim that does not come
//! back is shown as [`INVALID_HANDLE`], as Bluesky shows it.
//!
//! Three outcomes, because a lookup that could not be made is not a "no":
//! [`HandleStatus::Valid`], [`HandleStatus::Invalid`] (the handle names
//! another DID or none) and [`HandleStatus::Unknown`] (timeouts, 5xx, a
//! nameserver that does not answer). An unknown identity is stored with the
//! lowest version ([`Identity::version`]), so it shows `handle.invalid`
//! where nothing better is known and never replaces a handle that was.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::HOST;
use reqwest::{StatusCode, Url};
use skyhouse_atproto::syntax::{is_disallowed_tld, Did, Handle};
use tokio::time::Instant;

use crate::dns::{DnsError, TxtAnswer};
use crate::error::{clip, ConfigError, ResolveError};
use crate::resolver::{one_line, Resolver};

pub use skyhouse_atproto::syntax::INVALID_HANDLE;

/// Largest `/.well-known/atproto-did` body read: a DID is at most 2 KiB.
const MAX_WELL_KNOWN_BYTES: usize = 4096;

/// How handles are resolved. `Default` gives production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleConfig {
    /// Nameservers asked for `_atproto.<handle>` TXT records. `None`
    /// (default): the system's, from `/etc/resolv.conf`, read when the
    /// resolver is built. An empty list skips DNS (HTTPS only).
    pub nameservers: Option<Vec<SocketAddr>>,
    /// How long to wait for each DNS answer. Default 2 s.
    pub dns_timeout: Duration,
    /// Rounds over the nameservers before DNS gives up. Default 2.
    pub dns_attempts: u32,
    /// Instead of `https://<handle>/.well-known/atproto-did`, fetch
    /// `<http_base>/.well-known/atproto-did` with the handle as the `Host`
    /// header. Default `None`; tests point it at the reference PDS, which
    /// answers for its own handles that way (as `@atproto/dev-env` resolves
    /// its `.test` handles).
    pub http_base: Option<String>,
    /// Longest the well-known request may take. Default 5 s.
    pub http_timeout: Duration,
}

impl Default for HandleConfig {
    fn default() -> Self {
        HandleConfig {
            nameservers: None,
            dns_timeout: Duration::from_secs(2),
            dns_attempts: 2,
            http_base: None,
            http_timeout: Duration::from_secs(5),
        }
    }
}

impl HandleConfig {
    /// A configuration for loopback tests: DNS from `nameservers` only,
    /// the well-known path from `http_base`, short timeouts.
    pub fn loopback(nameservers: Vec<SocketAddr>, http_base: Option<String>) -> HandleConfig {
        HandleConfig {
            nameservers: Some(nameservers),
            dns_timeout: Duration::from_millis(500),
            dns_attempts: 1,
            http_base,
            http_timeout: Duration::from_secs(5),
        }
    }

    /// Checks the settings before any I/O (a flag's value is refused at
    /// start, not at the first handle).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, zero) in [
            ("handles.dns_timeout", self.dns_timeout.is_zero()),
            ("handles.dns_attempts", self.dns_attempts == 0),
            ("handles.http_timeout", self.http_timeout.is_zero()),
        ] {
            if zero {
                return Err(ConfigError::Zero { name });
            }
        }
        self.http_base_url().map(drop)
    }

    /// `http_base` parsed, with a trailing `/` so that joining keeps its path.
    pub(crate) fn http_base_url(&self) -> Result<Option<Url>, ConfigError> {
        let Some(base) = &self.http_base else {
            return Ok(None);
        };
        let bad = |reason: &str| ConfigError::HandleHttpBase {
            url: base.clone(),
            reason: reason.to_string(),
        };
        let mut url = Url::parse(base).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(bad("expected an absolute http(s):// URL"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment allowed"));
        }
        if !url.path().ends_with('/') {
            let path = format!("{}/", url.path());
            url.set_path(&path);
        }
        Ok(Some(url))
    }
}

/// What a handle names, as DNS or HTTPS said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandleAnswer {
    /// The handle names this DID.
    Did(String),
    /// The handle names no DID (no record, several, not a DID, HTTP 404,
    /// no web server): it verifies nothing.
    NoDid,
    /// Nothing could be learnt (timeouts, 5xx, the nameservers failing):
    /// the reason, one line.
    Unknown(String),
}

/// Which method gave the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// The `_atproto` TXT record.
    Dns,
    /// The `/.well-known/atproto-did` path.
    Http,
}

impl Via {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Dns => "dns",
            Via::Http => "http",
        }
    }
}

/// One resolution of a handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleResolution {
    /// What it found.
    pub answer: HandleAnswer,
    /// The method whose answer decided.
    pub via: Via,
    /// When it was resolved (Unix microseconds).
    pub at_us: u64,
}

/// A DID's handle after the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandleStatus {
    /// The claim and the handle agree.
    Valid,
    /// The claim is missing or not a handle, or the handle names another
    /// DID or none.
    Invalid,
    /// The handle could not be resolved now (see [`HandleAnswer::Unknown`]).
    Unknown,
}

impl HandleStatus {
    /// The metric label: `valid`, `invalid`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            HandleStatus::Valid => "valid",
            HandleStatus::Invalid => "invalid",
            HandleStatus::Unknown => "unknown",
        }
    }
}

/// A DID and the handle to show for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The DID.
    pub did: String,
    /// The verified handle, lower case; [`INVALID_HANDLE`] otherwise.
    pub handle: String,
    /// How the check ended.
    pub status: HandleStatus,
    /// Why it is not valid (one line; empty when valid).
    pub reason: String,
    /// When the information was had (Unix microseconds): the older of the
    /// DID document's fetch and the handle's resolution, so that an answer
    /// from a cache is as old as the lookup it keeps.
    pub at_us: u64,
}

impl Identity {
    /// The version a stored row of this identity carries: [`at_us`](Self::at_us),
    /// or 0 when the check could not be made, so the row shows
    /// `handle.invalid` where nothing else is known but never replaces a
    /// handle that is.
    pub fn version(&self) -> u64 {
        match self.status {
            HandleStatus::Unknown => 0,
            _ => self.at_us,
        }
    }
}

/// The handle a DID document claims, normalized (lower case), or why it
/// cannot be one: missing, not handle syntax, or a reserved TLD (`.local`,
/// `.invalid`, …, never resolved).
pub fn claimed_handle(claim: Option<&str>) -> Result<String, String> {
    let claim = claim.ok_or_else(|| "the DID document claims no handle".to_string())?;
    let handle = Handle::try_from(claim)
        .map_err(|e| format!("claimed handle {:?} is not a handle: {e}", clip(claim)))?
        .normalize();
    if is_disallowed_tld(handle.as_str()) {
        return Err(format!("claimed handle {handle} has a reserved TLD"));
    }
    Ok(handle.as_str().to_string())
}

/// An identity whose claim is not usable ([`claimed_handle`]'s error).
pub fn unusable(did: &str, reason: String, at_us: u64) -> Identity {
    Identity {
        did: did.to_string(),
        handle: INVALID_HANDLE.to_string(),
        status: HandleStatus::Invalid,
        reason,
        at_us,
    }
}

/// The verdict on `did` claiming `handle` (normalized), given what
/// resolving the handle found. Pure.
pub fn judge(did: &str, handle: &str, claim_at_us: u64, found: &HandleResolution) -> Identity {
    let at_us = claim_at_us.min(found.at_us);
    let (status, reason) = match &found.answer {
        HandleAnswer::Did(d) if d == did => (HandleStatus::Valid, String::new()),
        HandleAnswer::Did(d) => (
            HandleStatus::Invalid,
            format!("{handle} names {} ({})", clip(d), found.via.as_str()),
        ),
        HandleAnswer::NoDid => (HandleStatus::Invalid, format!("{handle} names no DID")),
        HandleAnswer::Unknown(why) => (HandleStatus::Unknown, format!("{handle}: {why}")),
    };
    Identity {
        did: did.to_string(),
        handle: if status == HandleStatus::Valid {
            handle.to_string()
        } else {
            INVALID_HANDLE.to_string()
        },
        status,
        reason,
        at_us,
    }
}

/// The DID a `_atproto` TXT answer names: exactly one `did=` record (as the
/// reference resolver requires), else none.
pub(crate) fn did_of_txt(records: &[Vec<u8>]) -> Option<String> {
    let mut dids = records
        .iter()
        .filter_map(|r| r.strip_prefix(b"did="))
        .map(|d| String::from_utf8_lossy(d).trim().to_string());
    let first = dids.next()?;
    dids.next().is_none().then_some(first)
}

/// What the DNS step learnt.
enum DnsStep {
    /// DNS named this DID.
    Did(String),
    /// DNS answered, and named no DID (or several).
    Nothing,
    /// DNS was not asked (no nameserver configured).
    Skipped,
    /// DNS gave no answer.
    Failed(String),
}

impl Resolver {
    /// Where `handle` (normalized) points: DNS TXT `_atproto.<handle>`
    /// first, then the well-known path. Answers that say something (a DID,
    /// or none) are cached in memory (`ttl` / `negative_ttl`); `fresh`
    /// skips the cache. Unknown answers are not cached.
    pub async fn resolve_handle(&self, handle: &str, fresh: bool) -> HandleResolution {
        if !fresh {
            let cached = self
                .handle_cache
                .lock()
                .expect("identity: handle cache lock")
                .get(handle, Instant::now());
            if let Some(c) = cached {
                return c;
            }
        }
        let found = self.lookup_handle(handle).await;
        crate::metrics::handle_resolution(&found);
        let ttl = match found.answer {
            HandleAnswer::Did(_) => Some(self.config().ttl),
            HandleAnswer::NoDid => Some(self.config().negative_ttl),
            HandleAnswer::Unknown(_) => None,
        };
        if let Some(ttl) = ttl {
            self.handle_cache
                .lock()
                .expect("identity: handle cache lock")
                .insert(handle, found.clone(), Instant::now() + ttl);
        }
        found
    }

    async fn lookup_handle(&self, handle: &str) -> HandleResolution {
        let dns = match &self.dns {
            None => DnsStep::Skipped,
            Some(client) => {
                let answer = client.txt(&format!("_atproto.{handle}")).await;
                crate::metrics::dns_query(&answer);
                match answer {
                    Ok(TxtAnswer::Records(records)) => match did_of_txt(&records) {
                        Some(did) => DnsStep::Did(did),
                        None => DnsStep::Nothing,
                    },
                    Ok(TxtAnswer::NxDomain) => DnsStep::Nothing,
                    // `_atproto.<handle>` is too long to ask: no record can exist.
                    Err(DnsError::BadName { .. }) => DnsStep::Nothing,
                    Err(e) => DnsStep::Failed(e.to_string()),
                }
            }
        };
        if let DnsStep::Did(did) = dns {
            return HandleResolution {
                answer: HandleAnswer::Did(did),
                via: Via::Dns,
                at_us: crate::now_us(),
            };
        }
        let http = self
            .well_known(handle, matches!(dns, DnsStep::Failed(_)))
            .await;
        let answer = match (http, dns) {
            (HandleAnswer::Did(did), _) => HandleAnswer::Did(did),
            // DNS gave no answer: a "no" over HTTP does not settle it (the
            // handle may be one verified by DNS only).
            (HandleAnswer::NoDid, DnsStep::Failed(why)) => {
                HandleAnswer::Unknown(format!("DNS: {why}; no DID over HTTPS"))
            }
            (HandleAnswer::Unknown(http), DnsStep::Failed(why)) => {
                HandleAnswer::Unknown(format!("DNS: {why}; {http}"))
            }
            (other, _) => other,
        };
        HandleResolution {
            answer,
            via: Via::Http,
            at_us: crate::now_us(),
        }
    }

    /// `GET /.well-known/atproto-did` for `handle`. A connection that cannot
    /// be made is a "no" when DNS answered for the name (nothing serves
    /// it), "unknown" when DNS did not.
    async fn well_known(&self, handle: &str, dns_failed: bool) -> HandleAnswer {
        let timeout = self.config().handles.http_timeout;
        let request = match &self.handle_http_base {
            Some(base) => match base.join(".well-known/atproto-did") {
                Ok(url) => self.http.get(url).header(HOST, handle),
                Err(e) => return HandleAnswer::Unknown(format!("well-known URL: {e}")),
            },
            None => match Url::parse(&format!("https://{handle}/.well-known/atproto-did")) {
                Ok(url) => self.http.get(url),
                Err(_) => return HandleAnswer::NoDid,
            },
        };
        let mut response = match request.timeout(timeout).send().await {
            Ok(r) => r,
            Err(e) if e.is_connect() && !e.is_timeout() && !dns_failed => {
                return HandleAnswer::NoDid
            }
            Err(e) => return HandleAnswer::Unknown(format!("HTTPS: {}", one_line(&e, timeout))),
        };
        let status = response.status();
        if status != StatusCode::OK {
            let code = status.as_u16();
            return if matches!(code, 408 | 425 | 429) || status.is_server_error() {
                HandleAnswer::Unknown(format!("HTTPS: HTTP {code}"))
            } else {
                HandleAnswer::NoDid
            };
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > MAX_WELL_KNOWN_BYTES {
                        return HandleAnswer::NoDid;
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => break,
                Err(e) => {
                    return HandleAnswer::Unknown(format!("HTTPS: {}", one_line(&e, timeout)))
                }
            }
        }
        let text = String::from_utf8_lossy(&body);
        let did = text.lines().next().unwrap_or("").trim();
        if Did::is_valid(did) {
            HandleAnswer::Did(did.to_string())
        } else {
            HandleAnswer::NoDid
        }
    }

    /// The identity of `did` given the handle its document claims
    /// (`claim`, as read at `claim_at_us`): the claim normalized and
    /// resolved ([`resolve_handle`](Resolver::resolve_handle)), then judged.
    pub async fn check_claim(
        &self,
        did: &str,
        claim: Option<&str>,
        claim_at_us: u64,
        fresh: bool,
    ) -> Identity {
        let identity = match claimed_handle(claim) {
            Err(reason) => unusable(did, reason, claim_at_us),
            Ok(handle) => {
                let found = self.resolve_handle(&handle, fresh).await;
                judge(did, &handle, claim_at_us, &found)
            }
        };
        crate::metrics::identity(identity.status);
        identity
    }

    /// The identity of `did`: its DID document's claim, checked. `fresh`
    /// fetches the document and resolves the handle again (an `#identity`
    /// event, a periodic re-verification); otherwise cached answers serve.
    pub async fn identity(&self, did: &str, fresh: bool) -> Result<Identity, ResolveError> {
        if fresh {
            self.invalidate(did);
        }
        let (doc, at) = self.resolve_timed(did).await?;
        Ok(self.check_claim(did, doc.handle(), at, fresh).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DID: &str = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";

    fn found(answer: HandleAnswer, at_us: u64) -> HandleResolution {
        HandleResolution {
            answer,
            via: Via::Dns,
            at_us,
        }
    }

    #[test]
    fn claims_are_normalized_or_refused() {
        assert_eq!(
            claimed_handle(Some("Alice.Example.COM")),
            Ok("alice.example.com".into())
        );
        for bad in [
            None,
            Some(""),
            Some("nodots"),
            Some("handle.invalid"),
            Some("me.local"),
            Some("a..b.com"),
        ] {
            assert!(claimed_handle(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn judging() {
        let ok = judge(DID, "a.test", 10, &found(HandleAnswer::Did(DID.into()), 20));
        assert_eq!(
            (ok.status, ok.handle.as_str(), ok.at_us, ok.version()),
            (HandleStatus::Valid, "a.test", 10, 10)
        );
        let other = judge(
            DID,
            "a.test",
            30,
            &found(HandleAnswer::Did("did:plc:other".into()), 20),
        );
        assert_eq!(
            (other.status, other.handle.as_str(), other.at_us),
            (HandleStatus::Invalid, INVALID_HANDLE, 20)
        );
        assert!(other.reason.contains("did:plc:other"), "{}", other.reason);
        let none = judge(DID, "a.test", 1, &found(HandleAnswer::NoDid, 2));
        assert_eq!(
            (none.status, none.handle.as_str()),
            (HandleStatus::Invalid, INVALID_HANDLE)
        );
        let unknown = judge(
            DID,
            "a.test",
            5,
            &found(HandleAnswer::Unknown("timeout".into()), 6),
        );
        assert_eq!(
            (unknown.status, unknown.handle.as_str(), unknown.version()),
            (HandleStatus::Unknown, INVALID_HANDLE, 0)
        );
    }

    #[test]
    fn one_did_record_or_none() {
        let r = |v: &[&str]| v.iter().map(|s| s.as_bytes().to_vec()).collect::<Vec<_>>();
        assert_eq!(did_of_txt(&r(&["did=did:plc:x"])), Some("did:plc:x".into()));
        assert_eq!(
            did_of_txt(&r(&["v=spf1", "did=did:plc:x "])),
            Some("did:plc:x".into())
        );
        assert_eq!(did_of_txt(&r(&["did=did:plc:x", "did=did:plc:y"])), None);
        assert_eq!(did_of_txt(&r(&["v=spf1"])), None);
        assert_eq!(did_of_txt(&[]), None);
    }

    #[test]
    fn http_base_keeps_its_path_and_is_checked() {
        let base = |b: &str| {
            HandleConfig {
                http_base: Some(b.into()),
                ..HandleConfig::default()
            }
            .http_base_url()
        };
        assert_eq!(
            base("http://127.0.0.1:2583/pds")
                .expect("valid")
                .map(|u| u.to_string())
                .as_deref(),
            Some("http://127.0.0.1:2583/pds/")
        );
        assert!(base("127.0.0.1:2583").is_err());
        assert!(base("ftp://x.example").is_err());
        assert!(base("http://x.example/?q=1").is_err());
    }
}
