//! The fault proxy against the real ClickHouse: pass-through is transparent
//! (also on a kept-alive connection and with chunked bodies both ways), and
//! each fault does what it says, to the request it was meant for.
//!
//! Requests are written by hand on raw sockets (one connection carries
//! several, as a pooled client's does) and read back with the small parser
//! below, independent of the proxy's own; pass-through is also checked with
//! reqwest (hyper, the HTTP stack of the `clickhouse` crate).
#![allow(clippy::unwrap_used)] // a panic is the failure report

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use skyhouse_testkit::proxy::{Fault, FaultKind, FaultProxy, Target, UNKNOWN_ERROR_BODY};
use skyhouse_testkit::{ClickHouse, TestDatabase};

/// Guard against a hang of a test read, never a performance expectation.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// One response as read off the wire.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Response {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A keep-alive HTTP/1.1 connection written by hand.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes read off the wire in all.
    received: usize,
}

impl Raw {
    fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(READ_TIMEOUT)).unwrap();
        Raw {
            stream,
            buf: Vec::new(),
            received: 0,
        }
    }

    /// `POST path` with `body` (Content-Length) on this connection.
    fn post(&mut self, path: &str, body: &str) {
        let request = format!(
            "POST {path} HTTP/1.1\r\nHost: ch\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        self.stream.write_all(request.as_bytes()).unwrap();
    }

    /// `POST path` with `body` sent in chunks of `chunk` bytes.
    fn post_chunked(&mut self, path: &str, body: &str, chunk: usize) {
        let mut request =
            format!("POST {path} HTTP/1.1\r\nHost: ch\r\nTransfer-Encoding: chunked\r\n\r\n")
                .into_bytes();
        for piece in body.as_bytes().chunks(chunk) {
            request.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            request.extend_from_slice(piece);
            request.extend_from_slice(b"\r\n");
        }
        request.extend_from_slice(b"0\r\n\r\n");
        self.stream.write_all(&request).unwrap();
    }

    fn more(&mut self) -> io::Result<()> {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "closed after {} bytes: {:?}",
                    self.buf.len(),
                    String::from_utf8_lossy(&self.buf)
                ),
            ));
        }
        self.buf.extend_from_slice(&chunk[..n]);
        self.received += n;
        Ok(())
    }

    fn take_until(&mut self, needle: &[u8]) -> io::Result<Vec<u8>> {
        loop {
            if let Some(at) = self.buf.windows(needle.len()).position(|w| w == needle) {
                return Ok(self.buf.drain(..at + needle.len()).collect());
            }
            self.more()?;
        }
    }

    fn take(&mut self, n: usize) -> io::Result<Vec<u8>> {
        while self.buf.len() < n {
            self.more()?;
        }
        Ok(self.buf.drain(..n).collect())
    }

    /// The next response; an error if the connection ends before it is whole.
    fn response(&mut self) -> io::Result<Response> {
        let head = self.take_until(b"\r\n\r\n")?;
        let head = String::from_utf8(head).unwrap();
        let mut lines = head.trim_end().split("\r\n");
        let status = lines.next().unwrap().split(' ').nth(1).unwrap();
        let headers: Vec<(String, String)> = lines
            .map(|l| {
                let (n, v) = l.split_once(':').unwrap();
                (n.trim().to_owned(), v.trim().to_owned())
            })
            .collect();
        let mut response = Response {
            status: status.parse().unwrap(),
            headers,
            body: Vec::new(),
        };
        if response
            .header("Transfer-Encoding")
            .is_some_and(|v| v.contains("chunked"))
        {
            loop {
                let line = self.take_until(b"\r\n")?;
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&line).trim(), 16).unwrap();
                if size == 0 {
                    self.take_until(b"\r\n")?;
                    break;
                }
                let data = self.take(size + 2)?;
                response.body.extend_from_slice(&data[..size]);
            }
        } else if let Some(n) = response.header("Content-Length") {
            let n: usize = n.parse().unwrap();
            response.body = self.take(n)?;
        }
        Ok(response)
    }

    /// Everything until the peer closes, or the read error.
    fn rest(&mut self) -> io::Result<Vec<u8>> {
        let mut out = std::mem::take(&mut self.buf);
        self.stream.read_to_end(&mut out)?;
        Ok(out)
    }
}

fn table(hint: &str) -> TestDatabase {
    let db = ClickHouse::shared().database(hint);
    db.query("CREATE TABLE t (x UInt32, s String) ENGINE = Memory");
    db
}

fn insert_path(db: &TestDatabase) -> String {
    format!(
        "/?database={}&query=INSERT+INTO+t+FORMAT+TabSeparated",
        db.name()
    )
}

