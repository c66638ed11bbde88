//! One log segment: `<base>.log` holding whole record batches, with its two sparse indexes.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use parking_lot::Mutex;
use vltava_record::{BatchHeader, RecordError, HEADER_LEN};

use crate::fs::{BodySource, Fs, FsFile, OpenMode};
use crate::index::{
    OffsetEntry, OffsetIndex, TimeEntry, TimeIndex, OFFSET_ENTRY_LEN, TIME_ENTRY_LEN,
};
use crate::{io_err, StorageError};

/// Cap on the bytes one batch may decompress to when the broker looks inside it: far above
/// any real batch, and reading is streamed, so the cap bounds work, not memory.
const MAX_DECOMPRESSED: u64 = 256 << 20;

/// Kafka names files by base offset, zero-padded to 20 digits.
pub fn file_stem(base_offset: i64) -> String {
    format!("{base_offset:020}")
}

/// The files that make up one segment. Create, delete and recovery all go through this one
/// list, so a new index kind (the transaction index next) is handled everywhere at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SegmentFile {
    Log,
    OffsetIndex,
    TimeIndex,
    /// Aborted transactions whose markers are in this segment; written when the segment is
    /// sealed (and at a clean stop), absent when it has none.
    TxnIndex,
}

impl SegmentFile {
    pub(crate) const ALL: [SegmentFile; 4] = [
        Self::Log,
        Self::OffsetIndex,
        Self::TimeIndex,
        Self::TxnIndex,
    ];

    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Self::Log => ".log",
            Self::OffsetIndex => ".index",
            Self::TimeIndex => ".timeindex",
            Self::TxnIndex => ".txnindex",
        }
    }

    pub(crate) fn path(self, dir: &Path, base_offset: i64) -> PathBuf {
        dir.join(format!("{}{}", file_stem(base_offset), self.suffix()))
    }

    /// The segment file kind and base offset a directory entry names, if it is one.
    pub(crate) fn parse_name(name: &str) -> Option<(Self, i64)> {
        Self::ALL.into_iter().find_map(|kind| {
            let stem = name.strip_suffix(kind.suffix())?;
            let base = stem.parse::<i64>().ok()?;
            (stem.len() == 20 && base >= 0).then_some((kind, base))
        })
    }

    /// Removes every file of the segment at `base_offset` that exists.
    pub(crate) fn delete_all(fs: &dyn Fs, dir: &Path, base_offset: i64) {
        for kind in Self::ALL {
            let p = kind.path(dir, base_offset);
            match fs.remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "could not delete segment file")
                }
            }
        }
    }
}

/// What an append writes: batches in memory (a rewritten header, then the caller's bytes,
/// back to back), or streamed batches whose bodies a [`BodySource`] writes behind their
/// rewritten headers.
pub(crate) enum Pieces<'a, 'b> {
    Parts(&'a [&'a [u8]]),
    Streamed {
        headers: &'a [[u8; HEADER_LEN]],
        body_lens: &'a [usize],
        bodies: &'a mut (dyn BodySource + 'b),
    },
}

impl Pieces<'_, '_> {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Pieces::Parts(parts) => parts.iter().map(|p| p.len() as u64).sum(),
            Pieces::Streamed {
                headers, body_lens, ..
            } => (headers.len() * HEADER_LEN + body_lens.iter().sum::<usize>()) as u64,
        }
    }
}

/// Mutable per-segment bookkeeping, changed only by the appender (under the log's lock).
#[derive(Debug)]
pub(crate) struct SegmentState {
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    /// How many entries of each index are in its file. An append adds entries in memory
    /// only; they reach the files before the `.log` is fsynced, when the segment is sealed
    /// and at a clean close, so a batch of a few KiB costs one write, not three.
    pub offset_entries_written: usize,
    pub time_entries_written: usize,
    pub bytes_since_index: u64,
    /// Offset just past the last batch in this segment.
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    pub created_ms: i64,
}

/// How many sealed segments of one log may keep their `.log` open after a read, so a
/// consumer reading through old data does not reopen the file on every fetch.
pub(crate) const SEALED_HANDLES_PER_LOG: usize = 2;

/// The file system and the handle cache every segment of one log shares.
#[derive(Debug, Clone)]
pub(crate) struct SegmentFs {
    pub(crate) fs: Arc<dyn Fs>,
    cache: Arc<HandleCache>,
}

impl SegmentFs {
    pub(crate) fn new(fs: Arc<dyn Fs>) -> Self {
        Self {
            fs,
            cache: Arc::default(),
        }
    }
}

/// The sealed segments whose `.log` a read opened, oldest first. Opening one more closes the
/// oldest, so a log holds a bounded number of descriptors however many segments it has.
#[derive(Debug, Default)]
struct HandleCache {
    opened: parking_lot::Mutex<VecDeque<Weak<Mutex<Handles>>>>,
}

