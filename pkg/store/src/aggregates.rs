//! The aggregates kept from migration 0009's arrival logs, and the one
//! refresh that runs every maintenance step (the search API and the feed
//! generator call [`refresh`] every `--refresh-secs`):
//!
//! - `hidden_accounts`: the accounts hidden now (and those hidden before,
//!   with `hidden = 0`): every read filters with this small table instead
//!   of scanning `accounts`;
//! - interaction counts ([`crate::counts::refresh_interactions`]);
//! - daily stats (hidden accounts left out): each (collection, day) that
//!   got rows, and every day of an account whose hidden state may have
//!   changed, is marked stale and
//!   recomputed from its range of `record_days` (the day of a record key's
//!   TID time), most recent days first, at most
//!   [`DAYS_PER_REFRESH`] pairs per run: deletes of old records touch old
//!   days, which are worked off over the next runs (`stale_days` says how
//!   many are left). All-time totals are the sums of the days;
//! - retention: partitions of the logs older than [`LOG_RETENTION_DAYS`],
//!   of `recent_interactions` older than its window and of `recent_posts`
//!   older than [`RECENT_POST_DAYS`] are dropped.
//!
//! Every step reads what arrived since its watermark (`aggregate_refreshes`)
//! by the logs' sorting key, so its cost follows the new data, not the
//! tables. Every step is idempotent: running it twice, or two services
//! running it at once, writes the same rows again.

use std::collections::{BTreeMap, BTreeSet};

use crate::sql::{self, literal, render, Db, Rendered};
use crate::{ClickHouse, StoreError};

/// How long the arrival logs are kept: longer than any refresh interval,
/// short enough that they stay small (they hold one row per record row
/// written).
pub const LOG_RETENTION_DAYS: u32 = 7;

/// How long deletes and updates are remembered as version floors of their
/// keys (`pending_deletes`): a create of the key with a lower version that
/// arrives within this long after them is recognised as stale. Replays and
/// Jetstream rewinds reorder events by minutes; a day covers them with room.
pub const FLOOR_RETENTION_DAYS: u32 = 1;

/// How long posts stay in `recent_posts` (the longest analytics window).
pub const RECENT_POST_DAYS: u32 = 30;

/// Most (collection, day) pairs whose stats one refresh recomputes: today's
/// and yesterday's for every collection fit, a backlog of old days (from
/// deletes of old records, or after an upgrade) is worked off over several
/// runs.
pub const DAYS_PER_REFRESH: u32 = 120;

/// Seconds before a watermark a step looks again (inserts that took their
/// arrival time before a run and became visible after it): see
/// [`start_run`].
const MARGIN_SECS: u32 = crate::counts::REFRESH_MARGIN_SECS;

/// What one [`refresh`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refreshed {
    /// Windows of interaction changes read.
    pub interaction_windows: usize,
    /// (collection, day) pairs recomputed.
    pub days: usize,
    /// Pairs still waiting to be recomputed.
    pub days_backlog: u64,
    /// Partitions dropped by the retention step.
    pub partitions_dropped: usize,
}

/// Run every maintenance step once: hidden accounts, interaction counts,
/// daily stats, retention.
pub async fn refresh(ch: &ClickHouse) -> Result<Refreshed, StoreError> {
    // Hidden accounts first: the counts read them.
    let interactions = crate::counts::refresh_interactions(ch).await?;
    let (days, days_backlog) = refresh_daily_stats(ch, DAYS_PER_REFRESH).await?;
    let partitions_dropped = expire(ch).await?;
    Ok(Refreshed {
        interaction_windows: interactions.windows,
        days,
        days_backlog,
        partitions_dropped,
    })
}

fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// Where a step's last run got to.
#[derive(clickhouse::Row, serde::Deserialize)]
struct Watermark {
    last_upto: u32,
    last_exact: u8,
    last_seconds: Vec<u32>,
    last_rows: Vec<u64>,
}

/// Rows per second of arrival, as one statement saw them.
#[derive(clickhouse::Row, serde::Deserialize)]
struct LogSeconds {
    seconds: Vec<u32>,
    rows: Vec<u64>,
}

