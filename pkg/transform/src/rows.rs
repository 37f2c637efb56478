//! Row types, one per ClickHouse table, and the [`Rows`] batch they go into.
//!
//! Field order is column order (`migrations/0002_typed_tables.up.sql`; the
//! `schema` test holds the two together). Every typed table starts with the
//! same eight key and time columns; [`typed_tables!`] writes them once.

use std::borrow::Cow;

use crate::encoded::{Encoded, Recycler};
use crate::shape::Check;
use crate::time::Times;
use skyhouse_atproto::cbor::Map;

/// A row of one ClickHouse table, as this crate writes it.
pub trait TableRow: clickhouse::Row + serde::Serialize {
    /// The table's name (without database).
    const TABLE: &'static str;
    /// `(column, ClickHouse type)` in column order, as in the migration.
    const COLUMNS: &'static [(&'static str, &'static str)];
    /// The row's size in ClickHouse `RowBinary` (what the insert sends).
    fn encoded_len(&self) -> usize;
    /// Append the row in ClickHouse `RowBinary` (columns in order) to `out`.
    fn write_row_binary(&self, out: &mut Vec<u8>);
}

/// A column value's `RowBinary` form.
pub(crate) trait WriteRowBinary {
    fn put(&self, out: &mut Vec<u8>);
}

/// Append a LEB128 length prefix.
#[inline]
pub(crate) fn put_varint(mut n: usize, out: &mut Vec<u8>) {
    while n >= 0x80 {
        out.push((n as u8) | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

/// Append a string column: its length, then its bytes.
#[inline]
fn put_str(s: &str, out: &mut Vec<u8>) {
    put_varint(s.len(), out);
    out.extend_from_slice(s.as_bytes());
}

impl WriteRowBinary for String {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_str(self, out);
    }
}

impl WriteRowBinary for &str {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_str(self, out);
    }
}

impl WriteRowBinary for Cow<'_, str> {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_str(self, out);
    }
}

impl<S: AsRef<str>> WriteRowBinary for Vec<S> {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        put_varint(self.len(), out);
        for s in self {
            put_str(s.as_ref(), out);
        }
    }
}

impl WriteRowBinary for u8 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        out.push(*self);
    }
}

impl WriteRowBinary for u32 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

impl WriteRowBinary for u64 {
    #[inline]
    fn put(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.to_le_bytes());
    }
}

/// Bytes a value takes in `RowBinary`.
pub(crate) trait EncodedLen {
    fn encoded_len(&self) -> usize;
}

/// Bytes of a LEB128 length prefix.
#[inline]
fn varint_len(n: usize) -> usize {
    let bits = usize::BITS - (n | 1).leading_zeros();
    bits.div_ceil(7) as usize
}

/// Bytes of a string column.
#[inline]
fn str_len(s: &str) -> usize {
    varint_len(s.len()) + s.len()
}

impl EncodedLen for String {
    #[inline]
    fn encoded_len(&self) -> usize {
        str_len(self)
    }
}

impl EncodedLen for &str {
    #[inline]
    fn encoded_len(&self) -> usize {
        str_len(self)
    }
}

impl EncodedLen for Cow<'_, str> {
    #[inline]
    fn encoded_len(&self) -> usize {
        str_len(self)
    }
}

impl<S: AsRef<str>> EncodedLen for Vec<S> {
    #[inline]
    fn encoded_len(&self) -> usize {
        varint_len(self.len()) + self.iter().map(|s| str_len(s.as_ref())).sum::<usize>()
    }
}

/// A typed column's type in a row borrowed from its record (the typed
/// tables' `Ref` rows, [`Rows::keep_encoded`]): the owned row's `String`s
/// as `Cow<str>`, borrowed from the record where they can be.
pub(crate) trait Column: Sized {
    /// The borrowed form.
    type Ref<'a>: Default + WriteRowBinary + EncodedLen;
    /// The owned form of a borrowed value.
    fn owned(r: Self::Ref<'_>) -> Self;
}

impl Column for String {
    type Ref<'a> = Cow<'a, str>;
    #[inline]
    fn owned(r: Cow<'_, str>) -> String {
        r.into_owned()
    }
}

impl Column for Vec<String> {
    type Ref<'a> = Vec<Cow<'a, str>>;
    #[inline]
    fn owned(r: Vec<Cow<'_, str>>) -> Vec<String> {
        r.into_iter().map(Cow::into_owned).collect()
    }
}

impl Column for u8 {
    type Ref<'a> = u8;
    #[inline]
    fn owned(r: u8) -> u8 {
        r
    }
}

impl Column for u32 {
    type Ref<'a> = u32;
    #[inline]
    fn owned(r: u32) -> u32 {
        r
    }
}

impl EncodedLen for u8 {
    #[inline]
    fn encoded_len(&self) -> usize {
        1
    }
}

impl EncodedLen for u32 {
    #[inline]
    fn encoded_len(&self) -> usize {
        4
    }
}

impl EncodedLen for u64 {
    #[inline]
    fn encoded_len(&self) -> usize {
        8
    }
}

/// A raw row of `records`: every operation of every collection.
#[derive(clickhouse::Row, serde::Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct RecordRow {
    /// The repository's DID.
    pub did: String,
    /// The collection NSID.
    pub collection: String,
    /// The record key.
    pub rkey: String,
    /// The record's CID; `""` for deletes.
    pub cid: String,
    /// The commit's `rev` as an integer: ReplacingMergeTree keeps the highest.
    pub version: u64,
    /// 1 for a tombstone (a delete), else 0.
    pub deleted: u8,
    /// The record's `createdAt` claim (see [`Times::of_record`]).
    pub created_at: u32,
    /// When we first saw the operation.
    pub indexed_at: u32,
    /// `min(created_at, indexed_at)`.
    pub sort_at: u32,
    /// The record in lex-JSON; `""` for deletes.
    pub record: String,
}