impl HandleCache {
    /// Records that `handles` just opened its `.log` and closes whatever falls out. Called
    /// without `handles` locked: eviction locks other segments' handles under the cache lock.
    fn opened(&self, handles: &Arc<Mutex<Handles>>) {
        let mut opened = self.opened.lock();
        opened.retain(|w| w.strong_count() > 0 && !std::ptr::eq(w.as_ptr(), Arc::as_ptr(handles)));
        opened.push_back(Arc::downgrade(handles));
        while opened.len() > SEALED_HANDLES_PER_LOG {
            if let Some(h) = opened.pop_front().and_then(|w| w.upgrade()) {
                let mut h = h.lock();
                if h.hold == Hold::Cached {
                    h.log = None;
                }
            }
        }
    }
}

/// Why a segment's `.log` handle is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hold {
    /// The active segment: appends write through it.
    Active,
    /// Sealed with bytes no fsync may have covered yet. The handle stays open until one does:
    /// a writeback error is reported to open descriptors, and an inode nobody holds open can
    /// be evicted with its error forgotten, so a later open and fsync would wrongly succeed.
    Unsynced,
    /// Sealed and durable: open only while in the log's [`HandleCache`], if at all.
    Cached,
    /// Replaced by a cleaned segment: its files are gone or about to go, so the handle opened
    /// before that stays open for reads in flight until the last `Arc` to the segment drops.
    Replaced,
}

/// A segment's open files.
#[derive(Debug)]
struct Handles {
    log: Option<Arc<dyn FsFile>>,
    /// `.index` and `.timeindex`: open only while the segment is active (appends add entries)
    /// or while an index is being rewritten.
    indexes: Option<[Box<dyn FsFile>; 2]>,
    hold: Hold,
}

/// One segment. Only the active segment keeps its files open; a sealed one opens its `.log`
/// on demand for reads (its indexes are in memory), so descriptors do not grow with the
/// number of segments.
#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    files: SegmentFs,
    dir: PathBuf,
    pub(crate) log_path: PathBuf,
    handles: Arc<Mutex<Handles>>,
    /// Bytes of whole batches written; readers never look past it.
    size: AtomicU64,
    /// Where the blocks allocated ahead of the writes end ([`reserve_until`]); only the
    /// appender, under the log lock, moves it.
    reserved_to: AtomicU64,
    /// Blocks may lie past `size`, to release when the segment stops being active.
    reserved: AtomicBool,
    /// Where [`Segment::start_writeback`] has asked the disk to write up to.
    writeback_from: AtomicU64,
    pub(crate) state: Mutex<SegmentState>,
}

/// A segment reserves nothing below this size, so small and idle partitions take only the
/// blocks they wrote.
const RESERVE_FROM: u64 = 1 << 20;
/// The reservation runs this far ahead of the writes at least, and at most
/// [`RESERVE_MAX_AHEAD`].
const RESERVE_MIN_AHEAD: u64 = 1 << 20;
const RESERVE_MAX_AHEAD: u64 = 8 << 20;

/// Where the active segment's reservation should end once a write reaches `end`, or `None`
/// while it reaches far enough. Allocating a segment's blocks a few MiB at a time, instead of
/// per page as each write lands, took about 8 % off the broker's CPU per produced byte, all
/// of it ext4's delayed allocation (bench/README.md). An eighth of the segment ahead bounds the
/// unused blocks to 12.5 %, and to 8 MiB per active segment.
pub(crate) fn reserve_until(end: u64, reserved_to: u64) -> Option<u64> {
    (end >= RESERVE_FROM && end > reserved_to)
        .then(|| end + (end / 8).clamp(RESERVE_MIN_AHEAD, RESERVE_MAX_AHEAD))
}

/// What loading a segment from disk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Loaded {
    /// Every batch read back whole.
    Clean,
    /// An unflushed tail failed validation and was cut off.
    Cut,
    /// A batch below the recovery point has an unreadable header. Nothing was cut (that data
    /// was acknowledged as durable); the segment's offsets end before it.
    Damaged,
}

/// How a scan of batch headers ended.
enum ScanEnd {
    Clean,
    /// Cut here: the first invalid byte of the unflushed tail.
    Cut(u64),
    /// Stopped at an unreadable header below the recovery point; nothing may be cut.
    Damaged,
}

fn fresh_state(base_offset: i64, now_ms: i64) -> SegmentState {
    SegmentState {
        offset_index: OffsetIndex::default(),
        time_index: TimeIndex::default(),
        offset_entries_written: 0,
        time_entries_written: 0,
        bytes_since_index: 0,
        next_offset: base_offset,
        max_timestamp: -1,
        offset_of_max_timestamp: base_offset,
        created_ms: now_ms,
    }
}

