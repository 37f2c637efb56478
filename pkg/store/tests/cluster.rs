//! skyhouse-store's migrations on a real ClickHouse 18.16 cluster started by
//! the test kit: ZooKeeper and 2 shards × 2 replicas on loopback.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use skyhouse_atproto::json::from_lex_json;
use skyhouse_store::migrate::{self, Migrator, State};
use skyhouse_store::writer::{self, WriterConfig};
use skyhouse_store::{admin, ClickHouse, ClickHouseConfig};
use skyhouse_testkit::{Cluster, ClusterDatabase, ClusterNode, CLUSTER_NAME};
use skyhouse_transform::{apply, Action, Cid, Op, Rows};

/// A store handle on `db` through the server at `url`, in cluster mode.
fn store(url: &str, db: &str) -> ClickHouse {
    ClickHouse::new(ClickHouseConfig {
        cluster: Some(CLUSTER_NAME.to_owned()),
        ..ClickHouseConfig::local(url, db)
    })
    .expect("config")
}

/// `n` records of a graph `collection` (follow, block), each by its own DID
/// `<prefix><i>`, as the indexer's rows.
fn graph_records_by(collection: &str, prefix: &str, n: usize) -> Rows {
    let record = from_lex_json(&serde_json::json!({
        "$type": collection,
        "createdAt": "2024-05-01T12:00:00.000Z",
        "subject": "did:plc:followedaaaaaaaaaaaaaaaa"
    }))
    .expect("follow");
    let mut rows = Rows::default();
    for i in 0..n {
        let did = format!("{prefix}{i:02}");
        apply(
            &Op {
                did: &did,
                collection,
                rkey: "3l00000000001",
                action: Action::Create,
                cid: Some(Cid::from_sha256(0x71, [i as u8; 32])),
                record: Some(&record),
                version: 5,
                indexed_at: 1_714_564_800,
            },
            &mut rows,
        );
    }
    rows
}

/// One database on every server with every migration applied, shared by
/// the tests that write rows (each under DIDs of its own): every `ON
/// CLUSTER` statement waits for all four servers, so a migration set takes
/// seconds, and the servers run them one at a time.
fn migrated() -> &'static ClusterDatabase {
    static MIGRATED: OnceLock<ClusterDatabase> = OnceLock::new();
    MIGRATED.get_or_init(|| {
        let cluster = Cluster::shared();
        let db = cluster.database("cluster_rows");
        migrate_up(cluster, store(&cluster.http_url(), db.name()));
        db
    })
}

/// Every migration up on `cluster` through `ch`, one process's migrations
/// at a time (the cluster's DDL lock). The tests' own runtimes cannot block
/// on it: a thread of its own (with a client of its own, whose connections
/// die with it). A server whose ON CLUSTER worker stops meanwhile (18.16's
/// replicated ALTER race) is restarted.
fn migrate_up(cluster: &Cluster, ch: ClickHouse) {
    let _migrating = cluster.ddl_lock();
    let migrating = thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(Migrator::new(&ch, migrate::embedded().expect("migrations")).up())
            .expect("up")
    });
    while !migrating.is_finished() {
        cluster.revive_ddl_workers();
        thread::sleep(Duration::from_millis(500));
    }
    migrating.join().expect("migrating thread");
}

