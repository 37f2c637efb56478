//! DID documents: the parts atproto reads (handle, signing key, PDS).

use serde::{Deserialize, Deserializer, Serialize};

use super::{clip, KeyError, KeySuite, PublicKey};

/// A DID document (`did:plc` or `did:web`), keeping the fields atproto uses.
///
/// Unknown fields are ignored; `alsoKnownAs`, `verificationMethod` and
/// `service` may be missing or `null` (read as empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DidDocument {
    /// The JSON-LD `@context`, kept as given.
    #[serde(rename = "@context", default, skip_serializing_if = "Option::is_none")]
    pub context: Option<serde_json::Value>,
    /// The DID this document describes.
    pub id: String,
    /// Other identifiers of the subject; atproto handles are `at://<handle>`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub also_known_as: Vec<String>,
    /// Public keys; the account's signing key has id `#atproto`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub verification_method: Vec<VerificationMethod>,
    /// Services; the account's PDS has id `#atproto_pds`.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub service: Vec<Service>,
}

/// One entry of a DID document's `verificationMethod`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerificationMethod {
    /// `#fragment` or `<did>#fragment`.
    pub id: String,
    /// The suite, e.g. `Multikey` or `EcdsaSecp256k1VerificationKey2019`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// The DID controlling the key (empty when absent).
    #[serde(default)]
    pub controller: String,
    /// The key in multibase, in the form its `type` dictates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_multibase: Option<String>,
}

/// One entry of a DID document's `service`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Service {
    /// `#fragment` or `<did>#fragment`.
    pub id: String,
    /// The service type, e.g. `AtprotoPersonalDataServer`.
    #[serde(rename = "type")]
    pub r#type: String,
    /// Where the service is.
    pub service_endpoint: ServiceEndpoint,
}

/// A service's `serviceEndpoint`: a URL string, or (tolerated, unused by
/// atproto) a map or array of them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ServiceEndpoint {
    /// A single URL.
    Url(String),
    /// Any other JSON value (an object or array of endpoints).
    Other(serde_json::Value),
}

impl ServiceEndpoint {
    /// The URL, when the endpoint is a single string.
    pub fn as_url(&self) -> Option<&str> {
        match self {
            ServiceEndpoint::Url(u) => Some(u),
            ServiceEndpoint::Other(_) => None,
        }
    }
}

/// Why a DID document, or a key in it, could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DidDocError {
    /// The bytes are not JSON of a DID document's shape.
    #[error("invalid DID document JSON: {0}")]
    Json(String),
    /// The document's `id` is not a DID.
    #[error("DID document id is not a DID: {0:?}")]
    NotDid(String),
    /// No verification method has the wanted id.
    #[error("no #{fragment} verification method in DID document {did}")]
    NoMethod {
        /// The document's DID.
        did: String,
        /// The fragment looked for, without `#`.
        fragment: String,
    },
    /// The verification method has no `publicKeyMultibase`.
    #[error("#{fragment} verification method in DID document {did} has no publicKeyMultibase")]
    NoMultibase {
        /// The document's DID.
        did: String,
        /// The fragment, without `#`.
        fragment: String,
    },
    /// The verification method's `type` is not a suite atproto uses.
    #[error("unsupported #{fragment} verification method type {kind:?} in DID document {did}")]
    MethodType {
        /// The document's DID.
        did: String,
        /// The fragment, without `#`.
        fragment: String,
        /// The `type` found.
        kind: String,
    },
    /// The key does not decode.
    #[error("bad #{fragment} key in DID document {did}: {error}")]
    Key {
        /// The document's DID.
        did: String,
        /// The fragment, without `#`.
        fragment: String,
        /// What was wrong with the key.
        error: KeyError,
    },
}

impl DidDocument {
    /// Parse a DID document from JSON; its `id` must be a DID.
    pub fn from_json(json: &[u8]) -> Result<DidDocument, DidDocError> {
        let doc: DidDocument =
            serde_json::from_slice(json).map_err(|e| DidDocError::Json(e.to_string()))?;
        if !is_did(&doc.id) {
            return Err(DidDocError::NotDid(clip(&doc.id)));
        }
        Ok(doc)
    }