impl TableRow for RecordRow {
    const TABLE: &'static str = "records";
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("did", "String"),
        ("collection", "String"),
        ("rkey", "String"),
        ("cid", "String"),
        ("version", "UInt64"),
        ("deleted", "UInt8"),
        ("created_at", "DateTime"),
        ("indexed_at", "DateTime"),
        ("sort_at", "DateTime"),
        ("record", "String"),
    ];

    fn encoded_len(&self) -> usize {
        self.did.encoded_len()
            + self.collection.encoded_len()
            + self.rkey.encoded_len()
            + self.cid.encoded_len()
            + self.record.encoded_len()
            + 8
            + 1
            + 3 * 4
    }

    fn write_row_binary(&self, out: &mut Vec<u8>) {
        self.did.put(out);
        self.collection.put(out);
        self.rkey.put(out);
        self.cid.put(out);
        self.version.put(out);
        self.deleted.put(out);
        self.created_at.put(out);
        self.indexed_at.put(out);
        self.sort_at.put(out);
        self.record.put(out);
    }
}

/// A `records` row borrowed from its operation ([`Rows::push_record`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordCols<'a> {
    pub(crate) did: &'a str,
    pub(crate) collection: &'a str,
    pub(crate) rkey: &'a str,
    pub(crate) cid: &'a str,
    pub(crate) version: u64,
    pub(crate) deleted: u8,
    pub(crate) times: Times,
    /// The record's lex-JSON, `""` when not kept.
    pub(crate) record: &'a str,
}

impl RecordCols<'_> {
    fn into_owned(self) -> RecordRow {
        RecordRow {
            did: self.did.to_owned(),
            collection: self.collection.to_owned(),
            rkey: self.rkey.to_owned(),
            cid: self.cid.to_owned(),
            version: self.version,
            deleted: self.deleted,
            created_at: self.times.created_at,
            indexed_at: self.times.indexed_at,
            sort_at: self.times.sort_at,
            record: self.record.to_owned(),
        }
    }

    /// As [`RecordRow::write_row_binary`] of the owned row.
    fn write_row_binary(&self, out: &mut Vec<u8>) {
        self.did.put(out);
        self.collection.put(out);
        self.rkey.put(out);
        self.cid.put(out);
        self.version.put(out);
        self.deleted.put(out);
        self.times.created_at.put(out);
        self.times.indexed_at.put(out);
        self.times.sort_at.put(out);
        self.record.put(out);
    }
}

/// Where dead letters written by this crate say they come from.
pub const DEAD_LETTER_SOURCE: &str = "transform";

/// A row of `dead_letters`: a record that does not fit its typed table.
#[derive(clickhouse::Row, serde::Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct DeadLetterRow {
    /// The stage that gave up ([`DEAD_LETTER_SOURCE`] here).
    pub source: String,
    /// The repository's DID.
    pub did: String,
    /// The collection NSID.
    pub collection: String,
    /// The record key.
    pub rkey: String,
    /// The record's CID (`""` if the operation had none).
    pub cid: String,
    /// The commit's `rev` as an integer.
    pub version: u64,
    /// One line naming the field and the problem, e.g.
    /// `subject.uri: required field is missing`.
    pub reason: String,
    /// The record in lex-JSON (`""` if there was none).
    pub payload: String,
    /// When we saw it (the operation's `indexed_at`).
    pub at: u32,
}

/// Where [`Rows::drain_into`] sends each table's rows: the store's batch
/// writer implements it with ClickHouse inserts. Keeping the trait here keeps
/// this crate free of I/O.
pub trait TableSink {
    /// The sink's error.
    type Error;

    /// Write `rows` to `table`.
    fn insert<R>(
        &mut self,
        table: &'static str,
        rows: &[R],
    ) -> impl std::future::Future<Output = Result<(), Self::Error>> + Send
    where
        R: clickhouse::RowOwned + clickhouse::RowWrite + serde::Serialize + Send + Sync + 'static;
}

impl DeadLetterRow {
    /// A dead letter for a row its table refused (a permanent insert error):
    /// the row itself, as JSON, is the payload, so nothing is lost.
    pub fn for_refused_row<R: serde::Serialize>(
        table: &str,
        reason: &str,
        row: &R,
    ) -> DeadLetterRow {
        let json = serde_json::to_value(row).unwrap_or_default();
        let field = |k: &str| {
            json.get(k)
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string()
        };
        DeadLetterRow {
            source: format!("insert:{table}"),
            did: field("did"),
            collection: json
                .get("collection")
                .and_then(|v| v.as_str())
                .map_or_else(|| table.to_string(), str::to_string),
            rkey: field("rkey"),
            cid: field("cid"),
            version: json.get("version").and_then(|v| v.as_u64()).unwrap_or(0),
            reason: reason.to_string(),
            payload: json.to_string(),
            at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as u32),
        }
    }
}

impl TableRow for DeadLetterRow {
    const TABLE: &'static str = "dead_letters";
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("source", "String"),
        ("did", "String"),
        ("collection", "String"),
        ("rkey", "String"),
        ("cid", "String"),
        ("version", "UInt64"),
        ("reason", "String"),
        ("payload", "String"),
        ("at", "DateTime"),
    ];

    fn encoded_len(&self) -> usize {
        self.source.encoded_len()
            + self.did.encoded_len()
            + self.collection.encoded_len()
            + self.rkey.encoded_len()
            + self.cid.encoded_len()
            + 8
            + self.reason.encoded_len()
            + self.payload.encoded_len()
            + 4
    }

    fn write_row_binary(&self, out: &mut Vec<u8>) {
        self.source.put(out);
        self.did.put(out);
        self.collection.put(out);
        self.rkey.put(out);
        self.cid.put(out);
        self.version.put(out);
        self.reason.put(out);
        self.payload.put(out);
        self.at.put(out);
    }
}

