//! A complete relay ingester: stream operations, store each one (a JSON line
//! in `STORE_DIR/operations.jsonl`, flushed and synced), then acknowledge:
//! in a consumer group with `Ack`, as a broadcast client by saving its cursor
//! (`STORE_DIR/cursor`). Reconnects when the stream ends, resuming where it
//! stopped; a refused token or request ends it with the relay's message.
//!
//! ```text
//! RELAY_TOKEN=shr_… INGESTER_GROUP=ingesters \
//!   cargo run -p skyhouse-relay --example ingester -- http://127.0.0.1:50051 store-a app.bsky.feed.
//! ```
//!
//! `RELAY_TOKEN`: a token with the subscribe scope (unset: none, for a relay
//! run with `--insecure-no-auth`). `INGESTER_GROUP`: join this consumer group
//! (unset: a broadcast stream that resumes from its cursor file).
//! `INGESTER_MAX_OPS`: stop after this many operations (default: Ctrl-C).
//! The tests run it (`cmd/skyhouse/tests/relay/examples.rs`) in a group with
//! the Python one (`ingester.py`).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use skyhouse_relay::pb::{AckRequest, Operation, StreamRequest};
use skyhouse_relay::tonic::Code;
use skyhouse_relay::ClientConfig;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// What to ingest and where to store it.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    pub token: Option<String>,
    pub group: Option<String>,
    pub store: PathBuf,
    pub collections: Vec<String>,
    pub max_ops: Option<u64>,
}

fn load_cursor(path: &Path) -> Result<Option<u64>, Error> {
    match std::fs::read_to_string(path) {
        Ok(s) => {
            Ok(Some(s.trim().parse().map_err(|e| {
                format!("{}: not a cursor: {e}", path.display())
            })?))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display()).into()),
    }
}

/// Write the cursor so that a crash leaves the old or the new one, never half.
fn save_cursor(path: &Path, cursor: u64) -> Result<(), Error> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{cursor}\n"))?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Append operations to the store and sync it: once this returns they are
/// kept, and only then are they acknowledged.
fn store(out: &mut File, ops: &[Operation]) -> Result<(), Error> {
    let mut buf = Vec::new();
    for op in ops {
        serde_json::to_writer(
            &mut buf,
            &serde_json::json!({
                "cursor": op.cursor,
                "did": op.did,
                "collection": op.collection,
                "rkey": op.rkey,
                "action": op.action().as_str_name(),
                "cid": op.cid,
                "rev": op.rev,
            }),
        )?;
        buf.push(b'\n');
    }
    out.write_all(&buf)?;
    out.sync_data()?;
    Ok(())
}

/// Ingest until `max_ops` operations are stored (forever if unset); returns
/// how many were.
pub async fn run(cfg: Config) -> Result<u64, Error> {
    std::fs::create_dir_all(&cfg.store)?;
    let cursor_file = cfg.store.join("cursor");
    let mut out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(cfg.store.join("operations.jsonl"))?;
    let mut client = ClientConfig::new(cfg.url.clone(), cfg.token.clone()).connect_lazy()?;
    let mut stored = 0u64;
    loop {
        let request = StreamRequest {
            // A group resumes from its own positions; a broadcast client from its file.
            cursor: match cfg.group {
                Some(_) => None,
                None => load_cursor(&cursor_file)?,
            },
            collections: cfg.collections.clone(),
            client_name: "ingester".to_owned(),
            group: cfg.group.clone().unwrap_or_default(),
            ..Default::default()
        };
        let mut stream = match client.stream_operations(request).await {
            Ok(r) => r.into_inner(),
            // Nothing to retry: a refused token, a bad request, a cursor
            // gone from the window (decide what to do: here, stop).
            Err(s)
                if matches!(
                    s.code(),
                    Code::Unauthenticated
                        | Code::PermissionDenied
                        | Code::InvalidArgument
                        | Code::OutOfRange
                        | Code::FailedPrecondition
                ) =>
            {
                return Err(format!("ingester: {:?}: {}", s.code(), s.message()).into());
            }
            Err(s) => {
                eprintln!("ingester: {}; retrying", s.message());
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let ended = loop {
            match stream.message().await {
                Ok(Some(batch)) => {
                    store(&mut out, &batch.operations)?;
                    stored += batch.operations.len() as u64;
                    if batch.session != 0 {
                        let ack = AckRequest {
                            session: batch.session,
                            ack_id: batch.ack_id,
                        };
                        if let Err(s) = client.ack(ack).await {
                            // Not acknowledged: the group delivers them again.
                            break Some(s);
                        }
                    } else if let Some(last) = batch.operations.last() {
                        save_cursor(&cursor_file, last.cursor)?;
                    }
                    if cfg.max_ops.is_some_and(|m| stored >= m) {
                        return Ok(stored);
                    }
                }
                Ok(None) => break None,
                Err(s) => break Some(s),
            }
        };
        match ended {
            // Too slow (RESOURCE_EXHAUSTED) or the relay restarted: resume.
            Some(s) => eprintln!("ingester: stream ended: {}; resuming", s.message()),
            None => eprintln!("ingester: the relay closed the stream; resuming"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[allow(dead_code)] // the tests include this file and call `run`
#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let store = PathBuf::from(args.next().unwrap_or_else(|| "ingester-store".to_owned()));
    let cfg = Config {
        url,
        token: std::env::var("RELAY_TOKEN").ok().filter(|t| !t.is_empty()),
        group: std::env::var("INGESTER_GROUP")
            .ok()
            .filter(|g| !g.is_empty()),
        store,
        collections: args.collect(),
        max_ops: std::env::var("INGESTER_MAX_OPS")
            .ok()
            .map(|v| v.parse())
            .transpose()?,
    };
    tokio::select! {
        r = run(cfg) => { let n = r?; eprintln!("ingester: stored {n} operations"); }
        _ = tokio::signal::ctrl_c() => eprintln!("ingester: stopped"),
    }
    Ok(())
}
