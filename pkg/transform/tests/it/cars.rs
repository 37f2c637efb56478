//! Every record of every repository CAR in skyhouse-atproto's `testdata/`
//! (real repositories from 2022 to 2026, plus two generated ones), applied as
//! a backfill would: no record of a typed collection is a dead letter, and
//! each gives exactly one typed row.

use std::collections::BTreeMap;

use skyhouse_atproto::car::CarOptions;
use skyhouse_atproto::cbor;
use skyhouse_atproto::repo::Repo;
use skyhouse_transform::{apply, Action, Op, Rows, Table};

use crate::{atproto_testdata, NOW};

fn cars() -> Vec<String> {
    let list = std::fs::read_to_string(atproto_testdata("expected/cars.tsv")).expect("cars.tsv");
    list.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split('\t').next().expect("path").to_owned())
        .collect()
}

#[test]
fn every_repository_record_fits_its_table() {
    let mut per_table: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut records = 0;
    let mut legacy_follow_seen = false;
    for car in cars() {
        let bytes = std::fs::read(atproto_testdata(&car)).expect("read car");
        let repo = Repo::from_bytes(&bytes, CarOptions::default()).expect("repo");
        let version = repo.commit.rev_u64().unwrap_or(0);
        let did = repo.commit.did.clone();
        let mut rows = Rows::default();
        let mut ops = 0;
        repo.walk(|r| -> Result<(), String> {
            let data = r.data.ok_or("missing block")?;
            let value = cbor::decode(data).map_err(|e| e.to_string())?;
            let before = rows.typed_len();
            apply(
                &Op {
                    did: &did,
                    collection: r.collection,
                    rkey: r.rkey,
                    action: Action::Create,
                    cid: Some(r.cid),
                    record: Some(&value),
                    version,
                    indexed_at: NOW,
                },
                &mut rows,
            );
            let typed = Table::for_collection(r.collection).is_some();
            assert_eq!(
                rows.typed_len() - before,
                usize::from(typed),
                "{car}: {}/{}",
                r.collection,
                r.rkey
            );
            ops += 1;
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{car}: {e}"));
        let reasons: Vec<String> = rows
            .dead_letters
            .iter()
            .map(|d| format!("{}/{}: {} {}", d.collection, d.rkey, d.reason, d.payload))
            .collect();
        assert_eq!(reasons, Vec::<String>::new(), "{car}");
        assert_eq!(rows.records.len(), ops, "{car}");
        assert!(rows
            .records
            .iter()
            .all(|r| r.version == version && r.deleted == 0));
        legacy_follow_seen |= rows.follows.iter().any(|f| {
            f.rkey == "3jqexvs6v3c2i" && f.subject_did == "did:plc:bapnorbjvs43bojtwki62mpd"
        });
        for &t in Table::ALL {
            *per_table.entry(t.name()).or_default() += rows.table_len(t);
        }
        records += ops;
    }
    // What the fixtures hold (see pkg/atproto/testdata/expected/*.tsv).
    assert_eq!(records, 1294);
    let expected: BTreeMap<&str, usize> = [
        ("posts", 357),
        ("likes", 484),
        ("reposts", 129),
        ("follows", 186),
        ("blocks", 27),
        ("profiles", 10),
        ("lists", 2),
        ("list_items", 21),
        ("chat_declarations", 2),
    ]
    .into_iter()
    .collect();
    per_table.retain(|_, n| *n > 0);
    assert_eq!(per_table, expected);
    assert!(
        legacy_follow_seen,
        "divy's 2023 follows use subject {{did, declarationCid}}"
    );
}
