//! A real `redis-server` per test process.

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use crate::process::{self, ServerSpec, Started};

/// How long one test command may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` child process on a spare loopback port, shared by every
/// test of a test binary (see [`Redis::shared`]). No persistence: `save ''`,
/// `appendonly no`, working directory in a temporary directory.
///
/// All tests share database 0; a test isolates itself by putting every key
/// it uses under its own [`key_prefix`](Redis::key_prefix) (so `FLUSHDB` and
/// `FLUSHALL` are off limits).
#[derive(Debug)]
pub struct Redis {
    started: Started,
}

static SHARED: OnceLock<Result<Redis, String>> = OnceLock::new();

impl Redis {
    /// The server of this test process, started on first use and killed
    /// when the process exits (see the crate documentation).
    ///
    /// # Panics
    ///
    /// If `redis-server` is not installed, or does not start and answer
    /// `PING` within 60 s (the message has the tail of its log). The failure
    /// is remembered: every later call panics with the same message.
    pub fn shared() -> &'static Redis {
        match SHARED.get_or_init(Redis::start) {
            Ok(server) => server,
            Err(message) => panic!("{message}"),
        }
    }

    /// A server of the calling test alone, on a spare port, which the test
    /// may stop ([`PrivateRedis::stop`]: `SIGKILL`, as a crash or an outage)
    /// and start again on the same port ([`PrivateRedis::restart`]), e.g. to
    /// check that a client survives Redis going away. Killed when the handle
    /// is dropped or the test process exits.
    ///
    /// # Panics
    ///
    /// As [`Redis::shared`].
    pub fn start_private() -> PrivateRedis {
        let started = process::start(&spec(&private_kind())).unwrap_or_else(|m| panic!("{m}"));
        PrivateRedis {
            port: started.ports[0],
            server: Some(started),
        }
    }

    fn start() -> Result<Redis, String> {
        let started = process::start(&spec("redis"))?;
        Ok(Redis { started })
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port())
    }

    /// The port the server listens on (on 127.0.0.1).
    pub fn port(&self) -> u16 {
        self.started.ports[0]
    }

    /// The server's temporary working directory (its log is `stdout.log`);
    /// removed when the test process exits.
    pub fn dir(&self) -> &Path {
        &self.started.dir
    }

    /// A key prefix no other caller in this or any concurrent test process
    /// gets: the sanitized hint (`[a-z0-9_]`, at most 40 characters), the
    /// process id and a counter, ending in `:`, e.g. `cursor:4242:0:`.
    pub fn key_prefix(&self, hint: &str) -> String {
        format!(
            "{}:{}:",
            process::sanitize(hint),
            process::unique_suffix(':')
        )
    }

    /// Sends one command (on a new connection) and returns the reply; a
    /// Redis error comes back as [`Reply::Error`].
    ///
    /// # Panics
    ///
    /// If the server cannot be reached or the reply is not valid RESP.
    pub fn command<A: AsRef<[u8]>>(&self, args: &[A]) -> Reply {
        command(self.port(), args, COMMAND_TIMEOUT).unwrap_or_else(|e| {
            panic!(
                "Redis on 127.0.0.1:{} failed: {e}\ncommand: {}",
                self.port(),
                args.iter()
                    .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            )
        })
    }
}

/// How every test Redis runs. No persistence, so a restarted server starts
/// empty.
fn spec(kind: &str) -> ServerSpec<'_> {
    ServerSpec {
        binary: "redis-server",
        kind,
        ports: 1,
        prepare: &redis_args,
        ready: &answers_ping,
        probe: "PING",
        logs: &["stdout.log"],
        timeout: None,
        run_as: None,
        stop_signal: None,
    }
}

fn redis_args(dir: &Path, ports: &[u16]) -> io::Result<Vec<String>> {
    Ok(vec![
        "--port".into(),
        ports[0].to_string(),
        "--bind".into(),
        "127.0.0.1".into(),
        "--save".into(),
        String::new(),
        "--appendonly".into(),
        "no".into(),
        "--dir".into(),
        dir.to_string_lossy().into_owned(),
        "--loglevel".into(),
        "warning".into(),
    ])
}

fn answers_ping(ports: &[u16]) -> bool {
    command(ports[0], &["PING"], Duration::from_secs(2))
        .is_ok_and(|r| r == Reply::Status("PONG".into()))
}

