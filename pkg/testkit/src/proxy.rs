//! A fault-injecting HTTP/1.1 proxy in front of a real server (ClickHouse's
//! HTTP interface), to test how a client survives a misbehaving network or
//! server while real traffic flows.
//!
//! [`FaultProxy::start`] listens on `127.0.0.1:0` and forwards to the
//! upstream address. It reads every request's head and frames its body
//! (`Content-Length` or chunked), so a fault applies to one *request*, also
//! on a kept-alive connection that carries many (the `clickhouse` crate's
//! pooled hyper connections): the requests before and after it pass. Each
//! forwarded request gets a fresh upstream connection that is closed once
//! the response is read (the server's own keep-alive timeout never closes a
//! connection under the client's feet).
//!
//! Faults ([`Fault`]): stall (hold the request, answer nothing, then close),
//! reset mid-request (forward part of the request, then reset the client's
//! connection and close the upstream one), `502 Bad Gateway` with an HTML
//! page, a truncated response (the server answered; the client gets part of
//! it, then the connection closes), an error code in no list (`HTTP 500`,
//! `Code: 9999`), and pass-through. The test chooses them while traffic
//! flows: [`inject`](FaultProxy::inject) for the next N matching requests,
//! [`schedule`](FaultProxy::schedule) for every k-th one (cycling through a
//! list); [`target`](FaultProxy::target) says which requests match (all, or
//! inserts only). [`stats`](FaultProxy::stats) counts requests and the faults
//! that fired, by kind, so a test can check that each one really happened.
//!
//! ```no_run
//! use std::time::Duration;
//! use skyhouse_testkit::proxy::{Fault, FaultProxy, FaultKind};
//! use skyhouse_testkit::ClickHouse;
//!
//! let proxy = FaultProxy::start(ClickHouse::shared().http_port());
//! // point the client at proxy.url(); then, while it runs:
//! proxy.inject(Fault::BadGateway, 3);
//! proxy.schedule(5, vec![Fault::Reset, Fault::Stall(Duration::from_secs(30))]);
//! // …
//! assert!(proxy.stats().injected(FaultKind::BadGateway) >= 3);
//! ```
//!
//! The proxy runs on a thread of its own with its own tokio runtime, so
//! synchronous tests, async tests and programs use it alike; dropping the
//! [`FaultProxy`] stops it and closes every connection it holds.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Longest request or response head read (status/request line and headers).
const MAX_HEAD: usize = 64 << 10;

/// How much of a request body a reset reads before cutting (it forwards at
/// most half of what it read, so the server never sees a whole request).
const RESET_READ: usize = 64 << 10;

/// Largest response a truncation holds in memory; a longer one is cut here.
const TRUNCATE_HOLD: usize = 64 << 20;

/// Socket read size.
const READ_CHUNK: usize = 64 << 10;

/// The body of the injected `502 Bad Gateway` (what nginx answers).
const BAD_GATEWAY_PAGE: &str = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n\
     <body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n\
     </body>\r\n</html>\r\n";

/// The body of the injected unknown error: ClickHouse's error format with a
/// code no list knows.
pub const UNKNOWN_ERROR_BODY: &str =
    "Code: 9999. DB::Exception: injected fault (version 18.16.1)\n";

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward the request and the response unchanged.
    Pass,
    /// Hold the request: forward nothing, answer nothing, read and discard
    /// what the client sends, for this long (make it longer than the
    /// client's timeout) or until the client leaves; then close.
    Stall(Duration),
    /// Forward the head and at most half of the request body (or, without a
    /// body, half of the head) to the server, then reset the client's
    /// connection (RST) and close the upstream one.
    Reset,
    /// Answer `502 Bad Gateway` with an HTML page without contacting the
    /// server (the request body is read and dropped); the connection stays
    /// open.
    BadGateway,
    /// Forward the request, read the server's whole response, send the
    /// client only part of it (the head and half of the body, or half of
    /// the head when the body is empty), then close.
    Truncate,
    /// Answer `HTTP 500` with [`UNKNOWN_ERROR_BODY`] (`Code: 9999`) without
    /// contacting the server; the connection stays open.
    UnknownError,
}

