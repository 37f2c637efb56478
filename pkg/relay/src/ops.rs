//! Indexer rows → relay operations.

use skyhouse_transform::{RecordRow, TapOp};

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

/// The relay's action for a transform action.
pub(crate) fn action_of(a: skyhouse_transform::Action) -> Action {
    match a {
        skyhouse_transform::Action::Create => Action::Create,
        skyhouse_transform::Action::Update => Action::Update,
        skyhouse_transform::Action::Delete => Action::Delete,
    }
}

/// The action of a row: its tap op's, or (a caller that kept no tap ops)
/// what the row itself says, a delete or else a create.
fn action(row: &RecordRow, tap: Option<&TapOp>) -> Action {
    match tap {
        Some(t) => action_of(t.action),
        None if row.deleted != 0 => Action::Delete,
        None => Action::Create,
    }
}

/// Each record row of `rows` with its tap op (if kept).
pub(crate) fn with_tap(
    rows: &skyhouse_transform::Rows,
) -> impl Iterator<Item = (&RecordRow, Option<&TapOp>)> {
    let mut tap = rows.tap.iter().peekable();
    rows.records.iter().enumerate().map(move |(i, r)| {
        while tap.peek().is_some_and(|t| t.record < i) {
            tap.next();
        }
        (r, tap.next_if(|t| t.record == i))
    })
}

/// A `records` row (and its tap op) as a relay operation, encoded.
pub fn prepare_record(row: &RecordRow, tap: Option<&TapOp>, source: Source) -> Prepared {
    let rev = rev_string(row.version);
    let action = action(row, tap);
    Prepared::new(&OpRef {
        source,
        did: &row.did,
        collection: &row.collection,
        rkey: &row.rkey,
        action,
        cid: &row.cid,
        rev: &rev,
        record_json: &row.record,
        record_cbor: match (action, tap) {
            (Action::Delete, _) | (_, None) => &[],
            (_, Some(t)) => t.cbor.as_deref().unwrap_or_default(),
        },
        time_us: rev_time_us(row.version),
        indexed_at: i64::from(row.indexed_at),
    })
}

/// A `records` row (and its tap op) as a relay operation message (what the
/// push sends).
pub(crate) fn operation_of(row: &RecordRow, tap: Option<&TapOp>, source: Source) -> Operation {
    let action = action(row, tap);
    Operation {
        cursor: 0,
        source: source as i32,
        did: row.did.clone(),
        collection: row.collection.clone(),
        rkey: row.rkey.clone(),
        action: action as i32,
        cid: row.cid.clone(),
        rev: rev_string(row.version),
        record_json: row.record.clone(),
        record_cbor: match (action, tap) {
            (Action::Delete, _) | (_, None) => Vec::new(),
            (_, Some(t)) => t.cbor.clone().unwrap_or_default(),
        },
        time_us: rev_time_us(row.version),
        indexed_at: i64::from(row.indexed_at),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use skyhouse_atproto::syntax::Tid;

    #[test]
    fn a_row_keeps_its_rev_the_revs_time_and_its_sources_action() {
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
        let update = TapOp {
            record: 0,
            action: skyhouse_transform::Action::Update,
            cbor: Some(vec![0xa0]),
        };
        let op = operation_of(&row, Some(&update), Source::Live);
        assert_eq!(op.rev, tid.as_str());
        assert_eq!(op.time_us, 1_700_000_000_123_456);
        assert_eq!(op.action(), Action::Update);
        assert_eq!(op.record_cbor, vec![0xa0]);
        assert_eq!(
            operation_of(&row, None, Source::Live).action(),
            Action::Create
        );
        let deleted = RecordRow { deleted: 1, ..row };
        assert_eq!(
            operation_of(&deleted, None, Source::Live).action(),
            Action::Delete
        );
    }

    #[test]
    fn rows_pair_with_their_tap_ops_by_index() {
        let mut rows = skyhouse_transform::Rows::default();
        rows.records = vec![
            RecordRow::default(),
            RecordRow::default(),
            RecordRow::default(),
        ];
        rows.tap = vec![
            TapOp {
                record: 0,
                action: skyhouse_transform::Action::Update,
                cbor: None,
            },
            TapOp {
                record: 2,
                action: skyhouse_transform::Action::Delete,
                cbor: None,
            },
        ];
        let paired: Vec<Option<skyhouse_transform::Action>> =
            with_tap(&rows).map(|(_, t)| t.map(|t| t.action)).collect();
        assert_eq!(
            paired,
            [
                Some(skyhouse_transform::Action::Update),
                None,
                Some(skyhouse_transform::Action::Delete)
            ]
        );
    }
}
