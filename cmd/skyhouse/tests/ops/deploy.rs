//! docker/: compose.yaml, prometheus.yml, Grafana provisioning and the Dockerfile, checked
//! against each other and the workspace (there is no Docker engine to run them here).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_norway::Value;

use crate::env::code_envs;
use crate::util::{env_file, help_args, library_envs, read, root, skyhouse, text};

/// Services that exist (a `skyhouse` subcommand each, or infrastructure).
const SERVICES: &[&str] = &[
    "clickhouse",
    "redis",
    "migrate",
    "indexer",
    "backfill",
    "relay",
    "monitor",
    "feedgen",
    "search",
    "prometheus",
    "grafana",
];
/// Planned skyhouse services (SPEC §2) with their module in cmd/skyhouse/src: each joins
/// compose.yaml when its module lands, not before.
const PLANNED: &[&str] = &[];
/// SPEC §2: indexer metrics, search (+metrics), feedgen (+metrics), backfill metrics,
/// monitor, relay gRPC.
const SPEC_PORTS: &[u16] = &[8091, 8092, 8093, 8094, 8095, 8096, 8097, 50051];

fn docker() -> PathBuf {
    root().join("docker")
}

fn yaml(path: &Path) -> Value {
    let mut v: Value =
        serde_norway::from_str(&read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v.apply_merge()
        .unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
    v
}

fn str_list(v: &Value) -> Vec<String> {
    match v {
        Value::Null => vec![],
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => items
            .iter()
            .map(|i| i.as_str().expect("a string").to_owned())
            .collect(),
        other => panic!("expected a string or a list: {other:?}"),
    }
}

fn compose() -> Value {
    yaml(&docker().join("compose.yaml"))
}

/// `host:container` → the container port of a published port.
fn container_ports(service: &Value) -> Vec<u16> {
    str_list(&service["ports"])
        .iter()
        .map(|p| {
            p.rsplit(':')
                .next()
                .and_then(|c| c.split('/').next())
                .and_then(|c| c.parse().ok())
                .unwrap_or_else(|| panic!("port {p:?}"))
        })
        .collect()
}

#[test]
fn compose_has_the_services_that_exist_and_only_those() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services:");
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for s in SERVICES {
        assert!(names.contains(s), "compose.yaml lacks {s}");
    }
    for p in PLANNED {
        let built = root().join(format!("cmd/skyhouse/src/{p}.rs")).exists();
        assert_eq!(
            names.contains(p),
            built,
            "{p}: in compose.yaml = {}, cmd/skyhouse/src/{p}.rs exists = {built}: add the service \
             to docker/compose.yaml (and prometheus.yml, env/{p}.env) when it lands",
            names.contains(p)
        );
    }
    let extra: Vec<&&str> = names
        .iter()
        .filter(|n| !SERVICES.contains(n) && !PLANNED.contains(n))
        .collect();
    assert!(
        extra.is_empty(),
        "compose.yaml: unexpected services {extra:?}"
    );
    // The image the app services run is built from this workspace.
    for name in ["migrate", "indexer"] {
        let s = &c["services"][name];
        let build = &s["build"];
        let context = docker().join(build["context"].as_str().expect("build.context"));
        assert_eq!(
            context.canonicalize().expect("context"),
            root(),
            "{name}: build.context"
        );
        let dockerfile = context.join(build["dockerfile"].as_str().expect("build.dockerfile"));
        assert!(dockerfile.exists(), "{name}: {}", dockerfile.display());
        assert_eq!(
            s["image"], c["services"]["indexer"]["image"],
            "{name}: one image"
        );
    }
}

