//! A minimal DNS client for the one question atproto asks: the TXT records
//! of `_atproto.<handle>`.
//!
//! Why not a resolver crate: the full-featured ones (hickory-resolver and
//! its protocol crate) add tens of thousands of lines for a single TXT
//! lookup; this module is a query builder, a bounds-checked response parser
//! and a UDP exchange with a TCP retry for truncated answers.
//!
//! The parser reads bytes from the network: every read is bounds-checked,
//! name compression may only point backwards (so it cannot loop), names stay
//! within 255 bytes, and any malformed response is a [`DnsError`], never a
//! panic (`fuzz/fuzz_targets/dns_response.rs` and the property tests hold it
//! to that). A reply is accepted only if its id and question match the query.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// Record type TXT.
const TYPE_TXT: u16 = 16;
/// Record type CNAME (followed to the name holding the TXT records).
const TYPE_CNAME: u16 = 5;
/// Record type OPT (EDNS0, RFC 6891).
const TYPE_OPT: u16 = 41;
/// Class IN.
const CLASS_IN: u16 = 1;
/// The UDP payload we advertise with EDNS0: 1232 bytes, the size the DNS
/// flag day 2020 recommends (no IP fragmentation on common paths).
pub const EDNS_UDP_SIZE: u16 = 1232;
/// Longest name on the wire (RFC 1035: 255 octets, length bytes included).
const MAX_NAME_WIRE: usize = 255;
/// Most CNAME hops followed from the question to the TXT records.
const MAX_CNAME_HOPS: usize = 8;
/// Largest UDP datagram read (anything longer is cut and fails to parse).
const UDP_BUFFER: usize = 4096;

/// Why a DNS exchange gave no usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DnsError {
    /// The name cannot be asked (empty label, label over 63 bytes, name over
    /// 253 characters).
    #[error("cannot ask DNS for {name:?}: {reason}")]
    BadName {
        /// The name (clipped).
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The response does not parse.
    #[error("malformed DNS response: {0}")]
    Malformed(&'static str),
    /// The response is not the answer to our query (another id, not a
    /// response, another question).
    #[error("DNS response does not answer the query: {0}")]
    Mismatch(&'static str),
    /// The answer did not fit and TCP did not help either.
    #[error("DNS response truncated")]
    Truncated,
    /// The server answered with an error code (2 SERVFAIL, 5 REFUSED, …).
    #[error("DNS server answered rcode {0}")]
    Rcode(u8),
    /// No nameserver answered in time.
    #[error("no answer from {servers} within {timeout_ms} ms per attempt")]
    Timeout {
        /// The nameservers asked, comma-separated.
        servers: String,
        /// The per-attempt timeout.
        timeout_ms: u128,
    },
    /// A socket failed.
    #[error("DNS over {transport} to {server}: {message}")]
    Io {
        /// `udp` or `tcp`.
        transport: &'static str,
        /// The nameserver.
        server: SocketAddr,
        /// The error.
        message: String,
    },
    /// No nameserver is configured.
    #[error("no DNS nameserver configured")]
    NoServers,
}

/// What a TXT lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxtAnswer {
    /// The name exists; its TXT records (each record's strings joined), in
    /// the order given. Empty when the name has no TXT record (NODATA).
    Records(Vec<Vec<u8>>),
    /// The name does not exist (NXDOMAIN).
    NxDomain,
}

/// The wire form of `name` (a sequence of length-prefixed labels and a zero
/// byte), or why it cannot be asked. A trailing dot is allowed.
fn encode_name(name: &str) -> Result<Vec<u8>, DnsError> {
    let bad = |reason| DnsError::BadName {
        name: name.chars().take(100).collect(),
        reason,
    };
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    if trimmed.is_empty() {
        return Err(bad("empty name"));
    }
    if trimmed.len() > 253 {
        return Err(bad("longer than 253 characters"));
    }
    let mut out = Vec::with_capacity(trimmed.len() + 2);
    for label in trimmed.split('.') {
        if label.is_empty() {
            return Err(bad("empty label"));
        }
        if label.len() > 63 {
            return Err(bad("label longer than 63 bytes"));
        }
        out.push(label.len() as u8);
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    Ok(out)
}

/// A query for the TXT records of `name` with id `id`: recursion desired,
/// one question, an EDNS0 OPT record advertising [`EDNS_UDP_SIZE`].
pub fn txt_query(id: u16, name: &str) -> Result<Vec<u8>, DnsError> {
    let qname = encode_name(name)?;
    let mut q = Vec::with_capacity(12 + qname.len() + 4 + 11);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&0x0100u16.to_be_bytes()); // RD
    q.extend_from_slice(&1u16.to_be_bytes()); // QDCOUNT
    q.extend_from_slice(&0u16.to_be_bytes()); // ANCOUNT
    q.extend_from_slice(&0u16.to_be_bytes()); // NSCOUNT
    q.extend_from_slice(&1u16.to_be_bytes()); // ARCOUNT: the OPT record
    q.extend_from_slice(&qname);
    q.extend_from_slice(&TYPE_TXT.to_be_bytes());
    q.extend_from_slice(&CLASS_IN.to_be_bytes());
    // OPT: root name, type 41, class = UDP payload size, TTL 0, no options.
    q.push(0);
    q.extend_from_slice(&TYPE_OPT.to_be_bytes());
    q.extend_from_slice(&EDNS_UDP_SIZE.to_be_bytes());
    q.extend_from_slice(&0u32.to_be_bytes());
    q.extend_from_slice(&0u16.to_be_bytes());
    Ok(q)
}

/// A bounds-checked reader over a message.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DnsError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or(DnsError::Malformed("message ends early"))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DnsError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, DnsError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, DnsError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A possibly compressed name at the current position, lower-cased, in
    /// wire form (labels and the final zero). The reader moves past the name
    /// as it appears here (up to and including its first pointer).
    fn name(&mut self) -> Result<Vec<u8>, DnsError> {
        let (name, end) = read_name(self.buf, self.pos)?;
        self.pos = end;
        Ok(name)
    }
}

