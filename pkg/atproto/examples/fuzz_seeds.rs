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
        "jetstream_json" => &["jetstream_json", "jetstream_one_pass"],
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
    // DNS responses to a `_atproto` TXT query (dns_response): an answer, a
    // CNAME then the answer, NXDOMAIN.
    for (name, bytes) in dns_seeds() {
        write(&out, "dns_response", name, &bytes);
        n += 1;
    }
    println!("wrote {n} seeds under {}", out.display());
}

/// Hand-built DNS responses (id 0x1234, question `_atproto.alice.example.com` TXT).
fn dns_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let question = b"\x08_atproto\x05alice\x07example\x03com\x00\x00\x10\x00\x01";
    let txt = |owner: &[u8], text: &[u8]| {
        let mut r = owner.to_vec();
        r.extend_from_slice(&[0, 16, 0, 1, 0, 0, 0, 60]);
        r.extend_from_slice(&((text.len() + 1) as u16).to_be_bytes());
        r.push(text.len() as u8);
        r.extend_from_slice(text);
        r
    };
    let header = |flags: u16, answers: u16| {
        let mut h = vec![0x12, 0x34];
        h.extend_from_slice(&flags.to_be_bytes());
        h.extend_from_slice(&[0, 1]);
        h.extend_from_slice(&answers.to_be_bytes());
        h.extend_from_slice(&[0, 0, 0, 0]);
        h.extend_from_slice(question);
        h
    };
    let did = b"did=did:plc:ewvi7nxzyoun6zhxrhs64oiz";
    let mut answer = header(0x8180, 1);
    answer.extend(txt(&[0xC0, 12], did));
    // The CNAME's data (`txt.` + a pointer to `alice.example.com` at 21)
    // starts at 56; the TXT record's owner points there.
    let mut cname = header(0x8180, 2);
    cname.extend_from_slice(&[0xC0, 12, 0, 5, 0, 1, 0, 0, 0, 60, 0, 6]);
    cname.extend_from_slice(b"\x03txt\xC0\x15");
    cname.extend(txt(&[0xC0, 56], did));
    let nxdomain = header(0x8183, 0);
    vec![("answer", answer), ("cname", cname), ("nxdomain", nxdomain)]
}