impl Segment {
    /// Creates the files of a new active segment.
    pub(crate) fn create(
        files: &SegmentFs,
        dir: &Path,
        base_offset: i64,
        now_ms: i64,
    ) -> Result<Self, StorageError> {
        let open = |kind: SegmentFile| {
            let p = kind.path(dir, base_offset);
            files
                .fs
                .open(&p, OpenMode::Truncate)
                .map_err(|e| io_err("create", &p, e))
        };
        let log: Arc<dyn FsFile> = Arc::from(open(SegmentFile::Log)?);
        let indexes = [
            open(SegmentFile::OffsetIndex)?,
            open(SegmentFile::TimeIndex)?,
        ];
        Ok(Self {
            base_offset,
            files: files.clone(),
            dir: dir.to_path_buf(),
            log_path: SegmentFile::Log.path(dir, base_offset),
            handles: Arc::new(Mutex::new(Handles {
                log: Some(log),
                indexes: Some(indexes),
                hold: Hold::Active,
            })),
            size: AtomicU64::new(0),
            reserved_to: AtomicU64::new(0),
            reserved: AtomicBool::new(false),
            writeback_from: AtomicU64::new(0),
            state: Mutex::new(fresh_state(base_offset, now_ms)),
        })
    }

    /// The `.log` handle, opened if this sealed segment has none (and then cached).
    pub(crate) fn log_file(&self) -> Result<Arc<dyn FsFile>, StorageError> {
        let mut h = self.handles.lock();
        if let Some(f) = &h.log {
            return Ok(Arc::clone(f));
        }
        let f: Arc<dyn FsFile> = Arc::from(
            self.files
                .fs
                .open(&self.log_path, OpenMode::Read)
                .map_err(|e| io_err("open", &self.log_path, e))?,
        );
        h.log = Some(Arc::clone(&f));
        drop(h);
        self.files.cache.opened(&self.handles);
        Ok(f)
    }

    /// Runs `f` on the index handles, opening them (kept until [`Segment::retire`] or
    /// [`Segment::close`]) if need be.
    fn with_indexes<T>(
        &self,
        f: impl FnOnce(&[Box<dyn FsFile>; 2]) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut h = self.handles.lock();
        if h.indexes.is_none() {
            let open = |kind: SegmentFile| {
                let p = self.path(kind);
                self.files
                    .fs
                    .open(&p, OpenMode::Create)
                    .map_err(|e| io_err("open", &p, e))
            };
            h.indexes = Some([
                open(SegmentFile::OffsetIndex)?,
                open(SegmentFile::TimeIndex)?,
            ]);
        }
        f(h.indexes.as_ref().expect("just opened"))
    }

    /// Makes this the active segment (the last one after a load or a truncation): its files
    /// are opened for writing and stay open.
    pub(crate) fn activate(&self) -> Result<(), StorageError> {
        let log = self
            .files
            .fs
            .open(&self.log_path, OpenMode::Write)
            .map_err(|e| io_err("open", &self.log_path, e))?;
        {
            let mut h = self.handles.lock();
            h.log = Some(Arc::from(log));
            h.hold = Hold::Active;
        }
        // A run that stopped without sealing it may have left reserved blocks.
        self.reserved.store(true, Ordering::Relaxed);
        self.with_indexes(|_| Ok(()))
    }

    /// The segment stops being active (after [`Segment::seal`]): the index handles close, and
    /// the `.log` handle stays open until [`Segment::release`] says its bytes are durable.
    pub(crate) fn retire(&self) {
        let mut h = self.handles.lock();
        h.indexes = None;
        h.hold = Hold::Unsynced;
    }

    /// A sealed segment's bytes are all durable: its `.log` handle may close. Does nothing to
    /// the active segment.
    pub(crate) fn release(&self) {
        let mut h = self.handles.lock();
        if h.hold != Hold::Active && h.hold != Hold::Replaced {
            h.hold = Hold::Cached;
            h.log = None;
            h.indexes = None;
        }
    }

    /// Opens the `.log` (if closed) and keeps it open for good: the cleaner is about to
    /// delete or replace this segment's files, and reads that took an `Arc` to it before the
    /// swap must still find its bytes, not whatever the path names next.
    pub(crate) fn pin_for_replacement(&self) -> Result<(), StorageError> {
        self.log_file()?;
        let mut h = self.handles.lock();
        if h.log.is_none() {
            drop(h);
            // Evicted between the two locks; open again under the lock this time.
            let f: Arc<dyn FsFile> = Arc::from(
                self.files
                    .fs
                    .open(&self.log_path, OpenMode::Read)
                    .map_err(|e| io_err("open", &self.log_path, e))?,
            );
            h = self.handles.lock();
            h.log = Some(f);
        }
        h.hold = Hold::Replaced;
        h.indexes = None;
        Ok(())
    }

