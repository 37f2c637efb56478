//! `skyhouse-scale`: the scale benchmark's command line (`just bench-scale`).

use std::path::PathBuf;
use std::time::Duration;

use skyhouse_scale::{run, BoxError, Config};

/// The generator allocates on its thread and the writer frees on others:
/// mimalloc, as the services use.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str = "skyhouse-scale --records N --skyhouse PATH [--sizes A,B] [--seed S] [--days D]
    [--clickhouse URL] [--clickhouse-user U] [--clickhouse-pid PID] [--redis URL]
    [--database PREFIX] [--reps N] [--connections N] [--load-requests N]
    [--route-budget-secs S] [--increment N] [--keep] [--work-dir DIR] [--chdb scripts/chdb_storage.py]
    [--min-free-gb G] [--json-only]
(ClickHouse password from CLICKHOUSE_PASSWORD; every flag is also read from
SCALE_<FLAG> in upper case, e.g. SCALE_RECORDS)";

fn parse() -> Result<(Config, bool), BoxError> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut records: Option<u64> = None;
    let mut skyhouse: Option<PathBuf> = None;
    let mut rest = Vec::new();
    let number = |flag: &str, v: &str| -> Result<u64, BoxError> {
        v.replace('_', "")
            .parse()
            .map_err(|_| format!("{flag} takes a number, not {v:?}").into())
    };
    // Environment fallbacks: SCALE_RECORDS=… is --records ….
    for (flag, takes) in FLAGS {
        let env = format!(
            "SCALE_{}",
            flag.trim_start_matches("--")
                .replace('-', "_")
                .to_uppercase()
        );
        if let Ok(v) = std::env::var(&env) {
            if !args.iter().any(|a| a == flag) {
                args.push(flag.to_string());
                if *takes {
                    args.push(v);
                }
            }
        }
    }
    let mut it = args.into_iter();
    while let Some(flag) = it.next() {
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let Some((_, takes)) = FLAGS.iter().find(|(f, _)| *f == flag) else {
            return Err(format!("unknown argument {flag:?}\n{USAGE}").into());
        };
        let value = if *takes {
            Some(it.next().ok_or_else(|| format!("{flag} needs a value"))?)
        } else {
            None
        };
        match (flag.as_str(), value) {
            ("--records", Some(v)) => records = Some(number(&flag, &v)?),
            ("--skyhouse", Some(v)) => skyhouse = Some(PathBuf::from(v)),
            (_, v) => rest.push((flag, v)),
        }
    }
    let records = records.ok_or("--records is required")?;
    let skyhouse = skyhouse.ok_or("--skyhouse is required (the skyhouse binary)")?;
    let mut cfg = Config::new(records, skyhouse);
    let mut json_only = false;
    for (flag, v) in rest {
        let v = v.unwrap_or_default();
        match flag.as_str() {
            "--sizes" => {
                cfg.sizes = v
                    .split(',')
                    .map(|s| number(&flag, s.trim()))
                    .collect::<Result<_, _>>()?;
                cfg.sizes.sort_unstable();
            }
            "--seed" => cfg.seed = number(&flag, &v)?,
            "--days" => cfg.days = u32::try_from(number(&flag, &v)?)?,
            "--clickhouse" => cfg.clickhouse_url = v,
            "--clickhouse-user" => cfg.clickhouse_user = v,
            "--clickhouse-pid" => cfg.clickhouse_pid = Some(u32::try_from(number(&flag, &v)?)?),
            "--redis" => cfg.redis_url = v,
            "--database" => cfg.database = v,
            "--reps" => cfg.reps = number(&flag, &v)? as usize,
            "--connections" => cfg.connections = number(&flag, &v)? as usize,
            "--load-requests" => cfg.load_requests = number(&flag, &v)? as usize,
            "--route-budget-secs" => cfg.route_budget = Duration::from_secs(number(&flag, &v)?),
            "--increment" => cfg.increment = Some(number(&flag, &v)?),
            "--keep" => cfg.keep = true,
            "--work-dir" => cfg.work_dir = PathBuf::from(v),
            "--chdb" => cfg.chdb_script = Some(PathBuf::from(v)),
            "--min-free-gb" => cfg.min_free_bytes = number(&flag, &v)? << 30,
            "--json-only" => json_only = true,
            _ => return Err(format!("unknown argument {flag:?}").into()),
        }
    }
    cfg.clickhouse_password = std::env::var("CLICKHOUSE_PASSWORD").unwrap_or_default();
    Ok((cfg, json_only))
}

/// Every flag and whether it takes a value.
const FLAGS: &[(&str, bool)] = &[
    ("--records", true),
    ("--skyhouse", true),
    ("--sizes", true),
    ("--seed", true),
    ("--days", true),
    ("--clickhouse", true),
    ("--clickhouse-user", true),
    ("--clickhouse-pid", true),
    ("--redis", true),
    ("--database", true),
    ("--reps", true),
    ("--connections", true),
    ("--load-requests", true),
    ("--route-budget-secs", true),
    ("--increment", true),
    ("--keep", false),
    ("--work-dir", true),
    ("--chdb", true),
    ("--min-free-gb", true),
    ("--json-only", false),
];

fn main() -> std::process::ExitCode {
    let (cfg, json_only) = match parse() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skyhouse-scale: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    match run(&cfg) {
        Ok(report) => {
            if !json_only {
                println!("{}", report.table());
            }
            match serde_json::to_string(&report) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("skyhouse-scale: {e}");
                    return std::process::ExitCode::FAILURE;
                }
            }
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("skyhouse-scale: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
