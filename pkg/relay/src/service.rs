//! The tonic service: `StreamOperations`, `Ingest`, `IngestStream`,
//! `HealthCheck`.

use std::pin::Pin;
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

use crate::hub::Hub;
use crate::metrics;
use crate::pb::{
    health_check_reply::ServingStatus, HealthCheckReply, HealthCheckRequest, IngestReply,
    Operation, Source, StreamRequest,
};
use crate::server_pb::relay_server::{Relay, RelayServer};
use crate::wire::{EncodedBatch, OpRef, Prepared};

/// The largest message `Ingest`/`IngestStream` accept (a batch of operations).
pub const MAX_INGEST_MESSAGE: usize = 16 << 20;

/// How often a quiet relay drops operations past the retention age.
const TRIM_EVERY: Duration = Duration::from_secs(5);

/// After shutdown, how long in-flight calls get to finish before the
/// connections are dropped (a client that stopped reading would otherwise
/// hold a graceful shutdown forever).
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why the relay stopped.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    /// The configuration is not usable.
    #[error("{0}")]
    Config(#[from] crate::hub::ConfigError),
    /// A relay URL (`--relay-url`) is not usable.
    #[error("relay URL {url:?}: {reason}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Serve the relay on `listener` until `shutdown` is cancelled; client
/// streams end then too, and connections still open after
/// [`SHUTDOWN_GRACE`] are dropped.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    hub.config().validate()?;
    let trimmer = {
        let (hub, stop) = (hub.clone(), shutdown.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(TRIM_EVERY) => hub.trim(),
                }
            }
        })
    };
    let service = RelayServer::new(Service { hub }).max_decoding_message_size(MAX_INGEST_MESSAGE);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned());
    let result = tokio::select! {
        r = server => r,
        _ = async {
            shutdown.cancelled().await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => {
            tracing::warn!("Relay clients still connected after the grace period; dropping them.");
            Ok(())
        }
    };
    trimmer.abort();
    Ok(result?)
}

struct Service {
    hub: Hub,
}

/// Decode an ingested operation and check what filters and cursors rely on.
fn accept(op: &Operation) -> Option<Prepared> {
    if op.did.is_empty() || op.collection.is_empty() || op.rkey.is_empty() {
        return None;
    }
    let mut r = OpRef::of(op);
    if r.source == Source::Unspecified {
        r.source = Source::Live;
    }
    Some(Prepared::new(&r))
}

type OpStream = Pin<Box<dyn Stream<Item = Result<EncodedBatch, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Relay for Service {
    type StreamOperationsStream = OpStream;

    async fn stream_operations(
        &self,
        request: Request<StreamRequest>,
    ) -> Result<Response<Self::StreamOperationsStream>, Status> {
        let sub = self.hub.subscribe(request.get_ref())?;
        tracing::debug!(?sub, "Client subscribed.");
        Ok(Response::new(Box::pin(sub.into_stream())))
    }

    async fn ingest(&self, request: Request<Operation>) -> Result<Response<IngestReply>, Status> {
        let Some(op) = accept(request.get_ref()) else {
            metrics::ingest_invalid(1);
            return Err(Status::invalid_argument(
                "operation needs did, collection and rkey",
            ));
        };
        let last_cursor = self.hub.publish([op]);
        Ok(Response::new(IngestReply {
            accepted: 1,
            last_cursor,
        }))
    }

    async fn ingest_stream(
        &self,
        request: Request<Streaming<EncodedBatch>>,
    ) -> Result<Response<IngestReply>, Status> {
        let mut stream = request.into_inner();
        let mut reply = IngestReply::default();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let mut ops = Vec::with_capacity(batch.received.len());
            let mut invalid = 0;
            for raw in batch.received {
                match Operation::decode(raw).ok().as_ref().and_then(accept) {
                    Some(p) => ops.push(p),
                    None => invalid += 1,
                }
            }
            if invalid > 0 {
                metrics::ingest_invalid(invalid);
            }
            reply.accepted += ops.len() as u64;
            reply.last_cursor = self.hub.publish(ops);
        }
        Ok(Response::new(reply))
    }

    async fn health_check(
        &self,
        _request: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckReply>, Status> {
        let w = self.hub.window();
        Ok(Response::new(HealthCheckReply {
            status: ServingStatus::Serving as i32,
            oldest_cursor: w.oldest,
            newest_cursor: w.newest,
            clients: w.clients,
        }))
    }
}
