//! Integration tests for skyhouse-atproto against the official interop vectors
//! and real network captures in `testdata/` (see testdata/PROVENANCE.md).

mod car;
mod cbor;
mod crypto;
mod frame;
mod jetstream;
mod mst;
mod syntax;

/// Absolute path of a file under this crate's `testdata/`.
pub fn testdata(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// Bytes of a file under `testdata/`.
pub fn read(rel: &str) -> Vec<u8> {
    let p = testdata(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}