impl Fault {
    /// Its kind; `None` for [`Fault::Pass`].
    pub fn kind(&self) -> Option<FaultKind> {
        match self {
            Fault::Pass => None,
            Fault::Stall(_) => Some(FaultKind::Stall),
            Fault::Reset => Some(FaultKind::Reset),
            Fault::BadGateway => Some(FaultKind::BadGateway),
            Fault::Truncate => Some(FaultKind::Truncate),
            Fault::UnknownError => Some(FaultKind::UnknownError),
        }
    }
}

/// A fault without its parameters, for counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    /// [`Fault::Stall`].
    Stall,
    /// [`Fault::Reset`].
    Reset,
    /// [`Fault::BadGateway`].
    BadGateway,
    /// [`Fault::Truncate`].
    Truncate,
    /// [`Fault::UnknownError`].
    UnknownError,
}

impl FaultKind {
    /// Every kind.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Stall,
        FaultKind::Reset,
        FaultKind::BadGateway,
        FaultKind::Truncate,
        FaultKind::UnknownError,
    ];

    /// A short name: `stall`, `reset`, `bad_gateway`, `truncate`, `unknown_error`.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Stall => "stall",
            FaultKind::Reset => "reset",
            FaultKind::BadGateway => "bad_gateway",
            FaultKind::Truncate => "truncate",
            FaultKind::UnknownError => "unknown_error",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Which requests faults apply to (the others always pass and do not
/// advance a schedule).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// Every request.
    All,
    /// Only inserts: requests whose `query` URL parameter starts with
    /// `INSERT` (how the `clickhouse` crate sends them; other statements go
    /// in the body).
    Inserts,
}

/// What the proxy has done so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProxyStats {
    /// Client connections accepted.
    pub connections: u64,
    /// Requests whose head was read.
    pub requests: u64,
    /// Of those, inserts (see [`Target::Inserts`]).
    pub inserts: u64,
    /// Requests forwarded unchanged.
    pub passed: u64,
    /// Faults that fired, by kind (all requests).
    pub faults: BTreeMap<FaultKind, u64>,
    /// Faults that fired on inserts, by kind.
    pub insert_faults: BTreeMap<FaultKind, u64>,
}

impl ProxyStats {
    /// How many times `kind` fired.
    pub fn injected(&self, kind: FaultKind) -> u64 {
        self.faults.get(&kind).copied().unwrap_or(0)
    }

    /// How many times `kind` fired on an insert.
    pub fn injected_on_inserts(&self, kind: FaultKind) -> u64 {
        self.insert_faults.get(&kind).copied().unwrap_or(0)
    }

    /// Faults of every kind together.
    pub fn total_faults(&self) -> u64 {
        self.faults.values().sum()
    }
}

impl fmt::Display for ProxyStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} connections, {} requests ({} inserts), {} passed",
            self.connections, self.requests, self.inserts, self.passed
        )?;
        for kind in FaultKind::ALL {
            write!(
                f,
                ", {kind} {} ({} on inserts)",
                self.injected(kind),
                self.injected_on_inserts(kind)
            )?;
        }
        Ok(())
    }
}

/// Every k-th matching request gets the next fault of a list.
#[derive(Debug)]
struct Schedule {
    every: u64,
    faults: Vec<Fault>,
    seen: u64,
    next: usize,
}

#[derive(Debug)]
struct Control {
    target: Target,
    queue: VecDeque<Fault>,
    schedule: Option<Schedule>,
    stats: ProxyStats,
}

