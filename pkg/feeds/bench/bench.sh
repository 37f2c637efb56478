#!/usr/bin/env bash
# getFeedSkeleton under load (`just bench-feedgen`): POSTS generated posts and LIKES generated
# likes (skewed: a few posts get most likes) in the `just up` ClickHouse, the release
# `skyhouse feedgen` in front of them (like counts prefilled, see below), then
# Debian `wrk` with CONNS connections for DURATION on cached pages of each built-in feed.
# Prints the cold (uncached) ranking time per feed and wrk's p50/p99 and requests/s.
# Usage: bench.sh [POSTS] [LIKES] [CONNS] [DURATION]
set -euo pipefail
POSTS=${1:-1000000}
LIKES=${2:-4000000}
CONNS=${3:-200}
DURATION=${4:-20s}
CH=${CLICKHOUSE_ADDRESS:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}
REDIS=${REDIS_ADDRESS:-redis://127.0.0.1:${REDIS_PORT:-6379}}
DB=skyhouse_bench_feedgen
PUBLISHER=did:plc:benchpublisher0000000000
PORT=${FEEDGEN_BENCH_PORT:-18094}
METRICS=${FEEDGEN_BENCH_METRICS_PORT:-18095}
bin=target/release/skyhouse
command -v wrk >/dev/null || { echo "bench-feedgen: wrk missing (apt-get install wrk)" >&2; exit 1; }

q() { curl -sS --fail-with-body "$CH/" --data-binary "$1"; }

have=0
if [ "$(q "SELECT count() FROM system.tables WHERE database = '$DB' AND name = 'likes'")" = 1 ]; then
    have=$(q "SELECT count() FROM $DB.likes")
fi
if [ "$have" -lt "$LIKES" ]; then
    echo "generating $POSTS posts and $LIKES likes in $DB ..." >&2
    q "DROP DATABASE IF EXISTS $DB"
    "$bin" migrate up --clickhouse-address "$CH" --database "$DB" >/dev/null
    # Posts over the last 48 h by 50k authors.
    q "INSERT INTO $DB.posts (did, rkey, cid, version, deleted, created_at, indexed_at, sort_at, text)
       SELECT concat('did:plc:benchauthor', toString(number % 50000)), concat('p', toString(number)),
              'bafybench', 1, 0, now() - number % 172800, now() - number % 172800, now() - number % 172800,
              concat('post ', toString(number))
       FROM numbers($POSTS)"
    # Likes by 100k accounts; the subject index is a product of two uniform draws, so low
    # indexes (a few posts) collect most likes.
    q "INSERT INTO $DB.likes (did, rkey, cid, version, deleted, created_at, indexed_at, sort_at, subject_uri, subject_cid, subject_did)
       SELECT concat('did:plc:benchliker', toString(number % 100000)), concat('l', toString(number)), 'bafybench', 1, 0,
              now(), now(), now(),
              concat('at://did:plc:benchauthor', toString(s % 50000), '/app.bsky.feed.post/p', toString(s)), 'bafybench',
              concat('did:plc:benchauthor', toString(s % 50000))
       FROM (SELECT number, (intHash32(number) % 1000) * (intHash32(number * 3 + 1) % 1000) % $POSTS AS s FROM numbers($LIKES))"
fi
if [ "$(q "SELECT count() FROM $DB.interactions")" -lt "$LIKES" ]; then
    # The counts as refresh_interactions writes them (one live row per like). Not by running it:
    # one refresh over a 4M-like backlog needs more than ClickHouse 18.16's default 3.7 GiB
    # per-query memory (it holds every touched (did, rkey) in a set), so the bench starts from
    # the state of a store whose refreshes kept pace. The watermark is set 10 min ahead so the
    # feedgen's first refresh (which rereads 5 min before the watermark) skips this backlog.
    echo "filling interactions ..." >&2
    q "INSERT INTO $DB.interactions (subject_uri, kind, did, rkey, version, deleted, sort_at)
       SELECT subject_uri, 'like', did, rkey, version, 0, sort_at FROM $DB.likes"
    q "INSERT INTO $DB.aggregate_refreshes (name, upto, version)
       SELECT 'interactions', now() + 600, toUInt64(toUInt32(now())) * 1000000"
fi
echo "data: $(q "SELECT count() FROM $DB.posts") posts, $(q "SELECT count() FROM $DB.likes") likes" >&2

"$bin" feedgen --listen "127.0.0.1:$PORT" --metrics-addr "127.0.0.1:$METRICS" \
    --public-url "http://localhost:$PORT" --publisher-did "$PUBLISHER" \
    --clickhouse-address "$CH" --database "$DB" --redis "$REDIS" --redis-prefix "bench-feedgen:$$:" \
    --refresh-secs 3600 2>/tmp/bench-feedgen.log &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
start=$(date +%s)
until curl -sf "http://127.0.0.1:$METRICS/health" >/dev/null; do
    kill -0 $pid 2>/dev/null || { cat /tmp/bench-feedgen.log >&2; exit 1; }
    [ $(( $(date +%s) - start )) -lt 1800 ] || { echo "feedgen not ready after 30 min" >&2; exit 1; }
    sleep 1
done
echo "feedgen ready after $(( $(date +%s) - start )) s" >&2

for feed in whats-hot top-1h top-24h; do
    uri="at%3A%2F%2F${PUBLISHER//:/%3A}%2Fapp.bsky.feed.generator%2F$feed"
    url="http://127.0.0.1:$PORT/xrpc/app.bsky.feed.getFeedSkeleton?feed=$uri&limit=50"
    cold=$(curl -s -o /dev/null -w '%{time_total}' "$url")
    n=$(curl -s "$url" | grep -o '"post"' | wc -l)
    out=$(wrk -t2 -c"$CONNS" -d"$DURATION" --latency "$url")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    rps=$(awk '$1 == "Requests/sec:" {print $2}' <<<"$out")
    errs=$(grep -E 'Non-2xx|Socket errors' <<<"$out" || true)
    printf 'getFeedSkeleton %-9s cold %6.0f ms, %d posts/page | wrk %s conns %s: p50 %s p99 %s, %s req/s %s\n' \
        "$feed" "$(awk -v t="$cold" 'BEGIN {print t * 1000}')" "$n" "$CONNS" "$DURATION" "$p50" "$p99" "$rps" "$errs"
done
