//! The resolver: method dispatch, HTTP with caps, cache and request coalescing.

use std::collections::HashMap;
use std::error::Error as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::ACCEPT;
use reqwest::{redirect, StatusCode, Url};
use skyhouse_atproto::crypto::{DidDocument, PublicKey};
use skyhouse_atproto::syntax::Did;
use tokio::sync::OnceCell;
use tokio::time::Instant;

use crate::cache::TtlCache;
use crate::dns::TxtClient;
use crate::error::{clip, ConfigError, ResolveError};
use crate::handle::{HandleConfig, HandleResolution};

/// The public PLC directory.
pub const DEFAULT_PLC_URL: &str = "https://plc.directory";

/// Settings of a [`Resolver`]. `Default` gives production values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolverConfig {
    /// The PLC directory `did:plc` DIDs are resolved through
    /// (`GET <plc_url>/<did>`). Default [`DEFAULT_PLC_URL`]; tests point it
    /// at a local directory.
    pub plc_url: String,
    /// Longest a whole request may take (connect, headers and body).
    /// Default 10 s: the PLC directory answers in well under a second, and
    /// a stuck `did:web` host must not hold a worker for long.
    pub timeout: Duration,
    /// Longest a TCP/TLS connect may take. Default 5 s.
    pub connect_timeout: Duration,
    /// Largest DID document accepted, in bytes. Default 64 KiB: real
    /// documents are 1–2 KB; the cap bounds memory against a hostile
    /// `did:web` host.
    pub max_document_bytes: usize,
    /// Most DIDs cached (documents and not-found answers). Default 50,000
    /// (≈ 50–100 MB at ~1–2 KB a document); the oldest entry is evicted
    /// first when full.
    pub cache_capacity: usize,
    /// How long a resolved document is reused. Default 1 h: keys and PDS
    /// moves are rare, and a caller that sees a bad signature calls
    /// [`Resolver::invalidate`] and resolves again.
    pub ttl: Duration,
    /// How long "not found" is remembered. Default 5 min: shorter than
    /// `ttl` because a DID being created may appear at any moment, long
    /// enough that a flood of events for a missing DID asks once.
    pub negative_ttl: Duration,
    /// Resolve `did:web:localhost%3A<port>` and `did:web:127.0.0.1%3A<port>`
    /// over plain `http://`. Default false: in production a DID must not
    /// make the indexer call services on its own machine. Tests enable it.
    pub allow_loopback_http: bool,
    /// How handles are resolved to check a DID document's claim (DNS TXT,
    /// then HTTPS well-known).
    pub handles: HandleConfig,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        ResolverConfig {
            plc_url: DEFAULT_PLC_URL.to_string(),
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_document_bytes: 64 << 10,
            cache_capacity: 50_000,
            ttl: Duration::from_secs(3600),
            negative_ttl: Duration::from_secs(300),
            allow_loopback_http: false,
            handles: HandleConfig::default(),
        }
    }
}

impl ResolverConfig {
    /// Checks the settings before any I/O.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |reason: &str| ConfigError::PlcUrl {
            url: self.plc_url.clone(),
            reason: reason.to_string(),
        };
        let url = Url::parse(&self.plc_url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("the scheme must be http or https"));
        }
        if url.host_str().is_none() {
            return Err(bad("no host"));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(bad("no query or fragment allowed"));
        }
        for (name, zero) in [
            ("timeout", self.timeout.is_zero()),
            ("connect_timeout", self.connect_timeout.is_zero()),
            ("max_document_bytes", self.max_document_bytes == 0),
            ("cache_capacity", self.cache_capacity == 0),
        ] {
            if zero {
                return Err(ConfigError::Zero { name });
            }
        }
        self.handles.validate()?;
        Ok(())
    }
}

/// A cached answer: a document, or "this DID does not exist".
#[derive(Debug, Clone)]
enum Cached {
    /// The document and when it was fetched (Unix microseconds).
    Found(Arc<DidDocument>, u64),
    NotFound {
        url: String,
        status: u16,
    },
}