    pub(crate) fn path(&self, kind: SegmentFile) -> PathBuf {
        kind.path(&self.dir, self.base_offset)
    }

    /// Opens an existing segment.
    ///
    /// `cut_from` is the recovery point when the segment may hold data that was never fsynced
    /// (an unclean stop): every CRC is checked, and from the first bad batch at or above that
    /// offset the rest of the file is cut. Batches below it were acknowledged as durable and
    /// are never cut: a bad one is reported loudly and kept. With `None` the whole segment is
    /// below the recovery point; its indexes are trusted if they look valid.
    /// The segment comes back sealed with its `.log` open; the caller then calls
    /// [`Segment::activate`] or [`Segment::release`].
    pub(crate) fn open(
        files: &SegmentFs,
        dir: &Path,
        base_offset: i64,
        cut_from: Option<i64>,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<(Self, Loaded), StorageError> {
        let fs = &*files.fs;
        let index_path = SegmentFile::OffsetIndex.path(dir, base_offset);
        let time_path = SegmentFile::TimeIndex.path(dir, base_offset);
        let log_path = SegmentFile::Log.path(dir, base_offset);
        let indexes_present = fs.exists(&index_path) && fs.exists(&time_path);
        let file = fs
            .open(&log_path, OpenMode::Write)
            .map_err(|e| io_err("open", &log_path, e))?;
        let file_len = file.size().map_err(|e| io_err("stat", &log_path, e))?;
        let seg = Self {
            base_offset,
            files: files.clone(),
            dir: dir.to_path_buf(),
            log_path,
            handles: Arc::new(Mutex::new(Handles {
                log: Some(Arc::from(file)),
                indexes: None,
                hold: Hold::Cached,
            })),
            size: AtomicU64::new(file_len),
            reserved_to: AtomicU64::new(file_len),
            reserved: AtomicBool::new(false),
            writeback_from: AtomicU64::new(file_len),
            state: Mutex::new(fresh_state(base_offset, now_ms)),
        };
        let loaded = if cut_from.is_none() && indexes_present {
            let idx = fs
                .read(&index_path)
                .ok()
                .and_then(|b| OffsetIndex::parse(&b, file_len));
            let tidx = fs.read(&time_path).ok().and_then(|b| TimeIndex::parse(&b));
            idx.zip(tidx)
        } else {
            None
        };
        let outcome = match loaded {
            Some((idx, tidx)) => {
                let start = idx.entries.last().map_or(0, |e| u64::from(e.position));
                {
                    let mut st = seg.state.lock();
                    if let Some(last) = tidx.entries.last() {
                        st.max_timestamp = last.timestamp;
                        st.offset_of_max_timestamp = base_offset + i64::from(last.relative_offset);
                    }
                    st.offset_entries_written = idx.entries.len();
                    st.time_entries_written = tidx.entries.len();
                    st.offset_index = idx;
                    st.time_index = tidx;
                }
                // Index entries are hints; the tail past the last one is scanned, and if its
                // headers cannot be followed the indexes are rebuilt from the start.
                match seg.scan(start, file_len, true, index_interval_bytes, false, None)? {
                    ScanEnd::Clean => Loaded::Clean,
                    ScanEnd::Cut(_) | ScanEnd::Damaged => {
                        seg.rebuild(file_len, true, index_interval_bytes, None)?
                    }
                }
            }
            None => seg.rebuild(file_len, true, index_interval_bytes, cut_from)?,
        };
        Ok((seg, outcome))
    }

    /// Rebuilds both indexes and the segment's offsets from the first `len` log bytes,
    /// optionally checking CRCs, and cuts an invalid tail at or above `cut_from`.
    fn rebuild(
        &self,
        len: u64,
        check_crc: bool,
        index_interval_bytes: u64,
        cut_from: Option<i64>,
    ) -> Result<Loaded, StorageError> {
        {
            let mut st = self.state.lock();
            let created_ms = st.created_ms;
            *st = fresh_state(self.base_offset, created_ms);
        }
        let outcome = match self.scan(0, len, check_crc, index_interval_bytes, true, cut_from)? {
            ScanEnd::Clean => Loaded::Clean,
            ScanEnd::Damaged => Loaded::Damaged,
            ScanEnd::Cut(end) => {
                tracing::warn!(
                    segment = %self.log_path.display(),
                    valid_bytes = end,
                    file_bytes = len,
                    "truncating invalid or torn unflushed tail of segment"
                );
                let file = self.log_file()?;
                file.set_len(end)
                    .map_err(|e| io_err("truncate", &self.log_path, e))?;
                file.sync_all()
                    .map_err(|e| io_err("fsync", &self.log_path, e))?;
                self.size.store(end, Ordering::Release);
                self.writeback_from.fetch_min(end, Ordering::Relaxed);
                Loaded::Cut
            }
        };
        self.rewrite_index_files()?;
        Ok(outcome)
    }

    /// Cuts the segment at byte `position`, a batch boundary, and rebuilds its indexes from
    /// the headers that remain; it becomes the active segment. The cut is fsynced: truncated
    /// batches must not come back after a crash, since other replicas may already hold
    /// different ones at those offsets.
    pub(crate) fn truncate_to(
        &self,
        position: u64,
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        self.activate()?;
        let file = self.log_file()?;
        self.size.store(position, Ordering::Release);
        self.reserved_to.store(position, Ordering::Relaxed);
        self.writeback_from.fetch_min(position, Ordering::Relaxed);
        file.set_len(position)
            .map_err(|e| io_err("truncate", &self.log_path, e))?;
        file.sync_all()
            .map_err(|e| io_err("fsync", &self.log_path, e))?;
        self.rebuild(position, false, index_interval_bytes, None)?;
        Ok(())
    }

    /// Walks batch headers in `[start, end)`, updating next offset and max timestamp, and,
    /// when `build_index` is set, the indexes. With `check_crc`, reads whole batches to verify.
    /// See [`Segment::open`] for what `cut_from` means.
    fn scan(
        &self,
        start: u64,
        end: u64,
        check_crc: bool,
        index_interval_bytes: u64,
        build_index: bool,
        cut_from: Option<i64>,
    ) -> Result<ScanEnd, StorageError> {
        let mut pos = start;
        let file = self.log_file()?;
        let read_exact_at = |buf: &mut [u8], pos: u64| {
            file.read_exact_at(buf, pos)
                .map_err(|e| io_err("read", &self.log_path, e))
        };
        let mut st = self.state.lock();
        let mut header_buf = [0u8; HEADER_LEN];
        let mut batch_buf = Vec::new();
        let unflushed = |offset: i64| cut_from.is_some_and(|rp| offset >= rp);
        while pos < end {
            let header = if end - pos < HEADER_LEN as u64 {
                None
            } else {
                read_exact_at(&mut header_buf, pos)?;
                BatchHeader::parse(&header_buf).ok().filter(|h| {
                    pos + h.total_len() as u64 <= end
                        && h.base_offset >= st.next_offset
                        && h.last_offset_delta >= 0
                        && h.last_offset() - self.base_offset <= i64::from(u32::MAX)
                })
            };
            let Some(header) = header else {
                if unflushed(st.next_offset) {
                    return Ok(ScanEnd::Cut(pos));
                }
                tracing::error!(
                    segment = %self.log_path.display(),
                    position = pos,
                    next_offset = st.next_offset,
                    "unreadable batch header below the recovery point: bytes kept, offsets from \
                     here on in this segment cannot be served"
                );
                return Ok(ScanEnd::Damaged);
            };
            let len = header.total_len() as u64;
            if check_crc {
                batch_buf.resize(len as usize, 0);
                read_exact_at(&mut batch_buf, pos)?;
                if vltava_record::compute_crc(&batch_buf) != header.crc {
                    if unflushed(header.base_offset) {
                        return Ok(ScanEnd::Cut(pos));
                    }
                    tracing::error!(
                        segment = %self.log_path.display(),
                        position = pos,
                        base_offset = header.base_offset,
                        last_offset = header.last_offset(),
                        "batch below the recovery point fails its CRC: kept as written"
                    );
                }
            }
            if build_index {
                st.bytes_since_index += len;
                if st.offset_index.entries.is_empty()
                    || st.bytes_since_index >= index_interval_bytes
                {
                    let rel = (header.base_offset - self.base_offset) as u32;
                    if st
                        .offset_index
                        .entries
                        .last()
                        .is_none_or(|e| e.relative_offset < rel)
                    {
                        st.offset_index.entries.push(OffsetEntry {
                            relative_offset: rel,
                            position: pos as u32,
                        });
                        let ts = st.max_timestamp.max(header.max_timestamp);
                        st.time_index.entries.push(TimeEntry {
                            timestamp: ts,
                            relative_offset: rel,
                        });
                    }
                    st.bytes_since_index = 0;
                }
            }
            if header.max_timestamp > st.max_timestamp {
                st.max_timestamp = header.max_timestamp;
                st.offset_of_max_timestamp = header.last_offset();
            }
            st.next_offset = header.next_offset();
            pos += len;
        }
        Ok(ScanEnd::Clean)
    }

    fn rewrite_index_files(&self) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        st.offset_entries_written = st.offset_index.entries.len();
        st.time_entries_written = st.time_index.entries.len();
        let idx = OffsetIndex::encode(&st.offset_index.entries);
        let tidx = TimeIndex::encode(&st.time_index.entries);
        drop(st);
        // Synced, because a sealed segment's indexes are trusted at the next load.
        self.with_indexes(|[index, time]| {
            for (file, kind, bytes) in [
                (index, SegmentFile::OffsetIndex, idx),
                (time, SegmentFile::TimeIndex, tidx),
            ] {
                let path = self.path(kind);
                file.set_len(0).map_err(|e| io_err("truncate", &path, e))?;
                file.write_all_at(&bytes, 0)
                    .map_err(|e| io_err("write", &path, e))?;
                file.sync_data().map_err(|e| io_err("fsync", &path, e))?;
            }
            Ok(())
        })
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.state.lock().next_offset
    }

