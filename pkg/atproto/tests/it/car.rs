//! CAR reading and full-repository walks over every real CAR in testdata.

use crate::*;
use skyhouse_atproto::car::{read_car_bytes, CarError, CarOptions, CarSlice};
use skyhouse_atproto::cbor;
use skyhouse_atproto::repo::Repo;
use skyhouse_atproto::Cid;

/// `collection/rkey<TAB>cid` lines of a repository, in walk order.
pub(crate) fn listing(repo: &Repo) -> Vec<String> {
    let mut out = Vec::new();
    repo.walk(|r| {
        let data = r
            .data
            .ok_or_else(|| format!("missing record block {}", r.cid))?;
        cbor::decode(data).map_err(|e| format!("{}/{}: {e}", r.collection, r.rkey))?;
        assert!(r.cid.matches(data));
        out.push(format!("{}/{}\t{}", r.collection, r.rkey, r.cid));
        Ok::<_, String>(())
    })
    .unwrap_or_else(|e| panic!("walk: {e}"));
    out
}

fn lines(rel: &str) -> Vec<String> {
    String::from_utf8(read(rel))
        .expect("utf8")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn jetstream_repo_matches_goat_listing() {
    let repo = Repo::from_bytes(&read("jetstream/repo.car"), CarOptions::default()).expect("repo");
    let want = lines("jetstream/car_expected_records.tsv");
    assert_eq!(listing(&repo), want);
    let commit = String::from_utf8(read("jetstream/car_expected_commit.txt")).expect("utf8");
    assert!(commit.contains(&format!("DID: {}", repo.commit.did)));
    assert!(commit.contains(&format!("Data CID: {}", repo.commit.data)));
    assert!(commit.contains(&format!(
        "Revision: {}",
        repo.commit.rev.as_deref().expect("rev")
    )));
    println!("jetstream repo.car: {} records", want.len());
}

#[test]
fn fixture_cars_match_independent_listings() {
    let mut total = 0;
    let cars = repo_cars();
    assert_eq!(cars.len(), 13);
    for (car, expected) in cars {
        let repo = Repo::from_bytes(&read(&car), CarOptions::default())
            .unwrap_or_else(|e| panic!("{car}: {e}"));
        let got = listing(&repo);
        assert_eq!(got, lines(&expected), "{car}");
        total += got.len();
        println!("{car}: v{} {} records", repo.commit.version, got.len());
    }
    assert!(total > 500);
}

#[test]
fn spilling_to_disk_or_a_handed_over_vector_gives_the_same_walk() {
    let bytes = read("repo-stream/little.car");
    let in_memory = Repo::from_bytes(&bytes, CarOptions::default()).expect("repo");
    let streamed = Repo::read(bytes.as_slice(), CarOptions::default()).expect("repo");
    let handed_over = Repo::from_vec(bytes.clone(), CarOptions::default()).expect("repo");
    assert_eq!(listing(&in_memory), listing(&handed_over));
    let opts = CarOptions {
        memory_cap: 96 << 10,
        max_block: 32 << 10,
        ..CarOptions::default()
    };
    let spilled = Repo::read(bytes.as_slice(), opts).expect("repo");
    assert!(spilled.blocks.spilled());
    assert!(!streamed.blocks.spilled());
    assert_eq!(listing(&in_memory), listing(&streamed));
    assert!(!in_memory.blocks.spilled());
    assert_eq!(listing(&in_memory), listing(&spilled));
}

#[test]
fn atproto_car_file_fixture() {
    let fixtures: Vec<serde_json::Value> =
        serde_json::from_slice(&read("atproto/car-file-fixtures.json")).expect("json");
    for f in &fixtures {
        use base64::Engine as _;
        let dec = |s: &serde_json::Value| {
            base64::engine::general_purpose::STANDARD_NO_PAD
                .decode(s.as_str().expect("str").trim_end_matches('='))
                .expect("b64")
        };
        let (roots, store) = read_car_bytes(&dec(&f["car"]), CarOptions::default()).expect("car");
        assert_eq!(
            roots,
            vec![f["root"]
                .as_str()
                .expect("root")
                .parse::<Cid>()
                .expect("cid")]
        );
        let blocks = f["blocks"].as_array().expect("blocks");
        assert_eq!(store.len(), blocks.len());
        for b in blocks {
            let cid: Cid = b["cid"].as_str().expect("cid").parse().expect("cid");
            assert_eq!(
                store.get(&cid).expect("io").expect("present"),
                dec(&b["bytes"])
            );
        }
    }
}

#[test]
fn partial_car_slice_holds_the_record() {
    let (roots, store) =
        read_car_bytes(&read("indigo/repo_slice.car"), CarOptions::default()).expect("car");
    assert_eq!(roots.len(), 1);
    let want: serde_json::Value =
        serde_json::from_slice(&read("indigo/repo_slice_record.json")).expect("json");
    let cid: Cid = want["cid"].as_str().expect("cid").parse().expect("cid");
    let data = store.get(&cid).expect("io").expect("record block");
    let got = skyhouse_atproto::json::to_json_value(&cbor::decode(&data).expect("cbor"));
    assert_eq!(got, want["value"]);
}

#[test]
fn firehose_blocks_car_from_skyfall() {
    let (roots, store) =
        read_car_bytes(&read("skyfall/attie.car"), CarOptions::default()).expect("car");
    let commit = store
        .with_block(&roots[0], |b| {
            skyhouse_atproto::commit::Commit::decode(b.expect("commit")).map(|c| c.into_owned())
        })
        .expect("io")
        .expect("commit");
    assert_eq!(commit.version, 3);
    assert_eq!(store.len(), 5);
}

/// Read a CAR and walk it, failing on any missing block.
fn read_and_walk(bytes: &[u8]) -> Result<usize, String> {
    let repo = Repo::from_bytes(bytes, CarOptions::default()).map_err(|e| e.to_string())?;
    let stats = repo
        .walk(|r| {
            r.data
                .map(|_| ())
                .ok_or_else(|| format!("missing record block {}", r.cid))
        })
        .map_err(|e| e.to_string())?;
    Ok(stats.entries)
}

#[test]
fn truncation_at_every_offset_is_an_error_naming_the_offset() {
    let bytes = read("rsky/valid_repo.car");
    assert_eq!(read_and_walk(&bytes), Ok(6));
    for cut in 0..bytes.len() {
        match read_and_walk(&bytes[..cut]) {
            Ok(n) => panic!("cut at {cut} accepted with {n} records"),
            Err(msg) => {
                assert!(!msg.contains('\n'), "{msg}");
                assert!(
                    msg.contains("byte") || msg.contains("missing"),
                    "cut {cut}: {msg}"
                );
            }
        }
    }
}

#[test]
fn corrupt_block_names_the_cid() {
    let mut bytes = read("rsky/valid_repo.car");
    let n = bytes.len();
    bytes[n - 5] ^= 0x40;
    let err = Repo::from_bytes(&bytes, CarOptions::default()).expect_err("corrupt");
    assert!(
        matches!(
            err,
            skyhouse_atproto::repo::RepoError::Car(CarError::HashMismatch { .. })
        ),
        "{err}"
    );
    // The same check when the CAR is handed over as a vector.
    let err = Repo::from_vec(bytes, CarOptions::default()).expect_err("corrupt");
    assert!(
        matches!(
            err,
            skyhouse_atproto::repo::RepoError::Car(CarError::HashMismatch { .. })
        ),
        "{err}"
    );
    assert!(err.to_string().contains("bafyrei"), "{err}");
}

#[test]
fn oversized_block_is_refused_before_allocation() {
    let bytes = read("repo-stream/little.car");
    let opts = CarOptions {
        max_block: 100,
        ..CarOptions::default()
    };
    let err = Repo::from_bytes(&bytes, opts).expect_err("cap");
    assert!(err.to_string().contains("over the 100-byte cap"), "{err}");
    let opts = CarOptions {
        max_total: 10_000,
        ..CarOptions::default()
    };
    let err = Repo::from_bytes(&bytes, opts).expect_err("total cap");
    assert!(err.to_string().contains("size cap"), "{err}");
    // A header claiming a huge length.
    let err =
        Repo::from_bytes(&[0xff, 0xff, 0xff, 0xff, 0x0f], CarOptions::default()).expect_err("hdr");
    assert!(err.to_string().contains("header length"), "{err}");
}

/// Block lengths are multiformats varints, which must be minimal (iroh-car,
/// the tests' CAR oracle, refuses `0x81 0x00` for 1; skyhouse read it as 1),
/// and fit 64 bits (skyhouse dropped the high bits of a tenth byte). Both
/// readers refuse either, naming the offset of the varint.
#[test]
fn non_minimal_or_overlong_length_varints_are_refused() {
    let car = read("rsky/valid_repo.car");
    let header_len = car[0] as usize; // one-byte varint
    let first = 1 + header_len;
    let used = car[first..]
        .iter()
        .position(|b| b & 0x80 == 0)
        .expect("varint")
        + 1;
    for (varint, reason) in [
        (
            {
                // The same length with a zero group appended.
                let mut v = car[first..first + used].to_vec();
                let last = v.len() - 1;
                v[last] |= 0x80;
                v.push(0x00);
                v
            },
            "varint is not minimal",
        ),
        (
            vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02],
            "varint overflows 64 bits",
        ),
    ] {
        let mut bad = car[..first].to_vec();
        bad.extend_from_slice(&varint);
        bad.extend_from_slice(&car[first + used..]);
        let want = format!("bad block length at byte {first}: {reason}");
        let Err(err) = read_car_bytes(&bad, CarOptions::default()) else {
            panic!("in-memory reader accepts {varint:02x?}");
        };
        assert_eq!(err.to_string(), want);
        let Err(err) = Repo::read(bad.as_slice(), CarOptions::default()) else {
            panic!("streaming reader accepts {varint:02x?}");
        };
        assert!(err.to_string().contains(&want), "{err}");
    }
}

