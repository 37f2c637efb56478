//! The relay's TLS (rustls with ring): a certificate and key, optionally a
//! CA whose client certificates are required. The PEM files are checked
//! when the relay starts (the key must match the certificate), so a wrong
//! file is a one-line error then, not a failed handshake later.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

/// The server's TLS material, read from PEM files.
#[derive(Clone)]
pub struct TlsConfig {
    cert: Vec<u8>,
    key: Vec<u8>,
    client_ca: Option<Vec<u8>>,
}

impl std::fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("client_certificates", &self.client_ca.is_some())
            .finish_non_exhaustive()
    }
}

fn read(flag: &str, path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{flag} {}: {e}", path.display()))
}

/// At least one certificate in `pem`.
pub(crate) fn check_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not PEM certificates: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(certs)
}

/// A certificate chain and the private key that goes with it.
pub(crate) fn check_identity(cert: &[u8], key: &[u8]) -> Result<(), String> {
    let certs = check_certs(cert)?;
    let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("private key: {e}"))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map(|_| ())
        .map_err(|e| format!("the key does not go with the certificate: {e}"))
}

impl TlsConfig {
    /// Read and check `cert` and `key` (PEM), and `client_ca` (PEM) if
    /// client certificates are required. Errors name the flag and file.
    pub fn from_files(
        cert: &Path,
        key: &Path,
        client_ca: Option<&PathBuf>,
    ) -> Result<TlsConfig, String> {
        let cert_pem = read("--tls-cert", cert)?;
        let key_pem = read("--tls-key", key)?;
        check_certs(&cert_pem).map_err(|e| format!("--tls-cert {}: {e}", cert.display()))?;
        check_identity(&cert_pem, &key_pem).map_err(|e| {
            format!(
                "--tls-key {} / --tls-cert {}: {e}",
                key.display(),
                cert.display()
            )
        })?;
        let client_ca = match client_ca {
            Some(p) => {
                let pem = read("--tls-client-ca", p)?;
                check_certs(&pem).map_err(|e| format!("--tls-client-ca {}: {e}", p.display()))?;
                Some(pem)
            }
            None => None,
        };
        Ok(TlsConfig {
            cert: cert_pem,
            key: key_pem,
            client_ca,
        })
    }

    /// PEM bytes already in memory (tests).
    pub fn from_pem(
        cert: Vec<u8>,
        key: Vec<u8>,
        client_ca: Option<Vec<u8>>,
    ) -> Result<TlsConfig, String> {
        check_identity(&cert, &key)?;
        if let Some(ca) = &client_ca {
            check_certs(ca)?;
        }
        Ok(TlsConfig {
            cert,
            key,
            client_ca,
        })
    }

    /// Whether clients must present a certificate.
    pub fn requires_client_certificates(&self) -> bool {
        self.client_ca.is_some()
    }

    pub(crate) fn server_config(&self) -> ServerTlsConfig {
        let mut tls = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert, &self.key));
        if let Some(ca) = &self.client_ca {
            tls = tls
                .client_ca_root(Certificate::from_pem(ca))
                .client_auth_optional(false);
        }
        tls
    }
}
