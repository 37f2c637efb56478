//! CAR v1 files: a header naming the root CIDs, then `varint(len) CID bytes`
//! blocks.
//!
//! [`CarReader`] streams blocks from any `Read` with every length checked
//! against a per-block cap before anything is allocated. [`BlockStore`]
//! collects blocks for random access (the MST walk needs it) into one arena;
//! once the arena passes the configured memory cap it spills further blocks
//! to an anonymous temporary file, so memory is bounded by the cap (plus a
//! small per-block index), not by the size of the repository.

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::sync::Arc;

use crate::cbor::{self, Value};
use crate::cid::{Cid, CidError};

/// Largest block accepted by default: the atproto repository spec caps
/// records at 1 MiB of CBOR; MST nodes and commits are far smaller. Blobs are
/// never in repository CARs.
pub const DEFAULT_MAX_BLOCK: usize = 2 << 20;

/// Largest CAR header accepted (it only holds a version and a few root CIDs).
const MAX_HEADER: u64 = 64 << 10;

/// Why a CAR could not be read. Every variant names the byte offset (or CID)
/// where the problem is, so a one-line error is enough to find it.
#[derive(Debug, thiserror::Error)]
pub enum CarError {
    /// Reading the underlying file or stream failed.
    #[error("reading CAR at byte {offset}: {source}")]
    Io {
        /// Offset of the read that failed.
        offset: u64,
        /// The I/O error.
        source: io::Error,
    },
    /// The input ended inside the header or a block.
    #[error("truncated CAR at byte {offset}: {what}")]
    Truncated {
        /// Offset where more bytes were expected.
        offset: u64,
        /// What was being read.
        what: &'static str,
    },
    /// The header is not a CARv1 header.
    #[error("bad CAR header: {0}")]
    Header(String),
    /// A length varint is malformed or absurd.
    #[error("bad block length at byte {offset}: {reason}")]
    Length {
        /// Offset of the varint.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// A block's CID could not be parsed.
    #[error("bad CID at byte {offset}: {source}")]
    Cid {
        /// Offset of the CID.
        offset: u64,
        /// The CID error.
        source: CidError,
    },
    /// A block's bytes do not hash to its CID.
    #[error("block {cid} at byte {offset} does not match its CID")]
    HashMismatch {
        /// The CID claimed.
        cid: Cid,
        /// Offset of the block.
        offset: u64,
    },
    /// A block exceeds the per-block size cap.
    #[error("block at byte {offset} is {len} bytes, over the {max}-byte cap")]
    BlockTooLarge {
        /// Offset of the block.
        offset: u64,
        /// Its declared length.
        len: u64,
        /// The cap.
        max: usize,
    },
    /// The whole CAR exceeds the total size cap.
    #[error("CAR exceeds the {max}-byte size cap at byte {offset}")]
    TooLarge {
        /// Offset reached.
        offset: u64,
        /// The cap.
        max: u64,
    },
}

/// Limits and checks applied while reading a CAR.
#[derive(Debug, Clone)]
pub struct CarOptions {
    /// Largest single block, in bytes. Default [`DEFAULT_MAX_BLOCK`].
    pub max_block: usize,
    /// Largest whole CAR, in bytes (`u64::MAX`: no cap). Default: no cap.
    pub max_total: u64,
    /// Block bytes kept in memory before spilling to a temporary file.
    /// Default 256 MiB; `usize::MAX` never spills.
    pub memory_cap: usize,
    /// Check every block's sha2-256 against its CID. Default true: a CAR from
    /// the network is untrusted, and with SHA-NI this costs a few percent.
    pub verify_hashes: bool,
    /// The CAR's size, when known in advance (a file, a `Content-Length`),
    /// used to allocate once. Default none.
    pub size_hint: Option<u64>,
}

impl Default for CarOptions {
    fn default() -> Self {
        CarOptions {
            max_block: DEFAULT_MAX_BLOCK,
            max_total: u64::MAX,
            memory_cap: 256 << 20,
            verify_hashes: true,
            size_hint: None,
        }
    }
}

impl CarOptions {
    /// Check a block's declared length (at `start`, its data from `data_at`)
    /// against the caps, before anything is allocated or read.
    fn check_len(&self, start: u64, data_at: u64, len: u64) -> Result<(), CarError> {
        if len > self.max_block as u64 + 64 {
            return Err(CarError::BlockTooLarge {
                offset: start,
                len,
                max: self.max_block,
            });
        }
        if data_at + len > self.max_total {
            return Err(CarError::TooLarge {
                offset: data_at,
                max: self.max_total,
            });
        }
        Ok(())
    }