/// Where a run of a refresh step reads its arrival log from, and what the
/// log held when it started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunStart {
    /// Read the rows that arrived at or after this server time.
    pub after: u32,
    /// The server time the run started at: its watermark once done.
    pub now: u32,
    /// Rows per second of arrival in `[now - margin, now)` at the start,
    /// ascending: kept with the watermark for the next run.
    seen: Vec<(u32, u64)>,
}

/// Start a run of the step `name` over the log table `log` (ordered by
/// `arrived`, rows never replaced). It reads from the last run's start,
/// unless a row became visible in the margin before that start since then
/// (an insert in flight when that run started): then from that row's
/// second. A last run without counts (stopped between windows, or written
/// before migration 0011) means the whole margin again; no last run, the
/// whole log.
///
/// Why this is exact: the last run counted, in one statement, the rows per
/// second of its margin, and read every row it counted (or an earlier run
/// had: by induction, the seconds whose counts had not grown). The log only
/// grows, so a second whose count is unchanged holds the same rows. A row
/// that becomes visible more than the margin after its arrival time is
/// missed, as with the plain margin before. One server only: on a cluster
/// every run reads the whole margin ([`finish_run`]).
pub(crate) async fn start_run(
    ch: &ClickHouse,
    name: &str,
    log: &str,
) -> Result<RunStart, StoreError> {
    let db = ch.db();
    let sql = render(db, "watermark", &[("name", &literal(name))])?;
    let last: Watermark = ch.fetch_one("watermark", &sql).await?;
    let sql = render(db, "server_now", &[])?;
    let now: u32 = ch.fetch_one("server time", &sql).await?;
    let check_from = last.last_upto.saturating_sub(MARGIN_SECS);
    let check_to = last.last_upto;
    let now_from = now.saturating_sub(MARGIN_SECS);
    let sql = render(
        db,
        "log_seconds",
        &[
            ("log", log),
            ("check_from", &check_from.to_string()),
            ("check_to", &check_to.to_string()),
            ("now_from", &now_from.to_string()),
            ("now_to", &now.to_string()),
        ],
    )?;
    let counted: LogSeconds = ch.fetch_one("log seconds", &sql).await?;
    let counted: BTreeMap<u32, u64> = counted.seconds.into_iter().zip(counted.rows).collect();
    let after = if last.last_upto == 0 {
        0
    } else if last.last_exact == 1 {
        let before: BTreeMap<u32, u64> =
            last.last_seconds.into_iter().zip(last.last_rows).collect();
        first_grown(&before, &counted, check_from, check_to).unwrap_or(check_to)
    } else {
        check_from
    };
    let seen = counted
        .range(now_from..now.max(now_from))
        .map(|(s, n)| (*s, *n))
        .collect();
    Ok(RunStart { after, now, seen })
}

/// The first second of `[from, to)` whose count in `now` is not the one in
/// `before` (a missing second counts 0).
fn first_grown(
    before: &BTreeMap<u32, u64>,
    now: &BTreeMap<u32, u64>,
    from: u32,
    to: u32,
) -> Option<u32> {
    if from >= to {
        return None;
    }
    let seconds: BTreeSet<u32> = before
        .range(from..to)
        .chain(now.range(from..to))
        .map(|(s, _)| *s)
        .collect();
    seconds
        .into_iter()
        .find(|s| before.get(s).unwrap_or(&0) != now.get(s).unwrap_or(&0))
}

/// Save the watermark of a run that read everything it counted. On a
/// cluster without its counts: a statement reads each shard from either
/// replica, and a replica that has not fetched a part yet may answer a
/// run's statements without rows another replica counted for it, so there
/// the next run reads the whole margin again.
pub(crate) async fn finish_run(
    ch: &ClickHouse,
    name: &str,
    run: &RunStart,
) -> Result<(), StoreError> {
    let seen = ch.cluster().is_none().then_some(run.seen.as_slice());
    save_watermark(ch, name, run.now, seen).await
}

