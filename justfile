# skyhouse task runner: `just` lists the recipes, `just check` is what CI runs.
# Install `just` with `pip install rust-just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

cargo_fuzz_version := "0.13.2"

# Connection settings of the `just up` servers (each overridable by its env var)
local_env := 'CLICKHOUSE_ADDRESS="${CLICKHOUSE_ADDRESS:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}" REDIS_ADDRESS="${REDIS_ADDRESS:-redis://127.0.0.1:${REDIS_PORT:-6379}}"'

# List the recipes
default:
    @just --justfile {{ quote(justfile()) }} --list --unsorted

# Run every test of the workspace (the single entry point CI calls); ARGS go to cargo test
test *ARGS: deps
    cargo test --workspace --all-targets {{ ARGS }}

# Formatting check, clippy with warnings as errors, then `just test`
check: && test
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings

# Format all Rust code
fmt:
    cargo fmt --all

# Install the benchmark's npm packages (bench/node_modules) if missing or stale
bench-deps:
    #!/usr/bin/env bash
    set -euo pipefail
    cd bench
    if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
        npm ci --no-audit --no-fund
    fi

# Soak (not in CI): the indexer replays a generated 10M-event stream in a loop for MINUTES while ClickHouse, Redis and source faults fire at random; prints RSS, descriptors and threads every 10 s, then compares ClickHouse with a clean load (ARGS: --events N, --dids N, --seed N, --sample-secs S)
soak MINUTES="30" *ARGS: deps-system
    cargo build --release -q -p skyhouse --bin skyhouse --example soak
    target/release/examples/soak --skyhouse target/release/skyhouse --minutes {{ MINUTES }} {{ ARGS }}

# Walk+decode throughput of a repository CAR: skyhouse vs @atproto/repo, then vs iroh-car and serde_ipld_dagcbor (default: a generated 30k-record repo)
bench-car FILE="": bench-deps
    #!/usr/bin/env bash
    set -euo pipefail
    file={{ if FILE == "" { "" } else { quote(join(invocation_directory(), FILE)) } }}
    if [ -z "$file" ]; then
        file=bench/out/bench-30k.car
        if [ ! -f "$file" ]; then
            node bench/gen-car.mjs "$file" 30000
        fi
    fi
    rust=$(cargo run --release -q -p skyhouse-atproto --example car_bench -- "$file")
    echo "$rust"
    node=$(node bench/node-walk.mjs "$file")
    echo "$node"
    RUST_JSON="$rust" NODE_JSON="$node" node -e '
      const r = JSON.parse(process.env.RUST_JSON), n = JSON.parse(process.env.NODE_JSON);
      console.log(`skyhouse / node: ${(r.mb_per_s / n.mb_per_s).toFixed(1)}x MB/s (${r.mb_per_s} vs ${n.mb_per_s}), ` +
        `peak RSS ${r.peak_rss_mb} vs ${n.peak_rss_mb} MiB`);'
    # skyhouse's CAR reader and DAG-CBOR decoder vs the crates the tests use as oracles
    cargo run --release -q -p skyhouse-atproto --example oracle_bench -- "$file"

# Run a fuzz target (car_mst, frame, jetstream_json, jetstream_one_pass, cbor, cbor_oracle, car_oracle, dns_response) for SECONDS on stable Rust; a new corpus starts from the real fixtures
fuzz TARGET SECONDS="60": fuzz-deps
    #!/usr/bin/env bash
    set -euo pipefail
    if [ ! -d fuzz/corpus/{{ quote(TARGET) }} ]; then
        cargo run -q -p skyhouse-atproto --example fuzz_seeds -- fuzz/corpus
    fi
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run {{ quote(TARGET) }} -- -max_total_time={{ SECONDS }}

# Install cargo-fuzz if missing
fuzz-deps:
    @cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version {{ cargo_fuzz_version }}

# List the records of a repository CAR (or - for stdin) as JSON lines; ARGS are `skyhouse repo ls` flags
[no-cd]
repo-ls FILE *ARGS:
    cargo run -q --manifest-path {{ quote(justfile_directory() / "Cargo.toml") }} -p skyhouse -- repo ls {{ quote(FILE) }} {{ ARGS }}

# Start local ClickHouse + Redis, migrate, serve the search API (:8092, in the background) and index the live network from Jetstream; ARGS go to `skyhouse indexer`
run *ARGS: deps-system up
    #!/usr/bin/env bash
    set -euo pipefail
    export {{ local_env }}
    cargo build --release -q -p skyhouse
    target/release/skyhouse migrate up
    mkdir -p .local/logs
    target/release/skyhouse search --listen 127.0.0.1:8092 --metrics-addr 127.0.0.1:8093 > .local/logs/search.log 2>&1 &
    search=$!
    trap 'kill "$search" 2>/dev/null || true' EXIT
    echo "search API: http://127.0.0.1:8092/v1/stats (log: .local/logs/search.log)"
    target/release/skyhouse indexer {{ ARGS }}

