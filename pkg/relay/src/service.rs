//! The tonic service: `StreamOperations`, `Ingest`, `IngestStream`,
//! `HealthCheck`.

use std::pin::Pin;
use std::time::Duration;

use std::convert::Infallible;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};
use prost::Message;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::codegen::{http, Service as TowerService};
use tonic::server::NamedService;
use tonic::{Request, Response, Status, Streaming};

use crate::auth::{Auth, Caller, Scope};
use crate::hub::Hub;
use crate::metrics;
use crate::pb::{
    health_check_reply::ServingStatus, AckReply, AckRequest, Action, HealthCheckReply,
    HealthCheckRequest, IngestReply, Operation, Source, StreamRequest,
};
use crate::server_pb::relay_server::{Relay, RelayServer};
use crate::tls::TlsConfig;
use crate::wire::{EncodedBatch, OpRef, Prepared};

/// The largest message `Ingest`/`IngestStream` accept (a batch of operations).
pub const MAX_INGEST_MESSAGE: usize = 16 << 20;

/// How often a quiet relay drops operations past the retention age and
/// re-reads the tokens file if it changed.
const TRIM_EVERY: Duration = Duration::from_secs(2);

/// HTTP/2 pings on idle connections: a client gone without closing its
/// connection (a host that lost power, a network partition) is noticed
/// after about interval + timeout, and its stream ends.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

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
    /// A relay token is not usable (the message never contains it).
    #[error("relay token: {0}")]
    Token(String),
    /// TLS material is not usable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// How the relay authenticates callers and whether it speaks TLS.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Tokens, or none (`--insecure-no-auth`).
    pub auth: Auth,
    /// TLS, or plain HTTP/2.
    pub tls: Option<TlsConfig>,
}

impl ServeConfig {
    /// No TLS, no authentication (tests and loopback development).
    pub fn insecure() -> ServeConfig {
        ServeConfig {
            auth: Auth::insecure(),
            tls: None,
        }
    }
}

/// Serve the relay on `listener` until `shutdown` is cancelled; client
/// streams end then too, and connections still open after
/// [`SHUTDOWN_GRACE`] are dropped.
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    cfg: ServeConfig,
    shutdown: CancellationToken,
) -> Result<(), RelayError> {
    hub.config().validate()?;
    let auth = cfg.auth.clone();
    let trimmer = {
        let (hub, stop, auth) = (hub.clone(), shutdown.clone(), auth.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(TRIM_EVERY) => {
                        hub.trim();
                        auth.reload_if_changed();
                    }
                }
            }
        })
    };
    let closing = hub.clone();
    let service = Authed {
        inner: RelayServer::new(Service {
            hub,
            auth: auth.clone(),
        })
        .max_decoding_message_size(MAX_INGEST_MESSAGE),
        auth,
    };
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let mut builder = tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT));
    if let Some(tls) = &cfg.tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(|e| RelayError::Tls(e.to_string()))?;
    }
    let server = builder
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
    closing.close();
    Ok(result?)
}

struct Service {
    hub: Hub,
    auth: Auth,
}

/// The scope a method needs (`None`: open to all, `HealthCheck`).
fn scope_of(path: &str) -> Option<Scope> {
    match path.strip_prefix("/skyhouse.relay.v1.Relay/")? {
        "StreamOperations" | "Ack" => Some(Scope::Subscribe),
        "Ingest" | "IngestStream" => Some(Scope::Publish),
        _ => None,
    }
}

/// The relay service behind the token check: a call without a token that
/// grants its method's scope is refused before its body is read.
#[derive(Clone)]
struct Authed<S> {
    inner: S,
    auth: Auth,
}

impl<S> NamedService for Authed<S> {
    const NAME: &'static str = "skyhouse.relay.v1.Relay";
}

impl<S, B> TowerService<http::Request<B>> for Authed<S>
where
    S: TowerService<
            http::Request<B>,
            Response = http::Response<tonic::body::Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, Infallible>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if let Some(need) = scope_of(req.uri().path()) {
            let header = req
                .headers()
                .get(http::header::AUTHORIZATION)
                .map(|v| v.as_bytes());
            match self.auth.check(header, need) {
                Ok(caller) => {
                    req.extensions_mut().insert(caller);
                }
                Err(status) => return Box::pin(async move { Ok(status.into_http()) }),
            }
        }
        // The clone is ready only once polled: call the one that was.
        let clone = self.inner.clone();
        let mut ready = std::mem::replace(&mut self.inner, clone);
        Box::pin(ready.call(req))
    }
}

/// The caller put in the request by [`Authed`].
fn caller<T>(request: &Request<T>) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller { token_id: None })
}

/// Decode an ingested operation and check what filters and cursors rely on.
fn accept(op: &Operation) -> Option<Prepared> {
    if op.did.is_empty() || op.collection.is_empty() || op.rkey.is_empty() {
        return None;
    }
    if !matches!(
        op.action(),
        Action::Create | Action::Update | Action::Delete
    ) {
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
        let who = caller(&request);
        let sub = self
            .hub
            .subscribe(request.get_ref())?
            .guarded(self.auth.clone(), who);
        tracing::debug!(?sub, "Client subscribed.");
        Ok(Response::new(Box::pin(sub.into_stream())))
    }

    async fn ingest(&self, request: Request<Operation>) -> Result<Response<IngestReply>, Status> {
        let Some(op) = accept(request.get_ref()) else {
            metrics::ingest_invalid(1);
            return Err(Status::invalid_argument(
                "operation needs did, collection, rkey and an action (create, update or delete)",
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
        let who = caller(&request);
        let mut generation = self.auth.generation();
        let mut stream = request.into_inner();
        let mut reply = IngestReply::default();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            if self.auth.generation() != generation {
                generation = self.auth.generation();
                if !self.auth.still_valid(&who, Scope::Publish) {
                    return Err(Status::unauthenticated(
                        "the relay token was revoked (or lost its publish scope)",
                    ));
                }
            }
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

    async fn ack(&self, request: Request<AckRequest>) -> Result<Response<AckReply>, Status> {
        let r = request.get_ref();
        self.hub.ack(r.session, r.ack_id)?;
        Ok(Response::new(AckReply {}))
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
