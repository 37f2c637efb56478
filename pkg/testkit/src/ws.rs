//! A scripted WebSocket server on `127.0.0.1:0`, for testing WebSocket clients against a
//! real socket: reconnects, failover, silence, slow consumers.
//!
//! A [`Script`] is a list of steps. `close()`, `drop_connection()`, `cut_binary()` and `silent()` end the
//! current connection's part; the steps after them are played to the next connection.
//! When a connection's part ends without one of those (or when there are more connections
//! than parts), the server keeps the connection open and says nothing until the client
//! leaves.
//!
//! ```no_run
//! # async fn example() {
//! use skyhouse_testkit::ws::{serve, Script};
//!
//! let server = serve(Script::new().text("a").close().text("b")).await;
//! // connect a client to server.url() ...
//! server.wait_connections(2).await;
//! assert_eq!(server.requests().len(), 2); // what each connection asked for
//! # }
//! ```
//!
//! Needs a tokio runtime with time and IO (any flavour). Dropping the [`WsServer`] stops it
//! and every connection it holds.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

/// How long a scripted close waits for the client's half of the handshake: 5 s.
const CLOSE_WAIT: Duration = Duration::from_secs(5);

/// What the server does, step by step. Build with the chained methods.
#[derive(Debug, Clone, Default)]
pub struct Script {
    steps: Vec<Step>,
}

#[derive(Debug, Clone)]
enum Step {
    Send(Message),
    Repeat(Message, usize),
    Wait(Duration),
    Gate(Arc<Notify>),
    Close,
    Drop,
    Cut(Message, usize),
    Silent,
    Unresponsive,
}

impl Script {
    /// An empty script: every connection is held open, silent.
    pub fn new() -> Self {
        Script::default()
    }

    /// Send a text message.
    pub fn text(mut self, text: impl Into<String>) -> Self {
        self.steps.push(Step::Send(Message::text(text.into())));
        self
    }

    /// Send each non-empty line of `jsonl` as its own text message.
    pub fn send_jsonl(mut self, jsonl: &str) -> Self {
        for line in jsonl.lines().filter(|l| !l.trim().is_empty()) {
            self.steps.push(Step::Send(Message::text(line)));
        }
        self
    }

    /// Send a binary message.
    pub fn binary(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.steps.push(Step::Send(Message::binary(bytes.into())));
        self
    }

    /// Send a firehose `#error` frame (`op = -1`) named `error`, e.g. `FutureCursor` or
    /// `ConsumerTooSlow`. A server closes the stream after one: follow with `close()`.
    pub fn error_frame(self, error: &str, message: Option<&str>) -> Self {
        self.binary(skyhouse_atproto::frame::encode_error_frame(error, message))
    }

    /// Send the same binary message `times` times (one copy in memory, for floods).
    pub fn repeat_binary(mut self, bytes: impl Into<Vec<u8>>, times: usize) -> Self {
        self.steps
            .push(Step::Repeat(Message::binary(bytes.into()), times));
        self
    }

    /// Send a ping (the client's pongs are counted by [`WsServer::pongs`]).
    pub fn ping(mut self, payload: impl Into<Vec<u8>>) -> Self {
        self.steps
            .push(Step::Send(Message::Ping(payload.into().into())));
        self
    }

    /// Do nothing for `duration` (real or paused tokio time).
    pub fn wait(mut self, duration: Duration) -> Self {
        self.steps.push(Step::Wait(duration));
        self
    }

    /// Wait until the test calls `gate.notify_one()` (a notification sent before the
    /// server gets here is kept), to order server steps after client-side effects.
    pub fn wait_for(mut self, gate: Arc<Notify>) -> Self {
        self.steps.push(Step::Gate(gate));
        self
    }

    /// Close with code 1000 and wait (up to 5 s) for the client's close; the next steps
    /// go to the next connection.
    pub fn close(mut self) -> Self {
        self.steps.push(Step::Close);
        self
    }

