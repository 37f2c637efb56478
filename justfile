# skyhouse task runner: `just` lists the recipes, `just check` is what CI runs.
# Install `just` with `pip install rust-just`.

set shell := ["bash", "-euo", "pipefail", "-c"]

cargo_fuzz_version := "0.13.2"

# List the recipes
default:
    @just --justfile {{ quote(justfile()) }} --list --unsorted

# Run every test of the workspace (the single entry point CI calls); ARGS go to cargo test
test *ARGS:
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

# Walk+decode throughput of a repository CAR: skyhouse vs @atproto/repo (default: a generated 30k-record repo)
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

# Run a fuzz target (car_mst, frame, jetstream_json, cbor) for SECONDS on stable Rust
fuzz TARGET SECONDS="60": fuzz-deps
    cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run {{ quote(TARGET) }} -- -max_total_time={{ SECONDS }}

# Install cargo-fuzz if missing
fuzz-deps:
    @cargo fuzz --version >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version {{ cargo_fuzz_version }}

# List the records of a repository CAR (or - for stdin) as JSON lines; ARGS are `skyhouse repo ls` flags
[no-cd]
repo-ls FILE *ARGS:
    cargo run -q --manifest-path {{ quote(justfile_directory() / "Cargo.toml") }} -p skyhouse -- repo ls {{ quote(FILE) }} {{ ARGS }}

# Build skyhouse and list a real repository export bundled in the repo. The
# live indexer and the API join this recipe as they land (see README).
run:
    cargo run --release -q -p skyhouse -- repo ls pkg/atproto/testdata/jetstream/repo.car
