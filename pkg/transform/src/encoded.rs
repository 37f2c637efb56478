//! Rows as ClickHouse receives them: each table's rows in `RowBinary`, one
//! buffer per table, with the row boundaries kept (the batch writer bisects
//! a refused insert by rows, and dead-letters a single refused row).
//!
//! A batch held this way is its insert bodies and little more (a `u32` per
//! row for its end), where the same rows as structs of `String`s take about
//! twice the memory in ~20 allocations per event.

use std::ops::Range;

use crate::rows::{AccountRow, DeadLetterRow, IdentityRow, RecordRow, Rows, Table, TableRow};

/// Every table a batch writes, in the order it lists them: `records`, the
/// typed tables ([`Table::ALL`]), `identities`, `accounts`, `dead_letters`.
pub fn table_names() -> impl Iterator<Item = &'static str> {
    std::iter::once(RecordRow::TABLE)
        .chain(Table::ALL.iter().map(|t| t.name()))
        .chain([IdentityRow::TABLE, AccountRow::TABLE, DeadLetterRow::TABLE])
}

/// `(column, ClickHouse type)` of a table [`table_names`] lists, in column
/// order; `None` for any other name.
pub fn table_columns(table: &str) -> Option<&'static [(&'static str, &'static str)]> {
    match table {
        RecordRow::TABLE => Some(RecordRow::COLUMNS),
        IdentityRow::TABLE => Some(IdentityRow::COLUMNS),
        AccountRow::TABLE => Some(AccountRow::COLUMNS),
        DeadLetterRow::TABLE => Some(DeadLetterRow::COLUMNS),
        other => Table::ALL
            .iter()
            .find(|t| t.name() == other)
            .map(|t| t.columns()),
    }
}

/// Tables [`table_names`] lists.
fn table_count() -> usize {
    Table::ALL.len() + 4
}

/// One table's rows in `RowBinary`, with the end of each row.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableRows {
    data: Vec<u8>,
    ends: Vec<u32>,
}

impl TableRows {
    /// Rows held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// All rows' bytes, in order: an insert's body.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The bytes of rows `rows` (a range of row indexes).
    pub fn byte_range(&self, rows: Range<usize>) -> Range<usize> {
        if rows.is_empty() {
            return 0..0;
        }
        let start = match rows.start {
            0 => 0,
            i => self.ends[i - 1] as usize,
        };
        start..self.ends[rows.end - 1] as usize
    }

    /// Append one row: `write` appends its columns to the buffer.
    pub fn push_with(&mut self, write: impl FnOnce(&mut Vec<u8>)) {
        write(&mut self.data);
        self.ends.push(self.end());
    }

    /// Append every row of `other`.
    pub fn extend(&mut self, other: &TableRows) {
        let base = self.end();
        self.data.extend_from_slice(&other.data);
        self.ends.extend(other.ends.iter().map(|e| e + base));
    }

    /// Drop every row, keeping the allocations.
    pub fn clear(&mut self) {
        self.data.clear();
        self.ends.clear();
    }

    fn end(&self) -> u32 {
        // A batch is closed long before 4 GiB (the writer's byte limit).
        u32::try_from(self.data.len()).unwrap_or(u32::MAX)
    }
}

/// Rows of every table in `RowBinary`: what a batch sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    tables: Vec<TableRows>,
    rows: usize,
    bytes: usize,
}

impl Default for Encoded {
    fn default() -> Self {
        Encoded {
            tables: vec![TableRows::default(); table_count()],
            rows: 0,
            bytes: 0,
        }
    }
}

impl Encoded {
    /// Rows in all tables.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Bytes of `RowBinary` in all tables.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Rows of the table at `index` in [`table_names`] order.
    pub(crate) fn table_len(&self, index: usize) -> usize {
        self.tables.get(index).map_or(0, TableRows::len)
    }

    /// Append one row to the table at `index` in [`table_names`] order:
    /// `write` appends its columns. Returns the row's bytes.
    pub(crate) fn push_row(&mut self, index: usize, write: impl FnOnce(&mut Vec<u8>)) -> usize {
        let t = &mut self.tables[index];
        let before = t.data.len();
        t.push_with(write);
        let n = t.data.len() - before;
        self.rows += 1;
        self.bytes += n;
        n
    }