    /// Drop the TCP connection without a close frame; the next steps go to the next
    /// connection.
    pub fn drop_connection(mut self) -> Self {
        self.steps.push(Step::Drop);
        self
    }

    /// Start sending `bytes` as a binary message but stop after `keep` bytes of its
    /// WebSocket frame (header included) and drop the TCP connection: the client sees a
    /// frame cut in the middle. The next steps go to the next connection.
    pub fn cut_binary(mut self, bytes: impl Into<Vec<u8>>, keep: usize) -> Self {
        self.steps
            .push(Step::Cut(Message::binary(bytes.into()), keep));
        self
    }

    /// Say nothing until the client goes away; the next steps go to the next connection.
    pub fn silent(mut self) -> Self {
        self.steps.push(Step::Silent);
        self
    }

    /// Stop reading and writing altogether (no pongs either: a dead peer behind
    /// a half-open TCP connection) until the server is dropped; the next steps go
    /// to the next connection.
    pub fn unresponsive(mut self) -> Self {
        self.steps.push(Step::Unresponsive);
        self
    }

    /// Split into one part per connection; each part ends with its terminal step (a part
    /// without one behaves as `silent`).
    fn parts(self) -> Vec<Vec<Step>> {
        let mut parts = vec![Vec::new()];
        for step in self.steps {
            let terminal = matches!(
                step,
                Step::Close | Step::Drop | Step::Cut(..) | Step::Silent | Step::Unresponsive
            );
            parts.last_mut().expect("non-empty").push(step);
            if terminal {
                parts.push(Vec::new());
            }
        }
        parts
    }
}

#[derive(Debug, Default)]
struct State {
    requests: Mutex<Vec<String>>,
    sent: AtomicU64,
    pongs: AtomicU64,
    pings: AtomicU64,
}

/// A running scripted server. Dropping it stops it.
#[derive(Debug)]
pub struct WsServer {
    addr: SocketAddr,
    state: Arc<State>,
    connections: watch::Receiver<usize>,
    task: JoinHandle<()>,
}

impl WsServer {
    /// `ws://127.0.0.1:PORT` (no path).
    pub fn url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The request URI (path and query) of each completed handshake, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().expect("requests lock").clone()
    }

    /// Completed handshakes so far.
    pub fn connections(&self) -> usize {
        *self.connections.borrow()
    }

    /// Wait until at least `n` handshakes have completed (then [`requests`](Self::requests)
    /// has at least `n` entries).
    pub async fn wait_connections(&self, n: usize) {
        let mut rx = self.connections.clone();
        rx.wait_for(|c| *c >= n).await.expect("server task alive");
    }

    /// Messages the server has finished writing to its sockets (a write that blocks
    /// because the client does not read is not counted until it completes).
    pub fn sent(&self) -> u64 {
        self.state.sent.load(Ordering::SeqCst)
    }

    /// Pongs received from clients.
    pub fn pongs(&self) -> u64 {
        self.state.pongs.load(Ordering::SeqCst)
    }

    /// Pings received from clients (each is answered with a pong).
    pub fn pings(&self) -> u64 {
        self.state.pings.load(Ordering::SeqCst)
    }
}

impl Drop for WsServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start a server playing `script` on `127.0.0.1:0`.
pub async fn serve(script: Script) -> WsServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    let state = Arc::new(State::default());
    let (count_tx, connections) = watch::channel(0usize);
    let task = tokio::spawn(accept_loop(
        listener,
        script.parts(),
        state.clone(),
        count_tx,
    ));
    WsServer {
        addr,
        state,
        connections,
        task,
    }
}

/// A `ws://` URL on loopback where nothing listens: connecting is refused at once.
pub fn refused_url() -> String {
    // Bind a spare port and release it. Another process could take it in between, but
    // ports are handed out in sequence, so not within a test's lifetime in practice.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    format!("ws://{addr}")
}

