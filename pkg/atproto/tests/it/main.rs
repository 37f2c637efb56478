//! Integration tests for skyhouse-atproto against the official interop vectors
//! and real network captures in `testdata/` (see testdata/PROVENANCE.md).

mod car;
mod car_oracle;
mod cbor;
mod cbor_oracle;
mod crypto;
mod frame;
mod jetstream;
mod mst;
mod oracle;
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

/// Decode base64 (standard alphabet, padding optional).
pub fn b64(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        base64::engine::GeneralPurposeConfig::new()
            .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
    )
    .decode(s)
    .expect("base64")
}

/// Decode lower- or upper-case hex.
pub fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// A JSON array of test cases.
pub fn load(rel: &str) -> Vec<serde_json::Value> {
    serde_json::from_slice(&read(rel)).expect("json")
}

/// Every repository CAR in testdata and its expected listing.
pub fn repo_cars() -> Vec<(String, String)> {
    skyhouse_testkit::repo_cars(&testdata(""))
}

/// Decompress a zstd fixture, capped (clippy bans the uncapped decode_all).
pub fn unzstd(compressed: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    const CAP: u64 = 512 << 20;
    let mut out = Vec::new();
    zstd::stream::read::Decoder::new(compressed)?
        .take(CAP)
        .read_to_end(&mut out)?;
    Ok(out)
}
