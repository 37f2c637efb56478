//! Operations encoded once, sent to every client as they are.
//!
//! An operation is encoded to protobuf when it is published ([`Prepared`]),
//! without its cursor; a client's batch ([`EncodedBatch`]) writes each
//! operation's cursor field in front of the shared bytes. Protobuf lets fields
//! come in any order, so clients decode a plain `OperationBatch`.

use bytes::{Buf, BufMut, Bytes};
use prost::encoding::{self, DecodeContext, WireType};

use crate::pb::{Action, Operation, Source};

/// The fields of one operation, borrowed.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpRef<'a> {
    /// Live stream or backfill.
    pub source: Source,
    /// The repository's DID.
    pub did: &'a str,
    /// The collection NSID.
    pub collection: &'a str,
    /// The record key.
    pub rkey: &'a str,
    /// Write or delete.
    pub action: Action,
    /// The record's CID ("" for deletes).
    pub cid: &'a str,
    /// The commit's revision (TID).
    pub rev: &'a str,
    /// The record in lex-JSON ("" for deletes).
    pub record_json: &'a str,
    /// The record as DAG-CBOR, if known.
    pub record_cbor: &'a [u8],
    /// Event time, Unix microseconds.
    pub time_us: i64,
    /// When it was decoded, Unix seconds.
    pub indexed_at: i64,
}

impl<'a> OpRef<'a> {
    /// The fields of a decoded (or received) operation.
    pub fn of(op: &'a Operation) -> OpRef<'a> {
        OpRef {
            source: op.source(),
            did: &op.did,
            collection: &op.collection,
            rkey: &op.rkey,
            action: op.action(),
            cid: &op.cid,
            rev: &op.rev,
            record_json: &op.record_json,
            record_cbor: &op.record_cbor,
            time_us: op.time_us,
            indexed_at: op.indexed_at,
        }
    }
}

/// An operation encoded without its cursor, plus what filters look at.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Fields 2.. of `Operation`, encoded, `record_cbor` (field 10) last.
    pub(crate) body: Bytes,
    /// Where the DID's bytes are in `body`.
    pub(crate) did: (u32, u32),
    /// Where the collection's bytes are in `body`.
    pub(crate) collection: (u32, u32),
    /// Where field 10 (`record_cbor`) starts: `body[..cbor_at]` is the
    /// operation without it (what clients that did not ask for it get).
    pub(crate) cbor_at: u32,
    pub(crate) action: Action,
    pub(crate) source: Source,
    /// The DID's hash ([`did_hash`]): what consumer groups partition on.
    pub(crate) did_hash: u32,
}

/// FNV-1a (32 bits) of a DID: a group's partition is `did_hash % partitions`.
/// Fixed: the groups' positions kept on disk are per partition.
pub(crate) fn did_hash(did: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in did {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

impl Prepared {
    /// Encode `op` (its cursor comes later, per client).
    pub fn new(op: &OpRef<'_>) -> Prepared {
        let len = str_len(3, op.did)
            + str_len(4, op.collection)
            + str_len(5, op.rkey)
            + str_len(7, op.cid)
            + str_len(8, op.rev)
            + str_len(9, op.record_json)
            + str_len(10, op.record_cbor)
            + 4 * 11;
        let mut buf = Vec::with_capacity(len);
        if op.source != Source::Unspecified {
            encoding::int32::encode(2, &(op.source as i32), &mut buf);
        }
        let did = put_str(3, op.did.as_bytes(), &mut buf);
        let collection = put_str(4, op.collection.as_bytes(), &mut buf);
        put_str(5, op.rkey.as_bytes(), &mut buf);
        if op.action != Action::Unspecified {
            encoding::int32::encode(6, &(op.action as i32), &mut buf);
        }
        put_str(7, op.cid.as_bytes(), &mut buf);
        put_str(8, op.rev.as_bytes(), &mut buf);
        put_str(9, op.record_json.as_bytes(), &mut buf);
        if op.time_us != 0 {
            encoding::int64::encode(11, &op.time_us, &mut buf);
        }
        if op.indexed_at != 0 {
            encoding::int64::encode(12, &op.indexed_at, &mut buf);
        }
        // Protobuf allows fields in any order: the CBOR goes last so that a
        // prefix of the bytes is the operation without it.
        let cbor_at = buf.len() as u32;
        put_str(10, op.record_cbor, &mut buf);
        Prepared {
            did_hash: did_hash(op.did.as_bytes()),
            body: Bytes::from(buf),
            did,
            collection,
            cbor_at,
            action: op.action,
            source: op.source,
        }
    }

    /// The bytes a client gets: with or without `record_cbor`.
    pub(crate) fn body_for(&self, want_cbor: bool) -> Bytes {
        if want_cbor || self.cbor_at as usize == self.body.len() {
            self.body.clone()
        } else {
            self.body.slice(..self.cbor_at as usize)
        }
    }

    /// The DID's bytes.
    pub(crate) fn did(&self) -> &[u8] {
        &self.body[self.did.0 as usize..self.did.1 as usize]
    }

    /// The collection's bytes.
    pub(crate) fn collection(&self) -> &[u8] {
        &self.body[self.collection.0 as usize..self.collection.1 as usize]
    }

    /// Encoded size without the cursor.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Whether every field is at its default (never for a real operation).
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }
}

fn str_len(tag: u32, s: impl AsRef<[u8]>) -> usize {
    let n = s.as_ref().len();
    if n == 0 {
        0
    } else {
        encoding::key_len(tag) + encoding::encoded_len_varint(n as u64) + n
    }
}

/// Write a length-delimited field (skipped when empty, as proto3 does);
/// returns where its bytes are.
fn put_str(tag: u32, s: &[u8], buf: &mut Vec<u8>) -> (u32, u32) {
    if s.is_empty() {
        return (0, 0);
    }
    encoding::encode_key(tag, WireType::LengthDelimited, buf);
    encoding::encode_varint(s.len() as u64, buf);
    let start = buf.len();
    buf.extend_from_slice(s);
    (start as u32, buf.len() as u32)
}

/// `OperationBatch` on the wire: on the way out, `(cursor, operation)` pairs
/// encoded as the shared bytes of each operation plus its cursor field; on
/// the way in (`IngestStream`), each operation's undecoded bytes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EncodedBatch {
    /// Operations to send: cursor and encoded body.
    pub(crate) out: Vec<(u64, Bytes)>,
    /// Operations received, still encoded (decoded one by one by the relay).
    pub(crate) received: Vec<Bytes>,
    /// Group streams: the batch's ack id and the stream's session (0: none).
    pub(crate) ack: (u64, u64),
}