/// Save the watermark `upto` of the step `name`, with the rows per second
/// seen in the margin before it when known (`None`: the next run reads the
/// whole margin again).
pub(crate) async fn save_watermark(
    ch: &ClickHouse,
    name: &str,
    upto: u32,
    seen: Option<&[(u32, u64)]>,
) -> Result<(), StoreError> {
    let exact = if seen.is_some() { "1" } else { "0" };
    let seen = seen.unwrap_or_default();
    let list = |v: Vec<String>| format!("[{}]", v.join(", "));
    let seconds = list(seen.iter().map(|(s, _)| s.to_string()).collect());
    let rows = list(seen.iter().map(|(_, n)| n.to_string()).collect());
    let sql = render(
        ch.db(),
        "save_watermark",
        &[
            ("name", &literal(name)),
            ("upto", &upto.to_string()),
            ("version", &now_micros().to_string()),
            ("exact", exact),
            ("seconds", &seconds),
            ("rows", &rows),
        ],
    )?;
    ch.execute("save watermark", &sql).await
}

/// Rewrite `hidden_accounts` for the accounts whose events arrived since
/// the last run; returns the window read.
pub async fn refresh_hidden_accounts(ch: &ClickHouse) -> Result<(u32, u32), StoreError> {
    let run = start_run(ch, "accounts", "account_changes").await?;
    let (after, now) = (run.after, run.now);
    let sql = render(
        ch.db(),
        "refresh_hidden_accounts",
        &[
            ("after", &after.to_string()),
            ("before", &u32::MAX.to_string()),
        ],
    )?;
    ch.execute("hidden accounts", &sql).await?;
    // Their days' stats count them again, or stop counting them.
    let sql = render(
        ch.db(),
        "stale_days_of_accounts",
        &[
            ("after", &after.to_string()),
            ("before", &u32::MAX.to_string()),
            ("tid_time", &crate::counts::tid_time_sql("rkey")),
        ],
    )?;
    ch.execute("stale days of accounts", &sql).await?;
    finish_run(ch, "accounts", &run).await?;
    Ok((after, now))
}

/// `[('collection', 'YYYY-MM-DD'), …]` for the statements.
fn pairs_literal(pairs: &[(String, String)]) -> String {
    let items: Vec<String> = pairs
        .iter()
        .map(|(c, d)| format!("({}, {})", literal(c), literal(d)))
        .collect();
    items.join(", ")
}

/// A pair to recompute.
#[derive(clickhouse::Row, serde::Deserialize)]
struct Pair {
    collection: String,
    day: String,
}

/// Mark the (collection, day) pairs that got rows since the last run as
/// stale, then recompute at most `limit` stale pairs, most recent days
/// first. Returns (pairs recomputed, pairs still stale).
pub async fn refresh_daily_stats(ch: &ClickHouse, limit: u32) -> Result<(usize, u64), StoreError> {
    let db = ch.db();
    let run = start_run(ch, "days", "day_changes").await?;
    let after = run.after;
    let sql = render(
        db,
        "stale_days_add",
        &[
            ("after", &after.to_string()),
            ("before", &u32::MAX.to_string()),
        ],
    )?;
    ch.execute("stale days", &sql).await?;
    finish_run(ch, "days", &run).await?;
    // The "done" mark: twice the start second in microseconds (even). A row
    // that arrives from this second on marks its pair above it (odd, from
    // its arrival second), so nothing that arrives during the recomputation
    // is lost; a row of the same second before the start only costs one
    // more recomputation.
    let version = (now_micros() / 1_000_000) * 2_000_000;
    // The stats rows' version: the start in microseconds, twice (the zero
    // row even, the recomputation one above), so a later recomputation in
    // the same second (whose zero row stands alone when every record of the
    // pair is gone) still replaces an earlier one. At a second's start it
    // equals the seconds-based versions written before.
    let stats_version = now_micros() * 2;
    let sql = render(db, "stale_days_next", &[("limit", &limit.to_string())])?;
    let next: Vec<Pair> = ch.fetch_all("stale days", &sql).await?;
    let pairs: Vec<(String, String)> = next.into_iter().map(|p| (p.collection, p.day)).collect();
    for chunk in pairs.chunks(200) {
        let list = pairs_literal(chunk);
        for name in ["daily_stats_zero", "daily_stats_recompute"] {
            let sql = render(
                db,
                name,
                &[("pairs", &list), ("version", &stats_version.to_string())],
            )?;
            ch.execute(name, &sql).await?;
        }
        let sql = render(
            db,
            "stale_days_done",
            &[("pairs", &list), ("version", &version.to_string())],
        )?;
        ch.execute("stale days done", &sql).await?;
    }
    let sql = render(db, "stale_days_backlog", &[])?;
    let backlog: u64 = ch.fetch_one("stale days backlog", &sql).await?;
    Ok((pairs.len(), backlog))
}