impl Control {
    /// The fault for the next request (counted), given whether it is an insert.
    fn decide(&mut self, insert: bool) -> Fault {
        self.stats.requests += 1;
        if insert {
            self.stats.inserts += 1;
        }
        let matches = match self.target {
            Target::All => true,
            Target::Inserts => insert,
        };
        let fault = if !matches {
            Fault::Pass
        } else if let Some(f) = self.queue.pop_front() {
            f
        } else if let Some(s) = &mut self.schedule {
            s.seen += 1;
            if s.seen % s.every == 0 && !s.faults.is_empty() {
                let f = s.faults[s.next % s.faults.len()].clone();
                s.next += 1;
                f
            } else {
                Fault::Pass
            }
        } else {
            Fault::Pass
        };
        match fault.kind() {
            None => self.stats.passed += 1,
            Some(kind) => {
                *self.stats.faults.entry(kind).or_default() += 1;
                if insert {
                    *self.stats.insert_faults.entry(kind).or_default() += 1;
                }
            }
        }
        fault
    }
}

#[derive(Debug)]
struct Shared {
    upstream: SocketAddr,
    control: Mutex<Control>,
}

impl Shared {
    fn control(&self) -> MutexGuard<'_, Control> {
        // A panic elsewhere cannot leave Control inconsistent: keep going.
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running proxy. Dropping it stops it and closes its connections.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on `127.0.0.1:0` in front of `127.0.0.1:upstream_port`,
    /// passing everything until told otherwise.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound or the thread cannot be started.
    pub fn start(upstream_port: u16) -> FaultProxy {
        FaultProxy::start_to(SocketAddr::from((Ipv4Addr::LOCALHOST, upstream_port)))
    }

    /// Like [`start`](Self::start), to any upstream address.
    pub fn start_to(upstream: SocketAddr) -> FaultProxy {
        let listener =
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("proxy: bind 127.0.0.1:0");
        listener
            .set_nonblocking(true)
            .expect("proxy: non-blocking listener");
        let addr = listener.local_addr().expect("proxy: local address");
        let shared = Arc::new(Shared {
            upstream,
            control: Mutex::new(Control {
                target: Target::All,
                queue: VecDeque::new(),
                schedule: None,
                stats: ProxyStats::default(),
            }),
        });
        let (stop, stopped) = oneshot::channel();
        let thread_shared = shared.clone();
        let thread = thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("proxy: tokio runtime");
                runtime.block_on(async move {
                    let listener = TcpListener::from_std(listener).expect("proxy: listener");
                    tokio::select! {
                        _ = stopped => {}
                        () = accept_loop(listener, thread_shared) => {}
                    }
                });
                // Dropping the runtime drops every connection task.
            })
            .expect("proxy: start thread");
        FaultProxy {
            addr,
            shared,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// `http://127.0.0.1:PORT`: give this to the client instead of the server's URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The upstream server's address.
    pub fn upstream(&self) -> SocketAddr {
        self.shared.upstream
    }

    /// Which requests faults apply to (default [`Target::All`]).
    pub fn target(&self, target: Target) {
        self.shared.control().target = target;
    }

    /// The next `n` matching requests get `fault` (after any queued before;
    /// queued faults come before the schedule's).
    pub fn inject(&self, fault: Fault, n: usize) {
        let mut control = self.shared.control();
        control.queue.extend(std::iter::repeat_n(fault, n));
    }

    /// From now on every `every`-th matching request (counting from here)
    /// gets the next fault of `faults`, cycling; the others pass. Replaces
    /// the previous schedule.
    ///
    /// # Panics
    ///
    /// If `every` is 0.
    pub fn schedule(&self, every: u64, faults: Vec<Fault>) {
        assert!(every > 0, "proxy: a schedule needs every >= 1");
        self.shared.control().schedule = Some(Schedule {
            every,
            faults,
            seen: 0,
            next: 0,
        });
    }

    /// Drops queued faults and the schedule: everything passes from now on
    /// (faults already under way finish).
    pub fn clear(&self) {
        let mut control = self.shared.control();
        control.queue.clear();
        control.schedule = None;
    }

    /// Queued faults not yet fired.
    pub fn queued(&self) -> usize {
        self.shared.control().queue.len()
    }

    /// The counts so far.
    pub fn stats(&self) -> ProxyStats {
        self.shared.control().stats.clone()
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.control().stats.connections += 1;
        let _ = client.set_nodelay(true);
        tokio::spawn(serve(client, shared.clone()));
    }
}

