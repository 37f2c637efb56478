//! Grafana dashboards against a real scrape: every metric, label and literal
//! label value a dashboard's PromQL uses must be in what the service exports.
//! Each service's test runs the real service, takes its first scrape (fresh
//! and idle: every series must be exported from startup), and calls
//! [`check`] with its dashboard (`dashboards/<service>.json`).
//! [`new_series`] says which series a busy service exports that its fresh
//! scrape lacked (a label value missing from a closed set exported at 0).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde_json::Value;

/// Every dashboard, with the test that checks it against its service's
/// real scrape. A new dashboard needs an entry (and that test).
pub const CHECKED_BY: &[(&str, &str)] = &[
    ("indexer.json", "cmd/skyhouse/tests/ops/metrics.rs"),
    ("backfill.json", "cmd/skyhouse/tests/ops/metrics.rs"),
    ("monitor.json", "cmd/skyhouse/tests/ops/metrics.rs"),
    ("api.json", "cmd/skyhouse/tests/ops/metrics.rs"),
    ("relay.json", "cmd/skyhouse/tests/e2e/relay.rs"),
    ("feedgen.json", "cmd/skyhouse/tests/ops/metrics.rs"),
];

/// The workspace's `dashboards/` directory.
pub fn dir() -> PathBuf {
    crate::workspace_root().join("dashboards")
}

/// Labels Prometheus adds at scrape time (not in the exporter's output).
const TARGET_LABELS: &[&str] = &["instance", "job"];

/// One sample of the text exposition format.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Metric name.
    pub name: String,
    /// Label pairs.
    pub labels: BTreeMap<String, String>,
    /// The value.
    pub value: f64,
}

