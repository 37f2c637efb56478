//! Config validation and subscribe URLs (no I/O).

use std::time::Duration;

use skyhouse_sources::{SourceConfig, SourceKind, JETSTREAM_HOSTS};

fn jetstream(endpoints: &[&str]) -> SourceConfig {
    let mut cfg = SourceConfig::jetstream();
    cfg.endpoints = endpoints.iter().map(|e| e.to_string()).collect();
    cfg
}

/// A change to a valid config.
type Edit = Box<dyn Fn(&mut SourceConfig)>;

/// Each bad value is refused with a one-line error that starts with the field's name.
#[test]
fn validation_errors_name_the_field() {
    let cases: Vec<(&str, Edit)> = vec![
        (
            "endpoints",
            Box::new(|c| c.endpoints = vec!["http://example.com".into()]),
        ),
        (
            "endpoints",
            Box::new(|c| c.endpoints = vec!["us-central-9".into()]),
        ),
        (
            "endpoints",
            Box::new(|c| c.endpoints = vec!["wss://".into()]),
        ),
        (
            "endpoints",
            Box::new(|c| c.endpoints = vec!["wss://h.example/subscribe?cursor=5".into()]),
        ),
        (
            "endpoints",
            Box::new(|c| c.endpoints = vec!["file:///tmp/a.jsonl".into(), "us-east-1".into()]),
        ),
        (
            "wanted_collections",
            Box::new(|c| c.wanted_collections = vec!["app.bsky".into()]),
        ),
        (
            "wanted_collections",
            Box::new(|c| c.wanted_collections = vec!["*".into()]),
        ),
        (
            "wanted_collections",
            Box::new(|c| {
                c.wanted_collections = (0..101).map(|i| format!("app.bsky.c{i}")).collect()
            }),
        ),
        (
            "wanted_dids",
            Box::new(|c| c.wanted_dids = vec!["alice.bsky.social".into()]),
        ),
        (
            "wanted_dids",
            Box::new(|c| c.wanted_dids = vec!["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into(); 10_001]),
        ),
        (
            "backoff_base",
            Box::new(|c| c.backoff_base = Duration::ZERO),
        ),
        (
            "backoff_max",
            Box::new(|c| c.backoff_max = Duration::from_millis(1)),
        ),
        (
            "liveness_timeout",
            Box::new(|c| c.liveness_timeout = Duration::ZERO),
        ),
        (
            "connect_timeout",
            Box::new(|c| c.connect_timeout = Duration::ZERO),
        ),
        ("max_message_size", Box::new(|c| c.max_message_size = 0)),
        (
            "zstd_dictionary",
            Box::new(|c| {
                c.compress = true;
                c.zstd_dictionary = skyhouse_sources::ZstdDictionary::new(Vec::new());
            }),
        ),
    ];
    for (field, set) in cases {
        let mut cfg = SourceConfig::jetstream();
        set(&mut cfg);
        let err = cfg.validate().expect_err(field);
        assert_eq!(err.field, field, "{err}");
        let text = err.to_string();
        assert!(text.starts_with(&format!("{field}: ")), "{text}");
        assert!(!text.contains('\n'), "{text}");
    }
    // Jetstream-only fields on a firehose config.
    for (field, set) in [
        (
            "wanted_collections",
            (|c: &mut SourceConfig| c.wanted_collections = vec!["app.bsky.*".into()])
                as fn(&mut SourceConfig),
        ),
        ("wanted_dids", |c| {
            c.wanted_dids = vec!["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa".into()]
        }),
        ("compress", |c| c.compress = true),
    ] {
        let mut cfg = SourceConfig::firehose(["wss://relay.example"]);
        set(&mut cfg);
        assert_eq!(cfg.validate().expect_err(field).field, field);
    }
}

#[test]
fn defaults_are_valid_and_use_the_public_hosts() {
    let cfg = SourceConfig::jetstream();
    cfg.validate().expect("defaults valid");
    let urls = cfg.subscribe_urls(None).expect("urls");
    let expected: Vec<String> = JETSTREAM_HOSTS
        .iter()
        .map(|h| format!("{h}?maxMessageSizeBytes={}", cfg.max_message_size))
        .collect();
    assert_eq!(urls, expected);
    assert_eq!(
        SourceConfig::firehose(Vec::<String>::new())
            .subscribe_urls(None)
            .expect("urls"),
        ["wss://bsky.network/xrpc/com.atproto.sync.subscribeRepos"]
    );
}

#[test]
fn jetstream_shorthands_expand_to_the_public_instances() {
    let cfg = jetstream(&["us-east-1", "us-west-2"]);
    let urls = cfg.subscribe_urls(None).expect("urls");
    assert!(
        urls[0].starts_with("wss://jetstream1.us-east.bsky.network/subscribe?"),
        "{}",
        urls[0]
    );
    assert!(
        urls[1].starts_with("wss://jetstream2.us-west.bsky.network/subscribe?"),
        "{}",
        urls[1]
    );
}

#[test]
fn jetstream_url_repeats_wanted_collections_and_carries_dids_compress_and_cursor() {
    let mut cfg = jetstream(&["ws://127.0.0.1:6008"]);
    cfg.wanted_collections = vec!["app.bsky.feed.post".into(), "app.bsky.graph.*".into()];
    cfg.wanted_dids = vec![
        "did:plc:q235v55g5unth4zjjdpacfdr".into(),
        "did:web:example.com".into(),
    ];
    cfg.compress = true;
    cfg.max_message_size = 1000;
    assert_eq!(
        cfg.subscribe_urls(Some(1783175888085434)).expect("urls"),
        [
            "ws://127.0.0.1:6008/subscribe?wantedCollections=app.bsky.feed.post\
          &wantedCollections=app.bsky.graph.*\
          &wantedDids=did%3Aplc%3Aq235v55g5unth4zjjdpacfdr&wantedDids=did%3Aweb%3Aexample.com\
          &compress=true&maxMessageSizeBytes=1000&cursor=1783175888085434"
        ]
    );
}

#[test]
fn firehose_url_gets_the_xrpc_path_only_when_it_has_none() {
    let cfg = SourceConfig::firehose(["wss://relay.example", "ws://127.0.0.1:2470/custom/path"]);
    assert_eq!(
        cfg.subscribe_urls(Some(42)).expect("urls"),
        [
            "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos?cursor=42",
            "ws://127.0.0.1:2470/custom/path?cursor=42",
        ]
    );
    assert_eq!(
        cfg.subscribe_urls(None).expect("urls")[0],
        "wss://relay.example/xrpc/com.atproto.sync.subscribeRepos"
    );
}

#[test]
fn kind_parses_from_its_flag_value() {
    assert_eq!(
        "jetstream".parse::<SourceKind>().expect("kind"),
        SourceKind::Jetstream
    );
    assert_eq!(
        "firehose".parse::<SourceKind>().expect("kind"),
        SourceKind::Firehose
    );
    assert_eq!(
        "relay".parse::<SourceKind>().expect_err("bad").field,
        "kind"
    );
}
