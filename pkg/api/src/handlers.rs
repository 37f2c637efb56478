//! The route handlers. Parameters are parsed by hand (not axum's `Query`)
//! so that every bad one, bad UTF-8 included, is a JSON 400 naming it.

use std::collections::BTreeMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{MatchedPath, Path, RawQuery, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Value};
use skyhouse_atproto::syntax::{parse_datetime_lenient, Datetime, Did, Handle};
use skyhouse_store::search::{Author, PostKey, PostSearch, MAX_TERMS};
use skyhouse_store::stats::Analytics;
use skyhouse_store::{cleanup, explorer, keys, queries, search, stats};

use crate::auth::{self, Scope};
use crate::error::ApiError;
use crate::ApiState;

type ApiResult = Result<Response, ApiError>;

/// Longest parameter value read, bytes.
const MAX_PARAM: usize = 512;
/// Longest `uris` value (a list of up to 25 post AT-URIs), bytes.
const MAX_URIS_PARAM: usize = 8192;
/// Redis cache name of `/v1/stats`.
const STATS_CACHE: &str = "api:stats";
/// Redis cache name of a whole-history analytics answer, before its name.
const ANALYTICS_CACHE_PREFIX: &str = "api:analytics:";

/// Metrics around every route (outside the timeout and body limit, so their
/// answers count too).
pub async fn metered(req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "other".to_owned(), |p| p.as_str().to_owned());
    let started = Instant::now();
    let resp = next.run(req).await;
    let class = format!("{}xx", resp.status().as_u16() / 100);
    metrics::counter!("skyhouse_api_requests_total", "route" => route.clone(), "status" => class)
        .increment(1);
    metrics::histogram!("skyhouse_api_request_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    resp
}

/// Unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::not_found("no such route (see /openapi.json)")
}

/// `/openapi.json`.
pub async fn openapi_json() -> Json<Value> {
    Json(crate::openapi())
}

// ---------------------------------------------------------------------------
// parameters

/// The query string's parameters; a repeated one keeps its last value.
fn params(raw: Option<String>) -> Result<BTreeMap<String, String>, ApiError> {
    let mut out = BTreeMap::new();
    let raw = raw.unwrap_or_default();
    for pair in raw.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let key = decode(k)
            .ok_or_else(|| ApiError::bad_request("a parameter name is not valid UTF-8"))?;
        let value = decode(v).ok_or_else(|| {
            ApiError::bad_request(format!("parameter {key:?} is not valid UTF-8"))
        })?;
        let limit = if key == "uris" {
            MAX_URIS_PARAM
        } else {
            MAX_PARAM
        };
        if value.len() > limit {
            return Err(ApiError::bad_request(format!(
                "parameter {key:?} is longer than {limit} bytes"
            )));
        }
        out.insert(key, value);
    }
    Ok(out)
}

/// Percent- and `+`-decoding to UTF-8; `None` for bad UTF-8.
fn decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `name` as an integer in `lo..=hi`, or `default`.
fn int_param(
    p: &BTreeMap<String, String>,
    name: &str,
    lo: u64,
    hi: u64,
    default: u64,
) -> Result<u64, ApiError> {
    match p.get(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (lo..=hi).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(format!("{name} must be an integer from {lo} to {hi}"))
            }),
    }
}

/// A time parameter: Unix seconds or an RFC 3339 datetime.
fn time_param(p: &BTreeMap<String, String>, name: &str) -> Result<Option<u32>, ApiError> {
    let Some(v) = p.get(name) else {
        return Ok(None);
    };
    let secs = match v.trim().parse::<i64>() {
        Ok(s) => Some(s),
        Err(_) => parse_datetime_lenient(v).map(|us| us.div_euclid(1_000_000)),
    };
    secs.and_then(|s| u32::try_from(s).ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "{name} must be Unix seconds or an RFC 3339 datetime (1970-2106)"
            ))
        })
}

/// A path DID, checked.
fn did_param(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(did) =
        path.map_err(|_| ApiError::bad_request("the DID in the path is not valid UTF-8"))?;
    if !Did::is_valid(&did) {
        return Err(ApiError::bad_request(format!(
            "{:?} is not a DID",
            clip(&did)
        )));
    }
    Ok(did)
}