/// One client connection: request after request until it closes or a fault
/// closes it.
async fn serve(client: TcpStream, shared: Arc<Shared>) {
    let mut client = Conn::new(client);
    loop {
        let head = match client.read_head().await {
            Ok(Some(head)) => head,
            // The client left (or sent something that is not HTTP).
            Ok(None) | Err(_) => return,
        };
        let Some(request) = RequestHead::parse(&head) else {
            return;
        };
        let fault = shared.control().decide(request.is_insert);
        let keep_open = match fault {
            Fault::Pass => pass(&mut client, &head, &request, shared.upstream).await,
            Fault::Stall(d) => {
                stall(&mut client, d).await;
                false
            }
            Fault::Reset => {
                reset(client, &head, &request, shared.upstream).await;
                return;
            }
            Fault::BadGateway => {
                answer(
                    &mut client,
                    &request,
                    "502 Bad Gateway",
                    "text/html",
                    &[],
                    BAD_GATEWAY_PAGE,
                )
                .await
            }
            Fault::UnknownError => {
                answer(
                    &mut client,
                    &request,
                    "500 Internal Server Error",
                    "text/plain; charset=UTF-8",
                    &[("X-ClickHouse-Exception-Code", "9999")],
                    UNKNOWN_ERROR_BODY,
                )
                .await
            }
            Fault::Truncate => {
                truncate(&mut client, &head, &request, shared.upstream).await;
                false
            }
        };
        if !keep_open {
            let _ = client.stream.shutdown().await;
            return;
        }
    }
}