    /// Parse the CID at the front of `block` (found at byte `at`) and check
    /// the rest hashes to it. Returns the CID and its length.
    fn check_block(&self, start: u64, at: u64, block: &[u8]) -> Result<(Cid, usize), CarError> {
        let (cid, used) =
            Cid::read_bytes(block).map_err(|source| CarError::Cid { offset: at, source })?;
        if self.verify_hashes && !cid.matches(&block[used..]) {
            return Err(CarError::HashMismatch { cid, offset: start });
        }
        Ok((cid, used))
    }
}

/// A streaming reader of CAR v1 blocks.
#[derive(Debug)]
pub struct CarReader<R> {
    inner: R,
    offset: u64,
    roots: Roots,
    opts: CarOptions,
}

impl<R: Read> CarReader<R> {
    /// Read and check the header. Wrap unbuffered readers in `BufReader`.
    pub fn new(mut inner: R, opts: CarOptions) -> Result<Self, CarError> {
        let mut offset = 0u64;
        let len = read_varint(&mut inner, &mut offset)?.ok_or(CarError::Truncated {
            offset: 0,
            what: "header length",
        })?;
        if len == 0 || len > MAX_HEADER {
            return Err(CarError::Header(format!(
                "header length {len} out of range"
            )));
        }
        let mut buf = vec![0u8; len as usize];
        read_exact(&mut inner, &mut buf, &mut offset, "header")?;
        let roots = header_roots(&buf)?;
        Ok(CarReader {
            inner,
            offset,
            roots,
            opts,
        })
    }

    /// The root CIDs named by the header (a repository CAR has one: the commit).
    pub fn roots(&self) -> &[Cid] {
        self.roots.as_slice()
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Read the next block, using `buf` as storage. Returns its CID and bytes;
    /// `Ok(None)` at a clean end of input.
    pub fn next_block<'b>(
        &mut self,
        buf: &'b mut Vec<u8>,
    ) -> Result<Option<(Cid, &'b [u8])>, CarError> {
        buf.clear();
        match self.append_block(buf)? {
            Some((cid, range)) => Ok(Some((cid, &buf[range]))),
            None => Ok(None),
        }
    }

    /// Read the next block onto the end of `dst`; returns its CID and where its
    /// data sits in `dst`. On error `dst` may hold a partial block.
    fn append_block(
        &mut self,
        dst: &mut Vec<u8>,
    ) -> Result<Option<(Cid, std::ops::Range<usize>)>, CarError> {
        let start = self.offset;
        let Some(len) = read_varint(&mut self.inner, &mut self.offset)? else {
            return Ok(None);
        };
        self.opts.check_len(start, self.offset, len)?;
        let base = dst.len();
        dst.resize(base + len as usize, 0);
        let cid_offset = self.offset;
        read_exact(&mut self.inner, &mut dst[base..], &mut self.offset, "block")?;
        let (cid, used) = self.opts.check_block(start, cid_offset, &dst[base..])?;
        let range = base + used..dst.len();
        Ok(Some((cid, range)))
    }
}

fn read_exact<R: Read>(
    r: &mut R,
    buf: &mut [u8],
    offset: &mut u64,
    what: &'static str,
) -> Result<(), CarError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => {
                return Err(CarError::Truncated {
                    offset: *offset + filled as u64,
                    what,
                })
            }
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(CarError::Io {
                    offset: *offset + filled as u64,
                    source,
                })
            }
        }
    }
    *offset += buf.len() as u64;
    Ok(())
}