    /// Encode and add every row of `rows` (those it keeps encoded,
    /// [`Rows::keep_encoded`], are copied).
    pub fn add(&mut self, rows: &Rows) {
        fn put<R: TableRow>(rows: &[R], t: &mut TableRows) {
            for r in rows {
                t.push_with(|out| r.write_row_binary(out));
            }
        }
        let before: usize = self.tables.iter().map(|t| t.data.len()).sum();
        let typed = Table::ALL.len();
        put(&rows.records, &mut self.tables[0]);
        rows.encode_typed(&mut self.tables[1..=typed]);
        put(&rows.identities, &mut self.tables[typed + 1]);
        put(&rows.accounts, &mut self.tables[typed + 2]);
        put(&rows.dead_letters, &mut self.tables[typed + 3]);
        let after: usize = self.tables.iter().map(|t| t.data.len()).sum();
        let kept = rows.encoded();
        self.rows += rows.len() - kept.map_or(0, Encoded::len);
        self.bytes += after - before;
        if let Some(kept) = kept {
            self.extend(kept);
        }
    }

    /// Add every row of `other`.
    pub fn extend(&mut self, other: &Encoded) {
        for (t, o) in self.tables.iter_mut().zip(&other.tables) {
            t.extend(o);
        }
        self.rows += other.rows;
        self.bytes += other.bytes;
    }

    /// Each table with its rows, in [`table_names`] order (empty ones too).
    pub fn tables(&self) -> impl Iterator<Item = (&'static str, &TableRows)> {
        table_names().zip(&self.tables)
    }

    /// Each non-empty table's name, bytes and row ends (the end offset of
    /// each row in the bytes), taking them without a copy.
    pub fn into_tables(self) -> impl Iterator<Item = (&'static str, Vec<u8>, Vec<u32>)> {
        table_names()
            .zip(self.tables)
            .filter(|(_, t)| !t.is_empty())
            .map(|(name, t)| (name, t.data, t.ends))
    }

    /// An empty batch with room for about as many bytes and rows per table
    /// as this one holds (an eighth more): the next batch of a steady stream
    /// fills it without growing its buffers by doubling, so no buffer is
    /// copied into a larger one and no freed smaller one lingers in the
    /// allocator beside it (the writer holds two batches at its peak).
    pub fn sized_like(&self) -> Encoded {
        let room = |n: usize| n + n / 8;
        Encoded {
            tables: self
                .tables
                .iter()
                .map(|t| TableRows {
                    data: Vec::with_capacity(room(t.data.len())),
                    ends: Vec::with_capacity(room(t.ends.len())),
                })
                .collect(),
            rows: 0,
            bytes: 0,
        }
    }

    /// Bytes the buffers have room for.
    pub(crate) fn capacity(&self) -> usize {
        self.tables
            .iter()
            .map(|t| t.data.capacity() + 4 * t.ends.capacity())
            .sum()
    }

    /// Drop every row, keeping the allocations.
    pub fn clear(&mut self) {
        for t in &mut self.tables {
            t.clear();
        }
        self.rows = 0;
        self.bytes = 0;
    }
}

/// Buffers of rows kept encoded ([`Rows::keep_encoded`]) going back from
/// the consumer that copied them (the batch writer, [`Encoded::add`]) to the
/// producer that fills them again ([`Rows::like`]), so a steady stream
/// allocates none: a freshly allocated buffer of a megabyte costs a page
/// fault per 4 KiB page on first write, and the allocator returns freed ones
/// to the system. Cheap to clone (one shared list); at most
/// [`Recycler::KEEP`] buffers are kept, none larger than
/// [`Recycler::MAX_BYTES`]. Rows compare equal whatever recycler they name.
#[derive(Debug, Clone, Default)]
pub struct Recycler(std::sync::Arc<std::sync::Mutex<Vec<Encoded>>>);

impl Recycler {
    /// Buffers kept: the writer's channel rarely holds more than a few
    /// messages, and a producer takes one per message.
    pub const KEEP: usize = 4;
    /// A buffer with room for more bytes than this (a burst's) is freed, not
    /// kept: at most 32 MiB held (an indexer message's buffers hold about a
    /// megabyte, a backfill chunk's 4 to 8).
    pub const MAX_BYTES: usize = 8 << 20;

