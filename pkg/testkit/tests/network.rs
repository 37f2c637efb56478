//! The real AT Protocol network: the scenario does what it says, the truth
//! functions report it, and the firehose replays it.

use std::collections::BTreeMap;

use skyhouse_atproto::frame::{Action, Frame};
use skyhouse_testkit::firehose::{commit_of, read_firehose};
use skyhouse_testkit::{AccountStatus, Network, Records, Scenario};

#[tokio::test]
async fn scenario_leaves_the_pds_in_the_expected_state() {
    let network = Network::start();
    assert!(network.pds_url().starts_with("http://127.0.0.1:"));
    assert!(network.plc_url().starts_with("http://127.0.0.1:"));
    let pds = network.pds();
    assert!(pds.healthy().await);
    let scenario = Scenario::run(&pds).await.expect("scenario runs");

    // Every account: records (getRepo, cross-checked with listRecords),
    // handle and status exactly as the scenario book-kept them.
    let truths = pds
        .truths(scenario.dids())
        .await
        .expect("truth of every DID");
    assert_eq!(truths.len(), 7);
    for (did, expected) in &scenario.expected {
        let truth = &truths[did];
        assert_eq!(truth.records, expected.records, "records of {did}");
        assert_eq!(truth.handle, expected.handle, "handle of {did}");
        assert_eq!(truth.status, expected.status, "status of {did}");
    }

    // Deleted records are gone.
    for w in &scenario.deleted {
        let records = &truths[w.did()].records;
        let key = (w.collection().to_string(), w.rkey().to_string());
        assert!(!records.contains_key(&key), "{} still in getRepo", w.uri);
    }
    assert_eq!(scenario.deleted.len(), scenario.deleted_revs.len());
    assert!(
        scenario.deleted_revs.iter().all(|rev| rev.len() == 13),
        "{:?}",
        scenario.deleted_revs
    );

    // Edits: same URI, new CID, and the repository has the new one.
    for edit in &scenario.edits {
        assert_eq!(edit.before.uri, edit.after.uri);
        assert_ne!(
            edit.before.cid, edit.after.cid,
            "{} kept its CID",
            edit.before.uri
        );
        let key = (
            edit.after.collection().to_string(),
            edit.after.rkey().to_string(),
        );
        assert_eq!(
            truths[edit.after.did()].records.get(&key),
            Some(&edit.after.cid)
        );
    }

    // The threadgate shares its post's rkey; the live records are where they should be.
    assert_eq!(scenario.threadgate.rkey(), scenario.facet_post.rkey());
    let alice = &truths[scenario.facet_post.did()].records;
    for w in [
        &scenario.facet_post,
        &scenario.german_post,
        &scenario.list,
        &scenario.feed_generator,
        &scenario.last,
    ] {
        let key = (w.collection().to_string(), w.rkey().to_string());
        assert_eq!(alice.get(&key), Some(&w.cid), "{}", w.uri);
    }
    assert_eq!(collection_count(alice, "app.bsky.graph.listitem"), 2);
    assert_eq!(scenario.likes.len(), 2);

    // Account changes.
    let (bob, old_handle, new_handle) = &scenario.handle_change;
    assert_eq!(
        pds.resolve_handle(new_handle)
            .await
            .expect("new handle resolves"),
        *bob
    );
    let old = pds
        .resolve_handle(old_handle)
        .await
        .expect_err("old handle is free");
    assert_eq!(old.status(), Some(400), "{old}");
    assert_eq!(
        truths[&scenario.deactivated].status,
        AccountStatus::Deactivated
    );
    assert_eq!(truths[&scenario.reactivated].status, AccountStatus::Active);
    assert_eq!(truths[&scenario.takendown].status, AccountStatus::Takendown);
    let deleted = &truths[&scenario.deleted_account];
    assert_eq!(deleted.status, AccountStatus::Deleted);
    assert!(deleted.records.is_empty());
    assert_eq!(scenario.deleted_account_records.len(), 3);
    let status = pds
        .repo_status(&scenario.deactivated)
        .await
        .expect("status");
    assert_eq!(
        (status.active, status.status.as_deref()),
        (false, Some("deactivated"))
    );

    // Nothing tried to reach the internet (e2e/network.mjs logs and blocks
    // every DNS query for a non-local name).
    let log = network.log();
    assert!(!log.contains("blocked a DNS query"), "{log}");

    // listRepos knows every account but the deleted one.
    let listed: Vec<String> = pds
        .list_repos()
        .await
        .expect("listRepos")
        .into_iter()
        .map(|r| r.0)
        .collect();
    for did in scenario.dids() {
        assert_eq!(
            listed.contains(&did.to_string()),
            *did != scenario.deleted_account,
            "{did}"
        );
    }
}

