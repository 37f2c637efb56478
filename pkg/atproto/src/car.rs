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
}

impl Default for CarOptions {
    fn default() -> Self {
        CarOptions { max_block: DEFAULT_MAX_BLOCK, max_total: u64::MAX, memory_cap: 256 << 20, verify_hashes: true }
    }
}

/// A streaming reader of CAR v1 blocks.
#[derive(Debug)]
pub struct CarReader<R> {
    inner: R,
    offset: u64,
    roots: Vec<Cid>,
    opts: CarOptions,
}

impl<R: Read> CarReader<R> {
    /// Read and check the header. Wrap unbuffered readers in `BufReader`.
    pub fn new(mut inner: R, opts: CarOptions) -> Result<Self, CarError> {
        let mut offset = 0u64;
        let len = read_varint(&mut inner, &mut offset)?
            .ok_or(CarError::Truncated { offset: 0, what: "header length" })?;
        if len == 0 || len > MAX_HEADER {
            return Err(CarError::Header(format!("header length {len} out of range")));
        }
        let mut buf = vec![0u8; len as usize];
        read_exact(&mut inner, &mut buf, &mut offset, "header")?;
        let header = cbor::decode(&buf).map_err(|e| CarError::Header(e.to_string()))?;
        match header.get("version").and_then(Value::as_i64) {
            Some(1) => {}
            Some(v) => return Err(CarError::Header(format!("unsupported CAR version {v}"))),
            None => return Err(CarError::Header("no version".into())),
        }
        let roots = header
            .get("roots")
            .and_then(Value::as_array)
            .ok_or_else(|| CarError::Header("no roots array".into()))?
            .iter()
            .map(|r| r.as_link().copied().ok_or_else(|| CarError::Header("root is not a CID".into())))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(CarReader { inner, offset, roots, opts })
    }

    /// The root CIDs named by the header (a repository CAR has one: the commit).
    pub fn roots(&self) -> &[Cid] {
        &self.roots
    }

    /// Bytes consumed so far.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Read the next block, using `buf` as storage. Returns its CID and bytes;
    /// `Ok(None)` at a clean end of input.
    pub fn next_block<'b>(&mut self, buf: &'b mut Vec<u8>) -> Result<Option<(Cid, &'b [u8])>, CarError> {
        let start = self.offset;
        let Some(len) = read_varint(&mut self.inner, &mut self.offset)? else {
            return Ok(None);
        };
        if len > self.opts.max_block as u64 + 64 {
            return Err(CarError::BlockTooLarge { offset: start, len, max: self.opts.max_block });
        }
        if self.offset + len > self.opts.max_total {
            return Err(CarError::TooLarge { offset: self.offset, max: self.opts.max_total });
        }
        buf.clear();
        buf.resize(len as usize, 0);
        let cid_offset = self.offset;
        read_exact(&mut self.inner, buf, &mut self.offset, "block")?;
        let (cid, used) =
            Cid::read_bytes(buf).map_err(|source| CarError::Cid { offset: cid_offset, source })?;
        let data = &buf[used..];
        if self.opts.verify_hashes && !cid.matches(data) {
            return Err(CarError::HashMismatch { cid, offset: start });
        }
        Ok(Some((cid, data)))
    }
}

fn read_exact<R: Read>(r: &mut R, buf: &mut [u8], offset: &mut u64, what: &'static str) -> Result<(), CarError> {
    let mut filled = 0;
    while filled < buf.len() {
        match r.read(&mut buf[filled..]) {
            Ok(0) => return Err(CarError::Truncated { offset: *offset + filled as u64, what }),
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => return Err(CarError::Io { offset: *offset + filled as u64, source }),
        }
    }
    *offset += buf.len() as u64;
    Ok(())
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
                Ok(0) => return Err(CarError::Truncated { offset: *offset, what: "length varint" }),
                Ok(_) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(source) => return Err(CarError::Io { offset: *offset, source }),
            }
        }
        *offset += 1;
        value |= u64::from(b[0] & 0x7f) << (7 * i);
        if b[0] & 0x80 == 0 {
            return Ok(Some(value));
        }
    }
    Err(CarError::Length { offset: start, reason: "varint longer than 10 bytes".into() })
}

/// Hash CIDs by their digest: they are already uniformly distributed, so
/// SipHash would only cost time.
#[derive(Default, Clone, Copy, Debug)]
pub struct CidHasher(u64);