impl EncodedBatch {
    fn op_len(cursor: u64, body: &Bytes) -> usize {
        let inner = cursor_len(cursor) + body.len();
        encoding::key_len(1) + encoding::encoded_len_varint(inner as u64) + inner
    }

    /// Operations to send.
    pub(crate) fn len(&self) -> usize {
        self.out.len()
    }
}

fn cursor_len(cursor: u64) -> usize {
    if cursor == 0 {
        0
    } else {
        encoding::key_len(1) + encoding::encoded_len_varint(cursor)
    }
}

impl prost::Message for EncodedBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for (cursor, body) in &self.out {
            encoding::encode_key(1, WireType::LengthDelimited, buf);
            encoding::encode_varint((cursor_len(*cursor) + body.len()) as u64, buf);
            if *cursor != 0 {
                encoding::uint64::encode(1, cursor, buf);
            }
            buf.put_slice(body);
        }
        for body in &self.received {
            encoding::bytes::encode(1, body, buf);
        }
        if self.ack.0 != 0 {
            encoding::uint64::encode(2, &self.ack.0, buf);
        }
        if self.ack.1 != 0 {
            encoding::uint64::encode(3, &self.ack.1, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        if tag == 1 {
            let mut op = Bytes::new();
            encoding::bytes::merge(wire_type, &mut op, buf, ctx)?;
            self.received.push(op);
            Ok(())
        } else {
            encoding::skip_field(wire_type, tag, buf, ctx)
        }
    }

    fn encoded_len(&self) -> usize {
        self.out
            .iter()
            .map(|(c, b)| Self::op_len(*c, b))
            .sum::<usize>()
            + encoding::bytes::encoded_len_repeated(1, &self.received)
            + if self.ack.0 != 0 {
                encoding::uint64::encoded_len(2, &self.ack.0)
            } else {
                0
            }
            + if self.ack.1 != 0 {
                encoding::uint64::encoded_len(3, &self.ack.1)
            } else {
                0
            }
    }

    fn clear(&mut self) {
        self.out.clear();
        self.received.clear();
        self.ack = (0, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::OperationBatch;
    use prost::Message;

    fn sample() -> Operation {
        Operation {
            cursor: 0,
            source: Source::Backfill as i32,
            did: "did:plc:abc".into(),
            collection: "app.bsky.feed.post".into(),
            rkey: "3kabc".into(),
            action: Action::Update as i32,
            cid: "bafyrei".into(),
            rev: "3kabcdefghijk".into(),
            record_json: r#"{"text":"hi"}"#.into(),
            record_cbor: vec![0xa1, 0x61, 0x61, 0x01],
            time_us: 1_700_000_000_000_000,
            indexed_at: 1_700_000_001,
        }
    }

    #[test]
    fn a_prepared_batch_decodes_as_operation_batch_with_each_cursor() {
        let op = sample();
        let p = Prepared::new(&OpRef::of(&op));
        assert_eq!(p.did(), b"did:plc:abc");
        assert_eq!(p.collection(), b"app.bsky.feed.post");
        let batch = EncodedBatch {
            out: vec![(7, p.body.clone()), (300, p.body.clone())],
            received: vec![],
            ack: (4, 99),
        };
        let bytes = batch.encode_to_vec();
        assert_eq!(bytes.len(), batch.encoded_len());
        let decoded = OperationBatch::decode(bytes.as_slice()).expect("decodes");
        assert_eq!((decoded.ack_id, decoded.session), (4, 99));
        let mut want = op.clone();
        want.cursor = 7;
        assert_eq!(decoded.operations[0], want);
        want.cursor = 300;
        assert_eq!(decoded.operations[1], want);
        // Without the CBOR: the same operation, `record_cbor` empty.
        let lean = EncodedBatch {
            out: vec![(9, p.body_for(false))],
            ..EncodedBatch::default()
        };
        let decoded = OperationBatch::decode(lean.encode_to_vec().as_slice()).expect("decodes");
        want.cursor = 9;
        want.record_cbor.clear();
        assert_eq!(decoded.operations[0], want);
        assert!(p.body_for(false).len() < p.body_for(true).len());
    }

    #[test]
    fn an_operation_batch_decodes_as_received_operations() {
        let sent = OperationBatch {
            operations: vec![sample(), Operation::default()],
            ..OperationBatch::default()
        };
        let got = EncodedBatch::decode(sent.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(got.received.len(), 2);
        assert_eq!(
            Operation::decode(got.received[0].clone()).expect("op"),
            sample()
        );
    }
}
