//! Relay tokens: `authorization: Bearer <token>` on every call but
//! `HealthCheck`.
//!
//! A token is `shr_` + 43 characters (base64url of 32 random bytes). Only
//! its sha-256 is stored, in a JSON file (`--tokens-file`, mode 0600) with
//! an id, a name, its scopes and when it was created or revoked; a presented
//! token is hashed and compared with every stored hash in constant time, as
//! the search API does with its keys. Scopes: `subscribe`
//! (`StreamOperations`, `Ack`) and `publish` (`Ingest`, `IngestStream`).
//!
//! The relay re-reads the file when it changes ([`Auth::reload_if_changed`],
//! every few seconds), so `skyhouse relay token revoke` takes effect without
//! a restart, and the streams of a revoked token end with UNAUTHENTICATED.
//! Neither a token nor its hash is ever logged or put in an error.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ring::rand::SecureRandom;
use sha2::{Digest, Sha256};
use tonic::Status;

use crate::metrics;

/// What a call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    /// `StreamOperations` and `Ack`.
    Subscribe,
    /// `Ingest` and `IngestStream`.
    Publish,
}

impl Scope {
    /// The scope's name in the tokens file and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Subscribe => "subscribe",
            Scope::Publish => "publish",
        }
    }
}

impl std::str::FromStr for Scope {
    type Err = AuthError;

    fn from_str(s: &str) -> Result<Scope, AuthError> {
        match s.trim() {
            "subscribe" => Ok(Scope::Subscribe),
            "publish" => Ok(Scope::Publish),
            other => Err(AuthError::Scope(other.to_owned())),
        }
    }
}

/// Why a tokens file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The file could not be read or written.
    #[error("tokens file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The file is not a tokens file.
    #[error("tokens file {path}: not a relay tokens file: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An unknown scope name.
    #[error("unknown scope {0:?} (expected subscribe or publish)")]
    Scope(String),
    /// A bad token name.
    #[error("token name {0:?}: expected 1-64 characters of [A-Za-z0-9._-]")]
    Name(String),
    /// No token has this id.
    #[error("no token with id {0:?}")]
    NotFound(String),
    /// Another process holds the file's lock.
    #[error(
        "tokens file {0}: locked by another `skyhouse relay token` (remove {0}.lock if none runs)"
    )]
    Locked(PathBuf),
    /// The system's random source failed.
    #[error("the random source failed")]
    Random,
}

/// One token as the file keeps it (its hash, never the token).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenInfo {
    /// 16 hex characters, for `list` and `revoke` (not secret).
    pub id: String,
    /// Who or what it is for.
    pub name: String,
    /// `subscribe`, `publish`.
    pub scopes: Vec<String>,
    /// sha-256 of the token, hex.
    pub hash: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Unix seconds; set once revoked (the entry stays, for the record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<u64>,
}

