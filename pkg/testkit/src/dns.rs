//! A tiny authoritative DNS server on loopback, for handle resolution tests:
//! TXT records by name, over UDP and TCP on the same port.
//!
//! It runs on two OS threads (not on a test's runtime), so one server can
//! serve every test of a binary, and it answers like a real nameserver:
//! NOERROR with the TXT records of a known name, NOERROR without answers for
//! a name that exists without TXT records, NXDOMAIN otherwise. A test can
//! make it misbehave ([`DnsMode`]): stay silent, answer SERVFAIL, or set the
//! truncation bit over UDP so the client has to ask again over TCP.
//!
//! Its query parser is its own (not the client's under test): a short
//! straight reading of RFC 1035 §4.1 for one uncompressed question.
//!
//! ```no_run
//! use skyhouse_testkit::dns::DnsServer;
//!
//! let dns = DnsServer::start();
//! dns.set_txt("_atproto.alice.example.com", &["did=did:plc:abc"]);
//! let nameserver = dns.addr(); // 127.0.0.1:<port>, UDP and TCP
//! ```

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How the server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DnsMode {
    /// Answer from the records (the default).
    #[default]
    Answer,
    /// Read queries and never answer (a nameserver that is down).
    Silent,
    /// Answer SERVFAIL to everything.
    ServFail,
    /// Over UDP, answer with the truncation bit and no records; over TCP,
    /// answer in full.
    Truncate,
}

#[derive(Debug, Default)]
struct Zone {
    /// Lower-case name without the trailing dot → TXT records.
    txt: HashMap<String, Vec<Vec<u8>>>,
    mode: DnsMode,
}

/// A DNS server on `127.0.0.1:<port>` (UDP and TCP). It lives as long as
/// the test process.
#[derive(Debug, Clone)]
pub struct DnsServer {
    addr: SocketAddr,
    zone: Arc<Mutex<Zone>>,
    queries: Arc<AtomicUsize>,
}

impl DnsServer {
    /// Start a server on a spare loopback port (UDP and TCP both).
    pub fn start() -> DnsServer {
        let (udp, tcp) = bind_pair();
        let addr = udp.local_addr().expect("dns: local address");
        let server = DnsServer {
            addr,
            zone: Arc::default(),
            queries: Arc::default(),
        };
        let s = server.clone();
        std::thread::Builder::new()
            .name("testkit-dns-udp".into())
            .spawn(move || s.serve_udp(udp))
            .expect("dns: spawn the UDP thread");
        let s = server.clone();
        std::thread::Builder::new()
            .name("testkit-dns-tcp".into())
            .spawn(move || s.serve_tcp(tcp))
            .expect("dns: spawn the TCP thread");
        server
    }

    /// Where it listens (UDP and TCP).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the TXT records of `name` (case-insensitive; an empty list
    /// keeps the name existing without records).
    pub fn set_txt(&self, name: &str, records: &[&str]) {
        self.zone.lock().expect("dns zone").txt.insert(
            normalize(name),
            records.iter().map(|r| r.as_bytes().to_vec()).collect(),
        );
    }

    /// Forget `name` (it answers NXDOMAIN again).
    pub fn remove(&self, name: &str) {
        self.zone
            .lock()
            .expect("dns zone")
            .txt
            .remove(&normalize(name));
    }

    /// Change how the server answers.
    pub fn set_mode(&self, mode: DnsMode) {
        self.zone.lock().expect("dns zone").mode = mode;
    }

    /// Queries received so far (UDP and TCP).
    pub fn queries(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }

