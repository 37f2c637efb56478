//! One check of one host: `GET /xrpc/_health`, then (for a PDS)
//! `GET /xrpc/com.atproto.server.describeServer`, each under a timeout and a
//! body cap, with the failure classified.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::hosts::{Host, HostKind};
use crate::{read_capped, MonitorError, ReadError};

/// How a check ended. A closed set: it is the `result` metric label and
/// column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CheckResult {
    /// Every endpoint answered 2xx with the expected JSON.
    Ok,
    /// No complete answer within the timeout (connecting included).
    Timeout,
    /// The TCP connection could not be made (refused, unreachable, DNS).
    Connect,
    /// The TLS handshake failed (bad certificate, not TLS, protocol error).
    Tls,
    /// The connection closed or reset before a complete answer, or the
    /// server did not speak HTTP.
    Protocol,
    /// An answer with a status other than 2xx.
    HttpStatus,
    /// A 2xx answer whose body is not the expected JSON, or is over the cap.
    BadBody,
}

impl CheckResult {
    /// Every result, in label order.
    pub const ALL: [CheckResult; 7] = [
        CheckResult::Ok,
        CheckResult::Timeout,
        CheckResult::Connect,
        CheckResult::Tls,
        CheckResult::Protocol,
        CheckResult::HttpStatus,
        CheckResult::BadBody,
    ];

    /// The label: `ok`, `timeout`, `connect`, `tls`, `protocol`,
    /// `http_status`, `bad_body`.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Ok => "ok",
            CheckResult::Timeout => "timeout",
            CheckResult::Connect => "connect",
            CheckResult::Tls => "tls",
            CheckResult::Protocol => "protocol",
            CheckResult::HttpStatus => "http_status",
            CheckResult::BadBody => "bad_body",
        }
    }
}

/// What one check of one host found. Serialised as-is in `/v1/hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Snapshot {
    /// The host's base URL.
    pub host: String,
    /// PDS or relay.
    pub kind: HostKind,
    /// When the check started (Unix seconds).
    pub observed_at: u32,
    /// Whether every endpoint answered well.
    pub up: bool,
    /// The first failure, or `ok`.
    pub result: CheckResult,
    /// HTTP status of `_health` (0: no answer).
    pub health_status: u16,
    /// `version` of the `_health` answer, if it had one.
    pub health_version: String,
    /// HTTP status of describeServer (0: not asked or no answer).
    pub describe_status: u16,
    /// The server's DID from describeServer.
    pub describe_did: String,
    /// describeServer `inviteCodeRequired`.
    pub invite_code_required: bool,
    /// describeServer `availableUserDomains` (at most [`MAX_DOMAINS`]).
    pub user_domains: Vec<String>,
    /// Round trip of `_health` up to its response headers, in milliseconds,
    /// connecting and the TLS handshake included (0: no answer).
    pub rtt_ms: u32,
    /// The failure, one line (at most [`MAX_ERROR_CHARS`]); empty when up.
    pub error: String,
}

/// Largest body read from `_health` or describeServer; real answers are a
/// few hundred bytes.
pub const MAX_BODY_BYTES: usize = 64 << 10;
/// Most `availableUserDomains` kept per host.
pub const MAX_DOMAINS: usize = 32;
/// Longest error text kept per snapshot, in characters.
pub const MAX_ERROR_CHARS: usize = 300;
/// Longest string field (version, DID, domain) kept from an answer.
const MAX_FIELD_CHARS: usize = 256;

/// How long a connection stays open after a check (then it is closed).
const IDLE_CONNECTION: Duration = Duration::from_secs(2);

/// Checks hosts with one shared HTTP client (connection pool, timeouts).
#[derive(Debug, Clone)]
pub struct Checker {
    http: reqwest::Client,
}

/// A failed request, classified.
struct Failure {
    result: CheckResult,
    status: u16,
    message: String,
}

