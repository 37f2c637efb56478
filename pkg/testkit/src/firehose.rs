//! Reading the PDS's firehose (`com.atproto.sync.subscribeRepos`) in tests.

use std::time::Duration;

use futures_util::StreamExt as _;
use skyhouse_atproto::frame::{Frame, FrameError};
use tokio_tungstenite::tungstenite::Message;

/// How long [`read_firehose`] waits for the frame it is told to stop at: a
/// guard against a test hanging forever, not a performance expectation.
const READ_TIMEOUT: Duration = Duration::from_secs(120);

/// One binary message of the firehose, raw and decoded.
#[derive(Debug, Clone)]
pub struct FirehoseMessage {
    /// The message as received (header + body DAG-CBOR), e.g. to write a
    /// `[u32 big-endian length][frame]` capture.
    pub bytes: Vec<u8>,
    /// The decoded frame.
    pub frame: Frame,
}

/// Why reading the firehose failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FirehoseError {
    /// The websocket did not connect or broke.
    #[error("firehose {url}: {source}")]
    WebSocket {
        /// The URL.
        url: String,
        /// What went wrong.
        source: tokio_tungstenite::tungstenite::Error,
    },
    /// The stream ended before the stop frame.
    #[error("firehose {url} closed after {frames} frames, before the frame waited for")]
    Closed {
        /// The URL.
        url: String,
        /// Frames read.
        frames: usize,
    },
    /// A frame did not decode.
    #[error("firehose {url}: frame {index}: {source}")]
    Decode {
        /// The URL.
        url: String,
        /// Its position in the stream.
        index: usize,
        /// Why.
        source: FrameError,
    },
    /// The stop frame did not come within the guard timeout.
    #[error(
        "firehose {url}: the frame waited for did not come within {secs} s ({frames} frames read)"
    )]
    Timeout {
        /// The URL.
        url: String,
        /// The guard timeout.
        secs: u64,
        /// Frames read.
        frames: usize,
    },
}

/// Reads `url` (a `ws://…/subscribeRepos?cursor=N` URL, see
/// [`Network::firehose_url`](crate::Network::firehose_url)) and returns every
/// message up to and including the first whose frame makes `stop` true.
pub async fn read_firehose(
    url: &str,
    mut stop: impl FnMut(&Frame) -> bool,
) -> Result<Vec<FirehoseMessage>, FirehoseError> {
    let ws_error = |source| FirehoseError::WebSocket {
        url: url.to_string(),
        source,
    };
    let (mut ws, _) = tokio_tungstenite::connect_async(url)
        .await
        .map_err(ws_error)?;
    let mut out = Vec::new();
    let read = async {
        while let Some(message) = ws.next().await {
            let bytes = match message.map_err(ws_error)? {
                Message::Binary(bytes) => bytes.to_vec(),
                Message::Close(_) => break,
                _ => continue,
            };
            let frame = Frame::decode(&bytes).map_err(|source| FirehoseError::Decode {
                url: url.to_string(),
                index: out.len(),
                source,
            })?;
            let done = stop(&frame);
            out.push(FirehoseMessage { bytes, frame });
            if done {
                return Ok(true);
            }
        }
        Ok(false)
    };
    match tokio::time::timeout(READ_TIMEOUT, read).await {
        Ok(Ok(true)) => Ok(out),
        Ok(Ok(false)) => Err(FirehoseError::Closed {
            url: url.to_string(),
            frames: out.len(),
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(FirehoseError::Timeout {
            url: url.to_string(),
            secs: READ_TIMEOUT.as_secs(),
            frames: out.len(),
        }),
    }
}

/// A `stop` for [`read_firehose`]: the `#commit` of `did` at revision `rev`
/// (e.g. [`Scenario::last`](crate::Scenario::last)).
pub fn commit_of(did: &str, rev: &str) -> impl FnMut(&Frame) -> bool {
    let (did, rev) = (did.to_string(), rev.to_string());
    move |frame| matches!(frame, Frame::Commit(c) if c.repo == did && c.rev == rev)
}