/// Add byte `i` (`b`) of an unsigned LEB128 varint to `value`; `Ok(true)`
/// when it was the last byte. The multiformats varint spec (which CAR uses)
/// requires the shortest form: a last byte of zero after the first is
/// refused (as iroh-car refuses it), and so is a value past 64 bits.
#[inline]
fn varint_byte(value: &mut u64, i: usize, b: u8) -> Result<bool, &'static str> {
    if i == 9 && b > 1 {
        return Err("varint overflows 64 bits");
    }
    *value |= u64::from(b & 0x7f) << (7 * i);
    if b & 0x80 != 0 {
        return Ok(false);
    }
    if b == 0 && i > 0 {
        return Err("varint is not minimal");
    }
    Ok(true)
}

/// Read an unsigned LEB128 varint; `None` on a clean EOF before its first byte.
fn read_varint<R: Read>(r: &mut R, offset: &mut u64) -> Result<Option<u64>, CarError> {
    let start = *offset;
    let mut value = 0u64;
    for i in 0..10 {
        let mut b = [0u8; 1];
        loop {
            match r.read(&mut b) {
                Ok(0) if i == 0 => return Ok(None),
                Ok(0) => {
                    return Err(CarError::Truncated {
                        offset: *offset,
                        what: "length varint",
                    })
                }
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => {
                    return Err(CarError::Io {
                        offset: *offset,
                        source,
                    })
                }
            }
        }
        *offset += 1;
        match varint_byte(&mut value, i, b[0]) {
            Ok(true) => return Ok(Some(value)),
            Ok(false) => {}
            Err(reason) => {
                return Err(CarError::Length {
                    offset: start,
                    reason: reason.into(),
                })
            }
        }
    }
    Err(CarError::Length {
        offset: start,
        reason: "varint longer than 10 bytes".into(),
    })
}

/// An unsigned LEB128 varint from the front of `buf` (at byte `start` of
/// the CAR): its value and length.
fn slice_varint(buf: &[u8], start: u64) -> Result<(u64, usize), CarError> {
    let mut value = 0u64;
    for (i, &b) in buf.iter().take(10).enumerate() {
        match varint_byte(&mut value, i, b) {
            Ok(true) => return Ok((value, i + 1)),
            Ok(false) => {}
            Err(reason) => {
                return Err(CarError::Length {
                    offset: start,
                    reason: reason.into(),
                })
            }
        }
    }
    // Only an input ending inside the varint gets here.
    Err(CarError::Truncated {
        offset: start + buf.len() as u64,
        what: "length varint",
    })
}

/// Hash CIDs by their digest: already uniformly distributed, so SipHash
/// would only cost time. `Cid`'s `Hash` writes one u64 from the digest.
#[derive(Default, Clone, Copy, Debug)]
pub struct CidHasher(u64);

impl Hasher for CidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only reached for keys other than `Cid` and `u64`.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

/// A `HashMap` keyed by CID with the digest-based hasher.
pub type CidMap<V> = HashMap<Cid, V, BuildHasherDefault<CidHasher>>;

/// Where a block is: its bytes (CID then data, exactly as in the CAR) start
/// at `offset` in the arena or the spill file. Keeping the CID beside the data
/// lets a lookup confirm the full CID with the cache line it reads anyway.
#[derive(Debug, Clone, Copy)]
struct Slot {
    offset: u64,
    data_len: u32,
    cid_len: u8,
    spilled: bool,
}

/// Where in-memory block bytes live: an arena we filled, or the caller's
/// whole CAR shared without a copy (as it had it: a shared slice, or a
/// vector it handed over).
#[derive(Debug)]
enum Arena {
    Owned(Vec<u8>),
    Shared(Arc<[u8]>),
    SharedVec(Arc<Vec<u8>>),
}

