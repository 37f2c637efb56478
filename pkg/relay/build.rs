//! Generate the gRPC code of proto/skyhouse/relay/v1/relay.proto with protox (a
//! pure-Rust protobuf compiler: no protoc needed) and tonic-prost-build.
//!
//! Two passes over the same descriptors:
//! - `client/`: the message types and the client, what users of the crate see.
//! - `server/`: the server trait, with `OperationBatch` mapped to the relay's
//!   pre-encoded batch (each operation is encoded once when published, not
//!   once per client) and every other message to the client pass's types.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest.join("../../proto");
    let proto = "skyhouse/relay/v1/relay.proto";
    println!("cargo:rerun-if-changed={}", proto_dir.join(proto).display());
    let fds = protox::compile([proto], [&proto_dir])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    for dir in ["client", "server"] {
        std::fs::create_dir_all(out.join(dir))?;
    }
    tonic_prost_build::configure()
        .build_server(false)
        .out_dir(out.join("client"))
        .compile_fds(fds.clone())?;
    tonic_prost_build::configure()
        .build_client(false)
        .extern_path(".skyhouse.relay.v1", "crate::pb")
        .extern_path(
            ".skyhouse.relay.v1.OperationBatch",
            "crate::wire::EncodedBatch",
        )
        .out_dir(out.join("server"))
        .compile_fds(fds)?;
    Ok(())
}