fn clip(s: &str) -> String {
    s.chars().take(80).collect()
}

/// `YYYY-MM-DD` of `n` days ago (UTC).
pub fn days_ago(n: u64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        .saturating_sub(n * 86_400);
    // The date part of the atproto datetime writer (YYYY-MM-DDTHH:MM:SS…Z).
    Datetime::from_timestamp_micros(secs as i64 * 1_000_000)
        .map(|d| d.as_str()[..10].to_owned())
        .unwrap_or_else(|| "1970-01-01".to_owned())
}

async fn read_access(st: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    if st.inner.cfg.require_read_key {
        st.inner.keys.check(headers, Scope::Read).await?;
    }
    Ok(())
}

/// 404 for a DID whose account is hidden.
async fn visible(st: &ApiState, did: &str) -> Result<(), ApiError> {
    let hidden = queries::account_hidden(&st.inner.ch, did)
        .await
        .map_err(|e| ApiError::store("accounts", e))?;
    if hidden {
        Err(ApiError::not_found(format!("{did} is not available")))
    } else {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// stats

/// `/v1/stats`: live records per collection and the daily series of the
/// last 30 days (bucketed on `sort_at`), cached in Redis.
pub async fn stats(State(st): State<ApiState>, headers: HeaderMap) -> ApiResult {
    read_access(&st, &headers).await?;
    if let Ok(Some(cached)) = st.inner.state.cache_get(STATS_CACHE).await {
        return Ok(json_body(cached, "hit"));
    }
    let ch = &st.inner.ch;
    let totals = queries::collection_counts(ch)
        .await
        .map_err(|e| ApiError::store("stats", e))?;
    let daily = queries::daily_stats(ch, &days_ago(30))
        .await
        .map_err(|e| ApiError::store("stats", e))?;
    let body = json!({
        "records": totals.iter().map(|(_, n)| n).sum::<u64>(),
        "collections": totals.iter().map(|(c, n)| json!({"collection": c, "records": n})).collect::<Vec<_>>(),
        "daily": daily.iter().map(|d| json!({
            "day": d.day, "collection": d.collection, "records": d.records, "actors": d.actors,
        })).collect::<Vec<_>>(),
    })
    .to_string();
    cache_set(&st, STATS_CACHE, &body).await;
    Ok(json_body(body, "miss"))
}

/// `/v1/stats/actors/{did}`.
pub async fn actor_stats(
    State(st): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    read_access(&st, &headers).await?;
    let did = did_param(path)?;
    visible(&st, &did).await?;
    let ch = &st.inner.ch;
    let counts = stats::actor_collection_counts(ch, &did)
        .await
        .map_err(|e| ApiError::store("records", e))?;
    let handle = stats::actor_handle(ch, &did)
        .await
        .map_err(|e| ApiError::store("identities", e))?;
    if counts.is_empty() && handle.is_none() {
        return Err(ApiError::not_found(format!("nothing is indexed for {did}")));
    }
    let total: u64 = counts.iter().map(|(_, n)| n).sum();
    let collections: Vec<Value> = counts
        .iter()
        .map(|(c, n)| json!({"collection": c, "records": n}))
        .collect();
    let actor = skyhouse_store::counts::actor_counts(ch, &[did.as_str()])
        .await
        .map_err(|e| ApiError::store("counts", e))?;
    let mut out =
        json!({ "did": did, "handle": handle, "records": total, "collections": collections });
    if let (Some(c), Some(o)) = (actor.first(), out.as_object_mut()) {
        o.extend(counts_json(c));
    }
    Ok(Json(out).into_response())
}

/// An account's counts as the AppView defines them (README "Counts").
fn counts_json(c: &skyhouse_store::counts::ActorCounts) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("followers".into(), c.followers.into());
    m.insert("follows".into(), c.follows.into());
    m.insert("posts".into(), c.posts.into());
    m.insert("likes_received".into(), c.likes_received.into());
    m.insert("reposts_received".into(), c.reposts_received.into());
    m
}

/// `/v1/stats/analytics/{name}`: the JSONBench questions over our tables,
/// top hashtags and languages.
pub async fn analytics(
    State(st): State<ApiState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    read_access(&st, &headers).await?;
    let Path(name) = name.map_err(|_| ApiError::bad_request("bad analytics name"))?;
    let p = params(raw)?;
    let window = match p.get("window").map(String::as_str) {
        None | Some("24h") => 86_400,
        Some("1h") => 3_600,
        Some("7d") => 7 * 86_400,
        Some("30d") => 30 * 86_400,
        Some(_) => return Err(ApiError::bad_request("window must be 1h, 24h, 7d or 30d")),
    };
    let limit = int_param(&p, "limit", 1, 100, 20)?;
    let Some(which) = Analytics::from_name(&name) else {
        let names: Vec<&str> = Analytics::ALL.iter().map(|a| a.name()).collect();
        return Err(ApiError::not_found(format!(
            "no analytics {:?} ({})",
            clip(&name),
            names.join(", ")
        )));
    };
    // The whole-history questions take neither window nor limit, read every
    // day's counts and change slowly: cached as `/v1/stats` is.
    let cache = (!which.is_windowed()).then(|| format!("{ANALYTICS_CACHE_PREFIX}{}", which.name()));
    if let Some(cache) = &cache {
        if let Ok(Some(cached)) = st.inner.state.cache_get(cache).await {
            return Ok(json_body(cached, "hit"));
        }
    }
    let rows = stats::analytics(&st.inner.ch, which, window, limit as u32)
        .await
        .map_err(|e| ApiError::store("analytics", e))?;
    let body = json!({ "name": which.name(), "rows": rows }).to_string();
    let Some(cache) = cache else {
        return Ok(json_body(body, "none"));
    };
    cache_set(&st, &cache, &body).await;
    Ok(json_body(body, "miss"))
}

/// Cache an answer for `--stats-ttl-secs`, best effort: a failure is logged
/// unless the caches are being skipped (the state refuses at once then, and
/// logged the skip once).
async fn cache_set(st: &ApiState, name: &str, body: &str) {
    let state = &st.inner.state;
    if let Err(e) = state.cache_set(name, body, st.inner.cfg.stats_ttl).await {
        if !state.cache_skipped() {
            tracing::warn!(error = %e, "Could not cache {name}.");
        }
    }
}

/// A JSON answer with its `x-cache` header: `hit`, `miss` or `none` (not cached).
fn json_body(body: String, cache: &'static str) -> Response {
    (
        [("content-type", "application/json"), ("x-cache", cache)],
        body,
    )
        .into_response()
}

// ---------------------------------------------------------------------------
// search

/// The keyset position after a post: (sort_at, did, rkey).
fn encode_cursor(sort_at: u64, did: &str, rkey: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!([sort_at, did, rkey]).to_string())
}