/// A directory name no other private server of this process uses.
fn private_kind() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    format!("redis-private{}", COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A `redis-server` owned by one test, stoppable and restartable on the same
/// port (see [`Redis::start_private`]). No persistence: after a restart the
/// server is empty.
#[derive(Debug)]
pub struct PrivateRedis {
    port: u16,
    server: Option<Started>,
}

impl PrivateRedis {
    /// `redis://127.0.0.1:PORT` (the same across restarts).
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port (the same across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the server is running (not stopped).
    pub fn is_running(&self) -> bool {
        self.server.is_some()
    }

    /// Kills the server (`SIGKILL`) and returns once its port refuses
    /// connections. Nothing happens if it is already stopped.
    ///
    /// # Panics
    ///
    /// If the port still accepts connections after 30 s.
    pub fn stop(&mut self) {
        let Some(server) = self.server.take() else {
            return;
        };
        drop(server); // the watchdog kills the server with SIGKILL
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            assert!(
                Instant::now() < deadline,
                "testkit: Redis on port {} still answers after being killed",
                self.port
            );
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts the server again on the same port (empty) and waits until it
    /// answers `PING`. Nothing happens if it is running.
    ///
    /// # Panics
    ///
    /// If it does not start (the message has the tail of its log).
    pub fn restart(&mut self) {
        if self.server.is_some() {
            return;
        }
        let started = process::start_on(&spec(&private_kind()), &[self.port])
            .unwrap_or_else(|m| panic!("{m}"));
        self.server = Some(started);
    }

    /// Sends one command, like [`Redis::command`].
    ///
    /// # Panics
    ///
    /// If the server is stopped or cannot be reached.
    pub fn command<A: AsRef<[u8]>>(&self, args: &[A]) -> Reply {
        command(self.port, args, COMMAND_TIMEOUT)
            .unwrap_or_else(|e| panic!("Redis on 127.0.0.1:{} failed: {e}", self.port))
    }
}

/// A RESP (version 2) reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple string, e.g. `OK` or `PONG`.
    Status(String),
    /// An error reply, e.g. `ERR unknown command`.
    Error(String),
    /// An integer.
    Integer(i64),
    /// A bulk string; `None` is the nil reply (e.g. `GET` of a missing key).
    Bulk(Option<Vec<u8>>),
    /// An array; `None` is the nil array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The reply as text if it is a status or a non-nil bulk string.
    pub fn as_text(&self) -> Option<String> {
        match self {
            Reply::Status(s) => Some(s.clone()),
            Reply::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }
}

fn command<A: AsRef<[u8]>>(port: u16, args: &[A], timeout: Duration) -> io::Result<Reply> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut message = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        let arg = arg.as_ref();
        message.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        message.extend_from_slice(arg);
        message.extend_from_slice(b"\r\n");
    }
    (&stream).write_all(&message)?;
    read_reply(&mut BufReader::new(&stream))
}

fn bad(what: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.into())
}

fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    let line = line
        .strip_suffix(b"\r\n")
        .ok_or_else(|| bad("RESP line without CRLF (connection closed?)"))?;
    let (&kind, rest) = line.split_first().ok_or_else(|| bad("empty RESP line"))?;
    let text = String::from_utf8_lossy(rest).into_owned();
    let number = || {
        text.parse::<i64>()
            .map_err(|_| bad(format!("bad RESP number {text:?}")))
    };
    Ok(match kind {
        b'+' => Reply::Status(text.clone()),
        b'-' => Reply::Error(text.clone()),
        b':' => Reply::Integer(number()?),
        b'$' => match usize::try_from(number()?) {
            Err(_) => Reply::Bulk(None),
            Ok(len) => {
                let mut data = vec![0; len + 2];
                reader.read_exact(&mut data)?;
                data.truncate(len);
                Reply::Bulk(Some(data))
            }
        },
        b'*' => match usize::try_from(number()?) {
            Err(_) => Reply::Array(None),
            Ok(len) => Reply::Array(Some(
                (0..len)
                    .map(|_| read_reply(reader))
                    .collect::<io::Result<_>>()?,
            )),
        },
        other => return Err(bad(format!("unknown RESP type byte {other:#04x}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_resp() {
        let mut input: &[u8] = b"*4\r\n+OK\r\n:-7\r\n$3\r\na\r\n\r\n$-1\r\n-ERR no\r\n";
        assert_eq!(
            read_reply(&mut input).expect("array parses"),
            Reply::Array(Some(vec![
                Reply::Status("OK".into()),
                Reply::Integer(-7),
                Reply::Bulk(Some(b"a\r\n".to_vec())),
                Reply::Bulk(None),
            ]))
        );
        assert_eq!(
            read_reply(&mut input).expect("error parses"),
            Reply::Error("ERR no".into())
        );
        assert!(read_reply(&mut input).is_err());
    }
}