impl TokenInfo {
    /// Whether it grants `scope` (and is not revoked).
    pub fn grants(&self, scope: Scope) -> bool {
        self.revoked_at.is_none() && self.scopes.iter().any(|s| s == scope.as_str())
    }
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct FileBody {
    /// Always 1.
    version: u32,
    tokens: Vec<TokenInfo>,
}

/// Longest token accepted (ours are 47 bytes).
const MAX_TOKEN_LEN: usize = 256;
/// Largest tokens file read (a few hundred bytes per token).
const MAX_FILE_BYTES: u64 = 16 << 20;
/// How long `create`/`revoke` wait for another one's lock.
const LOCK_WAIT: Duration = Duration::from_secs(5);

/// The sha-256 of a token, hex.
pub fn token_hash(token: &str) -> String {
    hex(&Sha256::digest(token.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Equal contents, in time independent of where they differ.
fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Unix time as `YYYY-MM-DDTHH:MM:SSZ` (for `token list`).
pub fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = skyhouse_atproto::syntax::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

/// The tokens file: what `skyhouse relay token create/list/revoke` edit.
#[derive(Debug, Clone)]
pub struct TokenFile {
    path: PathBuf,
}

impl TokenFile {
    /// The file at `path` (created by the first `create`).
    pub fn new(path: impl Into<PathBuf>) -> TokenFile {
        TokenFile { path: path.into() }
    }

    /// Where it is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Every token, revoked ones included. A missing file has none.
    pub fn list(&self) -> Result<Vec<TokenInfo>, AuthError> {
        Ok(read_file(&self.path)?.map(|b| b.tokens).unwrap_or_default())
    }

    /// A new token named `name` with `scopes`: its entry and the token
    /// itself, which is shown once and stored nowhere.
    pub fn create(&self, name: &str, scopes: &[Scope]) -> Result<(TokenInfo, String), AuthError> {
        let ok_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if !ok_name {
            return Err(AuthError::Name(name.to_owned()));
        }
        if scopes.is_empty() {
            return Err(AuthError::Scope(String::new()));
        }
        let rng = ring::rand::SystemRandom::new();
        let (mut secret, mut id) = ([0u8; 32], [0u8; 8]);
        rng.fill(&mut secret)
            .and_then(|()| rng.fill(&mut id))
            .map_err(|_| AuthError::Random)?;
        let token = format!(
            "shr_{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
        );
        let mut scopes: Vec<Scope> = scopes.to_vec();
        scopes.sort();
        scopes.dedup();
        let info = TokenInfo {
            id: hex(&id),
            name: name.to_owned(),
            scopes: scopes.iter().map(|s| s.as_str().to_owned()).collect(),
            hash: token_hash(&token),
            created_at: now_secs(),
            revoked_at: None,
        };
        self.edit(|body| {
            body.tokens.push(info.clone());
            Ok(())
        })?;
        Ok((info, token))
    }

    /// Revoke the token `id` (its entry stays, marked revoked).
    pub fn revoke(&self, id: &str) -> Result<TokenInfo, AuthError> {
        let mut out = None;
        self.edit(|body| {
            let t = body
                .tokens
                .iter_mut()
                .find(|t| t.id == id)
                .ok_or_else(|| AuthError::NotFound(id.to_owned()))?;
            if t.revoked_at.is_none() {
                t.revoked_at = Some(now_secs());
            }
            out = Some(t.clone());
            Ok(())
        })?;
        out.ok_or_else(|| AuthError::NotFound(id.to_owned()))
    }

    /// Read, change and atomically replace the file (mode 0600), under a
    /// lock file so that two concurrent edits do not lose one.
    fn edit(
        &self,
        f: impl FnOnce(&mut FileBody) -> Result<(), AuthError>,
    ) -> Result<(), AuthError> {
        let io = |source| AuthError::Io {
            path: self.path.clone(),
            source,
        };
        let lock = PathBuf::from(format!("{}.lock", self.path.display()));
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&lock)
            {
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if std::time::Instant::now() > deadline {
                        return Err(AuthError::Locked(self.path.clone()));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(io(e)),
            }
        }
        let result = (|| {
            let mut body = read_file(&self.path)?.unwrap_or(FileBody {
                version: 1,
                tokens: Vec::new(),
            });
            f(&mut body)?;
            let mut text = serde_json::to_vec_pretty(&body).map_err(|e| AuthError::Format {
                path: self.path.clone(),
                reason: e.to_string(),
            })?;
            text.push(b'\n');
            let tmp = PathBuf::from(format!("{}.tmp", self.path.display()));
            write_private(&tmp, &text).map_err(io)?;
            std::fs::rename(&tmp, &self.path).map_err(io)
        })();
        let _ = std::fs::remove_file(&lock);
        result
    }
}

/// Write `bytes` to a new file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn read_file(path: &Path) -> Result<Option<FileBody>, AuthError> {
    let io = |source| AuthError::Io {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(e)),
    };
    if meta.len() > MAX_FILE_BYTES {
        return Err(AuthError::Format {
            path: path.to_owned(),
            reason: format!("{} bytes (at most {MAX_FILE_BYTES})", meta.len()),
        });
    }
    let text = std::fs::read(path).map_err(io)?;
    let body: FileBody = serde_json::from_slice(&text).map_err(|e| AuthError::Format {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if body.version != 1 {
        return Err(AuthError::Format {
            path: path.to_owned(),
            reason: format!("version {} (this relay reads version 1)", body.version),
        });
    }
    for t in &body.tokens {
        if t.hash.len() != 64 || !t.hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(AuthError::Format {
                path: path.to_owned(),
                reason: format!("token {:?}: hash is not 64 hex characters", t.id),
            });
        }
        for s in &t.scopes {
            s.parse::<Scope>().map_err(|_| AuthError::Format {
                path: path.to_owned(),
                reason: format!("token {:?}: unknown scope {s:?}", t.id),
            })?;
        }
    }
    Ok(Some(body))
}

/// Who made a call (put in the request's extensions by the service): the
/// token's id, or nothing when the relay runs without authentication.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The token's id (`None`: `--insecure-no-auth`).
    pub token_id: Option<String>,
}

/// The file as last read, with what identifies its version.
#[derive(Debug, Default)]
struct Loaded {
    tokens: Vec<TokenInfo>,
    /// (modified time, length) when read.
    stamp: Option<(SystemTime, u64)>,
}

/// The relay's token checker; see the module docs.
#[derive(Debug, Clone)]
pub struct Auth {
    inner: Option<Arc<Checker>>,
}

#[derive(Debug)]
struct Checker {
    path: PathBuf,
    loaded: RwLock<Loaded>,
    /// Bumped by each reload that changed the tokens: streams re-check their
    /// token when it moves.
    generation: AtomicU64,
}

impl Auth {
    /// No authentication (`--insecure-no-auth`): every call is allowed.
    pub fn insecure() -> Auth {
        Auth { inner: None }
    }