impl Arena {
    fn bytes(&self) -> &[u8] {
        match self {
            Arena::Owned(v) => v,
            Arena::Shared(a) => a,
            Arena::SharedVec(v) => v,
        }
    }
}

/// Blocks of a CAR, addressable by CID, within a memory cap.
///
/// The index is compact on purpose (a u64 of the digest → a 16-byte slot) so
/// it stays in cache during the walk's random lookups. The full CID, stored
/// just before the block's data, settles the rare (or adversarial) clash of
/// 64-bit keys; a clashing block then lives in a small overflow map.
#[derive(Debug)]
pub struct BlockStore {
    index: HashMap<u64, Slot, BuildHasherDefault<CidHasher>>,
    overflow: CidMap<Slot>,
    order: Vec<Cid>,
    arena: Arena,
    memory_cap: usize,
    spill: Option<File>,
    spill_len: u64,
    scratch: std::cell::RefCell<Vec<u8>>,
}

fn key64(cid: &Cid) -> u64 {
    let mut h = CidHasher::default();
    std::hash::Hash::hash(cid, &mut h);
    h.finish()
}

impl BlockStore {
    /// An empty store that keeps up to `memory_cap` bytes of blocks in memory.
    pub fn new(memory_cap: usize) -> Self {
        BlockStore {
            index: HashMap::default(),
            overflow: CidMap::default(),
            order: Vec::new(),
            arena: Arena::Owned(Vec::new()),
            memory_cap,
            spill: None,
            spill_len: 0,
            scratch: Default::default(),
        }
    }

    /// The CID bytes stored at a slot (arena only; spilled slots say `None`).
    fn slot_cid(&self, slot: &Slot) -> Option<&[u8]> {
        if slot.spilled {
            return None;
        }
        let s = slot.offset as usize;
        Some(&self.arena.bytes()[s..s + slot.cid_len as usize])
    }

    #[inline]
    fn find(&self, cid: &Cid) -> Option<Slot> {
        if let Some(slot) = self.index.get(&key64(cid)) {
            match self.slot_cid(slot) {
                Some(bytes) if bytes == cid.as_bytes() => return Some(*slot),
                Some(_) => {}
                // Spilled: confirm from the file.
                None => {
                    let mut buf = [0u8; 64];
                    let n = slot.cid_len as usize;
                    if let Some(f) = &self.spill {
                        if read_at(f, &mut buf[..n], slot.offset).is_ok()
                            && &buf[..n] == cid.as_bytes()
                        {
                            return Some(*slot);
                        }
                    }
                }
            }
        }
        self.overflow.get(cid).copied()
    }

    /// Record a slot; `false` if the CID is already present (first copy wins:
    /// same CID, same bytes).
    fn add_slot(&mut self, cid: Cid, slot: Slot) -> bool {
        let key = key64(&cid);
        let clash = match self.index.get(&key) {
            None => false,
            Some(existing) => {
                let existing = *existing;
                let same = match self.slot_cid(&existing) {
                    Some(bytes) => bytes == cid.as_bytes(),
                    None => self.find(&cid).is_some(),
                };
                if same {
                    return false;
                }
                true
            }
        };
        if clash {
            if self.overflow.contains_key(&cid) {
                return false;
            }
            self.overflow.insert(cid, slot);
        } else {
            self.index.insert(key, slot);
        }
        self.order.push(cid);
        true
    }

    /// Index a whole CAR already in memory, without copying its blocks: the
    /// store keeps a reference to `car`. Returns the roots and the store.
    pub fn from_shared(car: Arc<[u8]>, opts: CarOptions) -> Result<(Vec<Cid>, Self), CarError> {
        BlockStore::index_whole(&car.clone(), Arena::Shared(car), opts)
    }

    /// [`BlockStore::from_shared`] for a CAR read into a vector, kept as it
    /// is (an `Arc<[u8]>` of it would be a copy of every byte, in memory
    /// faulted in anew).
    pub fn from_vec(car: Vec<u8>, opts: CarOptions) -> Result<(Vec<Cid>, Self), CarError> {
        let car = Arc::new(car);
        BlockStore::index_whole(&car.clone(), Arena::SharedVec(car), opts)
    }

