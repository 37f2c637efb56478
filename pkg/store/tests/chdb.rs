//! The migrations and the store's queries on current ClickHouse: runs
//! `scripts/chdb_check.py` (chdb, ClickHouse in-process) from the workspace
//! root. The other tests cover ClickHouse 18.16; this one covers 26.x, so a
//! missing chdb is a failure, never a skip.

use std::path::PathBuf;
use std::process::Command;

fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().expect("workspace root")
}

#[test]
fn migrations_and_queries_on_current_clickhouse() {
    let root = workspace_root();

    let probe = Command::new("python3")
        .args(["-c", "import chdb"])
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("cannot run python3 (needed for chdb): {e}"));
    assert!(
        probe.status.success(),
        "chdb-core is not installed: run `just deps`\n(python3 -c 'import chdb': {})",
        String::from_utf8_lossy(&probe.stderr).trim()
    );

    // Every statement the store sends, rendered as it sends them, for the
    // database the checker migrates.
    let statements =
        std::env::temp_dir().join(format!("skyhouse-store-catalog-{}.sql", std::process::id()));
    let catalog =
        skyhouse_store::sql::catalog_file(skyhouse_store::sql::Db::single("skyhouse_chdb_check"))
            .expect("catalog");
    std::fs::write(&statements, catalog).expect("write the catalog");
    let out = Command::new("python3")
        .args([
            "scripts/chdb_check.py",
            "--queries",
            "pkg/store/queries/check.sql",
            "--queries",
            "pkg/store/queries/store.sql",
            "--semantics",
            "pkg/store/queries/counts.sql",
            "--statements",
        ])
        .arg(&statements)
        .current_dir(&root)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run scripts/chdb_check.py");
    let _ = std::fs::remove_file(&statements);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{}", stdout.trim_end());
    if !stderr.trim().is_empty() {
        eprintln!("{}", stderr.trim_end());
    }
    assert!(
        out.status.success(),
        "scripts/chdb_check.py failed ({}):\n{}\n{}",
        out.status,
        stdout.trim_end(),
        stderr.trim_end()
    );
}
