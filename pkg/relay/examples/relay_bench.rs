//! `just bench-relay`: operations/s the relay delivers to 1, 10 and 50 gRPC
//! broadcast clients and across a consumer group of 4 over loopback, from
//! the bundled Jetstream capture (decoded by the indexer's decoder) published
//! in a loop, with the retention on disk (segments in a temporary directory,
//! every operation written before clients see it) and tokens on (every call
//! carries a bearer token checked against a tokens file).
//!
//! Each case starts a fresh relay on 127.0.0.1:0 and N clients on the same
//! runtime; the publisher stays at most `WINDOW` operations ahead of the
//! slowest client (so nobody is cut off and the measure is delivery, not
//! retention). Clients count operations without decoding their fields (as a
//! real ingester would, they could); the last operation of each batch is
//! decoded for its cursor. Group members acknowledge each batch (`Ack`) once
//! counted; the group's case delivers each operation to one member.
//!
//! ```text
//! cargo run --release -p skyhouse-relay --example relay_bench -- [OPS] [CLIENTS,…|gN,…] [decode]
//! ```
//! `g4` in the list is a group of 4 members sharing OPS operations.
//! With `decode`, clients decode every operation into the generated
//! `Operation` struct (what a typical ingester does; client CPU, not relay CPU).
//! Prints one JSON line per case: clients, ops per client, seconds, aggregate
//! ops/s, per-client ops/s, peak RSS of the process so far (MiB).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use prost::Message;
use skyhouse_relay::pb::{AckRequest, Operation, Source, StreamRequest};
use skyhouse_relay::tonic::codegen::http::uri::PathAndQuery;
use skyhouse_relay::tonic::transport::Channel;
use skyhouse_relay::{DiskConfig, Hub, Prepared, RelayConfig, Scope};
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
    #[prost(uint64, tag = "2")]
    ack_id: u64,
    #[prost(uint64, tag = "3")]
    session: u64,
}

/// A client of one case: where it streams and with what token.
#[derive(Clone)]
struct Target {
    url: String,
    token: String,
    /// A consumer group's name, or broadcast.
    group: Option<String>,
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
    target: Target,
    from: u64,
    last: u64,
    progress: Arc<AtomicU64>,
    delivered: Arc<AtomicU64>,
    done: CancellationToken,
    decode: bool,
) -> Result<u64, Error> {
    let channel = Channel::from_shared(target.url.clone())?
        .initial_stream_window_size(Some(4 << 20))
        .initial_connection_window_size(Some(8 << 20))
        .connect()
        .await?;
    let mut acks =
        skyhouse_relay::ClientConfig::new(target.url.clone(), Some(target.token.clone()))
            .connect()
            .await?;
    let mut grpc = skyhouse_relay::tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<StreamRequest, RawBatch>::default();
    let req = StreamRequest {
        cursor: Some(from),
        client_name: "bench".into(),
        group: target.group.clone().unwrap_or_default(),
        ..Default::default()
    };
    let mut req = skyhouse_relay::tonic::Request::new(req);
    req.metadata_mut()
        .insert("authorization", format!("Bearer {}", target.token).parse()?);
    let path = PathAndQuery::from_static("/skyhouse.relay.v1.Relay/StreamOperations");
    let mut stream = grpc.server_streaming(req, path, codec).await?.into_inner();
    let mut n = 0u64;
    loop {
        let batch = tokio::select! {
            b = stream.message() => match b? { Some(b) => b, None => break },
            _ = done.cancelled() => break,
        };
        n += batch.operations.len() as u64;
        if decode {
            for op in &batch.operations {
                std::hint::black_box(Operation::decode(op.clone())?);
            }
        }
        if batch.session != 0 {
            acks.ack(AckRequest {
                session: batch.session,
                ack_id: batch.ack_id,
            })
            .await?;
            let total = delivered.fetch_add(batch.operations.len() as u64, Ordering::AcqRel)
                + batch.operations.len() as u64;
            progress.store(from + total, Ordering::Release);
            if total >= last - from {
                done.cancel();
                break;
            }
        } else if let Some(op) = batch.operations.last() {
            let cursor = Operation::decode(op.clone())?.cursor;
            progress.store(cursor, Ordering::Release);
            if cursor >= last {
                break;
            }
        }
    }
    Ok(n)
}