    /// Index `car`, which `arena` holds, in place.
    fn index_whole(
        car: &[u8],
        arena: Arena,
        opts: CarOptions,
    ) -> Result<(Vec<Cid>, Self), CarError> {
        let mut store = BlockStore::new(usize::MAX);
        store.arena = arena;
        store.order.reserve(car.len() / 256);
        store.index.reserve(car.len() / 256);
        let roots = walk_slice(car, opts, |cid, offset, cid_len, data_len| {
            let slot = Slot {
                offset: offset as u64,
                data_len: data_len as u32,
                cid_len: cid_len as u8,
                spilled: false,
            };
            store.add_slot(cid, slot);
        })?;
        Ok((roots.into_vec(), store))
    }

    /// Read every block of `reader` into a store. Blocks land straight in the
    /// arena while it is under the memory cap, then go to the spill file.
    pub fn from_car<R: Read>(reader: &mut CarReader<R>) -> Result<Self, CarError> {
        let mut store = BlockStore::new(reader.opts.memory_cap);
        let mut arena = Vec::new();
        if let Some(hint) = reader.opts.size_hint {
            arena.reserve_exact(hint.min(store.memory_cap as u64) as usize);
            // Typical repositories average a few hundred bytes per block.
            store.order.reserve((hint / 256) as usize);
            store.index.reserve((hint / 256) as usize);
        }
        let mut scratch = Vec::new();
        loop {
            let offset = reader.offset;
            if arena
                .len()
                .saturating_add(reader.opts.max_block)
                .saturating_add(128)
                <= store.memory_cap
            {
                let base = arena.len();
                let Some((cid, range)) = reader.append_block(&mut arena)? else {
                    break;
                };
                let cid_len = cid.as_bytes().len();
                let slot = Slot {
                    offset: (range.start - cid_len) as u64,
                    data_len: range.len() as u32,
                    cid_len: cid_len as u8,
                    spilled: false,
                };
                // The store must see the arena to confirm CIDs: lend it for the insert.
                store.arena = Arena::Owned(std::mem::take(&mut arena));
                let added = store.add_slot(cid, slot);
                if let Arena::Owned(v) = &mut store.arena {
                    arena = std::mem::take(v);
                }
                if !added {
                    arena.truncate(base);
                }
            } else {
                scratch.clear();
                let Some((cid, range)) = reader.append_block(&mut scratch)? else {
                    break;
                };
                store
                    .spill_block(cid, &scratch[range])
                    .map_err(|source| CarError::Io { offset, source })?;
            }
        }
        store.arena = Arena::Owned(arena);
        Ok(store)
    }

    fn spill_block(&mut self, cid: Cid, data: &[u8]) -> io::Result<()> {
        if self.find(&cid).is_some() {
            return Ok(());
        }
        let file = match &mut self.spill {
            Some(f) => f,
            None => self.spill.insert(tempfile()?),
        };
        file.seek(SeekFrom::Start(self.spill_len))?;
        file.write_all(cid.as_bytes())?;
        file.write_all(data)?;
        let offset = self.spill_len;
        let cid_len = cid.as_bytes().len();
        self.spill_len += (cid_len + data.len()) as u64;
        self.add_slot(
            cid,
            Slot {
                offset,
                data_len: data.len() as u32,
                cid_len: cid_len as u8,
                spilled: true,
            },
        );
        Ok(())
    }