type Timed = Result<(Arc<DidDocument>, u64), ResolveError>;
type Flight = Arc<OnceCell<Timed>>;

/// Resolves DIDs to DID documents: `did:plc` through a PLC directory,
/// `did:web` through `https://<host>/.well-known/did.json`.
///
/// Answers are cached in memory (bounded, with a TTL; "not found" with a
/// shorter one); concurrent requests for the same DID share one fetch.
/// Cheap to share: wrap it in an `Arc` and call it from every task.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// use skyhouse_identity::{Resolver, ResolverConfig};
///
/// let resolver = Resolver::new(ResolverConfig::default())?;
/// let did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
/// let key = resolver.signing_key(did).await?;
/// let pds = resolver.pds_endpoint(did).await?;
/// // On a bad signature: forget the cached document and try once more.
/// resolver.invalidate(did);
/// let fresh_key = resolver.signing_key(did).await?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Resolver {
    pub(crate) http: reqwest::Client,
    config: ResolverConfig,
    plc: Url,
    cache: Mutex<TtlCache<Cached>>,
    inflight: Mutex<HashMap<String, Flight>>,
    /// The `_atproto` TXT lookups; `None` when no nameserver is configured.
    pub(crate) dns: Option<TxtClient>,
    /// `HandleConfig::http_base`, parsed.
    pub(crate) handle_http_base: Option<Url>,
    /// Handle → resolution answers (not the unknown ones).
    pub(crate) handle_cache: Mutex<TtlCache<HandleResolution>>,
}

impl Resolver {
    /// A resolver with `config` (validated first).
    pub fn new(config: ResolverConfig) -> Result<Resolver, ConfigError> {
        config.validate()?;
        let mut plc = Url::parse(&config.plc_url).map_err(|e| ConfigError::PlcUrl {
            url: config.plc_url.clone(),
            reason: e.to_string(),
        })?;
        // `<plc>/<did>` must keep any path prefix of the directory's URL.
        if !plc.path().ends_with('/') {
            let path = format!("{}/", plc.path());
            plc.set_path(&path);
        }
        let http = reqwest::Client::builder()
            .timeout(config.timeout)
            .connect_timeout(config.connect_timeout)
            // A redirect could lead anywhere (an internal address, another
            // DID's document); a DID document is served where it belongs.
            .redirect(redirect::Policy::none())
            .user_agent(concat!("skyhouse-identity/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::PlcUrl {
                url: config.plc_url.clone(),
                reason: format!("cannot build the HTTP client: {e}"),
            })?;
        let nameservers = match &config.handles.nameservers {
            Some(list) => list.clone(),
            None => crate::dns::system_nameservers().map_err(|e| ConfigError::Nameservers {
                reason: format!("cannot read /etc/resolv.conf: {e}"),
            })?,
        };
        if config.handles.nameservers.is_none() && nameservers.is_empty() {
            return Err(ConfigError::Nameservers {
                reason: "/etc/resolv.conf names no nameserver".to_string(),
            });
        }
        let dns = (!nameservers.is_empty()).then(|| {
            TxtClient::new(
                nameservers,
                config.handles.dns_timeout,
                config.handles.dns_attempts,
            )
        });
        let handle_http_base = config.handles.http_base_url()?;
        Ok(Resolver {
            http,
            cache: Mutex::new(TtlCache::new(config.cache_capacity)),
            inflight: Mutex::new(HashMap::new()),
            handle_cache: Mutex::new(TtlCache::new(config.cache_capacity)),
            dns,
            handle_http_base,
            plc,
            config,
        })
    }

    /// The settings in use.
    pub fn config(&self) -> &ResolverConfig {
        &self.config
    }

    /// The DID document of `did`, from the cache when fresh.
    pub async fn resolve(&self, did: &str) -> Result<Arc<DidDocument>, ResolveError> {
        self.resolve_timed(did).await.map(|(doc, _)| doc)
    }

