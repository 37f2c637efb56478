//! What the benches measure, from `/proc`: CPU seconds of a process (ours,
//! the ClickHouse server's, a child's), the machine's busy CPU, peak RSS and
//! the load average, and the figures derived from them.
//!
//! skyhouse and ClickHouse share the machine's cores, so throughput is
//! bounded by `cores ÷ (skyhouse CPU per event + ClickHouse CPU per event)`
//! ([`Figures::bound_per_s`]). CPU seconds per event move much less with
//! other work on the machine than wall time does, so the benches report
//! both, with the load beside them ([`Window::others_cores`]: CPU the rest
//! of the machine used during the run).
//!
//! ```no_run
//! use skyhouse_testkit::bench::{Probe, Snapshot};
//!
//! let probe = Probe::new(None); // this process only
//! let start = probe.snapshot(0);
//! // ... the measured work: 1,000 events ...
//! let end = probe.snapshot(1_000);
//! let w = end.since(&start);
//! println!("{}", w.figures().json());
//! ```

use std::time::Instant;

/// Clock ticks per second of `/proc/*/stat` (`CLK_TCK`, 100 on Linux).
const HZ: f64 = 100.0;

/// utime + stime of process `pid` (`"self"` or a number), in seconds; `None`
/// if the process is gone or `/proc` is unreadable. `"thread-self"`: the
/// calling thread's run time from its scheduler statistics, to the
/// nanosecond (`/proc/*/stat` counts in 10 ms ticks, too coarse for a
/// fraction of a second of work).
pub fn cpu_secs(pid: &str) -> Option<f64> {
    if pid == "thread-self" {
        let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
        let ns: f64 = stat.split_whitespace().next()?.parse().ok()?;
        return Some(ns / 1e9);
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command's closing parenthesis: utime and stime are
    // the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / HZ)
}

/// The machine's CPU seconds so far (all cores together): `(busy, total)`,
/// from the `cpu` line of `/proc/stat` (busy = everything but idle and
/// iowait).
pub fn machine_cpu_secs() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0.0, 0.0);
    };
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    let total: f64 = v.iter().sum();
    let idle = v.get(3).copied().unwrap_or(0.0) + v.get(4).copied().unwrap_or(0.0);
    ((total - idle) / HZ, total / HZ)
}

/// Cores of this machine (what the bound divides).
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1, 5 and 15 minute load averages.
pub fn load_avg() -> [f64; 3] {
    let s = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut it = s.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
        it.next().unwrap_or(0.0),
    ]
}

/// A field of `/proc/<pid>/status` in kB (`VmHWM:`, `VmRSS:`), as MiB.
pub fn status_mb(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// This process's peak RSS (`VmHWM`), MiB.
pub fn peak_rss_mb() -> f64 {
    status_mb("self", "VmHWM:").unwrap_or(0.0)
}

/// This process's RSS now (`VmRSS`), MiB.
pub fn rss_mb() -> f64 {
    status_mb("self", "VmRSS:").unwrap_or(0.0)
}

/// Reset this process's `VmHWM` to its RSS now (Linux ≥ 4.0), so the peak
/// counts the measured work, not the setup; false if not possible.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The median (the mean of the middle two for an even count); NaN if empty.
pub fn median(xs: &[f64]) -> f64 {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| !x.is_nan()).collect();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// `x` rounded to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let m = 10f64.powi(digits);
    (x * m).round() / m
}

/// Whose CPU a bench measures: skyhouse (this process, or a child's pid) and
/// the database servers, if their pids are known: one ClickHouse server, or
/// every server of a cluster (ClickHouse's and ZooKeeper's), counted
/// together as "ClickHouse" and one by one in [`Probe::servers_cpu`].
#[derive(Debug, Clone)]
pub struct Probe {
    skyhouse: String,
    clickhouse: Vec<String>,
}

impl Probe {
    /// skyhouse is this process; `clickhouse`: the server's pid, if known.
    pub fn new(clickhouse: Option<u32>) -> Probe {
        Probe::with_servers("self".to_owned(), clickhouse.into_iter().collect())
    }

    /// skyhouse is the calling thread alone, measured to the nanosecond: for
    /// one-thread work such as decode-only cases.
    pub fn this_thread() -> Probe {
        Probe::with_servers("thread-self".to_owned(), Vec::new())
    }

    /// skyhouse is process `pid` (a child the bench started).
    pub fn child(pid: u32, clickhouse: Option<u32>) -> Probe {
        Probe::with_servers(pid.to_string(), clickhouse.into_iter().collect())
    }

    /// skyhouse is this process (`None`) or a child; the servers are
    /// `servers` (every server of a cluster), their CPU summed.
    pub fn servers(skyhouse: Option<u32>, servers: &[u32]) -> Probe {
        let skyhouse = skyhouse.map_or_else(|| "self".to_owned(), |p| p.to_string());
        Probe::with_servers(skyhouse, servers.to_vec())
    }

    fn with_servers(skyhouse: String, servers: Vec<u32>) -> Probe {
        Probe {
            skyhouse,
            clickhouse: servers.iter().map(u32::to_string).collect(),
        }
    }

