//! What to connect to and how: endpoints, Jetstream filters, reconnect timing and limits.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use skyhouse_atproto::syntax::{Did, Nsid};
use url::Url;

/// Which protocol the endpoints speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SourceKind {
    /// Jetstream (`/subscribe`): one JSON object per text message, position `time_us`
    /// (microseconds since the Unix epoch, stamped by the Jetstream instance).
    Jetstream,
    /// The relay firehose (`com.atproto.sync.subscribeRepos`): one DAG-CBOR frame per
    /// binary message, position `seq` (per relay: two relays' sequences are unrelated).
    Firehose,
}

impl SourceKind {
    /// `"jetstream"` or `"firehose"`: the flag value and the `kind` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            SourceKind::Jetstream => "jetstream",
            SourceKind::Firehose => "firehose",
        }
    }
}

impl fmt::Display for SourceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SourceKind {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "jetstream" => Ok(SourceKind::Jetstream),
            "firehose" => Ok(SourceKind::Firehose),
            _ => Err(ConfigError::new(
                "kind",
                format!("{s:?} is neither \"jetstream\" nor \"firehose\""),
            )),
        }
    }
}

/// The four public Jetstream instances run by Bluesky, in failover order.
pub const JETSTREAM_HOSTS: [&str; 4] = [
    "wss://jetstream1.us-east.bsky.network/subscribe",
    "wss://jetstream2.us-east.bsky.network/subscribe",
    "wss://jetstream1.us-west.bsky.network/subscribe",
    "wss://jetstream2.us-west.bsky.network/subscribe",
];

/// Shorthand endpoint names accepted for Jetstream, and the instance each one means.
pub const JETSTREAM_SHORTHANDS: [(&str, &str); 4] = [
    ("us-east-1", JETSTREAM_HOSTS[0]),
    ("us-east-2", JETSTREAM_HOSTS[1]),
    ("us-west-1", JETSTREAM_HOSTS[2]),
    ("us-west-2", JETSTREAM_HOSTS[3]),
];

/// The default firehose: Bluesky's main relay.
pub const FIREHOSE_HOST: &str = "wss://bsky.network";

/// Path appended to a firehose URL that has none.
pub const FIREHOSE_PATH: &str = "/xrpc/com.atproto.sync.subscribeRepos";

/// Path appended to a Jetstream URL that has none.
pub const JETSTREAM_PATH: &str = "/subscribe";

/// Jetstream refuses more than 100 `wantedCollections` per connection.
pub const MAX_WANTED_COLLECTIONS: usize = 100;

/// Jetstream refuses more than 10,000 `wantedDids` per connection (they travel in the
/// URL: 10,000 DIDs are about 330 KB of query string).
pub const MAX_WANTED_DIDS: usize = 10_000;

/// Default first reconnect delay: 500 ms (doubled per consecutive failure).
pub const DEFAULT_BACKOFF_BASE: Duration = Duration::from_millis(500);
/// Default longest reconnect delay: 30 s.
pub const DEFAULT_BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Default uptime after which a connection counts as stable and the backoff restarts at
/// the base: 60 s.
pub const DEFAULT_BACKOFF_RESET_AFTER: Duration = Duration::from_secs(60);
/// Default liveness timeout: 15 s. Jetstream and relays carry hundreds of events per
/// second, so 15 s of silence means a dead socket, not a quiet network.
pub const DEFAULT_LIVENESS_TIMEOUT: Duration = Duration::from_secs(15);
/// Default TCP + TLS + WebSocket handshake timeout: 10 s.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default largest message accepted: 5 MiB. A `#commit`'s `blocks` is at most
/// 2,000,000 bytes (subscribeRepos lexicon) plus at most 200 ops; Jetstream events are
/// far smaller. Applies to the wire message and again to a decompressed one.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 5 << 20;

/// How far [`rewind_jetstream_cursor`] usually goes back: 5 s. Jetstream stamps
/// `time_us` when it processes an event, slightly out of order across its workers (the
/// real corpus has 42 inversions in 0.3 s), and each instance has its own clock.
pub const DEFAULT_JETSTREAM_REWIND: Duration = Duration::from_secs(5);

/// Move a Jetstream cursor back by `by`, for a restart: events near the saved position
/// may have been stamped slightly out of order, or by another instance's clock. Replayed
/// events are harmless (rows are idempotent). A cursor `<= 0` (none) stays as it is.
pub fn rewind_jetstream_cursor(time_us: i64, by: Duration) -> i64 {
    if time_us <= 0 {
        return time_us;
    }
    let by = i64::try_from(by.as_micros()).unwrap_or(i64::MAX);
    time_us.saturating_sub(by).max(1)
}