    /// Tokens from the file at `path`. A missing file means no token yet
    /// (every call is refused until `skyhouse relay token create` writes
    /// one); an unreadable or malformed one is an error.
    pub fn from_file(path: impl Into<PathBuf>) -> Result<Auth, AuthError> {
        let path = path.into();
        let checker = Checker {
            path,
            loaded: RwLock::new(Loaded::default()),
            generation: AtomicU64::new(0),
        };
        checker.reload()?;
        Ok(Auth {
            inner: Some(Arc::new(checker)),
        })
    }

    /// Whether calls need a token.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Tokens that are not revoked (0 without authentication).
    pub fn active_tokens(&self) -> usize {
        self.inner.as_ref().map_or(0, |c| {
            c.read()
                .tokens
                .iter()
                .filter(|t| t.revoked_at.is_none())
                .count()
        })
    }

    /// Re-read the file if it changed since the last read. A file that
    /// became unreadable or malformed keeps the tokens last read (logged).
    pub fn reload_if_changed(&self) {
        let Some(c) = &self.inner else { return };
        let stamp = std::fs::metadata(&c.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()));
        if stamp == c.read().stamp {
            return;
        }
        if let Err(e) = c.reload() {
            tracing::error!(error = %e, "Relay tokens file not reloaded; keeping the tokens read before.");
        }
    }

    /// The generation of the tokens (see [`Auth::still_valid`]).
    pub(crate) fn generation(&self) -> u64 {
        self.inner
            .as_ref()
            .map_or(0, |c| c.generation.load(Ordering::Acquire))
    }

    /// Whether the caller's token still grants `scope` (after a reload).
    pub(crate) fn still_valid(&self, caller: &Caller, scope: Scope) -> bool {
        match (&self.inner, &caller.token_id) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(c), Some(id)) => c
                .read()
                .tokens
                .iter()
                .any(|t| t.id == *id && t.grants(scope)),
        }
    }

    /// Accept a call carrying `authorization` for `need`, or refuse it
    /// (UNAUTHENTICATED, PERMISSION_DENIED). Counted, never logged with the
    /// token.
    pub(crate) fn check(
        &self,
        authorization: Option<&[u8]>,
        need: Scope,
    ) -> Result<Caller, Status> {
        let Some(c) = &self.inner else {
            return Ok(Caller { token_id: None });
        };
        let Some(token) = authorization.and_then(bearer) else {
            metrics::auth_refused("missing");
            return Err(Status::unauthenticated(
                "a relay token is required: authorization: Bearer <token>",
            ));
        };
        let presented = token_hash(token);
        let loaded = c.read();
        // Every stored hash is compared (constant time each), whatever matches.
        let mut found: Option<&TokenInfo> = None;
        for t in &loaded.tokens {
            if ct_eq(t.hash.as_bytes(), presented.as_bytes()) {
                found = Some(t);
            }
        }
        match found {
            Some(t) if t.revoked_at.is_none() => {
                if t.grants(need) {
                    Ok(Caller {
                        token_id: Some(t.id.clone()),
                    })
                } else {
                    metrics::auth_refused("scope");
                    Err(Status::permission_denied(format!(
                        "token {} has no {} scope",
                        t.id,
                        need.as_str()
                    )))
                }
            }
            _ => {
                metrics::auth_refused("invalid");
                Err(Status::unauthenticated("unknown or revoked relay token"))
            }
        }
    }
}

impl Checker {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(|p| p.into_inner())
    }

    fn reload(&self) -> Result<(), AuthError> {
        let stamp = std::fs::metadata(&self.path)
            .ok()
            .map(|m| (m.modified().unwrap_or(UNIX_EPOCH), m.len()));
        let tokens = read_file(&self.path)?.map(|b| b.tokens).unwrap_or_default();
        let mut loaded = self.loaded.write().unwrap_or_else(|p| p.into_inner());
        let changed = loaded.tokens != tokens;
        *loaded = Loaded { tokens, stamp };
        if changed {
            self.generation.fetch_add(1, Ordering::AcqRel);
            let active = loaded
                .tokens
                .iter()
                .filter(|t| t.revoked_at.is_none())
                .count();
            tracing::info!(path = %self.path.display(), active, "Relay tokens loaded.");
        }
        Ok(())
    }
}

