//! Public keys, signatures and DID documents as atproto uses them.
//!
//! atproto signs with ECDSA over one of two curves, secp256k1 ("K-256",
//! `ES256K`) or NIST P-256 (`ES256`), always over the sha2-256 of the message,
//! and always as a 64-byte compact `r || s` signature whose `s` is in the lower
//! half of the group order ("low-S"). [`PublicKey::verify`] enforces all of
//! that: DER signatures and high-S signatures are rejected, not repaired.
//!
//! Keys are written as `did:key:z…` (multibase base58btc of a multicodec
//! varint followed by the compressed SEC1 point), see
//! [`PublicKey::from_did_key`]. DID documents ([`DidDocument`]) carry the
//! account's signing key under the `#atproto` verification method, either in
//! that same `Multikey` form or in the legacy
//! `EcdsaSecp256k1VerificationKey2019` / `EcdsaSecp256r1VerificationKey2019`
//! forms (bare key bytes, compressed or not), see [`PublicKey::from_multibase`].

mod diddoc;
mod didkey;
mod key;

use std::fmt;

use sha2::{Digest, Sha256};

pub use diddoc::{DidDocError, DidDocument, Service, ServiceEndpoint, VerificationMethod};
pub use didkey::{KeyError, KeySuite, DID_KEY_PREFIX};
pub use key::{PublicKey, VerifyError};

/// Multicodec of a compressed secp256k1 public key (`secp256k1-pub`).
pub const MULTICODEC_K256_PUB: u64 = 0xe7;
/// Multicodec of a compressed P-256 public key (`p256-pub`).
pub const MULTICODEC_P256_PUB: u64 = 0x1200;

/// The sha2-256 digest of `data`.
pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The two elliptic curves atproto signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Curve {
    /// secp256k1 ("K-256"): JWT algorithm `ES256K`, multicodec `0xe7`.
    K256,
    /// NIST P-256 (secp256r1): JWT algorithm `ES256`, multicodec `0x1200`.
    P256,
}

impl Curve {
    /// The multicodec code of this curve's compressed public keys.
    pub const fn multicodec(self) -> u64 {
        match self {
            Curve::K256 => MULTICODEC_K256_PUB,
            Curve::P256 => MULTICODEC_P256_PUB,
        }
    }

    /// The curve whose public-key multicodec is `code`, if atproto allows it.
    pub const fn from_multicodec(code: u64) -> Option<Curve> {
        match code {
            MULTICODEC_K256_PUB => Some(Curve::K256),
            MULTICODEC_P256_PUB => Some(Curve::P256),
            _ => None,
        }
    }

    /// The JWT `alg` name of signatures on this curve (`ES256K` or `ES256`).
    pub const fn jwt_alg(self) -> &'static str {
        match self {
            Curve::K256 => "ES256K",
            Curve::P256 => "ES256",
        }
    }

    /// The curve of a JWT `alg` name (`ES256K` or `ES256`).
    pub fn from_jwt_alg(alg: &str) -> Option<Curve> {
        match alg {
            "ES256K" => Some(Curve::K256),
            "ES256" => Some(Curve::P256),
            _ => None,
        }
    }
}

impl fmt::Display for Curve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Curve::K256 => "K-256",
            Curve::P256 => "P-256",
        })
    }
}

/// Longest piece of untrusted input quoted in an error message.
const CLIP_CHARS: usize = 80;

/// `s` shortened for an error message: at most [`CLIP_CHARS`] characters,
/// with `…` marking a cut.
fn clip(s: &str) -> String {
    match s.char_indices().nth(CLIP_CHARS) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}…", &s[..at]),
    }
}