impl Hasher for CidHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // `Cid`'s derived Hash writes the length byte then the 40-byte array;
        // take 8 bytes from inside the digest (offset 8 of the array).
        if bytes.len() >= 16 {
            let mut a = [0u8; 8];
            a.copy_from_slice(&bytes[8..16]);
            self.0 ^= u64::from_le_bytes(a);
        } else {
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }
    }
}

/// A `HashMap` keyed by CID with the digest-based hasher.
pub type CidMap<V> = HashMap<Cid, V, BuildHasherDefault<CidHasher>>;

#[derive(Debug, Clone, Copy)]
struct Slot {
    spilled: bool,
    offset: u64,
    len: u32,
}

/// Blocks of a CAR, addressable by CID, within a memory cap.
#[derive(Debug)]
pub struct BlockStore {
    index: CidMap<Slot>,
    arena: Vec<u8>,
    memory_cap: usize,
    spill: Option<File>,
    spill_len: u64,
    scratch: std::cell::RefCell<Vec<u8>>,
}

impl BlockStore {
    /// An empty store that keeps up to `memory_cap` bytes of blocks in memory.
    pub fn new(memory_cap: usize) -> Self {
        BlockStore {
            index: CidMap::default(),
            arena: Vec::new(),
            memory_cap,
            spill: None,
            spill_len: 0,
            scratch: Default::default(),
        }
    }

    /// Read every block of `reader` into a store. Returns the store.
    pub fn from_car<R: Read>(reader: &mut CarReader<R>) -> Result<Self, CarError> {
        let mut store = BlockStore::new(reader.opts.memory_cap);
        let mut buf = Vec::new();
        loop {
            let offset = reader.offset;
            let Some((cid, data)) = reader.next_block(&mut buf)? else { break };
            store.insert(cid, data).map_err(|source| CarError::Io { offset, source })?;
        }
        Ok(store)
    }

    /// Add a block (a repeated CID keeps its first copy: same CID, same bytes).
    pub fn insert(&mut self, cid: Cid, data: &[u8]) -> io::Result<()> {
        if self.index.contains_key(&cid) {
            return Ok(());
        }
        let slot = if self.arena.len() + data.len() <= self.memory_cap {
            let offset = self.arena.len() as u64;
            self.arena.extend_from_slice(data);
            Slot { spilled: false, offset, len: data.len() as u32 }
        } else {
            let file = match &mut self.spill {
                Some(f) => f,
                None => self.spill.insert(tempfile()?),
            };
            file.seek(SeekFrom::Start(self.spill_len))?;
            file.write_all(data)?;
            let offset = self.spill_len;
            self.spill_len += data.len() as u64;
            Slot { spilled: true, offset, len: data.len() as u32 }
        };
        self.index.insert(cid, slot);
        Ok(())
    }

    /// Number of blocks.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether there are no blocks.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Whether any block went to the spill file.
    pub fn spilled(&self) -> bool {
        self.spill.is_some()
    }

    /// Whether the store has `cid`.
    pub fn contains(&self, cid: &Cid) -> bool {
        self.index.contains_key(cid)
    }

    /// Call `f` with the bytes of `cid` (`None` if absent). Spilled blocks are
    /// read into a scratch buffer, so `f` must not call back into the store.
    pub fn with_block<T>(&self, cid: &Cid, f: impl FnOnce(Option<&[u8]>) -> T) -> io::Result<T> {
        let Some(slot) = self.index.get(cid) else {
            return Ok(f(None));
        };
        if !slot.spilled {
            let s = slot.offset as usize;
            return Ok(f(Some(&self.arena[s..s + slot.len as usize])));
        }
        let mut scratch = self.scratch.borrow_mut();
        scratch.resize(slot.len as usize, 0);
        read_at(self.spill.as_ref().ok_or_else(|| io::Error::other("spill file missing"))?, &mut scratch, slot.offset)?;
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
        let path = dir.join(format!("skyhouse-car-{}-{nanos}-{attempt}.spill", std::process::id()));
        match std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path) {
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

/// Read a whole CAR held in memory: roots and blocks.
pub fn read_car_bytes(bytes: &[u8], opts: CarOptions) -> Result<(Vec<Cid>, BlockStore), CarError> {
    let mut reader = CarReader::new(bytes, opts)?;
    let store = BlockStore::from_car(&mut reader)?;
    Ok((reader.roots.clone(), store))
}
