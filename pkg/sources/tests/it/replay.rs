//! `file://` replay of the real corpus captures.

use skyhouse_atproto::frame::Frame;
use skyhouse_sources::{SourceError, SourceKind};

use crate::*;

fn file_url(path: &std::path::Path) -> String {
    format!("file://{}", path.display())
}

/// Replay `path` with `resume` and collect everything until `run` returns.
async fn replay(
    kind: SourceKind,
    path: &std::path::Path,
    resume: i64,
) -> (Vec<Message>, Result<(), SourceError>) {
    let mut src = start(config(kind, &[file_url(path)]), 8, resume);
    let mut got = Vec::new();
    while let Some(msg) = tokio::time::timeout(PATIENCE, src.rx.recv())
        .await
        .expect("replay ends")
    {
        got.push(msg);
    }
    let result = src.task.await.expect("no panic");
    (got, result)
}

/// testdata/corpus.frames holds the atproto corpus frames byte for byte (only the
/// framing changed), so it is the real capture.
#[test]
fn corpus_frames_fixture_matches_the_atproto_corpus() {
    let compressed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../atproto/testdata/jetstream/frames.bin.zst"
    ))
    .expect("atproto corpus");
    let mut raw = Vec::new();
    // Capped (the corpus is 819,376 bytes), as every zstd decode should be.
    std::io::Read::read_to_end(
        &mut std::io::Read::take(
            zstd::stream::read::Decoder::new(compressed.as_slice()).expect("zstd"),
            4 << 20,
        ),
        &mut raw,
    )
    .expect("zstd");
    let mut theirs = Vec::new();
    let mut pos = 0;
    while pos < raw.len() {
        let len = u32::from_le_bytes(raw[pos..pos + 4].try_into().expect("len")) as usize;
        theirs.push(raw[pos + 4..pos + 4 + len].to_vec());
        pos += 4 + len;
    }
    assert_eq!(corpus_frames(), theirs);
    let jsonl = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../atproto/testdata/jetstream/expected_v1.jsonl"
    ))
    .expect("atproto corpus jsonl");
    assert_eq!(
        std::fs::read(testdata("corpus.jsonl")).expect("jsonl"),
        jsonl
    );
}

#[test]
fn firehose_capture_replays_every_frame_in_order_and_counts_them() {
    with_metrics(|metrics| async move {
        let (got, result) = replay(SourceKind::Firehose, &testdata("corpus.frames"), 0).await;
        result.expect("Ok at end of file");
        let frames = corpus_frames();
        assert_eq!(frames.len(), 150);
        assert_eq!(got.len(), 150);
        for (msg, frame) in got.iter().zip(&frames) {
            assert_eq!(&msg.bytes[..], &frame[..]);
        }
        let seqs: Vec<i64> = got
            .iter()
            .map(|m| Frame::decode(&m.bytes).expect("frame").seq().expect("seq"))
            .collect();
        assert_eq!(seqs, (31527015322..=31527015471).collect::<Vec<i64>>());
        assert!(
            got[0].endpoint.starts_with("file://"),
            "{}",
            got[0].endpoint
        );
        assert_eq!(
            metrics.counter("skyhouse_source_messages_total", &[("kind", "firehose")]),
            150
        );
        let total: u64 = frames.iter().map(|f| f.len() as u64).sum();
        assert_eq!(metrics.counter("skyhouse_source_bytes_total", &[]), total);
    });
}

#[tokio::test]
async fn firehose_replay_skips_frames_up_to_the_resume_seq() {
    let resume = 31527015322 + 99; // the 100th frame
    let (got, result) = replay(SourceKind::Firehose, &testdata("corpus.frames"), resume).await;
    result.expect("Ok");
    let seqs: Vec<i64> = got
        .iter()
        .map(|m| Frame::decode(&m.bytes).expect("frame").seq().expect("seq"))
        .collect();
    assert_eq!(seqs, ((resume + 1)..=31527015471).collect::<Vec<i64>>());
}

#[tokio::test]
async fn jetstream_capture_replays_every_line() {
    let (got, result) = replay(SourceKind::Jetstream, &testdata("corpus.jsonl"), 0).await;
    result.expect("Ok");
    let lines = corpus_lines();
    assert_eq!(lines.len(), 152);
    let got: Vec<&[u8]> = got.iter().map(|m| &m.bytes[..]).collect();
    let want: Vec<&[u8]> = lines.iter().map(|l| l.as_bytes()).collect();
    assert_eq!(got, want);
}

