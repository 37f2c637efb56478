//! What a run measured: named figures per size, their growth from the
//! smallest size to the largest, a table for people and one JSON line.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// Latencies of a set of requests (or runs of a job).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stat {
    /// How many were timed.
    pub n: usize,
    /// How many answered 2xx (or succeeded).
    pub ok: usize,
    /// Answers by HTTP status (0: no answer).
    pub statuses: BTreeMap<u16, usize>,
    /// Median, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile (nearest rank), milliseconds.
    pub p99_ms: f64,
    /// Slowest, milliseconds.
    pub max_ms: f64,
    /// Requests per second over the wall time (concurrent runs only).
    pub rps: Option<f64>,
}

impl Stat {
    /// The statistics of `(took, status)` pairs.
    pub fn of(samples: &[(Duration, u16)]) -> Stat {
        let mut ms: Vec<f64> = samples.iter().map(|(d, _)| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let mut statuses = BTreeMap::new();
        for (_, s) in samples {
            *statuses.entry(*s).or_default() += 1;
        }
        let rank = |q: f64| {
            if ms.is_empty() {
                f64::NAN
            } else {
                let i = ((q * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
                ms[i]
            }
        };
        Stat {
            n: samples.len(),
            ok: samples
                .iter()
                .filter(|(_, s)| (200..300).contains(s))
                .count(),
            statuses,
            p50_ms: round(rank(0.5), 2),
            p99_ms: round(rank(0.99), 2),
            max_ms: round(ms.last().copied().unwrap_or(f64::NAN), 2),
            rps: None,
        }
    }
}

/// `x` to `digits` decimals.
pub fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// One size's figures, by name (`http/search/stats/warm/p99_ms`, …).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures(pub BTreeMap<String, f64>);

impl Figures {
    /// Record `value` under `name` (non-finite values are left out).
    pub fn set(&mut self, name: impl Into<String>, value: f64) {
        if value.is_finite() {
            self.0.insert(name.into(), value);
        }
    }

    /// Record a latency statistic's median, p99 (and rate) under `prefix`.
    pub fn stat(&mut self, prefix: &str, s: &Stat) {
        self.set(format!("{prefix}/p50_ms"), s.p50_ms);
        self.set(format!("{prefix}/p99_ms"), s.p99_ms);
        self.set(format!("{prefix}/n"), s.n as f64);
        self.set(format!("{prefix}/errors"), (s.n - s.ok) as f64);
        if let Some(r) = s.rps {
            self.set(format!("{prefix}/rps"), r);
        }
    }
}

/// A logged query that used the most memory.
#[derive(Debug, Clone, Serialize)]
pub struct HeavyQuery {
    /// The measurement it ran in.
    pub phase: String,
    /// Peak memory, MiB.
    pub memory_mb: f64,
    /// How long it ran, milliseconds.
    pub duration_ms: u64,
    /// Rows it read.
    pub read_rows: u64,
    /// Its error, if it failed.
    pub exception: String,
    /// Its start.
    pub query: String,
}

/// Everything measured at one size.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SizeReport {
    /// Record operations in the bulk load.
    pub records: u64,
    /// Accounts.
    pub dids: u32,
    /// The figures (every number measured).
    pub figures: Figures,
    /// What the generator made.
    pub generated: crate::gen::GenStats,
    /// Live likes of the most liked posts.
    pub top_likes: Vec<u32>,
    /// The queries that used the most memory.
    pub heaviest: Vec<HeavyQuery>,
    /// Each measurement's span of server seconds: `(name, from, to)`; the
    /// query log's queries that started within one are its queries.
    pub phases: Vec<(String, u32, u32)>,
    /// What could not be measured, and why.
    pub notes: Vec<String>,
}

/// A whole run: each size, and each figure's growth.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// `scale`.
    pub bench: &'static str,
    /// The largest size (records).
    pub records: u64,
    /// ClickHouse version.
    pub server: String,
    /// Load average (1, 5, 15 min) when the run started and ended.
    pub load_average: Vec<String>,
    /// Each size, smallest first.
    pub sizes: Vec<SizeReport>,
    /// Each figure at the largest size over the smallest.
    pub growth: BTreeMap<String, f64>,
}

impl Report {
    /// Fill [`Report::growth`] from the first and last sizes.
    pub fn compute_growth(&mut self) {
        self.growth.clear();
        let (Some(first), Some(last)) = (self.sizes.first(), self.sizes.last()) else {
            return;
        };
        if self.sizes.len() < 2 {
            return;
        }
        for (name, small) in &first.figures.0 {
            let counted = name.ends_with("/n") || name.ends_with("/errors");
            if counted || *small <= 0.0 {
                continue;
            }
            if let Some(large) = last.figures.0.get(name) {
                self.growth.insert(name.clone(), round(large / small, 2));
            }
        }
    }

