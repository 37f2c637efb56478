//! Write seed inputs for the fuzz targets from the real fixtures in testdata:
//! `cargo run -p skyhouse-atproto --example fuzz_seeds -- fuzz/corpus`.
//! Used by `just fuzz` when a target's corpus folder is empty.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

fn testdata(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata")
        .join(rel)
}

/// Write one seed for every target that reads this kind of input.
fn write(dir: &Path, kind: &str, name: &str, data: &[u8]) {
    let targets: &[&str] = match kind {
        "car" => &["car_mst", "car_oracle"],
        "cbor" => &["cbor", "cbor_oracle"],
        other => &[other],
    };
    for target in targets {
        let d = dir.join(target);
        fs::create_dir_all(&d).expect("create corpus dir");
        fs::write(d.join(name), data).expect("write seed");
    }
}

fn main() {
    let out = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let mut n = 0;
    // CARs: every real repository export.
    for dir in ["indigo", "repo-stream", "rsky", "jetstream", "skyfall"] {
        for e in fs::read_dir(testdata(dir)).expect("dir").flatten() {
            let p = e.path();
            let name = p.file_name().expect("name").to_string_lossy().to_string();
            if name.ends_with(".car") || name.ends_with(".repo") {
                let bytes = fs::read(&p).expect("read");
                if bytes.len() <= 64 << 10 {
                    write(&out, "car", &name, &bytes);
                    n += 1;
                }
            }
        }
    }
    // Frames: the 150 real relay frames, one file each.
    // Capped decompression (the fixture is ~1 MB; clippy bans uncapped).
    let mut raw = Vec::new();
    let compressed = fs::read(testdata("jetstream/frames.bin.zst")).expect("frames");
    zstd::stream::read::Decoder::new(compressed.as_slice())
        .expect("zstd")
        .take(64 << 20)
        .read_to_end(&mut raw)
        .expect("zstd");
    let mut pos = 0;
    let mut i = 0;
    while pos + 4 <= raw.len() {
        let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().expect("4 bytes")) as usize;
        pos += 4;
        let frame = &raw[pos..pos + len];
        write(&out, "frame", &format!("frame-{i:03}"), frame);
        // The body alone is a good DAG-CBOR seed too.
        if let Ok((_, used)) = skyhouse_atproto::cbor::decode_prefix(frame) {
            write(&out, "cbor", &format!("body-{i:03}"), &frame[used..]);
        }
        // A commit's blocks are a small CAR.
        if let Ok(skyhouse_atproto::frame::Frame::Commit(c)) =
            skyhouse_atproto::frame::Frame::decode(frame)
        {
            write(&out, "car", &format!("blocks-{i:03}"), &c.blocks);
            n += 1;
        }
        pos += len;
        i += 1;
        n += 2;
    }
    // Jetstream JSON lines.
    for rel in ["jetstream/expected_v1.jsonl", "jetstream/golden_v1.jsonl"] {
        let text = fs::read_to_string(testdata(rel)).expect("jsonl");
        for (j, line) in text.lines().enumerate() {
            write(
                &out,
                "jetstream_json",
                &format!("{}-{j:03}", rel.replace('/', "-")),
                line.as_bytes(),
            );
            n += 1;
        }
    }
    println!("wrote {n} seeds under {}", out.display());
}
