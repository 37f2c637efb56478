//! The retention window on disk (`--data-dir`): append-only segment files.
//!
//! ```text
//! <dir>/<first cursor, 20 digits>.seg   "SKYRLOG1", then records
//! <dir>/<first cursor, 20 digits>.idx   a sealed segment's index (written after its fsync)
//! <dir>/groups.json                     consumer groups' acknowledged positions
//! record = len u32 LE · crc32 u32 LE (of the payload) · payload
//! payload = cursor u64 · time_ms u64 · action u8 · source u8 · 0u16 · did_hash u32 ·
//!           did (start, end) u32×2 · collection (start, end) u32×2 · cbor_at u32 · body
//! ```
//!
//! Every published operation is written (one `write` per publish call)
//! before it enters the memory ring, so whatever a client received is on
//! disk (a `kill -9` loses nothing written; a power loss, what the kernel had
//! not synced: a background thread syncs every few seconds and each sealed
//! segment). Cursors are consecutive within a segment; each run of the relay
//! starts a new segment, at a cursor past the last one on disk.
//!
//! On start every segment without a valid index, and always the newest one,
//! is read through with its checksums: a truncated or corrupt record (power
//! loss) cuts the segment there, with a log line. Damage in an older segment
//! also removes the segments before it, so the window never has a hole: a
//! cursor older than the damage gets OUT_OF_RANGE, not a silent gap.
//! Segments go, oldest first, when the total passes `max_bytes` or their
//! newest record is older than the retention age.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::group::SavedGroup;
use crate::metrics;
use crate::pb::{Action, Source};
use crate::wire::Prepared;

const SEG_MAGIC: &[u8; 8] = b"SKYRLOG1";
const IDX_MAGIC: &[u8; 8] = b"SKYRIDX1";
/// len + crc.
const FRAME: usize = 8;
/// The payload before the body.
const FIXED: usize = 8 + 8 + 1 + 1 + 2 + 4 + 4 * 5;
/// One index entry per this many records.
const INDEX_EVERY: u64 = 512;
/// A record larger than this is corrupt (operations are ≤ 2 MiB encoded).
const MAX_RECORD: usize = 4 << 20;
/// Bytes read from a segment at a time.
const READ_CHUNK: usize = 1 << 20;

/// Where and how much.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    /// The directory (created if missing).
    pub dir: PathBuf,
    /// All segments together at most this many bytes (the newest segment may
    /// pass it until it is sealed). Default 8 GiB.
    pub max_bytes: u64,
    /// A segment is sealed and a new one started past this size. Default 64 MiB.
    pub segment_bytes: u64,
}

impl DiskConfig {
    /// The defaults, in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> DiskConfig {
        DiskConfig {
            dir: dir.into(),
            max_bytes: 8 << 30,
            segment_bytes: 64 << 20,
        }
    }
}

/// Why the segments could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    /// An I/O error on a file of the data directory.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// A file that is not the relay's.
    #[error("{path}: {reason}")]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> DiskError + '_ {
    move |source| DiskError::Io {
        path: path.to_owned(),
        source,
    }
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A segment's extent.
#[derive(Debug, Clone)]
struct Meta {
    first: u64,
    /// `first - 1` while empty.
    last: u64,
    /// Bytes of the file (magic included) that hold whole records.
    len: u64,
    newest_ms: u64,
    /// (cursor, offset) every INDEX_EVERY records, from the first.
    index: Vec<(u64, u64)>,
}

impl Meta {
    fn records(&self) -> u64 {
        self.last + 1 - self.first
    }
}

fn seg_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

fn idx_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.idx"))
}

/// One decoded record.
pub(crate) struct Record {
    pub(crate) cursor: u64,
    pub(crate) time_ms: u64,
    pub(crate) op: Prepared,
}