    fn spare(&self) -> std::sync::MutexGuard<'_, Vec<Encoded>> {
        // A panic while holding the lock leaves a list of empty buffers:
        // still usable.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An empty buffer given back earlier, if any.
    pub(crate) fn take(&self) -> Option<Encoded> {
        self.spare().pop()
    }

    /// Keep `e` (emptied) for the next [`Recycler::take`], unless enough are
    /// kept or it is too large.
    pub(crate) fn give(&self, mut e: Encoded) {
        if e.capacity() > Self::MAX_BYTES {
            return;
        }
        e.clear();
        let mut spare = self.spare();
        if spare.len() < Self::KEEP {
            spare.push(e);
        }
    }

    /// Buffers kept now.
    pub fn kept(&self) -> usize {
        self.spare().len()
    }
}

impl PartialEq for Recycler {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for Recycler {}

/// Why a `RowBinary` row could not be read back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("row of {table}: {reason}")]
pub struct ReadError {
    /// The table.
    pub table: String,
    /// What was wrong.
    pub reason: String,
}

/// One row of `table` read back from `RowBinary` as a JSON object (column →
/// value; strings, numbers, arrays of strings): what a dead letter of a
/// refused row keeps.
pub fn row_json(
    table: &str,
    row: &[u8],
) -> Result<serde_json::Map<String, serde_json::Value>, ReadError> {
    let fail = |reason: String| ReadError {
        table: table.to_owned(),
        reason,
    };
    let columns = table_columns(table).ok_or_else(|| fail("not a table of skyhouse".into()))?;
    let mut r = Reader { buf: row, at: 0 };
    let mut out = serde_json::Map::new();
    for (name, ty) in columns {
        let v = r
            .value(ty)
            .map_err(|e| fail(format!("column {name} ({ty}): {e}")))?;
        out.insert((*name).to_owned(), v);
    }
    if r.at != row.len() {
        return Err(fail(format!("{} bytes left over", row.len() - r.at)));
    }
    Ok(out)
}

struct Reader<'a> {
    buf: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self.at.checked_add(n).filter(|e| *e <= self.buf.len());
        let end = end.ok_or_else(|| "the row ends early".to_owned())?;
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn varint(&mut self) -> Result<usize, String> {
        let mut n = 0usize;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            n |= usize::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(n);
            }
        }
        Err("length prefix too long".into())
    }

    fn string(&mut self) -> Result<serde_json::Value, String> {
        let n = self.varint()?;
        let b = self.take(n)?;
        Ok(serde_json::Value::String(
            String::from_utf8_lossy(b).into_owned(),
        ))
    }

    fn value(&mut self, ty: &str) -> Result<serde_json::Value, String> {
        let int = |b: &[u8]| {
            let mut v = [0u8; 8];
            v[..b.len()].copy_from_slice(b);
            serde_json::Value::from(u64::from_le_bytes(v))
        };
        Ok(match ty {
            "String" => self.string()?,
            "UInt8" => int(self.take(1)?),
            "UInt32" | "DateTime" => int(self.take(4)?),
            "UInt64" => int(self.take(8)?),
            "Array(String)" => {
                let n = self.varint()?;
                let mut items = Vec::with_capacity(n.min(1024));
                for _ in 0..n {
                    items.push(self.string()?);
                }
                serde_json::Value::Array(items)
            }
            other => return Err(format!("type {other} is not one skyhouse writes")),
        })
    }
}