/// Forwards one request and its response; true if the client connection
/// may carry another request.
async fn pass(client: &mut Conn, head: &[u8], request: &RequestHead, upstream: SocketAddr) -> bool {
    let Ok(stream) = TcpStream::connect(upstream).await else {
        // Nothing listens: the client sees its connection close, as it would
        // have seen the refused connect.
        return false;
    };
    let _ = stream.set_nodelay(true);
    let mut server = Conn::new(stream);
    if server.stream.write_all(head).await.is_err() {
        return false;
    }
    let mut body = Body::new(request.framing);
    loop {
        match body.next(client).await {
            Ok(Some(piece)) => {
                if server.stream.write_all(&piece).await.is_err() {
                    // The server stopped reading (an early error answer):
                    // relay what it says, then close (the rest of the body
                    // is unread).
                    relay_response(&mut server, client, request).await;
                    return false;
                }
            }
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    relay_response(&mut server, client, request).await && !request.close
}

/// Copies one response from `server` to `client`; true if both ends may
/// continue (the response was complete and did not ask to close).
async fn relay_response(server: &mut Conn, client: &mut Conn, request: &RequestHead) -> bool {
    let Ok(Some(head)) = server.read_head().await else {
        return false;
    };
    let Some(response) = ResponseHead::parse(&head, request.is_head) else {
        return false;
    };
    if client.stream.write_all(&head).await.is_err() {
        return false;
    }
    let mut body = Body::new(response.framing);
    loop {
        match body.next(server).await {
            Ok(Some(piece)) => {
                if client.stream.write_all(&piece).await.is_err() {
                    return false;
                }
            }
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    response.framing != Framing::UntilClose && !response.close
}

/// Holds the request for `d` or until the client leaves, reading and
/// dropping what it sends.
async fn stall(client: &mut Conn, d: Duration) {
    let drain = async {
        let mut buf = vec![0; READ_CHUNK];
        while matches!(client.stream.read(&mut buf).await, Ok(n) if n > 0) {}
    };
    let _ = tokio::time::timeout(d, drain).await;
}

/// Forwards part of the request, then resets the client and closes upstream.
async fn reset(mut client: Conn, head: &[u8], request: &RequestHead, upstream: SocketAddr) {
    // Wait for the first piece of the body, then take only what has already
    // arrived: a streaming client may send the rest much later.
    let mut read = Vec::new();
    let mut body = Body::new(request.framing);
    let mut complete = request.framing == Framing::None;
    while !complete && read.len() < RESET_READ && (read.is_empty() || !client.buf.is_empty()) {
        match body.next(&mut client).await {
            Ok(Some(piece)) => read.extend_from_slice(&piece),
            Ok(None) => complete = true,
            Err(_) => break,
        }
    }
    // Never a whole request: half of the body read, or half of the head.
    let partial: Vec<u8> = if read.is_empty() {
        head[..head.len() / 2].to_vec()
    } else {
        let mut p = head.to_vec();
        p.extend_from_slice(&read[..read.len() / 2]);
        p
    };
    if let Ok(mut server) = TcpStream::connect(upstream).await {
        let _ = server.write_all(&partial).await;
        // Let the server read it before the close (best effort).
        let _ = server.flush().await;
        drop(server);
    }
    // SO_LINGER 0: dropping the socket sends RST instead of FIN.
    let _ = client.stream.set_zero_linger();
    drop(client);
}

/// Reads the request body and drops it, then answers with `status` and
/// `body`; true if the connection may go on.
async fn answer(
    client: &mut Conn,
    request: &RequestHead,
    status: &str,
    content_type: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> bool {
    let mut reader = Body::new(request.framing);
    loop {
        match reader.next(client).await {
            Ok(Some(_)) => {}
            Ok(None) => break,
            Err(_) => return false,
        }
    }
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    out.push_str(if request.close {
        "Connection: close\r\n\r\n"
    } else {
        "Connection: keep-alive\r\n\r\n"
    });
    if !request.is_head {
        out.push_str(body);
    }
    client.stream.write_all(out.as_bytes()).await.is_ok() && !request.close
}

/// Forwards the request, reads the whole response and sends only part of it.
async fn truncate(client: &mut Conn, head: &[u8], request: &RequestHead, upstream: SocketAddr) {
    let Ok(stream) = TcpStream::connect(upstream).await else {
        return;
    };
    let mut server = Conn::new(stream);
    if server.stream.write_all(head).await.is_err() {
        return;
    }
    let mut body = Body::new(request.framing);
    loop {
        match body.next(client).await {
            Ok(Some(piece)) => {
                if server.stream.write_all(&piece).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(_) => return,
        }
    }
    let Ok(Some(response_head)) = server.read_head().await else {
        return;
    };
    let Some(response) = ResponseHead::parse(&response_head, request.is_head) else {
        return;
    };
    let mut held = Vec::new();
    let mut body = Body::new(response.framing);
    while held.len() < TRUNCATE_HOLD {
        match body.next(&mut server).await {
            Ok(Some(piece)) => held.extend_from_slice(&piece),
            Ok(None) | Err(_) => break,
        }
    }
    let sent: &[u8] = if held.is_empty() {
        &response_head[..response_head.len() / 2]
    } else {
        let _ = client.stream.write_all(&response_head).await;
        &held[..held.len() / 2]
    };
    let _ = client.stream.write_all(sent).await;
    let _ = client.stream.flush().await;
}

/// A socket with a read buffer.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Reads more into the buffer; false at end of stream.
    async fn fill(&mut self) -> io::Result<bool> {
        let mut chunk = vec![0; READ_CHUNK];
        let n = self.stream.read(&mut chunk).await?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// The next head (up to and including the blank line); `None` when the
    /// peer closed before sending a byte of it.
    async fn read_head(&mut self) -> io::Result<Option<Vec<u8>>> {
        // Where the search resumes: the blank line may straddle two reads.
        let mut from: usize = 0;
        loop {
            if let Some(end) = find(&self.buf[from..], b"\r\n\r\n") {
                let end = from + end + 4;
                return Ok(Some(self.buf.drain(..end).collect()));
            }
            from = self.buf.len().saturating_sub(3);
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("head too long"));
            }
            if !self.fill().await? {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(invalid("closed inside a head"))
                };
            }
        }
    }

    /// One CRLF-terminated line (with its CRLF).
    async fn read_line(&mut self) -> io::Result<Vec<u8>> {
        loop {
            if let Some(end) = find(&self.buf, b"\r\n") {
                return Ok(self.buf.drain(..end + 2).collect());
            }
            if self.buf.len() > MAX_HEAD {
                return Err(invalid("line too long"));
            }
            if !self.fill().await? {
                return Err(invalid("closed inside a line"));
            }
        }
    }

    /// Up to `max` bytes (at least one); `None` at end of stream.
    async fn read_up_to(&mut self, max: usize) -> io::Result<Option<Vec<u8>>> {
        if self.buf.is_empty() && !self.fill().await? {
            return Ok(None);
        }
        let n = max.min(self.buf.len());
        Ok(Some(self.buf.drain(..n).collect()))
    }

    /// Exactly `n` bytes.
    async fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await? {
                return Err(invalid("closed inside a body"));
            }
        }
        Ok(self.buf.drain(..n).collect())
    }
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// How a message body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// A response without length: the body ends when the server closes.
    UntilClose,
}

/// Reads one body as wire pieces (chunk framing included, so pieces can be
/// forwarded as they are).
struct Body {
    state: BodyState,
}

enum BodyState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

impl Body {
    fn new(framing: Framing) -> Body {
        let state = match framing {
            Framing::None | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::ChunkSize,
            Framing::UntilClose => BodyState::UntilClose,
        };
        Body { state }
    }

    /// The next piece of the body as read off the wire; `None` once it is complete.
    async fn next(&mut self, conn: &mut Conn) -> io::Result<Option<Vec<u8>>> {
        let max = |left: u64| usize::try_from(left).unwrap_or(usize::MAX).min(READ_CHUNK);
        match self.state {
            BodyState::Done => Ok(None),
            BodyState::Length(left) => {
                let piece = conn
                    .read_up_to(max(left))
                    .await?
                    .ok_or_else(|| invalid("closed inside a body"))?;
                let left = left - piece.len() as u64;
                self.state = if left == 0 {
                    BodyState::Done
                } else {
                    BodyState::Length(left)
                };
                Ok(Some(piece))
            }
            BodyState::UntilClose => match conn.read_up_to(READ_CHUNK).await? {
                Some(piece) => Ok(Some(piece)),
                None => {
                    self.state = BodyState::Done;
                    Ok(None)
                }
            },
            BodyState::ChunkSize => {
                let line = conn.read_line().await?;
                let text = std::str::from_utf8(&line).map_err(|_| invalid("chunk size"))?;
                let hex = text.trim_end().split(';').next().unwrap_or("").trim();
                let size = u64::from_str_radix(hex, 16).map_err(|_| invalid("chunk size"))?;
                self.state = if size == 0 {
                    BodyState::Trailers
                } else {
                    BodyState::ChunkData(size)
                };
                Ok(Some(line))
            }
            BodyState::ChunkData(left) => {
                let piece = conn
                    .read_up_to(max(left))
                    .await?
                    .ok_or_else(|| invalid("closed inside a chunk"))?;
                let left = left - piece.len() as u64;
                self.state = if left == 0 {
                    BodyState::ChunkEnd
                } else {
                    BodyState::ChunkData(left)
                };
                Ok(Some(piece))
            }
            BodyState::ChunkEnd => {
                let crlf = conn.read_exact(2).await?;
                if crlf != b"\r\n" {
                    return Err(invalid("chunk without CRLF"));
                }
                self.state = BodyState::ChunkSize;
                Ok(Some(crlf))
            }
            BodyState::Trailers => {
                let line = conn.read_line().await?;
                if line == b"\r\n" {
                    self.state = BodyState::Done;
                }
                Ok(Some(line))
            }
        }
    }
}

/// Header values that matter for framing.
struct Headers {
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
}

/// The start line and the framing headers of a head.
fn parse_head(head: &[u8]) -> Option<(String, Headers)> {
    let text = std::str::from_utf8(head).ok()?;
    let mut lines = text.split("\r\n");
    let start = lines.next()?.to_owned();
    let mut headers = Headers {
        content_length: None,
        chunked: false,
        close: false,
    };
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':')?;
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "content-length" => headers.content_length = Some(value.parse().ok()?),
            "transfer-encoding" => {
                headers.chunked = value.to_ascii_lowercase().contains("chunked");
            }
            "connection" => headers.close = value.eq_ignore_ascii_case("close"),
            _ => {}
        }
    }
    Some((start, headers))
}

