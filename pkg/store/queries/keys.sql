-- API keys (src/keys.rs): only the sha-256 of a key is stored (hex,
-- key_hash). A revocation writes a newer version of the row with
-- revoked = 1. {id}, {hash}, {name} are quoted literals, {scopes} a quoted
-- array, {version} a number.

-- name: api_key_by_hash
SELECT key_hash, scopes FROM {db}.api_keys FINAL WHERE key_hash = {hash} AND revoked = 0 LIMIT 1;

-- name: list_api_keys
-- Sorted outside the FINAL read: on a cluster, ClickHouse 18.16 fails a
-- `Distributed` table's `FINAL … ORDER BY` with no WHERE that leaves out the
-- sorting key or version column ("Cannot find column version in source
-- stream") once both shards hold rows.
SELECT id, name, scopes, created_at, revoked
FROM (SELECT id, name, scopes, toUInt32(created_at) AS created_at, revoked FROM {db}.api_keys FINAL)
ORDER BY created_at, id;

-- name: create_api_key
INSERT INTO {db}.api_keys (id, key_hash, name, scopes, created_at, revoked, version) VALUES ({id}, {hash}, {name}, {scopes}, now(), 0, {version});

-- name: api_key_exists
SELECT count() FROM {db}.api_keys FINAL WHERE id = {id};

-- name: revoke_api_key
INSERT INTO {db}.api_keys (id, key_hash, name, scopes, created_at, revoked, version) SELECT id, key_hash, name, scopes, created_at, 1, {version} FROM {db}.api_keys FINAL WHERE id = {id};
