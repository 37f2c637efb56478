//! The test kit's ClickHouse cluster: topology, per-test databases,
//! replication, killing and restarting its servers, and its end with the
//! test process.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use skyhouse_testkit::{Cluster, ClusterNode, CLUSTER_NAME};

/// Generous: the machine may be busy.
const DEADLINE: Duration = Duration::from_secs(60);

/// Polls `check` until it returns `Some`, or panics with `what` after [`DEADLINE`].
fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn every_server_knows_two_shards_of_two_replicas() {
    let cluster = Cluster::shared();
    assert!(
        cluster.version().starts_with("18.16"),
        "{}",
        cluster.version()
    );
    let tcp: Vec<u16> = cluster.nodes().iter().map(ClusterNode::tcp_port).collect();
    let want = format!(
        "1\t1\t{}\n1\t2\t{}\n2\t1\t{}\n2\t2\t{}\n",
        tcp[0], tcp[1], tcp[2], tcp[3]
    );
    for node in cluster.nodes() {
        let topology = node.query(&format!(
            "SELECT shard_num, replica_num, port FROM system.clusters \
             WHERE cluster = '{CLUSTER_NAME}' ORDER BY shard_num, replica_num"
        ));
        assert_eq!(topology, want, "{}", node.name());
        let macros = node.query("SELECT macro, substitution FROM system.macros ORDER BY macro");
        assert_eq!(
            macros,
            format!(
                "cluster\t{CLUSTER_NAME}\nreplica\t{}\nshard\t{}\n",
                node.name(),
                node.shard()
            )
        );
        assert_eq!(node.name(), format!("s{}r{}", node.shard(), node.replica()));
        assert!(node.http_url().ends_with(&node.http_port().to_string()));
    }
    assert_eq!(cluster.node(2, 1).name(), "s2r1");
    assert_eq!(cluster.http_url(), cluster.nodes()[0].http_url());
    // ZooKeeper answers with its data on disk, under the cluster's directory.
    assert!(cluster.zookeeper().is_running());
    assert!(cluster.zookeeper().dir().starts_with(cluster.dir()));
    assert!(cluster.zookeeper().dir().join("data/version-2").is_dir());
}

fn database_on(node: &ClusterNode, name: &str) -> bool {
    node.query(&format!(
        "SELECT count() FROM system.databases WHERE name = '{name}'"
    )) == "1\n"
}

#[test]
fn databases_are_made_and_dropped_on_every_server() {
    let cluster = Cluster::shared();
    let db = cluster.database("cluster_db");
    let name = db.name().to_owned();
    for node in cluster.nodes() {
        assert!(database_on(node, &name), "{name} on {}", node.name());
    }
    assert_eq!(db.query("SELECT currentDatabase()"), format!("{name}\n"));
    assert_ne!(cluster.database("cluster_db").name(), name);
    drop(db);
    for node in cluster.nodes() {
        assert!(!database_on(node, &name), "{name} left on {}", node.name());
    }
}

/// A replicated table `t` (and a Distributed `t_all`) in a new database.
fn replicated_table(cluster: &Cluster, hint: &str) -> skyhouse_testkit::ClusterDatabase {
    let db = cluster.database(hint);
    let name = db.name();
    cluster.query(&format!(
        "CREATE TABLE {name}.t ON CLUSTER {CLUSTER_NAME} (k UInt32) ENGINE = \
         ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{name}/t', '{{replica}}') ORDER BY k"
    ));
    db
}

fn count(node: &ClusterNode, db: &str) -> u64 {
    node.query(&format!("SELECT count() FROM {db}.t"))
        .trim()
        .parse()
        .expect("a count")
}

#[test]
fn rows_replicate_within_their_shard_only() {
    let cluster = Cluster::shared();
    let db = replicated_table(cluster, "cluster_replication");
    let name = db.name();
    cluster
        .node(2, 2)
        .query(&format!("INSERT INTO {name}.t VALUES (1), (2), (3)"));
    cluster
        .node(2, 1)
        .query(&format!("SYSTEM SYNC REPLICA {name}.t"));
    assert_eq!(count(cluster.node(2, 1), name), 3);
    assert_eq!(count(cluster.node(1, 1), name), 0);
    assert_eq!(count(cluster.node(1, 2), name), 0);
}

