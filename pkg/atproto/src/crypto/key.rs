//! [`PublicKey`] and signature verification.

use std::fmt;
use std::str::FromStr;

use k256::ecdsa::signature::hazmat::PrehashVerifier;

use super::{clip, sha256, Curve, KeyError};

/// Length of a compact `r || s` signature on either curve.
const SIG_LEN: usize = 64;

/// A public key on one of the curves atproto signs with.
///
/// Displayed (and serialized) as its `did:key`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum PublicKey {
    /// A secp256k1 ("K-256", `ES256K`) key.
    K256(k256::ecdsa::VerifyingKey),
    /// A NIST P-256 (`ES256`) key.
    P256(p256::ecdsa::VerifyingKey),
}

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// The signature is ASN.1 DER, which atproto does not accept.
    #[error("signature is DER-encoded ({0} bytes); atproto requires 64-byte compact r||s")]
    Der(usize),
    /// The signature is not 64 bytes long.
    #[error("signature is {0} bytes; atproto requires 64-byte compact r||s")]
    Length(usize),
    /// `r` or `s` is zero or not below the curve's group order.
    #[error("signature r or s is zero or out of range for {0}")]
    Scalar(Curve),
    /// `s` is in the upper half of the group order; atproto requires low-S
    /// signatures (the malleable twin of a valid signature is not accepted).
    #[error("signature has high S")]
    HighS,
    /// The signature is well formed but was not made by this key over this
    /// message. Holds the key's `did:key`.
    #[error("signature does not verify against {0}")]
    Mismatch(String),
}

impl PublicKey {
    /// The key from a SEC1-encoded point, compressed (33 bytes) or
    /// uncompressed (65 bytes).
    pub fn from_sec1(curve: Curve, bytes: &[u8]) -> Result<PublicKey, KeyError> {
        let key = match curve {
            Curve::K256 => k256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map(PublicKey::K256),
            Curve::P256 => p256::ecdsa::VerifyingKey::from_sec1_bytes(bytes).map(PublicKey::P256),
        };
        key.map_err(|_| KeyError::Point {
            curve,
            len: bytes.len(),
            input: clip(&hex(bytes)),
        })
    }

    /// The curve this key is on.
    pub fn curve(&self) -> Curve {
        match self {
            PublicKey::K256(_) => Curve::K256,
            PublicKey::P256(_) => Curve::P256,
        }
    }

    /// The compressed SEC1 encoding (`02`/`03` then `x`), as `did:key` uses.
    pub fn to_sec1_compressed(&self) -> [u8; 33] {
        let mut out = [0u8; 33];
        match self {
            PublicKey::K256(k) => out.copy_from_slice(k.to_encoded_point(true).as_bytes()),
            PublicKey::P256(k) => out.copy_from_slice(k.to_encoded_point(true).as_bytes()),
        }
        out
    }

    /// The uncompressed SEC1 encoding (`04` then `x` and `y`).
    pub fn to_sec1_uncompressed(&self) -> [u8; 65] {
        let mut out = [0u8; 65];
        match self {
            PublicKey::K256(k) => out.copy_from_slice(k.to_encoded_point(false).as_bytes()),
            PublicKey::P256(k) => out.copy_from_slice(k.to_encoded_point(false).as_bytes()),
        }
        out
    }

    /// Check `sig`, a 64-byte compact low-S signature, over the sha2-256 of
    /// `msg`.
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> Result<(), VerifyError> {
        self.verify_prehashed(&sha256(msg), sig)
    }

    /// Check `sig`, a 64-byte compact low-S signature, over a message whose
    /// sha2-256 is `digest`.
    ///
    /// High-S signatures are rejected (never normalized), as are DER
    /// signatures and any other length.
    pub fn verify_prehashed(&self, digest: &[u8; 32], sig: &[u8]) -> Result<(), VerifyError> {
        if sig.len() != SIG_LEN {
            return Err(if looks_der(sig) {
                VerifyError::Der(sig.len())
            } else {
                VerifyError::Length(sig.len())
            });
        }
        let ok = match self {
            PublicKey::K256(key) => {
                let sig = k256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| VerifyError::Scalar(Curve::K256))?;
                if sig.normalize_s().is_some() {
                    return Err(VerifyError::HighS);
                }
                key.verify_prehash(digest, &sig).is_ok()
            }
            PublicKey::P256(key) => {
                let sig = p256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| VerifyError::Scalar(Curve::P256))?;
                if sig.normalize_s().is_some() {
                    return Err(VerifyError::HighS);
                }
                key.verify_prehash(digest, &sig).is_ok()
            }
        };
        if ok {
            Ok(())
        } else {
            Err(VerifyError::Mismatch(self.to_did_key()))
        }
    }
}

/// Whether `sig` has the shape of an ASN.1 DER ECDSA signature:
/// `30 len 02 rlen r 02 slen s` with consistent lengths.
fn looks_der(sig: &[u8]) -> bool {
    let [0x30, total, 0x02, rlen, rest @ ..] = sig else {
        return false;
    };
    if *total as usize != sig.len() - 2 || rest.len() < *rlen as usize {
        return false;
    }
    match &rest[*rlen as usize..] {
        [0x02, slen, s @ ..] => s.len() == *slen as usize,
        _ => false,
    }
}

/// Lower-case hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

impl fmt::Display for PublicKey {
    /// The key's `did:key`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_did_key())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_did_key())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    /// Parse a `did:key` (see [`PublicKey::from_did_key`]).
    fn from_str(s: &str) -> Result<PublicKey, KeyError> {
        PublicKey::from_did_key(s)
    }
}

impl serde::Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PublicKey, D::Error> {
        let s = String::deserialize(d)?;
        PublicKey::from_did_key(&s).map_err(serde::de::Error::custom)
    }
}
