//! Keys, signatures and DID documents against the atproto interop crypto
//! vectors, the W3C did:key vectors, indigo's DID documents and 148 real DID
//! documents captured alongside the Jetstream corpus.

use crate::*;
use skyhouse_atproto::crypto::{
    self, Curve, DidDocError, DidDocument, KeyError, KeySuite, PublicKey, ServiceEndpoint,
    VerifyError,
};

fn doc(rel: &str) -> DidDocument {
    DidDocument::from_json(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Group orders, big-endian.
const N_K256: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe,
    0xba, 0xae, 0xdc, 0xe6, 0xaf, 0x48, 0xa0, 0x3b, 0xbf, 0xd2, 0x5e, 0x8c, 0xd0, 0x36, 0x41, 0x41,
];
const N_P256: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `r || (n - s)`: the other signature of the same (r, s) pair, computed
/// with schoolbook big-endian subtraction.
fn flip_s(sig: &[u8], curve: Curve) -> Vec<u8> {
    let n = match curve {
        Curve::K256 => &N_K256,
        Curve::P256 => &N_P256,
    };
    let mut out = sig.to_vec();
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let d = n[i] as i16 - sig[32 + i] as i16 - borrow;
        borrow = i16::from(d < 0);
        out[32 + i] = d.rem_euclid(256) as u8;
    }
    assert_eq!(borrow, 0, "s >= n");
    out
}

// ---------------------------------------------------------------------------
// interop signature fixtures