    /// The time index's first entry: the largest timestamp up to the first indexed batch,
    /// which approximates the segment's earliest timestamp as Kafka's cleaner does.
    pub(crate) fn first_timestamp(&self) -> i64 {
        let st = self.state.lock();
        st.time_index
            .entries
            .first()
            .map_or(st.max_timestamp, |e| e.timestamp)
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.state.lock().max_timestamp
    }

    fn read_exact_at(
        &self,
        file: &dyn FsFile,
        buf: &mut [u8],
        pos: u64,
    ) -> Result<(), StorageError> {
        file.read_exact_at(buf, pos)
            .map_err(|e| io_err("read", &self.log_path, e))
    }

    /// Appends already-validated batches whose offsets have been assigned, given as pieces
    /// written back to back (a rewritten header, then the caller's bytes).
    /// Caller holds the log lock, so appends to one segment are serial.
    pub(crate) fn append(
        &self,
        pieces: Pieces<'_, '_>,
        first_offset: i64,
        next_offset: i64,
        max_timestamp: i64,
        offset_of_max_timestamp: i64,
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        let pos = self.size();
        let len = pieces.len();
        let file = self.log_file()?;
        self.reserve_ahead(&*file, pos, pos + len);
        let written = match pieces {
            Pieces::Parts(parts) => file.write_all_vectored_at(parts, pos),
            Pieces::Streamed {
                headers,
                body_lens,
                bodies,
            } => {
                let mut at = pos;
                headers.iter().zip(body_lens).try_for_each(|(h, &body)| {
                    file.write_all_at(h, at)?;
                    bodies.write_to(&*file, at + h.len() as u64, body)?;
                    at += (h.len() + body) as u64;
                    Ok(())
                })
            }
        };
        written.map_err(|e| io_err("write", &self.log_path, e))?;
        let mut st = self.state.lock();
        st.bytes_since_index += len;
        if max_timestamp > st.max_timestamp {
            st.max_timestamp = max_timestamp;
            st.offset_of_max_timestamp = offset_of_max_timestamp;
        }
        if st.offset_index.entries.is_empty() || st.bytes_since_index >= index_interval_bytes {
            let rel = (first_offset - self.base_offset) as u32;
            let e = OffsetEntry {
                relative_offset: rel,
                position: pos as u32,
            };
            st.offset_index.entries.push(e);
            let te = TimeEntry {
                timestamp: st.max_timestamp,
                relative_offset: rel,
            };
            st.time_index.entries.push(te);
            st.bytes_since_index = 0;
        }
        st.next_offset = next_offset;
        drop(st);
        self.size.store(pos + len, Ordering::Release);
        Ok(())
    }