/// Read the name starting at `start`: its lower-cased wire form, and the
/// position just after it in place. A compression pointer must point
/// strictly before the label that holds it, so every jump goes backwards
/// and the walk ends.
fn read_name(buf: &[u8], start: usize) -> Result<(Vec<u8>, usize), DnsError> {
    let mut out = Vec::with_capacity(64);
    let mut pos = start;
    let mut end = None;
    loop {
        let len = *buf
            .get(pos)
            .ok_or(DnsError::Malformed("name runs past the end"))?;
        match len & 0xC0 {
            0x00 => {
                if len == 0 {
                    out.push(0);
                    if out.len() > MAX_NAME_WIRE {
                        return Err(DnsError::Malformed("name longer than 255 bytes"));
                    }
                    return Ok((out, end.unwrap_or(pos + 1)));
                }
                let label = buf
                    .get(pos + 1..pos + 1 + len as usize)
                    .ok_or(DnsError::Malformed("label runs past the end"))?;
                out.push(len);
                out.extend(label.iter().map(u8::to_ascii_lowercase));
                if out.len() >= MAX_NAME_WIRE {
                    return Err(DnsError::Malformed("name longer than 255 bytes"));
                }
                pos += 1 + len as usize;
            }
            0xC0 => {
                let low = *buf
                    .get(pos + 1)
                    .ok_or(DnsError::Malformed("pointer runs past the end"))?;
                let target = (usize::from(len & 0x3F) << 8) | usize::from(low);
                if target >= pos {
                    return Err(DnsError::Malformed(
                        "compression pointer does not point back",
                    ));
                }
                end.get_or_insert(pos + 2);
                pos = target;
            }
            _ => return Err(DnsError::Malformed("unknown label type")),
        }
    }
}