/// A zstd dictionary for Jetstream's `compress=true` messages.
///
/// Jetstream compresses each message on its own with a fixed dictionary, so decoding
/// needs the same one. [`ZstdDictionary::bundled`] is Jetstream's published dictionary;
/// tests pass one they trained themselves.
#[derive(Clone, PartialEq, Eq)]
pub struct ZstdDictionary(Arc<[u8]>);

/// Jetstream's published dictionary (112,640 bytes; see `zstd_dictionary.LICENSE`).
const BUNDLED_DICTIONARY: &[u8] = include_bytes!("../zstd_dictionary");

impl ZstdDictionary {
    /// Jetstream's own dictionary, as the public instances use.
    pub fn bundled() -> Self {
        ZstdDictionary(Arc::from(BUNDLED_DICTIONARY))
    }

    /// A dictionary from its bytes (as `zstd --train` or `zstd::dict::from_samples` write it).
    pub fn new(bytes: impl Into<Arc<[u8]>>) -> Self {
        ZstdDictionary(bytes.into())
    }

    /// The dictionary's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Default for ZstdDictionary {
    fn default() -> Self {
        ZstdDictionary::bundled()
    }
}

impl fmt::Debug for ZstdDictionary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ZstdDictionary({} bytes)", self.0.len())
    }
}

/// Everything [`run`](crate::run) needs. Build with [`SourceConfig::jetstream`] or
/// [`SourceConfig::firehose`], adjust fields, then [`validate`](SourceConfig::validate)
/// before any I/O (`run` validates again).
#[derive(Debug, Clone)]
pub struct SourceConfig {
    /// Protocol of every endpoint.
    pub kind: SourceKind,
    /// Where to connect, tried in order with failover: `ws://` or `wss://` URLs (a URL
    /// without a path gets `/subscribe` for Jetstream, `/xrpc/com.atproto.sync.subscribeRepos`
    /// for the firehose), Jetstream shorthands (`us-east-1`, `us-east-2`, `us-west-1`,
    /// `us-west-2`), or one `file://` capture to replay (then the only endpoint).
    /// Empty means the default: the four public Jetstream instances ([`JETSTREAM_HOSTS`])
    /// or the Bluesky relay ([`FIREHOSE_HOST`]). Firehose failover only makes sense between
    /// hosts of one relay, because `seq` is per relay.
    pub endpoints: Vec<String>,
    /// Jetstream only: collections to receive (`wantedCollections`), each an NSID or a
    /// prefix ending in `.*` (`app.bsky.*`); at most 100. Empty: every collection.
    /// Identity and account events always come.
    pub wanted_collections: Vec<String>,
    /// Jetstream only: repositories to receive (`wantedDids`); at most 10,000. Empty: all.
    pub wanted_dids: Vec<String>,
    /// Jetstream only: ask for zstd-compressed messages (`compress=true`), about half the
    /// bandwidth for some CPU. Default false.
    pub compress: bool,
    /// The dictionary for `compress`. Default: Jetstream's published one.
    pub zstd_dictionary: ZstdDictionary,
    /// First reconnect delay; doubled per consecutive failure, with jitter (each delay is
    /// between half and all of the computed one). Default 500 ms.
    pub backoff_base: Duration,
    /// Longest reconnect delay. Default 30 s.
    pub backoff_max: Duration,
    /// A connection that stayed up this long resets the backoff to `backoff_base`.
    /// Default 60 s.
    pub backoff_reset_after: Duration,
    /// A socket that delivers nothing (not even a ping) for this long is dropped and
    /// reconnected. Time spent waiting for room in the channel does not count. Default 15 s.
    pub liveness_timeout: Duration,
    /// Limit on TCP connect + TLS + WebSocket handshake. Default 10 s.
    pub connect_timeout: Duration,
    /// Largest message accepted, in bytes, on the wire and after decompression; also the
    /// largest line or frame of a `file://` capture. Jetstream is asked not to send larger
    /// events (`maxMessageSizeBytes`). Default 5 MiB.
    pub max_message_size: usize,
}

impl SourceConfig {
    /// Defaults for `kind`.
    pub fn new(kind: SourceKind) -> Self {
        SourceConfig {
            kind,
            endpoints: Vec::new(),
            wanted_collections: Vec::new(),
            wanted_dids: Vec::new(),
            compress: false,
            zstd_dictionary: ZstdDictionary::bundled(),
            backoff_base: DEFAULT_BACKOFF_BASE,
            backoff_max: DEFAULT_BACKOFF_MAX,
            backoff_reset_after: DEFAULT_BACKOFF_RESET_AFTER,
            liveness_timeout: DEFAULT_LIVENESS_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
        }
    }