#[test]
fn interop_signature_fixtures() {
    let cases = load("interop/crypto/signature-fixtures.json");
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, case) in cases.iter().enumerate() {
        let field = |k: &str| {
            case[k]
                .as_str()
                .unwrap_or_else(|| panic!("case {i}: no {k}"))
        };
        let name = format!("case {i} ({})", field("comment"));
        let msg = b64(field("messageBase64"));
        let sig = b64(field("signatureBase64"));
        let valid = case["validSignature"].as_bool().expect("validSignature");
        let tags: Vec<&str> = case["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .filter_map(|t| t.as_str())
            .collect();
        let curve = Curve::from_jwt_alg(field("algorithm")).expect("algorithm");

        let from_did = match PublicKey::from_did_key(field("publicKeyDid")) {
            Ok(k) => k,
            Err(e) => {
                failures.push(format!("{name}: did:key: {e}"));
                continue;
            }
        };
        let suite = KeySuite::from_name(field("didDocSuite")).expect("didDocSuite");
        let from_mb = match PublicKey::from_multibase(field("publicKeyMultibase"), suite) {
            Ok(k) => k,
            Err(e) => {
                failures.push(format!("{name}: publicKeyMultibase: {e}"));
                continue;
            }
        };
        if from_did != from_mb {
            failures.push(format!("{name}: did:key and publicKeyMultibase differ"));
        }
        if from_did.curve() != curve {
            failures.push(format!(
                "{name}: curve {} for {}",
                from_did.curve(),
                curve.jwt_alg()
            ));
        }
        if from_did.to_did_key() != field("publicKeyDid") {
            failures.push(format!("{name}: did:key round trip gave {from_did}"));
        }

        for (form, key) in [("did:key", from_did), ("multibase", from_mb)] {
            let got = key.verify(&msg, &sig);
            let prehashed = key.verify_prehashed(&crypto::sha256(&msg), &sig);
            if got != prehashed {
                failures.push(format!(
                    "{name} [{form}]: verify {got:?} != prehashed {prehashed:?}"
                ));
            }
            match (valid, &got) {
                (true, Ok(())) => {}
                (true, Err(e)) => failures.push(format!("{name} [{form}]: rejected: {e}")),
                (false, Ok(())) => failures.push(format!("{name} [{form}]: accepted")),
                (false, Err(e)) => {
                    let expected = if tags.contains(&"high-s") {
                        matches!(e, VerifyError::HighS)
                    } else if tags.contains(&"der-encoded") {
                        matches!(e, VerifyError::Der(_))
                    } else {
                        true
                    };
                    if !expected {
                        failures.push(format!("{name} [{form}]: tags {tags:?} but error {e}"));
                    }
                }
            }
        }
        // The high-S fixtures are the malleated twins of valid signatures:
        // their low-S form verifies, so the only reason to reject is high S.
        if tags.contains(&"high-s") {
            if let Err(e) = from_did.verify(&msg, &flip_s(&sig, curve)) {
                failures.push(format!("{name}: low-S form of the high-S signature: {e}"));
            }
        }
        checked += 1;
    }
    println!(
        "signature fixtures: {checked} cases, {} failures",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(checked, cases.len());
    assert_eq!(checked, 6, "the pinned fixture file has 6 cases");
    let tagged = |t: &str| {
        cases
            .iter()
            .filter(|c| c["tags"].to_string().contains(t))
            .count()
    };
    assert_eq!((tagged("high-s"), tagged("der-encoded")), (2, 2));
}

// ---------------------------------------------------------------------------
// W3C did:key vectors

#[test]
fn w3c_didkey_k256() {
    let cases = load("interop/crypto/w3c_didkey_K256.json");
    for case in &cases {
        let did = case["publicDidKey"].as_str().expect("publicDidKey");
        let secret = hex(case["privateKeyBytesHex"]
            .as_str()
            .expect("privateKeyBytesHex"));
        let signing = k256::ecdsa::SigningKey::from_slice(&secret).expect("secret");
        let expected = signing.verifying_key().to_encoded_point(true);

        let key = PublicKey::from_did_key(did).unwrap_or_else(|e| panic!("{did}: {e}"));
        assert_eq!(key.curve(), Curve::K256);
        assert_eq!(&key.to_sec1_compressed()[..], expected.as_bytes(), "{did}");
        assert_eq!(key, PublicKey::K256(*signing.verifying_key()));
        assert_eq!(key.to_did_key(), did);
        assert_eq!(key.to_string(), did);
        assert_eq!(did.parse::<PublicKey>().expect("FromStr"), key);
    }
    println!("w3c did:key K-256: {} keys", cases.len());
    assert_eq!(cases.len(), 5);
}

#[test]
fn w3c_didkey_p256() {
    let cases = load("interop/crypto/w3c_didkey_P256.json");
    for case in &cases {
        let did = case["publicDidKey"].as_str().expect("publicDidKey");
        let secret = bs58::decode(case["privateKeyBytesBase58"].as_str().expect("privateKey"))
            .into_vec()
            .expect("base58");
        let signing = p256::ecdsa::SigningKey::from_slice(&secret).expect("secret");
        let expected = signing.verifying_key().to_encoded_point(true);

        let key = PublicKey::from_did_key(did).unwrap_or_else(|e| panic!("{did}: {e}"));
        assert_eq!(key.curve(), Curve::P256);
        assert_eq!(&key.to_sec1_compressed()[..], expected.as_bytes(), "{did}");
        assert_eq!(key, PublicKey::P256(*signing.verifying_key()));
        assert_eq!(key.to_did_key(), did);
    }
    println!("w3c did:key P-256: {} keys", cases.len());
    assert_eq!(cases.len(), 1);
}

#[test]
fn did_key_errors_name_the_input() {
    let err = |s: &str| PublicKey::from_did_key(s).expect_err(s).to_string();
    // Multicodec 0x1205 (rsa-pub) as varint 0x85 0x24.
    let rsa = format!(
        "did:key:z{}",
        bs58::encode([0x85, 0x24, 1, 2, 3]).into_string()
    );
    assert_eq!(
        err(&rsa),
        format!("unsupported did:key multicodec 0x1205 in {rsa:?}")
    );
    // Ed25519 (0xed) is a valid did:key but not an atproto key.
    let ed = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK";
    assert!(
        err(ed).starts_with("unsupported did:key multicodec 0xed"),
        "{}",
        err(ed)
    );
    assert!(err("did:plc:abc").starts_with("not a did:key"));
    assert!(err("did:key:mABC").contains("not base58btc multibase"));
    assert!(err("did:key:z0OIl").contains("invalid base58btc"));
    assert!(err("did:key:z").contains("malformed multicodec varint"));
    // Non-minimal varint for 0xe7: e7 81 00.
    let long = format!(
        "did:key:z{}",
        bs58::encode([0xe7, 0x81, 0x00]).into_string()
    );
    assert!(
        err(&long).contains("malformed multicodec varint"),
        "{}",
        err(&long)
    );

    // did:key requires the compressed point; the legacy suite takes both.
    let key = PublicKey::from_did_key("did:key:zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF")
        .expect("did:key");
    let mut uncompressed = vec![0xe7, 0x01];
    uncompressed.extend_from_slice(&key.to_sec1_uncompressed());
    let u = format!("did:key:z{}", bs58::encode(&uncompressed).into_string());
    assert!(err(&u).contains("is 65 bytes; did:key requires a 33-byte compressed point"));
    let legacy = format!(
        "z{}",
        bs58::encode(key.to_sec1_uncompressed()).into_string()
    );
    let suite = KeySuite::EcdsaSecp256k1VerificationKey2019;
    assert_eq!(PublicKey::from_multibase(&legacy, suite), Ok(key));
    // ...but only on its own curve.
    let r1 = KeySuite::EcdsaSecp256r1VerificationKey2019;
    let e = PublicKey::from_multibase(&legacy, r1).expect_err("k1 point as r1");
    assert!(
        matches!(
            e,
            KeyError::Point {
                curve: Curve::P256,
                len: 65,
                ..
            }
        ),
        "{e}"
    );

    // Not a point: x = 2^256 - 1 is not below the field prime.
    let mut bad = vec![0xe7, 0x01, 0x02];
    bad.extend_from_slice(&[0xff; 32]);
    let b = format!("did:key:z{}", bs58::encode(&bad).into_string());
    assert!(
        err(&b).starts_with("invalid K-256 public key (33 bytes)"),
        "{}",
        err(&b)
    );

    // Long input is clipped in the message.
    let huge = format!("did:web:{}", "a".repeat(10_000));
    assert!(err(&huge).len() < 200, "{}", err(&huge));
}

// ---------------------------------------------------------------------------
// signatures: malleation and corruption

fn signed_k256(secret: &[u8; 32], msg: &[u8]) -> Option<(PublicKey, Vec<u8>)> {
    use k256::ecdsa::signature::Signer;
    let sk = k256::ecdsa::SigningKey::from_slice(secret).ok()?;
    let sig: k256::ecdsa::Signature = sk.sign(msg);
    let sig = sig.normalize_s().unwrap_or(sig);
    Some((PublicKey::K256(*sk.verifying_key()), sig.to_vec()))
}

fn signed_p256(secret: &[u8; 32], msg: &[u8]) -> Option<(PublicKey, Vec<u8>)> {
    use p256::ecdsa::signature::Signer;
    let sk = p256::ecdsa::SigningKey::from_slice(secret).ok()?;
    let sig: p256::ecdsa::Signature = sk.sign(msg);
    // P-256 signers do not normalize; atproto signers must.
    let sig = sig.normalize_s().unwrap_or(sig);
    Some((PublicKey::P256(*sk.verifying_key()), sig.to_vec()))
}

#[test]
fn every_single_byte_flip_is_rejected() {
    let msg = b"skyhouse commit bytes";
    for (key, sig) in [
        signed_k256(&[7; 32], msg).expect("k256 key"),
        signed_p256(&[7; 32], msg).expect("p256 key"),
    ] {
        assert_eq!(key.verify(msg, &sig), Ok(()));
        for i in 0..sig.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut bad = sig.clone();
                bad[i] ^= mask;
                assert!(
                    key.verify(msg, &bad).is_err(),
                    "{key}: byte {i} ^ {mask:#x} accepted"
                );
            }
        }
        let mut other = *msg;
        other[0] ^= 1;
        assert_eq!(
            key.verify(&other, &sig),
            Err(VerifyError::Mismatch(key.to_did_key()))
        );
        assert_eq!(
            key.verify(msg, &sig).map_err(|e| e.to_string()),
            Ok(()),
            "sanity: untouched still verifies"
        );
    }
}

