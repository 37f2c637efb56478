//! A static PDS + PLC directory on loopback for `just bench-backfill`: serves
//! the repositories `bench/gen-backfill.mjs` wrote, as fast as the disk and
//! the socket allow, in a process of its own (so the worker's peak RSS is
//! the worker's).
//!
//! ```text
//! car_server [--listen 127.0.0.1:0] DIR...     (each DIR holds an index.tsv)
//! GET /<did>                                     the DID document (PLC directory JSON):
//!                                                key from index.tsv, PDS = this server
//! GET /xrpc/com.atproto.sync.getRepo?did=<did>   the CAR, Content-Length, streamed from
//!                                                disk (sendfile)
//! GET /.well-known/atproto-did                   with `Host: <id>.bench.test` (the handle
//!                                                of did:plc:<id>'s document): the DID, so
//!                                                the worker's handle check
//!                                                (`--handle-resolver-http`) is answered
//!                                                on loopback
//! ```
//!
//! `BENCH_HANDLE_DELAY_MS=N` holds each `/.well-known/atproto-did` answer N
//! ms (handle domains that answer slowly, as many do across the network).
//!
//! Prints one line, `{"url":"http://127.0.0.1:PORT","repos":N}`, once it
//! listens, then serves (one thread per connection, keep-alive) until its
//! standard input closes or it is killed. Std only: no async runtime, no
//! HTTP library.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

/// `BENCH_HANDLE_DELAY_MS`: how long each handle answer is held (default 0).
static HANDLE_DELAY: std::sync::LazyLock<std::time::Duration> = std::sync::LazyLock::new(|| {
    let ms = std::env::var("BENCH_HANDLE_DELAY_MS").ok();
    std::time::Duration::from_millis(ms.and_then(|v| v.parse().ok()).unwrap_or(0))
});

struct Repo {
    key: String,
    file: PathBuf,
}

fn main() {
    if let Err(e) = run() {
        eprintln!("car_server: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let mut listen = "127.0.0.1:0".to_string();
    let mut dirs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--listen" {
            listen = args.next().ok_or("--listen needs an address")?;
        } else {
            dirs.push(PathBuf::from(a));
        }
    }
    if dirs.is_empty() {
        return Err("usage: car_server [--listen ADDR] DIR... (each with an index.tsv)".into());
    }
    let mut repos = HashMap::new();
    for dir in &dirs {
        let index = dir.join("index.tsv");
        let text =
            std::fs::read_to_string(&index).map_err(|e| format!("{}: {e}", index.display()))?;
        for line in text.lines().filter(|l| !l.is_empty()) {
            let f: Vec<&str> = line.split('\t').collect();
            let [did, key, file, ..] = f[..] else {
                return Err(format!("{}: bad line {line:?}", index.display()));
            };
            let key = key.strip_prefix("did:key:").unwrap_or(key).to_string();
            repos.insert(
                did.to_string(),
                Repo {
                    key,
                    file: dir.join(file),
                },
            );
        }
    }
    let listener = TcpListener::bind(&listen).map_err(|e| format!("--listen {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let url = format!("http://{addr}");
    println!("{{\"url\":\"{url}\",\"repos\":{}}}", repos.len());
    io::stdout().flush().map_err(|e| e.to_string())?;
    // Exit when whoever started us goes away.
    std::thread::spawn(|| {
        let _ = io::copy(&mut io::stdin(), &mut io::sink());
        std::process::exit(0);
    });
    let shared = Arc::new((repos, url));
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let shared = shared.clone();
        std::thread::spawn(move || {
            let _ = serve(stream, &shared.0, &shared.1);
        });
    }
    Ok(())
}

/// One connection: requests until the client closes or asks to.
fn serve(stream: TcpStream, repos: &HashMap<String, Repo>, url: &str) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut out = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let target = line.split(' ').nth(1).unwrap_or("").to_string();
        let mut close = line.contains("HTTP/1.0");
        let mut body_len = 0u64;
        let mut host = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let h = line.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("connection") {
                    close = value.eq_ignore_ascii_case("close");
                } else if name.eq_ignore_ascii_case("content-length") {
                    body_len = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("host") {
                    host = value.to_ascii_lowercase();
                }
            }
        }
        io::copy(&mut (&mut reader).take(body_len), &mut io::sink())?;
        respond(&mut out, &target, &host, repos, url)?;
        if close {
            return Ok(());
        }
    }
}

fn respond(
    out: &mut TcpStream,
    target: &str,
    host: &str,
    repos: &HashMap<String, Repo>,
    url: &str,
) -> io::Result<()> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    if path == "/.well-known/atproto-did" {
        std::thread::sleep(*HANDLE_DELAY);
        let name = host.split(':').next().unwrap_or("");
        let did = name
            .strip_suffix(".bench.test")
            .map(|id| format!("did:plc:{id}"))
            .filter(|did| repos.contains_key(did));
        return match did {
            Some(did) => write!(
                out,
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{did}",
                did.len()
            ),
            None => json(out, 404, r#"{"error":"NotFound"}"#),
        };
    }
    if path == "/xrpc/com.atproto.sync.getRepo" {
        let did = query
            .split('&')
            .find_map(|kv| kv.strip_prefix("did="))
            .map(percent_decode)
            .unwrap_or_default();
        let Some(repo) = repos.get(&did) else {
            return json(
                out,
                400,
                r#"{"error":"RepoNotFound","message":"Could not find repo"}"#,
            );
        };
        let mut file = File::open(&repo.file)?;
        let len = file.metadata()?.len();
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/vnd.ipld.car\r\nContent-Length: {len}\r\n\r\n"
        )?;
        // File → TcpStream: std uses sendfile/splice here.
        io::copy(&mut file, out)?;
        return Ok(());
    }
    let did = percent_decode(path.trim_start_matches('/'));
    match repos.get(&did) {
        Some(repo) => {
            let doc = format!(
                concat!(
                    r#"{{"@context":["https://www.w3.org/ns/did/v1","https://w3id.org/security/multikey/v1"],"#,
                    r#""id":"{did}","alsoKnownAs":["at://{handle}.bench.test"],"#,
                    r#""verificationMethod":[{{"id":"{did}#atproto","type":"Multikey","controller":"{did}","publicKeyMultibase":"{key}"}}],"#,
                    r##""service":[{{"id":"#atproto_pds","type":"AtprotoPersonalDataServer","serviceEndpoint":"{url}"}}]}}"##
                ),
                did = did,
                handle = did.trim_start_matches("did:plc:"),
                key = repo.key,
                url = url,
            );
            json(out, 200, &doc)
        }
        None => json(
            out,
            404,
            &format!(r#"{{"message":"DID not registered: {did}"}}"#),
        ),
    }
}

fn json(out: &mut TcpStream, status: u16, body: &str) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        _ => "Not Found",
    };
    write!(
        out,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
