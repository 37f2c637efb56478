//! `skyhouse migrate` with `CLICKHOUSE_CLUSTER` set, run as a user would,
//! against a real ClickHouse 18.16 cluster (ZooKeeper, 2 shards × 2
//! replicas) started by the test kit.

use std::process::{Command, Output};

use skyhouse_testkit::{Cluster, ClusterNode, CLUSTER_NAME};

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The table names of `db` on `node`.
fn tables(node: &ClusterNode, db: &str) -> Vec<String> {
    node.query(&format!(
        "SELECT name FROM system.tables WHERE database = '{db}' ORDER BY name"
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// `table.column` of every column of `db` on `node`, by name.
fn columns(node: &ClusterNode, db: &str) -> Vec<String> {
    node.query(&format!(
        "SELECT concat(table, '.', name) AS c FROM system.columns WHERE database = '{db}' ORDER BY c"
    ))
    .lines()
    .map(str::to_owned)
    .collect()
}

/// The migration status lines of `migrate`'s output (without its logs).
fn statuses(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn migrate_up_version_dump_schema_and_down_on_a_cluster() {
    let cluster = Cluster::shared();
    let db = cluster.database("cli_cluster");
    let name = db.name();
    // Through whichever server the address names, settings from the environment.
    let migrate = |node: &ClusterNode, args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_skyhouse"))
            .arg("migrate")
            .args(args)
            .env("CLICKHOUSE_ADDRESS", node.http_url())
            .env("CLICKHOUSE_DATABASE", name)
            .env("CLICKHOUSE_CLUSTER", CLUSTER_NAME)
            .output()
            .expect("run skyhouse");
        assert!(out.status.success(), "migrate {args:?}: {}", text(&out));
        out
    };
    let sync_bookkeeping = |node: &ClusterNode| {
        node.query(&format!("SYSTEM SYNC REPLICA {name}.schema_migrations"));
    };
    let up = migrate(cluster.node(1, 1), &["up"]);
    assert!(
        statuses(&up).contains("0001_core\tapplied"),
        "{}",
        text(&up)
    );
    // The newest migration 18.16 can apply: a newer file may be gated on a newer server and
    // recorded as skipped.
    let newest = statuses(&up)
        .lines()
        .filter_map(|l| l.strip_suffix("\tapplied"))
        .max()
        .map(str::to_owned)
        .expect("an applied migration");
    assert!(
        statuses(&up).contains(&format!("version: {}", &newest[..4])),
        "{}",
        text(&up)
    );
    let with_all = tables(cluster.node(1, 1), name);
    assert!(
        with_all.contains(&"records".to_owned()) && with_all.contains(&"records_local".to_owned()),
        "{with_all:?}"
    );
    for node in cluster.nodes() {
        assert_eq!(tables(node, name), with_all, "{}", node.name());
    }

    // Another server knows what was applied (the bookkeeping is replicated).
    sync_bookkeeping(cluster.node(2, 1));
    let version = migrate(cluster.node(2, 1), &["version"]);
    assert_eq!(statuses(&version), statuses(&up));

    // The schema, from any server: replicated local tables, Distributed
    // tables sharded by a hash of the DID.
    let schema = statuses(&migrate(cluster.node(1, 2), &["dump-schema"]));
    assert!(
        schema.contains(&format!(
            "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{name}/records_local', '{{replica}}', version)"
        )),
        "{schema}"
    );
    assert!(
        schema.contains(&format!(
            "ENGINE = Distributed({CLUSTER_NAME}, {name}, records_local, cityHash64(did))"
        )),
        "{schema}"
    );

    // Down the newest applied migration (and the skipped ones after it): what
    // it made (tables or columns) is gone from every server alike.
    let before_one = columns(cluster.node(1, 1), name);
    let from_newest = statuses(&up)
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(name, _)| *name >= newest.as_str())
        .count()
        .to_string();
    let down = migrate(cluster.node(1, 1), &["down", &from_newest]);
    assert!(
        statuses(&down).contains(&format!("{newest}\tpending")),
        "{}",
        text(&down)
    );
    let after_one = columns(cluster.node(1, 1), name);
    assert!(
        before_one.iter().any(|c| !after_one.contains(c)),
        "down 1 removed nothing: {after_one:?}"
    );
    for node in cluster.nodes() {
        assert_eq!(columns(node, name), after_one, "{}", node.name());
    }

    // Everything down, through another server.
    sync_bookkeeping(cluster.node(2, 2));
    let all_down = migrate(cluster.node(2, 2), &["down", "99"]);
    assert!(
        statuses(&all_down).contains("version: none"),
        "{}",
        text(&all_down)
    );
    for node in cluster.nodes() {
        assert_eq!(tables(node, name), ["schema_migrations"], "{}", node.name());
    }

    // And up again: the same tables on every server.
    sync_bookkeeping(cluster.node(1, 1));
    let again = migrate(cluster.node(1, 1), &["up"]);
    assert_eq!(statuses(&again), statuses(&up));
    for node in cluster.nodes() {
        assert_eq!(tables(node, name), with_all, "{}", node.name());
    }
}