fn decode_cursor(c: &str) -> Result<(u64, String, String), ApiError> {
    let bad = || ApiError::bad_request("cursor is not one this API returned");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c.trim())
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    match v.as_array().map(Vec::as_slice) {
        Some([Value::Number(t), Value::String(d), Value::String(r)]) => {
            let t = t.as_u64().ok_or_else(bad)?;
            if !Did::is_valid(d) || r.is_empty() || r.len() > 512 {
                return Err(bad());
            }
            Ok((t, d.clone(), r.clone()))
        }
        _ => Err(bad()),
    }
}

/// `/v1/search/posts?q=&author=&lang=&tag=&since=&until=&limit=&cursor=`:
/// newest first (`sort_at`), every term of `q` must occur (case-insensitive).
pub async fn search_posts(
    State(st): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    read_access(&st, &headers).await?;
    let p = params(raw)?;
    let limit = int_param(&p, "limit", 1, 100, 25)?;
    let mut search = PostSearch {
        limit: limit as u32,
        ..PostSearch::default()
    };
    if let Some(q) = p.get("q") {
        let terms: Vec<String> = q.split_whitespace().map(str::to_owned).collect();
        if terms.len() > MAX_TERMS {
            return Err(ApiError::bad_request(format!(
                "q has more than {MAX_TERMS} terms"
            )));
        }
        search.terms = terms;
    }
    if let Some(author) = p.get("author") {
        let a = author.trim().trim_start_matches('@');
        if a.starts_with("did:") {
            if !Did::is_valid(a) {
                return Err(ApiError::bad_request("author is not a valid DID"));
            }
            search.author = Some(Author::Did(a.to_owned()));
        } else {
            if !Handle::is_valid(a) {
                return Err(ApiError::bad_request("author must be a DID or a handle"));
            }
            search.author = Some(Author::Handle(a.to_owned()));
        }
    }
    if let Some(lang) = p.get("lang") {
        if lang.is_empty()
            || lang.len() > 35
            || !lang.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return Err(ApiError::bad_request(
                "lang must be a language tag such as en or pt-BR",
            ));
        }
        search.lang = Some(lang.clone());
    }
    if let Some(tag) = p.get("tag") {
        let tag = tag.trim().trim_start_matches('#');
        if tag.is_empty() || tag.chars().count() > 64 {
            return Err(ApiError::bad_request("tag must be 1-64 characters"));
        }
        search.tag = Some(tag.to_owned());
    }
    search.since = time_param(&p, "since")?;
    search.until = time_param(&p, "until")?;
    if let Some(c) = p.get("cursor") {
        let (t, did, rkey) = decode_cursor(c)?;
        let sort_at = u32::try_from(t)
            .map_err(|_| ApiError::bad_request("cursor is not one this API returned"))?;
        search.after = Some(PostKey { sort_at, did, rkey });
    }
    let page = search::search_posts(&st.inner.ch, &search)
        .await
        .map_err(|e| ApiError::store("post search", e))?;
    let cursor = page
        .next
        .map(|k| encode_cursor(u64::from(k.sort_at), &k.did, &k.rkey));
    let uris: Vec<String> = page.posts.iter().map(|r| r.uri()).collect();
    let refs: Vec<&str> = uris.iter().map(String::as_str).collect();
    let counts = skyhouse_store::counts::post_counts(&st.inner.ch, &refs)
        .await
        .map_err(|e| ApiError::store("counts", e))?;
    let posts: Vec<Value> = page
        .posts
        .iter()
        .zip(&counts)
        .map(|(r, c)| {
            let mut v = json!({
                "uri": r.uri(),
                "did": r.did,
                "rkey": r.rkey,
                "cid": r.cid,
                "text": r.text,
                "langs": r.langs,
                "tags": r.tags,
                "created_at": r.created_at,
                "sort_at": r.sort_at,
            });
            if let Some(o) = v.as_object_mut() {
                o.extend(post_counts_json(c));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "posts": posts, "cursor": cursor })).into_response())
}

