-- Backfill and resync (src/repos.rs): repo_state and a DID's stored records.

-- name: repo_status_counts
-- Repositories per backfill status (current state of each DID).
SELECT status, count() FROM {db}.repo_state FINAL GROUP BY status ORDER BY status;

-- name: repos_finished_since
-- Repositories finished (any status) in the last {secs} seconds, over every worker.
SELECT count() FROM {db}.repo_state WHERE updated_at > now() - {secs};

-- name: stored_live_keys
-- A DID's live records written before the snapshot at {version} (a resync
-- tombstones those the snapshot no longer holds).
SELECT collection, rkey FROM {db}.records FINAL WHERE did = {did} AND deleted = 0 AND version < {version};