#[test]
fn high_s_twin_is_rejected_not_normalized() {
    let msg = b"low-S only";
    for (key, sig) in [
        signed_k256(&[9; 32], msg).expect("k256 key"),
        signed_p256(&[9; 32], msg).expect("p256 key"),
    ] {
        let high = flip_s(&sig, key.curve());
        assert_eq!(key.verify(msg, &high), Err(VerifyError::HighS), "{key}");
        assert_eq!(VerifyError::HighS.to_string(), "signature has high S");
        // The twin is a mathematically valid ECDSA signature: the plain P-256
        // verifier (which does not enforce low-S) accepts it.
        if let PublicKey::P256(vk) = key {
            use p256::ecdsa::signature::Verifier;
            let s = p256::ecdsa::Signature::from_slice(&high).expect("sig");
            assert!(vk.verify(msg, &s).is_ok());
        }
        // And flipping back gives the original.
        assert_eq!(flip_s(&high, key.curve()), sig);
    }
}

/// ASN.1 DER of a compact `r || s` signature.
fn der_encode(sig: &[u8]) -> Vec<u8> {
    let int = |b: &[u8]| {
        let b = &b[b.iter().position(|&x| x != 0).unwrap_or(b.len() - 1)..];
        let mut out = vec![0x02];
        if b[0] & 0x80 != 0 {
            out.extend_from_slice(&[b.len() as u8 + 1, 0]);
        } else {
            out.push(b.len() as u8);
        }
        out.extend_from_slice(b);
        out
    };
    let body = [int(&sig[..32]), int(&sig[32..])].concat();
    [vec![0x30, body.len() as u8], body].concat()
}