#[test]
fn compose_services_run_real_subcommands_with_documented_env() {
    let c = compose();
    let code = code_envs();
    let library = library_envs();
    for name in ["migrate", "indexer"] {
        let s = &c["services"][name];
        let command = str_list(&s["command"]);
        // The subcommand exists and is what we think it reads.
        let sub: Vec<&str> = command.iter().map(String::as_str).collect();
        let out = skyhouse(&[sub.as_slice(), &["--help"]].concat());
        assert!(
            out.status.success(),
            "{name}: skyhouse {sub:?} --help: {}",
            text(&out)
        );
        let reads: BTreeSet<String> = help_args(&sub).into_iter().filter_map(|a| a.env).collect();
        // Every env_file exists and holds only variables the code reads.
        let mut given: BTreeSet<String> = BTreeSet::new();
        for f in str_list(&s["env_file"]) {
            let path = docker().join(&f);
            assert!(path.exists(), "{name}: env_file {f} does not exist");
            for v in env_file(&path) {
                assert!(
                    code.contains_key(&v.name) || library.contains(&v.name.as_str()),
                    "{name}: {f} sets {}, read by nothing",
                    v.name
                );
                given.insert(v.name);
            }
        }
        // The service's env files document everything its subcommand reads.
        let undocumented: Vec<&String> = reads.difference(&given).collect();
        assert!(
            undocumented.is_empty(),
            "{name}: `skyhouse {sub:?}` reads {undocumented:?}, in none of its env_file entries"
        );
        for key in s["environment"]
            .as_mapping()
            .map(|m| m.keys().filter_map(Value::as_str).collect::<Vec<_>>())
            .unwrap_or_default()
        {
            assert!(
                code.contains_key(key),
                "{name}: environment {key} is read by nothing"
            );
        }
    }
    // The indexer waits for healthy servers and a finished migration.
    let deps = &c["services"]["indexer"]["depends_on"];
    for (dep, condition) in [
        ("clickhouse", "service_healthy"),
        ("redis", "service_healthy"),
        ("migrate", "service_completed_successfully"),
    ] {
        assert_eq!(
            deps[dep]["condition"].as_str(),
            Some(condition),
            "indexer depends_on {dep}"
        );
        if condition == "service_healthy" {
            assert!(
                !c["services"][dep]["healthcheck"]["test"].is_null(),
                "{dep} has no healthcheck"
            );
        }
    }
    assert_eq!(
        c["services"]["migrate"]["depends_on"]["clickhouse"]["condition"].as_str(),
        Some("service_healthy")
    );
    // Inside the network the app services reach ClickHouse and Redis by service name.
    let env = &c["services"]["indexer"]["environment"];
    let ch = env["CLICKHOUSE_ADDRESS"]
        .as_str()
        .expect("CLICKHOUSE_ADDRESS");
    assert!(ch.starts_with("http://clickhouse:8123"), "{ch}");
    let redis = env["REDIS_ADDRESS"].as_str().expect("REDIS_ADDRESS");
    assert!(redis.starts_with("redis://redis:6379"), "{redis}");
}

/// The indexer's metrics port as configured in env/indexer.env.
fn indexer_metrics_port() -> u16 {
    let vars = env_file(&root().join("env/indexer.env"));
    let addr = vars
        .iter()
        .find(|v| v.name == "INDEXER_METRICS_ADDR" && v.set)
        .expect("INDEXER_METRICS_ADDR in env/indexer.env");
    addr.value
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("a port")
}

