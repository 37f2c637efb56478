//! Every PromQL expression operators run parses, checked by Prometheus's own `promtool`
//! (Debian `prometheus`, installed by `just deps`): the dashboards' panel and variable
//! queries (written as recording rules), rule files under docker/, and
//! docker/prometheus.yml. The metric names themselves are checked against real scrapes
//! by the `metrics` checks and each dashboard's service test.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use skyhouse_testkit::dashboards;

use crate::util::{read, root};

/// Runs `promtool ARGS`; `(success, output)`. Panics when promtool is not installed.
fn promtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("promtool")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool (Debian package prometheus) cannot run: {e}; `just deps` installs it")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every PromQL expression of a dashboard, with where it is: panel targets' `expr`, and
/// query variables (`label_values(EXPR, label)` gives `EXPR`; `label_values(label)` and
/// datasource variables hold no PromQL).
fn dashboard_promql(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    if k == "templating" {
                        continue;
                    }
                    match (k.as_str(), v) {
                        ("expr", Value::String(e)) => out.push((format!("{path}.expr"), e.clone())),
                        _ => walk(v, &format!("{path}.{k}"), out),
                    }
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(dashboard, "", &mut out);
    let variables = dashboard["templating"]["list"].as_array().cloned();
    for var in variables.unwrap_or_default() {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("?");
        let query = match &var["query"] {
            Value::String(q) => q.clone(),
            Value::Object(q) => q["query"].as_str().unwrap_or_default().to_owned(),
            _ => var["definition"].as_str().unwrap_or_default().to_owned(),
        };
        let query = query.trim();
        let expr = if let Some(args) = query
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
        {
            // label_values(EXPR, label) or label_values(label).
            match args.rsplit_once(',') {
                Some((expr, _label)) => expr.trim().to_owned(),
                None => continue,
            }
        } else if let Some(expr) = query
            .strip_prefix("query_result(")
            .and_then(|a| a.strip_suffix(')'))
        {
            expr.to_owned()
        } else {
            query.to_owned()
        };
        out.push((format!("templating variable {name}"), expr));
    }
    out
}

/// `expr` with Grafana's variables (`$v`, `${v}`, `${v:format}`, `[[v]]`) replaced by
/// values Prometheus accepts: `5m` for the interval/range built-ins, `300` for their
/// `_s`/`_ms` forms, `x` for dashboard variables (they sit in label matchers).
fn substitute(expr: &str) -> String {
    fn value(name: &str) -> &'static str {
        let name = name.split(':').next().unwrap_or(name);
        if name.starts_with("__") && (name.ends_with("_ms") || name.ends_with("_s")) {
            "300"
        } else if name.starts_with("__") || name == "interval" {
            "5m"
        } else {
            "x"
        }
    }
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::with_capacity(expr.len());
    let mut rest = expr;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        if let Some(braced) = tail.strip_prefix("${") {
            let end = braced.find('}').expect("closing } of a ${variable}");
            out.push_str(value(&braced[..end]));
            rest = &braced[end + 1..];
        } else if let Some(bracketed) = tail
            .strip_prefix("[[")
            .filter(|b| b.find("]]").is_some_and(|e| b[..e].chars().all(ident)))
        {
            let end = bracketed.find("]]").expect("checked");
            out.push_str(value(&bracketed[..end]));
            rest = &bracketed[end + 2..];
        } else if let Some(plain) = tail.strip_prefix('$') {
            let end = plain.find(|c: char| !ident(c)).unwrap_or(plain.len());
            if end == 0 {
                out.push('$');
            } else {
                out.push_str(value(&plain[..end]));
            }
            rest = &plain[end..];
        } else {
            out.push('[');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    out
}

