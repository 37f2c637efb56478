#!/usr/bin/env bash
# Backfill CPU per record (the worker's and ClickHouse's), records/s against the bound cores / (sum),
# repos/s and peak RSS (`just bench-backfill`): REPOS generated repositories of 50-300 records
# (bench/gen-backfill.mjs, generated once into bench/out/) served from loopback by
# pkg/backfill/examples/car_server.rs (a static PLC directory + PDS in its own process), queued with
# `skyhouse backfill enqueue` and drained by the release `skyhouse backfill work --drain` into a
# database of the run's own on the `just up` ClickHouse and Redis. Cases:
#   decode the worker's own cost, one thread, no servers: every CAR of `small` turned into rows
#          and encoded as RowBinary (backfill_bench decode)
#   small  the REPOS small repositories
#   big    the same plus one ~300 MB repository (840k records), queued first so it is in flight
#          while the small ones stream past
#   pds    realism: the reference PDS + PLC (e2e/network.mjs, @atproto/dev-env) with PDS_ACCOUNTS
#          accounts (default 40) of 50-300 records each written by bench/seed-pds.mjs
# Every repository of a case is on one host, so `--per-host` is set to CONCURRENCY (default 8 would
# cap the static server at 8 requests in flight). Each run checks that every repository is `done`
# in repo_state and that `records` holds exactly the generated number of records (else it fails).
# The databases of every case and run are created before the first and dropped after the last, so
# no run pays for files another one deleted; before each run the script waits for ClickHouse to be
# quiet. pkg/backfill/examples/backfill_bench.rs runs the worker and prints one JSON line per run:
# whole run, steady state (10% -> 90% of the records) and start-up, each with records/s, CPU us per
# record of the worker and of the ClickHouse server, the bound and the fraction of it reached, the
# cores other processes used; peak RSS of the worker, load averages. Then the medians of RUNS.
# Usage: bench.sh [REPOS] [RUNS] [CONCURRENCY] [CASES] [WORK_ARGS...]
#   CASES: comma-separated, default small,big; WORK_ARGS go to `skyhouse backfill work`.
#   BENCH_HANDLE_DELAY_MS: car_server holds each handle answer this long (slow handle domains).
#   CARGO_TARGET_DIR: where the release `skyhouse`, `car_server` and `backfill_bench` are
#   (default target).
#   On a cluster (`just bench-cluster`): CLICKHOUSE_ADDRESS one of its servers,
#   BENCH_CLICKHOUSE_CLUSTER its name (migrate and work get --clickhouse-cluster, databases are
#   created and dropped ON CLUSTER), BENCH_SERVER_PIDS the pids whose CPU counts as the servers'
#   (comma-separated: every ClickHouse server and ZooKeeper), BENCH_SYNC_URLS every server's URL
#   (space-separated; before the check each runs SYSTEM SYNC REPLICA for the run's tables, so
#   the counts read through the Distributed tables see every replica's rows).
set -euo pipefail
REPOS=${1:-5000}
RUNS=${2:-3}
CONCURRENCY=${3:-16}
CASES=${4:-small,big}
shift $(( $# < 4 ? $# : 4 ))
WORK_ARGS=("$@")
BIG_RECORDS=${BENCH_BACKFILL_BIG_RECORDS:-840000}
CH=${CLICKHOUSE_ADDRESS:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}
REDIS=${REDIS_ADDRESS:-redis://127.0.0.1:${REDIS_PORT:-6379}}
DB=skyhouse_bench_backfill
TARGET=${CARGO_TARGET_DIR:-target}
bin=$TARGET/release/skyhouse
server=$TARGET/release/examples/car_server
driver=$TARGET/release/examples/backfill_bench
small=bench/out/backfill-$REPOS
big=bench/out/backfill-big-$BIG_RECORDS

q() { curl -sS --fail-with-body "$CH/" --data-binary "$1"; }
die() { echo "bench-backfill: $*" >&2; exit 1; }

# Inputs, generated once (deterministic; bench/out is git-ignored).
if [ ! -f "$small/index.tsv" ]; then
    echo "generating $REPOS repositories into $small ..." >&2
    node bench/gen-backfill.mjs "$small" "$REPOS" 50 300 20260202 >&2
fi
if [[ ,$CASES, == *,big,* ]] && [ ! -f "$big/index.tsv" ]; then
    echo "generating one repository of $BIG_RECORDS records into $big (minutes, ~7 GB of node heap) ..." >&2
    node --max-old-space-size=16384 bench/gen-backfill.mjs "$big" 1 "$BIG_RECORDS" "$BIG_RECORDS" 20260203 >&2
fi
for d in "$small" "$big"; do
    [ -f "$d/meta.json" ] && echo "input $d: $(cat "$d/meta.json") (seconds = generation time)" >&2
done

tmp=$(mktemp -d)
mkfifo "$tmp/server.in"
dirs=("$small")
[ -f "$big/index.tsv" ] && dirs+=("$big")
"$server" "${dirs[@]}" <"$tmp/server.in" >"$tmp/server.out" &
server_pid=$!
exec 3>"$tmp/server.in" # the server exits when this script's fd 3 closes, however it ends
network_pid=
cleanup() {
    if declare -F drop_dbs >/dev/null; then drop_dbs; fi
    exec 3>&- 4>&-
    kill "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    if [ -n "$network_pid" ]; then wait "$network_pid" 2>/dev/null || true; fi
    rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 1 100); do [ -s "$tmp/server.out" ] && break; sleep 0.1; done
url=$(sed -n 's/.*"url":"\([^"]*\)".*/\1/p' "$tmp/server.out")
[ -n "$url" ] || die "car_server did not start"
echo "car_server: $(cat "$tmp/server.out")" >&2

# The ClickHouse server's CPU (user + system ticks) when it is the `just up` one, or the
# servers' of BENCH_SERVER_PIDS.
ch_pidfile=.local/clickhouse/clickhouse-server.pid
ch_pid=${BENCH_SERVER_PIDS:-}
if [ -z "$ch_pid" ] && [ -f "$ch_pidfile" ] && [ -d "/proc/$(cat "$ch_pidfile")" ]; then ch_pid=$(cat "$ch_pidfile"); fi
server_pid_args=()
if [ -n "$ch_pid" ]; then server_pid_args=(--clickhouse-pid "$ch_pid"); fi
ticks() {
    local t=0 p
    for p in ${ch_pid//,/ }; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
    echo "$t"
}
servers=$(wc -w <<<"${ch_pid//,/ }")
# Wait (up to 60 s) until ClickHouse used under 5% of a core (each server) for a second:
# earlier runs' merges.
quiet() {
    local a b
    for _ in $(seq 1 60); do
        a=$(ticks); sleep 1; b=$(ticks)
        [ $((b - a)) -lt $((5 * (servers > 0 ? servers : 1))) ] && return 0
    done
}
cluster_args=()
on_cluster=
if [ -n "${BENCH_CLICKHOUSE_CLUSTER:-}" ]; then
    cluster_args=(--clickhouse-cluster "$BENCH_CLICKHOUSE_CLUSTER")
    on_cluster=" ON CLUSTER $BENCH_CLICKHOUSE_CLUSTER"
fi
# On a cluster: every replica has fetched the run's rows.
sync_replicas() {
    local url table
    for url in ${BENCH_SYNC_URLS:-}; do
        for table in $(curl -sS --fail-with-body "$url/" --data-binary "SELECT table FROM system.replicas WHERE database = '$1'"); do
            curl -sS --fail-with-body "$url/" --data-binary "SYSTEM SYNC REPLICA $1.$table" >/dev/null
        done
    done
}

# One database per server case and run, all made now and dropped at the end.
dbs=()
drop_dbs() { for db in "${dbs[@]}"; do q "DROP DATABASE IF EXISTS $db$on_cluster" || true; done; }
for run in $(seq 1 "$RUNS"); do
    for case in ${CASES//,/ }; do
        [ "$case" = decode ] && continue
        db="${DB}_${case}_$run"
        q "DROP DATABASE IF EXISTS $db$on_cluster"
        "$bin" migrate up --clickhouse-address "$CH" --database "$db" "${cluster_args[@]}" >/dev/null 2>"$tmp/migrate.log" ||
            { cat "$tmp/migrate.log" >&2; die "migrate failed"; }
        dbs+=("$db")
    done
done

# The reference PDS (pds case): started once, seeded once, read by every run.
pds_plc=
if [[ ,$CASES, == *,pds,* ]]; then
    [ -d e2e/node_modules/@atproto/dev-env ] || die "the pds case needs e2e/node_modules (just deps-node)"
    mkfifo "$tmp/network.in"
    node e2e/network.mjs <"$tmp/network.in" >"$tmp/network.out" 2>"$tmp/network.log" &
    network_pid=$!
    exec 4>"$tmp/network.in" # closes with this script: the network shuts down
    for _ in $(seq 1 600); do [ -s "$tmp/network.out" ] && break; sleep 0.1; done
    pds=$(sed -n 's/.*"pds":"\([^"]*\)".*/\1/p' "$tmp/network.out")
    pds_plc=$(sed -n 's/.*"plc":"\([^"]*\)".*/\1/p' "$tmp/network.out")
    [ -n "$pds" ] || { cat "$tmp/network.log" >&2; die "e2e/network.mjs did not start"; }
    node bench/seed-pds.mjs "$pds" "${PDS_ACCOUNTS:-40}" 50 300 >"$tmp/pds.tsv"
fi

lines=()
for run in $(seq 1 "$RUNS"); do
    for case in ${CASES//,/ }; do
        if [ "$case" = decode ]; then
            line=$("$driver" decode "$small" | sed "s/^{/{\"run\":$run,/")
            echo "$line"
            lines+=("$line")
            continue
        fi
        prefix="bench-backfill:$$:$run:$case:"
        db="${DB}_${case}_$run"
        plc=$url
        # Handle checks answered on loopback (by car_server, or by the PDS for its
        # own handles), not by this machine's nameserver, which leaves some
        # lookups unanswered: each such repository waited out the 5 s timeout.
        handles=$url
        case $case in
            small | big)
                cut -f1 "$small/index.tsv" >"$tmp/dids"
                repos=$(wc -l <"$tmp/dids")
                records=$(awk -F'\t' '{s += $4} END {print s}' "$small/index.tsv")
                if [ "$case" = big ]; then
                    [ -f "$big/index.tsv" ] || die "no $big"
                    { cut -f1 "$big/index.tsv"; cut -f1 "$small/index.tsv"; } >"$tmp/dids"
                    repos=$((repos + 1))
                    records=$((records + $(awk -F'\t' '{s += $4} END {print s}' "$big/index.tsv")))
                fi
                ;;
            pds)
                plc=$pds_plc
                handles=$pds
                cut -f1 "$tmp/pds.tsv" >"$tmp/dids"
                repos=$(wc -l <"$tmp/dids")
                records=$(awk -F'\t' '{s += $2} END {print s}' "$tmp/pds.tsv")
                ;;
            *) die "unknown case $case (decode, small, big, pds)" ;;
        esac
        "$bin" backfill enqueue --dids "$tmp/dids" --redis "$REDIS" --redis-prefix "$prefix" 2>"$tmp/enqueue.log" ||
            { cat "$tmp/enqueue.log" >&2; die "enqueue failed"; }
        quiet
        measured=$("$driver" run "${server_pid_args[@]}" --records "$records" -- \
            "$bin" backfill work --drain --plc "$plc" \
            --handle-nameservers none --handle-resolver-http "$handles" \
            --concurrency "$CONCURRENCY" --per-host "$CONCURRENCY" \
            --clickhouse-address "$CH" --database "$db" "${cluster_args[@]}" --redis "$REDIS" --redis-prefix "$prefix" \
            "${WORK_ARGS[@]}" 2>"$tmp/work.log") || { tail -20 "$tmp/work.log" >&2; die "backfill work failed"; }
        sync_replicas "$db"
        # Every repository done, every record in `records` (a fresh database: no duplicates).
        got_records=$(q "SELECT count() FROM $db.records")
        read -r done_repos state_records < <(q "SELECT countIf(status = 'done'), sum(records) FROM $db.repo_state FINAL FORMAT TSV")
        if [ "$got_records" != "$records" ] || [ "$done_repos" != "$repos" ] || [ "$state_records" != "$records" ]; then
            tail -20 "$tmp/work.log" >&2
            die "case $case run $run: expected $repos repositories and $records records;" \
                "repo_state has $done_repos done ($state_records records), records has $got_records rows"
        fi
        redis-cli -u "$REDIS" --scan --pattern "$prefix*" | xargs -r redis-cli -u "$REDIS" DEL >/dev/null
        secs=$(sed -n 's/.*"whole":{[^}]*"secs":\([0-9.]*\).*/\1/p' <<<"$measured")
        line=$(sed "s/^{/{\"case\":\"$case\",\"run\":$run,\"concurrency\":$CONCURRENCY,\"repos\":$repos,\"repos_per_s\":$(awk -v n="$repos" -v s="$secs" 'BEGIN {printf "%.0f", n / s}'),/" <<<"$measured")
        echo "$line"
        lines+=("$line")
    done
done
drop_dbs
dbs=()

# Medians per case.
printf '%s\n' "${lines[@]}" | CONCURRENCY="$CONCURRENCY" WORK_ARGS="${WORK_ARGS[*]}" node bench/backfill-summary.mjs