/// One measured case: `clients` broadcast clients, or a group of that many
/// members.
#[derive(Debug, Clone, Copy)]
enum Clients {
    Broadcast(usize),
    Group(usize),
}

async fn case(ops: &[Prepared], total: u64, clients: Clients, decode: bool) -> Result<(), Error> {
    let dir = std::env::temp_dir().join(format!("skyhouse-relay-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let tokens = skyhouse_relay::TokenFile::new(dir.join("tokens.json"));
    let (_, token) = tokens.create("bench", &[Scope::Subscribe])?;
    let auth = skyhouse_relay::Auth::from_file(tokens.path())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let cfg = RelayConfig {
        retain_ops: 200_000,
        client_queue: 150_000,
        disk: true,
        ..RelayConfig::default()
    };
    let hub = Hub::open(
        cfg,
        DiskConfig::new(dir.join("segments")),
        1,
        shutdown.clone(),
    )?;
    let server = tokio::spawn(skyhouse_relay::serve(
        listener,
        hub.clone(),
        skyhouse_relay::ServeConfig { auth, tls: None },
        shutdown.clone(),
    ));
    let from = hub.window().newest;
    let last = from + total;
    let (n, group) = match clients {
        Clients::Broadcast(n) => (n, None),
        Clients::Group(n) => (n, Some("bench".to_owned())),
    };
    let target = Target {
        url,
        token,
        group: group.clone(),
    };
    // A group's progress is one shared count (each member gets a share).
    let delivered = Arc::new(AtomicU64::new(0));
    let done = CancellationToken::new();
    let progress: Vec<Arc<AtomicU64>> = (0..if group.is_some() { 1 } else { n })
        .map(|_| Arc::new(AtomicU64::new(from)))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..n {
        tasks.push(tokio::spawn(client(
            target.clone(),
            from,
            last,
            progress[i % progress.len()].clone(),
            delivered.clone(),
            done.clone(),
            decode,
        )));
    }
    if group.is_some() {
        // Every member joined (and the rebalances are over) before the clock starts.
        while hub.window().clients < n as u32 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
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
    let mut got = 0;
    for t in tasks {
        let one = t.await??;
        if group.is_none() && one != total {
            return Err(format!("a client got {one} of {total} operations").into());
        }
        got += one;
    }
    if group.is_some() && got != total {
        return Err(format!("the group got {got} of {total} operations").into());
    }
    let secs = started.elapsed().as_secs_f64();
    shutdown.cancel();
    server.await??;
    hub.close();
    let disk_mib = std::fs::read_dir(dir.join("segments"))?
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum::<u64>() as f64
        / (1 << 20) as f64;
    let _ = std::fs::remove_dir_all(&dir);
    println!(
        "{{\"clients\":{n},\"group\":{},\"decode\":{decode},\"ops\":{total},\"seconds\":{secs:.3},\"ops_per_s\":{:.0},\"ops_per_s_per_client\":{:.0},\"disk_mib\":{disk_mib:.0},\"peak_rss_mib\":{:.1}}}",
        group.is_some(),
        got as f64 / secs,
        got as f64 / secs / n as f64,
        peak_rss_mib()
    );
    Ok(())
}

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let total: u64 = args.next().map_or(Ok(1_000_000), |a| a.parse())?;
    let clients: Vec<Clients> = match args.next() {
        Some(list) => list
            .split(',')
            .map(|c| match c.strip_prefix('g') {
                Some(n) => n.parse().map(Clients::Group),
                None => c.parse().map(Clients::Broadcast),
            })
            .collect::<Result<_, _>>()?,
        None => vec![
            Clients::Broadcast(1),
            Clients::Broadcast(10),
            Clients::Broadcast(50),
            Clients::Group(4),
        ],
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
