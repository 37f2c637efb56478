//! Snapshots in a real ClickHouse: deduplicated like-for-like.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use skyhouse_monitor::{
    bucket, known_hosts, unhealthy_hosts, write_snapshots, CheckResult, HostKind, Snapshot,
    UnhealthyHosts,
};

use crate::fresh;

const INTERVAL: Duration = Duration::from_secs(60);

fn now() -> u32 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32
}

fn snapshot(host: &str, observed_at: u32, up: bool) -> Snapshot {
    Snapshot {
        host: host.to_owned(),
        kind: HostKind::Pds,
        observed_at,
        up,
        result: if up {
            CheckResult::Ok
        } else {
            CheckResult::Timeout
        },
        health_status: if up { 200 } else { 0 },
        health_version: "0.4.1".into(),
        describe_status: if up { 200 } else { 0 },
        describe_did: "did:web:pds.test".into(),
        invite_code_required: true,
        user_domains: vec![".test".into(), ".example".into()],
        rtt_ms: 12,
        error: if up {
            String::new()
        } else {
            "_health: timed out".into()
        },
    }
}

#[tokio::test]
async fn the_same_check_written_twice_is_one_row() {
    let (db, ch) = fresh("monitor_same_check_twice").await;
    // The start of an interval, so +30 s stays inside it.
    let t = 1_700_000_040;
    assert_eq!(bucket(t, INTERVAL), t);
    let snaps = vec![
        snapshot("https://a.test", t, true),
        snapshot("https://b.test", t, false),
    ];
    write_snapshots(&ch, &snaps, INTERVAL).await.unwrap();
    write_snapshots(&ch, &snaps, INTERVAL).await.unwrap();
    assert_eq!(db.query("SELECT count() FROM host_checks FINAL"), "2\n");
    db.query("OPTIMIZE TABLE host_checks FINAL");
    assert_eq!(db.query("SELECT count() FROM host_checks"), "2\n");
    // Every column made the round trip.
    assert_eq!(
        db.query(
            "SELECT host, kind, toUInt32(bucket), toUInt32(observed_at), up, result, \
             health_status, health_version, describe_status, describe_did, \
             invite_code_required, user_domains, rtt_ms, error \
             FROM host_checks ORDER BY host"
        ),
        format!(
            "https://a.test\tpds\t{t}\t{t}\t1\tok\t200\t0.4.1\t200\tdid:web:pds.test\t1\t['.test','.example']\t12\t\n\
             https://b.test\tpds\t{t}\t{t}\t0\ttimeout\t0\t0.4.1\t0\tdid:web:pds.test\t1\t['.test','.example']\t12\t_health: timed out\n"
        )
    );

    // A later check in the same interval replaces the row; the next interval adds one.
    write_snapshots(&ch, &[snapshot("https://a.test", t + 30, false)], INTERVAL)
        .await
        .unwrap();
    assert_eq!(
        db.query(
            "SELECT up, toUInt32(observed_at) FROM host_checks FINAL WHERE host = 'https://a.test'"
        ),
        format!("0\t{}\n", t + 30)
    );
    write_snapshots(&ch, &[snapshot("https://a.test", t + 60, true)], INTERVAL)
        .await
        .unwrap();
    assert_eq!(
        db.query("SELECT count() FROM host_checks FINAL WHERE host = 'https://a.test'"),
        "2\n"
    );
}

#[tokio::test]
async fn unhealthy_hosts_are_those_down_at_their_newest_check() {
    let (_db, ch) = fresh("monitor_unhealthy_hosts").await;
    let t = now();
    let snaps = vec![
        // Down, then up again: healthy.
        snapshot("https://recovered.test", t - 120, false),
        snapshot("https://recovered.test", t - 60, true),
        // Up, then down: unhealthy.
        snapshot("https://failing.test", t - 120, true),
        snapshot("https://failing.test", t - 60, false),
        // Down, but long ago: no news is not bad news.
        snapshot("https://stale.test", t - 7200, false),
        snapshot("https://fine.test", t - 60, true),
    ];
    write_snapshots(&ch, &snaps, INTERVAL).await.unwrap();
    let down = unhealthy_hosts(&ch, Duration::from_secs(600))
        .await
        .unwrap();
    assert_eq!(down, ["https://failing.test"]);
    let down = unhealthy_hosts(&ch, Duration::from_secs(3 * 3600))
        .await
        .unwrap();
    assert_eq!(down, ["https://failing.test", "https://stale.test"]);

    let known: Vec<String> = known_hosts(&ch, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|h| h.url)
        .collect();
    assert_eq!(
        known,
        [
            "https://failing.test",
            "https://fine.test",
            "https://recovered.test",
            "https://stale.test"
        ]
    );
    assert_eq!(known_hosts(&ch, 1).await.unwrap().len(), 1, "capped");
}

#[tokio::test]
async fn a_backfill_asks_about_a_pds_endpoint_as_its_did_document_gives_it() {
    let (_db, ch) = fresh("monitor_is_down").await;
    let t = now();
    write_snapshots(
        &ch,
        &[
            snapshot("https://down.test", t - 60, false),
            snapshot("https://up.test", t - 60, true),
        ],
        INTERVAL,
    )
    .await
    .unwrap();
    // Refreshed on every call (refresh zero), so later writes are seen.
    let verdicts = UnhealthyHosts::new(ch.clone(), Duration::from_secs(600), Duration::ZERO);
    assert!(verdicts.is_down("https://down.test/").await);
    assert!(verdicts.is_down("https://DOWN.test").await);
    assert!(!verdicts.is_down("https://up.test/").await);
    assert!(!verdicts.is_down("https://never-checked.test").await);
    assert!(!verdicts.is_down("not a url at all").await);
    write_snapshots(&ch, &[snapshot("https://down.test", t, true)], INTERVAL)
        .await
        .unwrap();
    assert!(!verdicts.is_down("https://down.test/").await, "up again");

    // Within `refresh` the last set is kept.
    write_snapshots(&ch, &[snapshot("https://up.test", t, false)], INTERVAL)
        .await
        .unwrap();
    let cached = UnhealthyHosts::new(
        ch.clone(),
        Duration::from_secs(600),
        Duration::from_secs(3600),
    );
    assert!(cached.is_down("https://up.test").await);
    write_snapshots(&ch, &[snapshot("https://up.test", t + 1, true)], INTERVAL)
        .await
        .unwrap();
    assert!(
        cached.is_down("https://up.test").await,
        "the set read a moment ago is kept until `refresh` has passed"
    );
    assert!(
        !verdicts.is_down("https://up.test").await,
        "a fresh read sees it up"
    );
}
