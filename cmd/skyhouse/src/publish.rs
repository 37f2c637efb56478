//! `skyhouse feedgen publish` / `unpublish`: write (or delete) one
//! `app.bsky.feed.generator` record per configured feed in the publisher's
//! repository, logged in to its PDS with an app password.
//!
//! Idempotent: a record that already says what the configuration says is
//! left alone (`unchanged`), a different one is rewritten keeping its
//! `createdAt` and any field skyhouse does not manage (`updated`); the
//! avatar is uploaded only when the record does not already name the
//! file's blob (its CID is computed locally). Unpublishing a record that is
//! not there is `absent`, not an error.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use serde_json::{json, Map, Value};
use skyhouse_atproto::cid::{Cid, CODEC_RAW};
use skyhouse_feeds::Feed;

use crate::Usage;

/// The collection of feed generator records.
const COLLECTION: &str = "app.bsky.feed.generator";
/// The lexicon's limits: `displayName` 24 graphemes (240 bytes),
/// `description` 300 graphemes (3,000 bytes), the avatar 1,000,000 bytes.
const MAX_DISPLAY_NAME: usize = 24;
const MAX_DESCRIPTION: usize = 300;
const MAX_AVATAR: usize = 1_000_000;
/// Longest any call to the PDS may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Flags of `skyhouse feedgen publish` and `unpublish`.
#[derive(Debug, Args)]
pub struct PublishArgs {
    /// Public base URL of the feed generator: the records' `did` is did:web:<host> unless
    /// --service-did is given.
    #[arg(long, env = "FEEDGEN_PUBLIC_URL")]
    public_url: Option<String>,
    /// Service DID the records name (the DID whose document has the #bsky_fg endpoint).
    #[arg(long, env = "FEEDGEN_SERVICE_DID")]
    service_did: Option<String>,
    /// The publisher's DID the feed generator serves under; when set, the login must be
    /// this account (so the published URIs are the ones served).
    #[arg(long, env = "FEEDGEN_PUBLISHER_DID")]
    publisher_did: Option<String>,
    /// JSON file of label and static feeds, with their display names, descriptions and
    /// avatars (see README); the built-in feeds are always published.
    #[arg(long, env = "FEEDGEN_FEEDS_CONFIG")]
    feeds_config: Option<PathBuf>,
    /// The publisher's PDS (or its entryway), where it logs in and writes.
    #[arg(
        long,
        env = "FEEDGEN_PUBLISHER_PDS",
        default_value = "https://bsky.social"
    )]
    pds: String,
    /// The publisher's handle (or DID), to log in.
    #[arg(long, env = "FEEDGEN_PUBLISHER_HANDLE")]
    handle: String,
    /// An app password of the publisher (Settings → App passwords); never logged.
    #[arg(long, env = "FEEDGEN_PUBLISHER_APP_PASSWORD", hide_env_values = true)]
    app_password: String,
}

/// A feed's record as configured: what `publish` writes.
#[derive(Debug)]
struct Wanted {
    rkey: String,
    display_name: String,
    description: Option<String>,
    avatar: Option<Avatar>,
}

/// An avatar file, read and checked.
#[derive(Debug)]
struct Avatar {
    bytes: Vec<u8>,
    mime: &'static str,
    cid: String,
}

impl Avatar {
    fn read(path: &Path) -> Result<Avatar> {
        let bytes = std::fs::read(path).with_context(|| format!("avatar {}", path.display()))?;
        let mime = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
            "image/png"
        } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
            "image/jpeg"
        } else {
            bail!("avatar {}: not a PNG or JPEG image", path.display());
        };
        if bytes.len() > MAX_AVATAR {
            bail!(
                "avatar {}: {} bytes, more than the {MAX_AVATAR} a feed avatar may have",
                path.display(),
                bytes.len()
            );
        }
        let cid = Cid::compute(CODEC_RAW, &bytes).to_string();
        Ok(Avatar { bytes, mime, cid })
    }
}