    fn serve_udp(&self, socket: UdpSocket) {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else {
                continue;
            };
            self.queries.fetch_add(1, Ordering::SeqCst);
            if let Some(reply) = self.reply(&buf[..n], true) {
                let _ = socket.send_to(&reply, from);
            }
        }
    }

    fn serve_tcp(&self, listener: TcpListener) {
        for stream in listener.incoming().flatten() {
            let s = self.clone();
            std::thread::spawn(move || s.serve_tcp_conn(stream));
        }
    }

    fn serve_tcp_conn(&self, mut stream: TcpStream) {
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        loop {
            let mut len = [0u8; 2];
            if stream.read_exact(&mut len).is_err() {
                return;
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if stream.read_exact(&mut msg).is_err() {
                return;
            }
            self.queries.fetch_add(1, Ordering::SeqCst);
            let Some(reply) = self.reply(&msg, false) else {
                return;
            };
            let mut out = (reply.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&reply);
            if stream.write_all(&out).is_err() {
                return;
            }
        }
    }

    /// The reply to `query`, or `None` to stay silent.
    fn reply(&self, query: &[u8], udp: bool) -> Option<Vec<u8>> {
        let q = Question::parse(query)?;
        let zone = self.zone.lock().expect("dns zone");
        let (rcode, records, truncated) = match zone.mode {
            DnsMode::Silent => return None,
            DnsMode::ServFail => (2, Vec::new(), false),
            DnsMode::Truncate if udp => (0, Vec::new(), true),
            DnsMode::Answer | DnsMode::Truncate => match zone.txt.get(&q.name) {
                Some(txt) if q.qtype == 16 => (0, txt.clone(), false),
                Some(_) => (0, Vec::new(), false),
                None => (3, Vec::new(), false),
            },
        };
        drop(zone);
        let mut out = Vec::with_capacity(512);
        out.extend_from_slice(&q.id.to_be_bytes());
        // QR, AA, the client's RD, RA; TC when asked to; the rcode.
        let mut flags: u16 = 0x8000 | 0x0400 | (q.flags & 0x0100) | 0x0080 | rcode;
        if truncated {
            flags |= 0x0200;
        }
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(records.len() as u16).to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0]);
        out.extend_from_slice(&q.wire);
        for record in &records {
            out.extend_from_slice(&[0xC0, 12]); // the question's name
            out.extend_from_slice(&16u16.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&60u32.to_be_bytes());
            let mut rdata = Vec::new();
            for chunk in record.chunks(255) {
                rdata.push(chunk.len() as u8);
                rdata.extend_from_slice(chunk);
            }
            if record.is_empty() {
                rdata.push(0);
            }
            out.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
            out.extend_from_slice(&rdata);
        }
        Some(out)
    }
}

/// The question of a query.
struct Question {
    id: u16,
    flags: u16,
    /// Lower-case dotted name.
    name: String,
    qtype: u16,
    /// The question section as received (name, type, class).
    wire: Vec<u8>,
}

impl Question {
    fn parse(msg: &[u8]) -> Option<Question> {
        let id = u16::from_be_bytes([*msg.first()?, *msg.get(1)?]);
        let flags = u16::from_be_bytes([*msg.get(2)?, *msg.get(3)?]);
        let qdcount = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
        if flags & 0x8000 != 0 || qdcount != 1 {
            return None;
        }
        let mut pos = 12;
        let mut labels = Vec::new();
        loop {
            let len = usize::from(*msg.get(pos)?);
            pos += 1;
            if len == 0 {
                break;
            }
            if len > 63 {
                return None;
            }
            labels.push(String::from_utf8_lossy(msg.get(pos..pos + len)?).to_ascii_lowercase());
            pos += len;
        }
        let qtype = u16::from_be_bytes([*msg.get(pos)?, *msg.get(pos + 1)?]);
        msg.get(pos + 2..pos + 4)?;
        Some(Question {
            id,
            flags,
            name: labels.join("."),
            qtype,
            wire: msg[12..pos + 4].to_vec(),
        })
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// A UDP socket and a TCP listener on the same spare loopback port.
fn bind_pair() -> (UdpSocket, TcpListener) {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("dns: bind UDP");
        let port = udp.local_addr().expect("dns: local address").port();
        if let Ok(tcp) = TcpListener::bind(("127.0.0.1", port)) {
            return (udp, tcp);
        }
    }
    panic!("dns: no port free for both UDP and TCP after 50 tries");
}
