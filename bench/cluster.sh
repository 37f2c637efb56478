#!/usr/bin/env bash
# `just bench-cluster`: the indexer and the backfill on the local 2 x 2 cluster (`just cluster-up`)
# against the single `just up` server, in the same run and alternating (single, cluster, single,
# cluster, ...), plus the write path's two choices on the cluster; medians of RUNS, with the
# replication lag sampled while each cluster run writes. The machinery is the other benches':
#   indexer   pkg/pipeline/examples/indexer_bench.rs --case firehose (the whole indexer on EVENTS
#             generated firehose frames, `just bench-indexer`'s input) into a fresh database per
#             run, on one server and on the cluster (--cluster, through s1r1)
#   backfill  pkg/backfill/bench/bench.sh, case small (REPOS generated repositories drained by
#             `skyhouse backfill work`, `just bench-backfill`'s input), one run at a time
#   inserts   indexer_bench --case insert-distributed / insert-local: the same stream decoded
#             beforehand into the writer's batches, then only the inserts timed: through the
#             Distributed tables with insert_distributed_sync = 1 (what the writer does), or
#             split by cityHash64 of the sharding key into <table>_local on s1r1 and s2r1
# The servers' CPU is every ClickHouse server's (and, on the cluster, ZooKeeper's), summed and one
# by one. The lag sampler asks every server each second for max(absolute_delay),
# sum(queue_size) and sum(inserts_in_queue) of system.replicas in the run's database.
# Usage: bench/cluster.sh [EVENTS] [REPOS] [RUNS] [CASES]   (CASES: comma-separated, default
#   indexer,backfill,inserts). CARGO_TARGET_DIR: where the release binaries are (default target).
set -euo pipefail
EVENTS=${1:-200000}
REPOS=${2:-1000}
RUNS=${3:-3}
CASES=${4:-indexer,backfill,inserts}
SINGLE=${CLICKHOUSE_ADDRESS:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}
REDIS=${REDIS_ADDRESS:-redis://127.0.0.1:${REDIS_PORT:-6379}}
CLUSTER=skyhouse
http_base=${CLUSTER_HTTP_PORT:-8201}
TARGET=${CARGO_TARGET_DIR:-target}
ib=$TARGET/release/examples/indexer_bench
nodes=(s1r1 s1r2 s2r1 s2r2)
urls=()
for i in "${!nodes[@]}"; do urls+=("http://127.0.0.1:$((http_base + i))"); done
CLUSTER_URL=${urls[0]}

die() { echo "bench-cluster: $*" >&2; exit 1; }
alive() { [ -f "$1" ] && [ -d "/proc/$(cat "$1")" ] && cat "$1"; }
single_pid=$(alive .local/clickhouse/clickhouse-server.pid) || die "the \`just up\` ClickHouse is not running"
cluster_pids=()
for n in "${nodes[@]}"; do
    cluster_pids+=("$(alive ".local/cluster/$n/clickhouse-server.pid")") || die "cluster server $n is not running (just cluster-up)"
done
cluster_pids+=("$(alive .local/cluster/zookeeper/zookeeper.pid)") || die "the cluster's ZooKeeper is not running"
cluster_pid_list=$(IFS=,; echo "${cluster_pids[*]}")
echo "servers: single $single_pid; cluster s1r1,s1r2,s2r1,s2r2,zookeeper $cluster_pid_list" >&2

tmp=$(mktemp -d)
dbs_single=()
dbs_cluster=()
lag_pid=
cleanup() {
    if [ -n "$lag_pid" ]; then kill "$lag_pid" 2>/dev/null || true; fi
    for db in "${dbs_single[@]}"; do "$ib" --case drop --database "$db" --clickhouse "$SINGLE" >/dev/null 2>&1 || true; done
    for db in "${dbs_cluster[@]}"; do
        "$ib" --case drop --database "$db" --clickhouse "$CLUSTER_URL" --cluster "$CLUSTER" >/dev/null 2>&1 || true
    done
    rm -rf "$tmp"
}
trap cleanup EXIT

# Replication lag of database $1 on every server, each second, into $tmp/lag.
lag_start() {
    : >"$tmp/lag"
    lag_since=$(date +%s)
    (
        while :; do
            for u in "${urls[@]}"; do
                curl -sS "$u/" --data-binary "SELECT max(absolute_delay), sum(queue_size), sum(inserts_in_queue) \
                    FROM system.replicas WHERE database = '$1' FORMAT TSV" >>"$tmp/lag" 2>/dev/null || true
            done
            sleep 1
        done
    ) &
    lag_pid=$!
}
# Stops the sampler; prints the maxima as JSON fields. A delay longer than the sampler ran is not
# this run's lag: ClickHouse 18.16 reports the Unix time itself as absolute_delay now and then (a
# queue entry without a creation time, seen while a fresh database's tables start); such samples
# count as bogus_delays and are left out of the maximum.
lag_stop() {
    kill "$lag_pid" 2>/dev/null || true
    wait "$lag_pid" 2>/dev/null || true
    lag_pid=
    awk -F'\t' -v longest=$(($(date +%s) - lag_since + 2)) \
        'NF == 3 { if ($1 > longest) b++; else if ($1 > d) d = $1; if ($2 > q) q = $2; if ($3 > i) i = $3; n++ }
        END { printf "\"lag_samples\":%d,\"bogus_delays\":%d,\"max_absolute_delay_s\":%d,\"max_queue\":%d,\"max_inserts_in_queue\":%d", n, b, d, q, i }' "$tmp/lag"
}
# Adds the JSON fields $2 to the JSON object line $1.
with() { sed "s/^{/{$2,/" <<<"$1"; }

lines=()
emit() { echo "$1"; lines+=("$1"); }

if [[ ,$CASES, == *,indexer,* || ,$CASES, == *,inserts,* ]]; then
    prefix=bench/out/stream-$EVENTS
    if [ ! -f "$prefix.frames" ] || [ ! -f "$prefix.jsonl" ] || [ ! -f "$prefix.dids.json" ]; then
        node bench/gen-stream.mjs "$prefix.tmp" "$EVENTS"
        "$ib" --case check --prefix "$prefix.tmp" >/dev/null
        for ext in frames jsonl dids.json; do mv "$prefix.tmp.$ext" "$prefix.$ext"; done
    fi
    # Every database first (a migration on the cluster takes ~10 s), dropped at the end.
    for run in $(seq 1 "$RUNS"); do
        if [[ ,$CASES, == *,indexer,* ]]; then
            dbs_single+=("skyhouse_bench_cluster_indexer_$run")
            dbs_cluster+=("skyhouse_bench_cluster_indexer_$run")
        fi
        if [[ ,$CASES, == *,inserts,* ]]; then
            dbs_cluster+=("skyhouse_bench_cluster_distributed_$run" "skyhouse_bench_cluster_local_$run")
        fi
    done
    if [ ${#dbs_single[@]} -gt 0 ]; then
        "$ib" --case create --database "$(IFS=,; echo "${dbs_single[*]}")" --clickhouse "$SINGLE" >/dev/null
    fi
    "$ib" --case create --database "$(IFS=,; echo "${dbs_cluster[*]}")" --clickhouse "$CLUSTER_URL" --cluster "$CLUSTER" >/dev/null
    for run in $(seq 1 "$RUNS"); do
        if [[ ,$CASES, == *,indexer,* ]]; then
            db=skyhouse_bench_cluster_indexer_$run
            line=$("$ib" --case firehose --prefix "$prefix" --database "$db" --clickhouse "$SINGLE" --redis "$REDIS" \
                --clickhouse-pid "$single_pid")
            emit "$(with "$line" "\"bench\":\"indexer\",\"target\":\"single\",\"run\":$run")"
            lag_start "$db"
            line=$("$ib" --case firehose --prefix "$prefix" --database "$db" --clickhouse "$CLUSTER_URL" --redis "$REDIS" \
                --cluster "$CLUSTER" --clickhouse-pid "$cluster_pid_list")
            emit "$(with "$line" "\"bench\":\"indexer\",\"target\":\"cluster\",\"run\":$run,$(lag_stop)")"
        fi
        if [[ ,$CASES, == *,inserts,* ]]; then
            for mode in distributed local; do
                db=skyhouse_bench_cluster_${mode}_$run
                lag_start "$db"
                line=$("$ib" --case "insert-$mode" --prefix "$prefix" --database "$db" --clickhouse "$CLUSTER_URL" \
                    --cluster "$CLUSTER" --shard-urls "${urls[0]},${urls[2]}" --clickhouse-pid "$cluster_pid_list")
                emit "$(with "$line" "\"bench\":\"inserts\",\"target\":\"$mode\",\"run\":$run,$(lag_stop)")"
            done
        fi
    done