/// What `publish` or `unpublish` did to one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Created,
    Updated,
    Unchanged,
    Deleted,
    Absent,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Created => "created",
            Outcome::Updated => "updated",
            Outcome::Unchanged => "unchanged",
            Outcome::Deleted => "deleted",
            Outcome::Absent => "absent",
        }
    }
}

impl PublishArgs {
    /// The service DID, the feeds, the PDS URL: every flag and file checked before any
    /// network I/O.
    fn config(&self) -> Result<(String, Vec<Wanted>, url::Url)> {
        let service_did = match (&self.service_did, &self.public_url) {
            (Some(did), _) => did.clone(),
            (None, Some(url)) => crate::feedgen::did_web(url)?,
            (None, None) => bail!(
                "--service-did or --public-url (FEEDGEN_SERVICE_DID, FEEDGEN_PUBLIC_URL): the records must name the feed generator's DID"
            ),
        };
        if !skyhouse_atproto::syntax::Did::is_valid(&service_did) {
            bail!("--service-did {service_did:?}: not a DID");
        }
        if let Some(did) = &self.publisher_did {
            if !skyhouse_atproto::syntax::Did::is_valid(did) {
                bail!("--publisher-did {did:?}: not a DID");
            }
        }
        let pds = url::Url::parse(&self.pds)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some())
            .ok_or_else(|| anyhow!("--pds {:?}: not an http(s) URL", self.pds))?;
        if self.handle.trim().is_empty() {
            bail!("--handle (FEEDGEN_PUBLISHER_HANDLE) is empty");
        }
        if self.app_password.is_empty() {
            bail!("--app-password (FEEDGEN_PUBLISHER_APP_PASSWORD) is empty");
        }
        let (feeds, base) = match &self.feeds_config {
            None => (skyhouse_feeds::builtin_feeds(), PathBuf::new()),
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--feeds-config {}", path.display()))?;
                let feeds = skyhouse_feeds::parse_feeds_config(&text)
                    .map_err(|e| anyhow!("--feeds-config {}: {e}", path.display()))?;
                let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
                (feeds, base)
            }
        };
        let wanted = feeds
            .into_iter()
            .map(|f| wanted(f, &base))
            .collect::<Result<Vec<_>>>()
            .map_err(|e| match &self.feeds_config {
                Some(p) => anyhow!("--feeds-config {}: {e:#}", p.display()),
                None => e,
            })?;
        Ok((service_did, wanted, pds))
    }
}

/// The record a feed should have; the avatar read relative to `base` (the
/// config file's directory).
fn wanted(feed: Feed, base: &Path) -> Result<Wanted> {
    let p = feed.profile;
    if p.display_name.chars().count() > MAX_DISPLAY_NAME || p.display_name.len() > 240 {
        bail!(
            "feed {:?}: displayName is longer than {MAX_DISPLAY_NAME} characters",
            feed.rkey
        );
    }
    if let Some(d) = &p.description {
        if d.chars().count() > MAX_DESCRIPTION || d.len() > 3000 {
            bail!(
                "feed {:?}: description is longer than {MAX_DESCRIPTION} characters",
                feed.rkey
            );
        }
    }
    let avatar = match &p.avatar {
        None => None,
        Some(path) => Some(Avatar::read(&base.join(path))?),
    };
    Ok(Wanted {
        rkey: feed.rkey,
        display_name: p.display_name,
        description: p.description,
        avatar,
    })
}

/// A logged-in session on the publisher's PDS.
struct Session {
    http: reqwest::Client,
    pds: url::Url,
    did: String,
    access: String,
}

/// An XRPC failure as one line: the method, the status and the PDS's
/// `error`/`message` (never a request header).
async fn failed(method: &str, resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let error = body["error"].as_str().unwrap_or("");
    let message = body["message"].as_str().unwrap_or("");
    anyhow!(
        "{method}: the PDS answered {status}{}{}",
        if error.is_empty() { "" } else { " " },
        [error, message]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(": ")
    )
}

