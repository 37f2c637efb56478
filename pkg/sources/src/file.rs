//! `file://` replay of captures, and the writer of firehose frame files.
//!
//! Formats:
//! - Jetstream: JSON lines, one event per line (`\n` or `\r\n`; blank lines ignored), as
//!   Jetstream sends them.
//! - Firehose: `[u32 big-endian length][frame bytes]` repeated, one record per WebSocket
//!   binary message, nothing else in the file (no header: `cat a b > c` concatenates).

use std::io::{self, Write};
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use metrics::counter;
use serde::Deserialize;
use skyhouse_atproto::frame::Frame;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{SourceConfig, SourceKind};
use crate::error::SourceError;
use crate::{Connected, Message};

/// Read size for captures: 1 MiB, a few thousand Jetstream lines or a few
/// hundred firehose frames per read.
const READ_BUFFER: usize = 1 << 20;

/// Append one frame to a frame file: its length as a big-endian u32, then the bytes.
/// Fails with `InvalidInput` for a frame of 4 GiB or more.
pub fn write_frame<W: Write>(mut out: W, frame: &[u8]) -> io::Result<()> {
    let len = u32::try_from(frame.len()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("frame of {} bytes does not fit a u32 length", frame.len()),
        )
    })?;
    out.write_all(&len.to_be_bytes())?;
    out.write_all(frame)
}

/// Write `frames` as a firehose frame file (the `file://` replay format) and return the
/// number of bytes written. `out` is written in small pieces: give it a `BufWriter`.
pub fn write_frame_file<W, I>(mut out: W, frames: I) -> io::Result<u64>
where
    W: Write,
    I: IntoIterator,
    I::Item: AsRef<[u8]>,
{
    let mut written = 0u64;
    for frame in frames {
        let frame = frame.as_ref();
        write_frame(&mut out, frame)?;
        written += 4 + frame.len() as u64;
    }
    out.flush()?;
    Ok(written)
}

/// The frames of a frame file's bytes (`[u32 big-endian length][frame]` repeated, what
/// [`write_frame_file`] writes), borrowed in order. A length prefix or a frame cut short
/// at the end is an `InvalidData` error naming the frame and its offset.
pub fn split_frame_file(mut bytes: &[u8]) -> io::Result<Vec<&[u8]>> {
    let (mut frames, mut offset) = (Vec::new(), 0usize);
    while !bytes.is_empty() {
        let cut = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "frame {} at byte {offset}: {what} cut short at the end of the file",
                    frames.len()
                ),
            )
        };
        let (len, rest) = bytes
            .split_first_chunk::<4>()
            .ok_or_else(|| cut("its length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let frame = rest.get(..len).ok_or_else(|| cut("the frame"))?;
        frames.push(frame);
        bytes = &rest[len..];
        offset += 4 + len;
    }
    Ok(frames)
}

/// Replay the capture at `path` into `tx`. `from > 0` skips messages at or before it.
pub(crate) async fn replay(
    cfg: &SourceConfig,
    url: &str,
    path: &Path,
    from: i64,
    tx: &mpsc::Sender<Message>,
    shutdown: &CancellationToken,
    connected: &Connected,
) -> Result<(), SourceError> {
    let io_err = |source| SourceError::File {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io_err)?;
    let mut reader = Replay {
        input: Chunks::new(file),
        kind: cfg.kind,
        max: cfg.max_message_size,
        path,
        index: 0,
        offset: 0,
        skip_to: (from > 0).then_some(from),
    };
    let endpoint: Arc<str> = Arc::from(url);
    let messages = counter!(crate::metrics::MESSAGES, "kind" => cfg.kind.as_str());
    let bytes = counter!(crate::metrics::BYTES);
    tracing::info!(path = %path.display(), kind = %cfg.kind, from, "Replaying capture.");
    // A capture being read counts as a connected source, until its end.
    let _connected = connected.hold();
    loop {
        let next = tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            next = reader.next() => next?,
        };
        let Some(msg) = next else {
            tracing::info!(path = %path.display(), messages = reader.index, "Capture replayed.");
            return Ok(());
        };
        if reader.skip(&msg) {
            continue;
        }
        bytes.increment(msg.len() as u64);
        messages.increment(1);
        let msg = Message {
            bytes: msg,
            endpoint: endpoint.clone(),
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            sent = tx.send(msg) => if sent.is_err() { return Ok(()) },
        }
    }
}

