//! `WorkerConfig::ops_tap` (`backfill work --relay-url`): the relay is handed
//! exactly the record rows the workers write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use skyhouse_backfill::{enqueue_dids, BACKFILL_STREAM, GROUP};
use skyhouse_testkit::{Network, Records, Scenario};
use skyhouse_transform::{Action, OpsTap, RecordRow, Rows, TapExtras, TapOp};

use crate::{config, fresh, state, stored, work};

#[derive(Debug, Default)]
struct Collect(Mutex<Vec<(RecordRow, TapOp)>>);

impl OpsTap for Collect {
    fn extras(&self) -> TapExtras {
        TapExtras::ActionsAndCbor
    }

    fn offer(&self, rows: &Rows) {
        assert_eq!(
            rows.tap.len(),
            rows.records.len(),
            "one tap op per record row"
        );
        let mut all = self.0.lock().unwrap();
        for t in &rows.tap {
            all.push((rows.records[t.record].clone(), t.clone()));
        }
    }
}

#[tokio::test]
async fn the_ops_tap_sees_every_record_the_workers_store() {
    let network = Network::shared();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.unwrap();
    let (db, ch) = fresh("backfill_tap").await;
    let state = state("backfill_tap").await;
    let queue = state.work_queue(BACKFILL_STREAM, GROUP);
    queue.create_group().await.unwrap();
    let dids: Vec<String> = scenario.dids().map(str::to_owned).collect();
    enqueue_dids(&queue, &dids, "did").await.unwrap();
    let tap = Arc::new(Collect::default());
    let mut cfg = config("tap");
    cfg.ops_tap = Some(tap.clone());
    work(cfg, &ch, &state, network).await;

    let mut offered: BTreeMap<String, Records> = BTreeMap::new();
    for (r, t) in tap.0.lock().unwrap().iter().filter(|(r, _)| r.deleted == 0) {
        // A backfilled record is a create, with the block's bytes: their hash is its CID.
        assert_eq!(t.action, Action::Create);
        let cbor = t.cbor.as_deref().expect("the record's DAG-CBOR");
        let cid = skyhouse_transform::Cid::compute(skyhouse_atproto::cid::CODEC_DAG_CBOR, cbor);
        assert_eq!(
            cid.to_string(),
            r.cid,
            "{} {} {}",
            r.did,
            r.collection,
            r.rkey
        );
        let prev = offered
            .entry(r.did.clone())
            .or_default()
            .insert((r.collection.clone(), r.rkey.clone()), r.cid.clone());
        assert!(
            prev.is_none(),
            "{} {} {} offered twice",
            r.did,
            r.collection,
            r.rkey
        );
    }
    let stored = stored(&db);
    assert!(!stored.is_empty());
    assert_eq!(offered, stored);
}
