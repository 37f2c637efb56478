//! Dev-only test helpers: real ClickHouse and Redis servers for integration tests.
//!
//! [`ClickHouse::shared`] and [`Redis::shared`] start one real server per test
//! process (the first test to ask starts it, every other test of the same test
//! binary reuses it) on spare loopback ports, with a throwaway data directory
//! under [`std::env::temp_dir`]. Tests isolate themselves with
//! [`ClickHouse::database`] (a fresh database, dropped again on `Drop`) and
//! [`Redis::key_prefix`] (a unique key prefix the test owns).
//!
//! ```no_run
//! use skyhouse_testkit::{ClickHouse, Redis};
//!
//! let ch = ClickHouse::shared();
//! let db = ch.database("records");
//! db.query("CREATE TABLE t (x UInt8) ENGINE = Memory");
//! db.query("INSERT INTO t VALUES (1)");
//! assert_eq!(db.query("SELECT count() FROM t"), "1\n");
//!
//! let redis = Redis::shared();
//! let key = format!("{}cursor", redis.key_prefix("cursor"));
//! redis.command(&["SET", key.as_str(), "42"]);
//! ```
//!
//! # Server lifetime
//!
//! Rust never runs destructors of statics, so a shared server cannot be
//! stopped from the test process itself. Each server is therefore started
//! through a small `/bin/sh` watchdog, in a process group of its own, whose
//! standard input is a pipe: the test process holds the only write end
//! (Rust opens pipes close-on-exec, so no other child inherits it) and never
//! writes to it. When the test process ends — normally, by a panic, by
//! Ctrl-C or even by `SIGKILL` — the kernel closes that end, the watchdog's
//! `read` returns end-of-file, and the watchdog kills the server with
//! `SIGKILL` (the data is throwaway, so there is no point in a graceful
//! shutdown) and deletes the temporary directory. Unlike polling the
//! parent's pid this reacts at once and cannot be fooled by pid reuse, and
//! unlike `prctl(PR_SET_PDEATHSIG)` it needs no `unsafe`. The server is gone
//! a few milliseconds after the test binary exits. (Only a `SIGKILL` of the
//! watchdog itself leaks a server.)
//!
//! If the server binaries are missing every test that asks for a server
//! panics with a one-line hint (`just deps`); tests never skip silently.
#![deny(missing_docs)]

mod clickhouse;
mod http;
mod process;
mod redis;

pub use clickhouse::{ClickHouse, TestDatabase};
pub use redis::{Redis, Reply};

/// `(car, expected listing)` pairs from `pkg/atproto/testdata/expected/cars.tsv`
/// under `testdata`: every repository CAR the tests walk and the listing an
/// independent implementation produced for it (paths relative to `testdata`).
pub fn repo_cars(testdata: &std::path::Path) -> Vec<(String, String)> {
    let path = testdata.join("expected/cars.tsv");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (car, listing) = l.split_once('\t').expect("car<TAB>listing");
            (car.to_string(), listing.to_string())
        })
        .collect()
}