/// Jetstream's output is only roughly ordered by time_us (the corpus has inversions), so
/// resume skips exactly the lines at or before the cursor, wherever they are.
#[tokio::test]
async fn jetstream_replay_skips_every_line_at_or_before_the_resume_time() {
    let lines = corpus_lines();
    let mut times: Vec<i64> = lines.iter().map(|l| time_us(l.as_bytes())).collect();
    let inversions = times.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(inversions > 0, "the test needs an out-of-order capture");
    times.sort_unstable();
    let resume = times[75];
    let want: Vec<&str> = lines
        .iter()
        .filter(|l| time_us(l.as_bytes()) > resume)
        .map(String::as_str)
        .collect();
    assert_eq!(want.len(), 152 - 76);
    let (got, result) = replay(SourceKind::Jetstream, &testdata("corpus.jsonl"), resume).await;
    result.expect("Ok");
    let got: Vec<&str> = got
        .iter()
        .map(|m| std::str::from_utf8(&m.bytes).expect("utf-8"))
        .collect();
    assert_eq!(got, want);
}

fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("skyhouse-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write temp file");
    path
}

#[tokio::test]
async fn written_frame_files_replay_and_a_truncated_one_is_an_error() {
    let frames = corpus_frames();
    let mut bytes = Vec::new();
    skyhouse_sources::write_frame_file(&mut bytes, &frames[..3]).expect("write");
    let whole = temp_file("three.frames", &bytes);
    let (got, result) = replay(SourceKind::Firehose, &whole, 0).await;
    result.expect("Ok");
    assert_eq!(got.len(), 3);

    // Cut inside the third frame: the two whole frames arrive, then the error says where.
    let cut = bytes.len() - 10;
    let truncated = temp_file("truncated.frames", &bytes[..cut]);
    let (got, result) = replay(SourceKind::Firehose, &truncated, 0).await;
    assert_eq!(got.len(), 2);
    let offset = (4 + frames[0].len() + 4 + frames[1].len()) as u64;
    match result {
        Err(SourceError::Truncated {
            index: 2,
            offset: o,
            ..
        }) if o == offset => {}
        other => panic!("expected a truncated frame 2 at {offset}: {other:?}"),
    }
    // Cut inside a length prefix.
    let in_prefix = temp_file("prefix.frames", &bytes[..4 + frames[0].len() + 2]);
    let (got, result) = replay(SourceKind::Firehose, &in_prefix, 0).await;
    assert_eq!(got.len(), 1);
    assert!(
        matches!(result, Err(SourceError::Truncated { index: 1, .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn oversized_records_in_a_capture_are_refused_with_the_limit_in_the_error() {
    let frames = corpus_frames();
    let mut bytes = Vec::new();
    skyhouse_sources::write_frame_file(&mut bytes, &frames[..2]).expect("write");
    let path = temp_file("big.frames", &bytes);
    let max = frames[0].len().max(frames[1].len()) - 1;
    let mut cfg = config(SourceKind::Firehose, &[file_url(&path)]);
    cfg.max_message_size = max;
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let err = skyhouse_sources::run(cfg, Default::default(), tx, Default::default())
        .await
        .expect_err("too large");
    assert!(
        matches!(err, SourceError::FileMessageTooLarge { .. }),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .contains(&format!("over max_message_size {max}")),
        "{err}"
    );

    // A line longer than the limit, even without a newline: refused, not buffered whole.
    let path = temp_file("long.jsonl", &vec![b'x'; 10_000]);
    let mut cfg = config(SourceKind::Jetstream, &[file_url(&path)]);
    cfg.max_message_size = 1000;
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let err = skyhouse_sources::run(cfg, Default::default(), tx, Default::default())
        .await
        .expect_err("too long");
    assert!(
        matches!(err, SourceError::FileMessageTooLarge { index: 0, .. }),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_missing_capture_is_an_error_naming_the_file() {
    let (tx, _rx) = tokio::sync::mpsc::channel(8);
    let cfg = config(
        SourceKind::Jetstream,
        &["file:///nonexistent/capture.jsonl".into()],
    );
    let err = skyhouse_sources::run(cfg, Default::default(), tx, Default::default())
        .await
        .expect_err("missing");
    assert!(
        err.to_string().starts_with("/nonexistent/capture.jsonl: "),
        "{err}"
    );
}

#[tokio::test]
async fn blank_lines_and_crlf_are_tolerated_in_jsonl() {
    let path = temp_file("crlf.jsonl", b"{\"time_us\":1}\r\n\n  \n{\"time_us\":2}");
    let (got, result) = replay(SourceKind::Jetstream, &path, 0).await;
    result.expect("Ok");
    let got: Vec<&[u8]> = got.iter().map(|m| &m.bytes[..]).collect();
    assert_eq!(got, [&b"{\"time_us\":1}"[..], b"{\"time_us\":2}"]);
}

#[tokio::test]
async fn messages_across_read_chunks_and_larger_than_one_replay_byte_for_byte() {
    // ~3.5 MB of frames (the capture is read 1 MiB at a time): the corpus
    // frames five times over, and one frame of 1.5 MB in the middle.
    let corpus = corpus_frames();
    let mut frames: Vec<Vec<u8>> = Vec::new();
    for round in 0..5 {
        frames.extend(corpus.iter().cloned());
        if round == 2 {
            frames.push((0..1_500_000u32).map(|i| (i % 251) as u8).collect());
        }
    }
    let mut bytes = Vec::new();
    skyhouse_sources::write_frame_file(&mut bytes, &frames).expect("write");
    assert!(bytes.len() > 3 << 20, "{}", bytes.len());
    let path = temp_file("chunks.frames", &bytes);
    let (got, result) = replay(SourceKind::Firehose, &path, 0).await;
    result.expect("Ok");
    let got: Vec<&[u8]> = got.iter().map(|m| &m.bytes[..]).collect();
    let want: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    assert!(got == want, "{} frames of {}", got.len(), want.len());

    // Lines of every length from 1 byte to 1.2 MB, `\n` and `\r\n`, blank
    // lines, the last one without a newline.
    let mut text = Vec::new();
    let mut lines = Vec::new();
    for i in 0..4_000usize {
        let len = match i {
            1_500 => 1_200_000,
            _ => 1 + (i * 7919) % 1_500,
        };
        let line: Vec<u8> = (0..len).map(|j| b'a' + ((i + j) % 26) as u8).collect();
        text.extend_from_slice(&line);
        text.extend_from_slice(if i % 3 == 0 { b"\r\n" } else { b"\n" });
        if i % 10 == 0 {
            text.extend_from_slice(b"  \n");
        }
        lines.push(line);
    }
    let last = b"{\"no\":\"newline\"}".to_vec();
    text.extend_from_slice(&last);
    lines.push(last);
    assert!(text.len() > 3 << 20, "{}", text.len());
    let path = temp_file("chunks.jsonl", &text);
    let (got, result) = replay(SourceKind::Jetstream, &path, 0).await;
    result.expect("Ok");
    let got: Vec<&[u8]> = got.iter().map(|m| &m.bytes[..]).collect();
    let want: Vec<&[u8]> = lines.iter().map(Vec::as_slice).collect();
    assert!(got == want, "{} lines of {}", got.len(), want.len());
}

/// A FIFO (a capture written while it is replayed) gives each message as
/// soon as its writer has written it, not once a whole read chunk is there.
#[tokio::test]
async fn a_fifo_replays_each_message_while_its_writer_is_still_open() {
    let dir = std::env::temp_dir().join(format!("skyhouse-sources-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let path = dir.join("live.fifo");
    let _ = std::fs::remove_file(&path);
    let out = std::process::Command::new("mkfifo")
        .arg(&path)
        .output()
        .expect("mkfifo");
    assert!(out.status.success(), "mkfifo failed");
    let mut src = start(config(SourceKind::Jetstream, &[file_url(&path)]), 8, 0);
    // Opening for writing waits for the reader: on a thread of its own.
    let writer_path = path.clone();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel::<Vec<u8>>();
    let writer = std::thread::spawn(move || {
        use std::io::Write;
        let mut fifo = std::fs::OpenOptions::new()
            .write(true)
            .open(&writer_path)
            .expect("open fifo");
        for line in lines_rx {
            fifo.write_all(&line).expect("write");
            fifo.flush().expect("flush");
        }
    });
    for i in 0..3 {
        let line = format!("{{\"n\":{i}}}\n");
        lines_tx.send(line.clone().into_bytes()).expect("writer");
        let msg = tokio::time::timeout(PATIENCE, src.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("message {i} not replayed while the FIFO is open"))
            .expect("a message");
        assert_eq!(&msg.bytes[..], line.trim_end().as_bytes());
    }
    drop(lines_tx);
    writer.join().expect("writer thread");
    let end = tokio::time::timeout(PATIENCE, src.rx.recv())
        .await
        .expect("ends");
    assert!(end.is_none(), "nothing after the writer closed");
    src.task.await.expect("no panic").expect("Ok");
    let _ = std::fs::remove_file(&path);
}