async fn accept_loop(
    listener: TcpListener,
    parts: Vec<Vec<Step>>,
    state: Arc<State>,
    count: watch::Sender<usize>,
) {
    let count = Arc::new(count);
    // Connection tasks live in this set: aborting the accept loop drops it, which aborts them.
    let mut connections = JoinSet::new();
    let mut next = 0usize;
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let part = parts.get(next).cloned().unwrap_or_default();
                next += 1;
                connections.spawn(connection(stream, part, state.clone(), count.clone()));
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

// The handshake callback's error type is tungstenite's (an HTTP response), not ours.
#[allow(clippy::result_large_err)]
async fn connection(
    stream: TcpStream,
    part: Vec<Step>,
    state: Arc<State>,
    count: Arc<watch::Sender<usize>>,
) {
    let uri = Arc::new(Mutex::new(String::new()));
    let seen = uri.clone();
    let callback = move |req: &Request, resp: Response| {
        *seen.lock().expect("uri lock") = req.uri().to_string();
        Ok(resp)
    };
    let budget = Arc::new(Mutex::new(None));
    let stream = Cuttable {
        inner: stream,
        budget: budget.clone(),
    };
    let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
        return;
    };
    let uri = uri.lock().expect("uri lock").clone();
    state.requests.lock().expect("requests lock").push(uri);
    count.send_modify(|c| *c += 1);

    let (mut sink, mut source) = ws.split();
    // Read concurrently: count pongs, notice the client leaving.
    let reader_state = state.clone();
    let mut reader = AbortOnDrop(tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Pong(_) => {
                    reader_state.pongs.fetch_add(1, Ordering::SeqCst);
                }
                Message::Ping(_) => {
                    reader_state.pings.fetch_add(1, Ordering::SeqCst);
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
    }));

    for step in part {
        match step {
            Step::Send(msg) => {
                if sink.send(msg).await.is_err() {
                    return;
                }
                state.sent.fetch_add(1, Ordering::SeqCst);
            }
            Step::Repeat(msg, times) => {
                for _ in 0..times {
                    if sink.send(msg.clone()).await.is_err() {
                        return;
                    }
                    state.sent.fetch_add(1, Ordering::SeqCst);
                }
            }
            Step::Wait(d) => tokio::time::sleep(d).await,
            Step::Gate(gate) => gate.notified().await,
            Step::Close => {
                let frame = CloseFrame {
                    code: CloseCode::Normal,
                    reason: "script".into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = tokio::time::timeout(CLOSE_WAIT, &mut reader.0).await;
                return;
            }
            Step::Drop => return,
            Step::Cut(msg, keep) => {
                *budget.lock().expect("budget lock") = Some(keep);
                // Fails once the budget is spent; the connection is dropped either way.
                let _ = sink.send(msg).await;
                return;
            }
            Step::Silent => break,
            Step::Unresponsive => {
                // Nothing reads the socket any more: pings go unanswered.
                drop(reader);
                let _sink = sink;
                std::future::pending::<()>().await;
                return;
            }
        }
    }
    // Silent (explicitly or at the end of the part): hold until the client leaves.
    let _ = (&mut reader.0).await;
    drop(sink);
}

/// The server's TCP stream, whose writes stop after a byte budget once one is set
/// ([`Script::cut_binary`]): the bytes within it reach the socket, then writing fails.
struct Cuttable {
    inner: TcpStream,
    budget: Arc<Mutex<Option<usize>>>,
}

impl AsyncRead for Cuttable {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Cuttable {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let budget = *self.budget.lock().expect("budget lock");
        let allowed = match budget {
            None => buf.len(),
            Some(0) => {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::BrokenPipe,
                    "scripted cut",
                )))
            }
            Some(left) => left.min(buf.len()),
        };
        let written = ready!(Pin::new(&mut self.inner).poll_write(cx, &buf[..allowed]))?;
        if let Some(left) = budget {
            *self.budget.lock().expect("budget lock") = Some(left - written);
        }
        Poll::Ready(Ok(written))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Aborts the task when dropped, so a dropped connection takes its reader with it.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
