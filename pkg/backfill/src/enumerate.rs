//! Enumerating repositories into the work queue.

use std::time::Duration;

use serde::Deserialize;
use skyhouse_state::{State, WorkQueue};

use crate::fetch::retry_after;
use crate::BackfillError;

/// DIDs per `listRepos` page (the maximum the reference PDS allows).
const PAGE: &str = "1000";
/// Attempts per page before giving up (the cursor stays saved: run again).
const PAGE_ATTEMPTS: u32 = 6;

/// The Redis key (under the prefix) of `host`'s saved `listRepos` cursor.
pub fn list_repos_cursor_key(host: &str) -> String {
    let rest = host.split_once("://").map_or(host, |(_, r)| r);
    format!("backfill:listRepos:{}", rest.trim_end_matches('/'))
}

#[derive(Deserialize)]
struct Page {
    repos: Vec<Listed>,
    #[serde(default)]
    cursor: Option<String>,
}

#[derive(Deserialize)]
struct Listed {
    did: String,
}

/// Page through `host`'s `com.atproto.sync.listRepos` and queue every DID.
///
/// Resumable: the cursor of the next page is saved in Redis after each page
/// is queued; a new run starts from it, and it is removed once the listing
/// is complete (the next run starts over). Returns the DIDs queued.
pub async fn enqueue_list_repos(
    http: &reqwest::Client,
    host: &str,
    state: &State,
    queue: &WorkQueue,
) -> Result<u64, BackfillError> {
    let mut listing = Listing::open(host, state).await?;
    let mut queued = 0u64;
    while !listing.done {
        queued += listing.next_page(http, state, queue).await?;
    }
    state.reset_cursor(&listing.key).await?;
    Ok(queued)
}

/// The saved cursor of a host whose listing finished within an unfinished
/// `--hosts-from` run (so a resumed run does not list it again).
const DONE: &str = "\u{0}done";

/// One host's listRepos walk.
struct Listing {
    url: String,
    key: String,
    cursor: Option<String>,
    done: bool,
}

impl Listing {
    async fn open(host: &str, state: &State) -> Result<Listing, BackfillError> {
        let key = list_repos_cursor_key(host);
        let cursor = state.value(&key).await?;
        Ok(Listing {
            url: format!(
                "{}/xrpc/com.atproto.sync.listRepos",
                host.trim_end_matches('/')
            ),
            done: cursor.as_deref() == Some(DONE),
            key,
            cursor,
        })
    }

    /// Queue the next page; saves the cursor after it (or `DONE`).
    async fn next_page(
        &mut self,
        http: &reqwest::Client,
        state: &State,
        queue: &WorkQueue,
    ) -> Result<u64, BackfillError> {
        let page = fetch_page(http, &self.url, self.cursor.as_deref()).await?;
        let dids: Vec<String> = page.repos.into_iter().map(|r| r.did).collect();
        queue.push_many(&dids, "listRepos").await?;
        crate::metrics::enqueued(dids.len());
        match page.cursor {
            // A cursor that does not move would loop forever.
            Some(c) if !dids.is_empty() && self.cursor.as_deref() != Some(c.as_str()) => {
                state.set_value(&self.key, &c).await?;
                self.cursor = Some(c);
            }
            _ => {
                state.set_value(&self.key, DONE).await?;
                self.done = true;
            }
        }
        Ok(dids.len() as u64)
    }
}

/// What [`enqueue_hosts`] did.
#[derive(Debug, Default)]
pub struct HostsQueued {
    /// Hosts the relay listed.
    pub hosts: usize,
    /// DIDs queued.
    pub dids: u64,
    /// Hosts whose listing failed (`host: error`); their cursors stay saved,
    /// so running the same command again resumes them.
    pub failed: Vec<String>,
}

/// The base URL to list a `listHosts` entry at: `https://` except for
/// loopback hosts (a local development network), which get `http://`.
fn host_url(host: &skyhouse_monitor::Host) -> String {
    let rest = host
        .url
        .split_once("://")
        .map_or(host.url.as_str(), |(_, r)| r);
    let name = rest.rsplit_once(':').map_or(rest, |(n, _)| n);
    let loopback = name == "localhost"
        || name.starts_with("127.")
        || name == "[::1]"
        || name.ends_with(".localhost");
    if loopback {
        format!("http://{rest}")
    } else {
        host.url.clone()
    }
}