/// A post's counts as the AppView defines them (README "Counts").
fn post_counts_json(c: &skyhouse_store::counts::PostCounts) -> serde_json::Map<String, Value> {
    let mut m = serde_json::Map::new();
    m.insert("likes".into(), c.likes.into());
    m.insert("reposts".into(), c.reposts.into());
    m.insert("replies".into(), c.replies.into());
    m.insert("replies_visible".into(), c.replies_visible.into());
    m.insert("replies_all".into(), c.replies_all.into());
    m.insert("quotes".into(), c.quotes.into());
    m
}

/// Most posts one `/v1/stats/posts` request names.
const MAX_POST_STATS: usize = 25;

/// `/v1/stats/posts?uris=<at-uri>,<at-uri>…`: each post's counts, in the
/// order asked (zeros for a post nobody interacted with).
pub async fn post_stats(
    State(st): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    read_access(&st, &headers).await?;
    let p = params(raw)?;
    let uris: Vec<&str> = p
        .get("uris")
        .map(|u| {
            u.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect()
        })
        .unwrap_or_default();
    if uris.is_empty() || uris.len() > MAX_POST_STATS {
        return Err(ApiError::bad_request(format!(
            "uris must list 1 to {MAX_POST_STATS} post AT-URIs, comma-separated"
        )));
    }
    if let Some(bad) = uris.iter().find(|u| {
        !skyhouse_atproto::syntax::AtUri::is_valid(u) || !u.contains("/app.bsky.feed.post/")
    }) {
        return Err(ApiError::bad_request(format!(
            "uris: {:?} is not a post AT-URI",
            bad.chars().take(100).collect::<String>()
        )));
    }
    let counts = skyhouse_store::counts::post_counts(&st.inner.ch, &uris)
        .await
        .map_err(|e| ApiError::store("counts", e))?;
    let posts: Vec<Value> = counts
        .iter()
        .map(|c| {
            let mut v = json!({ "uri": c.uri });
            if let Some(o) = v.as_object_mut() {
                o.extend(post_counts_json(c));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "posts": posts })).into_response())
}