    /// Jetstream defaults: the four public instances, everything, uncompressed.
    pub fn jetstream() -> Self {
        SourceConfig::new(SourceKind::Jetstream)
    }

    /// Firehose defaults, connecting to `endpoints` (empty: the Bluesky relay).
    pub fn firehose<S: Into<String>>(endpoints: impl IntoIterator<Item = S>) -> Self {
        let mut cfg = SourceConfig::new(SourceKind::Firehose);
        cfg.endpoints = endpoints.into_iter().map(Into::into).collect();
        cfg
    }

    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.resolve().map(drop)
    }

    /// The URL of each endpoint as it would be requested with `cursor` (`None`: live tip),
    /// or the `file://` URL of a capture. For logs and `--dry-run`-style output.
    pub fn subscribe_urls(&self, cursor: Option<i64>) -> Result<Vec<String>, ConfigError> {
        Ok(self
            .resolve()?
            .iter()
            .map(|e| match e {
                Endpoint::Ws(base) => self.subscribe_url(base, cursor).into(),
                Endpoint::File { url, .. } => url.to_string(),
            })
            .collect())
    }

    /// Validate and resolve the endpoints.
    pub(crate) fn resolve(&self) -> Result<Vec<Endpoint>, ConfigError> {
        let jetstream = self.kind == SourceKind::Jetstream;
        if !jetstream {
            for (field, set) in [
                ("wanted_collections", !self.wanted_collections.is_empty()),
                ("wanted_dids", !self.wanted_dids.is_empty()),
                ("compress", self.compress),
            ] {
                if set {
                    return Err(ConfigError::new(field, "applies to Jetstream only"));
                }
            }
        }
        if self.wanted_collections.len() > MAX_WANTED_COLLECTIONS {
            return Err(ConfigError::new(
                "wanted_collections",
                format!(
                    "{} collections, Jetstream allows at most {MAX_WANTED_COLLECTIONS}",
                    self.wanted_collections.len()
                ),
            ));
        }
        for c in &self.wanted_collections {
            if !is_wanted_collection(c) {
                return Err(ConfigError::new(
                    "wanted_collections",
                    format!("{c:?} is neither an NSID nor a prefix like \"app.bsky.*\""),
                ));
            }
        }
        if self.wanted_dids.len() > MAX_WANTED_DIDS {
            return Err(ConfigError::new(
                "wanted_dids",
                format!(
                    "{} DIDs, Jetstream allows at most {MAX_WANTED_DIDS}",
                    self.wanted_dids.len()
                ),
            ));
        }
        if let Some(d) = self.wanted_dids.iter().find(|d| !Did::is_valid(d)) {
            return Err(ConfigError::new(
                "wanted_dids",
                format!("{d:?} is not a DID"),
            ));
        }
        if self.compress && self.zstd_dictionary.as_bytes().is_empty() {
            return Err(ConfigError::new("zstd_dictionary", "empty"));
        }
        for (field, d) in [
            ("backoff_base", self.backoff_base),
            ("backoff_max", self.backoff_max),
            ("liveness_timeout", self.liveness_timeout),
            ("connect_timeout", self.connect_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be more than zero"));
            }
        }
        if self.backoff_max < self.backoff_base {
            return Err(ConfigError::new(
                "backoff_max",
                format!(
                    "{:?} is shorter than backoff_base {:?}",
                    self.backoff_max, self.backoff_base
                ),
            ));
        }
        if self.max_message_size == 0 || self.max_message_size > u32::MAX as usize {
            return Err(ConfigError::new(
                "max_message_size",
                format!("{} is not in 1..=4294967295", self.max_message_size),
            ));
        }

        let defaults: Vec<String> = match self.kind {
            SourceKind::Jetstream => JETSTREAM_HOSTS.iter().map(|h| h.to_string()).collect(),
            SourceKind::Firehose => vec![FIREHOSE_HOST.to_string()],
        };
        let raw = if self.endpoints.is_empty() {
            &defaults
        } else {
            &self.endpoints
        };
        let endpoints = raw
            .iter()
            .map(|e| self.resolve_endpoint(e))
            .collect::<Result<Vec<_>, _>>()?;
        if endpoints.len() > 1 && endpoints.iter().any(|e| matches!(e, Endpoint::File { .. })) {
            return Err(ConfigError::new(
                "endpoints",
                "a file:// capture must be the only endpoint",
            ));
        }
        Ok(endpoints)
    }

    fn resolve_endpoint(&self, raw: &str) -> Result<Endpoint, ConfigError> {
        let err = |why: String| ConfigError::new("endpoints", why);
        let raw = raw.trim();
        if self.kind == SourceKind::Jetstream {
            if let Some((_, url)) = JETSTREAM_SHORTHANDS.iter().find(|(s, _)| *s == raw) {
                let url = Url::parse(url).map_err(|e| err(format!("{url}: {e}")))?;
                return Ok(Endpoint::Ws(url));
            }
        }
        let hint = match self.kind {
            SourceKind::Jetstream => {
                " (or a Jetstream shorthand: us-east-1, us-east-2, us-west-1, us-west-2)"
            }
            SourceKind::Firehose => "",
        };
        let mut url = Url::parse(raw).map_err(|e| {
            err(format!(
                "{raw:?} is not a ws://, wss:// or file:// URL{hint}: {e}"
            ))
        })?;
        match url.scheme() {
            "ws" | "wss" => {}
            "file" => {
                let path = url
                    .to_file_path()
                    .map_err(|()| err(format!("{raw:?} is not a local file path")))?;
                return Ok(Endpoint::File { url, path });
            }
            other => {
                return Err(err(format!(
                    "{raw:?}: scheme {other:?} is not ws, wss or file{hint}"
                )))
            }
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(err(format!("{raw:?} has no host")));
        }
        if url.query_pairs().any(|(k, _)| k == "cursor") {
            return Err(err(format!(
                "{raw:?} has a cursor parameter; the cursor comes from the resume position"
            )));
        }
        if url.path().is_empty() || url.path() == "/" {
            url.set_path(match self.kind {
                SourceKind::Jetstream => JETSTREAM_PATH,
                SourceKind::Firehose => FIREHOSE_PATH,
            });
        }
        Ok(Endpoint::Ws(url))
    }

    /// `base` with this config's query parameters and `cursor`.
    pub(crate) fn subscribe_url(&self, base: &Url, cursor: Option<i64>) -> Url {
        let mut url = base.clone();
        {
            let mut q = url.query_pairs_mut();
            if self.kind == SourceKind::Jetstream {
                for c in &self.wanted_collections {
                    q.append_pair("wantedCollections", c);
                }
                for d in &self.wanted_dids {
                    q.append_pair("wantedDids", d);
                }
                if self.compress {
                    q.append_pair("compress", "true");
                }
                q.append_pair("maxMessageSizeBytes", &self.max_message_size.to_string());
            }
            if let Some(c) = cursor {
                q.append_pair("cursor", &c.to_string());
            }
        }
        if url.query() == Some("") {
            url.set_query(None);
        }
        url
    }
}