impl Checker {
    /// A checker whose every request (connect, headers and body) must finish
    /// within `timeout`. Redirects are not followed: a health endpoint that
    /// redirects answers with a 3xx and counts as `http_status`.
    pub fn new(timeout: Duration) -> Result<Checker, MonitorError> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            // _health and describeServer share a connection; nothing is kept
            // between rounds (50k idle connections would be 50k descriptors),
            // so each round connects afresh and sees connect and TLS failures.
            .pool_max_idle_per_host(1)
            .pool_idle_timeout(IDLE_CONNECTION)
            .user_agent(concat!("skyhouse-monitor/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MonitorError::Config(format!("HTTP client: {e}")))?;
        Ok(Checker { http })
    }

    /// The HTTP client (also used for `listHosts`).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Check `host` once. Never fails: every failure is a [`Snapshot`] with
    /// `up = false` and its [`CheckResult`].
    pub async fn check(&self, host: &Host) -> Snapshot {
        let mut snap = Snapshot {
            host: host.url.clone(),
            kind: host.kind,
            observed_at: now_secs(),
            up: false,
            result: CheckResult::Ok,
            health_status: 0,
            health_version: String::new(),
            describe_status: 0,
            describe_did: String::new(),
            invite_code_required: false,
            user_domains: Vec::new(),
            rtt_ms: 0,
            error: String::new(),
        };
        let health = self
            .get_json(&format!("{}/xrpc/_health", host.url), |rtt| {
                snap.rtt_ms = u32::try_from(rtt.as_millis()).unwrap_or(u32::MAX).max(1);
            })
            .await;
        match health {
            Err(f) => return snap.failed("_health", f),
            Ok((status, body)) => {
                snap.health_status = status;
                snap.health_version = field(&body, "version");
            }
        }
        if host.kind == HostKind::Pds {
            let describe = self
                .get_json(
                    &format!("{}/xrpc/com.atproto.server.describeServer", host.url),
                    |_| {},
                )
                .await;
            match describe {
                Err(f) => return snap.failed("describeServer", f),
                Ok((status, body)) => {
                    snap.describe_status = status;
                    let did = field(&body, "did");
                    if !did.starts_with("did:") {
                        let f = Failure {
                            result: CheckResult::BadBody,
                            status,
                            message: "answer has no `did`".into(),
                        };
                        return snap.failed("describeServer", f);
                    }
                    snap.describe_did = did;
                    snap.invite_code_required = body
                        .get("inviteCodeRequired")
                        .and_then(serde_json::Value::as_bool)
                        .unwrap_or(false);
                    snap.user_domains = body
                        .get("availableUserDomains")
                        .and_then(serde_json::Value::as_array)
                        .map(|a| {
                            a.iter()
                                .filter_map(serde_json::Value::as_str)
                                .take(MAX_DOMAINS)
                                .map(|d| truncate(d, MAX_FIELD_CHARS))
                                .collect()
                        })
                        .unwrap_or_default();
                }
            }
        }
        snap.up = true;
        snap
    }

    /// GET `url`; `on_headers` gets the time to the response headers. A 2xx
    /// answer whose body is a JSON object is `Ok((status, object))`.
    async fn get_json(
        &self,
        url: &str,
        on_headers: impl FnOnce(Duration),
    ) -> Result<(u16, serde_json::Value), Failure> {
        let started = Instant::now();
        let resp = self.http.get(url).send().await.map_err(|e| classify(&e))?;
        on_headers(started.elapsed());
        let status = resp.status().as_u16();
        if !resp.status().is_success() {
            return Err(Failure {
                result: CheckResult::HttpStatus,
                status,
                message: format!("HTTP {status}"),
            });
        }
        let body = read_capped(resp, MAX_BODY_BYTES)
            .await
            .map_err(|e| match e {
                ReadError::TooLarge(_) => Failure {
                    result: CheckResult::BadBody,
                    status,
                    message: e.to_string(),
                },
                ReadError::Http(e) => Failure {
                    status,
                    ..classify(&e)
                },
            })?;
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) if v.is_object() => Ok((status, v)),
            Ok(_) => Err(Failure {
                result: CheckResult::BadBody,
                status,
                message: "answer is not a JSON object".into(),
            }),
            Err(e) => Err(Failure {
                result: CheckResult::BadBody,
                status,
                message: format!("answer is not JSON: {e}"),
            }),
        }
    }
}

impl Snapshot {
    fn failed(mut self, endpoint: &str, f: Failure) -> Snapshot {
        self.up = false;
        self.result = f.result;
        if endpoint == "_health" {
            self.health_status = f.status;
        } else {
            self.describe_status = f.status;
        }
        self.error = truncate(&format!("{endpoint}: {}", f.message), MAX_ERROR_CHARS);
        self
    }
}

/// Classify a reqwest failure by walking its error chain.
fn classify(e: &reqwest::Error) -> Failure {
    let message = one_line(e);
    let result = if e.is_timeout() {
        CheckResult::Timeout
    } else if is_tls(e) {
        CheckResult::Tls
    } else if e.is_connect() {
        CheckResult::Connect
    } else {
        CheckResult::Protocol
    };
    Failure {
        result,
        status: 0,
        message,
    }
}

/// Whether the chain holds a rustls error (also when wrapped in
/// `io::Error`s, as the TLS connector reports it).
fn is_tls(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if err.is::<rustls::Error>() {
            return true;
        }
        // An io::Error's source() skips the error it wraps (the TLS
        // connector nests rustls's error in two of them): step into it.
        cur = match err.downcast_ref::<std::io::Error>() {
            Some(io) => match io.get_ref() {
                Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
                None => err.source(),
            },
            None => err.source(),
        };
    }
    false
}

/// The error and its causes on one line.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(err) = cur {
        let s = err.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = err.source();
    }
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn field(body: &serde_json::Value, name: &str) -> String {
    body.get(name)
        .and_then(serde_json::Value::as_str)
        .map(|s| truncate(s, MAX_FIELD_CHARS))
        .unwrap_or_default()
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

pub(crate) fn now_secs() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_distinct() {
        let labels: std::collections::BTreeSet<_> =
            CheckResult::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), CheckResult::ALL.len());
    }

    #[test]
    fn long_fields_are_truncated_on_char_boundaries() {
        assert_eq!(truncate("ééé", 2), "éé");
        let body = serde_json::json!({"version": "x".repeat(1000)});
        assert_eq!(field(&body, "version").len(), MAX_FIELD_CHARS);
        assert_eq!(field(&body, "missing"), "");
    }
}