impl Session {
    async fn login(pds: url::Url, handle: &str, app_password: &str) -> Result<Session> {
        let http = reqwest::Client::builder()
            .timeout(CALL_TIMEOUT)
            .build()
            .context("HTTP client")?;
        let url = xrpc(&pds, "com.atproto.server.createSession");
        let resp = http
            .post(url)
            .json(&json!({"identifier": handle, "password": app_password}))
            .send()
            .await
            .with_context(|| format!("--pds {pds}: cannot reach the PDS"))?;
        if resp.status() == reqwest::StatusCode::UNAUTHORIZED {
            bail!(
                "--handle {handle:?}: the PDS at {pds} refused the login (wrong handle or app password, FEEDGEN_PUBLISHER_APP_PASSWORD)"
            );
        }
        if !resp.status().is_success() {
            return Err(failed("com.atproto.server.createSession", resp).await);
        }
        let body: Value = resp
            .json()
            .await
            .context("com.atproto.server.createSession: the answer is not JSON")?;
        let (Some(did), Some(access)) = (body["did"].as_str(), body["accessJwt"].as_str()) else {
            bail!("com.atproto.server.createSession: the answer has no did or accessJwt");
        };
        Ok(Session {
            http,
            pds,
            did: did.to_owned(),
            access: access.to_owned(),
        })
    }

    /// The record `rkey` (`value` and `cid`), `None` when there is none.
    async fn get(&self, rkey: &str) -> Result<Option<(Map<String, Value>, String)>> {
        let method = "com.atproto.repo.getRecord";
        let resp = self
            .http
            .get(xrpc(&self.pds, method))
            .query(&[
                ("repo", self.did.as_str()),
                ("collection", COLLECTION),
                ("rkey", rkey),
            ])
            .bearer_auth(&self.access)
            .send()
            .await
            .with_context(|| format!("{method}: cannot reach the PDS"))?;
        if resp.status() == reqwest::StatusCode::BAD_REQUEST
            || resp.status() == reqwest::StatusCode::NOT_FOUND
        {
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            if body["error"] == "RecordNotFound" {
                return Ok(None);
            }
            bail!("{method} {rkey}: the PDS answered {body}");
        }
        if !resp.status().is_success() {
            return Err(failed(method, resp).await);
        }
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{method}: the answer is not JSON"))?;
        match (body["value"].as_object(), body["cid"].as_str()) {
            (Some(v), Some(cid)) => Ok(Some((v.clone(), cid.to_owned()))),
            _ => bail!("{method} {rkey}: the answer has no value or cid"),
        }
    }

    async fn procedure(&self, method: &str, input: Value) -> Result<Value> {
        let resp = self
            .http
            .post(xrpc(&self.pds, method))
            .bearer_auth(&self.access)
            .json(&input)
            .send()
            .await
            .with_context(|| format!("{method}: cannot reach the PDS"))?;
        if !resp.status().is_success() {
            return Err(failed(method, resp).await);
        }
        Ok(resp.json().await.unwrap_or(Value::Null))
    }

    async fn upload(&self, avatar: &Avatar) -> Result<Value> {
        let method = "com.atproto.repo.uploadBlob";
        let resp = self
            .http
            .post(xrpc(&self.pds, method))
            .bearer_auth(&self.access)
            .header(reqwest::header::CONTENT_TYPE, avatar.mime)
            .body(avatar.bytes.clone())
            .send()
            .await
            .with_context(|| format!("{method}: cannot reach the PDS"))?;
        if !resp.status().is_success() {
            return Err(failed(method, resp).await);
        }
        let body: Value = resp
            .json()
            .await
            .with_context(|| format!("{method}: the answer is not JSON"))?;
        match body.get("blob") {
            Some(blob) if blob["ref"]["$link"] == avatar.cid.as_str() => Ok(blob.clone()),
            Some(blob) => bail!(
                "{method}: the PDS stored the avatar as {}, not {}",
                blob["ref"]["$link"],
                avatar.cid
            ),
            None => bail!("{method}: the answer has no blob"),
        }
    }