    /// Asks the disk to start writing what was appended since the last call, without
    /// waiting: an fsync that follows finds its pages already on their way.
    pub(crate) fn start_writeback(&self) {
        let end = self.size();
        let from = self.writeback_from.fetch_max(end, Ordering::Relaxed);
        if end <= from {
            return;
        }
        if let Ok(file) = self.log_file() {
            if let Err(e) = file.start_writeback(from, end - from) {
                tracing::debug!(path = %self.log_path.display(), error = %e, "cannot start writeback");
            }
        }
    }

    /// Allocates blocks ahead of a write of `[pos, end)` ([`reserve_until`]). A hint: a file
    /// system that cannot (a full disk) leaves the write to allocate its own blocks.
    fn reserve_ahead(&self, file: &dyn FsFile, pos: u64, end: u64) {
        let from = self.reserved_to.load(Ordering::Relaxed).max(pos);
        let Some(to) = reserve_until(end, from) else {
            return;
        };
        self.reserved.store(true, Ordering::Relaxed);
        // Not retried before the next step either way: a full disk is not asked again per write.
        self.reserved_to.store(to, Ordering::Relaxed);
        if let Err(e) = file.reserve(from, to - from) {
            tracing::debug!(path = %self.log_path.display(), error = %e, "cannot reserve blocks");
        }
    }