fn encode(buf: &mut Vec<u8>, cursor: u64, time_ms: u64, op: &Prepared) {
    let len = FIXED + op.body.len();
    let start = buf.len();
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]);
    buf.extend_from_slice(&cursor.to_le_bytes());
    buf.extend_from_slice(&time_ms.to_le_bytes());
    buf.push(op.action as i32 as u8);
    buf.push(op.source as i32 as u8);
    buf.extend_from_slice(&[0; 2]);
    buf.extend_from_slice(&op.did_hash.to_le_bytes());
    for v in [
        op.did.0,
        op.did.1,
        op.collection.0,
        op.collection.1,
        op.cbor_at,
    ] {
        buf.extend_from_slice(&v.to_le_bytes());
    }
    buf.extend_from_slice(&op.body);
    let crc = crc32fast::hash(&buf[start + FRAME..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// The record at the start of `buf` (which holds at least its frame): its
/// total size and contents; `None` if `buf` is too short to hold it all;
/// `Err` if it is corrupt.
fn decode(buf: &Bytes) -> Result<Option<(usize, Record)>, String> {
    if buf.len() < FRAME {
        return Ok(None);
    }
    let len = u32_at(buf, 0) as usize;
    if !(FIXED..=MAX_RECORD).contains(&len) {
        return Err(format!("record length {len}"));
    }
    if buf.len() < FRAME + len {
        return Ok(None);
    }
    let payload = &buf[FRAME..FRAME + len];
    if crc32fast::hash(payload) != u32_at(buf, 4) {
        return Err("checksum mismatch".into());
    }
    let body_len = (len - FIXED) as u32;
    let field = |i: usize| u32_at(payload, 24 + 4 * i);
    let (did, collection, cbor_at) = ((field(0), field(1)), (field(2), field(3)), field(4));
    let in_body = |r: (u32, u32)| r.0 <= r.1 && r.1 <= body_len;
    if !in_body(did) || !in_body(collection) || cbor_at > body_len {
        return Err("field offsets outside the record".into());
    }
    let action = Action::try_from(i32::from(payload[16])).map_err(|_| "unknown action")?;
    let source = Source::try_from(i32::from(payload[17])).map_err(|_| "unknown source")?;
    let op = Prepared {
        body: buf.slice(FRAME + FIXED..FRAME + len),
        did,
        collection,
        cbor_at,
        action,
        source,
        did_hash: u32_at(payload, 20),
    };
    Ok(Some((
        FRAME + len,
        Record {
            cursor: u64_at(payload, 0),
            time_ms: u64_at(payload, 8),
            op,
        },
    )))
}

/// Read a segment through, checking every record: its extent, and where
/// its whole records end (`Some(offset)` if bytes after that are damaged).
fn scan(path: &Path, first: u64) -> Result<(Meta, Option<(u64, String)>), DiskError> {
    let mut f = File::open(path).map_err(io_err(path))?;
    let mut magic = [0u8; 8];
    let got = f.read(&mut magic).map_err(io_err(path))?;
    let mut meta = Meta {
        first,
        last: first - 1,
        len: SEG_MAGIC.len() as u64,
        newest_ms: 0,
        index: Vec::new(),
    };
    if got < 8 || &magic != SEG_MAGIC {
        if got == 0 {
            return Ok((meta, Some((0, "empty file".into()))));
        }
        return Err(DiskError::Format {
            path: path.to_owned(),
            reason: "not a relay segment (no SKYRLOG1 header)".into(),
        });
    }
    let mut pending = Vec::new();
    let mut offset = 8u64; // of pending[0]
    let mut chunk = vec![0u8; READ_CHUNK];
    loop {
        let n = f.read(&mut chunk).map_err(io_err(path))?;
        pending.extend_from_slice(&chunk[..n]);
        let buf = Bytes::from(std::mem::take(&mut pending));
        let mut at = 0usize;
        let mut damage = None;
        loop {
            match decode(&buf.slice(at..)) {
                Ok(Some((size, r))) => {
                    if r.cursor != meta.last + 1 {
                        damage = Some(format!(
                            "cursor {} where {} was expected",
                            r.cursor,
                            meta.last + 1
                        ));
                        break;
                    }
                    if (r.cursor - first).is_multiple_of(INDEX_EVERY) {
                        meta.index.push((r.cursor, offset + at as u64));
                    }
                    meta.last = r.cursor;
                    meta.newest_ms = meta.newest_ms.max(r.time_ms);
                    at += size;
                }
                Ok(None) => break,
                Err(e) => {
                    damage = Some(e);
                    break;
                }
            }
        }
        offset += at as u64;
        meta.len = offset;
        if let Some(reason) = damage {
            return Ok((meta, Some((offset, reason))));
        }
        pending = buf[at..].to_vec();
        if n == 0 {
            return Ok((
                meta,
                (!pending.is_empty()).then(|| (offset, "truncated record".to_owned())),
            ));
        }
    }
}

fn write_index(dir: &Path, m: &Meta) -> io::Result<()> {
    let mut b = Vec::with_capacity(64 + m.index.len() * 16);
    b.extend_from_slice(IDX_MAGIC);
    for v in [m.first, m.last, m.len, m.newest_ms, m.index.len() as u64] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    for (c, o) in &m.index {
        b.extend_from_slice(&c.to_le_bytes());
        b.extend_from_slice(&o.to_le_bytes());
    }
    let crc = crc32fast::hash(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    let tmp = dir.join(format!("{:020}.idx.tmp", m.first));
    let mut f = File::create(&tmp)?;
    f.write_all(&b)?;
    f.sync_data()?;
    fs::rename(&tmp, idx_path(dir, m.first))
}

/// A sealed segment's index, if present, intact and matching the file.
fn read_index(dir: &Path, first: u64) -> Option<Meta> {
    let b = fs::read(idx_path(dir, first)).ok()?;
    if b.len() < 8 + 40 + 4 || &b[..8] != IDX_MAGIC {
        return None;
    }
    let body = &b[..b.len() - 4];
    if crc32fast::hash(body) != u32_at(&b, b.len() - 4) {
        return None;
    }
    let v = |i: usize| u64_at(body, 8 + 8 * i);
    let (f, last, len, newest_ms, n) = (v(0), v(1), v(2), v(3), v(4) as usize);
    if f != first || body.len() != 48 + n * 16 || last + 1 < first {
        return None;
    }
    let file_len = fs::metadata(seg_path(dir, first)).ok()?.len();
    if file_len != len {
        return None;
    }
    let index = (0..n)
        .map(|i| (u64_at(body, 48 + 16 * i), u64_at(body, 56 + 16 * i)))
        .collect();
    Some(Meta {
        first,
        last,
        len,
        newest_ms,
        index,
    })
}

/// What the background thread does.
enum Job {
    Sync(File),
    /// fsync a sealed segment, then write its index.
    Seal(File, PathBuf, Meta),
    /// Answer once every job sent before it is done.
    Flush(mpsc::Sender<()>),
}

fn syncer(rx: mpsc::Receiver<Job>) {
    for job in rx {
        match job {
            Job::Sync(f) => {
                if let Err(e) = f.sync_data() {
                    tracing::error!(error = %e, "Relay segment fsync failed.");
                }
            }
            Job::Seal(f, dir, meta) => {
                let r = f.sync_data().and_then(|()| write_index(&dir, &meta));
                if let Err(e) = r {
                    tracing::error!(error = %e, segment = meta.first, "Sealing a relay segment failed; it is re-read on the next start.");
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

struct Active {
    meta: Meta,
    file: File,
}

/// The segments; see the module docs. Publishers hold its lock while they
/// write; readers only while they find where to read.
pub(crate) struct Log {
    cfg: DiskConfig,
    /// Sealed segments, oldest first, and their total size.
    sealed: VecDeque<Meta>,
    sealed_bytes: u64,
    active: Option<Active>,
    buf: Vec<u8>,
    jobs: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.cfg.dir)
            .field(
                "segments",
                &(self.sealed.len() + usize::from(self.active.is_some())),
            )
            .finish_non_exhaustive()
    }
}

/// What `open` found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) log: Log,
    /// The newest cursor on disk (0: none).
    pub(crate) last: u64,
    /// Whether the newest segment's tail was cut: records a client may have
    /// received are gone, so their cursors must not be given again.
    pub(crate) tail_cut: bool,
    pub(crate) groups: Vec<SavedGroup>,
}

impl Log {
    /// Open (and repair) the segments of `cfg.dir`.
    pub(crate) fn open(cfg: DiskConfig) -> Result<Opened, DiskError> {
        let dir = cfg.dir.clone();
        fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(stem) = name.strip_suffix(".seg") {
                match stem.parse::<u64>() {
                    Ok(first) if first > 0 && stem.len() == 20 => firsts.push(first),
                    _ => {
                        return Err(DiskError::Format {
                            path: entry.path(),
                            reason: "a .seg file not named <20-digit first cursor>.seg".into(),
                        })
                    }
                }
            }
        }
        firsts.sort_unstable();
        let mut sealed: VecDeque<Meta> = VecDeque::new();
        let mut tail_cut = false;
        let n = firsts.len();
        for (i, &first) in firsts.iter().enumerate() {
            let path = seg_path(&dir, first);
            let newest = i + 1 == n;
            let meta = match (!newest).then(|| read_index(&dir, first)).flatten() {
                Some(m) => m,
                None => {
                    let (meta, damage) = scan(&path, first)?;
                    if let Some((at, reason)) = damage {
                        let mut f = OpenOptions::new()
                            .write(true)
                            .open(&path)
                            .map_err(io_err(&path))?;
                        let keep = at.max(SEG_MAGIC.len() as u64);
                        f.set_len(keep).map_err(io_err(&path))?;
                        if keep == SEG_MAGIC.len() as u64 {
                            // Nothing readable: rewrite the header too (a zero-length file).
                            f.seek(SeekFrom::Start(0)).map_err(io_err(&path))?;
                            f.write_all(SEG_MAGIC).map_err(io_err(&path))?;
                        }
                        f.sync_all().map_err(io_err(&path))?;
                        metrics::disk_repaired();
                        tail_cut |= newest;
                        tracing::warn!(
                            segment = %path.display(),
                            offset = keep,
                            last_good_cursor = meta.last,
                            reason = %reason,
                            "Relay segment damaged (truncated or corrupt record, e.g. after a power loss): cut at the last good record."
                        );
                        if !newest {
                            // The window must not have a hole: this segment
                            // (its good part ends before the next one starts)
                            // and every older one go.
                            for old in sealed.drain(..) {
                                remove_segment(&dir, old.first);
                            }
                            remove_segment(&dir, first);
                            tracing::warn!(segment = %path.display(), "The damaged segment and the older ones removed: the window starts after the damage.");
                            continue;
                        }
                    }
                    if !newest {
                        let _ = write_index(&dir, &meta);
                    }
                    meta
                }
            };
            if meta.records() == 0 && !newest {
                remove_segment(&dir, first);
                continue;
            }
            sealed.push_back(meta);
        }
        // Drop empty trailing segments (a run that wrote nothing).
        while sealed.back().is_some_and(|m| m.records() == 0) {
            if let Some(m) = sealed.pop_back() {
                remove_segment(&dir, m.first);
            }
        }
        let last = sealed.back().map_or(0, |m| m.last);
        let sealed_bytes = sealed.iter().map(|m| m.len).sum();
        let groups = read_groups(&dir)?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("relay-fsync".into())
            .spawn(move || syncer(rx))
            .map_err(io_err(&dir))?;
        let log = Log {
            cfg,
            sealed,
            sealed_bytes,
            active: None,
            buf: Vec::new(),
            jobs: tx,
        };
        log.report();
        Ok(Opened {
            log,
            last,
            tail_cut,
            groups,
        })
    }

    /// The oldest cursor a client can resume from (`None`: nothing on disk).
    pub(crate) fn oldest(&self) -> Option<u64> {
        self.sealed
            .front()
            .or(self.active.as_ref().map(|a| &a.meta))
            .filter(|m| m.records() > 0)
            .map(|m| m.first - 1)
    }

    fn start_segment(&mut self, first: u64) -> io::Result<()> {
        let path = seg_path(&self.cfg.dir, first);
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)?;
        file.write_all(SEG_MAGIC)?;
        self.active = Some(Active {
            meta: Meta {
                first,
                last: first - 1,
                len: SEG_MAGIC.len() as u64,
                newest_ms: 0,
                index: Vec::new(),
            },
            file,
        });
        Ok(())
    }

    /// Write `ops` (cursors from `first`, consecutive) in one `write`.
    pub(crate) fn append<'a>(
        &mut self,
        first: u64,
        time_ms: u64,
        ops: impl Iterator<Item = &'a Prepared>,
    ) -> io::Result<()> {
        if self
            .active
            .as_ref()
            .is_none_or(|a| a.meta.last + 1 != first || a.meta.len >= self.cfg.segment_bytes)
        {
            self.seal();
            self.start_segment(first)?;
        }
        let Some(active) = self.active.as_mut() else {
            return Ok(());
        };
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let mut cursor = first;
        for op in ops {
            if (cursor - active.meta.first).is_multiple_of(INDEX_EVERY) {
                active
                    .meta
                    .index
                    .push((cursor, active.meta.len + buf.len() as u64));
            }
            encode(&mut buf, cursor, time_ms, op);
            cursor += 1;
        }
        let written = active.file.write_all(&buf);
        if written.is_ok() {
            active.meta.len += buf.len() as u64;
            active.meta.last = cursor - 1;
            active.meta.newest_ms = time_ms;
        } else {
            // A partial write: the next start cuts it; this run writes no more
            // to that segment.
            active.meta.index.retain(|(c, _)| *c < first);
            self.active = None;
        }
        if buf.capacity() <= 8 << 20 {
            self.buf = buf;
        }
        self.report();
        written
    }

    /// Seal the active segment (fsync and index in the background).
    fn seal(&mut self) {
        if let Some(a) = self.active.take() {
            if a.meta.records() == 0 {
                drop(a.file);
                remove_segment(&self.cfg.dir, a.meta.first);
                return;
            }
            let _ = self
                .jobs
                .send(Job::Seal(a.file, self.cfg.dir.clone(), a.meta.clone()));
            self.sealed_bytes += a.meta.len;
            self.sealed.push_back(a.meta);
        }
    }

    /// Sync the active segment (in the background).
    pub(crate) fn sync(&self) {
        if let Some(a) = &self.active {
            if let Ok(f) = a.file.try_clone() {
                let _ = self.jobs.send(Job::Sync(f));
            }
        }
    }

    /// Drop sealed segments past the byte bound or older than `max_age`
    /// (an idle relay's active segment is sealed once it is that old).
    pub(crate) fn trim(&mut self, max_age: Duration) {
        let cutoff = now_ms().saturating_sub(max_age.as_millis() as u64);
        if self
            .active
            .as_ref()
            .is_some_and(|a| a.meta.records() > 0 && a.meta.newest_ms < cutoff)
        {
            self.seal();
        }
        let active_len = self.active.as_ref().map_or(0, |a| a.meta.len);
        while let Some(front) = self.sealed.front() {
            let too_big = self.sealed_bytes + active_len > self.cfg.max_bytes;
            if !(too_big || front.newest_ms < cutoff) {
                break;
            }
            let first = front.first;
            self.sealed_bytes -= front.len;
            self.sealed.pop_front();
            remove_segment(&self.cfg.dir, first);
        }
        self.report();
    }

    fn report(&self) {
        let active = self.active.as_ref().map_or(0, |a| a.meta.len);
        metrics::disk(
            self.sealed.len() + usize::from(self.active.is_some()),
            self.sealed_bytes + active,
        );
    }

    /// Where the records after `after` are: (segment path, readable length,
    /// offset to start at, the first cursor there). `Err(())`: `after` is
    /// older than the oldest record; `Ok(None)`: nothing after it on disk.
    fn locate(&self, after: u64) -> Result<Option<(PathBuf, u64, u64)>, ()> {
        let segs = self
            .sealed
            .iter()
            .chain(self.active.as_ref().map(|a| &a.meta))
            .filter(|m| m.records() > 0);
        let mut oldest = true;
        for m in segs {
            if oldest && after + 1 < m.first {
                return Err(());
            }
            oldest = false;
            if m.last <= after {
                continue;
            }
            let target = (after + 1).max(m.first);
            let offset = m
                .index
                .iter()
                .take_while(|(c, _)| *c <= target)
                .last()
                .map_or(SEG_MAGIC.len() as u64, |(_, o)| *o);
            return Ok(Some((seg_path(&self.cfg.dir, m.first), m.len, offset)));
        }
        Ok(None)
    }

    /// The data directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.cfg.dir
    }

    /// Sync everything (shutdown): the active segment, and the sealed ones
    /// whose fsync and index the background thread has not written yet, so
    /// the next start reads their indexes instead of scanning them.
    pub(crate) fn close(&mut self) {
        if let Some(a) = &self.active {
            let _ = a.file.sync_data();
        }
        let (tx, rx) = mpsc::channel();
        if self.jobs.send(Job::Flush(tx)).is_ok() {
            let _ = rx.recv();
        }
    }
}

/// Save the groups' positions in `dir` (atomically). Called without the
/// log's lock: publishers do not wait for this fsync.
pub(crate) fn save_groups(dir: &Path, groups: &[SavedGroup]) {
    let r = serde_json::to_vec(groups)
        .map_err(io::Error::other)
        .and_then(|b| {
            let tmp = dir.join("groups.json.tmp");
            let mut f = File::create(&tmp)?;
            f.write_all(&b)?;
            f.sync_data()?;
            fs::rename(&tmp, dir.join("groups.json"))
        });
    if let Err(e) = r {
        tracing::error!(error = %e, "Saving the consumer groups' positions failed.");
    }
}

fn remove_segment(dir: &Path, first: u64) {
    let _ = fs::remove_file(seg_path(dir, first));
    let _ = fs::remove_file(idx_path(dir, first));
}

fn read_groups(dir: &Path) -> Result<Vec<SavedGroup>, DiskError> {
    let path = dir.join("groups.json");
    match fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| DiskError::Format {
            path,
            reason: format!("not the relay's groups file: {e}"),
        }),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(DiskError::Io { path, source: e }),
    }
}

