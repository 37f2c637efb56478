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
    pub frame: Frame<'static>,
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
            let frame = Frame::decode(&bytes)
                .map_err(|source| FirehoseError::Decode {
                    url: url.to_string(),
                    index: out.len(),
                    source,
                })?
                .into_owned();
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

/// A `#commit` frame creating one `app.bsky.feed.like`, for scripted firehose servers
/// ([`crate::ws::Script::binary`]): sync 1.1 fields (`since`, `prevData`) so a decoder's
/// chain checks can be exercised. The commit is not really signed and its MST root is
/// a stand-in (the hash of the DID and rev): for decoders run without `--verify`, which
/// read the commit block and the record block, never the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LikeCommit {
    /// The frame's `seq`.
    pub seq: i64,
    /// The repository.
    pub did: String,
    /// The commit's rev, as a TID value (also the like's record key).
    pub rev: u64,
    /// The rev this commit follows (`since`).
    pub since: Option<u64>,
    /// The MST root before this commit (`prevData`).
    pub prev_data: Option<skyhouse_atproto::Cid>,
}

impl LikeCommit {
    /// The first commit seen of `did` (no `since`, no `prevData`).
    pub fn new(seq: i64, did: &str, rev: u64) -> LikeCommit {
        LikeCommit {
            seq,
            did: did.to_owned(),
            rev,
            since: None,
            prev_data: None,
        }
    }

    /// The commit right after `prev` of the same repository: `since` = its rev,
    /// `prevData` = its MST root; rev one more, at `seq`.
    pub fn next(&self, seq: i64) -> LikeCommit {
        LikeCommit {
            seq,
            did: self.did.clone(),
            rev: self.rev + 1,
            since: Some(self.rev),
            prev_data: Some(self.data()),
        }
    }

    /// The rev as a TID string.
    pub fn rev_tid(&self) -> String {
        tid(self.rev)
    }

    /// The MST root this commit claims (`data`).
    pub fn data(&self) -> skyhouse_atproto::Cid {
        use skyhouse_atproto::cid::CODEC_DAG_CBOR;
        let stand_in = format!("mst {} {}", self.did, self.rev);
        skyhouse_atproto::Cid::compute(CODEC_DAG_CBOR, stand_in.as_bytes())
    }

    /// The frame's bytes (header and body).
    pub fn frame(&self) -> Vec<u8> {
        use std::borrow::Cow;

        use skyhouse_atproto::cbor::{self, Map, Value};
        use skyhouse_atproto::cid::CODEC_DAG_CBOR;
        use skyhouse_atproto::commit::Commit;
        use skyhouse_atproto::Cid;

        let s = |v: &str| Value::String(Cow::Owned(v.to_owned()));
        let rev = self.rev_tid();
        let mut commit = match Commit::unsigned_value(&self.did, self.data(), &rev, None) {
            Value::Map(m) => m,
            _ => Map::new(),
        };
        commit.insert("sig", Value::Bytes(Cow::Owned(vec![0u8; 64])));
        let commit = cbor::encode(&Value::Map(commit));
        let commit_cid = Cid::compute(CODEC_DAG_CBOR, &commit);
        let mut subject = Map::new();
        subject.insert(
            "cid",
            s("bafyreiftot7eltsc3f6g4qktykmbv6jcmdmhcx5osscan6jpdxkpqcmcza"),
        );
        subject.insert(
            "uri",
            s("at://did:plc:r2zybk6op3ymzpz6jhqpkoy5/app.bsky.feed.post/3mpsjbtci2c2o"),
        );
        let mut like = Map::new();
        like.insert("$type", s("app.bsky.feed.like"));
        like.insert("createdAt", s("2026-07-04T14:38:08.999Z"));
        like.insert("subject", Value::Map(subject));
        let like = cbor::encode(&Value::Map(like));
        let like_cid = Cid::compute(CODEC_DAG_CBOR, &like);

        let mut car_header = Map::new();
        car_header.insert("roots", Value::Array(vec![Value::Link(commit_cid)]));
        car_header.insert("version", Value::Integer(1));
        let car_header = cbor::encode(&Value::Map(car_header));
        let mut car = Vec::new();
        varint(car_header.len(), &mut car);
        car.extend_from_slice(&car_header);
        for (cid, block) in [(&commit_cid, &commit), (&like_cid, &like)] {
            varint(cid.as_bytes().len() + block.len(), &mut car);
            car.extend_from_slice(cid.as_bytes());
            car.extend_from_slice(block);
        }

        let mut op = Map::new();
        op.insert("action", s("create"));
        op.insert("cid", Value::Link(like_cid));
        op.insert("path", s(&format!("app.bsky.feed.like/{rev}")));
        let mut body = Map::new();
        body.insert("seq", Value::Integer(self.seq));
        body.insert("repo", s(&self.did));
        body.insert("commit", Value::Link(commit_cid));
        body.insert("rev", s(&rev));
        body.insert("since", self.since.map_or(Value::Null, |r| s(&tid(r))));
        body.insert("blocks", Value::Bytes(Cow::Owned(car)));
        body.insert("ops", Value::Array(vec![Value::Map(op)]));
        body.insert("blobs", Value::Array(Vec::new()));
        if let Some(p) = self.prev_data {
            body.insert("prevData", Value::Link(p));
        }
        body.insert("time", s("2026-07-04T14:38:09.000Z"));
        body.insert("tooBig", Value::Bool(false));
        body.insert("rebase", Value::Bool(false));
        skyhouse_atproto::frame::encode_frame("#commit", &Value::Map(body))
    }
}

/// The TID string of `value` (a small value is fine: `2222222222222` is 0).
fn tid(value: u64) -> String {
    skyhouse_atproto::syntax::Tid::from_u64(value & (u64::MAX >> 1))
        .map(|t| t.as_str().to_owned())
        .unwrap_or_default()
}

/// An unsigned LEB128 varint, as CAR sections are prefixed.
fn varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}