#[test]
fn signature_shape_errors() {
    let (key, sig) = signed_k256(&[3; 32], b"m").expect("key");
    assert_eq!(key.verify(b"m", &sig[..63]), Err(VerifyError::Length(63)));
    assert_eq!(key.verify(b"m", &[]), Err(VerifyError::Length(0)));
    // DER form of the same signature.
    let der = &der_encode(&sig)[..];
    assert_eq!(key.verify(b"m", der), Err(VerifyError::Der(der.len())));
    assert!(key
        .verify(b"m", der)
        .expect_err("der")
        .to_string()
        .contains("DER-encoded"));
    // r = 0, or s >= n.
    let mut zero_r = sig.clone();
    zero_r[..32].fill(0);
    assert_eq!(
        key.verify(b"m", &zero_r),
        Err(VerifyError::Scalar(Curve::K256))
    );
    let mut big_s = sig.clone();
    big_s[32..].fill(0xff);
    assert_eq!(
        key.verify(b"m", &big_s),
        Err(VerifyError::Scalar(Curve::K256))
    );
    // A signature by another key.
    let (other, _) = signed_k256(&[4; 32], b"m").expect("key");
    let e = other.verify(b"m", &sig).expect_err("wrong key");
    assert_eq!(
        e.to_string(),
        format!("signature does not verify against {other}")
    );
}

#[test]
fn sha256_helper() {
    assert_eq!(
        crypto::sha256(b"abc").to_vec(),
        hex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    );
}

mod props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn flipped_signature_byte_fails(
            secret in any::<[u8; 32]>(),
            msg in proptest::collection::vec(any::<u8>(), 0..200),
            p256 in any::<bool>(),
            at in 0usize..64,
            mask in 1u8..=255,
        ) {
            let signed = if p256 { signed_p256(&secret, &msg) } else { signed_k256(&secret, &msg) };
            let Some((key, sig)) = signed else { return Ok(()) }; // secret out of range
            prop_assert_eq!(key.verify(&msg, &sig), Ok(()));
            // verify (libsecp256k1 / ring) and verify_prehashed (libsecp256k1
            // / p256) are different code paths: they must agree.
            prop_assert_eq!(key.verify_prehashed(&crypto::sha256(&msg), &sig), Ok(()));
            let mut other = msg.clone();
            other.push(0);
            prop_assert!(key.verify(&other, &sig).is_err());
            prop_assert!(key.verify_prehashed(&crypto::sha256(&other), &sig).is_err());
            let mut bad = sig.clone();
            bad[at] ^= mask;
            prop_assert!(key.verify(&msg, &bad).is_err());
            prop_assert_eq!(key.verify(&msg, &flip_s(&sig, key.curve())), Err(VerifyError::HighS));
            // did:key and Multikey round trips.
            prop_assert_eq!(PublicKey::from_did_key(&key.to_did_key()), Ok(key));
            prop_assert_eq!(PublicKey::from_multibase(&key.to_multikey(), KeySuite::Multikey), Ok(key));
        }
    }
}

// ---------------------------------------------------------------------------
// DID documents

const ATPROTO_COM_KEY: &str = "did:key:zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF";