    /// The batch containing `offset`: its byte position and header, or `None` if the segment
    /// ends first. Starts from the offset index and hops batch headers.
    pub(crate) fn find_position(
        &self,
        offset: i64,
        size: u64,
    ) -> Result<Option<(u64, BatchHeader)>, StorageError> {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let mut pos = u64::from(self.state.lock().offset_index.lookup(rel));
        let file = self.log_file()?;
        while pos + HEADER_LEN as u64 <= size {
            let header = self.header_at(&*file, pos)?;
            if header.last_offset() >= offset {
                return Ok(Some((pos, header)));
            }
            pos += header.total_len() as u64;
        }
        Ok(None)
    }

    /// The batch header at `pos`. Only a lying index or damage found at load can make this
    /// fail: refuse rather than serve garbage.
    fn header_at(&self, file: &dyn FsFile, pos: u64) -> Result<BatchHeader, StorageError> {
        let mut buf = [0u8; HEADER_LEN];
        self.read_exact_at(file, &mut buf, pos)?;
        BatchHeader::parse(&buf).map_err(|source| StorageError::Corrupt {
            path: self.log_path.clone(),
            position: pos,
            source,
        })
    }

    /// Where the whole batches from `first` (at `pos`) end, below `limit` and with last
    /// offsets below `max_offset`: `(end position, offset after the last one)`. Batches up
    /// to the last index entry that qualifies are skipped without reading them (each entry
    /// is a batch start, and the batches before it end below its offset), so only the
    /// headers of the last `index.interval.bytes` or so are read.
    pub(crate) fn whole_batches_end(
        &self,
        pos: u64,
        first: &BatchHeader,
        limit: u64,
        max_offset: i64,
        size: u64,
    ) -> Result<(u64, i64), StorageError> {
        let limit = limit.min(size);
        let first_end = pos + first.total_len() as u64;
        if first.last_offset() >= max_offset || first_end > limit {
            return Ok((pos, first.base_offset));
        }
        let (mut p, mut next) = (first_end, first.next_offset());
        {
            let st = self.state.lock();
            let entries = &st.offset_index.entries;
            let by_position = entries.partition_point(|e| u64::from(e.position) <= limit);
            let by_offset = entries
                .partition_point(|e| self.base_offset + i64::from(e.relative_offset) <= max_offset);
            if let Some(e) = entries[..by_position.min(by_offset)].last() {
                if u64::from(e.position) > p {
                    p = u64::from(e.position);
                    next = self.base_offset + i64::from(e.relative_offset);
                }
            }
        }
        let file = self.log_file()?;
        while p + HEADER_LEN as u64 <= limit {
            let h = self.header_at(&*file, p)?;
            if h.last_offset() >= max_offset || p + h.total_len() as u64 > limit {
                break;
            }
            p += h.total_len() as u64;
            next = h.next_offset();
        }
        Ok((p, next))
    }

