//! Retention on disk (`--data-dir`) on the real binary: `kill -9` and a
//! restart resume every client from its cursor (broadcast) or its group's
//! acknowledged positions; a truncated segment is cut at its last good
//! record on start.

use std::collections::BTreeSet;

use skyhouse_relay::pb::{HealthCheckRequest, Operation, StreamRequest};
use skyhouse_relay::tonic::Streaming;
use skyhouse_relay::AuthedClient;

use crate::groups::{cursors, member, newest, ops, publish, until_covered, Received};
use crate::*;

/// Read a broadcast stream until the operation with cursor `last`.
async fn read_until(
    s: &mut Streaming<skyhouse_relay::pb::OperationBatch>,
    last: u64,
) -> Vec<Operation> {
    let mut out: Vec<Operation> = Vec::new();
    while out.last().is_none_or(|o| o.cursor < last) {
        let b = tokio::time::timeout(DEADLINE, s.message())
            .await
            .expect("no hang")
            .unwrap()
            .expect("open");
        out.extend(b.operations);
    }
    out
}

async fn stream_from(
    c: &mut AuthedClient,
    cursor: u64,
) -> Streaming<skyhouse_relay::pb::OperationBatch> {
    c.stream_operations(StreamRequest {
        cursor: Some(cursor),
        ..Default::default()
    })
    .await
    .unwrap()
    .into_inner()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut segs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    segs.sort();
    segs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_and_a_restart_resume_every_client_with_no_gap_and_no_duplicate() {
    let dir = scratch("kill9");
    let data = dir.join("data");
    let tokens = dir.join("tokens.json");
    let sub = create_token(&tokens, "ingesters", "subscribe");
    let publ = create_token(&tokens, "indexer", "publish");
    let mut relay = Relay::start(
        &dir,
        &[
            "--tokens-file",
            tokens.to_str().unwrap(),
            "--data-dir",
            data.to_str().unwrap(),
            "--segment-bytes",
            "1048576",
            // A small memory ring: most of the window is read back from disk.
            "--retain-ops",
            "1000",
            "--client-queue",
            "1000",
        ],
    );
    let mut writer = relay.client(Some(&publ)).await;
    let mut reader = relay.client(Some(&sub)).await;
    let start = newest(&mut reader).await;
    let group_got: Received = Default::default();
    let g1 = member(reader.clone(), "resume", group_got.clone());
    let deadline = Instant::now() + DEADLINE;
    while !relay
        .scrape()
        .await
        .contains("skyhouse_relay_group_members{group=\"resume\"} 1")
    {
        assert!(Instant::now() < deadline, "the member never joined");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_last = publish(&mut writer, ops(0, 8_000)).await;
    let published: Vec<Operation> = ops(0, 8_000);

    // Two broadcast clients: one read all, one stopped halfway.
    let mut s1 = stream_from(&mut reader, start).await;
    let got1 = read_until(&mut s1, first_last).await;
    let half = start + 4_000;
    let mut s2 = stream_from(&mut reader, start).await;
    let got2 = read_until(&mut s2, half).await;
    let resume2 = got2.last().unwrap().cursor;
    assert_eq!(got1.len(), 8_000);
    until_covered(&relay, &[&group_got], &(start + 1..=first_last).collect()).await;
    // The groups' positions are saved every few seconds: wait for a save
    // that has every partition acknowledged up to the newest.
    let deadline = Instant::now() + DEADLINE;
    loop {
        let saved: serde_json::Value = fs::read(data.join("groups.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let done = saved.as_array().into_iter().flatten().any(|g| {
            g["name"] == "resume"
                && g["committed"]
                    .as_array()
                    .is_some_and(|c| c.iter().all(|p| p.as_u64() >= Some(first_last)))
        });
        if done {
            break;
        }
        assert!(Instant::now() < deadline, "positions never saved: {saved}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    g1.abort();

    relay.kill9();
    drop((s1, s2));
    relay.restart();
    let mut reader = relay.client(Some(&sub)).await;
    let mut writer = relay.client(Some(&publ)).await;
    let h = reader
        .health_check(HealthCheckRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(h.oldest_cursor <= start, "the window survived: {h:?}");
    assert_eq!(h.newest_cursor, first_last, "{h:?}");
    // New operations are numbered after the old ones.
    let second_last = publish(&mut writer, ops(8_000, 2_000)).await;
    let second_first = second_last - 1_999;
    assert!(second_first > first_last);

    // The first client resumes from its last cursor: exactly what followed.
    let mut s1 = stream_from(&mut reader, first_last).await;
    let more1 = read_until(&mut s1, second_last).await;
    assert_eq!(
        more1.iter().map(|o| o.cursor).collect::<Vec<_>>(),
        (second_first..=second_last).collect::<Vec<_>>()
    );
    assert_eq!(more1[0].rkey, "k0008000");
    // The second resumes from halfway, through what the previous run wrote.
    let mut s2 = stream_from(&mut reader, resume2).await;
    let more2 = read_until(&mut s2, second_last).await;
    let mut all2: Vec<Operation> = got2;
    all2.extend(more2);
    let want: Vec<(String, String)> = published
        .iter()
        .chain(&ops(8_000, 2_000))
        .map(|o| (o.did.clone(), o.rkey.clone()))
        .collect();
    assert_eq!(
        all2.iter()
            .map(|o| (o.did.clone(), o.rkey.clone()))
            .collect::<Vec<_>>(),
        want,
        "no gap, no duplicate"
    );
    // The group resumes from its saved positions: all of the new ones, none
    // of the old (acknowledged and saved before the kill).
    let group_after: Received = Default::default();
    let _g2 = member(reader.clone(), "resume", group_after.clone());
    // One member owns every partition and reads in cursor order: once it has
    // a marker published last, it has had everything it will get before it.
    let marker = publish(&mut writer, ops(10_000, 1)).await;
    let new: BTreeSet<u64> = (second_first..=second_last).chain([marker]).collect();
    until_covered(&relay, &[&group_after], &new).await;
    assert_eq!(cursors(&group_after), new);
    assert!(relay.log().contains("Relay retention on disk opened."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_segment_is_cut_at_its_last_good_record_on_start() {
    let dir = scratch("torn");
    let data = dir.join("data");
    let mut relay = Relay::start(
        &dir,
        &["--insecure-no-auth", "--data-dir", data.to_str().unwrap()],
    );
    let mut c = relay.client(None).await;
    let start = newest(&mut c).await;
    let last = publish(&mut c, ops(0, 500)).await;
    relay.kill9();
    // A power loss: the tail of the last record never reached the disk.
    let seg = segments(&data).pop().expect("a segment");
    let len = fs::metadata(&seg).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    relay.restart();
    let mut c = relay.client(None).await;
    let log = relay.log();
    assert!(
        log.contains("cut at the last good record") && log.contains("truncated record"),
        "{log}"
    );
    assert!(relay
        .scrape()
        .await
        .contains("skyhouse_relay_disk_repaired_total 1"));
    // Everything before it is served, and new operations follow.
    let next = publish(&mut c, ops(500, 10)).await;
    let mut s = stream_from(&mut c, start).await;
    let got = read_until(&mut s, next).await;
    // The torn record's cursor is not reused (a client may have had it).
    assert_eq!(got[498].cursor, last - 1);
    assert!(got[499].cursor > last);
    let rkeys: Vec<String> = got.iter().map(|o| o.rkey.clone()).collect();
    let want: Vec<String> = ops(0, 499)
        .into_iter()
        .chain(ops(500, 10))
        .map(|o| o.rkey)
        .collect();
    assert_eq!(rkeys, want);
}
