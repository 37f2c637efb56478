//! The identities walk's window reads on ClickHouse 18.16: newest version per
//! DID, in key order, bounded on both sides, a keyset step at a time.

use skyhouse_store::identities::{identity_of, window, windows, StoredIdentity};
use skyhouse_store::migrate::{self, Migrator};

use crate::fresh;

#[tokio::test]
async fn windows_read_the_newest_rows_in_key_order_between_their_bounds() {
    let (db, ch) = fresh("identities_window");
    Migrator::new(&ch, migrate::embedded().expect("migrations"))
        .up()
        .await
        .expect("up");
    // Two parts: a DID's newer row must win (FINAL), in any insert order.
    db.query(
        "INSERT INTO identities VALUES ('did:plc:aaaa', 'old.a', 5, now()), \
         ('did:plc:aaab', 'b', 1, now()), ('did:plc:abzz', 'c', 1, now()), \
         ('did:plc:b222', 'd', 1, now()), ('did:web:example.com', 'w', 1, now())",
    );
    db.query("INSERT INTO identities VALUES ('did:plc:aaaa', 'new.a', 7, now())");
    let row = |did: &str, handle: &str, version| StoredIdentity {
        did: did.into(),
        handle: handle.into(),
        version,
    };

    // The window of `did:plc:aa…`: a keyset step of 1, then the rest.
    let first = window(&ch, "did:plc:aa", "did:plc:ab", 1)
        .await
        .expect("read");
    assert_eq!(first, vec![row("did:plc:aaaa", "new.a", 7)]);
    let rest = window(&ch, "did:plc:aaaa", "did:plc:ab", 10)
        .await
        .expect("read");
    assert_eq!(rest, vec![row("did:plc:aaab", "b", 1)]);
    // Bounds are exclusive and nothing past `before` is read.
    let next = window(&ch, "did:plc:ab", "did:plc:ac", 10)
        .await
        .expect("read");
    assert_eq!(next, vec![row("did:plc:abzz", "c", 1)]);

    // Walking every window finds every DID once, in order.
    let mut seen = Vec::new();
    for (after, before) in windows() {
        let mut from = after.clone();
        loop {
            let rows = window(&ch, &from, &before, 2).await.expect("read");
            seen.extend(rows.iter().map(|r| r.did.clone()));
            match rows.last() {
                Some(last) if rows.len() == 2 => from = last.did.clone(),
                _ => break,
            }
        }
    }
    assert_eq!(
        seen,
        [
            "did:plc:aaaa",
            "did:plc:aaab",
            "did:plc:abzz",
            "did:plc:b222",
            "did:web:example.com"
        ]
    );
    assert_eq!(
        identity_of(&ch, "did:plc:aaaa").await.expect("read"),
        Some(row("did:plc:aaaa", "new.a", 7))
    );
    assert_eq!(identity_of(&ch, "did:plc:none").await.expect("read"), None);
}