/// `/v1/search/actors?q=&limit=`: handle or display name contains `q`.
pub async fn search_actors(
    State(st): State<ApiState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    read_access(&st, &headers).await?;
    let p = params(raw)?;
    let limit = int_param(&p, "limit", 1, 100, 25)?;
    let q = p
        .get("q")
        .map(|q| q.trim().trim_start_matches('@'))
        .filter(|q| !q.is_empty())
        .ok_or_else(|| ApiError::bad_request("q is required"))?;
    if q.chars().count() > 100 {
        return Err(ApiError::bad_request("q must be at most 100 characters"));
    }
    let found = search::search_actors(&st.inner.ch, q, limit as u32)
        .await
        .map_err(|e| ApiError::store("actor search", e))?;
    let dids: Vec<&str> = found.iter().map(|a| a.did.as_str()).collect();
    let counts = skyhouse_store::counts::actor_counts(&st.inner.ch, &dids)
        .await
        .map_err(|e| ApiError::store("counts", e))?;
    let actors: Vec<Value> = found
        .iter()
        .zip(&counts)
        .map(|(a, c)| {
            let mut v = json!({"did": a.did, "handle": a.handle, "display_name": a.display_name});
            if let Some(o) = v.as_object_mut() {
                o.extend(counts_json(c));
            }
            v
        })
        .collect();
    Ok(Json(json!({ "actors": actors })).into_response())
}

/// `/v1/repos/{did}?limit=`: the live records of a DID, in key order.
pub async fn repo(
    State(st): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    RawQuery(raw): RawQuery,
) -> ApiResult {
    read_access(&st, &headers).await?;
    let did = did_param(path)?;
    let p = params(raw)?;
    let limit = int_param(&p, "limit", 1, 1000, 100)?;
    visible(&st, &did).await?;
    let records = queries::records_of(&st.inner.ch, &did, limit as u32)
        .await
        .map_err(|e| ApiError::store("records", e))?;
    let records: Vec<Value> = records
        .into_iter()
        .map(|r| {
            json!({
                "uri": format!("at://{did}/{}/{}", r.collection, r.rkey),
                "collection": r.collection,
                "rkey": r.rkey,
                "cid": r.cid,
                "record": serde_json::from_str::<Value>(&r.record).unwrap_or(Value::Null),
            })
        })
        .collect();
    Ok(Json(json!({ "did": did, "records": records })).into_response())
}

// ---------------------------------------------------------------------------
// admin

/// `POST /v1/admin/repos/{did}/cleanup`: tombstone every row of a DID now.
pub async fn admin_cleanup(
    State(st): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    st.inner.keys.check(&headers, Scope::Admin).await?;
    let did = did_param(path)?;
    let (id, _) = auth::new_key()?;
    let id = format!("admin-{id}");
    let done = cleanup::cleanup_did(&st.inner.ch, &did, &id, "admin request")
        .await
        .map_err(|e| ApiError::store("cleanup", e))?;
    Ok((
        StatusCode::OK,
        Json(json!({ "job": id, "did": did, "status": "done", "rows_tombstoned": done.rows_tombstoned })),
    )
        .into_response())
}

/// An admin route's path parameter, once the key is checked.
async fn admin_path(
    st: &ApiState,
    headers: &HeaderMap,
    path: Result<Path<String>, PathRejection>,
    what: &str,
) -> Result<String, ApiError> {
    st.inner.keys.check(headers, Scope::Admin).await?;
    let Path(value) =
        path.map_err(|_| ApiError::bad_request(format!("the {what} is not valid UTF-8")))?;
    Ok(value)
}