/// Parse the Prometheus text format (what metrics-exporter-prometheus renders).
pub fn parse_scrape(body: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in body.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value`");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("value in {line:?}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_owned(), BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').expect("closing }");
                let mut labels = BTreeMap::new();
                let mut chars = rest.chars().peekable();
                while chars.peek().is_some() {
                    let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
                    assert_eq!(chars.next(), Some('"'), "{line}");
                    let mut val = String::new();
                    while let Some(c) = chars.next() {
                        match c {
                            '\\' => val.push(chars.next().expect("escaped char")),
                            '"' => break,
                            c => val.push(c),
                        }
                    }
                    if chars.peek() == Some(&',') {
                        chars.next();
                    }
                    labels.insert(key.trim().to_owned(), val);
                }
                (name.to_owned(), labels)
            }
        };
        out.push(Sample {
            name,
            labels,
            value,
        });
    }
    out
}

/// The sum of `name`'s samples, those with `label` = value only when given.
pub fn sum(samples: &[Sample], name: &str, label: Option<(&str, &str)>) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| label.is_none_or(|(k, v)| s.labels.get(k).is_some_and(|x| x == v)))
        .map(|s| s.value)
        .sum()
}

/// The first sample of `name`.
pub fn value(samples: &[Sample], name: &str) -> Option<f64> {
    samples.iter().find(|s| s.name == name).map(|s| s.value)
}

/// The series (name and labels) of metrics named `prefix…` in `later` that
/// are not in `first`, one line each: what a service began to export only
/// after some event. Empty when every series it uses was exported from the
/// start.
pub fn new_series(first: &[Sample], later: &[Sample], prefix: &str) -> Vec<String> {
    let key = |s: &Sample| format!("{}{:?}", s.name, s.labels);
    let known: BTreeSet<String> = first.iter().map(key).collect();
    let mut out: Vec<String> = later
        .iter()
        .filter(|s| s.name.starts_with(prefix))
        .map(key)
        .filter(|k| !known.contains(k))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every PromQL string of a dashboard: panel `expr`s and template-variable queries.
pub fn dashboard_queries(dashboard: &Value) -> Vec<String> {
    fn walk(v: &Value, key: Option<&str>, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    walk(v, Some(k), out);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, key, out)),
            Value::String(s) if matches!(key, Some("expr" | "query" | "definition")) => {
                out.push(s.clone())
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, None, &mut out);
    out
}

/// A label matcher: (label, operator, value without quotes).
pub type Matcher = (String, String, String);

/// `skyhouse_…` identifiers in a PromQL expression, with the label matchers written
/// right after each (`name{label op "value", …}`).
pub fn metric_refs(expr: &str) -> Vec<(String, Vec<Matcher>)> {
    let bytes = expr.as_bytes();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_' || c == b':';
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("skyhouse_") {
        let start = i + pos;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        i = end;
        if start > 0 && (ident(bytes[start - 1]) || bytes[start - 1] == b'$') {
            continue;
        }
        let name = expr[start..end].to_owned();
        let mut matchers = Vec::new();
        if expr[end..].starts_with('{') {
            let close = end + expr[end..].find('}').expect("closing }");
            for m in expr[end + 1..close].split(',').map(str::trim) {
                if m.is_empty() {
                    continue;
                }
                let op_at = m.find(['=', '!']).expect("matcher operator");
                let (label, rest) = m.split_at(op_at);
                let op_len =
                    if rest.starts_with("=~") || rest.starts_with("!=") || rest.starts_with("!~") {
                        2
                    } else {
                        1
                    };
                let (op, val) = rest.split_at(op_len);
                matchers.push((
                    label.trim().to_owned(),
                    op.to_owned(),
                    val.trim().trim_matches('"').to_owned(),
                ));
            }
            i = close;
        }
        out.push((name, matchers));
    }
    out
}

/// Labels in `by (…)` / `without (…)` clauses.
fn grouping_labels(expr: &str) -> Vec<String> {
    let mut out = Vec::new();
    for kw in ["by (", "by(", "without (", "without("] {
        for (i, _) in expr.match_indices(kw) {
            let rest = &expr[i + kw.len()..];
            let close = rest.find(')').expect("closing )");
            out.extend(
                rest[..close]
                    .split(',')
                    .map(|l| l.trim().to_owned())
                    .filter(|l| !l.is_empty()),
            );
        }
    }
    out
}

/// Every problem of `dashboards/{file}` against one scrape (the text format).
pub fn check(file: &str, scrape: &str) -> Vec<String> {
    check_samples(file, &parse_scrape(scrape))
}

/// [`check`] on parsed samples.
pub fn check_samples(file: &str, samples: &[Sample]) -> Vec<String> {
    let mut labels_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut values_of: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
    for s in samples {
        let labels = labels_of.entry(&s.name).or_default();
        for (k, v) in &s.labels {
            labels.insert(k);
            values_of.entry((&s.name, k)).or_default().insert(v);
        }
    }
    let path = dir().join(file);
    let mut problems = Vec::new();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let dashboard: Value = match serde_json::from_str(&text) {
        Ok(d) => d,
        Err(e) => return vec![format!("{}: {e}", path.display())],
    };
    let queries = dashboard_queries(&dashboard);
    if queries.is_empty() {
        problems.push(format!("{file}: no queries"));
    }
    for q in &queries {
        let refs = metric_refs(q);
        for (name, matchers) in &refs {
            let Some(labels) = labels_of.get(name.as_str()) else {
                problems.push(format!("{file}: {name} is not in the scrape (in `{q}`)"));
                continue;
            };
            for (label, op, val) in matchers {
                if TARGET_LABELS.contains(&label.as_str()) {
                    continue;
                }
                if !labels.contains(label.as_str()) {
                    problems.push(format!("{file}: {name} has no label {label:?} (in `{q}`)"));
                    continue;
                }
                // Literal values (a plain value or a|b|c alternation) must occur.
                if (op == "=" || op == "=~") && !val.contains('$') {
                    let known = &values_of[&(name.as_str(), label.as_str())];
                    for v in val.split('|') {
                        if !known.contains(v) {
                            problems.push(format!(
                                "{file}: {name}{{{label}=\"{v}\"}} is never exported (values: {known:?})"
                            ));
                        }
                    }
                }
            }
        }
        for label in grouping_labels(q) {
            let on_some = refs.iter().any(|(name, _)| {
                labels_of
                    .get(name.as_str())
                    .is_some_and(|l| l.contains(label.as_str()))
            });
            if !on_some && !TARGET_LABELS.contains(&label.as_str()) {
                problems.push(format!(
                    "{file}: grouping by {label:?}, a label none of its metrics has (in `{q}`)"
                ));
            }
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_refs_reads_names_and_matchers() {
        let refs = metric_refs(
            r#"sum(rate(skyhouse_a_total{instance=~"$instance", quantile=~"0.5|0.9"}[5m])) / skyhouse_b_sum"#,
        );
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].0, "skyhouse_a_total");
        assert_eq!(
            refs[0].1[1],
            ("quantile".to_owned(), "=~".to_owned(), "0.5|0.9".to_owned())
        );
        assert_eq!(refs[1].0, "skyhouse_b_sum");
        assert_eq!(
            grouping_labels("sum by (a, b) (x) + max without(c) (y)"),
            ["a", "b", "c"]
        );
        let s = parse_scrape("# TYPE x counter\nx{a=\"1\",b=\"q\\\"\"} 2\ny 3.5\n");
        assert_eq!(s[0].labels["b"], "q\"");
        assert_eq!(s[1].value, 3.5);
    }
}
