//! A small HTTP/1.1 client over keep-alive connections (what the benchmark
//! times its requests with: nothing between the clock and the socket but a
//! request line and a response parse), a load loop over many connections,
//! and Redis `DEL` (to drop the services' cached answers before a cold
//! request).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Longest one request may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, `DELETE`.
    pub method: &'static str,
    /// Path and query.
    pub path: String,
    /// Body (`POST`).
    pub body: Vec<u8>,
    /// `Authorization: Bearer` value, if any.
    pub bearer: Option<String>,
}

impl Request {
    /// `GET path`.
    pub fn get(path: impl Into<String>) -> Request {
        Request {
            method: "GET",
            path: path.into(),
            body: Vec::new(),
            bearer: None,
        }
    }

    /// The same request with a bearer key.
    pub fn with_key(mut self, key: &str) -> Request {
        self.bearer = Some(key.to_owned());
        self
    }
}

/// A response: status and body.
#[derive(Debug, Clone)]
pub struct Response {
    /// HTTP status; 0 when the request failed (connection, timeout).
    pub status: u16,
    /// The body (or the error, for status 0).
    pub body: Vec<u8>,
    /// From writing the request to the end of the body.
    pub took: Duration,
}

impl Response {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// One keep-alive connection to a server (reconnects when the server closed it).
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    stream: Option<BufReader<TcpStream>>,
}

impl Conn {
    /// A connection to `addr`, opened at the first request.
    pub fn new(addr: SocketAddr) -> Conn {
        Conn { addr, stream: None }
    }

    /// Send `req` and read the answer; a failure is a status-0 response.
    pub async fn send(&mut self, req: &Request) -> Response {
        let start = Instant::now();
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(req)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        let took = start.elapsed();
        match result {
            Ok((status, body)) => Response { status, body, took },
            Err(e) => {
                self.stream = None;
                Response {
                    status: 0,
                    body: e.into_bytes(),
                    took,
                }
            }
        }
    }

    async fn exchange(&mut self, req: &Request) -> Result<(u16, Vec<u8>), String> {
        let mut head = format!(
            "{} {} HTTP/1.1\r\nHost: {}\r\nContent-Length: {}\r\n",
            req.method,
            req.path,
            self.addr,
            req.body.len()
        );
        if !req.body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        if let Some(key) = &req.bearer {
            head.push_str(&format!("Authorization: Bearer {key}\r\n"));
        }
        head.push_str("\r\n");
        // A kept connection the server closed fails on first use: once more
        // on a new one.
        let reused = self.stream.is_some();
        match self.try_exchange(head.as_bytes(), &req.body).await {
            Ok(r) => Ok(r),
            Err(_) if reused => {
                self.stream = None;
                self.try_exchange(head.as_bytes(), &req.body).await
            }
            Err(e) => Err(e),
        }
    }

    async fn try_exchange(&mut self, head: &[u8], body: &[u8]) -> Result<(u16, Vec<u8>), String> {
        if self.stream.is_none() {
            let s = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            s.set_nodelay(true).map_err(|e| e.to_string())?;
            self.stream = Some(BufReader::new(s));
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("no connection".into());
        };
        let w = stream.get_mut();
        w.write_all(head).await.map_err(|e| e.to_string())?;
        if !body.is_empty() {
            w.write_all(body).await.map_err(|e| e.to_string())?;
        }
        let mut line = String::new();
        if stream
            .read_line(&mut line)
            .await
            .map_err(|e| e.to_string())?
            == 0
        {
            return Err("connection closed".into());
        }
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("bad status line {line:?}"))?;
        let (mut length, mut chunked, mut close) = (None, false, false);
        loop {
            line.clear();
            if stream
                .read_line(&mut line)
                .await
                .map_err(|e| e.to_string())?
                == 0
            {
                return Err("connection closed in the headers".into());
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            if let Some((name, value)) = l.split_once(':') {
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse::<usize>().ok(),
                    "transfer-encoding" => chunked = value.eq_ignore_ascii_case("chunked"),
                    "connection" => close = value.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut out = Vec::new();
        if chunked {
            loop {
                line.clear();
                stream
                    .read_line(&mut line)
                    .await
                    .map_err(|e| e.to_string())?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .map_err(|_| format!("bad chunk size {line:?}"))?;
                let mut chunk = vec![0; size + 2];
                stream
                    .read_exact(&mut chunk)
                    .await
                    .map_err(|e| e.to_string())?;
                if size == 0 {
                    break;
                }
                out.extend_from_slice(&chunk[..size]);
            }
        } else if let Some(n) = length {
            out.resize(n, 0);
            stream
                .read_exact(&mut out)
                .await
                .map_err(|e| e.to_string())?;
        } else {
            stream
                .read_to_end(&mut out)
                .await
                .map_err(|e| e.to_string())?;
            close = true;
        }
        if close {
            self.stream = None;
        }
        Ok((status, out))
    }
}

/// `total` requests of `req` over `connections` connections at once:
/// every response, and the wall time they took together.
pub async fn load(
    addr: SocketAddr,
    req: &Request,
    connections: usize,
    total: usize,
) -> (Vec<Response>, Duration) {
    let left = Arc::new(AtomicUsize::new(total));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (left, req) = (left.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::new(addr);
            let mut out = Vec::new();
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
            {
                let mut r = conn.send(&req).await;
                r.body = Vec::new();
                out.push(r);
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(total);
    for t in tasks {
        if let Ok(rs) = t.await {
            all.extend(rs);
        }
    }
    (all, start.elapsed())
}

/// `host:port` of a `redis://host:port` URL (the only form the benchmark takes).
pub fn redis_addr(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("redis://")
        .ok_or_else(|| format!("redis URL {url:?} must be redis://host:port"))?;
    let rest = rest.trim_end_matches('/');
    if rest.contains('@') || rest.contains('/') || !rest.contains(':') {
        return Err(format!(
            "redis URL {url:?} must be redis://host:port (no credentials or database)"
        ));
    }
    Ok(rest.to_owned())
}

/// Delete `keys` in Redis at `addr` (`host:port`): the number deleted.
pub async fn redis_del(addr: &str, keys: &[String]) -> Result<u64, String> {
    if keys.is_empty() {
        return Ok(0);
    }
    let mut cmd = format!("*{}\r\n$3\r\nDEL\r\n", keys.len() + 1);
    for k in keys {
        cmd.push_str(&format!("${}\r\n{k}\r\n", k.len()));
    }
    let s = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("redis {addr}: {e}"))?;
    let mut s = BufReader::new(s);
    s.get_mut()
        .write_all(cmd.as_bytes())
        .await
        .map_err(|e| format!("redis {addr}: {e}"))?;
    let mut line = String::new();
    s.read_line(&mut line)
        .await
        .map_err(|e| format!("redis {addr}: {e}"))?;
    line.trim()
        .strip_prefix(':')
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("redis {addr}: DEL answered {:?}", line.trim()))
}
