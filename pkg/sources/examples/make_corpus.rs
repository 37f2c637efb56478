//! Regenerate `testdata/corpus.frames` and `testdata/corpus.jsonl` from the real Jetstream
//! corpus kept in `pkg/atproto/testdata/jetstream` (see `testdata/PROVENANCE.md`):
//!
//! ```sh
//! cargo run -p skyhouse-sources --example make_corpus
//! ```
//!
//! `frames.bin.zst` there is zstd of `[u32 little-endian length][frame]` records, as
//! upstream captured them; the replay format here is big-endian, uncompressed.

use std::io::Read;
use std::path::Path;

/// Larger than the 819,376 bytes the corpus decompresses to; a bound, not a guess.
const MAX_CORPUS: u64 = 64 << 20;

fn main() -> std::io::Result<()> {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let corpus = here.join("../atproto/testdata/jetstream");
    let mut raw = Vec::new();
    zstd::stream::read::Decoder::new(std::fs::File::open(corpus.join("frames.bin.zst"))?)?
        .take(MAX_CORPUS)
        .read_to_end(&mut raw)?;
    let mut frames = Vec::new();
    let mut rest = raw.as_slice();
    while let Some((len, tail)) = rest.split_first_chunk::<4>() {
        let len = u32::from_le_bytes(*len) as usize;
        let Some((frame, tail)) = (len <= tail.len()).then(|| tail.split_at(len)) else {
            return Err(std::io::Error::other("frames.bin.zst: truncated frame"));
        };
        frames.push(frame);
        rest = tail;
    }
    let out = here.join("testdata/corpus.frames");
    let file = std::io::BufWriter::new(std::fs::File::create(&out)?);
    let bytes = skyhouse_sources::write_frame_file(file, &frames)?;
    println!("{}: {} frames, {bytes} bytes", out.display(), frames.len());
    let jsonl = here.join("testdata/corpus.jsonl");
    std::fs::copy(corpus.join("expected_v1.jsonl"), &jsonl)?;
    println!("{}: copied", jsonl.display());
    Ok(())
}
