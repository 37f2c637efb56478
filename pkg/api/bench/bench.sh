#!/usr/bin/env bash
# The search API under load (`just bench-api`, after `just bench-feedgen` has generated its
# posts and likes in skyhouse_bench_feedgen): the release `skyhouse search` in front of them,
# then Debian `wrk` with CONNS connections for DURATION on
#   - post search, a different term each request (pkg/api/bench/search.lua: no cache helps),
#   - post search by author (a different author each request),
#   - /v1/stats (cached in Redis).
# Prints wrk's p50/p99 and requests/s for each.
# Usage: bench.sh [CONNS] [DURATION]
set -euo pipefail
CONNS=${1:-4}
DURATION=${2:-20s}
CH=${CLICKHOUSE_ADDRESS:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}
REDIS=${REDIS_ADDRESS:-redis://127.0.0.1:${REDIS_PORT:-6379}}
DB=skyhouse_bench_feedgen
PORT=${SEARCH_BENCH_PORT:-18092}
METRICS=${SEARCH_BENCH_METRICS_PORT:-18093}
bin=target/release/skyhouse
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "bench-api: wrk missing (apt-get install wrk)" >&2; exit 1; }

q() { curl -sS --fail-with-body "$CH/" --data-binary "$1"; }
posts=$(q "SELECT count() FROM $DB.posts" 2>/dev/null || echo 0)
likes=$(q "SELECT count() FROM $DB.likes" 2>/dev/null || echo 0)
[ "$posts" -gt 0 ] || { echo "bench-api: no data in $DB: run just bench-feedgen first" >&2; exit 1; }
echo "data: $posts posts, $likes likes ($((posts + likes)) rows) in $DB" >&2

"$bin" search --listen "127.0.0.1:$PORT" --metrics-addr "127.0.0.1:$METRICS" \
    --clickhouse-address "$CH" --database "$DB" --redis "$REDIS" --redis-prefix "bench-api:$$:" \
    --refresh-secs 3600 2>/tmp/bench-api.log &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$METRICS/health" >/dev/null; do
    kill -0 $pid 2>/dev/null || { cat /tmp/bench-api.log >&2; exit 1; }
    sleep 0.5
done

run() { # name, SEARCH_PATH
    local out
    out=$(SEARCH_PATH="$2" wrk -t2 -c"$CONNS" -d"$DURATION" --latency -s "$here/search.lua" "http://127.0.0.1:$PORT")
    printf '%-22s wrk %s conns %s: p50 %s p99 %s, %s req/s %s\n' "$1" "$CONNS" "$DURATION" \
        "$(awk '$1 == "50%" {print $2}' <<<"$out")" "$(awk '$1 == "99%" {print $2}' <<<"$out")" \
        "$(awk '$1 == "Requests/sec:" {print $2}' <<<"$out")" "$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)"
}
run "search posts q=<n>" "/v1/search/posts?limit=25&q="
run "search posts author" "/v1/search/posts?limit=25&author=did:plc:benchauthor"
run "stats (cached)" "/v1/stats?x="