    /// Add a block (a repeated CID keeps its first copy: same CID, same bytes).
    pub fn insert(&mut self, cid: Cid, data: &[u8]) -> io::Result<()> {
        if self.find(&cid).is_some() {
            return Ok(());
        }
        let fits = match &self.arena {
            Arena::Owned(v) => v.len().saturating_add(data.len() + 64) <= self.memory_cap,
            Arena::Shared(_) | Arena::SharedVec(_) => false,
        };
        if let (true, Arena::Owned(v)) = (fits, &mut self.arena) {
            let offset = v.len() as u64;
            v.extend_from_slice(cid.as_bytes());
            v.extend_from_slice(data);
            let cid_len = cid.as_bytes().len() as u8;
            self.add_slot(
                cid,
                Slot {
                    offset,
                    data_len: data.len() as u32,
                    cid_len,
                    spilled: false,
                },
            );
            return Ok(());
        }
        self.spill_block(cid, data)
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// Whether any block went to the spill file.
    pub fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Whether the store has `cid`.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.find(cid).is_some()
    }

    /// The CIDs of every block, in CAR order.
    pub fn cids(&self) -> impl Iterator<Item = &Cid> {
        self.order.iter()
    }

    /// Call `f` with the bytes of `cid` (`None` if absent). Spilled blocks are
    /// read into a scratch buffer, so `f` must not call back into the store.
    #[inline]
    pub fn with_block<T>(&self, cid: &Cid, f: impl FnOnce(Option<&[u8]>) -> T) -> io::Result<T> {
        let Some(slot) = self.find(cid) else {
            return Ok(f(None));
        };
        let data_start = slot.offset + u64::from(slot.cid_len);
        if !slot.spilled {
            let s = data_start as usize;
            return Ok(f(Some(&self.arena.bytes()[s..s + slot.data_len as usize])));
        }
        let mut scratch = self.scratch.borrow_mut();
        scratch.resize(slot.data_len as usize, 0);
        read_at(
            self.spill
                .as_ref()
                .ok_or_else(|| io::Error::other("spill file missing"))?,
            &mut scratch,
            data_start,
        )?;
        Ok(f(Some(&scratch)))
    }

    /// A copy of the bytes of `cid`.
    pub fn get(&self, cid: &Cid) -> io::Result<Option<Vec<u8>>> {
        self.with_block(cid, |b| b.map(<[u8]>::to_vec))
    }
}

#[cfg(unix)]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    use std::os::unix::fs::FileExt;
    file.read_exact_at(buf, offset)
}

#[cfg(not(unix))]
fn read_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let mut f = file.try_clone()?;
    f.seek(SeekFrom::Start(offset))?;
    f.read_exact(buf)
}

/// An unnamed temporary file: created in the temp dir and unlinked at once,
/// so it disappears with the process even on `kill -9`.
fn tempfile() -> io::Result<File> {
    let dir = std::env::temp_dir();
    for attempt in 0..16u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = dir.join(format!(
            "skyhouse-car-{}-{nanos}-{attempt}.spill",
            std::process::id()
        ));
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => {
                let _ = std::fs::remove_file(&path);
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("could not create a spill file"))
}

/// Read a whole CAR held in memory: roots and blocks (one copy of `bytes`;
/// use [`BlockStore::from_shared`] to avoid it).
pub fn read_car_bytes(bytes: &[u8], opts: CarOptions) -> Result<(Vec<Cid>, BlockStore), CarError> {
    BlockStore::from_shared(Arc::from(bytes), opts)
}

/// The roots of a CAR header: one (a repository's or a firehose commit's
/// CAR) held inline, any other number in a vector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Roots {
    One([Cid; 1]),
    Many(Vec<Cid>),
}

impl Roots {
    fn as_slice(&self) -> &[Cid] {
        match self {
            Roots::One(one) => one,
            Roots::Many(many) => many,
        }
    }

    fn into_vec(self) -> Vec<Cid> {
        match self {
            Roots::One(one) => one.to_vec(),
            Roots::Many(many) => many,
        }
    }
}

/// The roots of a CAR header (its DAG-CBOR bytes), version 1 only.
fn header_roots(buf: &[u8]) -> Result<Roots, CarError> {
    match plain_header_root(buf) {
        Some(root) => Ok(Roots::One([root])),
        None => header_roots_general(buf).map(Roots::Many),
    }
}

