//! `did:key` and the `publicKeyMultibase` forms of DID documents.

use super::{clip, Curve, PublicKey};

/// The prefix of every `did:key`.
pub const DID_KEY_PREFIX: &str = "did:key:";

/// The verification-method types (suites) whose `publicKeyMultibase`
/// [`PublicKey::from_multibase`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySuite {
    /// `Multikey`: multicodec varint then the compressed point, the same
    /// bytes as a `did:key` (current atproto DID documents).
    Multikey,
    /// Legacy secp256k1: the bare SEC1 point, compressed or uncompressed.
    EcdsaSecp256k1VerificationKey2019,
    /// Legacy P-256: the bare SEC1 point, compressed or uncompressed.
    EcdsaSecp256r1VerificationKey2019,
}

impl KeySuite {
    /// The suite named by a verification method's `type`.
    pub fn from_name(name: &str) -> Option<KeySuite> {
        match name {
            "Multikey" => Some(KeySuite::Multikey),
            "EcdsaSecp256k1VerificationKey2019" => {
                Some(KeySuite::EcdsaSecp256k1VerificationKey2019)
            }
            "EcdsaSecp256r1VerificationKey2019" => {
                Some(KeySuite::EcdsaSecp256r1VerificationKey2019)
            }
            _ => None,
        }
    }

    /// The suite's name as written in a verification method's `type`.
    pub const fn name(self) -> &'static str {
        match self {
            KeySuite::Multikey => "Multikey",
            KeySuite::EcdsaSecp256k1VerificationKey2019 => "EcdsaSecp256k1VerificationKey2019",
            KeySuite::EcdsaSecp256r1VerificationKey2019 => "EcdsaSecp256r1VerificationKey2019",
        }
    }
}

/// Why a public key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The string does not start with `did:key:`.
    #[error("not a did:key: {0:?}")]
    NotDidKey(String),
    /// The multibase prefix is not `z` (base58btc).
    #[error("public key is not base58btc multibase (z…): {0:?}")]
    Multibase(String),
    /// The base58btc text does not decode.
    #[error("invalid base58btc in public key {0:?}")]
    Base58(String),
    /// The multicodec varint is truncated, over-long or not minimal.
    #[error("malformed multicodec varint in public key {0:?}")]
    Varint(String),
    /// The multicodec is not a key type atproto allows.
    #[error("unsupported did:key multicodec 0x{code:x} in {input:?}")]
    Multicodec {
        /// The multicodec code read.
        code: u64,
        /// The key as given.
        input: String,
    },
    /// A `did:key` or `Multikey` holds an uncompressed (or otherwise not
    /// 33-byte) point; those forms require the compressed encoding.
    #[error(
        "{curve} key in {input:?} is {len} bytes; did:key requires a 33-byte compressed point"
    )]
    NotCompressed {
        /// The key's curve.
        curve: Curve,
        /// Length of the point bytes.
        len: usize,
        /// The key as given.
        input: String,
    },
    /// The bytes are not a valid point on the curve.
    #[error("invalid {curve} public key ({len} bytes): {input:?}")]
    Point {
        /// The key's curve.
        curve: Curve,
        /// Length of the point bytes.
        len: usize,
        /// The key as given (or its bytes in hex).
        input: String,
    },
}

impl PublicKey {
    /// Parse a `did:key:z…`: multibase base58btc of the multicodec varint
    /// (`0xe7` secp256k1, `0x1200` P-256) and the compressed SEC1 point.
    pub fn from_did_key(did: &str) -> Result<PublicKey, KeyError> {
        let Some(multibase) = did.strip_prefix(DID_KEY_PREFIX) else {
            return Err(KeyError::NotDidKey(clip(did)));
        };
        from_multikey(multibase, did)
    }

    /// The key as `did:key:z…` (compressed point).
    pub fn to_did_key(&self) -> String {
        format!("{DID_KEY_PREFIX}{}", self.to_multikey())
    }

    /// The key as `Multikey` `publicKeyMultibase` (`z…`; a `did:key` without
    /// its `did:key:` prefix).
    pub fn to_multikey(&self) -> String {
        let mut bytes = Vec::with_capacity(2 + 33);
        write_varint(&mut bytes, self.curve().multicodec());
        bytes.extend_from_slice(&self.to_sec1_compressed());
        format!("z{}", bs58::encode(bytes).into_string())
    }

    /// Parse a DID document's `publicKeyMultibase` written in `suite`:
    /// for [`KeySuite::Multikey`] the `did:key` body (multicodec then
    /// compressed point), for the legacy `…VerificationKey2019` suites the
    /// bare SEC1 point on that suite's curve, compressed or uncompressed.
    pub fn from_multibase(multibase: &str, suite: KeySuite) -> Result<PublicKey, KeyError> {
        let curve = match suite {
            KeySuite::Multikey => return from_multikey(multibase, multibase),
            KeySuite::EcdsaSecp256k1VerificationKey2019 => Curve::K256,
            KeySuite::EcdsaSecp256r1VerificationKey2019 => Curve::P256,
        };
        let bytes = decode_base58btc(multibase, multibase)?;
        PublicKey::from_sec1(curve, &bytes).map_err(|_| KeyError::Point {
            curve,
            len: bytes.len(),
            input: clip(multibase),
        })
    }
}

/// Read a `z…` multibase of multicodec + compressed point; `input` is what
/// the caller was given, for error messages.
fn from_multikey(multibase: &str, input: &str) -> Result<PublicKey, KeyError> {
    let bytes = decode_base58btc(multibase, input)?;
    let (code, point) = read_varint(&bytes).ok_or_else(|| KeyError::Varint(clip(input)))?;
    let curve = Curve::from_multicodec(code).ok_or_else(|| KeyError::Multicodec {
        code,
        input: clip(input),
    })?;
    if point.len() != 33 {
        return Err(KeyError::NotCompressed {
            curve,
            len: point.len(),
            input: clip(input),
        });
    }
    PublicKey::from_sec1(curve, point).map_err(|_| KeyError::Point {
        curve,
        len: point.len(),
        input: clip(input),
    })
}

/// Decode a `z…` multibase string.
fn decode_base58btc(multibase: &str, input: &str) -> Result<Vec<u8>, KeyError> {
    let Some(b58) = multibase.strip_prefix('z') else {
        return Err(KeyError::Multibase(clip(input)));
    };
    bs58::decode(b58)
        .into_vec()
        .map_err(|_| KeyError::Base58(clip(input)))
}

/// Read an unsigned LEB128 varint (at most 9 bytes, minimally encoded) from
/// the front of `bytes`; returns it and the rest.
fn read_varint(bytes: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(9) {
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            if b == 0 && i > 0 {
                return None; // not minimal
            }
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// Append `value` as an unsigned LEB128 varint.
fn write_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}