    async fn publish(&self, service_did: &str, feed: &Wanted) -> Result<Outcome> {
        let existing = self.get(&feed.rkey).await?;
        let mut record = existing
            .as_ref()
            .map(|(v, _)| v.clone())
            .unwrap_or_default();
        record.insert("$type".into(), json!(COLLECTION));
        record.insert("did".into(), json!(service_did));
        record.insert("displayName".into(), json!(feed.display_name));
        match &feed.description {
            Some(d) => record.insert("description".into(), json!(d)),
            None => record.remove("description"),
        };
        record.remove("avatar");
        if !record.contains_key("createdAt") {
            record.insert("createdAt".into(), json!(now_rfc3339()));
        }
        if let Some(avatar) = &feed.avatar {
            let have = existing.as_ref().and_then(|(v, _)| v.get("avatar"));
            let same = have.is_some_and(|b| {
                b["ref"]["$link"] == avatar.cid.as_str() && b["mimeType"] == avatar.mime
            });
            let blob = match have {
                Some(b) if same => b.clone(),
                _ => self.upload(avatar).await?,
            };
            record.insert("avatar".into(), blob);
        }
        if let Some((old, _)) = &existing {
            if *old == record {
                return Ok(Outcome::Unchanged);
            }
        }
        let mut input = json!({
            "repo": self.did, "collection": COLLECTION, "rkey": feed.rkey,
            "record": Value::Object(record),
        });
        if let Some((_, cid)) = &existing {
            // Someone else's concurrent change is not overwritten unseen.
            input["swapRecord"] = json!(cid);
        }
        self.procedure("com.atproto.repo.putRecord", input).await?;
        Ok(if existing.is_some() {
            Outcome::Updated
        } else {
            Outcome::Created
        })
    }

    async fn unpublish(&self, rkey: &str) -> Result<Outcome> {
        let Some((_, cid)) = self.get(rkey).await? else {
            return Ok(Outcome::Absent);
        };
        self.procedure(
            "com.atproto.repo.deleteRecord",
            json!({"repo": self.did, "collection": COLLECTION, "rkey": rkey, "swapRecord": cid}),
        )
        .await?;
        Ok(Outcome::Deleted)
    }
}

/// Now as RFC 3339 UTC with milliseconds, as records carry in `createdAt`.
fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (year, month, day) = skyhouse_atproto::syntax::civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_millis()
    )
}

fn xrpc(pds: &url::Url, method: &str) -> String {
    format!("{}/xrpc/{method}", pds.as_str().trim_end_matches('/'))
}

/// `skyhouse feedgen publish` (`delete` false) or `unpublish` (`delete`
/// true): one line per feed on standard output, `<outcome> <at-uri>`.
pub fn run(args: PublishArgs, delete: bool) -> Result<ExitCode> {
    let (service_did, feeds, pds) = args.config().usage()?;
    crate::service::runtime()?.block_on(async move {
        let session = Session::login(pds, args.handle.trim(), &args.app_password).await?;
        if let Some(want) = &args.publisher_did {
            if *want != session.did {
                bail!(
                    "--publisher-did {want}: --handle {} is {}; the feed generator would serve URIs the records do not have",
                    args.handle.trim(),
                    session.did
                );
            }
        }
        for feed in &feeds {
            let outcome = if delete {
                session.unpublish(&feed.rkey).await
            } else {
                session.publish(&service_did, feed).await
            }
            .with_context(|| format!("feed {:?}", feed.rkey))?;
            println!(
                "{} at://{}/{COLLECTION}/{}",
                outcome.as_str(),
                session.did,
                feed.rkey
            );
        }
        Ok(ExitCode::SUCCESS)
    })
}