/// Recompute every day's stats (all pairs stale), in runs of `limit`;
/// tests and upgrades. Returns the pairs recomputed.
pub async fn rebuild_daily_stats(ch: &ClickHouse, limit: u32) -> Result<usize, StoreError> {
    let mut total = 0;
    loop {
        let (n, backlog) = refresh_daily_stats(ch, limit.max(1)).await?;
        total += n;
        if backlog == 0 || n == 0 {
            return Ok(total);
        }
    }
}

/// The tables the retention step looks at, with how many days each keeps.
const RETAINED: [(&str, u32); 6] = [
    ("interaction_changes", LOG_RETENTION_DAYS),
    ("day_changes", LOG_RETENTION_DAYS),
    ("account_changes", LOG_RETENTION_DAYS),
    ("pending_deletes", FLOOR_RETENTION_DAYS),
    (
        "recent_interactions",
        crate::counts::RECENT_INTERACTION_SECS / 86_400,
    ),
    ("recent_posts", RECENT_POST_DAYS),
];

/// A partition of a retained table.
#[derive(clickhouse::Row, serde::Deserialize)]
struct Partition {
    table: String,
    partition: String,
}

/// Drop the day partitions (`YYYYMMDD`) older than each table keeps.
/// Returns how many were dropped.
pub async fn expire(ch: &ClickHouse) -> Result<usize, StoreError> {
    let db = ch.db();
    // On a cluster the partitions are the local tables', on every server.
    let suffix = if db.is_cluster() { "_local" } else { "" };
    let tables: Vec<String> = RETAINED
        .iter()
        .map(|(t, _)| format!("{t}{suffix}"))
        .collect();
    let parts_table = match ch.cluster() {
        Some(c) => format!("cluster({}, system, parts)", literal(c)),
        None => "system.parts".to_owned(),
    };
    let sql = render(
        db,
        "log_partitions",
        &[
            ("parts", &parts_table),
            ("tables", &sql::literal_array(&tables)),
        ],
    )?;
    let parts: Vec<Partition> = ch.fetch_all("log partitions", &sql).await?;
    let on_cluster = crate::admin::on_cluster(ch);
    let today = (now_micros() / 1_000_000 / 86_400) as i64;
    let mut dropped = 0;
    for p in parts {
        let table = p.table.strip_suffix(suffix).unwrap_or(&p.table);
        let Some(days) = RETAINED.iter().find(|(t, _)| *t == table).map(|(_, d)| *d) else {
            continue;
        };
        let Some(day) = partition_day(&p.partition) else {
            continue;
        };
        if today - day <= i64::from(days) {
            continue;
        }
        let sql = render(
            db,
            "drop_partition",
            &[
                ("table", table),
                ("partition", &p.partition),
                ("on_cluster", &on_cluster),
            ],
        )?;
        ch.execute("drop partition", &sql).await?;
        dropped += 1;
    }
    Ok(dropped)
}

/// Days since the epoch of a `YYYYMMDD` partition id.
fn partition_day(id: &str) -> Option<i64> {
    if id.len() != 8 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let y: i64 = id[..4].parse().ok()?;
    let m: i64 = id[4..6].parse().ok()?;
    let d: i64 = id[6..].parse().ok()?;
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    Some(era * 146_097 + doe - 719_468)
}