/// A capture read in chunks on the blocking pool, straight into a buffer
/// that messages are cut from without a copy: one copy per byte (the
/// kernel's), where a buffered async reader made three.
struct Chunks {
    /// `None` once the end was read.
    file: Option<std::fs::File>,
    /// Read, not consumed yet.
    buf: Bytes,
    /// A regular file: a chunk is read whole into memory not zeroed first.
    /// Otherwise (a FIFO, a pipe, a terminal) one `read` per chunk, which
    /// returns what the writer has written so far instead of waiting for a
    /// whole chunk.
    regular: bool,
}

impl Chunks {
    fn new(file: std::fs::File) -> Self {
        let regular = file.metadata().is_ok_and(|m| m.is_file());
        Chunks {
            file: Some(file),
            buf: Bytes::new(),
            regular,
        }
    }

    /// Read another chunk onto the end of the buffer; `false` at the end of
    /// the file.
    async fn fill(&mut self) -> io::Result<bool> {
        let Some(mut file) = self.file.take() else {
            return Ok(false);
        };
        let rest = std::mem::take(&mut self.buf);
        let regular = self.regular;
        let (file, buf, read) = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            // A new buffer holding what was not consumed yet (usually part
            // of one message), then the chunk; the messages already cut
            // keep the previous buffer alive.
            let mut buf = Vec::with_capacity(rest.len() + READ_BUFFER);
            buf.extend_from_slice(&rest);
            drop(rest);
            let read = loop {
                let r = if regular {
                    // std reads a file into a vector's uninitialized room:
                    // no zeroing pass over the chunk.
                    (&mut file).take(READ_BUFFER as u64).read_to_end(&mut buf)
                } else {
                    let at = buf.len();
                    buf.resize(at + READ_BUFFER, 0);
                    let r = file.read(&mut buf[at..]);
                    buf.truncate(at + *r.as_ref().unwrap_or(&0));
                    r
                };
                match r {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    r => break r,
                }
            };
            (file, Bytes::from(buf), read)
        })
        .await
        .map_err(io::Error::other)?;
        self.buf = buf;
        match read? {
            0 => Ok(false),
            _ => {
                self.file = Some(file);
                Ok(true)
            }
        }
    }

    /// Make at least `n` bytes ready; `false` if the file ends first.
    async fn want(&mut self, n: usize) -> io::Result<bool> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// Reads one message at a time from a capture.
struct Replay<'a> {
    input: Chunks,
    kind: SourceKind,
    max: usize,
    path: &'a Path,
    /// Messages read so far.
    index: u64,
    /// Bytes consumed so far.
    offset: u64,
    /// The resume position while skipping; `None` once past it (or from the start).
    skip_to: Option<i64>,
}

/// Just the position of a Jetstream event; serde skips the rest without building it.
#[derive(Deserialize)]
struct TimeUs {
    time_us: i64,
}