#[test]
fn prometheus_scrapes_the_indexer_port() {
    let port = indexer_metrics_port();
    assert_eq!(port, 8091, "SPEC §2: indexer metrics on 8091");
    let c = compose();
    assert!(
        container_ports(&c["services"]["indexer"]).contains(&port),
        "indexer publishes {port}"
    );
    // compose mounts docker/prometheus.yml as the config.
    let prom = &c["services"]["prometheus"];
    let mount = str_list(&prom["volumes"])
        .into_iter()
        .find(|v| {
            v.ends_with("/etc/prometheus/prometheus.yml:ro")
                || v.ends_with("/etc/prometheus/prometheus.yml")
        })
        .expect("prometheus.yml mounted");
    let host = docker().join(mount.split(':').next().expect("host path"));
    assert_eq!(
        host.canonicalize().expect("prometheus.yml"),
        docker().join("prometheus.yml")
    );
    let config = yaml(&host);
    let targets: Vec<String> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .flat_map(|job| {
            job["static_configs"]
                .as_sequence()
                .into_iter()
                .flatten()
                .flat_map(|sc| str_list(&sc["targets"]))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        targets.contains(&format!("indexer:{port}")),
        "prometheus.yml targets: {targets:?}"
    );
    let prom_port = container_ports(prom);
    assert!(
        prom_port.contains(&9090),
        "prometheus publishes 9090: {prom_port:?}"
    );
}

#[test]
fn grafana_provisions_the_dashboards_and_prometheus() {
    let c = compose();
    let grafana = &c["services"]["grafana"];
    let volumes = str_list(&grafana["volumes"]);
    let mount = |container: &str| -> Option<(PathBuf, String)> {
        volumes.iter().find_map(|v| {
            let mut parts = v.split(':');
            let (host, target) = (parts.next()?, parts.next()?);
            (host.starts_with('.') && target.starts_with(container))
                .then(|| (docker().join(host), target.to_owned()))
        })
    };
    let (provisioning, _) = mount("/etc/grafana/provisioning").expect("provisioning mounted");
    let (dashboards, dashboards_target) =
        mount("/var/lib/grafana/dashboards").expect("dashboards mounted");
    assert_eq!(
        dashboards.canonicalize().expect("dashboards"),
        root().join("dashboards")
    );

    // Dashboard provider: reads where compose mounts dashboards/.
    let providers_dir = provisioning.join("dashboards");
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(&providers_dir).expect("provisioning/dashboards") {
        let p = yaml(&entry.expect("entry").path());
        for provider in p["providers"].as_sequence().expect("providers") {
            paths.push(
                provider["options"]["path"]
                    .as_str()
                    .expect("options.path")
                    .to_owned(),
            );
        }
    }
    assert!(
        paths.contains(&dashboards_target),
        "providers read {paths:?}, dashboards are at {dashboards_target}"
    );

    // Data source: the compose Prometheus, and the dashboards' variable selects it.
    let mut urls = Vec::new();
    for entry in
        std::fs::read_dir(provisioning.join("datasources")).expect("provisioning/datasources")
    {
        let d = yaml(&entry.expect("entry").path());
        for ds in d["datasources"].as_sequence().expect("datasources") {
            if ds["type"].as_str() == Some("prometheus") {
                urls.push(ds["url"].as_str().expect("url").to_owned());
            }
        }
    }
    assert_eq!(
        urls,
        ["http://prometheus:9090"],
        "one Prometheus data source"
    );
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"].as_str();
    for entry in std::fs::read_dir(root().join("dashboards")).expect("dashboards/") {
        let path = entry.expect("entry").path();
        let d: serde_json::Value = serde_json::from_str(&read(&path)).expect("dashboard JSON");
        let vars = d["templating"]["list"].as_array().expect("templating.list");
        let ds = vars
            .iter()
            .find(|v| v["type"] == "datasource")
            .unwrap_or_else(|| panic!("{}: no data source variable", path.display()));
        assert_eq!(ds["query"], "prometheus");
        let name = ds["name"].as_str().expect("name");
        let schema = d["schemaVersion"].as_u64().expect("schemaVersion");
        assert!((36..=41).contains(&schema), "schemaVersion {schema}");
        for panel in d["panels"].as_array().expect("panels") {
            if panel["type"] == "row" {
                continue;
            }
            assert_eq!(
                panel["datasource"]["uid"],
                format!("${{{name}}}"),
                "{}: {}",
                path.display(),
                panel["title"]
            );
        }
        let _ = home;
    }
    if let Some(home) = home {
        let file = home
            .strip_prefix(&format!("{dashboards_target}/"))
            .expect("home under the dashboards mount");
        assert!(
            root().join("dashboards").join(file).exists(),
            "home dashboard {home}"
        );
    }
}

#[test]
fn dockerfile_builds_the_workspace_binary() {
    let dockerfile = read(&docker().join("Dockerfile"));
    // Join continuation lines.
    let joined = dockerfile.replace("\\\n", " ");
    let lines: Vec<&str> = joined
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let froms: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .copied()
        .collect();
    assert!(froms.len() >= 2, "multi-stage: {froms:?}");
    assert!(froms[0].starts_with("FROM rust:"), "{}", froms[0]);
    let runtime = froms.last().expect("runtime stage");
    assert!(
        runtime.contains("debian:") && runtime.contains("-slim"),
        "{runtime}"
    );

    // COPY sources (not --from) exist in the workspace and cover what the build needs.
    let mut copied = BTreeSet::new();
    for l in lines
        .iter()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let words: Vec<&str> = l
            .split_whitespace()
            .skip(1)
            .filter(|w| !w.starts_with("--"))
            .collect();
        for src in &words[..words.len() - 1] {
            assert!(
                root().join(src).exists(),
                "COPY {src}: not in the workspace"
            );
            copied.insert(src.trim_end_matches('/').to_owned());
        }
    }
    for needed in ["Cargo.toml", "Cargo.lock", "cmd", "pkg", "migrations"] {
        assert!(
            copied.contains(needed),
            "the build stage does not copy {needed}: {copied:?}"
        );
    }
    // Every workspace member lives under a copied path.
    let manifest = read(&root().join("Cargo.toml"));
    let members = manifest
        .lines()
        .find(|l| l.starts_with("members"))
        .expect("workspace members");
    for m in members.split('"').skip(1).step_by(2) {
        let top = m.split('/').next().expect("member path");
        assert!(copied.contains(top), "workspace member {m} is not copied");
    }
    // Nothing copied is excluded by the Dockerfile's ignore file.
    let ignore = read(&docker().join("Dockerfile.dockerignore"));
    for pattern in ignore
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        assert!(
            !copied.contains(pattern.trim_end_matches('/')),
            "{pattern} is copied and ignored"
        );
    }

    // The build: the skyhouse package, release, locked; its binary lands in the runtime.
    let build = lines
        .iter()
        .find(|l| l.starts_with("RUN ") && l.contains("cargo build"))
        .expect("RUN cargo build");
    for flag in ["--release", "--locked", "-p skyhouse"] {
        assert!(build.contains(flag), "cargo build without {flag}: {build}");
    }
    let copy_bin = lines
        .iter()
        .find(|l| l.starts_with("COPY --from="))
        .expect("COPY --from=build");
    let words: Vec<&str> = copy_bin.split_whitespace().collect();
    let (src, dst) = (words[words.len() - 2], words[words.len() - 1]);
    assert!(
        build.contains(src),
        "{src} is not what the build step installs: {build}"
    );
    let entrypoint = lines
        .iter()
        .find(|l| l.starts_with("ENTRYPOINT"))
        .expect("ENTRYPOINT");
    assert!(entrypoint.contains(dst), "{entrypoint} vs {dst}");
    let user = lines
        .iter()
        .rev()
        .find(|l| l.starts_with("USER "))
        .expect("USER");
    assert!(!user.ends_with(" root") && !user.ends_with(" 0"), "{user}");
    let exposed: BTreeSet<u16> = lines
        .iter()
        .filter(|l| l.starts_with("EXPOSE "))
        .flat_map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(|p| p.parse::<u16>().expect("port"))
        })
        .collect();
    assert_eq!(
        exposed,
        SPEC_PORTS.iter().copied().collect(),
        "EXPOSE vs SPEC §2"
    );
}

/// The compression settings (`scripts/clickhouse/compression.xml`, ZSTD for merged parts) reach
/// every ClickHouse the project starts: Compose mounts the file into the server's `config.d/`,
/// `just up` and `just cluster-up` copy it there (the test kit's servers read it too, and
/// `pkg/testkit/tests/servers.rs` checks on a real server that it takes effect).
#[test]
fn every_clickhouse_the_project_starts_reads_the_compression_settings() {
    let file = "scripts/clickhouse/compression.xml";
    assert!(read(&root().join(file)).contains("<method>zstd</method>"));
    let mount = format!("../{file}:/etc/clickhouse-server/config.d/skyhouse-compression.xml:ro");
    let volumes = str_list(&compose()["services"]["clickhouse"]["volumes"]);
    assert!(
        volumes.contains(&mount),
        "compose mounts {mount}: {volumes:?}"
    );
    for script in ["scripts/local-servers.sh", "scripts/local-cluster.sh"] {
        let text = read(&root().join(script));
        let copies = text.lines().any(|l| {
            let l = l.trim();
            l.starts_with(&format!("cp {file} "))
                && l.ends_with("/config.d/skyhouse-compression.xml\"")
        });
        assert!(copies, "{script} copies {file} into the server's config.d/");
    }
}