/// `GET /v1/admin/jobs/{id}`.
pub async fn admin_job(
    State(st): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = admin_path(&st, &headers, path, "job id").await?;
    if id.is_empty()
        || id.len() > 200
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ":._-".contains(c))
    {
        return Err(ApiError::bad_request(
            "job id has characters a job id never has",
        ));
    }
    let job = cleanup::cleanup_job(&st.inner.ch, &id)
        .await
        .map_err(|e| ApiError::store("cleanup jobs", e))?
        .ok_or_else(|| ApiError::not_found(format!("no job {id}")))?;
    Ok(Json(json!({
        "id": job.id,
        "did": job.did,
        "status": job.status,
        "reason": job.reason,
        "rows_tombstoned": job.rows_tombstoned,
        "requested_at": job.requested_at,
        "finished_at": job.finished_at,
    }))
    .into_response())
}

/// `GET /v1/admin/keys`: every key's id, name, scopes, state (never the hash).
pub async fn admin_list_keys(State(st): State<ApiState>, headers: HeaderMap) -> ApiResult {
    st.inner.keys.check(&headers, Scope::Admin).await?;
    let listed: Vec<Value> = keys::list_keys(&st.inner.ch)
        .await
        .map_err(|e| ApiError::store("API keys", e))?
        .into_iter()
        .map(|k| {
            json!({
                "id": k.id,
                "name": k.name,
                "scopes": k.scopes,
                "created_at": k.created_at,
                "revoked": k.revoked,
            })
        })
        .collect();
    Ok(Json(json!({ "keys": listed })).into_response())
}

/// `POST /v1/admin/keys` `{"name", "scopes": ["read"|"admin"]}`: the key is
/// in this answer only; ClickHouse keeps its hash.
pub async fn admin_create_key(
    State(st): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult {
    st.inner.keys.check(&headers, Scope::Admin).await?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("body must be JSON {\"name\", \"scopes\"}"))?;
    let name = v.get("name").and_then(Value::as_str).unwrap_or("").trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::bad_request("name must be 1-100 characters"));
    }
    let scopes: Vec<&str> = v
        .get("scopes")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if scopes.is_empty() || scopes.iter().any(|s| *s != "read" && *s != "admin") {
        return Err(ApiError::bad_request(
            "scopes must be a non-empty list of \"read\" and \"admin\"",
        ));
    }
    let (id, key) = auth::new_key()?;
    keys::create_key(&st.inner.ch, &id, &auth::stored_hash(&key), name, &scopes)
        .await
        .map_err(|e| ApiError::store("API keys", e))?;
    tracing::info!(id, name, "API key created.");
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": id, "key": key, "name": name, "scopes": scopes })),
    )
        .into_response())
}

/// `DELETE /v1/admin/keys/{id}`: revoke.
pub async fn admin_revoke_key(
    State(st): State<ApiState>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
) -> ApiResult {
    let id = admin_path(&st, &headers, path, "key id").await?;
    if id.len() != 16 || !id.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ApiError::bad_request("key id must be 16 hex characters"));
    }
    let revoked = keys::revoke_key(&st.inner.ch, &id)
        .await
        .map_err(|e| ApiError::store("API keys", e))?;
    if !revoked {
        return Err(ApiError::not_found(format!("no key {id}")));
    }
    st.inner.keys.forget();
    tracing::info!(id, "API key revoked.");
    Ok(Json(json!({ "id": id, "revoked": true })).into_response())
}