/// The root of a header in the usual form, `{roots: [one CID], version: 1}`
/// in canonical order with nothing else, read in place; `None` for
/// anything else, which [`header_roots_general`] reads or refuses.
fn plain_header_root(buf: &[u8]) -> Option<Cid> {
    let mut d = cbor::Decoder::new(buf);
    if d.map_len()? != 2 {
        return None;
    }
    let mut last = None;
    if d.key_after(&mut last)? != "roots" {
        return None;
    }
    let (major, roots, _) = d.head().ok()?;
    if (major, roots) != (4, 1) {
        return None;
    }
    let root = d.link_or_null().ok()??;
    if d.key_after(&mut last)? != "version" {
        return None;
    }
    let (major, version, _) = d.head().ok()?;
    ((major, version) == (0, 1) && d.at_end()).then_some(root)
}

/// [`header_roots`] through the DAG-CBOR value tree, for any header.
fn header_roots_general(buf: &[u8]) -> Result<Vec<Cid>, CarError> {
    let header = cbor::decode(buf).map_err(|e| CarError::Header(e.to_string()))?;
    match header.get("version").and_then(Value::as_i64) {
        Some(1) => {}
        Some(v) => return Err(CarError::Header(format!("unsupported CAR version {v}"))),
        None => return Err(CarError::Header("no version".into())),
    }
    header
        .get("roots")
        .and_then(Value::as_array)
        .ok_or_else(|| CarError::Header("no roots array".into()))?
        .iter()
        .map(|r| {
            r.as_link()
                .copied()
                .ok_or_else(|| CarError::Header("root is not a CID".into()))
        })
        .collect()
}

/// Every block of a CAR held in memory, in order: `f(cid, offset of the
/// block's CID, CID length, data length)`, after its length and CID (and,
/// with `verify_hashes`, its hash) are checked. Returns the roots.
fn walk_slice(
    car: &[u8],
    opts: CarOptions,
    mut f: impl FnMut(Cid, usize, usize, usize),
) -> Result<Roots, CarError> {
    // The header, read in place (`CarReader::new` copies it out of a reader).
    let (len, used) = match slice_varint(car, 0) {
        Ok(v) => v,
        Err(_) if car.is_empty() => {
            return Err(CarError::Truncated {
                offset: 0,
                what: "header length",
            })
        }
        Err(e) => return Err(e),
    };
    if len == 0 || len > MAX_HEADER {
        return Err(CarError::Header(format!(
            "header length {len} out of range"
        )));
    }
    let Some(header) = car.get(used..used + len as usize) else {
        return Err(CarError::Truncated {
            offset: car.len() as u64,
            what: "header",
        });
    };
    let roots = header_roots(header)?;
    let mut pos = used + len as usize;
    while pos < car.len() {
        let start = pos as u64;
        let (len, used) = slice_varint(&car[pos..], start)?;
        pos += used;
        opts.check_len(start, pos as u64, len)?;
        let Some(block) = car.get(pos..pos + len as usize) else {
            return Err(CarError::Truncated {
                offset: car.len() as u64,
                what: "block",
            });
        };
        let (cid, cid_len) = opts.check_block(start, pos as u64, block)?;
        f(cid, pos, cid_len, block.len() - cid_len);
        pos += len as usize;
    }
    Ok(roots)
}

/// The blocks of a small CAR in memory (a firehose commit's slice),
/// borrowed from it: no copy and no hash table. Blocks are not hashed
/// unless `opts.verify_hashes`; check the ones read with [`Cid::matches`].
#[derive(Debug)]
pub struct CarSlice<'a> {
    roots: Roots,
    /// (CID, data): in CAR order up to [`CarSlice::SCAN`] blocks (searched
    /// from the start), sorted by CID beyond (searched by halves); of
    /// repeated CIDs, the first in the CAR is found either way.
    blocks: Vec<(Cid, &'a [u8])>,
}