#[test]
fn indigo_did_documents() {
    // (file, did, handle, pds, signing did:key); the did:keys of the legacy
    // (uncompressed EcdsaSecp256*VerificationKey2019) documents were
    // computed independently from the files' point bytes.
    let cases = [
        (
            "indigo/did_plc_doc.json",
            "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "atproto.com",
            "https://bsky.social",
            ATPROTO_COM_KEY,
        ),
        (
            "indigo/did_plc_doc_legacy.json",
            "did:plc:ewvi7nxzyoun6zhxrhs64oiz",
            "atproto.com",
            "https://bsky.social",
            ATPROTO_COM_KEY,
        ),
        (
            "indigo/did_plc_z5vnbioquyhivxirw3bbljmu.didDoc.json",
            "did:plc:z5vnbioquyhivxirw3bbljmu",
            "koch5149-c5.test",
            "http://localhost:2583",
            "did:key:zQ3shUq2kXSBvRMmZhn6BjSCLHbBW56J3JThx95yvJuyKoa6j",
        ),
        (
            "indigo/fakermaker.didDoc.json",
            "did:plc:dpg45vsnuir2vqqqadsn6afg",
            "ebert9014-89.test",
            "http://localhost:2583",
            "did:key:zDnaekeJgyxPS3XehTLzowCTstPmcua1vLaAAF3qyLP6sND38",
        ),
        (
            "indigo/greenground.didDoc.json",
            "did:plc:wqgdnqlv2mwiio6pfchwtrff",
            "greenground.bsky.social",
            "https://bsky.social",
            ATPROTO_COM_KEY,
        ),
        (
            "indigo/paul_staging.didDoc.json",
            "did:plc:cmpvykrzb2l22kj4ojlv3ox4",
            "paul.staging.bsky.dev",
            "https://pds.staging.bsky.dev",
            "did:key:zQ3shasptg6F8D8fr2ogkMzLy92YmpjpwQkjXT5EZJ9t4YBuB",
        ),
    ];
    for (file, did, handle, pds, key) in cases {
        let d = doc(file);
        assert_eq!(d.id, did, "{file}");
        assert_eq!(d.handle(), Some(handle), "{file}");
        assert_eq!(d.pds_endpoint(), Some(pds), "{file}");
        let k = d.signing_key().unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(k.to_did_key(), key, "{file}");
        assert_eq!(d.labeler_endpoint(), None);
        let e = d.labeler_key().expect_err("no labeler key");
        assert_eq!(
            e.to_string(),
            format!("no #atproto_label verification method in DID document {did}")
        );
        // Serializing and reading back keeps every field.
        let again = DidDocument::from_json(&serde_json::to_vec(&d).expect("ser")).expect("re-read");
        assert_eq!(again, d, "{file}");
    }
    assert_eq!(
        doc("indigo/fakermaker.didDoc.json")
            .signing_key()
            .map(|k| k.curve()),
        Ok(Curve::P256)
    );
    println!("indigo DID documents: {} with keys", cases.len());
}

