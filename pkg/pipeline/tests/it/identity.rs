//! `#identity` events without a handle: resolved from the real PLC and PDS
//! (handle verified through a nameserver on loopback and the PDS's
//! well-known path) off the decode path, and written to `identities`.

use std::sync::Arc;
use std::time::Duration;

use skyhouse_identity::{HandleConfig, Resolver, ResolverConfig};
use skyhouse_pipeline::IndexerConfig;
use skyhouse_sources::{CancellationToken, SourceConfig, SourceKind};
use skyhouse_testkit::dns::DnsServer;
use skyhouse_testkit::Network;

use crate::{fresh, state};

#[tokio::test]
async fn identity_events_without_a_handle_are_resolved_and_written() {
    let network = Network::shared();
    let pds = network.pds();
    let suffix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        % 1_000_000;
    let a = pds
        .create_account(&format!("ida{suffix:06}.test"))
        .await
        .unwrap();
    let b = pds
        .create_account(&format!("idb{suffix:06}.test"))
        .await
        .unwrap();
    // A Jetstream capture: a's event carries no handle, b's does.
    let capture = std::env::temp_dir().join(format!("skyhouse-identity-{suffix}.jsonl"));
    let lines = [
        format!(
            r#"{{"did":"{0}","time_us":1725911162329308,"kind":"identity","identity":{{"did":"{0}","seq":1,"time":"2024-09-09T19:46:02.102Z"}}}}"#,
            a.did
        ),
        format!(
            r#"{{"did":"{0}","time_us":1725911162329309,"kind":"identity","identity":{{"did":"{0}","handle":"announced.example.com","seq":2,"time":"2024-09-09T19:46:02.102Z"}}}}"#,
            b.did
        ),
    ];
    std::fs::write(&capture, lines.join("\n") + "\n").unwrap();

    let dns = DnsServer::start();
    let resolver = Resolver::new(ResolverConfig {
        plc_url: network.plc_url().to_string(),
        handles: HandleConfig::loopback(vec![dns.addr()], Some(network.pds_url().to_string())),
        ..ResolverConfig::default()
    })
    .unwrap();
    let run = |identity: Option<Arc<Resolver>>, hint: &'static str| {
        let capture = capture.clone();
        async move {
            let (db, ch) = fresh(hint).await;
            let st = state(hint).await;
            let mut source = SourceConfig::new(SourceKind::Jetstream);
            source.endpoints = vec![format!("file://{}", capture.display())];
            let mut cfg = IndexerConfig::new(source, "cursor:jetstream:identity".into());
            cfg.start_cursor = Some(0);
            cfg.writer.max_age = Duration::from_millis(100);
            cfg.identity = identity;
            skyhouse_pipeline::run(cfg, ch, st, None, CancellationToken::new())
                .await
                .unwrap();
            db.query("SELECT did, handle, version FROM identities FINAL ORDER BY did FORMAT TSV")
                .lines()
                .map(|l| {
                    let f: Vec<&str> = l.split('\t').collect();
                    (
                        f[0].to_string(),
                        (f[1].to_string(), f[2].parse::<u64>().unwrap()),
                    )
                })
                .collect::<std::collections::BTreeMap<_, _>>()
        }
    };

    let ids = run(Some(Arc::new(resolver)), "identity_resolved").await;
    let (handle, version) = &ids[&a.did];
    assert_eq!(handle, &a.handle, "resolved and verified");
    assert!(
        *version > 1_725_911_162_329_308,
        "the resolution time: {version}"
    );
    assert_eq!(
        ids[&b.did],
        ("announced.example.com".to_string(), 1_725_911_162_329_309),
        "as announced, versioned by the event time"
    );

    // Without a resolver such events are skipped (and counted).
    let ids = run(None, "identity_unresolved").await;
    assert!(!ids.contains_key(&a.did), "{ids:?}");
    assert!(ids.contains_key(&b.did));
    let _ = std::fs::remove_file(&capture);
}