    /// The DID document of `did` and when it was fetched (Unix
    /// microseconds): a cached answer is as old as its fetch, which is what
    /// a row built from it must say (see [`Identity::version`](crate::Identity::version)).
    pub async fn resolve_timed(&self, did: &str) -> Result<(Arc<DidDocument>, u64), ResolveError> {
        if let Some(cached) = self.cached(did) {
            return cached;
        }
        let flight = {
            let mut inflight = self.inflight.lock().expect("identity: inflight lock");
            inflight.entry(did.to_string()).or_default().clone()
        };
        let result = flight
            .get_or_init(|| async {
                // A caller that waited on an earlier flight may find the
                // answer cached by now.
                if let Some(cached) = self.cached(did) {
                    return cached;
                }
                let result = self.fetch(did).await.map(|doc| (doc, crate::now_us()));
                self.store(did, &result);
                result
            })
            .await
            .clone();
        let mut inflight = self.inflight.lock().expect("identity: inflight lock");
        if inflight.get(did).is_some_and(|f| Arc::ptr_eq(f, &flight)) {
            inflight.remove(did);
        }
        result
    }

    /// Forgets what is cached for `did` (document or not-found), so the
    /// next [`resolve`](Resolver::resolve) asks the network again: call it
    /// once when a signature does not verify with the cached key.
    pub fn invalidate(&self, did: &str) {
        self.cache.lock().expect("identity: cache lock").remove(did);
    }

    /// [`invalidate`](Resolver::invalidate) then [`resolve`](Resolver::resolve).
    pub async fn refresh(&self, did: &str) -> Result<Arc<DidDocument>, ResolveError> {
        self.invalidate(did);
        self.resolve(did).await
    }

    /// The account's repository signing key (`#atproto`), Multikey or legacy form.
    pub async fn signing_key(&self, did: &str) -> Result<PublicKey, ResolveError> {
        let doc = self.resolve(did).await?;
        doc.signing_key().map_err(|source| ResolveError::Key {
            did: did.to_string(),
            source,
        })
    }

    /// The account's PDS URL (`#atproto_pds`), without a trailing `/`.
    pub async fn pds_endpoint(&self, did: &str) -> Result<String, ResolveError> {
        let doc = self.resolve(did).await?;
        doc.pds_endpoint()
            .map(|url| url.trim_end_matches('/').to_string())
            .ok_or_else(|| ResolveError::NoPds {
                did: did.to_string(),
            })
    }

    /// How many DIDs the cache holds (documents and not-found answers).
    pub fn cached_len(&self) -> usize {
        self.cache.lock().expect("identity: cache lock").len()
    }

    fn cached(&self, did: &str) -> Option<Timed> {
        let cached = self
            .cache
            .lock()
            .expect("identity: cache lock")
            .get(did, Instant::now())?;
        Some(match cached {
            Cached::Found(doc, at) => Ok((doc, at)),
            Cached::NotFound { url, status } => Err(ResolveError::NotFound {
                did: did.to_string(),
                url,
                status,
            }),
        })
    }

    /// Caches documents for `ttl` and not-found for `negative_ttl`; other
    /// errors are not cached (the caller retries or gives up).
    fn store(&self, did: &str, result: &Timed) {
        let (value, ttl) = match result {
            Ok((doc, at)) => (Cached::Found(doc.clone(), *at), self.config.ttl),
            Err(ResolveError::NotFound { url, status, .. }) => (
                Cached::NotFound {
                    url: url.clone(),
                    status: *status,
                },
                self.config.negative_ttl,
            ),
            Err(_) => return,
        };
        self.cache
            .lock()
            .expect("identity: cache lock")
            .insert(did, value, Instant::now() + ttl);
    }

