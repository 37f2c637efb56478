-- The identities walk (src/identities.rs): stale handles are re-verified in
-- key order, one window of the key space at a time, so that each step reads
-- only its window (`did > {after} AND did < {before}` is a range of the
-- primary key: ClickHouse 18.16 cannot stop a sorted read early, so a step
-- without an upper bound would read the rest of the table).
-- {after} and {before} are quoted literals, {limit} an integer.

-- name: identities_window
SELECT did, handle, version FROM {db}.identities FINAL WHERE did > {after} AND did < {before} ORDER BY did LIMIT {limit};

-- A DID's identity row as stored (tests and `skyhouse` diagnostics).
-- name: identity_of
SELECT did, handle, version FROM {db}.identities FINAL WHERE did = {did};
