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
    let key = list_repos_cursor_key(host);
    let url = format!(
        "{}/xrpc/com.atproto.sync.listRepos",
        host.trim_end_matches('/')
    );
    let mut cursor = state.value(&key).await?;
    let mut queued = 0u64;
    loop {
        let page = fetch_page(http, &url, cursor.as_deref()).await?;
        let dids: Vec<String> = page.repos.into_iter().map(|r| r.did).collect();
        queue.push_many(&dids, "listRepos").await?;
        queued += dids.len() as u64;
        crate::metrics::enqueued(dids.len());
        match page.cursor {
            Some(c) if !dids.is_empty() => {
                state.set_value(&key, &c).await?;
                cursor = Some(c);
            }
            _ => {
                state.reset_cursor(&key).await?;
                return Ok(queued);
            }
        }
    }
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