/// The key and time columns shared by the rows of one operation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key<'k> {
    pub(crate) did: &'k str,
    pub(crate) rkey: &'k str,
    pub(crate) cid: &'k str,
    pub(crate) version: u64,
    pub(crate) deleted: u8,
    pub(crate) times: Times,
    /// The operation: 1 create, 2 update, 3 delete (see [`action_code`]).
    pub(crate) action: u8,
}

/// The `action` column's value for an operation: 1 create, 2 update,
/// 3 delete. The interaction refresh looks up earlier state only for
/// updates and deletes (migration 0009).
pub fn action_code(action: crate::Action) -> u8 {
    match action {
        crate::Action::Create => 1,
        crate::Action::Update => 2,
        crate::Action::Delete => 3,
    }
}

/// Defines every typed table: its row struct (common columns first, then its
/// own), its [`TableRow`] impl, its [`Table`] variant, its vector in [`Rows`],
/// and the dispatch from a collection to its extractor.
macro_rules! typed_tables {
    ($(
        $(#[doc = $doc:expr])*
        $variant:ident => $row:ident, $field:ident, $table:literal, $collection:literal, $extract:path {
            $( $(#[doc = $fdoc:expr])* $col:ident : $ty:ty => $chty:literal, )*
        }
    )*) => {
        $(
            $(#[doc = $doc])*
            #[doc = ""]
            #[doc = concat!("Table `", $table, "`, collection `", $collection, "`.")]
            #[derive(clickhouse::Row, serde::Serialize, Debug, Clone, PartialEq, Eq, Default)]
            pub struct $row {
                /// The repository's DID.
                pub did: String,
                /// The record key.
                pub rkey: String,
                /// The record's CID; `""` for tombstones.
                pub cid: String,
                /// The commit's `rev` as an integer: ReplacingMergeTree keeps the highest.
                pub version: u64,
                /// 1 for a tombstone (a delete, or a record that no longer fits
                /// this table), else 0.
                pub deleted: u8,
                /// The record's `createdAt` claim (see [`Times::of_record`]).
                pub created_at: u32,
                /// When we first saw the operation.
                pub indexed_at: u32,
                /// `min(created_at, indexed_at)`.
                pub sort_at: u32,
                $( $(#[doc = $fdoc])* pub $col: $ty, )*
                /// The operation (see [`action_code`]); 0 for rows written
                /// before migration 0009 (which added it as the last column).
                pub action: u8,
            }

            impl TableRow for $row {
                const TABLE: &'static str = $table;
                const COLUMNS: &'static [(&'static str, &'static str)] = &[
                    ("did", "String"),
                    ("rkey", "String"),
                    ("cid", "String"),
                    ("version", "UInt64"),
                    ("deleted", "UInt8"),
                    ("created_at", "DateTime"),
                    ("indexed_at", "DateTime"),
                    ("sort_at", "DateTime"),
                    $( (stringify!($col), $chty), )*
                    ("action", "UInt8"),
                ];

                fn encoded_len(&self) -> usize {
                    self.did.encoded_len()
                        + self.rkey.encoded_len()
                        + self.cid.encoded_len()
                        + 8
                        + 1
                        + 3 * 4
                        + 1
                        $( + self.$col.encoded_len() )*
                }

                fn write_row_binary(&self, out: &mut Vec<u8>) {
                    self.did.put(out);
                    self.rkey.put(out);
                    self.cid.put(out);
                    self.version.put(out);
                    self.deleted.put(out);
                    self.created_at.put(out);
                    self.indexed_at.put(out);
                    self.sort_at.put(out);
                    $( self.$col.put(out); )*
                    self.action.put(out);
                }
            }

            /// The table's row borrowed from its operation and record: what
            /// an extractor fills ([`Rows::push_typed`]).
            pub(crate) mod $field {
                use super::*;

                #[derive(Debug, Default)]
                pub(crate) struct Ref<'a> {
                    pub(crate) did: &'a str,
                    pub(crate) rkey: &'a str,
                    pub(crate) cid: &'a str,
                    pub(crate) version: u64,
                    pub(crate) deleted: u8,
                    pub(crate) times: Times,
                    $( pub(crate) $col: <$ty as Column>::Ref<'a>, )*
                    pub(crate) action: u8,
                }

                impl<'a> Ref<'a> {
                    /// A row with the key and time columns set and the rest empty.
                    pub(crate) fn keyed(key: &Key<'a>) -> Ref<'a> {
                        Ref {
                            did: key.did,
                            rkey: key.rkey,
                            cid: key.cid,
                            version: key.version,
                            deleted: key.deleted,
                            times: key.times,
                            action: key.action,
                            ..Ref::default()
                        }
                    }

                    /// The owned row.
                    pub(crate) fn into_owned(self) -> $row {
                        $row {
                            did: self.did.to_owned(),
                            rkey: self.rkey.to_owned(),
                            cid: self.cid.to_owned(),
                            version: self.version,
                            deleted: self.deleted,
                            created_at: self.times.created_at,
                            indexed_at: self.times.indexed_at,
                            sort_at: self.times.sort_at,
                            $( $col: Column::owned(self.$col), )*
                            action: self.action,
                        }
                    }

                    /// Append the row in `RowBinary`, as [`TableRow::write_row_binary`]
                    /// of the owned row does.
                    pub(crate) fn write_row_binary(&self, out: &mut Vec<u8>) {
                        self.did.put(out);
                        self.rkey.put(out);
                        self.cid.put(out);
                        self.version.put(out);
                        self.deleted.put(out);
                        self.times.created_at.put(out);
                        self.times.indexed_at.put(out);
                        self.times.sort_at.put(out);
                        $( self.$col.put(out); )*
                        self.action.put(out);
                    }
                }
            }
        )*

        /// A typed table: one per record type this crate understands.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Table {
            $(
                #[doc = concat!("`", $table, "` (`", $collection, "`).")]
                $variant,
            )*
        }

        impl Table {
            /// Every typed table, in migration order.
            pub const ALL: &'static [Table] = &[$(Table::$variant),*];

            /// The table's name.
            pub fn name(self) -> &'static str {
                match self { $(Table::$variant => $table,)* }
            }

            /// The collection NSID whose records go to this table.
            pub fn collection(self) -> &'static str {
                match self { $(Table::$variant => $collection,)* }
            }

            /// The typed table of a collection, if it has one.
            pub fn for_collection(collection: &str) -> Option<Table> {
                match collection {
                    $($collection => Some(Table::$variant),)*
                    _ => None,
                }
            }

            /// `(column, ClickHouse type)` of this table, in column order.
            pub fn columns(self) -> &'static [(&'static str, &'static str)] {
                match self { $(Table::$variant => <$row as TableRow>::COLUMNS,)* }
            }

            /// The column names `clickhouse::Row` derived for this table's row.
            pub fn row_column_names(self) -> &'static [&'static str] {
                match self { $(Table::$variant => <$row as clickhouse::Row>::COLUMN_NAMES,)* }
            }
        }

        /// The rows produced by [`apply`](crate::apply), one vector per table.
        ///
        /// Reuse one `Rows` per batch: [`Rows::clear`] keeps the capacity.
        /// [`Rows::approx_bytes`] is kept up to date by `apply`; if you move
        /// rows out of the vectors yourself, `clear` (or take the whole value
        /// with `std::mem::take`) before applying more.
        #[derive(Debug, Clone, Default, PartialEq, Eq)]
        pub struct Rows {
            /// Rows for `records` (one per operation).
            pub records: Vec<RecordRow>,
            $(
                #[doc = concat!("Rows for `", $table, "`.")]
                pub $field: Vec<$row>,
            )*
            /// Rows for `dead_letters`.
            pub dead_letters: Vec<DeadLetterRow>,
            /// Rows for `identities` (firehose/Jetstream `#identity` events).
            pub identities: Vec<IdentityRow>,
            /// Rows for `accounts` (firehose/Jetstream `#account` events).
            pub accounts: Vec<AccountRow>,
            /// For an [`OpsTap`](crate::OpsTap): what each record operation
            /// did, in `records` order (empty unless [`Rows::keep_for_tap`]).
            pub tap: Vec<crate::TapOp>,
            tap_extras: crate::TapExtras,
            raw_records: crate::RawRecords,
            /// With [`Rows::keep_encoded`]: the rows kept as `RowBinary`
            /// instead of in the vectors above.
            encoded: Option<Encoded>,
            /// Where [`Rows::recycle`] gives the encoded buffers back and
            /// [`Rows::like`] takes them from ([`Rows::recycle_via`]).
            recycler: Option<Recycler>,
            bytes: usize,
        }

        impl Rows {
            /// Rows in all tables.
            pub fn len(&self) -> usize {
                self.records.len() $( + self.$field.len() )* + self.dead_letters.len()
                    + self.identities.len() + self.accounts.len()
                    + self.encoded.as_ref().map_or(0, Encoded::len)
            }

            /// Rows in the typed tables (not `records`, not `dead_letters`).
            pub fn typed_len(&self) -> usize {
                Table::ALL.iter().map(|t| self.table_len(*t)).sum()
            }

            /// Rows in the given typed table.
            pub fn table_len(&self, table: Table) -> usize {
                let encoded = self.encoded.as_ref().map_or(0, |e| e.table_len(table as usize + 1));
                encoded + match table { $(Table::$variant => self.$field.len(),)* }
            }

            /// Move every row of `other` into `self`, leaving `other` empty.
            pub fn append(&mut self, other: &mut Rows) {
                let base = self.records.len();
                self.tap.extend(other.tap.drain(..).map(|mut t| {
                    t.record += base;
                    t
                }));
                self.records.append(&mut other.records);
                $( self.$field.append(&mut other.$field); )*
                self.dead_letters.append(&mut other.dead_letters);
                self.identities.append(&mut other.identities);
                self.accounts.append(&mut other.accounts);
                if let Some(o) = other.encoded.as_mut().filter(|o| !o.is_empty()) {
                    self.encoded.get_or_insert_with(Encoded::default).extend(o);
                    o.clear();
                }
                self.bytes += other.bytes;
                other.bytes = 0;
            }

            /// Hand every non-empty table's rows to `sink`, table by table
            /// (`records` first, `dead_letters` last). The rows stay in
            /// `self`; [`Rows::clear`] them once the sink is done. Rows kept
            /// encoded ([`Rows::keep_encoded`]) are not structs: they are
            /// [`Encoded::add`]'s, and this panics if there are any.
            pub async fn drain_into<S: TableSink>(&self, sink: &mut S) -> Result<(), S::Error> {
                assert!(
                    self.encoded.as_ref().is_none_or(Encoded::is_empty),
                    "Rows::drain_into of rows kept encoded"
                );
                if !self.records.is_empty() {
                    sink.insert(<RecordRow as TableRow>::TABLE, &self.records).await?;
                }
                $(
                    if !self.$field.is_empty() {
                        sink.insert($table, &self.$field).await?;
                    }
                )*
                if !self.identities.is_empty() {
                    sink.insert(<IdentityRow as TableRow>::TABLE, &self.identities).await?;
                }
                if !self.accounts.is_empty() {
                    sink.insert(<AccountRow as TableRow>::TABLE, &self.accounts).await?;
                }
                if !self.dead_letters.is_empty() {
                    sink.insert(<DeadLetterRow as TableRow>::TABLE, &self.dead_letters).await?;
                }
                Ok(())
            }

            /// Every non-empty table's rows in ClickHouse `RowBinary`,
            /// appended to that table's buffer in `out` (`(table, bytes)`,
            /// one entry per table, added when first needed): what an insert
            /// sends. Clear the buffers to reuse them.
            pub fn encode_into(&self, out: &mut Vec<(&'static str, Vec<u8>)>) {
                fn put<R: TableRow>(rows: &[R], out: &mut Vec<(&'static str, Vec<u8>)>) {
                    if rows.is_empty() {
                        return;
                    }
                    let i = match out.iter().position(|(t, _)| *t == R::TABLE) {
                        Some(i) => i,
                        None => {
                            out.push((R::TABLE, Vec::new()));
                            out.len() - 1
                        }
                    };
                    let buf = &mut out[i].1;
                    for r in rows {
                        r.write_row_binary(buf);
                    }
                }
                put(&self.records, out);
                $( put(&self.$field, out); )*
                put(&self.identities, out);
                put(&self.accounts, out);
                put(&self.dead_letters, out);
                for (table, rows) in self.encoded.iter().flat_map(Encoded::tables) {
                    if rows.is_empty() {
                        continue;
                    }
                    match out.iter_mut().find(|(t, _)| *t == table) {
                        Some((_, buf)) => buf.extend_from_slice(rows.bytes()),
                        None => out.push((table, rows.bytes().to_vec())),
                    }
                }
            }

            /// Drop every row, keeping the allocations.
            pub fn clear(&mut self) {
                self.tap.clear();
                self.records.clear();
                $( self.$field.clear(); )*
                self.dead_letters.clear();
                self.identities.clear();
                self.accounts.clear();
                if let Some(e) = &mut self.encoded {
                    e.clear();
                }
                self.bytes = 0;
            }

            /// Encode the typed tables' rows into `out`, one buffer per
            /// table in [`Table::ALL`] order.
            pub(crate) fn encode_typed(&self, out: &mut [crate::encoded::TableRows]) {
                let mut out = out.iter_mut();
                $(
                    if let Some(t) = out.next() {
                        for r in &self.$field {
                            t.push_with(|buf| r.write_row_binary(buf));
                        }
                    }
                )*
            }

            /// Build and add the typed row of a record; on a shape error
            /// nothing is added.
            pub(crate) fn push_typed(
                &mut self,
                table: Table,
                record: &Map<'_>,
                key: &Key<'_>,
            ) -> Check<()> {
                match table {
                    $(Table::$variant => {
                        let row = $extract(record, $field::Ref::keyed(key))?;
                        match &mut self.encoded {
                            Some(e) => self.bytes += e.push_row(table as usize + 1, |out| row.write_row_binary(out)),
                            None => {
                                let row = row.into_owned();
                                self.bytes += row.encoded_len();
                                self.$field.push(row);
                            }
                        }
                    })*
                }
                Ok(())
            }

            /// Add a tombstone (`deleted` = 1, content columns empty) to a typed table.
            pub(crate) fn push_tombstone(&mut self, table: Table, key: &Key<'_>) {
                let key = Key { deleted: 1, cid: "", ..*key };
                match table {
                    $(Table::$variant => {
                        let row = $field::Ref::keyed(&key);
                        match &mut self.encoded {
                            Some(e) => self.bytes += e.push_row(table as usize + 1, |out| row.write_row_binary(out)),
                            None => {
                                let row = row.into_owned();
                                self.bytes += row.encoded_len();
                                self.$field.push(row);
                            }
                        }
                    })*
                }
            }
        }
    };
}

impl Rows {
    /// Whether there are no rows at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The rows' size in ClickHouse `RowBinary`, summed as they were added:
    /// O(1), for closing batches on bytes.
    pub fn approx_bytes(&self) -> usize {
        self.bytes
    }

    /// Keep what an [`OpsTap`](crate::OpsTap) asks for ([`Rows::tap`])
    /// from now on.
    pub fn keep_for_tap(&mut self, extras: crate::TapExtras) {
        self.tap_extras = extras;
    }

    /// Empty rows keeping the same tap extras, raw-record choice and
    /// [`Rows::keep_encoded`] as `self`; rows kept encoded get buffers with
    /// room for about as many bytes as `self`'s ([`Encoded::sized_like`]),
    /// so the next batch of a steady stream does not grow them by doubling.
    ///
    /// With a recycler ([`Rows::recycle_via`]), the buffers are one given
    /// back, when there is one, and the new rows recycle through it too.
    pub fn like(&self) -> Rows {
        let encoded = self.encoded.as_ref().map(|e| {
            self.recycler
                .as_ref()
                .and_then(Recycler::take)
                .unwrap_or_else(|| e.sized_like())
        });
        Rows {
            tap_extras: self.tap_extras,
            raw_records: self.raw_records,
            encoded,
            recycler: self.recycler.clone(),
            ..Rows::default()
        }
    }

    /// From now on these rows, and those made [`like`](Rows::like) them,
    /// give their encoded buffers back to `recycler` when
    /// [recycled](Rows::recycle), and take them from it when made.
    ///
    /// Empty rows kept encoded take a buffer given back now, if there is one.
    pub fn recycle_via(&mut self, recycler: &Recycler) {
        if let Some(e) = self.encoded.as_mut().filter(|e| e.is_empty()) {
            if let Some(spare) = recycler.take() {
                *e = spare;
            }
        }
        self.recycler = Some(recycler.clone());
    }

    /// Done with these rows (their bytes copied, [`Encoded::add`]): give
    /// the encoded buffers back to the recycler, if any, else free them.
    pub fn recycle(mut self) {
        if let (Some(r), Some(e)) = (self.recycler.take(), self.encoded.take()) {
            r.give(e);
        }
    }

    /// Which `records` rows keep the record's JSON from now on
    /// (`--raw-records`; default all).
    pub fn keep_raw_records(&mut self, raw: crate::RawRecords) {
        self.raw_records = raw;
    }

    /// Which `records` rows keep the record's JSON.
    pub fn raw_records(&self) -> crate::RawRecords {
        self.raw_records
    }

    /// From now on keep the rows of `records` and of the typed tables as
    /// `RowBinary` ([`Encoded`], what an insert sends), written as they are
    /// added, instead of as structs in the vectors: no string of theirs is
    /// copied into a `String`, and the writer only copies their bytes
    /// ([`Encoded::add`]). What the sources hand the writer; tests read the
    /// structs. `records` rows stay structs while a tap is kept
    /// ([`Rows::keep_for_tap`]: the tap reads them). `dead_letters`,
    /// `identities` and `accounts` rows are structs either way.
    pub fn keep_encoded(&mut self) {
        self.encoded.get_or_insert_with(Encoded::default);
    }

    /// Empty rows as a source hands them to the batch writer: kept encoded
    /// ([`Rows::keep_encoded`]), keeping the JSON `raw` names and what
    /// `tap` (if any) asks for.
    pub fn for_writer(raw: crate::RawRecords, tap: Option<&dyn crate::OpsTap>) -> Rows {
        let mut rows = Rows::default();
        rows.keep_raw_records(raw);
        rows.keep_encoded();
        if let Some(tap) = tap {
            rows.keep_for_tap(tap.extras());
        }
        rows
    }

    /// The rows kept encoded ([`Rows::keep_encoded`]), if any.
    pub fn encoded(&self) -> Option<&Encoded> {
        self.encoded.as_ref()
    }

    /// What is kept for a tap.
    pub fn tap_extras(&self) -> crate::TapExtras {
        self.tap_extras
    }

    /// Note the next record row's action (and CBOR) for the tap; called
    /// before the row is pushed.
    pub(crate) fn push_tap(&mut self, action: crate::Action, cbor: Option<&[u8]>) {
        let cbor = match self.tap_extras {
            crate::TapExtras::ActionsAndCbor => cbor.map(<[u8]>::to_vec),
            _ => None,
        };
        self.tap.push(crate::TapOp {
            record: self.records.len(),
            action,
            cbor,
        });
    }

    /// Add a `records` row: encoded if the rows are kept so and no tap
    /// reads them, else as a struct.
    pub(crate) fn push_record(&mut self, row: RecordCols<'_>) {
        match &mut self.encoded {
            Some(e) if self.tap_extras == crate::TapExtras::Off => {
                self.bytes += e.push_row(0, |out| row.write_row_binary(out));
            }
            _ => {
                let row = row.into_owned();
                self.bytes += row.encoded_len();
                self.records.push(row);
            }
        }
    }

    /// Add a `dead_letters` row (input a source could not use).
    pub fn push_dead_letter(&mut self, row: DeadLetterRow) {
        self.bytes += row.encoded_len();
        self.dead_letters.push(row);
    }

    /// Add an `identities` row (a `#identity` event).
    pub fn push_identity(&mut self, row: IdentityRow) {
        self.bytes += row.encoded_len();
        self.identities.push(row);
    }

    /// Add an `accounts` row (an `#account` event).
    pub fn push_account(&mut self, row: AccountRow) {
        self.bytes += row.encoded_len();
        self.accounts.push(row);
    }
}

/// A row of `identities`: a DID's current handle, `handle.invalid` when it
/// does not verify. Newest information wins.
#[derive(clickhouse::Row, serde::Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct IdentityRow {
    /// The account's DID.
    pub did: String,
    /// The handle (as announced by an `#identity` event, or as verified
    /// from the DID document by a backfill or a re-verification).
    pub handle: String,
    /// When the information was had, in Unix microseconds: a live event's
    /// time (firehose `time`, Jetstream `time_us`), or the time a backfill
    /// or re-verification resolved it; 0 for a check that could not be
    /// made. (Older rows carry the firehose `seq`, which any newer row
    /// outranks.)
    pub version: u64,
    /// When we saw it.
    pub indexed_at: u32,
}

impl TableRow for IdentityRow {
    const TABLE: &'static str = "identities";
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("did", "String"),
        ("handle", "String"),
        ("version", "UInt64"),
        ("indexed_at", "DateTime"),
    ];

    fn encoded_len(&self) -> usize {
        self.did.encoded_len() + self.handle.encoded_len() + 8 + 4
    }

    fn write_row_binary(&self, out: &mut Vec<u8>) {
        self.did.put(out);
        self.handle.put(out);
        self.version.put(out);
        self.indexed_at.put(out);
    }
}

/// A row of `accounts`: hosting status. `active` = 0 hides the account from
/// feeds and search; status `deleted` also queues a cleanup job.
#[derive(clickhouse::Row, serde::Serialize, Debug, Clone, PartialEq, Eq, Default)]
pub struct AccountRow {
    /// The account's DID.
    pub did: String,
    /// 1 when the host serves the account.
    pub active: u8,
    /// `""` when active, else the host's reason (`deactivated`,
    /// `takendown`, `suspended`, `deleted`, `not_found`, ...).
    pub status: String,
    /// When the information was had, in Unix microseconds: a live event's
    /// time, or the time a backfill's `getRepo` / `getRepoStatus` answered.
    pub version: u64,
    /// When we saw it.
    pub indexed_at: u32,
}

impl TableRow for AccountRow {
    const TABLE: &'static str = "accounts";
    const COLUMNS: &'static [(&'static str, &'static str)] = &[
        ("did", "String"),
        ("active", "UInt8"),
        ("status", "String"),
        ("version", "UInt64"),
        ("indexed_at", "DateTime"),
    ];

    fn encoded_len(&self) -> usize {
        self.did.encoded_len() + 1 + self.status.encoded_len() + 8 + 4
    }

    fn write_row_binary(&self, out: &mut Vec<u8>) {
        self.did.put(out);
        self.active.put(out);
        self.status.put(out);
        self.version.put(out);
        self.indexed_at.put(out);
    }
}