#[tokio::test]
async fn firehose_replays_the_scenario() {
    let network = Network::start();
    let pds = network.pds();
    let scenario = Scenario::run(&pds).await.expect("scenario runs");
    let url = network.firehose_url(Some(0));
    assert!(url.starts_with("ws://127.0.0.1:"), "{url}");
    let messages = read_firehose(&url, commit_of(scenario.last.did(), &scenario.last.rev))
        .await
        .expect("replay up to the last write");

    // Sequence numbers increase strictly.
    let seqs: Vec<i64> = messages.iter().filter_map(|m| m.frame.seq()).collect();
    assert_eq!(seqs.len(), messages.len(), "every frame has a seq");
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");

    // Applying the replayed ops gives exactly the PDS's records, for every
    // account but the deleted one, whose commits the PDS dropped (SPEC §9).
    let mut replayed: BTreeMap<String, Records> = BTreeMap::new();
    for m in &messages {
        if let Frame::Commit(c) = &m.frame {
            let records = replayed.entry(c.repo.to_string()).or_default();
            for op in &c.ops {
                let (collection, rkey) = op.split_path().expect("valid path");
                let key = (collection.to_string(), rkey.to_string());
                match (op.action, op.cid) {
                    (Action::Delete, _) => {
                        records.remove(&key);
                    }
                    (_, Some(cid)) => {
                        records.insert(key, cid.to_string());
                    }
                    (action, None) => panic!("{action:?} without a CID in {}", c.repo),
                }
            }
        }
    }
    assert!(
        !replayed.contains_key(&scenario.deleted_account),
        "commits of the deleted account are still replayed"
    );
    for (did, expected) in &scenario.expected {
        if *did != scenario.deleted_account {
            assert_eq!(
                replayed.get(did),
                Some(&expected.records),
                "replayed records of {did}"
            );
        }
    }

    // Identity and account events.
    let (bob, _, new_handle) = &scenario.handle_change;
    assert!(
        messages
            .iter()
            .any(|m| matches!(&m.frame, Frame::Identity(i)
            if i.did == *bob && i.handle.as_deref() == Some(new_handle.as_str()))),
        "no #identity with bob's new handle"
    );
    let account_events = |did: &str| -> Vec<(bool, Option<String>)> {
        messages
            .iter()
            .filter_map(|m| match &m.frame {
                Frame::Account(a) if a.did == did => Some((a.active, a.status.clone())),
                _ => None,
            })
            .collect()
    };
    let last_status = |did: &str| account_events(did).last().cloned();
    assert_eq!(
        last_status(&scenario.deactivated),
        Some((false, Some("deactivated".into())))
    );
    assert_eq!(last_status(&scenario.reactivated), Some((true, None)));
    assert!(account_events(&scenario.reactivated).contains(&(false, Some("deactivated".into()))));
    assert_eq!(
        last_status(&scenario.takendown),
        Some((false, Some("takendown".into())))
    );
    assert_eq!(
        last_status(&scenario.deleted_account),
        Some((false, Some("deleted".into())))
    );
}

fn collection_count(records: &Records, collection: &str) -> usize {
    records.keys().filter(|(c, _)| c == collection).count()
}