impl Replay<'_> {
    async fn next(&mut self) -> Result<Option<Bytes>, SourceError> {
        match self.kind {
            SourceKind::Jetstream => self.next_line().await,
            SourceKind::Firehose => self.next_frame().await,
        }
    }

    /// The next non-blank line, without its line ending.
    async fn next_line(&mut self) -> Result<Option<Bytes>, SourceError> {
        loop {
            let start = self.offset;
            // Look for the newline in what is read, reading more while there
            // is none, up to the size cap (+ "\r\n"): a newline-free file is
            // not buffered whole.
            let mut searched = 0;
            let end = loop {
                if let Some(i) = memchr::memchr(b'\n', &self.input.buf[searched..]) {
                    break Some(searched + i);
                }
                searched = self.input.buf.len();
                if searched > self.max + 2 {
                    return Err(SourceError::FileMessageTooLarge {
                        path: self.path.to_path_buf(),
                        index: self.index,
                        offset: start,
                        size: searched as u64, // at least: the rest was not read
                        max: self.max,
                    });
                }
                if !self.input.fill().await.map_err(|e| self.io_error(e))? {
                    break None;
                }
            };
            let taken = match end {
                Some(i) => i + 1,
                None if self.input.buf.is_empty() => return Ok(None),
                None => self.input.buf.len(),
            };
            let mut line = self.input.buf.split_to(taken);
            self.offset += taken as u64;
            if line.last() == Some(&b'\n') {
                line.truncate(line.len() - 1);
                if line.last() == Some(&b'\r') {
                    line.truncate(line.len() - 1);
                }
            }
            if line.len() > self.max {
                return Err(SourceError::FileMessageTooLarge {
                    path: self.path.to_path_buf(),
                    index: self.index,
                    offset: start,
                    size: line.len() as u64,
                    max: self.max,
                });
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            self.index += 1;
            return Ok(Some(line));
        }
    }

    /// The next `[u32 BE length][frame]` record.
    async fn next_frame(&mut self) -> Result<Option<Bytes>, SourceError> {
        let start = self.offset;
        if !self.input.want(4).await.map_err(|e| self.io_error(e))? {
            if self.input.buf.is_empty() {
                return Ok(None);
            }
            return Err(self.truncated(start));
        }
        let len = u32::from_be_bytes([
            self.input.buf[0],
            self.input.buf[1],
            self.input.buf[2],
            self.input.buf[3],
        ]) as usize;
        if len > self.max {
            return Err(SourceError::FileMessageTooLarge {
                path: self.path.to_path_buf(),
                index: self.index,
                offset: start,
                size: len as u64,
                max: self.max,
            });
        }
        if !self
            .input
            .want(4 + len)
            .await
            .map_err(|e| self.io_error(e))?
        {
            return Err(self.truncated(start));
        }
        let mut frame = self.input.buf.split_to(4 + len);
        let frame = frame.split_off(4);
        self.offset += 4 + len as u64;
        self.index += 1;
        Ok(Some(frame))
    }

    /// Whether `msg` is at or before the resume position.
    fn skip(&mut self, msg: &[u8]) -> bool {
        let Some(from) = self.skip_to else {
            return false;
        };
        match self.kind {
            // Every line is checked: Jetstream's order is only roughly by time_us.
            SourceKind::Jetstream => serde_json::from_slice::<TimeUs>(msg)
                .map(|t| t.time_us <= from)
                .unwrap_or(false),
            // A relay's seq only grows: stop checking after the first frame past `from`.
            SourceKind::Firehose => match Frame::decode(msg).ok().and_then(|f| f.seq()) {
                Some(seq) if seq <= from => true,
                Some(_) => {
                    self.skip_to = None;
                    false
                }
                None => false,
            },
        }
    }

    fn truncated(&self, offset: u64) -> SourceError {
        SourceError::Truncated {
            path: self.path.to_path_buf(),
            index: self.index,
            offset,
        }
    }

    fn io_error(&self, source: io::Error) -> SourceError {
        SourceError::File {
            path: self.path.to_path_buf(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_file_layout_is_big_endian_length_then_bytes() {
        let mut out = Vec::new();
        let n = write_frame_file(&mut out, [&b"ab"[..], b"", b"xyz"]).expect("write");
        assert_eq!(n, 4 + 2 + 4 + 4 + 3);
        assert_eq!(out, b"\0\0\0\x02ab\0\0\0\0\0\0\0\x03xyz");
    }

    #[test]
    fn a_frame_file_splits_back_into_its_frames_or_names_the_cut_one() {
        let mut out = Vec::new();
        write_frame_file(&mut out, [&b"ab"[..], b"", b"xyz"]).expect("write");
        let frames = split_frame_file(&out).expect("whole");
        assert_eq!(frames, [&b"ab"[..], b"", b"xyz"]);
        assert!(split_frame_file(&[]).expect("empty").is_empty());
        // Cut inside the last frame, then inside its length prefix.
        for (cut, what) in [(out.len() - 1, "the frame"), (out.len() - 5, "its length")] {
            let err = split_frame_file(&out[..cut]).expect_err("cut short");
            assert_eq!(err.kind(), io::ErrorKind::InvalidData);
            assert_eq!(
                err.to_string(),
                format!("frame 2 at byte 10: {what} cut short at the end of the file")
            );
        }
    }
}
