//! Embed every file of `migrations/` into the binary, so `skyhouse migrate`
//! works wherever the binary is copied.
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // The manifest directory when the script runs, not when it was
    // compiled: a target directory shared by (or copied from) another
    // checkout reuses the compiled script, which must still read this
    // checkout's migrations.
    let manifest = std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR");
    let dir = Path::new(&manifest).join("../../migrations");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("migrations/ directory")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".sql"))
        .collect();
    names.sort();
    let mut out = String::from("/// Every migration file, embedded at build time: (file name, contents).\npub static EMBEDDED: &[(&str, &str)] = &[\n");
    for n in &names {
        println!("cargo:rerun-if-changed={}", dir.join(n).display());
        let path = dir.join(n).canonicalize().expect("canonical path");
        writeln!(
            out,
            "    ({n:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .expect("write");
    }
    out.push_str("];\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("migrations.rs");
    std::fs::write(dest, out).expect("write migrations.rs");
}