/// What the proxy needs to know about a request.
#[derive(Debug)]
struct RequestHead {
    framing: Framing,
    is_head: bool,
    is_insert: bool,
    close: bool,
}

impl RequestHead {
    fn parse(head: &[u8]) -> Option<RequestHead> {
        let (start, headers) = parse_head(head)?;
        let mut parts = start.split(' ');
        let method = parts.next()?;
        let target = parts.next()?;
        let framing = if headers.chunked {
            Framing::Chunked
        } else {
            match headers.content_length {
                Some(n) => Framing::Length(n),
                None => Framing::None,
            }
        };
        Some(RequestHead {
            framing,
            is_head: method == "HEAD",
            is_insert: is_insert(target),
            close: headers.close,
        })
    }
}

/// What the proxy needs to know about a response.
#[derive(Debug)]
struct ResponseHead {
    framing: Framing,
    close: bool,
}

impl ResponseHead {
    fn parse(head: &[u8], to_head_request: bool) -> Option<ResponseHead> {
        let (start, headers) = parse_head(head)?;
        let status: u16 = start.split(' ').nth(1)?.parse().ok()?;
        let framing = if to_head_request || status < 200 || status == 204 || status == 304 {
            Framing::None
        } else if headers.chunked {
            Framing::Chunked
        } else {
            match headers.content_length {
                Some(n) => Framing::Length(n),
                None => Framing::UntilClose,
            }
        };
        Some(ResponseHead {
            framing,
            close: headers.close,
        })
    }
}

