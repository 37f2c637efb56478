//! The smallest complete relay client: stream operations, keep the cursor in a
//! file, resume from it after a restart or a disconnect, print a count per
//! collection.
//!
//! ```text
//! cargo run -p skyhouse-relay --example ingester -- [URL] [CURSOR_FILE] [COLLECTION_PREFIX…]
//! cargo run -p skyhouse-relay --example ingester -- http://127.0.0.1:50051 ingester.cursor app.bsky.feed.
//! ```
//!
//! Stops after `INGESTER_MAX_OPS` operations if that is set (otherwise at Ctrl-C).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use skyhouse_relay::pb::relay_client::RelayClient;
use skyhouse_relay::pb::StreamRequest;
use skyhouse_relay::tonic::transport::Channel;
use skyhouse_relay::tonic::Code;

type Error = Box<dyn std::error::Error>;

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

fn print_counts(counts: &BTreeMap<String, u64>) {
    for (collection, n) in counts {
        println!("{n:>10}  {collection}");
    }
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:50051".to_owned());
    let cursor_file = PathBuf::from(args.next().unwrap_or_else(|| "ingester.cursor".to_owned()));
    let collections: Vec<String> = args.collect();
    let max_ops: Option<u64> = std::env::var("INGESTER_MAX_OPS")
        .ok()
        .map(|v| v.parse())
        .transpose()?;

    let channel = Channel::from_shared(url.clone())?.connect().await?;
    let mut client = RelayClient::new(channel);
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut total = 0u64;
    loop {
        let cursor = load_cursor(&cursor_file)?;
        eprintln!("ingester: {url} from cursor {cursor:?}");
        let request = StreamRequest {
            cursor,
            collections: collections.clone(),
            client_name: "ingester".to_owned(),
            ..Default::default()
        };
        let mut stream = match client.stream_operations(request).await {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::OutOfRange => {
                // The saved cursor is gone from the relay's window: decide what to do
                // (here: say so and stop; delete the file to start from live).
                return Err(format!("ingester: {}", s.message()).into());
            }
            Err(s) => return Err(s.into()),
        };
        let ended = loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {
                    print_counts(&counts);
                    return Ok(());
                }
                msg = stream.message() => match msg {
                    Ok(Some(batch)) => {
                        for op in &batch.operations {
                            *counts.entry(op.collection.clone()).or_default() += 1;
                        }
                        total += batch.operations.len() as u64;
                        if let Some(last) = batch.operations.last() {
                            save_cursor(&cursor_file, last.cursor)?;
                        }
                        if max_ops.is_some_and(|m| total >= m) {
                            print_counts(&counts);
                            return Ok(());
                        }
                    }
                    Ok(None) => break None,
                    Err(s) => break Some(s),
                }
            }
        };
        match ended {
            // Too slow (RESOURCE_EXHAUSTED) or the relay restarted: resume from the file.
            Some(s) => eprintln!("ingester: stream ended: {}; resuming", s.message()),
            None => eprintln!("ingester: the relay closed the stream; resuming"),
        }
        print_counts(&counts);
    }
}
