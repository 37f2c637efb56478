//! Cleanup jobs: the pending account deletions are tombstoned together
//! (one statement per table for all their DIDs), every other account's rows
//! stay, the jobs are recorded once, and an admin request counts its rows.

use crate::fresh;
use skyhouse_atproto::json::from_lex_json;
use skyhouse_store::cleanup;
use skyhouse_store::migrate::{self, Migrator};
use skyhouse_store::writer::{self, WriterConfig};
use skyhouse_transform::{apply, AccountRow, Action, Cid, Op, Rows};

const ALICE: &str = "did:plc:cleanupaliceaaaaaaaaaaa";
const BOB: &str = "did:plc:cleanupbobaaaaaaaaaaaaa";
const CAROL: &str = "did:plc:cleanupcarolaaaaaaaaaaa";

/// A follow and a post of `did` (4 rows: 2 in `records`, 1 in `follows`,
/// 1 in `posts`).
fn writes(did: &str, rows: &mut Rows) {
    let follow = from_lex_json(&serde_json::json!({
        "$type": "app.bsky.graph.follow",
        "createdAt": "2024-05-01T12:00:00.000Z",
        "subject": "did:plc:followedaaaaaaaaaaaaaaaa"
    }))
    .expect("follow");
    let post = from_lex_json(&serde_json::json!({
        "$type": "app.bsky.feed.post",
        "createdAt": "2024-05-01T12:00:00.000Z",
        "text": "hello"
    }))
    .expect("post");
    for (i, (collection, record)) in [
        ("app.bsky.graph.follow", &follow),
        ("app.bsky.feed.post", &post),
    ]
    .into_iter()
    .enumerate()
    {
        apply(
            &Op {
                did,
                collection,
                rkey: "3kznrqqqqqqq2",
                action: Action::Create,
                cid: Some(Cid::from_sha256(0x71, [i as u8; 32])),
                record: Some(record),
                version: 100,
                indexed_at: 1_714_564_800,
            },
            rows,
        );
    }
}

fn live(db: &skyhouse_testkit::TestDatabase, table: &str, key: &str, did: &str) -> u64 {
    let n = db.name();
    db.query(&format!(
        "SELECT count() FROM (SELECT {key}, argMax(deleted, version) AS d FROM {n}.{table} \
         WHERE did = '{did}' GROUP BY {key}) WHERE d = 0"
    ))
    .trim()
    .parse()
    .expect("count")
}

#[tokio::test]
async fn deleted_accounts_are_tombstoned_together_and_others_stay() {
    let (db, ch) = fresh("cleanup_batch");
    Migrator::new(&ch, migrate::embedded().expect("m"))
        .up()
        .await
        .expect("up");
    let mut rows = Rows::default();
    for did in [ALICE, BOB, CAROL] {
        writes(did, &mut rows);
    }
    for (did, status) in [(ALICE, "deleted"), (BOB, "deleted"), (CAROL, "")] {
        rows.push_account(AccountRow {
            did: did.to_owned(),
            active: u8::from(status.is_empty()),
            status: status.to_owned(),
            version: 200,
            indexed_at: 1_714_564_801,
        });
    }
    writer::write_batch(&ch, &WriterConfig::default(), &mut rows, 0u64)
        .await
        .expect("write");
    for did in [ALICE, BOB, CAROL] {
        assert_eq!(
            live(&db, "records", "did, collection, rkey", did),
            2,
            "{did}"
        );
    }

    let mut pending = cleanup::pending_account_cleanups(&ch)
        .await
        .expect("pending");
    pending.sort();
    assert_eq!(
        pending,
        vec![(ALICE.to_owned(), 200), (BOB.to_owned(), 200)]
    );
    assert_eq!(cleanup::run_account_cleanups(&ch).await.expect("run"), 2);
    for did in [ALICE, BOB] {
        assert_eq!(
            live(&db, "records", "did, collection, rkey", did),
            0,
            "{did}"
        );
        assert_eq!(live(&db, "follows", "did, rkey", did), 0, "{did}");
        assert_eq!(live(&db, "posts", "did, rkey", did), 0, "{did}");
    }
    assert_eq!(live(&db, "records", "did, collection, rkey", CAROL), 2);
    assert_eq!(live(&db, "follows", "did, rkey", CAROL), 1);
    assert_eq!(live(&db, "posts", "did, rkey", CAROL), 1);
    let n = db.name();
    // The typed tables' tombstones are deletes (action 3) for the
    // interaction refresh.
    assert_eq!(
        db.query(&format!(
            "SELECT count() FROM {n}.follows WHERE deleted = 1 AND action = 3"
        ))
        .trim(),
        "2"
    );
    // Each job recorded once; nothing pending, so a second pass does nothing.
    let ids = db.query(&format!(
        "SELECT id FROM {n}.repo_cleanup_jobs FINAL WHERE status = 'done' ORDER BY id"
    ));
    assert_eq!(
        ids.lines().collect::<Vec<_>>(),
        vec![
            cleanup::account_job_id(ALICE, 200),
            cleanup::account_job_id(BOB, 200)
        ]
    );
    assert!(cleanup::pending_account_cleanups(&ch)
        .await
        .expect("pending")
        .is_empty());
    assert_eq!(cleanup::run_account_cleanups(&ch).await.expect("again"), 0);

    // An admin request counts what it tombstones: carol's 4 live rows.
    let done = cleanup::cleanup_did(&ch, CAROL, "admin-test", "admin request")
        .await
        .expect("admin cleanup");
    assert_eq!(done.rows_tombstoned, 4);
    assert_eq!(live(&db, "records", "did, collection, rkey", CAROL), 0);
    let job = cleanup::cleanup_job(&ch, "admin-test")
        .await
        .expect("job")
        .expect("recorded");
    assert_eq!((job.did.as_str(), job.rows_tombstoned), (CAROL, 4));
}
