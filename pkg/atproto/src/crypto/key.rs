//! [`PublicKey`] and signature verification.

use std::fmt;
use std::str::FromStr;

use k256::ecdsa::signature::hazmat::PrehashVerifier;

use super::{clip, sha256, Curve, KeyError};

/// libsecp256k1's verification context, built once (creating one costs
/// more than a verification).
fn secp() -> &'static secp256k1::Secp256k1<secp256k1::VerifyOnly> {
    static CTX: std::sync::OnceLock<secp256k1::Secp256k1<secp256k1::VerifyOnly>> =
        std::sync::OnceLock::new();
    CTX.get_or_init(secp256k1::Secp256k1::verification_only)
}

/// A low-S K-256 signature over `digest`, checked by libsecp256k1 (~5x
/// faster than k256's arithmetic; the firehose `--verify` hot path). The
/// key is handed over uncompressed, which libsecp256k1 only checks is on
/// the curve (no square root). k256 stays the fallback should libsecp256k1
/// refuse a key k256 accepted (it cannot for a valid point).
fn verify_k256(
    key: &k256::ecdsa::VerifyingKey,
    digest: &[u8; 32],
    sig: &k256::ecdsa::Signature,
) -> bool {
    let point = key.to_encoded_point(false);
    let (Ok(pk), Ok(sig)) = (
        secp256k1::PublicKey::from_slice(point.as_bytes()),
        secp256k1::ecdsa::Signature::from_compact(&sig.to_bytes()),
    ) else {
        return key.verify_prehash(digest, sig).is_ok();
    };
    let msg = secp256k1::Message::from_digest(*digest);
    secp().verify_ecdsa(msg, &sig, &pk).is_ok()
}

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
        let ok = match (self, self.checked_sig(sig)?) {
            (PublicKey::P256(key), Sig::P256(parsed)) => verify_p256(key, msg, sig, &parsed),
            (_, parsed) => self.verify_parsed(&sha256(msg), &parsed),
        };
        self.outcome(ok)
    }

    /// Check `sig`, a 64-byte compact low-S signature, over a message whose
    /// sha2-256 is `digest`.
    ///
    /// High-S signatures are rejected (never normalized), as are DER
    /// signatures and any other length.
    pub fn verify_prehashed(&self, digest: &[u8; 32], sig: &[u8]) -> Result<(), VerifyError> {
        let parsed = self.checked_sig(sig)?;
        let ok = self.verify_parsed(digest, &parsed);
        self.outcome(ok)
    }

    /// `sig` parsed for this key's curve: 64 bytes, scalars in range, low S.
    fn checked_sig(&self, sig: &[u8]) -> Result<Sig, VerifyError> {
        if sig.len() != SIG_LEN {
            return Err(if looks_der(sig) {
                VerifyError::Der(sig.len())
            } else {
                VerifyError::Length(sig.len())
            });
        }
        let (parsed, high_s) = match self {
            PublicKey::K256(_) => {
                let s = k256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| VerifyError::Scalar(Curve::K256))?;
                let high = s.normalize_s().is_some();
                (Sig::K256(s), high)
            }
            PublicKey::P256(_) => {
                let s = p256::ecdsa::Signature::from_slice(sig)
                    .map_err(|_| VerifyError::Scalar(Curve::P256))?;
                let high = s.normalize_s().is_some();
                (Sig::P256(s), high)
            }
        };
        if high_s {
            return Err(VerifyError::HighS);
        }
        Ok(parsed)
    }

    fn verify_parsed(&self, digest: &[u8; 32], sig: &Sig) -> bool {
        match (self, sig) {
            (PublicKey::K256(key), Sig::K256(sig)) => verify_k256(key, digest, sig),
            (PublicKey::P256(key), Sig::P256(sig)) => key.verify_prehash(digest, sig).is_ok(),
            _ => false, // checked_sig parses for the key's own curve
        }
    }

    fn outcome(&self, ok: bool) -> Result<(), VerifyError> {
        if ok {
            Ok(())
        } else {
            Err(VerifyError::Mismatch(self.to_did_key()))
        }
    }
}

/// A signature parsed for one curve.
enum Sig {
    K256(k256::ecdsa::Signature),
    P256(p256::ecdsa::Signature),
}

/// A low-S P-256 signature over `msg`, checked by ring (assembly field
/// arithmetic, several times faster than p256's; ring is already linked for
/// TLS). ring hashes `msg` itself, so this path needs the message, not a
/// digest. Falls back to p256 should ring refuse the key encoding.
fn verify_p256(
    key: &p256::ecdsa::VerifyingKey,
    msg: &[u8],
    raw_sig: &[u8],
    sig: &p256::ecdsa::Signature,
) -> bool {
    use ring::signature::{UnparsedPublicKey, ECDSA_P256_SHA256_FIXED};
    let point = key.to_encoded_point(false);
    let ring_key = UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point.as_bytes());
    match ring_key.verify(msg, raw_sig) {
        Ok(()) => true,
        // ring's error does not say why; let p256 decide.
        Err(_) => key.verify_prehash(&sha256(msg), sig).is_ok(),
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
