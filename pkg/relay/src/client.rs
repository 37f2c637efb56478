//! Connecting to a relay: its URL (`http://` or `https://`), a token sent
//! as `authorization: Bearer …` on every call, and for TLS the CA to trust
//! and an optional client certificate. What `--relay-url` producers, the
//! examples and the tests use.

use std::time::Duration;

use tonic::metadata::MetadataValue;
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

use crate::pb::relay_client::RelayClient;
use crate::service::RelayError;

/// Where a relay is and how to authenticate to it. `Debug` never shows the
/// token.
#[derive(Clone, Default)]
pub struct ClientConfig {
    /// `http://host:port` or `https://host:port`.
    pub url: String,
    /// The relay token (`shr_…`); `None` for a relay run with
    /// `--insecure-no-auth`.
    pub token: Option<String>,
    /// `https://`: PEM of the CA(s) to trust. `None`: the webpki roots
    /// (public CAs).
    pub ca_pem: Option<Vec<u8>>,
    /// `https://` to a relay that asks for client certificates: PEM of the
    /// certificate (chain) and of its private key.
    pub identity_pem: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientConfig")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("ca_pem", &self.ca_pem.is_some())
            .field("identity_pem", &self.identity_pem.is_some())
            .finish()
    }
}

impl ClientConfig {
    /// A plain relay URL with a token.
    pub fn new(url: impl Into<String>, token: Option<String>) -> ClientConfig {
        ClientConfig {
            url: url.into(),
            token,
            ..ClientConfig::default()
        }
    }

    /// Check the URL, the token's form and the TLS material without
    /// connecting; the endpoint to connect to.
    pub fn endpoint(&self) -> Result<Endpoint, RelayError> {
        let bad = |reason: String| RelayError::Url {
            url: self.url.clone(),
            reason,
        };
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|e| bad(e.to_string()))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_timeout(Duration::from_secs(20));
        if let Some(t) = &self.token {
            if t.is_empty() || t.len() > 256 || !t.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(RelayError::Token(
                    "expected the printable token `skyhouse relay token create` printed".into(),
                ));
            }
        }
        match endpoint.uri().scheme_str() {
            Some("http") => {
                if self.ca_pem.is_some() || self.identity_pem.is_some() {
                    return Err(bad(
                        "a CA or client certificate is given but the URL is http:// (use https://)"
                            .into(),
                    ));
                }
                Ok(endpoint)
            }
            Some("https") => {
                let mut tls = ClientTlsConfig::new();
                tls = match &self.ca_pem {
                    Some(pem) => {
                        crate::tls::check_certs(pem).map_err(RelayError::Tls)?;
                        tls.ca_certificate(Certificate::from_pem(pem))
                    }
                    None => tls.with_webpki_roots(),
                };
                if let Some((cert, key)) = &self.identity_pem {
                    crate::tls::check_identity(cert, key).map_err(RelayError::Tls)?;
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                endpoint
                    .tls_config(tls)
                    .map_err(|e| RelayError::Tls(e.to_string()))
            }
            _ => Err(bad("expected http://host:port or https://host:port".into())),
        }
    }

    /// What adds the token to each call.
    pub fn interceptor(&self) -> Result<Bearer, RelayError> {
        let value = match &self.token {
            None => None,
            Some(t) => {
                let mut v: MetadataValue<_> = format!("Bearer {t}")
                    .parse()
                    .map_err(|_| RelayError::Token("not a valid header value".into()))?;
                // Never indexed by HPACK, never shown by header dumps.
                v.set_sensitive(true);
                Some(v)
            }
        };
        Ok(Bearer(value))
    }

    /// Connect now: a client whose calls carry the token.
    pub async fn connect(&self) -> Result<AuthedClient, RelayError> {
        let bearer = self.interceptor()?;
        let channel = self.endpoint()?.connect().await?;
        Ok(RelayClient::with_interceptor(channel, bearer))
    }

    /// A client that connects at its first call (and reconnects after).
    pub fn connect_lazy(&self) -> Result<AuthedClient, RelayError> {
        let bearer = self.interceptor()?;
        let channel = self.endpoint()?.connect_lazy();
        Ok(RelayClient::with_interceptor(channel, bearer))
    }
}

/// The relay client with its token.
pub type AuthedClient = RelayClient<InterceptedService<Channel, Bearer>>;

/// Adds `authorization: Bearer <token>` to every call (when there is a token).
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<tonic::metadata::Ascii>>);

impl std::fmt::Debug for Bearer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Bearer(<redacted>)"
        } else {
            "Bearer(none)"
        })
    }
}

impl Interceptor for Bearer {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(v) = &self.0 {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}