fn proxy() -> FaultProxy {
    FaultProxy::start(ClickHouse::shared().http_port())
}

#[tokio::test]
async fn pass_through_is_transparent_on_one_kept_alive_connection() {
    let db = table("proxy_pass");
    let proxy = proxy();
    let client = reqwest::Client::new();
    let post = |path: String, body: String| {
        let request = client.post(format!("{}{path}", proxy.url())).body(body);
        async move {
            let r = request.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let rows: String = (0..1000).map(|i| format!("{i}\trow {i}\n")).collect();
    assert_eq!(post(insert_path(&db), rows).await, (200, String::new()));
    let select = format!("/?database={}", db.name());
    for _ in 0..3 {
        let (status, body) = post(select.clone(), "SELECT count(), sum(x) FROM t".into()).await;
        assert_eq!((status, body.as_str()), (200, "1000\t499500\n"));
    }
    // A response of several MB, streamed in chunks by ClickHouse.
    let big = "SELECT number, toString(number) FROM system.numbers LIMIT 300000";
    let (status, through) = post("/".into(), big.into()).await;
    assert_eq!(status, 200);
    assert_eq!(through, ClickHouse::shared().query(big));
    assert!(through.len() > 3_000_000, "{} bytes", through.len());

    let stats = proxy.stats();
    assert_eq!(stats.connections, 1, "reqwest kept one connection: {stats}");
    assert_eq!((stats.requests, stats.inserts, stats.passed), (5, 1, 5));
    assert_eq!(stats.total_faults(), 0);

    // A chunked request body (how the clickhouse crate streams an insert).
    let mut raw = Raw::connect(proxy.addr());
    let more: String = (1000..1100)
        .map(|i| format!("{i}\tchunked {i}\n"))
        .collect();
    raw.post_chunked(&insert_path(&db), &more, 97);
    assert_eq!(raw.response().unwrap().status, 200);
    raw.post(&select, "SELECT count() FROM t");
    assert_eq!(raw.response().unwrap().text(), "1100\n");
    assert_eq!(proxy.stats().inserts, 2);
}

#[test]
fn bad_gateway_and_unknown_error_answer_without_the_server_and_keep_the_connection() {
    let db = table("proxy_answers");
    let proxy = proxy();
    let mut raw = Raw::connect(proxy.addr());
    let insert = insert_path(&db);
    raw.post(&insert, "1\tfirst\n");
    assert_eq!(raw.response().unwrap().status, 200);

    proxy.inject(Fault::BadGateway, 1);
    proxy.inject(Fault::UnknownError, 1);
    raw.post_chunked(&insert, "2\tnever\n", 3);
    let bad_gateway = raw.response().unwrap();
    assert_eq!(bad_gateway.status, 502);
    assert!(bad_gateway.text().contains("<h1>502 Bad Gateway</h1>"));
    assert_eq!(bad_gateway.header("Content-Type"), Some("text/html"));
    raw.post(&insert, "3\tnever\n");
    let unknown = raw.response().unwrap();
    assert_eq!(unknown.status, 500);
    assert_eq!(unknown.text(), UNKNOWN_ERROR_BODY);
    assert!(unknown.text().starts_with("Code: 9999. DB::Exception:"));

    // The same connection goes on; the server never saw the two inserts.
    raw.post(&insert, "4\tlast\n");
    assert_eq!(raw.response().unwrap().status, 200);
    assert_eq!(db.query("SELECT x FROM t ORDER BY x"), "1\n4\n");
    let stats = proxy.stats();
    assert_eq!(stats.connections, 1);
    assert_eq!(stats.injected(FaultKind::BadGateway), 1);
    assert_eq!(stats.injected(FaultKind::UnknownError), 1);
    assert_eq!(stats.injected_on_inserts(FaultKind::UnknownError), 1);
    assert_eq!(stats.passed, 2);
}

#[test]
fn stall_answers_nothing_then_closes() {
    let db = table("proxy_stall");
    let proxy = proxy();
    // Long: the client gives up first (its read times out), then leaves.
    proxy.inject(Fault::Stall(Duration::from_secs(600)), 1);
    let mut raw = Raw::connect(proxy.addr());
    raw.stream
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    raw.post(&insert_path(&db), "1\tstalled\n");
    let err = raw
        .response()
        .expect_err("a stalled request gets no answer");
    assert!(
        matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ),
        "{err}"
    );
    assert!(raw.buf.is_empty(), "{:?}", raw.buf);
    drop(raw);
    // Short: it closes without a byte once the time is up.
    proxy.inject(Fault::Stall(Duration::from_millis(200)), 1);
    let mut raw = Raw::connect(proxy.addr());
    raw.post(&insert_path(&db), "2\tstalled\n");
    assert_eq!(raw.rest().unwrap(), b"");
    // The next request passes.
    let mut raw = Raw::connect(proxy.addr());
    raw.post(&insert_path(&db), "3\tpassed\n");
    assert_eq!(raw.response().unwrap().status, 200);
    assert_eq!(db.query("SELECT x FROM t"), "3\n");
    assert_eq!(proxy.stats().injected(FaultKind::Stall), 2);
}

#[test]
fn reset_cuts_an_insert_mid_body() {
    let db = table("proxy_reset");
    let proxy = proxy();
    let mut raw = Raw::connect(proxy.addr());
    raw.post(&insert_path(&db), "1\tbefore\n");
    assert_eq!(raw.response().unwrap().status, 200);
    proxy.inject(Fault::Reset, 1);
    let rows: String = (0..500).map(|i| format!("{i}\treset {i}\n")).collect();
    raw.post_chunked(&insert_path(&db), &rows, 256);
    let err = raw.rest().expect_err("the connection is reset");
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset, "{err}");
    // Half of the body went to the server, then the upstream connection
    // closed. ClickHouse 18.16 takes that close for the end of the body and
    // stores the rows of the prefix it got (which is why a writer must retry
    // the whole batch, and why inserts must be idempotent); never all 500.
    let deadline = std::time::Instant::now() + READ_TIMEOUT;
    let stored = loop {
        let n: u64 = db.query("SELECT count() FROM t").trim().parse().unwrap();
        if n > 1 || std::time::Instant::now() > deadline {
            break n - 1;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(stored > 0 && stored < 500, "{stored} of 500 rows stored");
    let stats = proxy.stats();
    assert_eq!(stats.injected_on_inserts(FaultKind::Reset), 1);
    assert_eq!(stats.passed, 1);
}

#[test]
fn truncate_forwards_the_request_and_cuts_the_answer() {
    let db = table("proxy_truncate");
    let proxy = proxy();
    // An insert: the server stores it, the client gets an incomplete answer.
    proxy.inject(Fault::Truncate, 2);
    let mut raw = Raw::connect(proxy.addr());
    raw.post(&insert_path(&db), "7\tstored\n");
    let err = raw.response().expect_err("a truncated answer");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert_eq!(db.query("SELECT x FROM t"), "7\n");
    // A query with a body: a whole head, then half the body, then the end.
    let mut raw = Raw::connect(proxy.addr());
    let query = "SELECT number FROM system.numbers LIMIT 100000";
    let whole = ClickHouse::shared().query(query).len();
    raw.post("/", query);
    let err = raw.response().expect_err("a truncated body");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    assert!(
        raw.received > whole / 3 && raw.received < whole,
        "{} bytes received of a {whole}-byte answer",
        raw.received
    );
    assert_eq!(proxy.stats().injected(FaultKind::Truncate), 2);
}

#[test]
fn a_schedule_cycles_through_its_faults_on_the_requests_it_targets() {
    let db = table("proxy_schedule");
    let proxy = proxy();
    proxy.target(Target::Inserts);
    proxy.schedule(2, vec![Fault::BadGateway, Fault::UnknownError]);
    let mut raw = Raw::connect(proxy.addr());
    let select = format!("/?database={}", db.name());
    let mut statuses = Vec::new();
    for i in 0..6 {
        raw.post(&insert_path(&db), &format!("{i}\tx\n"));
        statuses.push(raw.response().unwrap().status);
        // Queries are not targeted: they pass and do not count.
        raw.post(&select, "SELECT 1");
        assert_eq!(raw.response().unwrap().text(), "1\n");
    }
    assert_eq!(statuses, vec![200, 502, 200, 500, 200, 502]);
    assert_eq!(db.query("SELECT x FROM t ORDER BY x"), "0\n2\n4\n");
    // Queued faults come first; clear() stops everything.
    proxy.inject(Fault::UnknownError, 1);
    raw.post(&insert_path(&db), "6\tx\n");
    assert_eq!(raw.response().unwrap().status, 500);
    proxy.clear();
    for i in 7..10 {
        raw.post(&insert_path(&db), &format!("{i}\tx\n"));
        assert_eq!(raw.response().unwrap().status, 200);
    }
    let stats = proxy.stats();
    assert_eq!((stats.requests, stats.inserts), (16, 10));
    assert_eq!(stats.injected(FaultKind::BadGateway), 2);
    assert_eq!(stats.injected(FaultKind::UnknownError), 2);
}