    /// The servers' CPU seconds together, `None` without pids (or when one
    /// is gone).
    fn clickhouse_cpu(&self) -> Option<f64> {
        if self.clickhouse.is_empty() {
            return None;
        }
        self.clickhouse.iter().map(|p| cpu_secs(p)).sum()
    }

    /// Each server's CPU seconds so far, in the order given (0 for one that
    /// is gone).
    pub fn servers_cpu(&self) -> Vec<f64> {
        self.clickhouse
            .iter()
            .map(|p| cpu_secs(p).unwrap_or(0.0))
            .collect()
    }

    /// The counters now, with `units` (events, records, rows) done so far.
    pub fn snapshot(&self, units: u64) -> Snapshot {
        let (busy, total) = machine_cpu_secs();
        Snapshot {
            at: Instant::now(),
            units,
            skyhouse: cpu_secs(&self.skyhouse).unwrap_or(0.0),
            clickhouse: self.clickhouse_cpu(),
            machine_busy: busy,
            machine_total: total,
        }
    }

    /// CPU seconds the ClickHouse server(s) use from now until they are
    /// quiet (under 5% of a core each over 1 s), at most
    /// `max_secs` of waiting: merges of the parts a run wrote (on a cluster
    /// also the replicas' fetches), which finish after it. 0 without a pid.
    pub fn settle_clickhouse(&self, max_secs: f64) -> f64 {
        let Some(start) = self.clickhouse_cpu() else {
            return 0.0;
        };
        let quiet = 0.05 * self.clickhouse.len() as f64;
        let began = Instant::now();
        let mut last = start;
        loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            let now = self.clickhouse_cpu().unwrap_or(last);
            if now - last < quiet || began.elapsed().as_secs_f64() >= max_secs {
                return now - start;
            }
            last = now;
        }
    }
}

/// Parses `--clickhouse-pid`'s value: one pid, or several separated by
/// commas (every server of a cluster).
pub fn parse_pids(value: &str) -> Result<Vec<u32>, String> {
    value
        .split(',')
        .map(|p| {
            p.trim()
                .parse()
                .map_err(|_| format!("--clickhouse-pid: {p:?} is not a pid"))
        })
        .collect()
}

/// CPU µs per unit of each server between two [`Probe::servers_cpu`]
/// readings.
pub fn per_unit_us(start: &[f64], end: &[f64], units: u64) -> Vec<f64> {
    let n = units.max(1) as f64;
    start
        .iter()
        .zip(end)
        .map(|(s, e)| round((e - s) / n * 1e6, 2))
        .collect()
}

/// Counters at one instant (see [`Probe::snapshot`]).
#[derive(Debug, Clone, Copy)]
pub struct Snapshot {
    /// When.
    pub at: Instant,
    /// Events (records, rows) done so far.
    pub units: u64,
    /// skyhouse's CPU seconds so far.
    pub skyhouse: f64,
    /// The ClickHouse server's CPU seconds so far.
    pub clickhouse: Option<f64>,
    /// The machine's busy CPU seconds so far (all cores).
    pub machine_busy: f64,
    /// The machine's CPU seconds so far, busy or not (all cores).
    pub machine_total: f64,
}

impl Snapshot {
    /// The interval from `start` to this snapshot.
    pub fn since(&self, start: &Snapshot) -> Window {
        Window {
            secs: self.at.duration_since(start.at).as_secs_f64(),
            units: self.units.saturating_sub(start.units),
            skyhouse_cpu: self.skyhouse - start.skyhouse,
            clickhouse_cpu: self.clickhouse.zip(start.clickhouse).map(|(e, s)| e - s),
            machine_busy: self.machine_busy - start.machine_busy,
            machine_total: self.machine_total - start.machine_total,
        }
    }
}

/// What happened between two snapshots.
#[derive(Debug, Clone, Copy, Default)]
pub struct Window {
    /// Wall seconds.
    pub secs: f64,
    /// Events (records, rows) done.
    pub units: u64,
    /// skyhouse's CPU seconds.
    pub skyhouse_cpu: f64,
    /// The ClickHouse server's CPU seconds, if its pid is known.
    pub clickhouse_cpu: Option<f64>,
    /// The machine's busy CPU seconds (all cores).
    pub machine_busy: f64,
    /// The machine's CPU seconds, busy or idle (all cores).
    pub machine_total: f64,
}

impl Window {
    /// Cores' worth of CPU the rest of the machine (neither skyhouse nor the
    /// ClickHouse server) used on average: other work sharing the cores.
    pub fn others_cores(&self) -> f64 {
        let ours = self.skyhouse_cpu + self.clickhouse_cpu.unwrap_or(0.0);
        if self.secs <= 0.0 {
            return 0.0;
        }
        ((self.machine_busy - ours) / self.secs).max(0.0)
    }