/// Parse the response `buf` to the TXT query `id` for `name`.
///
/// Accepts NOERROR (the TXT records of `name`, following CNAMEs within the
/// answer) and NXDOMAIN; any other rcode, a truncated reply, or a reply to
/// another query is an error. Never panics, whatever the bytes.
pub fn parse_txt_response(buf: &[u8], id: u16, name: &str) -> Result<TxtAnswer, DnsError> {
    let want = encode_name(name)?.to_ascii_lowercase();
    let mut r = Reader { buf, pos: 0 };
    if r.u16()? != id {
        return Err(DnsError::Mismatch("another query id"));
    }
    let flags = r.u16()?;
    if flags & 0x8000 == 0 {
        return Err(DnsError::Mismatch("a query, not a response"));
    }
    if (flags >> 11) & 0xF != 0 {
        return Err(DnsError::Mismatch("not a standard query"));
    }
    if flags & 0x0200 != 0 {
        return Err(DnsError::Truncated);
    }
    let rcode = (flags & 0xF) as u8;
    let qdcount = r.u16()?;
    let ancount = r.u16()?;
    r.u16()?; // NSCOUNT
    r.u16()?; // ARCOUNT
    if qdcount != 1 {
        return Err(DnsError::Mismatch("not one question"));
    }
    let qname = r.name()?;
    let (qtype, qclass) = (r.u16()?, r.u16()?);
    if qname != want || qtype != TYPE_TXT || qclass != CLASS_IN {
        return Err(DnsError::Mismatch("another question"));
    }
    match rcode {
        0 => {}
        3 => return Ok(TxtAnswer::NxDomain),
        other => return Err(DnsError::Rcode(other)),
    }
    // Answers: TXT records and CNAMEs, by owner name.
    let mut txt: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    let mut cnames: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for _ in 0..ancount {
        let owner = r.name()?;
        let (rtype, class) = (r.u16()?, r.u16()?);
        r.u32()?; // TTL
        let rdlen = usize::from(r.u16()?);
        let rdata_start = r.pos;
        let rdata = r.take(rdlen)?;
        if class != CLASS_IN {
            continue;
        }
        match rtype {
            TYPE_TXT => txt.push((owner, txt_strings(rdata)?)),
            TYPE_CNAME => {
                let (target, end) = read_name(buf, rdata_start)?;
                if end != rdata_start + rdlen {
                    return Err(DnsError::Malformed("CNAME data is not one name"));
                }
                cnames.push((owner, target));
            }
            _ => {}
        }
    }
    // The authority and additional sections are not read: nothing in them
    // changes the answer.
    let mut owner = want;
    for _ in 0..=MAX_CNAME_HOPS {
        let records: Vec<Vec<u8>> = txt
            .iter()
            .filter(|(o, _)| *o == owner)
            .map(|(_, t)| t.clone())
            .collect();
        if !records.is_empty() {
            return Ok(TxtAnswer::Records(records));
        }
        match cnames.iter().find(|(o, _)| *o == owner) {
            Some((_, target)) => owner = target.clone(),
            None => return Ok(TxtAnswer::Records(Vec::new())),
        }
    }
    Err(DnsError::Malformed("CNAME chain too long"))
}

/// A TXT record's character-strings, joined.
fn txt_strings(rdata: &[u8]) -> Result<Vec<u8>, DnsError> {
    let mut out = Vec::with_capacity(rdata.len());
    let mut r = Reader { buf: rdata, pos: 0 };
    while r.pos < rdata.len() {
        let len = usize::from(r.u8()?);
        out.extend_from_slice(r.take(len)?);
    }
    Ok(out)
}

/// The nameservers of a `resolv.conf` text: each `nameserver <address>`
/// line, port 53. Addresses that do not parse (an IPv6 zone like
/// `fe80::1%eth0`) are skipped.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let ip: std::net::IpAddr = words.next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

/// The system's nameservers, from `/etc/resolv.conf`.
pub fn system_nameservers() -> std::io::Result<Vec<SocketAddr>> {
    std::fs::read_to_string("/etc/resolv.conf").map(|t| parse_resolv_conf(&t))
}

/// `IP` or `IP:PORT` (IPv6 as `[addr]:port` when a port is given): a
/// nameserver address as the `--dns-nameserver` flag takes it.
pub fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    let s = s.trim();
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    s.parse::<std::net::IpAddr>()
        .map(|ip| SocketAddr::new(ip, 53))
        .map_err(|_| format!("{s:?} is not an IP address or IP:PORT"))
}

/// Asks nameservers for TXT records over UDP, retrying over TCP when the
/// answer is truncated.
#[derive(Debug, Clone)]
pub struct TxtClient {
    servers: Vec<SocketAddr>,
    timeout: Duration,
    attempts: u32,
}

impl TxtClient {
    /// A client asking `servers` in order, waiting `timeout` for each
    /// answer, going through the list `attempts` times (≥ 1).
    pub fn new(servers: Vec<SocketAddr>, timeout: Duration, attempts: u32) -> TxtClient {
        TxtClient {
            servers,
            timeout,
            attempts: attempts.max(1),
        }
    }

    /// The nameservers asked.
    pub fn servers(&self) -> &[SocketAddr] {
        &self.servers
    }