/// A CAR's bytes with `extra` blocks (CID bytes, data) appended.
fn with_blocks(car: &[u8], extra: &[(&Cid, &[u8])]) -> Vec<u8> {
    let mut out = car.to_vec();
    for (cid, data) in extra {
        let mut n = (cid.as_bytes().len() + data.len()) as u64;
        while n >= 0x80 {
            out.push((n as u8 & 0x7f) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out.extend_from_slice(cid.as_bytes());
        out.extend_from_slice(data);
    }
    out
}

#[test]
fn car_slice_finds_every_block_the_block_store_holds() {
    // A commit slice (a handful of blocks: searched in order) and whole
    // repositories (hundreds: sorted and searched by halves).
    let mut sizes = Vec::new();
    for rel in [
        "indigo/repo_slice.car",
        "skyfall/attie.car",
        "rsky/valid_repo.car",
        "repo-stream/little.car",
    ] {
        let bytes = read(rel);
        sizes.push(
            CarSlice::parse(&bytes, CarOptions::default())
                .expect("slice")
                .len(),
        );
        let (roots, store) = read_car_bytes(&bytes, CarOptions::default()).expect("store");
        let slice = CarSlice::parse(&bytes, CarOptions::default()).expect("slice");
        assert_eq!(slice.roots(), &roots[..], "{rel}");
        assert_eq!(slice.len(), store.len(), "{rel}");
        for cid in store.cids() {
            let want = store.get(cid).expect("io").expect("block");
            assert_eq!(slice.get(cid), Some(&want[..]), "{rel}: {cid}");
        }
        let absent: Cid = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"
            .parse()
            .expect("cid");
        assert_eq!(slice.get(&absent), None, "{rel}");
    }
    assert!(
        sizes.iter().any(|&n| n < 10) && sizes.iter().any(|&n| n > 100),
        "{sizes:?}"
    );
}

#[test]
fn car_slice_returns_the_first_of_a_repeated_block_and_checks_hashes_when_asked() {
    for rel in ["indigo/repo_slice.car", "repo-stream/little.car"] {
        let bytes = read(rel);
        let plain = CarSlice::parse(&bytes, CarOptions::default()).expect("slice");
        let root = plain.roots()[0];
        let good = plain.get(&root).expect("root block");
        // The root's CID again, with other bytes, after every block.
        let car = with_blocks(&bytes, &[(&root, b"not the root")]);
        let trusting = CarOptions {
            verify_hashes: false,
            ..CarOptions::default()
        };
        let slice = CarSlice::parse(&car, trusting.clone()).expect("parse without hashes");
        assert_eq!(slice.len(), plain.len() + 1, "{rel}");
        assert_eq!(slice.get(&root), Some(good), "{rel}: the first copy");
        let err = CarSlice::parse(&car, CarOptions::default()).expect_err("hash checked");
        assert!(
            matches!(err, CarError::HashMismatch { cid, .. } if cid == root),
            "{rel}: {err}"
        );
        let cut = CarSlice::parse(&car[..car.len() - 3], trusting).expect_err("truncated");
        assert!(matches!(cut, CarError::Truncated { .. }), "{rel}: {cut}");
    }
}