/// A client's place in the segments (sequential reads without searching).
#[derive(Debug)]
pub(crate) struct Reader {
    path: PathBuf,
    file: File,
    offset: u64,
    len: u64,
    /// The cursor after which this reader is positioned.
    after: u64,
}

/// What a disk read found.
pub(crate) enum Chunk {
    /// Records after the position, in cursor order.
    Records(Vec<Record>),
    /// The position is older than the oldest record kept.
    Gone,
    /// Nothing after the position on disk.
    Nothing,
}

/// Read up to `max_ops` records (≈ `READ_CHUNK` bytes) after cursor `after`.
pub(crate) fn read_after(
    log: &Arc<Mutex<Log>>,
    reader: &mut Option<Reader>,
    after: u64,
    max_ops: usize,
) -> io::Result<Chunk> {
    let reuse = reader
        .as_ref()
        .is_some_and(|r| r.after == after && r.offset < r.len);
    if !reuse {
        let found = {
            let log = log.lock().unwrap_or_else(|p| p.into_inner());
            log.locate(after)
        };
        match found {
            Err(()) => return Ok(Chunk::Gone),
            Ok(None) => return Ok(Chunk::Nothing),
            Ok(Some((path, len, offset))) => {
                let same = reader.as_ref().is_some_and(|r| r.path == path);
                let file = match reader.take() {
                    Some(r) if same => r.file,
                    _ => File::open(&path)?,
                };
                *reader = Some(Reader {
                    path,
                    file,
                    offset,
                    len,
                    after,
                });
            }
        }
    }
    let Some(r) = reader.as_mut() else {
        return Ok(Chunk::Nothing);
    };
    let mut out = Vec::new();
    while out.len() < max_ops && r.offset < r.len {
        let want = ((r.len - r.offset) as usize).min(READ_CHUNK.max(FRAME + MAX_RECORD / 2));
        let mut buf = vec![0u8; want];
        r.file.seek(SeekFrom::Start(r.offset))?;
        r.file.read_exact(&mut buf)?;
        let buf = Bytes::from(buf);
        let mut at = 0;
        while out.len() < max_ops {
            match decode(&buf.slice(at..)) {
                Ok(Some((size, rec))) => {
                    at += size;
                    if rec.cursor > r.after {
                        r.after = rec.cursor;
                        out.push(rec);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} at offset {}: {e}",
                            r.path.display(),
                            r.offset + at as u64
                        ),
                    ))
                }
            }
        }
        if at == 0 {
            // A record larger than what was read: read more at once next time.
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: record at {} larger than a read",
                    r.path.display(),
                    r.offset
                ),
            ));
        }
        r.offset += at as u64;
        if out.len() >= max_ops {
            break;
        }
    }
    if out.is_empty() {
        // End of this segment: the next call locates the following one.
        r.offset = r.len;
        let after = r.after;
        return read_after_next(log, reader, after, max_ops);
    }
    Ok(Chunk::Records(out))
}

