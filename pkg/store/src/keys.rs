//! API keys, with their SQL in `queries/keys.sql`. Only a key's hash is
//! stored (the API hashes; this module never sees a key). A revocation
//! writes a newer version of the key's row with `revoked = 1`.

use serde::Deserialize;

use crate::sql::{self, literal, literal_array, render, Db, Rendered};
use crate::{ClickHouse, StoreError};

/// A live key found by its hash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct StoredKey {
    /// The stored hash (the caller compares it in constant time).
    pub key_hash: String,
    /// Its scopes.
    pub scopes: Vec<String>,
}

/// The live (not revoked) key whose stored hash is `key_hash`, if any.
pub async fn key_by_hash(ch: &ClickHouse, key_hash: &str) -> Result<Option<StoredKey>, StoreError> {
    let sql = render(ch.db(), "api_key_by_hash", &[("hash", &literal(key_hash))])?;
    let found: Vec<StoredKey> = ch.fetch_all("API key", &sql).await?;
    Ok(found.into_iter().next())
}

/// A key as listed to admins: never its hash.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, clickhouse::Row)]
pub struct ApiKey {
    /// Its id (16 hex characters).
    pub id: String,
    /// What it is for.
    pub name: String,
    /// Its scopes.
    pub scopes: Vec<String>,
    /// When it was made, Unix seconds.
    pub created_at: u32,
    /// 1 once revoked.
    pub revoked: u8,
}

/// Every key, oldest first.
pub async fn list_keys(ch: &ClickHouse) -> Result<Vec<ApiKey>, StoreError> {
    let sql = render(ch.db(), "list_api_keys", &[])?;
    ch.fetch_all("API keys", &sql).await
}

/// Store a new key: its `id`, the `key_hash` the API checks presented keys
/// against, a `name` and its `scopes`.
pub async fn create_key(
    ch: &ClickHouse,
    id: &str,
    key_hash: &str,
    name: &str,
    scopes: &[&str],
) -> Result<(), StoreError> {
    let sql = create_key_sql(
        ch.db(),
        id,
        key_hash,
        name,
        scopes,
        crate::cleanup::now_version(),
    )?;
    ch.execute("create API key", &sql).await
}

fn create_key_sql(
    db: Db<'_>,
    id: &str,
    key_hash: &str,
    name: &str,
    scopes: &[&str],
    version: u64,
) -> Result<String, StoreError> {
    render(
        db,
        "create_api_key",
        &[
            ("id", &literal(id)),
            ("hash", &literal(key_hash)),
            ("name", &literal(name)),
            ("scopes", &literal_array(scopes)),
            ("version", &version.to_string()),
        ],
    )
}

/// Revoke key `id`; `false` if there is no such key.
pub async fn revoke_key(ch: &ClickHouse, id: &str) -> Result<bool, StoreError> {
    let db = ch.db();
    let id = literal(id);
    let sql = render(db, "api_key_exists", &[("id", &id)])?;
    let n: u64 = ch.fetch_one("API key", &sql).await?;
    if n == 0 {
        return Ok(false);
    }
    let version = crate::cleanup::now_version().to_string();
    let sql = render(db, "revoke_api_key", &[("id", &id), ("version", &version)])?;
    ch.execute("revoke API key", &sql).await?;
    Ok(true)
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    let id = literal("0123456789abcdef");
    out.push(Rendered {
        name: "create_api_key".into(),
        sql: create_key_sql(
            db,
            "0123456789abcdef",
            "ab12",
            "it's mine",
            &["read", "admin"],
            5,
        )?,
    });
    sql::sample(out, db, "api_key_by_hash", &[("hash", &literal("ab12"))])?;
    sql::sample(out, db, "list_api_keys", &[])?;
    sql::sample(out, db, "api_key_exists", &[("id", &id)])?;
    sql::sample(out, db, "revoke_api_key", &[("id", &id), ("version", "6")])?;
    Ok(())
}
