//! Why a DID could not be resolved, and whether trying again may help.

use skyhouse_atproto::crypto::DidDocError;

/// Why a DID could not be resolved (or its document lacks what was asked).
///
/// Every message is one line and names the DID. Errors are `Clone` because
/// concurrent callers waiting on the same fetch all receive it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// The string is not a DID, or not one this method accepts.
    #[error("{did}: not a valid DID: {reason}")]
    InvalidDid {
        /// The DID as given (clipped).
        did: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A DID method or form skyhouse does not resolve (atproto uses only
    /// `did:plc` and host-level `did:web`).
    #[error("{did}: unsupported DID: {reason}")]
    Unsupported {
        /// The DID.
        did: String,
        /// Why.
        reason: String,
    },
    /// The directory or host says the DID does not exist (HTTP 404, or 410
    /// for a tombstoned `did:plc`). Cached for the negative TTL.
    #[error("{did}: DID not found ({url} answered HTTP {status})")]
    NotFound {
        /// The DID.
        did: String,
        /// The URL asked.
        url: String,
        /// 404 or 410.
        status: u16,
    },
    /// Any other HTTP status.
    #[error("{did}: {url} answered HTTP {status}")]
    Http {
        /// The DID.
        did: String,
        /// The URL asked.
        url: String,
        /// The status.
        status: u16,
    },
    /// The request did not complete: connection refused, timeout, TLS, a
    /// body cut short.
    #[error("{did}: {url}: {message}")]
    Transport {
        /// The DID.
        did: String,
        /// The URL asked.
        url: String,
        /// What went wrong (the error chain on one line).
        message: String,
    },
    /// The document is larger than the configured cap.
    #[error("{did}: DID document from {url} is larger than {max} bytes")]
    TooLarge {
        /// The DID.
        did: String,
        /// The URL asked.
        url: String,
        /// The cap.
        max: usize,
    },
    /// The response is not a DID document for this DID.
    #[error("{did}: invalid DID document from {url}: {reason}")]
    InvalidDocument {
        /// The DID.
        did: String,
        /// The URL asked.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The document lacks a usable signing key.
    #[error("{did}: {source}")]
    Key {
        /// The DID.
        did: String,
        /// What is wrong with the `#atproto` verification method.
        source: DidDocError,
    },
    /// The document names no PDS (`#atproto_pds` service).
    #[error("{did}: DID document names no PDS (#atproto_pds service)")]
    NoPds {
        /// The DID.
        did: String,
    },
}

impl ResolveError {
    /// Whether the same request may succeed later: transport failures, HTTP
    /// 408, 425, 429 and 5xx. Everything else (a bad DID, not found, a bad
    /// or oversized document, a missing key) stays wrong until the DID's
    /// owner changes something, so a caller should dead-letter instead.
    pub fn is_retriable(&self) -> bool {
        match self {
            ResolveError::Transport { .. } => true,
            ResolveError::Http { status, .. } => {
                matches!(status, 408 | 425 | 429) || (500..600).contains(status)
            }
            _ => false,
        }
    }

    /// The DID the error is about.
    pub fn did(&self) -> &str {
        match self {
            ResolveError::InvalidDid { did, .. }
            | ResolveError::Unsupported { did, .. }
            | ResolveError::NotFound { did, .. }
            | ResolveError::Http { did, .. }
            | ResolveError::Transport { did, .. }
            | ResolveError::TooLarge { did, .. }
            | ResolveError::InvalidDocument { did, .. }
            | ResolveError::Key { did, .. }
            | ResolveError::NoPds { did } => did,
        }
    }
}

/// A [`ResolverConfig`](crate::ResolverConfig) value that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The PLC directory URL is not an absolute `http(s)://` URL.
    #[error("invalid PLC directory URL {url:?}: {reason}")]
    PlcUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No usable DNS nameserver (for handle checks).
    #[error("DNS nameservers: {reason}")]
    Nameservers {
        /// What is wrong.
        reason: String,
    },
    /// The handle well-known base URL is not an absolute `http(s)://` URL.
    #[error("invalid handle resolver URL {url:?}: {reason}")]
    HandleHttpBase {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A limit is zero.
    #[error("resolver setting {name} must be greater than zero")]
    Zero {
        /// The setting's name.
        name: &'static str,
    },
}

/// `s` cut to 100 characters, so an error about a hostile DID stays short.
pub(crate) fn clip(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retriable_classes() {
        let http = |status| ResolveError::Http {
            did: "did:plc:x".into(),
            url: "u".into(),
            status,
        };
        assert!(http(503).is_retriable());
        assert!(http(429).is_retriable());
        assert!(!http(400).is_retriable());
        assert!(!http(403).is_retriable());
        let not_found = ResolveError::NotFound {
            did: "did:plc:x".into(),
            url: "u".into(),
            status: 404,
        };
        assert!(!not_found.is_retriable());
        assert_eq!(not_found.did(), "did:plc:x");
        let transport = ResolveError::Transport {
            did: "did:plc:x".into(),
            url: "u".into(),
            message: "connection refused".into(),
        };
        assert!(transport.is_retriable());
    }

    #[test]
    fn clip_keeps_messages_short() {
        assert_eq!(clip("short"), "short");
        let long = "é".repeat(500);
        assert_eq!(clip(&long).chars().count(), 101);
    }
}