fi

if [[ ,$CASES, == *,backfill,* ]]; then
    for run in $(seq 1 "$RUNS"); do
        out=$(CLICKHOUSE_ADDRESS=$SINGLE REDIS_ADDRESS=$REDIS BENCH_SERVER_PIDS=$single_pid \
            pkg/backfill/bench/bench.sh "$REPOS" 1 16 small) || die "backfill on one server failed"
        emit "$(with "$(grep '^{"case"' <<<"$out")" "\"bench\":\"backfill\",\"target\":\"single\",\"run\":$run")"
        lag_start skyhouse_bench_backfill_small_1
        out=$(CLICKHOUSE_ADDRESS=$CLUSTER_URL REDIS_ADDRESS=$REDIS BENCH_SERVER_PIDS=$cluster_pid_list \
            BENCH_CLICKHOUSE_CLUSTER=$CLUSTER BENCH_SYNC_URLS="${urls[*]}" \
            pkg/backfill/bench/bench.sh "$REPOS" 1 16 small) || { lag_stop >/dev/null; die "backfill on the cluster failed"; }
        emit "$(with "$(grep '^{"case"' <<<"$out")" "\"bench\":\"backfill\",\"target\":\"cluster\",\"run\":$run,$(lag_stop)")"
    done
fi

printf '%s\n' "${lines[@]}" | node bench/cluster-summary.mjs