    /// The table: one line per figure, a column per size and the growth.
    pub fn table(&self) -> String {
        // Counts are in the JSON; the table shows them only when a request failed.
        let shown = |name: &str, v: f64| {
            !(name.ends_with("/n")
                || name.ends_with("/queries")
                || (name.ends_with("/errors") && v == 0.0))
        };
        let mut names: Vec<&String> = Vec::new();
        for s in &self.sizes {
            for (n, v) in &s.figures.0 {
                if shown(n, *v) && !names.contains(&n) {
                    names.push(n);
                }
            }
        }
        names.sort();
        let width = names.iter().map(|n| n.len()).max().unwrap_or(10).max(10);
        let mut out = String::new();
        let _ = write!(out, "{:width$}", "figure");
        for s in &self.sizes {
            let _ = write!(out, " {:>14}", format!("{} rec", human(s.records as f64)));
        }
        if self.sizes.len() > 1 {
            let _ = write!(out, " {:>8}", "growth");
        }
        out.push('\n');
        let mut group = "";
        for name in names {
            let g = name.split('/').next().unwrap_or("");
            if g != group {
                out.push_str(&format!("-- {g}\n"));
                group = g;
            }
            let _ = write!(out, "{name:width$}");
            for s in &self.sizes {
                match s.figures.0.get(name) {
                    Some(v) => {
                        let _ = write!(out, " {:>14}", number(*v));
                    }
                    None => {
                        let _ = write!(out, " {:>14}", "-");
                    }
                }
            }
            if self.sizes.len() > 1 {
                match self.growth.get(name) {
                    Some(g) => {
                        let _ = write!(out, " {:>7.2}x", g);
                    }
                    None => {
                        let _ = write!(out, " {:>8}", "");
                    }
                }
            }
            out.push('\n');
        }
        for s in &self.sizes {
            for n in &s.notes {
                out.push_str(&format!("note ({} records): {n}\n", s.records));
            }
        }
        out
    }
}

fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// 1000000 → `1M`, 100000 → `100k`.
pub fn human(v: f64) -> String {
    if v >= 1e9 && (v / 1e9).fract() == 0.0 {
        format!("{}G", v / 1e9)
    } else if v >= 1e6 && (v / 1e6).fract() == 0.0 {
        format!("{}M", v / 1e6)
    } else if v >= 1e3 && (v / 1e3).fract() == 0.0 {
        format!("{}k", v / 1e3)
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let samples: Vec<(Duration, u16)> = (1..=20)
            .map(|i| (Duration::from_millis(i), if i == 20 { 503 } else { 200 }))
            .collect();
        let s = Stat::of(&samples);
        assert_eq!((s.n, s.ok), (20, 19));
        assert_eq!(s.p50_ms, 10.0);
        assert_eq!(s.p99_ms, 20.0);
        assert_eq!(s.statuses.get(&503), Some(&1));
    }

    #[test]
    fn growth_is_large_over_small() {
        let mut r = Report::default();
        for (records, ms) in [(10, 4.0), (100, 10.0)] {
            let mut s = SizeReport {
                records,
                ..SizeReport::default()
            };
            s.figures.set("http/x/warm/p99_ms", ms);
            s.figures.set("http/x/warm/n", 20.0);
            r.sizes.push(s);
        }
        r.compute_growth();
        assert_eq!(r.growth.get("http/x/warm/p99_ms"), Some(&2.5));
        assert!(!r.growth.contains_key("http/x/warm/n"));
        let t = r.table();
        assert!(t.contains("2.50x") && t.contains("100 rec"), "{t}");
        assert_eq!(human(1e8), "100M");
    }
}