typed_tables! {
    /// A post: text, language, thread position, embed and facets.
    Posts => PostRow, posts, "posts", "app.bsky.feed.post", crate::post::post {
        /// The post text (may be empty when there are embeds).
        text: String => "String",
        /// `langs`: declared languages, as written.
        langs: Vec<String> => "Array(String)",
        /// `reply.root.uri` (`""` for a top-level post).
        reply_root_uri: String => "String",
        /// `reply.root.cid`.
        reply_root_cid: String => "String",
        /// `reply.parent.uri`.
        reply_parent_uri: String => "String",
        /// `reply.parent.cid`.
        reply_parent_cid: String => "String",
        /// The quoted record's URI (`embed.record` or `embed.recordWithMedia.record`).
        quote_uri: String => "String",
        /// The quoted record's CID.
        quote_cid: String => "String",
        /// The embed's `$type` without `app.bsky.embed.` (`images`, `video`,
        /// `external`, `record`, `recordWithMedia`, `gallery`); a foreign
        /// `$type` is kept whole; `""` without an embed.
        embed_kind: String => "String",
        /// The external link card's URI (also inside `recordWithMedia`).
        external_uri: String => "String",
        /// Images (or gallery items) embedded, also inside `recordWithMedia`; at most 255.
        image_count: u8 => "UInt8",
        /// Mentioned DIDs (facets, then legacy `entities`), deduplicated in order.
        mentions: Vec<String> => "Array(String)",
        /// Linked URIs (facets, then legacy `entities`), deduplicated in order.
        links: Vec<String> => "Array(String)",
        /// Hashtags: facet tags, then the `tags` field, deduplicated in order
        /// (case kept, no `#`).
        tags: Vec<String> => "Array(String)",
        /// Self-label values (`labels.values[].val`).
        labels: Vec<String> => "Array(String)",
    }

    /// A like of a post (or of a feed generator, a list…).
    Likes => LikeRow, likes, "likes", "app.bsky.feed.like", crate::feed::like {
        /// `subject.uri`.
        subject_uri: String => "String",
        /// `subject.cid`.
        subject_cid: String => "String",
        /// The authority of `subject.uri` when it is a DID (`""` for a handle).
        subject_did: String => "String",
        /// `via.uri`: the repost through which the subject was liked (`""` if none).
        via_uri: String => "String",
    }

    /// A repost.
    Reposts => RepostRow, reposts, "reposts", "app.bsky.feed.repost", crate::feed::repost {
        /// `subject.uri`.
        subject_uri: String => "String",
        /// `subject.cid`.
        subject_cid: String => "String",
        /// The authority of `subject.uri` when it is a DID (`""` for a handle).
        subject_did: String => "String",
        /// `via.uri`: the repost through which the subject was reposted (`""` if none).
        via_uri: String => "String",
    }

    /// A follow.
    Follows => FollowRow, follows, "follows", "app.bsky.graph.follow", crate::graph::follow {
        /// The followed DID (`subject`).
        subject_did: String => "String",
        /// `via.uri`: the starter pack (or other record) the follow came from (`""` if none).
        via_uri: String => "String",
    }

    /// A block.
    Blocks => BlockRow, blocks, "blocks", "app.bsky.graph.block", crate::graph::block {
        /// The blocked DID (`subject`).
        subject_did: String => "String",
    }

    /// A profile (rkey `self`).
    Profiles => ProfileRow, profiles, "profiles", "app.bsky.actor.profile", crate::actor::profile {
        /// `displayName`.
        display_name: String => "String",
        /// `description`.
        description: String => "String",
        /// `pronouns`.
        pronouns: String => "String",
        /// `website`.
        website: String => "String",
        /// The avatar blob's CID.
        avatar_cid: String => "String",
        /// The banner blob's CID.
        banner_cid: String => "String",
        /// `pinnedPost.uri`.
        pinned_post_uri: String => "String",
        /// `joinedViaStarterPack.uri`.
        joined_via_starter_pack_uri: String => "String",
        /// Self-label values.
        labels: Vec<String> => "Array(String)",
    }

    /// A list of accounts (moderation, curation or reference).
    Lists => ListRow, lists, "lists", "app.bsky.graph.list", crate::graph::list {
        /// `name`.
        name: String => "String",
        /// `purpose`, as written (`app.bsky.graph.defs#curatelist`, …).
        purpose: String => "String",
        /// `description`.
        description: String => "String",
        /// The avatar blob's CID.
        avatar_cid: String => "String",
        /// Self-label values.
        labels: Vec<String> => "Array(String)",
    }

    /// Membership of an account in a list.
    ListItems => ListItemRow, list_items, "list_items", "app.bsky.graph.listitem", crate::graph::list_item {
        /// The list's AT-URI (`list`).
        list_uri: String => "String",
        /// The member's DID (`subject`).
        subject_did: String => "String",
    }

    /// A block of every account on a (moderation) list.
    ListBlocks => ListBlockRow, list_blocks, "list_blocks", "app.bsky.graph.listblock", crate::graph::list_block {
        /// The blocked list's AT-URI (`subject`).
        subject_list_uri: String => "String",
    }

    /// A starter pack.
    StarterPacks => StarterPackRow, starter_packs, "starter_packs", "app.bsky.graph.starterpack", crate::graph::starter_pack {
        /// `name`.
        name: String => "String",
        /// `description`.
        description: String => "String",
        /// The list of accounts (`list`).
        list_uri: String => "String",
        /// Feed generator URIs (`feeds[].uri`).
        feeds: Vec<String> => "Array(String)",
    }

    /// A feed generator declaration.
    FeedGenerators => FeedGeneratorRow, feed_generators, "feed_generators", "app.bsky.feed.generator", crate::feed::generator {
        /// The service DID that serves the feed (`did`).
        service_did: String => "String",
        /// `displayName`.
        display_name: String => "String",
        /// `description`.
        description: String => "String",
        /// The avatar blob's CID.
        avatar_cid: String => "String",
        /// `acceptsInteractions` (0 when absent).
        accepts_interactions: u8 => "UInt8",
        /// `contentMode`, as written (`""` when absent).
        content_mode: String => "String",
        /// Self-label values.
        labels: Vec<String> => "Array(String)",
    }

    /// Reply controls of a thread (rkey = the root post's rkey).
    Threadgates => ThreadgateRow, threadgates, "threadgates", "app.bsky.feed.threadgate", crate::feed::threadgate {
        /// The gated post (`post`).
        post_uri: String => "String",
        /// 1 when the record has `allow`: then only the rules in `allow` may
        /// reply (nobody if it is empty). 0: anybody may reply.
        allow_set: u8 => "UInt8",
        /// The rules: `mentionRule`, `followerRule`, `followingRule`, and
        /// `list:<list AT-URI>` for each list rule; a foreign `$type` is kept whole.
        allow: Vec<String> => "Array(String)",
        /// Replies hidden by the author (`hiddenReplies`).
        hidden_replies: Vec<String> => "Array(String)",
    }

    /// Embedding controls of a post (rkey = the post's rkey).
    Postgates => PostgateRow, postgates, "postgates", "app.bsky.feed.postgate", crate::feed::postgate {
        /// The post (`post`).
        post_uri: String => "String",
        /// Quote posts detached by the author (`detachedEmbeddingUris`).
        detached_embedding_uris: Vec<String> => "Array(String)",
        /// 1 when `embeddingRules` has a `#disableRule`.
        disable_embedding: u8 => "UInt8",
    }

    /// A verification of another account by a trusted verifier.
    Verifications => VerificationRow, verifications, "verifications", "app.bsky.graph.verification", crate::graph::verification {
        /// The verified DID (`subject`).
        subject_did: String => "String",
        /// The handle verified, at the time of verification.
        handle: String => "String",
        /// The display name verified, at the time of verification.
        display_name: String => "String",
    }

    /// A labeler's service declaration (rkey `self`).
    LabelerServices => LabelerServiceRow, labeler_services, "labeler_services", "app.bsky.labeler.service", crate::labeler::service {
        /// The label values it publishes (`policies.labelValues`).
        labels: Vec<String> => "Array(String)",
    }

    /// An account's status, e.g. live (rkey `self`).
    ActorStatuses => ActorStatusRow, actor_statuses, "actor_statuses", "app.bsky.actor.status", crate::actor::status {
        /// `status`, as written (`app.bsky.actor.status#live`).
        status: String => "String",
        /// The external link's URI (`embed.external.uri`).
        embed_uri: String => "String",
        /// `durationMinutes` (0 when absent; clamped to the UInt32 range).
        duration_minutes: u32 => "UInt32",
    }

    /// Who may start a chat with the account (rkey `self`).
    ChatDeclarations => ChatDeclarationRow, chat_declarations, "chat_declarations", "chat.bsky.actor.declaration", crate::actor::chat_declaration {
        /// `allowIncoming` (`all`, `none`, `following`).
        allow_incoming: String => "String",
        /// `allowGroupInvites` (`""` when absent).
        allow_group_invites: String => "String",
    }

    /// Who may subscribe to the account's activity (rkey `self`).
    NotificationDeclarations => NotificationDeclarationRow, notification_declarations, "notification_declarations", "app.bsky.notification.declaration", crate::actor::notification_declaration {
        /// `allowSubscriptions` (`followers`, `mutuals`, `none`).
        allow_subscriptions: String => "String",
    }

    /// Whether the account asks to be left out of algorithmic recommendations (rkey `self`).
    ContentVisibilityDeclarations => ContentVisibilityDeclarationRow, content_visibility_declarations, "content_visibility_declarations", "app.bsky.actor.contentVisibilityDeclaration", crate::actor::content_visibility {
        /// `hideFromAlgorithmicRecommendations` as 0/1.
        hide_from_algorithmic_recommendations: u8 => "UInt8",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(127), 1);
        assert_eq!(varint_len(128), 2);
        assert_eq!(varint_len(16_383), 2);
        assert_eq!(varint_len(16_384), 3);
    }

    #[test]
    fn tables_round_trip() {
        for &t in Table::ALL {
            assert_eq!(Table::for_collection(t.collection()), Some(t));
            let names: Vec<&str> = t.columns().iter().map(|c| c.0).collect();
            assert_eq!(names, t.row_column_names(), "{}", t.name());
        }
        assert_eq!(Table::for_collection("app.bsky.feed.nope"), None);
    }
}
