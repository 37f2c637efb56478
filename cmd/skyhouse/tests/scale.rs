//! `just bench-scale` at a smoke size: the harness (pkg/scale) loads 20k and
//! then 100k generated records (over one day) through the real transform and writer into
//! the test ClickHouse, runs every maintenance job, serves the data with
//! this crate's `skyhouse search` and `skyhouse feedgen` binaries, and must
//! report every figure, with no failed request, job or query. Timings are
//! not checked (they depend on the machine); completeness and sanity are.

use std::path::PathBuf;
use std::time::Duration;

use skyhouse_scale::{run, Config};
use skyhouse_testkit::{ClickHouse, Redis};

const SIZES: [u64; 2] = [20_000, 100_000];
const REPS: usize = 3;

fn config() -> Config {
    let ch = ClickHouse::shared();
    let redis = Redis::shared();
    let pid = std::fs::read_to_string(ch.dir().join("server.pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let work = std::env::temp_dir().join(format!("skyhouse-scale-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&work).expect("work dir");
    let mut cfg = Config::new(SIZES[1], PathBuf::from(env!("CARGO_BIN_EXE_skyhouse")));
    cfg.sizes = SIZES.to_vec();
    // One day instead of two years: the feeds' windows (1 h, 24 h, 48 h)
    // then hold enough posts for a second page at these sizes.
    cfg.days = 1;
    cfg.clickhouse_url = ch.http_url();
    cfg.clickhouse_pid = pid;
    cfg.redis_url = redis.url();
    cfg.database = format!("scale_smoke_{}", std::process::id());
    cfg.reps = REPS;
    cfg.connections = 20;
    cfg.load_requests = 200;
    cfg.route_budget = Duration::from_secs(120);
    cfg.work_dir = work;
    cfg.progress = true;
    // Measurements share seconds (their per-query memory may mix at the
    // edges): the run takes less than half the time.
    cfg.separate_phases = false;
    cfg
}

/// Figures every size must have (each route's cold and warm cases, each
/// job of both rounds, the JSONBench questions, storage, memory).
fn expected() -> Vec<String> {
    let mut out: Vec<String> = [
        "gen/records_per_cpu_s",
        "gen/with_transform_records_per_cpu_s",
        "load/records_per_s",
        "load/rows",
        "load/generator_waiting",
        "increment/records",
        "storage/total/bytes_per_record",
        "storage/total/compressed_per_record",
        "storage/total/uncompressed_per_record",
        "storage/records/bytes_per_record",
        "storage/posts/bytes_per_record",
        "storage/likes/bytes_per_record",
        "storage/interactions/bytes_per_record",
        "memory/server_rss_mb",
        "memory/server_peak_rss_mb",
        "memory/max_query_mb",
        "memory/memory_limit_errors",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for round in ["after_load", "after_increment"] {
        for job in [
            "interactions",
            "aggregates_refresh",
            "daily_stats_backlog",
            "rank_whats-hot",
            "rank_top-1h",
            "rank_top-24h",
            "rank_label-artist",
            "rank_pinned",
            "pending_cleanups",
            "account_cleanup",
            "backfill_status",
        ] {
            out.push(format!("maint/{round}/{job}/secs"));
            out.push(format!("maint/{round}/{job}/peak_mb"));
        }
    }
    let mut search = vec![
        "stats",
        "actor_stats",
        "post_stats",
        "posts_rare_term",
        "posts_common_term",
        "posts_author",
        "posts_lang",
        "posts_window_7d",
        "posts_tag",
        "posts_cursor",
        "actors",
        "repo",
        "openapi",
        "admin_create_key",
        "admin_list_keys",
        "admin_revoke_key",
        "admin_sql",
        "admin_cleanup",
        "admin_job",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    let jsonbench = [
        "events-per-collection",
        "creates-and-users",
        "by-hour",
        "earliest-posters",
        "longest-spans",
    ];
    for a in jsonbench.iter().chain(&["hashtags", "languages"]) {
        search.push(format!("analytics_{a}"));
    }
    for a in jsonbench {
        for figure in ["cold_ms", "warm_ms", "peak_mb"] {
            out.push(format!("jsonbench/{a}/{figure}"));
        }
    }
    for r in search {
        for case in ["cold", "warm"] {
            out.push(format!("http/search/{r}/{case}/p50_ms"));
            out.push(format!("http/search/{r}/{case}/p99_ms"));
        }
    }
    for feed in ["whats-hot", "top-1h", "top-24h", "label-artist", "pinned"] {
        for page in ["first", "cursor"] {
            for case in ["cold", "warm"] {
                out.push(format!("http/feedgen/{feed}/{page}/{case}/p99_ms"));
            }
        }
    }
    out.push("http/feedgen/whats-hot/first/warm/rps".into());
    for r in ["describe", "did_json"] {
        out.push(format!("http/feedgen/{r}/warm/p99_ms"));
    }
    out
}

#[test]
fn the_scale_benchmark_reports_every_figure_at_two_sizes() {
    let cfg = config();
    let report = run(&cfg).expect("the scale benchmark runs");
    let table = report.table();
    println!("{table}");
    assert_eq!(report.sizes.len(), 2);
    assert!(report.server.starts_with("18.") || !report.server.is_empty());
    // The liked posts of the last hour at these sizes follow the generator's
    // daily cycle (so the hour the test runs at): from more than a page to
    // fewer. Then the top-1h feed has no cursor page, and the report must
    // say so.
    let one_page = |size: &skyhouse_scale::report::SizeReport| {
        size.notes
            .iter()
            .any(|n| n.starts_with("http/feedgen/top-1h: the feed holds one page or less"))
    };
    for (size, records) in report.sizes.iter().zip(SIZES) {
        assert_eq!(size.records, records);
        let f = &size.figures.0;
        let top_1h_one_page = one_page(size);
        let missing: Vec<String> = expected()
            .into_iter()
            .filter(|k| !f.contains_key(k))
            .filter(|k| !(top_1h_one_page && k.starts_with("http/feedgen/top-1h/cursor/")))
            .collect();
        assert!(
            missing.is_empty(),
            "{records} records: missing figures {missing:?}\nnotes: {:?}",
            size.notes
        );
        // Nothing failed: no job, no request, no query.
        let failed: Vec<(&String, &f64)> = f
            .iter()
            .filter(|(k, v)| (k.ends_with("/failed") || k.ends_with("/errors")) && **v > 0.0)
            .collect();
        assert!(
            failed.is_empty(),
            "{records} records: {failed:?}\nnotes: {:?}",
            size.notes
        );
        assert!(
            size.notes.iter().all(|n| top_1h_one_page
                && n.starts_with("http/feedgen/top-1h: the feed holds one page")),
            "{records} records: {:?}",
            size.notes
        );
        assert_eq!(f["memory/query_errors"], 0.0, "{:?}", size.heaviest);
        assert_eq!(f["memory/memory_limit_errors"], 0.0);
        // Every request of a route was timed (the budget was never hit).
        for (k, v) in f
            .iter()
            .filter(|(k, _)| k.starts_with("http/search/") && k.ends_with("/n"))
        {
            assert_eq!(*v, REPS as f64, "{k}");
        }
        // The load wrote what the generator made, nothing refused.
        assert_eq!(f["load/records"], records as f64);
        assert!(
            f["load/rows"] > records as f64,
            "a record gives a raw and a typed row"
        );
        assert_eq!(f["load/dead_lettered"], 0.0);
        let g = &size.generated;
        assert_eq!(g.records, records + f["increment/records"] as u64);
        let share = |n: u64| n as f64 / g.records as f64;
        assert!(
            (0.02..0.04).contains(&share(g.deletes)),
            "deletes {}",
            g.deletes
        );
        assert!(
            (0.005..0.015).contains(&share(g.replays)),
            "replays {}",
            g.replays
        );
        assert!(g.accounts_hidden > 0 && g.updates > 0);
        assert!(size.top_likes.len() == 10 && size.top_likes[0] > size.top_likes[9]);
        // Storage: plausible bytes per record (raw JSON kept).
        let per = f["storage/total/bytes_per_record"];
        assert!((50.0..5000.0).contains(&per), "{per} bytes per record");
        assert!(
            f["storage/total/uncompressed_per_record"] > f["storage/total/compressed_per_record"]
        );
        // Memory: the query log saw the services' queries.
        assert!(f["memory/logged_queries"] > 100.0);
        assert!(f["memory/max_query_mb"] > 0.0);
        assert!(!size.heaviest.is_empty());
        // The feeds had posts to rank.
        assert!(f["maint/after_load/rank_whats-hot/posts"] > 30.0);
        assert!(f["maint/after_increment/account_cleanup/rows"] > 0.0);
    }
    // Growth: the second size over the first, for every figure of both.
    assert!(
        (4.0..6.0).contains(&report.growth["load/rows"]),
        "{}",
        report.growth["load/rows"]
    );
    assert!(report.growth.contains_key("http/search/stats/cold/p99_ms"));
    assert!(report.growth.contains_key("storage/total/bytes_per_record"));
    // One JSON line with everything.
    let json = serde_json::to_string(&report).expect("json");
    assert!(!json.contains('\n'));
    let v: serde_json::Value = serde_json::from_str(&json).expect("parses");
    assert_eq!(v["sizes"].as_array().map(Vec::len), Some(2));
    assert!(v["growth"]["load/rows"].is_number());
    // The table names every route (a figure no size has is not a row: the
    // top-1h cursor page when both sizes said why it is missing).
    let top_1h_one_page_at_both = report.sizes.iter().all(one_page);
    for k in expected() {
        if top_1h_one_page_at_both && k.starts_with("http/feedgen/top-1h/cursor/") {
            continue;
        }
        assert!(table.contains(&k), "the table lacks {k}");
    }
    // The databases are gone.
    let left = ClickHouse::shared().query(&format!(
        "SELECT count() FROM system.databases WHERE name LIKE '{}%'",
        cfg.database
    ));
    assert_eq!(left.trim(), "0");
    let _ = std::fs::remove_dir_all(&cfg.work_dir);
}