    /// Whether an entry `id` names `#fragment` of this document (`#fragment`
    /// or `<did>#fragment`).
    fn names(&self, id: &str, fragment: &str) -> bool {
        let local = id.strip_prefix(self.id.as_str()).unwrap_or(id);
        local.strip_prefix('#') == Some(fragment)
    }

    /// The first verification method with id `#fragment` (give `fragment`
    /// without `#`).
    pub fn verification_method(&self, fragment: &str) -> Option<&VerificationMethod> {
        self.verification_method
            .iter()
            .find(|m| self.names(&m.id, fragment))
    }

    /// The public key of verification method `#fragment` (give `fragment`
    /// without `#`), in any [`KeySuite`].
    pub fn verification_key(&self, fragment: &str) -> Result<PublicKey, DidDocError> {
        let did = || clip(&self.id);
        let Some(method) = self.verification_method(fragment) else {
            return Err(DidDocError::NoMethod {
                did: did(),
                fragment: fragment.to_owned(),
            });
        };
        let Some(suite) = KeySuite::from_name(&method.r#type) else {
            return Err(DidDocError::MethodType {
                did: did(),
                fragment: fragment.to_owned(),
                kind: clip(&method.r#type),
            });
        };
        let Some(multibase) = method.public_key_multibase.as_deref() else {
            return Err(DidDocError::NoMultibase {
                did: did(),
                fragment: fragment.to_owned(),
            });
        };
        PublicKey::from_multibase(multibase, suite).map_err(|error| DidDocError::Key {
            did: did(),
            fragment: fragment.to_owned(),
            error,
        })
    }

    /// The account's repository signing key (verification method `#atproto`).
    pub fn signing_key(&self) -> Result<PublicKey, DidDocError> {
        self.verification_key("atproto")
    }

    /// A labeler's label signing key (verification method `#atproto_label`).
    pub fn labeler_key(&self) -> Result<PublicKey, DidDocError> {
        self.verification_key("atproto_label")
    }

    /// The first service with id `#fragment` (give `fragment` without `#`)
    /// and type `service_type`.
    pub fn find_service(&self, fragment: &str, service_type: &str) -> Option<&Service> {
        self.service
            .iter()
            .find(|s| s.r#type == service_type && self.names(&s.id, fragment))
    }

    /// The URL of service `#fragment` of type `service_type`, when it is a
    /// single string.
    pub fn service_endpoint(&self, fragment: &str, service_type: &str) -> Option<&str> {
        self.find_service(fragment, service_type)
            .and_then(|s| s.service_endpoint.as_url())
    }

    /// The account's PDS URL (service `#atproto_pds` of type
    /// `AtprotoPersonalDataServer`), as written.
    pub fn pds_endpoint(&self) -> Option<&str> {
        self.service_endpoint("atproto_pds", "AtprotoPersonalDataServer")
    }

    /// A labeler's URL (service `#atproto_labeler` of type `AtprotoLabeler`).
    pub fn labeler_endpoint(&self) -> Option<&str> {
        self.service_endpoint("atproto_labeler", "AtprotoLabeler")
    }

    /// The handle the document claims: the first `at://` entry of
    /// `alsoKnownAs`, without `at://`, as written (not validated or
    /// normalized; a handle must still be confirmed by resolving it).
    pub fn handle(&self) -> Option<&str> {
        self.also_known_as
            .iter()
            .find_map(|aka| aka.strip_prefix("at://"))
            .filter(|h| !h.is_empty())
    }
}

/// Whether `s` looks like a DID: `did:<method>:<id>` with a lower-case method.
fn is_did(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("did:") else {
        return false;
    };
    match rest.split_once(':') {
        Some((method, id)) => {
            !method.is_empty() && method.bytes().all(|b| b.is_ascii_lowercase()) && !id.is_empty()
        }
        None => false,
    }
}

/// Deserialize a list where `null` means empty.
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}