/// Whether a request target's `query` parameter is an `INSERT`.
fn is_insert(target: &str) -> bool {
    let Some((_, params)) = target.split_once('?') else {
        return false;
    };
    params
        .split('&')
        .filter_map(|p| p.strip_prefix("query="))
        .any(|q| {
            percent_decode(q)
                .trim_start()
                .get(..6)
                .is_some_and(|w| w.eq_ignore_ascii_case("INSERT"))
        })
}

/// `application/x-www-form-urlencoded` decoding (`+` is a space); bad
/// escapes are kept as they are.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inserts_are_recognised_in_the_query_parameter() {
        assert!(is_insert(
            "/?database=db&query=INSERT+INTO+records+FORMAT+RowBinary"
        ));
        assert!(is_insert(
            "/?query=%20insert%20INTO%20t%20FORMAT%20RowBinary"
        ));
        assert!(!is_insert("/?database=db"));
        assert!(!is_insert("/?query=SELECT+1"));
        assert!(!is_insert("/ping"));
        assert_eq!(percent_decode("a%2Bb+c%zz%4"), "a+b c%zz%4");
    }

    #[test]
    fn schedule_cycles_and_queued_faults_come_first() {
        let mut c = Control {
            target: Target::Inserts,
            queue: VecDeque::from([Fault::Truncate]),
            schedule: Some(Schedule {
                every: 2,
                faults: vec![Fault::BadGateway, Fault::UnknownError],
                seen: 0,
                next: 0,
            }),
            stats: ProxyStats::default(),
        };
        let got: Vec<Fault> = [true, false, true, true, true, true, true]
            .into_iter()
            .map(|insert| c.decide(insert))
            .collect();
        assert_eq!(
            got,
            vec![
                Fault::Truncate,
                Fault::Pass, // not an insert: passes, does not count
                Fault::Pass,
                Fault::BadGateway,
                Fault::Pass,
                Fault::UnknownError,
                Fault::Pass,
            ]
        );
        assert_eq!(c.stats.requests, 7);
        assert_eq!(c.stats.inserts, 6);
        assert_eq!(c.stats.passed, 4);
        assert_eq!(c.stats.injected_on_inserts(FaultKind::BadGateway), 1);
        assert_eq!(c.stats.total_faults(), 3);
    }
}
