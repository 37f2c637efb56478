//! The shared test servers start, answer, and isolate tests from each other.

use std::net::{Ipv4Addr, TcpStream};
use std::process::Command;

use skyhouse_testkit::{ClickHouse, Redis, Reply};

#[test]
fn clickhouse_answers_select_1() {
    let ch = ClickHouse::shared();
    assert_eq!(ch.query("SELECT 1"), "1\n");
    assert!(ch.http_url().starts_with("http://127.0.0.1:"));
    assert_eq!(
        ch.http_url(),
        format!("http://127.0.0.1:{}", ch.http_port())
    );
    assert_ne!(ch.http_port(), ch.tcp_port());
    TcpStream::connect((Ipv4Addr::LOCALHOST, ch.tcp_port())).expect("native port accepts");
}

#[test]
fn clickhouse_is_the_debian_package() {
    let version = ClickHouse::shared().version();
    assert!(
        version.starts_with("18.16."),
        "expected the Debian clickhouse-server 18.16.x, got {version}"
    );
}

#[test]
fn clickhouse_is_the_same_server_for_every_test() {
    assert!(std::ptr::eq(ClickHouse::shared(), ClickHouse::shared()));
}

#[test]
fn clickhouse_native_port_works_with_clickhouse_client() {
    let ch = ClickHouse::shared();
    let out = Command::new("clickhouse-client")
        .args(["--host", "127.0.0.1", "--port", &ch.tcp_port().to_string()])
        .args(["--query", "SELECT 40 + 2"])
        .output()
        .expect("clickhouse-client runs (apt-get install clickhouse-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "42\n");
}

#[test]
fn clickhouse_errors_carry_the_server_message() {
    let ch = ClickHouse::shared();
    let message = ch
        .try_query("SELECT no_such_column")
        .expect_err("a bad query fails");
    assert!(message.contains("no_such_column"), "{message}");
    assert!(message.contains("HTTP 404"), "{message}");
    assert!(
        message.contains("query: SELECT no_such_column"),
        "{message}"
    );
}

fn database_exists(ch: &ClickHouse, name: &str) -> bool {
    let sql = format!("SELECT count() FROM system.databases WHERE name = '{name}'");
    ch.query(&sql) == "1\n"
}

#[test]
fn clickhouse_databases_are_fresh_and_dropped() {
    let ch = ClickHouse::shared();
    let (a_name, b_name) = {
        let a = ch.database("Records.Posts");
        let b = ch.database("Records.Posts");
        assert_ne!(a.name(), b.name());
        assert!(a.name().starts_with("records_posts_"), "{}", a.name());
        assert!(database_exists(ch, a.name()));
        assert!(database_exists(ch, b.name()));
        assert_eq!(a.url(), ch.http_url());

        // Each database is the default one of its own queries.
        a.query("CREATE TABLE t (x UInt32) ENGINE = MergeTree ORDER BY x");
        a.query("INSERT INTO t VALUES (1), (2), (3)");
        b.query("CREATE TABLE t (x UInt32) ENGINE = Memory");
        assert_eq!(a.query("SELECT sum(x) FROM t"), "6\n");
        assert_eq!(b.query("SELECT count() FROM t"), "0\n");
        assert_eq!(
            ch.query(&format!("SELECT count() FROM {}.t", a.name())),
            "3\n"
        );
        (a.name().to_owned(), b.name().to_owned())
    };
    assert!(!database_exists(ch, &a_name));
    assert!(!database_exists(ch, &b_name));
}

#[test]
fn redis_answers_ping() {
    let redis = Redis::shared();
    assert_eq!(redis.command(&["PING"]), Reply::Status("PONG".into()));
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{}", redis.port()));
}

#[test]
fn redis_set_get_round_trips() {
    let redis = Redis::shared();
    let prefix = redis.key_prefix("round trip");
    assert!(
        prefix.starts_with("round_trip:") && prefix.ends_with(':'),
        "{prefix}"
    );
    assert_ne!(prefix, redis.key_prefix("round trip"));

    let key = format!("{prefix}cursor");
    assert_eq!(redis.command(&["GET", &key]), Reply::Bulk(None));
    assert_eq!(
        redis.command(&["SET", &key, "1234567"]),
        Reply::Status("OK".into())
    );
    assert_eq!(
        redis.command(&["GET", &key]).as_text().as_deref(),
        Some("1234567")
    );
    let binary: &[u8] = b"\0\r\n\xff";
    assert_eq!(
        redis.command(&[b"SET".as_slice(), key.as_bytes(), binary]),
        Reply::Status("OK".into())
    );
    assert_eq!(
        redis.command(&["GET", &key]),
        Reply::Bulk(Some(binary.to_vec()))
    );
    assert_eq!(redis.command(&["DEL", &key]), Reply::Integer(1));
    assert!(matches!(
        redis.command(&["NO-SUCH-COMMAND"]),
        Reply::Error(e) if e.starts_with("ERR")
    ));
}

#[test]
fn private_redis_stops_and_restarts_empty_on_the_same_port() {
    let mut redis = Redis::start_private();
    let port = redis.port();
    assert_ne!(port, Redis::shared().port());
    assert_eq!(
        redis.command(&["SET", "k", "v"]),
        Reply::Status("OK".into())
    );
    redis.stop();
    assert!(!redis.is_running());
    assert!(TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err());
    redis.restart();
    assert_eq!(redis.port(), port);
    assert_eq!(redis.url(), format!("redis://127.0.0.1:{port}"));
    assert_eq!(redis.command(&["GET", "k"]), Reply::Bulk(None));
    assert_eq!(redis.command(&["PING"]), Reply::Status("PONG".into()));
}

#[test]
fn postgres_answers_psql_on_loopback_only() {
    let pg = skyhouse_testkit::Postgres::shared();
    assert!(pg.url().starts_with("postgresql://postgres@127.0.0.1:"));
    assert!(pg.version().contains("PostgreSQL"), "{}", pg.version());
    let out = Command::new("psql")
        .args([
            pg.url().as_str(),
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
        ])
        .args([
            "--command",
            "SELECT 40 + 2, current_setting('listen_addresses'), current_setting('fsync')",
        ])
        .output()
        .expect("psql runs (Debian's postgresql-client)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "42|127.0.0.1|off"
    );
    // The server runs as an unprivileged user even when the tests run as root.
    let out = Command::new("psql")
        .args([
            pg.url().as_str(),
            "--no-psqlrc",
            "--tuples-only",
            "--no-align",
        ])
        .args(["--command", "SELECT pg_read_file('postmaster.pid')"])
        .output()
        .expect("psql runs");
    let pid = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<u32>().ok())
        .expect("postmaster.pid starts with the pid");
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("server's status");
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .expect("Uid line");
    assert_ne!(uid, "0", "postgres runs as root");
}