/// The segment after the one just read through.
fn read_after_next(
    log: &Arc<Mutex<Log>>,
    reader: &mut Option<Reader>,
    after: u64,
    max_ops: usize,
) -> io::Result<Chunk> {
    let next = {
        let log = log.lock().unwrap_or_else(|p| p.into_inner());
        log.locate(after)
    };
    match next {
        Ok(Some((path, _, _))) if reader.as_ref().is_some_and(|r| r.path == path) => {
            // Still the same (active) segment: nothing newer written yet.
            Ok(Chunk::Nothing)
        }
        Ok(Some(_)) => {
            *reader = None;
            read_after(log, reader, after, max_ops)
        }
        Ok(None) => Ok(Chunk::Nothing),
        Err(()) => Ok(Chunk::Gone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::OpRef;

    fn dir(name: &str) -> PathBuf {
        let d =
            std::env::temp_dir().join(format!("skyhouse-relay-disk-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn op(i: u64) -> Prepared {
        let rkey = format!("r{i}");
        Prepared::new(&OpRef {
            source: Source::Live,
            did: "did:plc:disk",
            collection: "app.bsky.feed.like",
            rkey: &rkey,
            action: Action::Create,
            record_cbor: &[0xa0],
            ..OpRef::default()
        })
    }

    fn read_all(log: &Arc<Mutex<Log>>, after: u64) -> Vec<u64> {
        let mut reader = None;
        let mut pos = after;
        let mut out = Vec::new();
        loop {
            match read_after(log, &mut reader, pos, 100).expect("read") {
                Chunk::Records(r) => {
                    pos = r.last().map_or(pos, |r| r.cursor);
                    out.extend(r.iter().map(|r| r.cursor));
                }
                Chunk::Nothing => return out,
                Chunk::Gone => panic!("gone"),
            }
        }
    }

    #[test]
    fn records_survive_a_reopen_and_a_torn_tail_is_cut() {
        let d = dir("torn");
        let cfg = DiskConfig {
            segment_bytes: 4_000,
            ..DiskConfig::new(&d)
        };
        let opened = Log::open(cfg.clone()).expect("open");
        let log = Arc::new(Mutex::new(opened.log));
        for start in (100..400).step_by(30) {
            let ops: Vec<Prepared> = (start..start + 30).map(op).collect();
            log.lock()
                .expect("lock")
                .append(start, now_ms(), ops.iter())
                .expect("append");
        }
        assert_eq!(read_all(&log, 99), (100..400).collect::<Vec<_>>());
        assert_eq!(read_all(&log, 250), (251..400).collect::<Vec<_>>());
        log.lock().expect("lock").close();
        drop(log);
        // Tear the newest segment's last record in half.
        let mut segs: Vec<PathBuf> = fs::read_dir(&d)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        assert!(segs.len() > 3, "several segments: {segs:?}");
        let newest = segs.last().expect("a segment");
        let len = fs::metadata(newest).expect("meta").len();
        OpenOptions::new()
            .write(true)
            .open(newest)
            .expect("open")
            .set_len(len - 10)
            .expect("cut");
        let opened = Log::open(cfg).expect("reopen");
        assert_eq!(opened.last, 398, "the torn record is gone");
        let log = Arc::new(Mutex::new(opened.log));
        assert_eq!(read_all(&log, 99), (100..399).collect::<Vec<_>>());
        // A new run appends after it.
        let ops: Vec<Prepared> = (1_000..1_010).map(op).collect();
        log.lock()
            .expect("lock")
            .append(1_000, now_ms(), ops.iter())
            .expect("append");
        let mut want: Vec<u64> = (100..399).collect();
        want.extend(1_000..1_010);
        assert_eq!(read_all(&log, 99), want);
        assert_eq!(read_all(&log, 398), (1_000..1_010).collect::<Vec<_>>());
        assert!(matches!(
            read_after(&log, &mut None, 50, 10).expect("read"),
            Chunk::Gone
        ));
    }

    #[test]
    fn damage_in_an_older_segment_moves_the_window_past_it() {
        let d = dir("older");
        let cfg = DiskConfig {
            segment_bytes: 2_000,
            ..DiskConfig::new(&d)
        };
        let log = Log::open(cfg.clone()).expect("open").log;
        let log = Arc::new(Mutex::new(log));
        for start in (10..200).step_by(10) {
            let ops: Vec<Prepared> = (start..start + 10).map(op).collect();
            log.lock()
                .expect("lock")
                .append(start, now_ms(), ops.iter())
                .expect("append");
        }
        log.lock().expect("lock").close();
        drop(log);
        let mut segs: Vec<PathBuf> = fs::read_dir(&d)
            .expect("dir")
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        assert!(
            segs[..segs.len() - 1]
                .iter()
                .all(|s| s.with_extension("idx").exists()),
            "close wrote every sealed segment's index"
        );
        // Flip a byte in the middle of the second segment and drop its index.
        let victim = &segs[1];
        let mut bytes = fs::read(victim).expect("read");
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(victim, &bytes).expect("write");
        let _ = fs::remove_file(victim.with_extension("idx"));
        let third_first: u64 = segs[2]
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse().ok())
            .expect("a cursor");
        let opened = Log::open(cfg).expect("reopen");
        assert_eq!(opened.last, 199);
        assert!(
            !segs[0].exists() && !segs[1].exists(),
            "the damaged and older segments went"
        );
        assert_eq!(opened.log.oldest(), Some(third_first - 1));
        let log = Arc::new(Mutex::new(opened.log));
        assert_eq!(
            read_all(&log, third_first - 1),
            (third_first..200).collect::<Vec<_>>()
        );
    }

    #[test]
    fn segments_go_oldest_first_past_the_byte_bound() {
        let d = dir("bound");
        let cfg = DiskConfig {
            segment_bytes: 1_000,
            max_bytes: 5_000,
            ..DiskConfig::new(&d)
        };
        let mut log = Log::open(cfg).expect("open").log;
        for start in (1..500).step_by(10) {
            let ops: Vec<Prepared> = (start..start + 10).map(op).collect();
            log.append(start, now_ms(), ops.iter()).expect("append");
            log.trim(Duration::from_secs(3600));
        }
        let total: u64 = log.sealed.iter().map(|m| m.len).sum::<u64>()
            + log.active.as_ref().map_or(0, |a| a.meta.len);
        assert!(total <= 5_000 + 1_200, "{total}");
        assert!(log.oldest().expect("some") > 300);
        // Age: everything sealed and older than the bound goes.
        std::thread::sleep(Duration::from_millis(20));
        log.trim(Duration::from_millis(1));
        assert!(
            log.sealed.is_empty() && log.active.is_none(),
            "all aged out"
        );
        assert_eq!(log.oldest(), None);
    }
}
