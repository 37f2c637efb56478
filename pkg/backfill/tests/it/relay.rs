//! `WorkerConfig::ops_tap` (`backfill work --relay-url`): the relay is handed
//! exactly the record rows the workers write.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use skyhouse_backfill::{enqueue_dids, BACKFILL_STREAM, GROUP};
use skyhouse_testkit::{Network, Records, Scenario};
use skyhouse_transform::OpsTap;
use skyhouse_transform::RecordRow;

use crate::{config, fresh, state, stored, work};

#[derive(Debug, Default)]
struct Collect(Mutex<Vec<RecordRow>>);

impl OpsTap for Collect {
    fn offer(&self, records: &[RecordRow]) {
        self.0.lock().unwrap().extend_from_slice(records);
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
    for r in tap.0.lock().unwrap().iter().filter(|r| r.deleted == 0) {
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