#[test]
fn a_killed_replica_starts_again_with_its_data_and_catches_up() {
    let cluster = Cluster::start();
    let db = replicated_table(&cluster, "cluster_kill");
    let name = db.name();
    let (first, second) = (cluster.node(1, 1), cluster.node(1, 2));
    first.query(&format!("INSERT INTO {name}.t VALUES (1)"));
    second.query(&format!("SYSTEM SYNC REPLICA {name}.t"));
    let port = second.http_port();
    second.kill();
    assert!(!second.is_running());
    assert!(second.try_query("SELECT 1").is_err());
    // A query that panics on it says the server is down and shows its logs.
    let panic = std::panic::catch_unwind(|| second.query("SELECT 1")).expect_err("a down server");
    let message = panic
        .downcast_ref::<String>()
        .expect("a formatted panic message");
    assert!(
        message.contains("cluster server s1r2 is down")
            && message.contains("clickhouse-server.err.log"),
        "{message}"
    );
    // Written while the replica is down.
    first.query(&format!("INSERT INTO {name}.t VALUES (2), (3)"));
    second.start();
    assert!(second.is_running());
    assert_eq!(second.http_port(), port);
    // Its own part survived the kill; the others arrive from its replica.
    eventually("the restarted replica has every row", || {
        let _ = second.try_query(&format!("SYSTEM SYNC REPLICA {name}.t"));
        (count(second, name) == 3).then_some(())
    });
    // A clean stop and start keeps the data too.
    second.stop();
    assert!(!second.is_running());
    second.start();
    assert_eq!(count(second, name), 3);
}

#[test]
fn without_zookeeper_replicated_inserts_fail_and_resume_once_it_is_back() {
    let cluster = Cluster::start();
    let db = replicated_table(&cluster, "cluster_zookeeper");
    let name = db.name();
    let node = cluster.node(1, 1);
    node.query(&format!("INSERT INTO {name}.t VALUES (1)"));
    let zookeeper = cluster.zookeeper();
    let port = zookeeper.port();
    zookeeper.stop();
    assert!(!zookeeper.is_running());
    let refused = node
        .try_query(&format!("INSERT INTO {name}.t VALUES (2)"))
        .expect_err("an insert into a replicated table without ZooKeeper");
    assert!(
        refused.contains("ZooKeeper")
            || refused.contains("Coordination")
            || refused.contains("readonly"),
        "{refused}"
    );
    zookeeper.start();
    assert_eq!(zookeeper.port(), port);
    eventually("inserts work again", || {
        node.try_query(&format!("INSERT INTO {name}.t VALUES (3)"))
            .ok()
    });
    // ZooKeeper kept its data: the table's replicas still know each other.
    eventually("the other replica gets the new row", || {
        let other = cluster.node(1, 2);
        let _ = other.try_query(&format!("SYSTEM SYNC REPLICA {name}.t"));
        (count(other, name) == 2).then_some(())
    });
}

/// Set in the child process of [`the_cluster_ends_with_its_test_process`].
const CHILD: &str = "SKYHOUSE_TESTKIT_CLUSTER_CHILD";

fn pids(dir: &Path) -> Vec<String> {
    ["zookeeper", "s1r1", "s1r2", "s2r1", "s2r2"]
        .iter()
        .map(|server| {
            std::fs::read_to_string(dir.join(server).join("server.pid"))
                .unwrap_or_else(|e| panic!("{server}'s pid: {e}"))
                .trim()
                .to_owned()
        })
        .collect()
}

#[test]
fn the_cluster_ends_with_its_test_process() {
    if std::env::var_os(CHILD).is_some() {
        // The child: start a cluster, say where it is, wait to be killed.
        let cluster = Cluster::start();
        println!("cluster-dir={}", cluster.dir().display());
        thread::sleep(Duration::from_secs(600));
        return;
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "the_cluster_ends_with_its_test_process",
            "--nocapture",
        ])
        .env(CHILD, "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the child test process");
    let stdout = child.stdout.take().expect("piped");
    let dir = BufReader::new(stdout)
        .lines()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("cluster-dir=").map(PathBuf::from))
        .expect("the child's cluster directory");
    let pids = pids(&dir);
    for pid in &pids {
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "{pid}");
    }
    child.kill().expect("SIGKILL the child");
    let _ = child.wait();
    eventually("every server of the cluster is gone", || {
        pids.iter()
            .all(|pid| !Path::new(&format!("/proc/{pid}")).exists())
            .then_some(())
    });
    eventually("the cluster's directory is removed", || {
        (!dir.exists()).then_some(())
    });
}
