//! env/*.env and README.md against the variables the code reads.

use std::collections::{BTreeMap, BTreeSet};

use crate::util::{env_files, help_args, library_envs, read, root};

/// Every `env = "NAME"` of the binary's clap arguments, with the file declaring it.
pub fn code_envs() -> BTreeMap<String, String> {
    let dir = root().join("cmd/skyhouse/src");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("cmd/skyhouse/src") {
        let path = entry.expect("entry").path();
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let src = read(&path);
        for (i, _) in src.match_indices("env = \"") {
            let rest = &src[i + "env = \"".len()..];
            let name = &rest[..rest.find('"').expect("closing quote")];
            out.insert(
                name.to_owned(),
                path.file_name()
                    .expect("name")
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
    assert!(
        out.len() > 10,
        "found only {out:?}: did the clap style change?"
    );
    out
}

/// The subcommands whose flags read the environment.
pub const SUBCOMMANDS: &[&[&str]] = &[
    &["indexer"],
    &["migrate", "up"],
    &["cursor", "get"],
    &["backfill", "enqueue"],
    &["backfill", "work"],
    &["backfill", "status"],
    &["relay"],
    &["monitor"],
    &["feedgen"],
    &["feedgen", "publish"],
    &["search"],
];

#[test]
fn every_env_file_variable_is_read_by_the_code_and_the_reverse() {
    let code = code_envs();
    let library = library_envs();
    let files = env_files();
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, vars) in &files {
        for v in vars {
            if let Some(other) = seen.insert(v.name.clone(), file.clone()) {
                problems.push(format!("{} is in both env/{other} and env/{file}", v.name));
            }
            if !code.contains_key(&v.name) && !library.contains(&v.name.as_str()) {
                problems.push(format!(
                    "env/{file}: {} is read by nothing (no `env = \"{}\"` in cmd/skyhouse/src)",
                    v.name, v.name
                ));
            }
            if v.doc.is_none() {
                problems.push(format!(
                    "env/{file}: {} has no one-line comment above it",
                    v.name
                ));
            }
        }
    }
    for (name, src) in &code {
        if !seen.contains_key(name) {
            problems.push(format!(
                "{name} (cmd/skyhouse/src/{src}) is not documented in env/*.env"
            ));
        }
    }
    for name in &library {
        if !seen.contains_key(*name) {
            problems.push(format!("{name} is not documented in env/*.env"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn env_files_hold_the_defaults_of_the_code() {
    let mut by_env: BTreeMap<String, crate::util::HelpArg> = BTreeMap::new();
    for sub in SUBCOMMANDS {
        for arg in help_args(sub) {
            if let Some(env) = &arg.env {
                by_env.insert(env.clone(), arg.clone());
            }
        }
    }
    // Every clap env of the source is visible in some --help (no subcommand forgotten here).
    let code: BTreeSet<String> = code_envs().into_keys().collect();
    let helped: BTreeSet<String> = by_env.keys().cloned().collect();
    assert_eq!(
        code, helped,
        "`env = …` in the source vs the [env: …] of {SUBCOMMANDS:?} --help"
    );
    let mut problems = Vec::new();
    for (file, vars) in env_files() {
        for v in vars {
            let Some(arg) = by_env.get(&v.name) else {
                continue; // read by a library (RUST_LOG): no clap default
            };
            match (&arg.default, arg.takes_value, v.set) {
                (Some(d), _, true) if *d == v.value => {}
                (Some(d), _, _) => problems.push(format!(
                    "env/{file}: {}={:?}{} but {} defaults to {d:?}",
                    v.name,
                    v.value,
                    if v.set { "" } else { " (commented out)" },
                    arg.flag
                )),
                // A switch: off unless set.
                (None, false, true) if v.value == "false" => {}
                // No default: documented commented out.
                (None, true, false) => {}
                (None, _, _) => problems.push(format!(
                    "env/{file}: {} has no default in the code ({}): comment the line out{}",
                    v.name,
                    arg.flag,
                    if arg.takes_value {
                        ""
                    } else {
                        " or set it to false"
                    }
                )),
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn readme_documents_every_variable_and_env_file() {
    let readme = read(&root().join("README.md"));
    let mut missing: Vec<String> = code_envs()
        .into_keys()
        .chain(library_envs().into_iter().map(str::to_owned))
        .filter(|name| !readme.contains(&format!("`{name}`")))
        .collect();
    for file in env_files().keys() {
        if !readme.contains(&format!("env/{file}")) {
            missing.push(format!("env/{file}"));
        }
    }
    assert!(
        missing.is_empty(),
        "README.md does not mention: {missing:?}"
    );
}