    /// Where `did`'s document lives.
    pub fn document_url(&self, did: &str) -> Result<Url, ResolveError> {
        let invalid = |reason: &str| ResolveError::InvalidDid {
            did: clip(did),
            reason: reason.to_string(),
        };
        let parsed: Did = did.parse().map_err(|e| invalid(&format!("{e}")))?;
        match parsed.method() {
            "plc" => {
                let id = parsed.identifier();
                // did:plc identifiers are 24 characters of base32 (a-z, 2-7):
                // nothing that could change the URL's path.
                if id.len() != 24 || !id.bytes().all(|b| matches!(b, b'a'..=b'z' | b'2'..=b'7')) {
                    return Err(invalid(
                        "a did:plc identifier is 24 characters of a-z and 2-7",
                    ));
                }
                // Not `Url::join`: it would read `did:` as a URL scheme.
                Url::parse(&format!("{}{did}", self.plc))
                    .map_err(|e| invalid(&format!("cannot build the PLC URL: {e}")))
            }
            "web" => self.web_url(did, parsed.identifier()),
            method => Err(ResolveError::Unsupported {
                did: clip(did),
                reason: format!("method {method:?} (atproto uses did:plc and did:web)"),
            }),
        }
    }

    /// `did:web:<host>` → `https://<host>/.well-known/did.json`. Only
    /// host-level DIDs (atproto allows no paths); a port (`%3A`) only for
    /// loopback hosts with [`ResolverConfig::allow_loopback_http`], over http.
    fn web_url(&self, did: &str, id: &str) -> Result<Url, ResolveError> {
        let unsupported = |reason: &str| ResolveError::Unsupported {
            did: clip(did),
            reason: reason.to_string(),
        };
        if id.contains(':') {
            return Err(unsupported(
                "did:web with a path (atproto allows host-level did:web only)",
            ));
        }
        let (host, port) = match id.split_once("%3A").or_else(|| id.split_once("%3a")) {
            Some((host, port)) => {
                let port: u16 = port
                    .parse()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| unsupported("the port after %3A is not a port number"))?;
                (host, Some(port))
            }
            None => (id, None),
        };
        if host.contains('%') {
            return Err(unsupported(
                "percent-encoding other than one %3A port separator",
            ));
        }
        let loopback = matches!(host, "localhost" | "127.0.0.1");
        if loopback || port.is_some() {
            if !(loopback && port.is_some() && self.config.allow_loopback_http) {
                return Err(unsupported(
                    "loopback hosts and ports are allowed only as localhost%3A<port> in tests",
                ));
            }
            let url = format!("http://{host}:{}/.well-known/did.json", port.unwrap_or(80));
            return Url::parse(&url).map_err(|e| unsupported(&e.to_string()));
        }
        let valid_host = host.contains('.')
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && !label.starts_with('-')
                    && !label.ends_with('-')
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !valid_host {
            return Err(ResolveError::InvalidDid {
                did: clip(did),
                reason: "the did:web host is not a domain name".to_string(),
            });
        }
        Url::parse(&format!("https://{host}/.well-known/did.json"))
            .map_err(|e| unsupported(&e.to_string()))
    }

    async fn fetch(&self, did: &str) -> Result<Arc<DidDocument>, ResolveError> {
        let url = self.document_url(did)?;
        let url_text = url.to_string();
        let transport = |e: reqwest::Error| ResolveError::Transport {
            did: did.to_string(),
            url: url_text.clone(),
            message: one_line(&e, self.config.timeout),
        };
        let mut response = self
            .http
            .get(url.clone())
            .header(ACCEPT, "application/did+ld+json, application/json")
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Err(ResolveError::NotFound {
                did: did.to_string(),
                url: url_text,
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(ResolveError::Http {
                did: did.to_string(),
                url: url_text,
                status: status.as_u16(),
            });
        }
        let max = self.config.max_document_bytes;
        let too_large = || ResolveError::TooLarge {
            did: did.to_string(),
            url: url_text.clone(),
            max,
        };
        if response
            .content_length()
            .is_some_and(|len| len > max as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > max {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        let invalid = |reason: String| ResolveError::InvalidDocument {
            did: did.to_string(),
            url: url_text.clone(),
            reason,
        };
        let doc = DidDocument::from_json(&body).map_err(|e| invalid(e.to_string()))?;
        // A host may serve any JSON: the document must be this DID's.
        if doc.id != did {
            return Err(invalid(format!("the document is for {}", clip(&doc.id))));
        }
        Ok(Arc::new(doc))
    }
}

/// A reqwest error and its causes on one line.
pub(crate) fn one_line(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {} ms", timeout.as_millis());
    }
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out.replace('\n', " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver(allow_loopback_http: bool) -> Resolver {
        Resolver::new(ResolverConfig {
            allow_loopback_http,
            ..ResolverConfig::default()
        })
        .expect("default config is valid")
    }

    #[test]
    fn document_urls() {
        let r = resolver(false);
        let url = |did: &str| r.document_url(did).map(|u| u.to_string());
        assert_eq!(
            url("did:plc:ewvi7nxzyoun6zhxrhs64oiz").as_deref(),
            Ok("https://plc.directory/did:plc:ewvi7nxzyoun6zhxrhs64oiz")
        );
        assert_eq!(
            url("did:web:example.com").as_deref(),
            Ok("https://example.com/.well-known/did.json")
        );
        for bad in [
            "did:plc:short",
            "did:plc:ewvi7nxzyoun6zhxrhs64oi1",
            "did:plc:../../etc/passwdxxxxxxxxxxxx",
            "did:web:example.com:user:alice",
            "did:web:localhost%3A1234",
            "did:web:example.com%3A8443",
            "did:web:localhost",
            "did:web:nodots",
            "did:web:exa%2Fmple.com",
            "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme",
            "not a did",
            "",
        ] {
            let err = r.document_url(bad).expect_err(bad);
            assert!(!err.to_string().contains('\n'), "{err}");
            assert!(!err.is_retriable(), "{err}");
        }
        let loopback = resolver(true);
        assert_eq!(
            loopback
                .document_url("did:web:localhost%3A1234")
                .map(|u| u.to_string())
                .as_deref(),
            Ok("http://localhost:1234/.well-known/did.json")
        );
        assert_eq!(
            loopback
                .document_url("did:web:127.0.0.1%3A80")
                .map(|u| u.to_string())
                .as_deref(),
            Ok("http://127.0.0.1/.well-known/did.json")
        );
        assert!(loopback.document_url("did:web:localhost%3A0").is_err());
        assert!(loopback.document_url("did:web:example.com%3A8080").is_err());
    }

    #[test]
    fn plc_url_keeps_its_path_prefix() {
        let r = Resolver::new(ResolverConfig {
            plc_url: "http://127.0.0.1:1234/plc".into(),
            ..ResolverConfig::default()
        })
        .expect("valid");
        assert_eq!(
            r.document_url("did:plc:ewvi7nxzyoun6zhxrhs64oiz")
                .map(|u| u.to_string())
                .as_deref(),
            Ok("http://127.0.0.1:1234/plc/did:plc:ewvi7nxzyoun6zhxrhs64oiz")
        );
    }

    #[test]
    fn config_is_validated() {
        let with = |f: fn(&mut ResolverConfig)| {
            let mut c = ResolverConfig::default();
            f(&mut c);
            c.validate()
        };
        assert!(with(|_| {}).is_ok());
        assert!(matches!(
            with(|c| c.plc_url = "plc.directory".into()),
            Err(ConfigError::PlcUrl { .. })
        ));
        assert!(matches!(
            with(|c| c.plc_url = "ftp://plc.directory".into()),
            Err(ConfigError::PlcUrl { .. })
        ));
        assert!(matches!(
            with(|c| c.plc_url = "https://plc.directory/?x=1".into()),
            Err(ConfigError::PlcUrl { .. })
        ));
        assert_eq!(
            with(|c| c.cache_capacity = 0),
            Err(ConfigError::Zero {
                name: "cache_capacity"
            })
        );
        assert_eq!(
            with(|c| c.timeout = Duration::ZERO),
            Err(ConfigError::Zero { name: "timeout" })
        );
    }
}