/// Every PDS the relay at `relay` lists (`com.atproto.sync.listHosts`), then
/// each host's `listRepos`, one page per host in turn, so the queue
/// interleaves hosts and the per-host limit of the workers does not idle
/// them on one host's block. At most `max_hosts` hosts. Resumable like
/// [`enqueue_list_repos`]: each host's cursor is saved after each page; a
/// finished host is marked so a resumed run skips it, and every mark is
/// removed once all hosts are listed. A host that keeps failing is skipped
/// and reported; the others go on.
pub async fn enqueue_hosts(
    http: &reqwest::Client,
    relay: &str,
    max_hosts: usize,
    state: &State,
    queue: &WorkQueue,
) -> Result<HostsQueued, BackfillError> {
    let relay_host = skyhouse_monitor::Host::parse(relay, skyhouse_monitor::HostKind::Relay)
        .map_err(|e| BackfillError::Config(e.to_string()))?;
    let hosts = skyhouse_monitor::list_hosts(http, &relay_host, max_hosts)
        .await
        .map_err(|e| BackfillError::Transport {
            url: relay.to_string(),
            reason: e.to_string(),
        })?;
    let mut out = HostsQueued {
        hosts: hosts.len(),
        ..HostsQueued::default()
    };
    let mut listings = Vec::with_capacity(hosts.len());
    for h in &hosts {
        let url = host_url(h);
        let listing = Listing::open(&url, state).await?;
        listings.push((url, listing));
    }
    let mut failed = vec![false; listings.len()];
    loop {
        let mut progressed = false;
        for (i, (url, listing)) in listings.iter_mut().enumerate() {
            if listing.done || failed[i] {
                continue;
            }
            progressed = true;
            match listing.next_page(http, state, queue).await {
                Ok(n) => out.dids += n,
                Err(e) if matches!(e, BackfillError::State(_)) => return Err(e),
                Err(e) => {
                    tracing::warn!(host = url, error = %e, "listRepos failed; skipping this host (run again to resume it)");
                    out.failed.push(format!("{url}: {e}"));
                    failed[i] = true;
                }
            }
        }
        if !progressed {
            break;
        }
    }
    if out.failed.is_empty() {
        for (_, listing) in &listings {
            state.reset_cursor(&listing.key).await?;
        }
    }
    Ok(out)
}

async fn fetch_page(
    http: &reqwest::Client,
    url: &str,
    cursor: Option<&str>,
) -> Result<Page, BackfillError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let mut req = http.get(url).query(&[("limit", PAGE)]);
        if let Some(c) = cursor {
            req = req.query(&[("cursor", c)]);
        }
        let result = async {
            let resp = req.send().await.map_err(|e| BackfillError::Transport {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
            let status = resp.status().as_u16();
            let after = retry_after(resp.headers());
            let body = resp.bytes().await.map_err(|e| BackfillError::Transport {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
            if status != 200 {
                return Err(BackfillError::Http {
                    url: url.to_string(),
                    status,
                    error: String::from_utf8_lossy(&body).chars().take(200).collect(),
                    retry_after: after,
                });
            }
            serde_json::from_slice::<Page>(&body).map_err(|e| BackfillError::Http {
                url: url.to_string(),
                status,
                error: format!("bad listRepos page: {e}"),
                retry_after: None,
            })
        }
        .await;
        match result {
            Err(e) if e.is_retriable() && attempt < PAGE_ATTEMPTS => {
                let wait = e
                    .retry_after()
                    .unwrap_or(Duration::from_millis(500 << attempt));
                tracing::warn!(error = %e, attempt, "listRepos page failed; retrying.");
                tokio::time::sleep(wait).await;
            }
            r => return r,
        }
    }
}

/// Queue DIDs given by the operator (`--did`, `--dids FILE`): blank lines
/// and `#` comments skipped; each must be a valid DID.
pub async fn enqueue_dids(
    queue: &WorkQueue,
    dids: &[String],
    reason: &str,
) -> Result<u64, BackfillError> {
    let dids: Vec<String> = dids
        .iter()
        .map(|d| d.trim())
        .filter(|d| !d.is_empty() && !d.starts_with('#'))
        .map(str::to_owned)
        .collect();
    if let Some(bad) = dids
        .iter()
        .find(|d| !skyhouse_atproto::syntax::Did::is_valid(d))
    {
        return Err(BackfillError::Config(format!("invalid DID {bad:?}")));
    }
    for chunk in dids.chunks(1000) {
        queue.push_many(chunk, reason).await?;
        crate::metrics::enqueued(chunk.len());
    }
    Ok(dids.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyhouse_monitor::{Host, HostKind};

    #[test]
    fn listed_hosts_get_https_except_loopback() {
        let url = |h: &str| host_url(&Host::parse(h, HostKind::Pds).unwrap());
        assert_eq!(url("pds.example.com"), "https://pds.example.com");
        assert_eq!(url("pds.example.com:8443"), "https://pds.example.com:8443");
        assert_eq!(url("localhost:2583"), "http://localhost:2583");
        assert_eq!(url("127.0.0.1:2583"), "http://127.0.0.1:2583");
        assert_eq!(url("pds.localhost"), "http://pds.localhost");
        // Only the host name decides: a name merely starting like loopback is not.
        assert_eq!(
            url("localhost.example.com"),
            "https://localhost.example.com"
        );
    }

    #[test]
    fn cursor_keys_ignore_scheme_and_trailing_slash() {
        assert_eq!(
            list_repos_cursor_key("https://bsky.network/"),
            "backfill:listRepos:bsky.network"
        );
        assert_eq!(
            list_repos_cursor_key("http://127.0.0.1:2583"),
            "backfill:listRepos:127.0.0.1:2583"
        );
    }
}