/// `POST /v1/sql` `{"query": "SELECT …"}` (admin): run read-only
/// (`readonly=1`), with time and row limits; answers `{"rows", "columns",
/// "data"}` (columns in the statement's order). ClickHouse's error is shown
/// (it is the caller's own query), first line only.
pub async fn sql(State(st): State<ApiState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    st.inner.keys.check(&headers, Scope::Admin).await?;
    let v: Value = serde_json::from_slice(&body)
        .map_err(|_| ApiError::bad_request("body must be JSON {\"query\": \"SELECT …\"}"))?;
    let q = v
        .get("query")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|q| !q.is_empty())
        .ok_or_else(|| ApiError::bad_request("query is required"))?;
    let cfg = &st.inner.cfg;
    let limits = explorer::Limits {
        max_seconds: cfg.sql_max_seconds,
        max_rows: cfg.sql_max_rows,
    };
    match explorer::run(&st.inner.ch, q, limits).await {
        Ok(explorer::Answer::Rows { columns, rows }) => Ok(Json(
            json!({ "rows": rows.len(), "columns": columns, "data": rows }),
        )
        .into_response()),
        Ok(explorer::Answer::NotRows) => Err(ApiError::bad_request(
            "the query must return rows (no FORMAT clause)",
        )),
        Err(e) => Err(ApiError::explorer(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_decode_percent_and_plus_and_refuse_bad_utf8() {
        assert_eq!(decode("a+b%20c%3F%27").as_deref(), Some("a b c?'"));
        assert_eq!(decode("100%").as_deref(), Some("100%"), "a lone % is kept");
        assert_eq!(decode("%zz").as_deref(), Some("%zz"));
        assert_eq!(decode("%FF%FE"), None);
        let p = params(Some("q=x&limit=5&q=y".into())).expect("params");
        assert_eq!(p["q"], "y", "the last repeat wins");
        let e = params(Some("q=%C3".into())).expect_err("bad UTF-8");
        assert!(e.message.contains("\"q\""), "{}", e.message);
        let long = format!("q={}", "x".repeat(MAX_PARAM + 1));
        assert_eq!(params(Some(long)).expect_err("long").status, 400);
        // `uris` lists up to 25 post AT-URIs of about 70 bytes each.
        let uri = "at://did:plc:hcmjgldxzytqj4wjy7budsg5/app.bsky.feed.post/3n3vs2d7vgs2t";
        let list = vec![uri; 25].join(",");
        assert_eq!(
            params(Some(format!("uris={list}"))).expect("25 URIs")["uris"],
            list
        );
        let long = format!("uris={}", "x".repeat(MAX_URIS_PARAM + 1));
        assert_eq!(params(Some(long)).expect_err("long").status, 400);
    }

    #[test]
    fn cursors_round_trip_and_reject_anything_else() {
        let c = encode_cursor(1_700_000_000, "did:plc:abc", "3kxyz");
        assert_eq!(
            decode_cursor(&c).expect("ours"),
            (1_700_000_000, "did:plc:abc".to_owned(), "3kxyz".to_owned())
        );
        for bad in ["", "!!", "WzFd", "eyJhIjoxfQ", &c[..c.len() - 3]] {
            assert_eq!(decode_cursor(bad).expect_err(bad).status, 400, "{bad}");
        }
        let not_a_did = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(json!([1, "x' OR 1=1", "r"]).to_string());
        assert!(decode_cursor(&not_a_did).is_err());
    }

    #[test]
    fn limits_and_times_name_the_parameter() {
        let p = params(Some(
            "limit=0&since=yesterday&until=2026-11-01T00:00:00Z".into(),
        ))
        .expect("p");
        assert!(int_param(&p, "limit", 1, 100, 25)
            .expect_err("0")
            .message
            .contains("limit"));
        assert!(time_param(&p, "since")
            .expect_err("word")
            .message
            .contains("since"));
        assert_eq!(
            time_param(&p, "until").expect("rfc3339"),
            Some(1_793_491_200)
        );
        assert_eq!(days_ago(0).len(), 10);
        assert!(days_ago(0) > days_ago(1) && days_ago(1) > days_ago(400));
    }

    #[test]
    fn keys_compare_in_constant_time_and_are_stored_hashed() {
        assert!(auth::ct_eq(b"abc", b"abc"));
        assert!(!auth::ct_eq(b"abc", b"abd"));
        assert!(!auth::ct_eq(b"abc", b"ab"));
        let (id, key) = auth::new_key().expect("key");
        assert_eq!(id.len(), 16);
        assert!(key.starts_with("sh_") && key.len() == 46, "{key}");
        assert_eq!(auth::stored_hash(&key).len(), 64);
        assert!(!auth::stored_hash(&key).contains(&key[3..]));
    }

    #[test]
    fn openapi_lists_every_route_of_the_table() {
        let doc = crate::openapi();
        let n: usize = doc["paths"]
            .as_object()
            .expect("paths")
            .values()
            .map(|ops| ops.as_object().expect("ops").len())
            .sum();
        assert_eq!(n, crate::ROUTES.len());
    }
}
