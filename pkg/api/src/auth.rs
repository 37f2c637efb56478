//! API keys: `Authorization: Bearer <key>`. Only the sha-256 of a key is
//! stored (`api_keys.key_hash`, hex); a presented key is hashed and the
//! hashes are compared in constant time. Scopes: `read` (queries) and
//! `admin` (everything). A bootstrap admin key may come from the
//! configuration (held only as its hash).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use ring::rand::SecureRandom;
use sha2::{Digest, Sha256};
use skyhouse_store::ClickHouse;

use crate::error::ApiError;

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Queries.
    Read,
    /// Keys, cleanup jobs, the SQL explorer (implies read).
    Admin,
}

/// How long a verified key is trusted without asking ClickHouse again (a
/// revoked key stops working within this time on other processes; at once
/// on the one that revoked it).
const CACHE_TTL: Duration = Duration::from_secs(30);
/// Keys remembered at most (verified ones only, so an attacker cannot fill it).
const CACHE_MAX: usize = 10_000;
/// Longest key accepted (ours are 46 bytes).
const MAX_KEY_LEN: usize = 256;

/// The sha-256 of a key.
pub fn hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal contents, in time independent of where they differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Verified key hashes → (scopes, when verified).
type KeyCache = HashMap<[u8; 32], (Vec<String>, Instant)>;

/// The key checker.
#[derive(Debug)]
pub struct Keys {
    ch: ClickHouse,
    admin: Option<[u8; 32]>,
    cache: Mutex<KeyCache>,
}

impl Keys {
    /// Keys stored in `ch`'s `api_keys`, plus `admin_key` (bootstrap) if given.
    pub fn new(ch: ClickHouse, admin_key: Option<&str>) -> Keys {
        Keys {
            ch,
            admin: admin_key.map(hash),
            cache: Mutex::default(),
        }
    }

    /// Accept the request's key for `need`, or say why not (401/403).
    pub async fn check(&self, headers: &HeaderMap, need: Scope) -> Result<(), ApiError> {
        let key = bearer(headers).ok_or_else(|| {
            ApiError::unauthorized("an API key is required: Authorization: Bearer <key>")
        })?;
        let h = hash(key);
        let scopes = self.scopes(&h).await?;
        let ok = match need {
            Scope::Read => scopes.iter().any(|s| s == "read" || s == "admin"),
            Scope::Admin => scopes.iter().any(|s| s == "admin"),
        };
        if ok {
            Ok(())
        } else {
            Err(ApiError::forbidden(match need {
                Scope::Read => "this key has no read scope",
                Scope::Admin => "this route needs a key with the admin scope",
            }))
        }
    }

    async fn scopes(&self, h: &[u8; 32]) -> Result<Vec<String>, ApiError> {
        if let Some(admin) = &self.admin {
            if ct_eq(admin, h) {
                return Ok(vec!["admin".to_owned()]);
            }
        }
        if let Some((scopes, at)) = self.lock().get(h) {
            if at.elapsed() < CACHE_TTL {
                return Ok(scopes.clone());
            }
        }
        let hex_hash = hex(h);
        let scopes = skyhouse_store::keys::key_by_hash(&self.ch, &hex_hash)
            .await
            .map_err(|e| ApiError::store("API keys", e))?
            .filter(|k| ct_eq(k.key_hash.as_bytes(), hex_hash.as_bytes()))
            .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?
            .scopes;
        let mut cache = self.lock();
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(*h, (scopes.clone(), Instant::now()));
        Ok(scopes)
    }

    /// Forget every remembered key (after a revocation).
    pub fn forget(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeyCache> {
        // A panic while holding it cannot leave the map inconsistent.
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The bearer token of a request, if it has a plausible one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty() && token.len() <= MAX_KEY_LEN).then_some(token)
}

/// A new key (`sh_` + 43 characters of base64url of 32 random bytes) and
/// its id (16 hex characters).
pub fn new_key() -> Result<(String, String), ApiError> {
    use base64::Engine as _;
    let rng = ring::rand::SystemRandom::new();
    let (mut secret, mut id) = ([0u8; 32], [0u8; 8]);
    rng.fill(&mut secret)
        .and_then(|()| rng.fill(&mut id))
        .map_err(|_| ApiError::unavailable("the random source", "ring SystemRandom failed"))?;
    let key = format!(
        "sh_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    Ok((hex(&id), key))
}

/// The stored form of a key.
pub fn stored_hash(key: &str) -> String {
    hex(&hash(key))
}
