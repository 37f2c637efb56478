-- Host health snapshots of the monitor (src/hosts.rs, table host_checks, migration 0007).

-- name: known_hosts
-- Hosts checked before (any time), at most {limit}.
SELECT host, any(kind) FROM {db}.host_checks GROUP BY host ORDER BY host LIMIT {limit};

-- name: unhealthy_hosts
-- Hosts whose newest check since {since} (Unix seconds) found them down.
SELECT host FROM {db}.host_checks FINAL WHERE observed_at >= toDateTime({since}) GROUP BY host HAVING argMax(up, observed_at) = 0 ORDER BY host;