    /// First batch whose max timestamp is `>= ts`: `(base offset, max timestamp)`.
    pub(crate) fn find_timestamp(
        &self,
        ts: i64,
        size: u64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let start_rel = self.state.lock().time_index.lookup(ts);
        let Some((mut pos, _)) =
            self.find_position(self.base_offset + i64::from(start_rel), size)?
        else {
            return Ok(None);
        };
        let file = self.log_file()?;
        while pos + HEADER_LEN as u64 <= size {
            let h = self.header_at(&*file, pos)?;
            if h.max_timestamp >= ts {
                return self.first_record_at(pos, &h, ts).map(Some);
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// The first record of the batch at `pos` whose timestamp is at least `ts`, as Kafka
    /// answers ListOffsets: this looks inside the batch, decompressing it if need be.
    fn first_record_at(
        &self,
        pos: u64,
        h: &BatchHeader,
        ts: i64,
    ) -> Result<(i64, i64), StorageError> {
        if h.is_log_append_time() {
            return Ok((h.base_offset, h.max_timestamp));
        }
        let corrupt = |e| StorageError::Corrupt {
            path: self.log_path.clone(),
            position: pos,
            source: e,
        };
        let batch = self.read_range(pos, h.total_len())?;
        for meta in vltava_record::record_stream(&batch, MAX_DECOMPRESSED).map_err(corrupt)? {
            let meta = meta.map_err(corrupt)?;
            let t = h.base_timestamp + meta.timestamp_delta;
            if t >= ts {
                return Ok((h.base_offset + meta.offset_delta, t));
            }
        }
        Ok((
            h.base_offset + i64::from(h.last_offset_delta),
            h.max_timestamp,
        ))
    }

    /// Reads `[pos, pos+len)` into a fresh buffer.
    pub(crate) fn read_range(&self, pos: u64, len: usize) -> Result<Vec<u8>, StorageError> {
        self.log_file()?
            .read_exact_vec_at(len, pos)
            .map_err(|e| io_err("read", &self.log_path, e))
    }

    /// Makes the `.log` bytes durable. A sealed segment whose handle was closed is reopened:
    /// its bytes were then already durable or written by an earlier process.
    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        // Entries first: the recovery point this fsync moves lets the next load trust the
        // index files (unsynced, as ever) without a rescan, also after a kill -9.
        self.write_pending_indexes(&mut self.state.lock())?;
        self.log_file()?
            .sync_data()
            .map_err(|e| io_err("fsync", &self.log_path, e))
    }

    /// Writes the index entries appended since the last call to their files.
    fn write_pending_indexes(&self, st: &mut SegmentState) -> Result<(), StorageError> {
        let (n, tn) = (st.offset_entries_written, st.time_entries_written);
        if n == st.offset_index.entries.len() && tn == st.time_index.entries.len() {
            return Ok(());
        }
        if self.handles.lock().hold == Hold::Replaced {
            // Its paths now name the cleaned segment's files, which have indexes of their own.
            st.offset_entries_written = st.offset_index.entries.len();
            st.time_entries_written = st.time_index.entries.len();
            return Ok(());
        }
        let idx = OffsetIndex::encode(st.offset_index.entries.get(n..).unwrap_or_default());
        let tidx = TimeIndex::encode(st.time_index.entries.get(tn..).unwrap_or_default());
        self.with_indexes(|[index, time]| {
            if !idx.is_empty() {
                index
                    .write_all_at(&idx, (n * OFFSET_ENTRY_LEN) as u64)
                    .map_err(|e| io_err("write", &self.path(SegmentFile::OffsetIndex), e))?;
            }
            if !tidx.is_empty() {
                time.write_all_at(&tidx, (tn * TIME_ENTRY_LEN) as u64)
                    .map_err(|e| io_err("write", &self.path(SegmentFile::TimeIndex), e))?;
            }
            Ok(())
        })?;
        st.offset_entries_written = st.offset_index.entries.len();
        st.time_entries_written = st.time_index.entries.len();
        Ok(())
    }

    /// Called when the segment stops being active: records the final max timestamp in the
    /// time index (as Kafka does on roll) and syncs the index files.
    pub(crate) fn seal(&self) -> Result<(), StorageError> {
        let mut st = self.state.lock();
        let last_rel = (st.next_offset - 1 - self.base_offset).max(0) as u32;
        let need = st
            .time_index
            .entries
            .last()
            .is_none_or(|e| e.timestamp < st.max_timestamp && e.relative_offset <= last_rel);
        if need && st.max_timestamp >= 0 && st.next_offset > self.base_offset {
            let te = TimeEntry {
                timestamp: st.max_timestamp,
                relative_offset: last_rel,
            };
            st.time_index.entries.push(te);
        }
        self.write_pending_indexes(&mut st)?;
        drop(st);
        if self.reserved.swap(false, Ordering::Relaxed) {
            // Releases the blocks reserved past the end: a `set_len` to the file's own length,
            // which keeps every byte (a damaged tail that was acknowledged included). Not
            // synced: after a crash they stay allocated, unread, until the segment is deleted.
            let file = self.log_file()?;
            let len = file
                .size()
                .and_then(|len| file.set_len(len).map(|()| len))
                .map_err(|e| io_err("truncate", &self.log_path, e))?;
            self.reserved_to.store(len, Ordering::Relaxed);
        }
        self.with_indexes(|[index, time]| {
            index
                .sync_data()
                .map_err(|e| io_err("fsync", &self.path(SegmentFile::OffsetIndex), e))?;
            time.sync_data()
                .map_err(|e| io_err("fsync", &self.path(SegmentFile::TimeIndex), e))
        })
    }

    /// The path of this segment's `.log` with a suffix added (`.cleaned`, `.swap`).
    pub(crate) fn log_path_with(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
        dir.join(format!("{}.log{suffix}", file_stem(base_offset)))
    }

    pub(crate) fn delete_files(&self) {
        SegmentFile::delete_all(&*self.files.fs, &self.dir, self.base_offset);
    }
}

impl From<(PathBuf, u64, RecordError)> for StorageError {
    fn from((path, position, source): (PathBuf, u64, RecordError)) -> Self {
        StorageError::Corrupt {
            path,
            position,
            source,
        }
    }
}