/// `name<TAB>engine_full` of every table of `db` on `node`, by name.
fn tables(node: &ClusterNode, db: &str) -> Vec<String> {
    node.query(&format!(
        "SELECT name, if(engine IN ('MaterializedView', 'View'), engine, engine_full) FROM system.tables WHERE database = '{db}' ORDER BY name"
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Waits until `node`'s replica of `db.table` has fetched everything its
/// replication queue knows of.
fn sync(node: &ClusterNode, db: &str, table: &str) {
    node.query(&format!("SYSTEM SYNC REPLICA {db}.{table}"));
}

fn sync_everywhere(cluster: &Cluster, db: &str, table: &str) {
    for node in cluster.nodes() {
        sync(node, db, table);
    }
}

#[tokio::test]
async fn migrations_go_up_down_and_up_again_on_every_server() {
    // A cluster of its own: on ClickHouse 18.16, ALTERs of replicated tables
    // ON CLUSTER from this test and the other tests' concurrent migration
    // have been seen to stall a server's DDL queue past
    // distributed_ddl_task_timeout on a loaded machine.
    let cluster = &Cluster::start();
    let db = cluster.database("cluster_migrate");
    let name = db.name();
    let all = migrate::embedded().expect("migrations");
    let ch = store(&cluster.http_url(), name);
    let first = Migrator::new(&ch, all.clone());
    let after_up = first.up().await.expect("up");
    let server = ch.server_version().await.expect("version");
    for s in &after_up {
        let gated = all
            .iter()
            .find(|m| m.version == s.version)
            .and_then(|m| m.min_server_version);
        let want = if gated.is_some_and(|g| server < g) {
            State::Skipped
        } else {
            State::Applied
        };
        assert_eq!(s.state, want, "{s:?}");
    }

    // Every server has the same tables: each table of the files as a
    // replicated _local table and a Distributed one over it, sharded by a
    // hash of the first sorting-key column (so every version and tombstone of
    // a key is on one shard), plus the bookkeeping.
    let with_all = tables(&cluster.nodes()[0], name);
    for node in cluster.nodes() {
        assert_eq!(tables(node, name), with_all, "{}", node.name());
    }
    let sorting_keys: BTreeMap<String, String> = cluster
        .query(&format!(
            "SELECT name, sorting_key FROM system.tables WHERE database = '{name}' AND name LIKE '%\\_local'"
        ))
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(t, k)| (t.to_owned(), k.to_owned()))
        .collect();
    assert!(
        sorting_keys.contains_key("records_local"),
        "{sorting_keys:?}"
    );
    let mut distributed = 0;
    let mut views = 0;
    for line in &with_all {
        let (table, engine) = line.split_once('\t').expect("name and engine");
        if engine == "MaterializedView" || engine == "View" {
            // Created on every node: materialized views feed the shard's
            // local tables, plain views read the Distributed tables.
            views += 1;
            continue;
        }
        if table == "schema_migrations" {
            assert!(
                engine.starts_with(&format!(
                    "ReplicatedReplacingMergeTree(\\'/clickhouse/tables/all/{name}/schema_migrations\\'"
                )),
                "{line}"
            );
        } else if let Some(base) = table.strip_suffix("_local") {
            // Plain logs are MergeTree; every keyed table replaces by version.
            let plain = matches!(
                base,
                "dead_letters" | "interaction_changes" | "day_changes" | "account_changes"
            );
            assert!(
                engine.starts_with(&format!(
                    "Replicated{}",
                    if plain {
                        "MergeTree"
                    } else {
                        "ReplacingMergeTree"
                    }
                )),
                "{line}"
            );
            assert!(
                engine.contains(&format!(
                    "\\'/clickhouse/tables/{{shard}}/{name}/{table}\\', \\'{{replica}}\\'"
                )),
                "{line}"
            );
        } else {
            let key = sorting_keys
                .get(&format!("{table}_local"))
                .unwrap_or_else(|| panic!("no {table}_local for {line}: {sorting_keys:?}"));
            // The first plain column of the key (a time bucket such as
            // toStartOfHour(t) would put every row of an hour on one shard);
            // a table a materialized view feeds is sharded by did, where
            // the view's rows are (its sources are sharded by did).
            let fed_by_view = matches!(
                table,
                "interaction_changes" | "record_days" | "account_changes" | "recent_posts"
            );
            let first_column = if fed_by_view {
                "did"
            } else {
                key.split(',')
                    .map(str::trim)
                    .find(|c| !c.contains('('))
                    .expect("a plain column")
            };
            assert_eq!(
                engine,
                format!("Distributed({CLUSTER_NAME}, {name}, {table}_local, cityHash64({first_column}))"),
                "{line}"
            );
            distributed += 1;
        }
    }
    assert_eq!(distributed * 2 + 1 + views, with_all.len(), "{with_all:#?}");
    assert!(distributed > 20, "{with_all:#?}");

    // The bookkeeping is replicated to every server: another server knows
    // what was applied.
    let other_ch = store(&cluster.node(2, 2).http_url(), name);
    let other = Migrator::new(&other_ch, all.clone());
    sync(cluster.node(2, 2), name, "schema_migrations");
    assert_eq!(other.status().await.expect("status"), after_up);
    // Idempotent.
    assert_eq!(first.up().await.expect("up again"), after_up);
    assert_eq!(tables(&cluster.nodes()[0], name), with_all);
    // The newest migration with column changes as if interrupted after its
    // ALTERs (its bookkeeping row never written), and every later one not
    // run yet: they run again, its ADD COLUMNs already made on the shards
    // skipped.
    let from = all
        .iter()
        .rposition(|m| m.up.contains("ADD COLUMN"))
        .expect("a migration that adds columns");
    for rerun in &all[from..] {
        cluster.query(&format!(
            "INSERT INTO {name}.schema_migrations (version, name, checksum, state, server_version, applied_at, seq) \
             SELECT {v}, '{}', '', 'rolled_back', '', now(), max(seq) + 1 FROM {name}.schema_migrations WHERE version = {v}",
            rerun.name,
            v = rerun.version
        ));
    }
    assert_eq!(
        first.up().await.expect("up after an interruption"),
        after_up
    );
    assert_eq!(tables(&cluster.nodes()[0], name), with_all);

    // Everything down, through the other server: only the bookkeeping stays,
    // on every server.
    let after_down = other.down(all.len()).await.expect("down");
    assert!(
        after_down.iter().all(|s| s.state == State::Pending),
        "{after_down:?}"
    );
    for node in cluster.nodes() {
        let left: Vec<String> = tables(node, name)
            .iter()
            .map(|l| l.split('\t').next().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(left, ["schema_migrations"], "{}", node.name());
    }
    // The replicated tables left ZooKeeper with them: nothing is in the way
    // of creating them again.
    for shard in ["1", "2"] {
        let left = cluster.nodes()[0].try_query(&format!(
            "SELECT name FROM system.zookeeper WHERE path = '/clickhouse/tables/{shard}/{name}'"
        ));
        match left {
            Ok(children) => assert_eq!(children, "", "shard {shard}"),
            Err(e) => assert!(e.contains("No node"), "{e}"),
        }
    }

    // And up again, through the first server: the same tables everywhere.
    sync(&cluster.nodes()[0], name, "schema_migrations");
    assert_eq!(first.up().await.expect("up again"), after_up);
    for node in cluster.nodes() {
        assert_eq!(tables(node, name), with_all, "{}", node.name());
    }
}

/// `(node, shard, max(version) per did)` of the rows of `db.table_local`
/// whose DID starts with `prefix`, on every server.
fn versions_by_node(
    cluster: &Cluster,
    db: &str,
    table: &str,
    prefix: &str,
) -> Vec<(String, u32, BTreeMap<String, u64>)> {
    cluster
        .nodes()
        .iter()
        .map(|node| {
            let rows = node
                .query(&format!(
                    "SELECT did, max(version) FROM {db}.{table}_local \
                     WHERE startsWith(did, '{prefix}') GROUP BY did ORDER BY did"
                ))
                .lines()
                .filter_map(|l| l.split_once('\t'))
                .map(|(did, v)| (did.to_owned(), v.parse().expect("a version")))
                .collect();
            (node.name().to_owned(), node.shard(), rows)
        })
        .collect()
}

#[tokio::test]
async fn a_row_through_a_distributed_table_lands_on_both_replicas_of_one_shard() {
    let cluster = Cluster::shared();
    let db = migrated();
    let name = db.name();
    let ch = store(&cluster.http_url(), name);
    // Synchronously (each shard acknowledged before the insert returns) and
    // asynchronously (the Distributed table sends later): both go to one
    // shard, whose replicas both get the row.
    let sync_client = ch
        .client()
        .clone()
        .with_setting("insert_distributed_sync", "1");
    sync_client
        .query(&format!(
            "INSERT INTO {name}.records (did, collection, rkey, cid, version, deleted, record) \
             VALUES ('did:plc:onesync', 'app.bsky.feed.post', 'a', 'c', 1, 0, '{{}}')"
        ))
        .execute()
        .await
        .expect("insert through the Distributed table, synchronously");
    ch.client()
        .clone()
        .with_setting("insert_distributed_sync", "0")
        .query(&format!(
            "INSERT INTO {name}.records (did, collection, rkey, cid, version, deleted, record) \
             VALUES ('did:plc:oneasync', 'app.bsky.feed.post', 'a', 'c', 1, 0, '{{}}')"
        ))
        .execute()
        .await
        .expect("insert through the Distributed table, asynchronously");
    let deadline = Instant::now() + Duration::from_secs(60);
    let placed = loop {
        sync_everywhere(cluster, name, "records_local");
        let placed = versions_by_node(cluster, name, "records", "did:plc:one");
        let copies = placed.iter().map(|(_, _, rows)| rows.len()).sum::<usize>();
        if copies == 4 || Instant::now() >= deadline {
            break placed;
        }
        thread::sleep(Duration::from_millis(200));
    };
    for did in ["did:plc:onesync", "did:plc:oneasync"] {
        let holders: Vec<(&str, u32)> = placed
            .iter()
            .filter(|(_, _, rows)| rows.contains_key(did))
            .map(|(node, shard, _)| (node.as_str(), *shard))
            .collect();
        assert_eq!(holders.len(), 2, "{did} on {holders:?}");
        assert_eq!(holders[0].1, holders[1].1, "{did} on {holders:?}");
    }
    let through_distributed =
        db.query("SELECT did FROM records WHERE startsWith(did, 'did:plc:one') ORDER BY did");
    assert_eq!(through_distributed, "did:plc:oneasync\ndid:plc:onesync\n");
}

#[tokio::test]
async fn a_materialized_column_is_stored_by_the_shard_and_read_through_the_distributed_table() {
    let cluster = Cluster::shared();
    let db = migrated();
    let name = db.name();
    let ch = store(&cluster.http_url(), name);
    // posts_local has inserted_at MATERIALIZED now() (0004); an insert
    // through posts leaves it out and the shard fills it in.
    ch.client()
        .clone()
        .with_setting("insert_distributed_sync", "1")
        .query(&format!(
            "INSERT INTO {name}.posts (did, rkey, cid, version, deleted, text) \
             VALUES ('did:plc:m', 'p', 'c', 1, 0, 'hello')"
        ))
        .execute()
        .await
        .expect("insert through the Distributed table with a MATERIALIZED column");
    sync_everywhere(cluster, name, "posts_local");
    let stored: BTreeSet<String> = cluster
        .nodes()
        .iter()
        .map(|n| {
            n.query(&format!(
                "SELECT toUInt32(inserted_at) FROM {name}.posts_local WHERE did = 'did:plc:m'"
            ))
        })
        .filter(|v| !v.is_empty())
        .collect();
    assert_eq!(stored.len(), 1, "both replicas store one value: {stored:?}");
    let stored = stored.into_iter().next().expect("one").trim().to_owned();
    // A second later, reading through the Distributed table gives the
    // stored time, not the time of the read.
    thread::sleep(Duration::from_millis(1100));
    let read = db.query("SELECT toUInt32(inserted_at) FROM posts WHERE did = 'did:plc:m'");
    assert_eq!(read.trim(), stored);
    let newer = db.query(&format!(
        "SELECT count() FROM posts WHERE did = 'did:plc:m' AND inserted_at >= toDateTime({stored})"
    ));
    assert_eq!(newer, "1\n");
    assert_eq!(
        db.query("SELECT count() FROM posts WHERE did = 'did:plc:m' AND inserted_at > now()"),
        "0\n"
    );
}

#[tokio::test]
async fn a_tombstone_lands_on_its_records_shard_and_final_sees_the_record_deleted() {
    let cluster = Cluster::shared();
    let db = migrated();
    let name = db.name();
    let dids: Vec<String> = (0..40).map(|i| format!("did:plc:tomb{i:02}")).collect();
    let rows = |version: u64, deleted: u8, which: &dyn Fn(usize) -> bool| -> String {
        dids.iter()
            .enumerate()
            .filter(|(i, _)| which(*i))
            .map(|(_, did)| {
                format!(
                    "('{did}', 'app.bsky.feed.post', 'r', 'c{version}', {version}, {deleted}, '')"
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let insert = |through: String, values: String| async move {
        store(&through, name)
            .client()
            .clone()
            .with_setting("insert_distributed_sync", "1")
            .query(&format!(
                "INSERT INTO {name}.records (did, collection, rkey, cid, version, deleted, record) VALUES {values}"
            ))
            .execute()
            .await
            .expect("insert through the Distributed table");
    };
    // The records through one server, the tombstones of every other one
    // (same sorting key, higher version) through a server of the other shard.
    insert(cluster.node(1, 1).http_url(), rows(1, 0, &|_| true)).await;
    insert(cluster.node(2, 2).http_url(), rows(2, 1, &|i| i % 2 == 0)).await;
    sync_everywhere(cluster, name, "records_local");

    let placed = versions_by_node(cluster, name, "records", "did:plc:tomb");
    let mut shards_used = BTreeSet::new();
    for (i, did) in dids.iter().enumerate() {
        let holders: Vec<(&str, u32, u64)> = placed
            .iter()
            .filter_map(|(node, shard, rows)| rows.get(did).map(|v| (node.as_str(), *shard, *v)))
            .collect();
        // On both replicas of one shard, with its newest version there.
        assert_eq!(holders.len(), 2, "{did}: {holders:?}");
        assert_eq!(holders[0].1, holders[1].1, "{did}: {holders:?}");
        let newest = if i % 2 == 0 { 2 } else { 1 };
        assert!(holders.iter().all(|h| h.2 == newest), "{did}: {holders:?}");
        shards_used.insert(holders[0].1);
    }
    assert_eq!(shards_used.len(), 2, "the DIDs spread over both shards");

    // FINAL through the Distributed table: the tombstoned records are deleted.
    let deleted = db.query(
        "SELECT did FROM records FINAL WHERE startsWith(did, 'did:plc:tomb') AND deleted = 1 ORDER BY did",
    );
    let want: String = dids.iter().step_by(2).map(|d| format!("{d}\n")).collect();
    assert_eq!(deleted, want);
    assert_eq!(
        db.query("SELECT count() FROM records FINAL WHERE startsWith(did, 'did:plc:tomb') AND deleted = 0"),
        "20\n"
    );
}

#[tokio::test]
async fn every_statement_runs_on_the_cluster() {
    // Every statement the store sends, rendered for a cluster as the
    // services send them ({global} and {local} filled), runs through the
    // Distributed tables: a subquery over a Distributed table without them
    // is refused (code 288, distributed_product_mode = 'deny').
    let db = migrated();
    let catalog =
        skyhouse_store::sql::catalog(skyhouse_store::sql::Db::cluster(db.name())).expect("catalog");
    assert!(catalog.len() > 20, "only {} statements", catalog.len());
    assert!(
        catalog.iter().any(|r| r.sql.contains("GLOBAL "))
            && catalog.iter().any(|r| r.sql.contains("_local")),
        "the cluster catalog uses neither GLOBAL nor a local table"
    );
    let mut failed = Vec::new();
    for r in &catalog {
        // The cluster's servers keep no query log (no `<query_log>` in
        // scripts/cluster/clickhouse.xml), and only the single-node scale
        // benchmark reads one.
        if admin::SERVER_LOG_STATEMENTS.contains(&r.name.as_str()) {
            continue;
        }
        // 18.16's answer to merging a replicated table with no parts on
        // this shard (see admin::optimize_final, which takes it as done).
        let empty_merge =
            |e: &str| r.name == "optimize_table_final" && e.contains(admin::EMPTY_MERGE);
        if let Err(e) = db.try_query(&r.sql).or_else(|e| {
            if empty_merge(&e) {
                Ok(String::new())
            } else {
                Err(e)
            }
        }) {
            failed.push(format!("{}: {}", r.name, skyhouse_store::one_line(&e)));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[tokio::test]
async fn an_acknowledged_batch_is_on_its_shards_and_with_a_quorum_on_both_replicas() {
    let cluster = Cluster::shared();
    let db = migrated();
    let name = db.name();
    for (quorum, prefix) in [(None, "did:plc:ackone"), (Some(2), "did:plc:ackquorum")] {
        let ch = ClickHouse::new(ClickHouseConfig {
            cluster: Some(CLUSTER_NAME.to_owned()),
            insert_quorum: quorum,
            ..ClickHouseConfig::local(&cluster.node(1, 1).http_url(), name)
        })
        .expect("config");
        let mut rows = graph_records_by("app.bsky.graph.follow", prefix, 40);
        let ack = writer::write_batch(&ch, &WriterConfig::default(), &mut rows, 7u64)
            .await
            .expect("batch written");
        assert_eq!((ack.upto, ack.rows, ack.dead_lettered), (7, 80, 0));
        // Right after the ack, nothing waits in a queue of the server that
        // took the insert: each row is on its shard (on the replica that got
        // it; with a quorum of 2, on both replicas already).
        let placed = versions_by_node(cluster, name, "follows", prefix);
        let mut shards_used = BTreeSet::new();
        for i in 0..40 {
            let did = format!("{prefix}{i:02}");
            let holders: Vec<(&str, u32)> = placed
                .iter()
                .filter(|(_, _, rows)| rows.get(&did) == Some(&5))
                .map(|(node, shard, _)| (node.as_str(), *shard))
                .collect();
            let want = quorum.unwrap_or(1) as usize;
            assert!(
                holders.len() >= want,
                "{did} (quorum {quorum:?}) right after the ack: on {holders:?}"
            );
            assert!(
                holders.iter().all(|h| h.1 == holders[0].1),
                "{did} on two shards: {holders:?}"
            );
            shards_used.insert(holders[0].1);
        }
        assert_eq!(shards_used.len(), 2, "the DIDs spread over both shards");
    }
}

/// Starts the fetches of a replica's table again when dropped (a failed
/// assertion included).
struct FetchesStopped<'a>(Vec<&'a ClusterNode>, String);

impl<'a> FetchesStopped<'a> {
    fn on(nodes: Vec<&'a ClusterNode>, table: String) -> Self {
        for n in &nodes {
            n.query(&format!("SYSTEM STOP FETCHES {table}"));
        }
        FetchesStopped(nodes, table)
    }
}

impl Drop for FetchesStopped<'_> {
    fn drop(&mut self) {
        for n in &self.0 {
            n.query(&format!("SYSTEM START FETCHES {}", self.1));
        }
    }
}

#[tokio::test]
async fn what_the_store_wrote_it_reads_back_at_once_before_the_replicas_fetch() {
    let cluster = Cluster::shared();
    let db = migrated();
    let name = db.name();
    // No replica fetches meanwhile: each row is on the one replica of its
    // shard that took the insert, as right after any write (the other
    // replica fetches it moments later). A read that goes to the other one
    // does not see it, and a refresh deciding from that read would keep a
    // wrong answer (a reply's gate verdict, a subject's count). No other
    // test writes blocks.
    let _stopped = FetchesStopped::on(
        cluster.nodes().iter().collect(),
        format!("{name}.blocks_local"),
    );
    let ch = store(&cluster.http_url(), name);
    let mut rows = graph_records_by("app.bsky.graph.block", "did:plc:readback", 40);
    let ack = writer::write_batch(&ch, &WriterConfig::default(), &mut rows, 3u64)
        .await
        .expect("batch written");
    assert_eq!(ack.upto, 3);
    let placed = versions_by_node(cluster, name, "blocks", "did:plc:readback");
    let copies: usize = placed.iter().map(|(_, _, rows)| rows.len()).sum();
    assert_eq!(copies, 40, "one copy of each row: {placed:?}");
    // Each read picks its replicas again: every one sees the whole batch.
    for i in 0..20 {
        let n: u64 = ch
            .client()
            .query(&format!(
                "SELECT count() FROM {name}.blocks WHERE startsWith(did, 'did:plc:readback')"
            ))
            .fetch_one()
            .await
            .expect("count");
        assert_eq!(n, 40, "read {i} after the write");
    }
}

/// A TID rkey `mins_ago` minutes before now (clock id `clock`): recent, so
/// the companion tables (recent posts and interactions) keep it.
fn recent_tid(mins_ago: u64, clock: u16) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_micros() as u64;
    skyhouse_atproto::syntax::Tid::from_parts(now - mins_ago * 60_000_000, clock)
        .expect("tid")
        .into_string()
}

/// One write of the scenario.
struct Write {
    did: String,
    collection: &'static str,
    rkey: String,
    action: Action,
    version: u64,
    record: serde_json::Value,
}

const ACCOUNTS: usize = 16;

fn account(i: usize) -> String {
    format!("did:plc:same{i:02}sameaaaaaaaaaaaaaa")
}

fn post_uri(author: usize, n: usize, rkeys: &[Vec<String>]) -> String {
    format!(
        "at://{}/app.bsky.feed.post/{}",
        account(author),
        rkeys[author][n]
    )
}

/// Accounts on both shards posting (tags, languages, replies, one of them
/// under a threadgate that forbids it, quotes),
/// liking, reposting and following each other; then deletes, an update that
/// moves a like, and two accounts hidden (deactivated, deleted).
fn scenario() -> (Vec<Vec<Write>>, Vec<String>) {
    const CID: &str = "bafyreigmpffgbpgzfhvml36cecdcz7cn2v7kde2ar7ib4jgol7grj4jyly";
    let rkeys: Vec<Vec<String>> = (0..ACCOUNTS)
        .map(|i| {
            (0..3)
                .map(|n| recent_tid((i * 3 + n) as u64 * 7, i as u16))
                .collect()
        })
        .collect();
    // Per account: its likes' keys, then its repost's and its follow's.
    let own: Vec<Vec<String>> = (0..ACCOUNTS)
        .map(|i| (1..=6).map(|k| recent_tid(k, 900 + i as u16)).collect())
        .collect();
    let mut version = 100;
    let mut next = || {
        version += 1;
        version
    };
    let strong = |uri: &str| serde_json::json!({"uri": uri, "cid": CID});
    let mut first = Vec::new();
    let mut uris = Vec::new();
    for i in 0..ACCOUNTS {
        for n in 0..3 {
            let mut record = serde_json::json!({"$type": "app.bsky.feed.post",
                "text": format!("post {n} of {i} #tag{} #common", i % 3),
                "langs": [if i % 2 == 0 { "en" } else { "pt" }],
                "facets": [],
                "createdAt": "2024-05-01T12:00:00Z"});
            if n == 1 && i > 0 {
                let parent = post_uri(i - 1, 0, &rkeys);
                record["reply"] =
                    serde_json::json!({"root": strong(&parent), "parent": strong(&parent)});
            }
            if n == 2 {
                record["embed"] = serde_json::json!({"$type": "app.bsky.embed.record",
                    "record": strong(&post_uri((i + 2) % ACCOUNTS, 0, &rkeys))});
            }
            uris.push(post_uri(i, n, &rkeys));
            first.push(Write {
                did: account(i),
                collection: "app.bsky.feed.post",
                rkey: rkeys[i][n].clone(),
                action: Action::Create,
                version: next(),
                record,
            });
        }
    }
    // Nobody may reply to account 0's first post (a gate made before the
    // reply): account 1's reply to it is gated.
    first.push(Write {
        did: account(0),
        collection: "app.bsky.feed.threadgate",
        rkey: rkeys[0][0].clone(),
        action: Action::Create,
        version: next(),
        record: serde_json::json!({"$type": "app.bsky.feed.threadgate",
            "post": post_uri(0, 0, &rkeys), "allow": [],
            "createdAt": "2024-05-01T11:00:00Z"}),
    });
    let mut second = Vec::new();
    for (i, own) in own.iter().enumerate() {
        for k in 1..=4 {
            let target = (i + k) % ACCOUNTS;
            second.push(Write {
                did: account(i),
                collection: "app.bsky.feed.like",
                rkey: own[k - 1].clone(),
                action: Action::Create,
                version: next(),
                record: serde_json::json!({"$type": "app.bsky.feed.like",
                    "subject": strong(&post_uri(target, k % 3, &rkeys)),
                    "createdAt": "2024-05-01T12:00:00Z"}),
            });
        }
        second.push(Write {
            did: account(i),
            collection: "app.bsky.feed.repost",
            rkey: own[4].clone(),
            action: Action::Create,
            version: next(),
            record: serde_json::json!({"$type": "app.bsky.feed.repost",
                "subject": strong(&post_uri((i + 5) % ACCOUNTS, 0, &rkeys)),
                "createdAt": "2024-05-01T12:00:00Z"}),
        });
        second.push(Write {
            did: account(i),
            collection: "app.bsky.graph.follow",
            rkey: own[5].clone(),
            action: Action::Create,
            version: next(),
            record: serde_json::json!({"$type": "app.bsky.graph.follow",
                "subject": account((i + 1) % ACCOUNTS),
                "createdAt": "2024-05-01T12:00:00Z"}),
        });
    }
    let mut third = Vec::new();
    for i in (0..ACCOUNTS).step_by(3) {
        // The first like of every third account deleted, its second moved.
        third.push(Write {
            did: account(i),
            collection: "app.bsky.feed.like",
            rkey: own[i][0].clone(),
            action: Action::Delete,
            version: next(),
            record: serde_json::Value::Null,
        });
        third.push(Write {
            did: account(i),
            collection: "app.bsky.feed.like",
            rkey: own[i][1].clone(),
            action: Action::Update,
            version: next(),
            record: serde_json::json!({"$type": "app.bsky.feed.like",
                "subject": strong(&post_uri((i + 7) % ACCOUNTS, 0, &rkeys)),
                "createdAt": "2024-05-01T12:00:00Z"}),
        });
    }
    third.push(Write {
        did: account(4),
        collection: "app.bsky.feed.post",
        rkey: rkeys[4][0].clone(),
        action: Action::Delete,
        version: next(),
        record: serde_json::Value::Null,
    });
    (vec![first, second, third], uris)
}

/// The scenario's writes, in batches, then the two hidden accounts, through
/// the transform and the writer, with a refresh after each batch.
async fn play(ch: &ClickHouse, batches: &[Vec<Write>]) {
    for batch in batches {
        let mut rows = Rows::default();
        for w in batch {
            let live = w.action != Action::Delete;
            let record = live.then(|| from_lex_json(&w.record).expect("record"));
            apply(
                &Op {
                    did: &w.did,
                    collection: w.collection,
                    rkey: &w.rkey,
                    action: w.action,
                    cid: live.then(|| Cid::from_sha256(0x71, [w.version as u8; 32])),
                    record: record.as_ref(),
                    version: w.version,
                    indexed_at: 1_714_700_000,
                },
                &mut rows,
            );
        }
        assert!(rows.dead_letters.is_empty(), "{:?}", rows.dead_letters);
        writer::write_batch(ch, &WriterConfig::default(), &mut rows, 0u64)
            .await
            .expect("write");
        skyhouse_store::aggregates::refresh(ch)
            .await
            .expect("refresh");
    }
    let mut rows = Rows::default();
    for (i, status) in [(6, "deactivated"), (9, "deleted")] {
        rows.push_account(skyhouse_transform::AccountRow {
            did: account(i),
            active: 0,
            status: status.to_owned(),
            version: 10_000,
            indexed_at: 1_714_700_000,
        });
    }
    writer::write_batch(ch, &WriterConfig::default(), &mut rows, 0u64)
        .await
        .expect("accounts");
    skyhouse_store::aggregates::refresh(ch)
        .await
        .expect("refresh");
    skyhouse_store::aggregates::rebuild_daily_stats(ch, 50)
        .await
        .expect("daily stats");
}

/// Everything the services read after the maintenance jobs, as text.
async fn answers(ch: &ClickHouse, uris: &[String]) -> BTreeMap<String, String> {
    use skyhouse_store::{counts, feeds, queries, stats};
    let mut out = BTreeMap::new();
    let uris: Vec<&str> = uris.iter().map(String::as_str).collect();
    let dids: Vec<String> = (0..ACCOUNTS).map(account).collect();
    let dids: Vec<&str> = dids.iter().map(String::as_str).collect();
    let mut put = |k: &str, v: String| {
        out.insert(k.to_owned(), v);
    };
    put(
        "post_counts",
        format!(
            "{:?}",
            counts::post_counts(ch, &uris).await.expect("post counts")
        ),
    );
    put(
        "actor_counts",
        format!(
            "{:?}",
            counts::actor_counts(ch, &dids).await.expect("actor counts")
        ),
    );
    // Its order moves with the clock (age-weighted): compared as a set.
    let mut hot = feeds::hot_posts(ch, 86_400, 100).await.expect("hot");
    hot.sort();
    put("hot", format!("{hot:?}"));
    put(
        "top",
        format!(
            "{:?}",
            feeds::top_liked_posts(ch, 86_400, 100).await.expect("top")
        ),
    );
    put(
        "hidden",
        format!(
            "{:?}",
            feeds::hidden_among(ch, &dids).await.expect("hidden")
        ),
    );
    put(
        "collections",
        format!(
            "{:?}",
            queries::collection_counts(ch).await.expect("collections")
        ),
    );
    put(
        "daily",
        format!(
            "{:?}",
            queries::daily_stats(ch, "1970-01-01").await.expect("daily")
        ),
    );
    for a in stats::Analytics::ALL {
        put(
            a.name(),
            format!(
                "{:?}",
                stats::analytics(ch, a, 86_400, 100)
                    .await
                    .expect("analytics")
            ),
        );
    }
    out
}

#[tokio::test]
async fn the_maintenance_jobs_give_the_single_servers_answers() {
    // The same writes on one server and on the cluster; after the refreshes
    // (hidden accounts, interaction counts, recent interactions, daily
    // stats), every count, ranking and analytics is the same.
    let (batches, uris) = scenario();
    let single_db = skyhouse_testkit::ClickHouse::shared().database("same_single");
    let single = ClickHouse::new(ClickHouseConfig::local(
        &skyhouse_testkit::ClickHouse::shared().http_url(),
        single_db.name(),
    ))
    .expect("config");
    migrate::up_embedded(&single).await.expect("up");
    play(&single, &batches).await;
    let want = answers(&single, &uris).await;

    let cluster = Cluster::shared();
    let db = cluster.database("cluster_same");
    // Every write on both replicas before it returns (insert quorum 2): a
    // refresh reads each shard from either replica, and one that has not
    // fetched the newest part yet would answer without it (the next
    // refreshes read it, within their margin; this test compares right
    // after).
    let ch = ClickHouse::new(ClickHouseConfig {
        cluster: Some(CLUSTER_NAME.to_owned()),
        insert_quorum: Some(2),
        ..ClickHouseConfig::local(&cluster.http_url(), db.name())
    })
    .expect("config");
    migrate_up(cluster, ch.clone());
    play(&ch, &batches).await;
    let got = answers(&ch, &uris).await;
    // Not an empty match: counts, rankings and hidden accounts are there,
    // and the rows are on both shards.
    assert!(
        want["post_counts"].contains("likes: 2"),
        "{}",
        want["post_counts"]
    );
    assert!(
        want["hot"].len() > 100 && want["top"].len() > 100,
        "{want:?}"
    );
    assert!(want["hidden"].contains(&account(6)) && want["hidden"].contains(&account(9)));
    // The gated reply: counted in every reply, not in the replies shown.
    assert!(
        want["post_counts"].contains("replies: 0, replies_visible: 0, replies_all: 1"),
        "{}",
        want["post_counts"]
    );
    for shard in 1..=2 {
        let n: u64 = cluster
            .node(shard, 1)
            .query(&format!("SELECT count() FROM {}.posts_local", db.name()))
            .trim()
            .parse()
            .expect("count");
        assert!(n > 0, "no posts on shard {shard}");
    }
    for (k, v) in &want {
        assert_eq!(got.get(k), Some(v), "{k} differs on the cluster");
    }
}

#[tokio::test]
async fn retention_drops_old_partitions_of_the_local_tables_on_every_server() {
    let cluster = Cluster::shared();
    let db = migrated();
    let name = db.name();
    // An old partition on shard 1 only, another on shard 2 only (each on
    // both replicas of its shard): the server that gets the statements
    // holds only one of them.
    for (shard, table, row) in [
        (
            1,
            "day_changes_local",
            "('2020-01-01 10:00:00', 'app.bsky.feed.like', '2020-01-01')",
        ),
        (
            2,
            "account_changes_local",
            "('2020-01-02 10:00:00', 'did:plc:retentionaaaaaaaaaaaaaa')",
        ),
    ] {
        cluster
            .node(shard, 1)
            .query(&format!("INSERT INTO {name}.{table} VALUES {row}"));
    }
    let old_parts = |node: &ClusterNode| -> u64 {
        node.query(&format!(
            "SELECT count() FROM system.parts WHERE database = '{name}' AND active \
             AND partition IN ('20200101', '20200102')"
        ))
        .trim()
        .parse()
        .expect("count")
    };
    for t in ["day_changes_local", "account_changes_local"] {
        sync_everywhere(cluster, name, t);
    }
    let before: u64 = cluster.nodes().iter().map(old_parts).sum();
    // Two partitions, each on both replicas of its shard.
    assert_eq!(before, 4);
    let ch = store(&cluster.http_url(), name);
    let dropped = skyhouse_store::aggregates::expire(&ch)
        .await
        .expect("expire");
    assert!(dropped >= 2, "dropped {dropped}");
    for t in ["day_changes_local", "account_changes_local"] {
        sync_everywhere(cluster, name, t);
    }
    for node in cluster.nodes() {
        assert_eq!(old_parts(node), 0, "{} keeps old partitions", node.name());
    }
    // The admin's merge of a table with no rows on a shard (these logs now
    // have none anywhere) is done, not an error.
    assert_eq!(
        db.query("SELECT count() FROM day_changes WHERE arrived < '2021-01-01 00:00:00'"),
        "0\n"
    );
    skyhouse_store::admin::optimize_final(&ch, "day_changes")
        .await
        .expect("optimize on a cluster with an empty shard");
}

#[tokio::test]
async fn the_exploration_views_read_the_whole_cluster_from_every_server() {
    let cluster = Cluster::shared();
    let db = migrated();
    let name = db.name();
    // 40 accounts (over both shards) follow did:plc:viewstar; one is hidden.
    let values: Vec<String> = (0..40)
        .map(|i| format!("('did:plc:view{i:02}', 'r{i}', 'c', 1, 0, 'did:plc:viewstar')"))
        .collect();
    let ch = store(&cluster.node(1, 1).http_url(), name);
    for (table, columns) in [
        ("follows", "did, rkey, cid, version, deleted, subject_did"),
        (
            "interactions",
            "did, rkey, kind, version, deleted, subject_uri",
        ),
    ] {
        let rows = if table == "follows" {
            values.join(", ")
        } else {
            values.join(", ").replace("'c', 1", "'follow', 1")
        };
        ch.client()
            .clone()
            .with_setting("insert_distributed_sync", "1")
            .query(&format!(
                "INSERT INTO {name}.{table} ({columns}) VALUES {rows}"
            ))
            .execute()
            .await
            .expect("insert through the Distributed table");
    }
    ch.client()
        .clone()
        .with_setting("insert_distributed_sync", "1")
        .query(&format!(
            "INSERT INTO {name}.hidden_accounts (did, hidden, version) VALUES ('did:plc:view07', 1, 1)"
        ))
        .execute()
        .await
        .expect("hide an account");
    for table in [
        "follows_local",
        "interactions_local",
        "hidden_accounts_local",
    ] {
        sync_everywhere(cluster, name, table);
    }
    for node in cluster.nodes() {
        let ask = |sql: &str| node.query(&sql.replace("{db}", name));
        assert_eq!(
            ask("SELECT count() FROM {db}.follows_live WHERE startsWith(did, 'did:plc:view')"),
            "39\n",
            "{}: every shard's rows, the hidden account's left out",
            node.http_url()
        );
        assert_eq!(
            ask("SELECT followers FROM {db}.follower_counts WHERE did = 'did:plc:viewstar'"),
            "39\n",
            "{}",
            node.http_url()
        );
        assert_eq!(
            ask("SELECT sum(follows) FROM {db}.following_counts WHERE startsWith(did, 'did:plc:view')"),
            "39\n",
            "{}",
            node.http_url()
        );
        for view in [
            "recent_posts_72h",
            "recent_posts_with_score",
            "records_live",
        ] {
            ask(&format!("SELECT count() FROM {{db}}.{view}"));
        }
    }
}