#[test]
fn did_web_document_without_atproto_entries() {
    let d = doc("indigo/did_web_doc.json");
    assert_eq!(d.id, "did:web:discover.bsky.social");
    assert_eq!(d.handle(), None);
    assert_eq!(d.pds_endpoint(), None);
    assert!(d.verification_method.is_empty());
    assert_eq!(d.service.len(), 1);
    assert_eq!(d.service[0].r#type, "BskyFeedGenerator");
    assert_eq!(
        d.service_endpoint("bsky_fg", "BskyFeedGenerator"),
        Some("https://discover.bsky.social")
    );
    let e = d.signing_key().expect_err("no key");
    assert_eq!(
        e.to_string(),
        "no #atproto verification method in DID document did:web:discover.bsky.social"
    );
}

#[test]
fn did_document_shapes() {
    let did = "did:plc:ewvi7nxzyoun6zhxrhs64oiz";
    let json = |vm_id: &str, vm_type: &str, endpoint: &str| {
        format!(
            r#"{{"id":"{did}","alsoKnownAs":["https://example.com","at://alice.test","at://bob.test"],
            "verificationMethod":[{{"id":"{vm_id}","type":"{vm_type}","controller":"{did}",
              "publicKeyMultibase":"zQ3shXjHeiBuRCKmM36cuYnm7YEMzhGnCmCyW92sRJ9pribSF"}}],
            "service":[{{"id":"{did}#atproto_pds","type":"AtprotoPersonalDataServer",
              "serviceEndpoint":{endpoint}}}]}}"#
        )
    };
    // `<did>#atproto` ids, first at:// alias.
    let d = DidDocument::from_json(
        json(
            &format!("{did}#atproto"),
            "Multikey",
            r#""https://pds.example""#,
        )
        .as_bytes(),
    )
    .expect("doc");
    assert_eq!(
        d.signing_key().map(|k| k.to_did_key()),
        Ok(ATPROTO_COM_KEY.to_owned())
    );
    assert_eq!(d.handle(), Some("alice.test"));
    assert_eq!(d.pds_endpoint(), Some("https://pds.example"));

    // Object and array endpoints parse but are not a PDS URL.
    for endpoint in [
        r#"{"origin":["https://a"]}"#,
        r#"["https://a","https://b"]"#,
    ] {
        let d = DidDocument::from_json(json("#atproto", "Multikey", endpoint).as_bytes())
            .expect(endpoint);
        assert_eq!(d.pds_endpoint(), None);
        assert!(matches!(
            d.service[0].service_endpoint,
            ServiceEndpoint::Other(_)
        ));
    }

    // Another DID's #atproto is not this document's.
    let d = DidDocument::from_json(json("did:plc:other#atproto", "Multikey", r#""x""#).as_bytes())
        .expect("doc");
    assert!(matches!(d.signing_key(), Err(DidDocError::NoMethod { .. })));

    // Unknown suite, and a suite that does not match the key's form.
    let d = DidDocument::from_json(json("#atproto", "JsonWebKey2020", r#""x""#).as_bytes())
        .expect("doc");
    assert_eq!(
        d.signing_key().expect_err("suite").to_string(),
        format!("unsupported #atproto verification method type \"JsonWebKey2020\" in DID document {did}")
    );
    let d = DidDocument::from_json(
        json("#atproto", "EcdsaSecp256r1VerificationKey2019", r#""x""#).as_bytes(),
    )
    .expect("doc");
    let e = d.signing_key().expect_err("wrong curve");
    assert!(
        e.to_string().starts_with(&format!(
            "bad #atproto key in DID document {did}: invalid P-256"
        )),
        "{e}"
    );

    // null lists, unknown fields, no publicKeyMultibase.
    let d = DidDocument::from_json(
        br##"{"id":"did:web:example.com","alsoKnownAs":null,"service":null,"authentication":null,
            "verificationMethod":[{"id":"#atproto","type":"Multikey","controller":"did:web:example.com",
            "publicKeyJwk":{"kty":"EC"}}]}"##,
    )
    .expect("doc");
    assert_eq!((d.handle(), d.pds_endpoint()), (None, None));
    assert_eq!(
        d.signing_key().expect_err("no multibase").to_string(),
        "#atproto verification method in DID document did:web:example.com has no publicKeyMultibase"
    );

    // Errors from from_json.
    let err = |j: &str| {
        DidDocument::from_json(j.as_bytes())
            .expect_err(j)
            .to_string()
    };
    assert!(
        err("{").starts_with("invalid DID document JSON: EOF"),
        "{}",
        err("{")
    );
    assert!(err(r#"{"alsoKnownAs":[]}"#).contains("missing field `id`"));
    assert!(err(r##"{"id":"did:plc:x","service":[{"id":"#p"}]}"##).contains("missing field `type`"));
    assert_eq!(
        err(r#"{"id":"alice.test"}"#),
        "DID document id is not a DID: \"alice.test\""
    );
    assert!(err(&format!(r#"{{"id":"{}"}}"#, "x".repeat(5000))).len() < 200);
    assert!(err("[]").starts_with("invalid DID document JSON"));
}

#[test]
fn jetstream_real_did_documents() {
    let raw = crate::unzstd(&read("jetstream/did_docs.json.zst")).expect("zstd");
    let docs: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw).expect("json");
    let mut failures = Vec::new();
    let (mut k256, mut p256, mut handles) = (0, 0, 0);
    for (did, value) in &docs {
        let bytes = serde_json::to_vec(value).expect("ser");
        let d = match DidDocument::from_json(&bytes) {
            Ok(d) => d,
            Err(e) => {
                failures.push(format!("{did}: {e}"));
                continue;
            }
        };
        if &d.id != did {
            failures.push(format!("{did}: id {}", d.id));
        }
        match d.signing_key() {
            Ok(k) if k.curve() == Curve::K256 => k256 += 1,
            Ok(_) => p256 += 1,
            Err(e) => failures.push(format!("{did}: {e}")),
        }
        match d.pds_endpoint() {
            Some(u) if u.starts_with("https://") => {}
            other => failures.push(format!("{did}: pds {other:?}")),
        }
        handles += usize::from(d.handle().is_some());
    }
    println!(
        "jetstream DID docs: {} docs, {k256} K-256 + {p256} P-256 keys, {handles} handles, {} failures",
        docs.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(docs.len(), 148);
    assert_eq!(k256 + p256, 148);
    assert_eq!(handles, 148);
}