impl<'a> CarSlice<'a> {
    /// Read the header and index every block of `car`.
    pub fn parse(car: &'a [u8], opts: CarOptions) -> Result<Self, CarError> {
        let mut blocks = Vec::with_capacity(car.len() / 256 + 1);
        let roots = walk_slice(car, opts, |cid, at, cid_len, data_len| {
            blocks.push((cid, &car[at + cid_len..at + cid_len + data_len]));
        })?;
        if blocks.len() > Self::SCAN {
            // Stable: equal CIDs keep their CAR order.
            blocks.sort_by_key(|a| a.0);
        }
        Ok(CarSlice { roots, blocks })
    }

    /// Up to this many blocks (a typical commit has 5–15) a search from the
    /// start costs less than sorting.
    const SCAN: usize = 32;

    /// The roots from the header.
    pub fn roots(&self) -> &[Cid] {
        self.roots.as_slice()
    }

    /// The data of `cid`'s block (the first, if the CAR repeats it).
    pub fn get(&self, cid: &Cid) -> Option<&'a [u8]> {
        if self.blocks.len() <= Self::SCAN {
            let want = cid.as_bytes();
            return self
                .blocks
                .iter()
                .find(|(c, _)| c.as_bytes() == want)
                .map(|&(_, data)| data);
        }
        let i = self.blocks.partition_point(|(c, _)| c < cid);
        self.blocks
            .get(i)
            .filter(|(c, _)| c == cid)
            .map(|&(_, data)| data)
    }

    /// How many blocks the CAR has.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the CAR has no block.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::tests::{commit_cars, each_damaged};

    /// The CAR header (without its length) of every real `#commit` frame.
    fn headers() -> Vec<Vec<u8>> {
        commit_cars()
            .iter()
            .map(|(_, car)| {
                let (len, used) = slice_varint(car, 0).expect("header length");
                car[used..used + len as usize].to_vec()
            })
            .collect()
    }

    fn general(buf: &[u8]) -> Result<Vec<Cid>, String> {
        header_roots_general(buf).map_err(|e| e.to_string())
    }

    #[test]
    fn every_real_car_header_is_read_in_place_as_the_value_tree_reads_it() {
        let headers = headers();
        assert_eq!(headers.len(), 148);
        for h in &headers {
            let root = plain_header_root(h).expect("the usual form");
            assert_eq!(Ok(vec![root]), general(h));
        }
    }

    #[test]
    fn a_damaged_car_header_reads_or_fails_as_the_value_tree_says() {
        let mut errors = 0;
        for h in headers().iter().take(3) {
            each_damaged(h, |g, at, how| {
                let want = general(g);
                if let Some(root) = plain_header_root(g) {
                    assert_eq!(Ok(vec![root]), want, "byte {at}, change {how}");
                }
                let got = header_roots(g).map(Roots::into_vec);
                assert_eq!(
                    got.map_err(|e| e.to_string()),
                    want,
                    "byte {at}, change {how}"
                );
                errors += usize::from(want.is_err());
            });
        }
        assert!(errors > 100, "{errors}");
    }

    #[test]
    fn a_header_with_other_than_one_root_or_another_key_is_read_the_general_way() {
        let cid = |n: u8| Cid::from_sha256(crate::cid::CODEC_DAG_CBOR, [n; 32]);
        let header = |roots: Vec<Cid>, extra: bool| {
            let mut m = cbor::Map::new();
            m.insert(
                "roots",
                Value::Array(roots.into_iter().map(Value::Link).collect()),
            );
            m.insert("version", Value::Integer(1));
            if extra {
                m.insert("x", Value::Null);
            }
            cbor::encode(&Value::Map(m))
        };
        for (roots, extra) in [
            (vec![], false),
            (vec![cid(1), cid(2)], false),
            (vec![cid(1)], true),
        ] {
            let h = header(roots.clone(), extra);
            assert_eq!(plain_header_root(&h), None);
            let got = header_roots(&h).map(Roots::into_vec);
            assert_eq!(got.map_err(|e| e.to_string()), Ok(roots));
        }
        let one = header(vec![cid(3)], false);
        assert_eq!(header_roots(&one).ok(), Some(Roots::One([cid(3)])));
    }
}