/// A rules file with one recording rule per expression (JSON strings are YAML scalars).
fn rules_file(exprs: &[(String, String)]) -> String {
    let mut yaml = String::from("groups:\n  - name: dashboards\n    rules:\n");
    for (i, (_, expr)) in exprs.iter().enumerate() {
        yaml.push_str(&format!(
            "      - record: skyhouse_dashboard_check_{i}\n        expr: {}\n",
            serde_json::to_string(expr).expect("a string")
        ));
    }
    yaml
}

fn temp_file(name: &str, text: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("skyhouse-ops-{}-{name}", std::process::id()));
    std::fs::write(&path, text).expect("write a temp file");
    path
}

/// `promtool check rules` on the expressions; on failure, its output with the
/// expressions numbered as in the rules.
fn check_rules(name: &str, exprs: &[(String, String)]) -> Result<(), String> {
    let path = temp_file(name, &rules_file(exprs));
    let (ok, output) = promtool(&["check", "rules", path.to_str().expect("UTF-8 temp path")]);
    let _ = std::fs::remove_file(&path);
    if ok {
        return Ok(());
    }
    let listing: Vec<String> = exprs
        .iter()
        .enumerate()
        .map(|(i, (at, e))| format!("  skyhouse_dashboard_check_{i} ({at}): {e}"))
        .collect();
    Err(format!("{output}\n{}", listing.join("\n")))
}

#[test]
fn grafana_variables_become_values_promtool_accepts() {
    assert_eq!(
        substitute(r#"sum(rate(m{instance=~"$instance"}[$__rate_interval]))"#),
        r#"sum(rate(m{instance=~"x"}[5m]))"#
    );
    assert_eq!(
        substitute(r#"rate(m{job="${job:regex}"}[[[interval]]]) / $__range_s"#),
        r#"rate(m{job="x"}[5m]) / 300"#
    );
    assert_eq!(substitute("m[5m] offset 1h"), "m[5m] offset 1h");
}

#[test]
fn promtool_rejects_a_broken_expression() {
    let broken = [(
        "test".to_owned(),
        "sum(rate(skyhouse_x_total[5m])".to_owned(),
    )];
    assert!(check_rules("broken.rules.yml", &broken).is_err());
    let fine = [(
        "test".to_owned(),
        "sum(rate(skyhouse_x_total[5m]))".to_owned(),
    )];
    check_rules("fine.rules.yml", &fine).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_dashboard_expression_parses() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dashboards::dir())
        .expect("dashboards/")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards/*.json");
    let mut problems = Vec::new();
    for file in &files {
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        let dashboard: Value = serde_json::from_str(&read(file)).expect("dashboard JSON");
        let exprs: Vec<(String, String)> = dashboard_promql(&dashboard)
            .into_iter()
            .map(|(at, e)| (at, substitute(&e)))
            .collect();
        if !exprs.iter().any(|(at, _)| at.ends_with(".expr")) {
            problems.push(format!("{name}: no panel expression found"));
            continue;
        }
        if let Err(e) = check_rules(&format!("{name}.rules.yml"), &exprs) {
            problems.push(format!("dashboards/{name}:\n{e}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
}

/// YAML files under `dir` (recursively).
fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yml" || e == "yaml") {
            out.push(path);
        }
    }
}

#[test]
fn docker_prometheus_config_and_rule_files_pass_promtool() {
    let docker = root().join("docker");
    let config = docker.join("prometheus.yml");
    let (ok, output) = promtool(&["check", "config", config.to_str().expect("UTF-8 path")]);
    assert!(ok, "promtool check config docker/prometheus.yml:\n{output}");
    // Alerting/recording rule files (a top-level `groups:`), if any: promtool checks
    // the ones prometheus.yml lists above, and every one here.
    let mut files = Vec::new();
    yaml_files(&docker, &mut files);
    for file in files {
        let text = read(&file);
        if !text.lines().any(|l| l.starts_with("groups:")) {
            continue;
        }
        let (ok, output) = promtool(&["check", "rules", file.to_str().expect("UTF-8 path")]);
        assert!(ok, "promtool check rules {}:\n{output}", file.display());
    }
}