impl DeadLetterRow {
    /// A dead letter for an encoded row its table refused (a permanent
    /// insert error): the row read back as JSON is the payload, so nothing is
    /// lost (if it cannot be read back, its bytes in hex are).
    pub fn for_refused_encoded(table: &str, reason: &str, row: &[u8]) -> DeadLetterRow {
        let json = row_json(table, row);
        let field = |k: &str| {
            json.as_ref()
                .ok()
                .and_then(|j| j.get(k))
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_owned()
        };
        let payload = match &json {
            Ok(j) => serde_json::Value::Object(j.clone()).to_string(),
            Err(e) => format!(
                "{e}; bytes: {}",
                row.iter().map(|b| format!("{b:02x}")).collect::<String>()
            ),
        };
        let collection = json
            .as_ref()
            .ok()
            .and_then(|j| j.get("collection"))
            .and_then(|v| v.as_str())
            .map_or_else(|| table.to_owned(), str::to_owned);
        DeadLetterRow {
            source: format!("insert:{table}"),
            did: field("did"),
            collection,
            rkey: field("rkey"),
            cid: field("cid"),
            version: json
                .as_ref()
                .ok()
                .and_then(|j| j.get("version"))
                .and_then(|v| v.as_u64())
                .unwrap_or(0),
            reason: reason.to_owned(),
            payload,
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rows::{FollowRow, PostRow};

    fn post() -> PostRow {
        PostRow {
            did: "did:plc:a".into(),
            rkey: "3k".into(),
            cid: "bafy".into(),
            version: 7,
            created_at: 1,
            indexed_at: 2,
            sort_at: 1,
            text: "héllo".into(),
            langs: vec!["en".into(), "pt".into()],
            image_count: 3,
            ..PostRow::default()
        }
    }

    #[test]
    fn encoded_rows_read_back_as_their_columns() {
        let mut rows = Rows::default();
        rows.posts.push(post());
        rows.follows.push(FollowRow {
            did: "did:plc:b".into(),
            ..FollowRow::default()
        });
        let mut enc = Encoded::default();
        enc.add(&rows);
        enc.add(&rows);
        assert_eq!(enc.len(), 4);
        let (name, posts) = enc.tables().find(|(_, t)| !t.is_empty()).expect("posts");
        assert_eq!((name, posts.len()), ("posts", 2));
        let one = posts.byte_range(1..2);
        assert_eq!(one.len(), post().encoded_len());
        assert_eq!(
            enc.bytes(),
            2 * (post().encoded_len() + rows.follows[0].encoded_len())
        );
        let json = row_json("posts", &posts.bytes()[one]).expect("reads back");
        assert_eq!(json["text"], "héllo");
        assert_eq!(json["langs"], serde_json::json!(["en", "pt"]));
        assert_eq!(
            (json["version"].as_u64(), json["image_count"].as_u64()),
            (Some(7), Some(3))
        );
        assert_eq!(
            serde_json::Value::Object(json),
            serde_json::to_value(post()).expect("json"),
            "the same JSON the struct serializes to"
        );
    }

    #[test]
    fn a_batch_sized_like_another_fills_to_its_size_without_growing() {
        let mut rows = Rows::default();
        rows.posts.extend((0..100).map(|_| post()));
        let mut full = Encoded::default();
        full.add(&rows);
        let mut next = full.sized_like();
        assert!(next.is_empty() && next.bytes() == 0);
        let room: Vec<(usize, usize)> = next
            .tables
            .iter()
            .map(|t| (t.data.capacity(), t.ends.capacity()))
            .collect();
        next.add(&rows);
        assert_eq!(next, full, "the same rows as the batch it was sized on");
        for (t, (data, ends)) in next.tables.iter().zip(room) {
            assert_eq!((t.data.capacity(), t.ends.capacity()), (data, ends));
            assert!(data >= t.data.len() && data <= t.data.len() + t.data.len() / 8);
        }
    }

    #[test]
    fn a_refused_row_is_dead_lettered_whole() {
        let mut t = TableRows::default();
        t.push_with(|out| post().write_row_binary(out));
        let d = DeadLetterRow::for_refused_encoded("posts", "code 395", t.bytes());
        assert_eq!(
            (
                d.source.as_str(),
                d.did.as_str(),
                d.collection.as_str(),
                d.rkey.as_str(),
                d.version
            ),
            ("insert:posts", "did:plc:a", "posts", "3k", 7)
        );
        assert!(d.payload.contains("héllo"), "{}", d.payload);
        // Bytes that are not a row: kept in hex, with the reason.
        let d = DeadLetterRow::for_refused_encoded("posts", "code 395", &[0x05, 0x61]);
        assert!(
            d.payload.contains("ends early") && d.payload.contains("0561"),
            "{}",
            d.payload
        );
    }

    #[test]
    fn every_table_has_columns() {
        assert_eq!(table_names().count(), table_count());
        for t in table_names() {
            assert!(table_columns(t).is_some(), "{t}");
        }
    }
}