/// A part a merge replaced is deleted after 60 s, not ClickHouse's 480
/// (`scripts/clickhouse/compression.xml`; a bulk load's disk held 3-4× the
/// data in such parts).
#[test]
fn merged_away_parts_are_deleted_after_60_s() {
    let db = ClickHouse::shared().database("old_parts");
    let value = db.query(
        "SELECT value, changed FROM system.merge_tree_settings WHERE name = 'old_parts_lifetime'",
    );
    assert_eq!(
        value.trim(),
        "60\t1",
        "old_parts_lifetime from compression.xml"
    );
}

/// `scripts/clickhouse/compression.xml`, which every server the kit starts
/// reads from `config.d/`: each insert's part stays LZ4, a merged part of
/// 10 MB and more is ZSTD. Random base32 text (what CIDs are) shows which:
/// LZ4 finds nothing to match in it and stores it whole, ZSTD entropy-codes
/// its 5 bits per character.
#[test]
fn merged_parts_of_10_mb_and_more_are_compressed_with_zstd() {
    let db = ClickHouse::shared().database("compression");
    db.query("CREATE TABLE t (n UInt64, s String) ENGINE = MergeTree ORDER BY n");
    for half in 0..2 {
        db.query(&format!(
            "INSERT INTO t SELECT number, arrayStringConcat(arrayMap(i -> \
             substring('abcdefghijklmnopqrstuvwxyz234567', cityHash64(number, i) % 32 + 1, 1), \
             range(59))) FROM numbers({}, 125000)",
            half * 125_000
        ));
    }
    let ratio = || -> (u64, f64) {
        let name = db.name();
        let line = db.query(&format!(
            "SELECT count(), sum(data_compressed_bytes) / sum(data_uncompressed_bytes) \
             FROM system.parts WHERE database = '{name}' AND table = 't' AND active"
        ));
        let mut fields = line.split_whitespace();
        let parts = fields.next().and_then(|f| f.parse().ok()).expect("parts");
        let ratio = fields.next().and_then(|f| f.parse().ok()).expect("ratio");
        (parts, ratio)
    };
    let (parts, inserted) = ratio();
    assert_eq!(parts, 2, "one part per insert");
    assert!(inserted > 0.9, "insert parts are LZ4: {inserted}");
    db.query("OPTIMIZE TABLE t FINAL");
    let (parts, merged) = ratio();
    assert_eq!(parts, 1, "merged into one part");
    assert!(merged < 0.75, "the 15 MB merged part is ZSTD: {merged}");
}