    /// The TXT records of `name`. The first server to answer NOERROR or
    /// NXDOMAIN decides; SERVFAIL, REFUSED, a garbled answer or silence
    /// moves on to the next server (and the next round).
    pub async fn txt(&self, name: &str) -> Result<TxtAnswer, DnsError> {
        if self.servers.is_empty() {
            return Err(DnsError::NoServers);
        }
        let mut last = None;
        for _ in 0..self.attempts {
            for server in &self.servers {
                let id = fastrand::u16(..);
                let query = txt_query(id, name)?;
                let result = match self.udp(*server, &query, id, name).await {
                    Err(DnsError::Truncated) => self.tcp(*server, &query, id, name).await,
                    other => other,
                };
                match result {
                    Ok(answer) => return Ok(answer),
                    Err(e @ DnsError::BadName { .. }) => return Err(e),
                    Err(e) => last = Some(e),
                }
            }
        }
        Err(match last {
            Some(DnsError::Timeout { .. }) | None => self.timeout_error(),
            Some(e) => e,
        })
    }

    fn timeout_error(&self) -> DnsError {
        DnsError::Timeout {
            servers: self
                .servers
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(","),
            timeout_ms: self.timeout.as_millis(),
        }
    }

    /// One UDP exchange. Datagrams that are not the answer (another id, a
    /// stray packet) are ignored until the timeout.
    async fn udp(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
        name: &str,
    ) -> Result<TxtAnswer, DnsError> {
        let io = |e: std::io::Error| DnsError::Io {
            transport: "udp",
            server,
            message: e.to_string(),
        };
        let local: SocketAddr = if server.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            ([0u16; 8], 0).into()
        };
        let socket = UdpSocket::bind(local).await.map_err(io)?;
        socket.connect(server).await.map_err(io)?;
        socket.send(query).await.map_err(io)?;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut buf = vec![0u8; UDP_BUFFER];
        loop {
            let n = match tokio::time::timeout_at(deadline, socket.recv(&mut buf)).await {
                Err(_) => return Err(self.timeout_error()),
                Ok(r) => r.map_err(io)?,
            };
            match parse_txt_response(&buf[..n], id, name) {
                Err(DnsError::Mismatch(_)) => continue,
                other => return other,
            }
        }
    }

    /// One TCP exchange (RFC 1035 §4.2.2: each message after a two-byte length).
    async fn tcp(
        &self,
        server: SocketAddr,
        query: &[u8],
        id: u16,
        name: &str,
    ) -> Result<TxtAnswer, DnsError> {
        let io = |e: std::io::Error| DnsError::Io {
            transport: "tcp",
            server,
            message: e.to_string(),
        };
        let exchange = async {
            let mut stream = TcpStream::connect(server).await.map_err(io)?;
            let len =
                u16::try_from(query.len()).map_err(|_| DnsError::Malformed("query too long"))?;
            let mut msg = Vec::with_capacity(query.len() + 2);
            msg.extend_from_slice(&len.to_be_bytes());
            msg.extend_from_slice(query);
            stream.write_all(&msg).await.map_err(io)?;
            let mut len = [0u8; 2];
            stream.read_exact(&mut len).await.map_err(io)?;
            let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
            stream.read_exact(&mut buf).await.map_err(io)?;
            parse_txt_response(&buf, id, name)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or_else(|_| Err(self.timeout_error()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_encode_and_bad_names_are_refused() {
        assert_eq!(
            encode_name("_atproto.a.test.").expect("valid"),
            b"\x08_atproto\x01a\x04test\x00"
        );
        for bad in ["", ".", "a..b", &"x".repeat(64), &"a.".repeat(128)] {
            assert!(
                matches!(encode_name(bad), Err(DnsError::BadName { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn resolv_conf_lines() {
        let text = "# comment\nsearch example.com\nnameserver 10.0.0.1\nnameserver  ::1 # v6\n\
                    nameserver fe80::1%eth0\noptions ndots:1\n;nameserver 9.9.9.9\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.0.0.1:53".parse::<SocketAddr>().expect("addr"),
                "[::1]:53".parse().expect("addr")
            ]
        );
    }

    #[test]
    fn nameserver_flags() {
        assert_eq!(
            parse_nameserver("127.0.0.1"),
            Ok(([127, 0, 0, 1], 53).into())
        );
        assert_eq!(
            parse_nameserver("127.0.0.1:5353"),
            Ok(([127, 0, 0, 1], 5353).into())
        );
        assert_eq!(parse_nameserver("[::1]:5353").map(|a| a.port()), Ok(5353));
        assert!(parse_nameserver("dns.example").is_err());
    }

    #[test]
    fn pointers_must_point_back() {
        // Header for id 1, one question whose name is a pointer to itself.
        let mut msg = vec![0, 1, 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&[0xC0, 12, 0, 16, 0, 1]);
        assert_eq!(
            parse_txt_response(&msg, 1, "a.test"),
            Err(DnsError::Malformed(
                "compression pointer does not point back"
            ))
        );
    }
}
