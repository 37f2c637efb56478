//! The hosts the monitor knows: normalised base URLs, parsed from flags and
//! seed files, and discovered from a relay's `com.atproto.sync.listHosts`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{read_capped, MonitorError};

/// What a host is; decides which endpoints are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostKind {
    /// A PDS: `_health` and `com.atproto.server.describeServer`.
    Pds,
    /// A relay: `_health` only (relays do not serve describeServer).
    Relay,
}

impl HostKind {
    /// `pds` or `relay` (the `kind` column and metric label).
    pub fn as_str(self) -> &'static str {
        match self {
            HostKind::Pds => "pds",
            HostKind::Relay => "relay",
        }
    }

    /// Parse `pds` or `relay`.
    pub fn parse(s: &str) -> Option<HostKind> {
        match s {
            "pds" => Some(HostKind::Pds),
            "relay" => Some(HostKind::Relay),
            _ => None,
        }
    }
}

impl fmt::Display for HostKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A host to check: its base URL (`https://pds.example.com`, or with an
/// explicit port; no path, no trailing slash) and its kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Host {
    /// Normalised base URL.
    pub url: String,
    /// PDS or relay.
    pub kind: HostKind,
}

/// Longest host name accepted (DNS limit).
const MAX_HOSTNAME: usize = 253;

impl Host {
    /// A host from a base URL or a bare host name (`pds.example.com` means
    /// `https://pds.example.com`). Only http(s), no credentials, no path
    /// beyond `/`, no query or fragment; the error says what is wrong.
    pub fn parse(input: &str, kind: HostKind) -> Result<Host, MonitorError> {
        let s = input.trim();
        let bad = |why: &str| MonitorError::BadHost(format!("{s:?}: {why}"));
        if s.is_empty() {
            return Err(bad("empty"));
        }
        let with_scheme = if s.contains("://") {
            s.to_owned()
        } else {
            format!("https://{s}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(bad("expected an http(s) URL or a host name"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?;
        if host.len() > MAX_HOSTNAME {
            return Err(bad("host name too long"));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("credentials are not allowed"));
        }
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(bad("expected a base URL without path, query or fragment"));
        }
        let mut out = format!("{}://{}", url.scheme(), host);
        if let Some(port) = url.port() {
            out.push_str(&format!(":{port}"));
        }
        Ok(Host { url: out, kind })
    }
}

/// Parse a seed file: one host per line, `URL` or `host name` for a PDS,
/// `relay URL` for a relay; blank lines and `#` comments are skipped. The
/// error names the line.
pub fn parse_seed(text: &str) -> Result<Vec<Host>, MonitorError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let (kind, rest) = match line.split_once(char::is_whitespace) {
            Some((k, rest)) => {
                let kind = HostKind::parse(k).ok_or_else(|| {
                    MonitorError::BadHost(format!(
                        "line {}: expected `URL`, `pds URL` or `relay URL`",
                        i + 1
                    ))
                })?;
                (kind, rest.trim())
            }
            None => (HostKind::Pds, line),
        };
        let host = Host::parse(rest, kind)
            .map_err(|e| MonitorError::BadHost(format!("line {}: {e}", i + 1)))?;
        out.push(host);
    }
    Ok(out)
}

/// Hosts per `listHosts` page asked for (the lexicon's maximum is 1000).
const LIST_HOSTS_PAGE: usize = 1000;
/// Largest `listHosts` page body read: 1000 entries of a few hundred bytes
/// each fit with room to spare; a bigger body is an error, not a buffer.
const LIST_HOSTS_MAX_BYTES: usize = 4 << 20;

#[derive(Deserialize)]
struct ListHostsPage {
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    hosts: Vec<ListedHost>,
}

#[derive(Deserialize)]
struct ListedHost {
    hostname: String,
}

/// Every PDS host a relay lists (`com.atproto.sync.listHosts`, cursor
/// paged), at most `max` of them. Entries that are not valid host names are
/// skipped but count towards `max`, so a relay paging through junk forever
/// is read for at most `max` entries. Fails on a transport error, a non-2xx
/// answer or a body that is not a listHosts page.
pub async fn list_hosts(
    http: &reqwest::Client,
    relay: &Host,
    max: usize,
) -> Result<Vec<Host>, MonitorError> {
    let mut out: Vec<Host> = Vec::new();
    let mut seen = 0usize;
    let mut cursor: Option<String> = None;
    let endpoint = format!("{}/xrpc/com.atproto.sync.listHosts", relay.url);
    let fail = |why: String| MonitorError::ListHosts(format!("{}: {why}", relay.url));
    loop {
        let mut req = http
            .get(&endpoint)
            .query(&[("limit", LIST_HOSTS_PAGE.to_string())]);
        if let Some(c) = &cursor {
            req = req.query(&[("cursor", c)]);
        }
        let resp = req.send().await.map_err(|e| fail(e.to_string()))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(fail(format!("HTTP {}", status.as_u16())));
        }
        let body = read_capped(resp, LIST_HOSTS_MAX_BYTES)
            .await
            .map_err(|e| fail(e.to_string()))?;
        let page: ListHostsPage = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("not a listHosts page: {e}")))?;
        let empty = page.hosts.is_empty();
        for h in page.hosts {
            if seen >= max {
                return Ok(out);
            }
            seen += 1;
            // A listed hostname is a bare name; anything else is skipped.
            if h.hostname.contains('/') {
                continue;
            }
            if let Ok(host) = Host::parse(&h.hostname, HostKind::Pds) {
                out.push(host);
            }
        }
        match page.cursor {
            // A cursor that does not move would loop forever.
            Some(c) if !empty && cursor.as_deref() != Some(c.as_str()) => cursor = Some(c),
            _ => return Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_normalised() {
        let h = |s| Host::parse(s, HostKind::Pds).map(|h| h.url);
        assert_eq!(h("pds.example.com").unwrap(), "https://pds.example.com");
        assert_eq!(
            h("https://PDS.example.com/").unwrap(),
            "https://pds.example.com"
        );
        assert_eq!(h("http://127.0.0.1:2583").unwrap(), "http://127.0.0.1:2583");
        assert_eq!(h("https://example.com:443").unwrap(), "https://example.com");
        for bad in [
            "",
            "ftp://x.example",
            "https://x.example/path",
            "https://x.example/?q=1",
            "https://u:p@x.example",
        ] {
            assert!(h(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn seed_files_name_kinds_and_bad_lines() {
        let hosts = parse_seed(
            "# seed\n\npds.example.com\nrelay https://bsky.network # the relay\npds http://127.0.0.1:2583\n",
        )
        .unwrap();
        assert_eq!(
            hosts,
            vec![
                Host {
                    url: "https://pds.example.com".into(),
                    kind: HostKind::Pds
                },
                Host {
                    url: "https://bsky.network".into(),
                    kind: HostKind::Relay
                },
                Host {
                    url: "http://127.0.0.1:2583".into(),
                    kind: HostKind::Pds
                },
            ]
        );
        let e = parse_seed("ok.example\nlabeler https://x.example\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }
}