/// Jetstream's rule: an NSID, or anything ending in `.*` (we also want the part before
/// the `.*` to be dot-separated NSID segments, so a typo fails here, not silently there).
fn is_wanted_collection(c: &str) -> bool {
    match c.strip_suffix(".*") {
        Some(prefix) => {
            !prefix.is_empty()
                && prefix.split('.').all(|seg| {
                    !seg.is_empty()
                        && seg.len() <= 63
                        && seg.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                })
        }
        None => Nsid::is_valid(c),
    }
}

/// A resolved endpoint.
#[derive(Debug, Clone)]
pub(crate) enum Endpoint {
    /// A WebSocket URL with its path, without our query parameters.
    Ws(Url),
    /// A capture to replay.
    File { url: Url, path: PathBuf },
}

/// A configuration value is wrong. Displays as one line, `field: why`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// The [`SourceConfig`] field at fault (`endpoints`, `wanted_collections`, …).
    pub field: &'static str,
    /// What is wrong with it, quoting the value.
    pub message: String,
}

impl ConfigError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        ConfigError {
            field,
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewind_keeps_none_and_floors_at_one() {
        assert_eq!(rewind_jetstream_cursor(0, Duration::from_secs(5)), 0);
        assert_eq!(rewind_jetstream_cursor(-3, Duration::from_secs(5)), -3);
        assert_eq!(
            rewind_jetstream_cursor(10_000_000, Duration::from_secs(5)),
            5_000_000
        );
        assert_eq!(rewind_jetstream_cursor(10, Duration::from_secs(5)), 1);
    }

    #[test]
    fn wanted_collection_rules() {
        for ok in ["app.bsky.feed.post", "app.bsky.*", "chat.bsky.*", "app.*"] {
            assert!(is_wanted_collection(ok), "{ok}");
        }
        for bad in [
            "app.bsky",
            "*",
            ".*",
            "app..*",
            "app.bsky.*.post",
            "app bsky.*",
        ] {
            assert!(!is_wanted_collection(bad), "{bad}");
        }
    }
}