/// The token of an `authorization` value (`Bearer <token>`), if plausible.
fn bearer(value: &[u8]) -> Option<&str> {
    let value = std::str::from_utf8(value).ok()?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))?
        .trim();
    (!token.is_empty() && token.len() <= MAX_TOKEN_LEN).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("skyhouse-relay-auth-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join("tokens.json")
    }

    fn header(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn a_created_token_is_stored_hashed_and_checked_by_scope() {
        let path = temp("scope");
        let file = TokenFile::new(&path);
        let (info, token) = file
            .create("ingester", &[Scope::Subscribe])
            .expect("create");
        let text = std::fs::read_to_string(&path).expect("file");
        assert!(!text.contains(&token), "the token itself is not stored");
        assert!(text.contains(&info.hash));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let auth = Auth::from_file(&path).expect("auth");
        let caller = auth
            .check(Some(&header(&token)), Scope::Subscribe)
            .expect("subscribe allowed");
        assert_eq!(caller.token_id.as_deref(), Some(info.id.as_str()));
        let denied = auth
            .check(Some(&header(&token)), Scope::Publish)
            .expect_err("no publish scope");
        assert_eq!(denied.code(), tonic::Code::PermissionDenied);
        assert!(!denied.message().contains(&token));
        for bad in [
            None,
            Some(b"Bearer ".to_vec()),
            Some(b"Basic abc".to_vec()),
            Some(header("shr_nope")),
        ] {
            let e = auth
                .check(bad.as_deref(), Scope::Subscribe)
                .expect_err("refused");
            assert_eq!(e.code(), tonic::Code::Unauthenticated);
        }
    }

    #[test]
    fn a_revoked_token_stops_working_after_a_reload_and_stays_listed() {
        let path = temp("revoke");
        let file = TokenFile::new(&path);
        let (a, token_a) = file
            .create("a", &[Scope::Subscribe, Scope::Publish])
            .expect("a");
        let (_, token_b) = file.create("b", &[Scope::Publish]).expect("b");
        let auth = Auth::from_file(&path).expect("auth");
        let caller = auth
            .check(Some(&header(&token_a)), Scope::Publish)
            .expect("ok");
        let generation = auth.generation();
        file.revoke(&a.id).expect("revoke");
        // The file's mtime may not move within its resolution: force the reload.
        auth.inner
            .as_ref()
            .expect("tokens")
            .reload()
            .expect("reload");
        assert!(auth.generation() > generation);
        assert!(!auth.still_valid(&caller, Scope::Publish));
        let e = auth
            .check(Some(&header(&token_a)), Scope::Publish)
            .expect_err("revoked");
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        assert!(auth.check(Some(&header(&token_b)), Scope::Publish).is_ok());
        let listed = file.list().expect("list");
        assert_eq!(listed.len(), 2);
        assert!(listed[0].revoked_at.is_some() && listed[1].revoked_at.is_none());
        assert!(matches!(file.revoke("0000"), Err(AuthError::NotFound(_))));
    }

    #[test]
    fn bad_files_and_names_are_clear_errors() {
        let path = temp("bad");
        std::fs::write(&path, "{\"version\":1,\"tokens\":[{\"id\":\"x\",\"name\":\"n\",\"scopes\":[\"admin\"],\"hash\":\"00\",\"created_at\":0}]}").expect("write");
        let e = Auth::from_file(&path).expect_err("bad hash");
        assert!(e.to_string().contains("hash is not 64 hex"), "{e}");
        std::fs::write(&path, "not json").expect("write");
        assert!(matches!(
            Auth::from_file(&path),
            Err(AuthError::Format { .. })
        ));
        let missing = temp("missing");
        let auth = Auth::from_file(&missing).expect("a missing file is no token");
        assert_eq!(auth.active_tokens(), 0);
        assert!(matches!(
            TokenFile::new(&missing).create("has space", &[Scope::Subscribe]),
            Err(AuthError::Name(_))
        ));
        assert!(matches!("admin".parse::<Scope>(), Err(AuthError::Scope(_))));
    }

    #[test]
    fn utc_formats_unix_seconds() {
        assert_eq!(utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc(1_700_000_000), "2023-11-14T22:13:20Z");
        assert_eq!(utc(951_782_400), "2000-02-29T00:00:00Z");
    }
}