    /// The derived figures.
    pub fn figures(&self) -> Figures {
        let n = self.units.max(1) as f64;
        let skyhouse_us = self.skyhouse_cpu / n * 1e6;
        let clickhouse_us = self.clickhouse_cpu.map(|c| c / n * 1e6);
        let per_s = if self.secs > 0.0 {
            self.units as f64 / self.secs
        } else {
            0.0
        };
        let sum = skyhouse_us + clickhouse_us.unwrap_or(0.0);
        let bound = if sum > 0.0 {
            cores() as f64 / sum * 1e6
        } else {
            f64::INFINITY
        };
        Figures {
            units: self.units,
            secs: self.secs,
            per_s,
            skyhouse_us,
            clickhouse_us,
            bound_per_s: bound,
            of_bound: per_s / bound,
            others_cores: self.others_cores(),
        }
    }
}

/// Per-unit figures of a [`Window`].
#[derive(Debug, Clone, Copy)]
pub struct Figures {
    /// Events (records, rows) done.
    pub units: u64,
    /// Wall seconds.
    pub secs: f64,
    /// Units per wall second.
    pub per_s: f64,
    /// skyhouse's CPU µs per unit.
    pub skyhouse_us: f64,
    /// The ClickHouse server's CPU µs per unit, if measured.
    pub clickhouse_us: Option<f64>,
    /// `cores ÷ (skyhouse_us + clickhouse_us)`, in units per second: the
    /// throughput if both used every core and nothing else ran.
    pub bound_per_s: f64,
    /// `per_s ÷ bound_per_s`: how close the run came to the bound.
    pub of_bound: f64,
    /// Cores the rest of the machine used meanwhile ([`Window::others_cores`]).
    pub others_cores: f64,
}

impl Figures {
    /// As a JSON object (`units`, `secs`, `per_s`, `skyhouse_us`,
    /// `clickhouse_us`, `bound_per_s`, `of_bound`, `others_cores`).
    pub fn json(&self) -> serde_json::Value {
        let finite = |x: f64| x.is_finite().then_some(x);
        serde_json::json!({
            "units": self.units,
            "secs": round(self.secs, 2),
            "per_s": self.per_s.round(),
            "skyhouse_us": round(self.skyhouse_us, 2),
            "clickhouse_us": self.clickhouse_us.map(|c| round(c, 2)),
            "bound_per_s": finite(self.bound_per_s.round()),
            "of_bound": finite(round(self.of_bound, 3)),
            "others_cores": round(self.others_cores, 2),
        })
    }
}

/// Snapshots taken every `every` on a thread of its own, for the steady
/// state (see [`steady`]); the thread costs a `/proc` read per tick.
#[derive(Debug)]
pub struct Sampler {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Snapshot>>>,
}

impl Sampler {
    /// Start sampling `probe` with `units()` (events done so far) every `every`.
    pub fn start(
        probe: Probe,
        every: std::time::Duration,
        units: impl Fn() -> u64 + Send + 'static,
    ) -> Sampler {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut out = vec![probe.snapshot(units())];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                std::thread::sleep(every);
                out.push(probe.snapshot(units()));
            }
            out
        });
        Sampler {
            stop,
            handle: Some(handle),
        }
    }

    /// Stop and return the snapshots, oldest first.
    pub fn finish(mut self) -> Vec<Snapshot> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The steady state of a run: the window between the first snapshot with at
/// least `from` of `total` units done and the last with at most `to` of
/// them (e.g. 0.1 and 0.9), leaving out start-up (connecting, the first
/// batches, a decoder warming up) and the drain at the end. `None` if the
/// snapshots are too sparse for such a window.
pub fn steady(snapshots: &[Snapshot], total: u64, from: f64, to: f64) -> Option<Window> {
    let lo = (total as f64 * from) as u64;
    let hi = (total as f64 * to) as u64;
    let start = snapshots.iter().find(|s| s.units >= lo)?;
    let end = snapshots.iter().rev().find(|s| s.units <= hi)?;
    (end.units > start.units).then(|| end.since(start))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The thread's own figure counts its work to the nanosecond and not
    /// another thread's.
    #[test]
    fn thread_self_counts_this_thread_only() {
        let spin = |secs: f64| {
            let start = cpu_secs("thread-self").expect("schedstat");
            let mut x = 0u64;
            while cpu_secs("thread-self").expect("schedstat") - start < secs {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        };
        let before = cpu_secs("thread-self").expect("schedstat");
        let process = cpu_secs("self").expect("stat");
        std::thread::spawn(move || spin(0.2))
            .join()
            .expect("spinner");
        let idle = cpu_secs("thread-self").expect("schedstat") - before;
        assert!(
            cpu_secs("self").expect("stat") - process >= 0.1,
            "the process counts the other thread's work"
        );
        assert!(idle < 0.05, "{idle} s counted while another thread worked");
        let t = cpu_secs("thread-self").expect("schedstat");
        spin(0.01);
        let own = cpu_secs("thread-self").expect("schedstat") - t;
        // 10 ms of work reads as such, not as 0 or a whole 10 ms tick more.
        assert!((0.01..0.02).contains(&own), "{own}");
    }
}