/// This module's statements with sample values (see [`sql::catalog`]).
pub(crate) fn samples(db: Db<'_>, out: &mut Vec<Rendered>) -> Result<(), StoreError> {
    let name = literal("days");
    sql::sample(out, db, "watermark", &[("name", &name)])?;
    sql::sample(out, db, "server_now", &[])?;
    sql::sample(
        out,
        db,
        "log_seconds",
        &[
            ("log", "interaction_changes"),
            ("check_from", "1714521300"),
            ("check_to", "1714521600"),
            ("now_from", "1714521700"),
            ("now_to", "1714522000"),
        ],
    )?;
    for (exact, seconds, rows) in [
        ("1", "[1714521599, 1714521600]", "[3, 40]"),
        ("0", "[]", "[]"),
    ] {
        sql::sample(
            out,
            db,
            "save_watermark",
            &[
                ("name", &name),
                ("upto", "1714521600"),
                ("version", "2"),
                ("exact", exact),
                ("seconds", seconds),
                ("rows", rows),
            ],
        )?;
    }
    let w = [("after", "0"), ("before", "4294967295")];
    sql::sample(out, db, "refresh_hidden_accounts", &w)?;
    let tid = crate::counts::tid_time_sql("rkey");
    sql::sample(
        out,
        db,
        "stale_days_of_accounts",
        &[("after", "0"), ("before", "4294967295"), ("tid_time", &tid)],
    )?;
    sql::sample(out, db, "stale_days_add", &w)?;
    sql::sample(out, db, "stale_days_next", &[("limit", "10")])?;
    sql::sample(out, db, "stale_days_backlog", &[])?;
    let pairs = pairs_literal(&[
        ("app.bsky.feed.post".into(), "2024-05-01".into()),
        ("app.bsky.feed.like".into(), "1970-01-01".into()),
    ]);
    for n in [
        "daily_stats_zero",
        "daily_stats_recompute",
        "stale_days_done",
    ] {
        sql::sample(out, db, n, &[("pairs", &pairs), ("version", "4")])?;
    }
    sql::sample(
        out,
        db,
        "log_partitions",
        &[
            ("parts", "system.parts"),
            (
                "tables",
                &sql::literal_array(&["day_changes", "recent_posts"]),
            ),
        ],
    )?;
    // Dropping a partition that does not exist is not an error.
    sql::sample(
        out,
        db,
        "drop_partition",
        &[
            ("table", "day_changes"),
            ("partition", "19700101"),
            ("on_cluster", ""),
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_second_whose_count_grew() {
        let before: BTreeMap<u32, u64> = [(10, 2), (12, 5)].into_iter().collect();
        // The same rows, and rows outside the range: nothing grew.
        let same: BTreeMap<u32, u64> = [(9, 7), (10, 2), (12, 5), (20, 1)].into_iter().collect();
        assert_eq!(first_grown(&before, &same, 10, 20), None);
        // A row in a second that had none, then one in a second that had some.
        let late: BTreeMap<u32, u64> = [(10, 2), (11, 1), (12, 6)].into_iter().collect();
        assert_eq!(first_grown(&before, &late, 10, 20), Some(11));
        let later: BTreeMap<u32, u64> = [(10, 2), (12, 6)].into_iter().collect();
        assert_eq!(first_grown(&before, &later, 10, 20), Some(12));
        // Fewer rows (a dropped partition) also reads again.
        let fewer: BTreeMap<u32, u64> = [(12, 5)].into_iter().collect();
        assert_eq!(first_grown(&before, &fewer, 10, 20), Some(10));
        assert_eq!(first_grown(&before, &late, 20, 20), None);
    }

    #[test]
    fn partition_ids_are_days() {
        assert_eq!(partition_day("19700101"), Some(0));
        assert_eq!(partition_day("19700102"), Some(1));
        assert_eq!(partition_day("20241205"), Some(20_062));
        assert_eq!(partition_day("2024120"), None);
        assert_eq!(partition_day("20241305"), None);
        assert_eq!(partition_day("all"), None);
    }
}
