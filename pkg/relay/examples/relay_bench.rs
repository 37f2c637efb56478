//! `just bench-relay`: operations/s the relay delivers to 1, 10 and 50 gRPC
//! clients over loopback, from the bundled Jetstream capture (decoded by the
//! indexer's decoder) published in a loop.
//!
//! Each case starts a fresh relay on 127.0.0.1:0 and N clients on the same
//! runtime; the publisher stays at most `WINDOW` operations ahead of the
//! slowest client (so nobody is cut off and the measure is delivery, not
//! retention). Clients count operations without decoding their fields (as a
//! real ingester would, they could); the last operation of each batch is
//! decoded for its cursor.
//!
//! ```text
//! cargo run --release -p skyhouse-relay --example relay_bench -- [OPS] [CLIENTS,…] [decode]
//! ```
//! With `decode`, clients decode every operation into the generated
//! `Operation` struct (what a typical ingester does; client CPU, not relay CPU).
//! Prints one JSON line per case: clients, ops per client, seconds, aggregate
//! ops/s, per-client ops/s, peak RSS of the process so far (MiB).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use skyhouse_relay::pb::{Operation, Source, StreamRequest};
use skyhouse_relay::tonic::codegen::http::uri::PathAndQuery;
use skyhouse_relay::tonic::transport::Channel;
use skyhouse_relay::{Hub, Prepared, RelayConfig};
use skyhouse_transform::Rows;
use skyhouse_transform::{CollectionFilter, Decoder};
use tokio_util::sync::CancellationToken;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The publisher's lead over the slowest client (operations).
const WINDOW: u64 = 50_000;
/// Operations per publish call (the pipeline's coalescing).
const PUBLISH_GROUP: usize = 2_048;

/// `OperationBatch` with each operation left encoded.
#[derive(Clone, PartialEq, prost::Message)]
struct RawBatch {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    operations: Vec<Bytes>,
}

type Error = Box<dyn std::error::Error + Send + Sync>;

fn capture_ops() -> Vec<Prepared> {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../sources/testdata/corpus.jsonl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        eprintln!("{}: {e}", path.display());
        std::process::exit(1)
    });
    let all = CollectionFilter::new(["*"]).unwrap_or_default();
    let mut decoder = Decoder::new(all);
    let mut rows = Rows::default();
    rows.keep_for_tap(skyhouse_transform::TapExtras::Actions);
    for line in text.lines() {
        decoder.jetstream(line.as_bytes(), &mut rows);
    }
    rows.records
        .iter()
        .zip(&rows.tap)
        .map(|(r, t)| skyhouse_relay::prepare_record(r, Some(t), Source::Live))
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

async fn client(
    url: String,
    from: u64,
    last: u64,
    progress: Arc<AtomicU64>,
    decode: bool,
) -> Result<u64, Error> {
    let channel = Channel::from_shared(url)?
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .connect()
        .await?;
    let mut grpc = skyhouse_relay::tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<StreamRequest, RawBatch>::default();
    let req = StreamRequest {
        cursor: Some(from),
        client_name: "bench".into(),
        ..Default::default()
    };
    let path = PathAndQuery::from_static("/skyhouse.relay.v1.Relay/StreamOperations");
    let mut stream = grpc
        .server_streaming(skyhouse_relay::tonic::Request::new(req), path, codec)
        .await?
        .into_inner();
    let mut n = 0u64;
    while let Some(batch) = stream.message().await? {
        n += batch.operations.len() as u64;
        if decode {
            for op in &batch.operations {
                std::hint::black_box(Operation::decode(op.clone())?);
            }
        }
        if let Some(op) = batch.operations.last() {
            let cursor = Operation::decode(op.clone())?.cursor;
            progress.store(cursor, Ordering::Release);
            if cursor >= last {
                break;
            }
        }
    }
    Ok(n)
}

async fn case(ops: &[Prepared], total: u64, clients: usize, decode: bool) -> Result<(), Error> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let cfg = RelayConfig {
        retain_ops: 200_000,
        client_queue: 150_000,
        ..RelayConfig::default()
    };
    let hub = Hub::new(cfg, 1, shutdown.clone());
    let server = tokio::spawn(skyhouse_relay::serve(
        listener,
        hub.clone(),
        skyhouse_relay::ServeConfig::insecure(),
        shutdown.clone(),
    ));
    let from = hub.window().newest;
    let last = from + total;
    let progress: Vec<Arc<AtomicU64>> = (0..clients)
        .map(|_| Arc::new(AtomicU64::new(from)))
        .collect();
    let mut tasks = Vec::new();
    for p in &progress {
        tasks.push(tokio::spawn(client(
            url.clone(),
            from,
            last,
            p.clone(),
            decode,
        )));
    }
    let started = Instant::now();
    let mut published = 0u64;
    let mut source = ops.iter().cycle();
    while published < total {
        let slowest = progress
            .iter()
            .map(|p| p.load(Ordering::Acquire))
            .min()
            .unwrap_or(from);
        if from + published - slowest > WINDOW {
            tokio::time::sleep(Duration::from_micros(200)).await;
            continue;
        }
        let n = (PUBLISH_GROUP as u64).min(total - published) as usize;
        hub.publish(source.by_ref().take(n).cloned());
        published += n as u64;
        tokio::task::yield_now().await;
    }
    let mut delivered = 0;
    for t in tasks {
        let got = t.await??;
        if got != total {
            return Err(format!("a client got {got} of {total} operations").into());
        }
        delivered += got;
    }
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    server.await??;
    println!(
        "{{\"clients\":{clients},\"decode\":{decode},\"ops_per_client\":{total},\"seconds\":{secs:.3},\"ops_per_s\":{:.0},\"ops_per_s_per_client\":{:.0},\"peak_rss_mib\":{:.1}}}",
        delivered as f64 / secs,
        total as f64 / secs,
        peak_rss_mib()
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let clients: Vec<usize> = match args.next() {
        Some(list) => list.split(',').map(str::parse).collect::<Result<_, _>>()?,
        None => vec![1, 10, 50],
    };
    let decode = match args.next().as_deref() {
        None => false,
        Some("decode") => true,
        Some(other) => {
            return Err(format!("third argument: `decode` or nothing, not {other:?}").into())
        }
    };
    let ops = capture_ops();
    if ops.is_empty() {
        return Err("the capture has no operations".into());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        for n in clients {
            case(&ops, total, n, decode).await?;
        }
        Ok::<_, Error>(())
    })
}