# The search / stats / maintenance API (:8092, metrics :8093) over the `just up` servers; ARGS are `skyhouse search` flags (e.g. --admin-key …)
search *ARGS:
    cargo build --release -q -p skyhouse
    {{ local_env }} target/release/skyhouse search {{ ARGS }}

# Run the live indexer against the `just up` servers; ARGS are `skyhouse indexer` flags (e.g. --source firehose)
indexer *ARGS:
    cargo build --release -q -p skyhouse
    {{ local_env }} target/release/skyhouse indexer {{ ARGS }}

# Replay the bundled real captures (150 relay frames, and the same events from production Jetstream) into the local servers and show what landed
demo: deps-system up
    #!/usr/bin/env bash
    set -euo pipefail
    cargo build --release -q -p skyhouse
    export {{ local_env }}
    export CLICKHOUSE_DATABASE="${CLICKHOUSE_DATABASE:-skyhouse_demo}"
    bin=target/release/skyhouse
    $bin migrate up
    data="$(pwd)/pkg/sources/testdata"
    $bin indexer --source firehose --url "file://$data/corpus.frames" --cursor 0 --metrics-addr 127.0.0.1:0
    $bin indexer --source jetstream --url "file://$data/corpus.jsonl" --cursor 0 --metrics-addr 127.0.0.1:0
    q() { clickhouse-client --host 127.0.0.1 --port "${CLICKHOUSE_TCP_PORT:-9000}" --database "$CLICKHOUSE_DATABASE" --query "$1"; }
    echo "== live records per collection (records FINAL, deleted = 0)"
    q "SELECT collection, count() FROM records FINAL WHERE deleted = 0 GROUP BY collection ORDER BY count() DESC FORMAT PrettyCompact"
    echo "== newest posts"
    q "SELECT did, substring(replaceAll(text, '\n', ' '), 1, 60) AS text, langs, tags FROM posts FINAL WHERE deleted = 0 ORDER BY sort_at DESC LIMIT 5 FORMAT PrettyCompact"
    echo "== identities and accounts"
    q "SELECT did, handle FROM identities FINAL FORMAT PrettyCompact"
    q "SELECT did, active, status FROM accounts FINAL FORMAT PrettyCompact"
    echo "== cursors"
    $bin cursor get --source firehose --url "file://$data/corpus.frames"
    $bin cursor get --source jetstream --url "file://$data/corpus.jsonl"

# Install what tests and local servers need: Debian packages, Python's chdb-core, the e2e network's npm packages
deps: deps-system deps-python deps-node

# Install the end-to-end network (e2e/node_modules: @atproto/dev-env, the reference PDS + PLC) if missing or stale
deps-node:
    #!/usr/bin/env bash
    set -euo pipefail
    cd e2e
    if [ -f node_modules/.package-lock.json ] && [ ! package-lock.json -nt node_modules/.package-lock.json ]; then
        echo "deps: e2e/node_modules already installed"
        exit 0
    fi
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        echo "deps: the end-to-end tests need Node.js 20 and npm: install them first" >&2
        exit 1
    fi
    # better-sqlite3 compiles against this Node's headers (about 90 s); point
    # node-gyp at them instead of letting it download them.
    prefix=$(dirname "$(dirname "$(node -p process.execPath)")")
    if [ -f "$prefix/include/node/node.h" ]; then export npm_config_nodedir="$prefix"; fi
    npm ci --no-audit --no-fund

