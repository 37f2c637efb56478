//! Indexer rows → relay operations.

use skyhouse_transform::RecordRow;

use crate::pb::{Action, Operation, Source};
use crate::wire::{OpRef, Prepared};

/// The TID's timestamp (Unix microseconds) of a rev stored as an integer.
fn rev_time_us(version: u64) -> i64 {
    ((version >> 10) & ((1 << 53) - 1)) as i64
}

fn rev_string(version: u64) -> String {
    skyhouse_atproto::syntax::Tid::from_u64(version)
        .map(|t| t.as_str().to_owned())
        .unwrap_or_default()
}

fn action(row: &RecordRow) -> Action {
    if row.deleted != 0 {
        Action::Delete
    } else {
        Action::Write
    }
}

/// A `records` row as a relay operation, encoded.
pub fn prepare_record(row: &RecordRow, source: Source) -> Prepared {
    let rev = rev_string(row.version);
    Prepared::new(&OpRef {
        source,
        did: &row.did,
        collection: &row.collection,
        rkey: &row.rkey,
        action: action(row),
        cid: &row.cid,
        rev: &rev,
        record_json: &row.record,
        record_cbor: &[],
        time_us: rev_time_us(row.version),
        indexed_at: i64::from(row.indexed_at),
    })
}

/// A `records` row as a relay operation message (what the push sends).
pub(crate) fn operation_of(row: &RecordRow, source: Source) -> Operation {
    Operation {
        cursor: 0,
        source: source as i32,
        did: row.did.clone(),
        collection: row.collection.clone(),
        rkey: row.rkey.clone(),
        action: action(row) as i32,
        cid: row.cid.clone(),
        rev: rev_string(row.version),
        record_json: row.record.clone(),
        record_cbor: Vec::new(),
        time_us: rev_time_us(row.version),
        indexed_at: i64::from(row.indexed_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyhouse_atproto::syntax::Tid;

    #[test]
    fn a_row_keeps_its_rev_and_the_revs_time() {
        let tid = Tid::from_parts(1_700_000_000_123_456, 7).expect("tid");
        let row = RecordRow {
            did: "did:plc:x".into(),
            collection: "app.bsky.feed.like".into(),
            rkey: "r".into(),
            cid: "bafy".into(),
            version: tid.to_u64(),
            deleted: 0,
            record: "{}".into(),
            indexed_at: 5,
            ..Default::default()
        };
        let op = operation_of(&row, Source::Live);
        assert_eq!(op.rev, tid.as_str());
        assert_eq!(op.time_us, 1_700_000_000_123_456);
        assert_eq!(op.action(), Action::Write);
        let deleted = RecordRow { deleted: 1, ..row };
        assert_eq!(
            operation_of(&deleted, Source::Live).action(),
            Action::Delete
        );
    }
}
