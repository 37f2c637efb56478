//! Paths, the binary, `--help` parsing and env-file parsing shared by the checks.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Run `skyhouse` with an empty environment (so nothing set by the caller leaks in).
pub fn skyhouse(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_skyhouse"))
        .env_clear()
        .args(args)
        .output()
        .expect("run skyhouse")
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// One option as `--help` describes it.
#[derive(Debug, Clone)]
pub struct HelpArg {
    pub flag: String,
    /// The flag takes a value (`--x <X>`), as opposed to a switch.
    pub takes_value: bool,
    pub env: Option<String>,
    /// `[default: …]`, with `""` turned into the empty string.
    pub default: Option<String>,
}

/// The options of `skyhouse <subcommand…> --help`.
pub fn help_args(subcommand: &[&str]) -> Vec<HelpArg> {
    let mut args: Vec<&str> = subcommand.to_vec();
    args.push("--help");
    let out = skyhouse(&args);
    assert!(out.status.success(), "skyhouse {args:?}: {}", text(&out));
    let help = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut blocks: Vec<String> = Vec::new();
    for line in help.lines() {
        let t = line.trim_start();
        if t.starts_with('-') && line.starts_with("  ") {
            blocks.push(String::new());
        }
        if let Some(b) = blocks.last_mut() {
            b.push_str(line);
            b.push('\n');
        }
    }
    blocks
        .iter()
        .map(|b| {
            let first = b.lines().next().unwrap_or_default();
            let flag = first
                .split_whitespace()
                .find(|w| w.starts_with("--"))
                .unwrap_or_default()
                .trim_end_matches(',')
                .to_owned();
            let bracket = |tag: &str| {
                b.find(tag).map(|i| {
                    let rest = &b[i + tag.len()..];
                    rest[..rest.find(']').expect("closing ]")].to_owned()
                })
            };
            let env = bracket("[env: ").map(|e| e.split('=').next().unwrap_or("").to_owned());
            let default =
                bracket("[default: ").map(|d| if d == "\"\"" { String::new() } else { d });
            HelpArg {
                takes_value: first.contains('<'),
                flag,
                env,
                default,
            }
        })
        .collect()
}

/// One `NAME=value` line of an env file; `set` is false for a commented-out `# NAME=value`.
#[derive(Debug, Clone)]
pub struct EnvVar {
    pub name: String,
    pub value: String,
    pub set: bool,
    /// The comment line right above it.
    pub doc: Option<String>,
}

fn env_assignment(line: &str) -> Option<(String, String, bool)> {
    let (set, body) = match line.strip_prefix('#') {
        Some(rest) => (false, rest.trim_start()),
        None => (true, line),
    };
    let (name, value) = body.split_once('=')?;
    let ok = !name.is_empty()
        && name.starts_with(|c: char| c.is_ascii_uppercase())
        && name
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    ok.then(|| (name.to_owned(), value.to_owned(), set))
}

/// Every variable of one env file, in order.
pub fn env_file(path: &Path) -> Vec<EnvVar> {
    let file = path
        .file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned();
    let mut vars = Vec::new();
    let mut prev: Option<String> = None;
    for line in read(path).lines() {
        let line = line.trim_end();
        match env_assignment(line) {
            Some((name, value, set)) => {
                vars.push(EnvVar {
                    name,
                    value,
                    set,
                    doc: prev.take(),
                });
            }
            None => {
                prev = line
                    .strip_prefix('#')
                    .map(|c| c.trim().to_owned())
                    .filter(|c| !c.is_empty());
                assert!(
                    line.is_empty() || line.starts_with('#'),
                    "{file}: not a comment, blank or NAME=value line: {line:?}"
                );
            }
        }
    }
    vars
}

/// env/*.env by file name.
pub fn env_files() -> BTreeMap<String, Vec<EnvVar>> {
    let dir = root().join("env");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("env/") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "env") {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            out.insert(name, env_file(&path));
        }
    }
    assert!(!out.is_empty(), "no env/*.env");
    out
}

/// The variables an env file sets (active lines), to start a process with.
pub fn env_values(files: &[&str]) -> Vec<(String, String)> {
    let all = env_files();
    files
        .iter()
        .flat_map(|f| {
            all.get(*f)
                .unwrap_or_else(|| panic!("env/{f} missing"))
                .iter()
                .filter(|v| v.set)
                .map(|v| (v.name.clone(), v.value.clone()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Variables read outside clap (`env = "…"`), by the library that reads them.
pub fn library_envs() -> Vec<&'static str> {
    let telemetry = read(&root().join("pkg/telemetry/src/otel.rs"));
    assert!(
        telemetry.contains("EnvFilter::try_from_default_env"),
        "pkg/telemetry no longer reads RUST_LOG: update library_envs()"
    );
    vec!["RUST_LOG"]
}