# Install ClickHouse, Redis, ZooKeeper, PostgreSQL, promtool, Chromium and ChromeDriver (Debian/Ubuntu apt packages) if missing; tests, `just up` and `just cluster-up` need them
deps-system:
    #!/usr/bin/env bash
    set -euo pipefail
    # prometheus: its promtool checks the dashboards' PromQL and docker/prometheus.yml (ops tests).
    # zookeeper: the local cluster's coordinator (`just cluster-up`, the cluster tests).
    # postgresql: the reference AppView's database (the testkit runs its own cluster).
    # chromium, chromium-driver: the query page's browser tests (headless, over WebDriver).
    pkgs=(clickhouse-server clickhouse-client redis-server prometheus zookeeper postgresql chromium chromium-driver)
    missing=()
    for p in "${pkgs[@]}"; do
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
            missing+=("$p")
        fi
    done
    if [ ${#missing[@]} -eq 0 ]; then
        echo "deps: ${pkgs[*]} already installed"
        exit 0
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "deps: missing ${missing[*]} and no apt-get here: install ClickHouse, Redis, ZooKeeper, PostgreSQL, promtool, Chromium and ChromeDriver yourself" >&2
        exit 1
    fi
    sudo=()
    if [ "$(id -u)" -ne 0 ]; then sudo=(sudo); fi
    export DEBIAN_FRONTEND=noninteractive
    # Refresh the package lists only when apt does not know the packages yet.
    for p in "${missing[@]}"; do
        if ! apt-cache show "$p" >/dev/null 2>&1; then
            "${sudo[@]}" apt-get update -q
            break
        fi
    done
    "${sudo[@]}" apt-get install -y -q --no-install-recommends "${missing[@]}"

# Take the query page's screenshot (docs/query-page.png, shown in the README) with the browser test
page-screenshot: deps-system
    SKYHOUSE_PAGE_SCREENSHOT={{ quote(justfile_directory() / "docs/query-page.png") }} cargo test -p skyhouse --test e2e -- page::the_query_page_in_a_browser --exact

# Install chdb-core (an in-process current ClickHouse) to check the SQL against it, and grpcio-tools (the relay's Python client test)
deps-python:
    #!/usr/bin/env bash
    set -euo pipefail
    # grpcio-tools: pkg/relay's Python client generates its stubs from proto/ with it.
    if python3 -c 'import grpc_tools' 2>/dev/null; then echo "deps: grpcio-tools already installed"; else
        python3 -m pip install --quiet grpcio-tools==1.85.1 ||
            python3 -m pip install --quiet --break-system-packages grpcio-tools==1.85.1
    fi
    if python3 -c 'import chdb' 2>/dev/null; then echo "deps: chdb-core already installed"; exit 0; fi
    # --no-deps: chdb needs pandas/pyarrow only for DataFrame output, which we do not use.
    python3 -m pip install --quiet --no-deps chdb-core==26.9.0 ||
        python3 -m pip install --quiet --no-deps --break-system-packages chdb-core==26.9.0

# Start local ClickHouse + Redis under .local/ (ports: CLICKHOUSE_HTTP_PORT, CLICKHOUSE_TCP_PORT, REDIS_PORT)
up:
    scripts/local-servers.sh up

# Stop the local servers started by `just up` (data stays in .local/)
down:
    scripts/local-servers.sh down

# Stop the local servers and delete their data in .local/
clean-local:
    scripts/local-servers.sh clean

# Whether the local servers are running and answering
status:
    @scripts/local-servers.sh status || true

# Start a local ClickHouse cluster under .local/cluster/: ZooKeeper (CLUSTER_ZK_PORT, 2181) and 2 shards x 2 replicas (http CLUSTER_HTTP_PORT 8201..8204, native CLUSTER_TCP_PORT 9201..9204), cluster `skyhouse`
cluster-up: deps-system
    scripts/local-cluster.sh up

# Stop the local cluster (data stays in .local/cluster/)
cluster-down:
    scripts/local-cluster.sh down

# Whether ZooKeeper and each server of the local cluster run, answer, and have replicas read-only or behind
cluster-status:
    @scripts/local-cluster.sh status || true

# Stop the local cluster and delete its data in .local/cluster/
cluster-clean:
    scripts/local-cluster.sh clean

# clickhouse-client against the local server; ARGS pass through (e.g. just sql --query 'SELECT 1')
[no-cd]
[positional-arguments]
sql *ARGS:
    clickhouse-client --host 127.0.0.1 --port "${CLICKHOUSE_TCP_PORT:-9000}" "$@"

# Apply pending migrations (CLICKHOUSE_ADDRESS, default the `just up` server; ARGS: --database, --clickhouse-cluster…)
migrate-up *ARGS:
    CLICKHOUSE_ADDRESS="${CLICKHOUSE_ADDRESS:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}" cargo run -q -p skyhouse -- migrate up {{ ARGS }}

# Roll back the last N applied migrations
migrate-down N="1" *ARGS:
    CLICKHOUSE_ADDRESS="${CLICKHOUSE_ADDRESS:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}" cargo run -q -p skyhouse -- migrate down {{ N }} {{ ARGS }}

# Show each migration: applied, skipped (server too old) or pending
migrate-version *ARGS:
    CLICKHOUSE_ADDRESS="${CLICKHOUSE_ADDRESS:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}" cargo run -q -p skyhouse -- migrate version {{ ARGS }}

# Write the next numbered pair of migration files into migrations/
migrate-create NAME:
    cargo run -q -p skyhouse -- migrate create {{ quote(NAME) }} --dir migrations

# Print the CREATE statements of every table
dump-schema *ARGS:
    CLICKHOUSE_ADDRESS="${CLICKHOUSE_ADDRESS:-http://127.0.0.1:${CLICKHOUSE_HTTP_PORT:-8123}}" cargo run -q -p skyhouse -- migrate dump-schema {{ ARGS }}

# Check the migrations and the store's queries on current ClickHouse (chdb-core)
check-chdb: deps-python
    python3 scripts/chdb_check.py --queries pkg/store/queries/check.sql --queries pkg/store/queries/store.sql --semantics pkg/store/queries/counts.sql

# The gRPC relay (:50051, metrics :8098); ARGS are `skyhouse relay` flags (e.g. --source jetstream)
relay *ARGS:
    cargo build --release -q -p skyhouse
    target/release/skyhouse relay {{ ARGS }}

# The host monitor (:8097: /v1/hosts, /metrics, /health) writing to the `just up` ClickHouse; ARGS are `skyhouse monitor` flags (e.g. --relay https://bsky.network)
monitor *ARGS:
    cargo build --release -q -p skyhouse
    {{ local_env }} target/release/skyhouse monitor {{ ARGS }}

# Operations/s the gRPC relay delivers to CLIENTS (comma-separated; gN: a consumer group of N sharing OPS) over loopback with retention on disk and tokens on, OPS per client from the bundled Jetstream capture in a loop; peak RSS (then again with clients decoding every operation)
bench-relay OPS="1000000" CLIENTS="1,10,50,g4":
    cargo run --release -q -p skyhouse-relay --example relay_bench -- {{ OPS }} {{ CLIENTS }}
    cargo run --release -q -p skyhouse-relay --example relay_bench -- {{ OPS }} {{ CLIENTS }} decode

# Rows/s through transform + batch writer vs plain RowBinary inserts (throwaway server, or ARGS: --url URL)
bench-store *ARGS:
    cargo run --release -q -p skyhouse-store --example store_bench -- {{ ARGS }}

# The search API and the feed generator under load: `bench-feedgen` (1M posts + 4M likes, getFeedSkeleton at CONNS), then post search (a different term each request) and /v1/stats with wrk at SEARCH_CONNS
bench-api POSTS="1000000" LIKES="4000000" CONNS="200" DURATION="20s" SEARCH_CONNS="4": (bench-feedgen POSTS LIKES CONNS DURATION)
    pkg/api/bench/bench.sh {{ SEARCH_CONNS }} {{ DURATION }}

# getFeedSkeleton p50/p99 and requests/s (Debian wrk) at CONNS connections on cached pages of whats-hot, top-1h and top-24h over POSTS posts + LIKES likes generated into the `just up` ClickHouse (goal: p99 <= 25 ms at 200)
bench-feedgen POSTS="1000000" LIKES="4000000" CONNS="200" DURATION="20s": up
    @command -v wrk >/dev/null || apt-get install -y wrk
    cargo build --release -q -p skyhouse
    pkg/feeds/bench/bench.sh {{ POSTS }} {{ LIKES }} {{ CONNS }} {{ DURATION }}

# The scale benchmark: RECORDS/10 then RECORDS generated network-like records through the real transform and writer into the `just up` ClickHouse; every search route and feed page cold and warm, every maintenance job (after the load and after min(1M, RECORDS/10) more at both sizes), the JSONBench questions, bytes per record per table, each query's peak memory and the server's RSS, with each figure's growth (a table, then one JSON line; also in bench/out/); ARGS are skyhouse-scale flags
bench-scale RECORDS="100000000" *ARGS: deps-system up
    #!/usr/bin/env bash
    set -euo pipefail
    export {{ local_env }}
    cargo build --release -q -p skyhouse -p skyhouse-scale
    target="${CARGO_TARGET_DIR:-target}"
    pidfile=.local/clickhouse/clickhouse-server.pid
    pid=()
    if [ -f "$pidfile" ]; then pid=(--clickhouse-pid "$(cat "$pidfile")"); fi
    echo "bench-scale: $(df -h --output=avail . | tail -1 | tr -d ' ') free here; 100M records need tens of GB" >&2
    mkdir -p bench/out
    "$target/release/skyhouse-scale" --records {{ RECORDS }} --skyhouse "$target/release/skyhouse" \
        --clickhouse "$CLICKHOUSE_ADDRESS" --redis "$REDIS_ADDRESS" "${pid[@]}" --work-dir bench/out \
        --chdb scripts/chdb_storage.py {{ ARGS }} \
        | tee "bench/out/scale-{{ RECORDS }}.txt"

# Backfill CPU per record (worker and ClickHouse), records/s against the bound cores / (sum), repos/s and the worker's peak RSS: the worker's own cost on one thread (decode), REPOS generated repositories (+ one of 300 MB) from a static loopback PDS, and the reference PDS, drained by `skyhouse backfill work` into the `just up` servers (generated once into bench/out/; medians of RUNS)
bench-backfill REPOS="5000" RUNS="3" CONCURRENCY="16" CASES="decode,small,big,pds" *WORK_ARGS: bench-deps deps-system deps-node up
    cargo build --release -q -p skyhouse -p skyhouse-backfill --bin skyhouse --example car_server --example backfill_bench
    {{ local_env }} pkg/backfill/bench/bench.sh {{ REPOS }} {{ RUNS }} {{ CONCURRENCY }} {{ quote(CASES) }} {{ WORK_ARGS }}

# The indexer and the backfill on the local 2 x 2 cluster against the `just up` server, alternating, medians of RUNS: throughput, CPU per event of skyhouse and of each server, peak RSS, replication lag during the load; and inserting through the Distributed tables vs into each shard's local tables (CASES: indexer,backfill,inserts; starts both)
bench-cluster EVENTS="200000" REPOS="1000" RUNS="3" CASES="indexer,backfill,inserts": bench-deps deps-system up cluster-up
    cargo build --release -q -p skyhouse -p skyhouse-backfill -p skyhouse-pipeline --bin skyhouse --example car_server --example backfill_bench --example indexer_bench
    {{ local_env }} bench/cluster.sh {{ EVENTS }} {{ REPOS }} {{ RUNS }} {{ quote(CASES) }}

# Indexer CPU per event (skyhouse and ClickHouse), events/s against the bound cores / (sum), p99 ack latency and peak RSS: decode only (one thread), Jetstream, firehose, firehose --verify through the full pipeline into the `just up` servers (EVENTS frames, generated once into bench/out/; medians of RUNS; CASES comma-separated; RAW: the indexer's --raw-records)
bench-indexer EVENTS="1000000" RUNS="3" CASES="decode-jetstream,decode-firehose,jetstream,firehose,firehose-verify" RAW="all": bench-deps deps-system up
    #!/usr/bin/env bash
    set -euo pipefail
    export {{ local_env }}
    cargo build --release -q -p skyhouse-pipeline --example indexer_bench
    bin=${CARGO_TARGET_DIR:-target}/release/examples/indexer_bench
    prefix=bench/out/stream-{{ EVENTS }}
    if [ ! -f "$prefix.frames" ] || [ ! -f "$prefix.jsonl" ] || [ ! -f "$prefix.dids.json" ]; then
        node bench/gen-stream.mjs "$prefix.tmp" {{ EVENTS }}
        "$bin" --case check --prefix "$prefix.tmp"
        for ext in frames jsonl dids.json; do mv "$prefix.tmp.$ext" "$prefix.$ext"; done
    fi
    # The server's CPU is reported beside the client's when it is the `just up` one.
    pidfile=.local/clickhouse/clickhouse-server.pid
    server=()
    if [ -f "$pidfile" ] && [ -d "/proc/$(cat "$pidfile")" ]; then server=(--clickhouse-pid "$(cat "$pidfile")"); fi
    cases=$(tr ',' ' ' <<<{{ quote(CASES) }})
    # One fresh database per server case and run, all created before the first case and
    # dropped after the last: no case pays for files another one deleted.
    dbs=()
    for run in $(seq 1 {{ RUNS }}); do
        for case in $cases; do
            case $case in decode-*) ;; *) dbs+=("skyhouse_bench_indexer_${case//-/_}_$run") ;; esac
        done
    done
    list=$(IFS=,; echo "${dbs[*]}")
    if [ -n "$list" ]; then
        "$bin" --case create --database "$list" >/dev/null
        trap '"$bin" --case drop --database "$list" >/dev/null || true' EXIT
    fi
    lines=()
    for run in $(seq 1 {{ RUNS }}); do
        for case in $cases; do
            line=$("$bin" --case "$case" --prefix "$prefix" --database "skyhouse_bench_indexer_${case//-/_}_$run" --raw-records {{ RAW }} "${server[@]}")
            echo "$line"
            lines+=("$line")
        done
    done
    printf '%s\n' "${lines[@]}" | node bench/indexer-summary.mjs
