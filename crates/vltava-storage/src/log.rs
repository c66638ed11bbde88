//! A partition's log: an ordered set of segments, the only writer of offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use vltava_record::stream::StreamedBatch;
use vltava_record::{BatchHeader, Batches, EndTxnMarker, TransactionResult};
use vltava_types::{LeaderEpoch, Offset, ProducerEpoch, ProducerId};

use crate::epoch::{EpochEntry, LeaderEpochCache};
use crate::fs::{BodySource, Fs, OpenMode, StdFs};
use crate::producer_state::{
    self, AbortedTxn, BatchInfo, CompletedTxn, Origin, ProducerEntry, ProducerError,
    ProducerStateManager, Staged, NO_PRODUCER_ID,
};
use crate::segment::{Loaded, Pieces, Segment, SegmentFile, SegmentFs};
use crate::{io_err, StorageError};

/// How many sealed segments may hold their `.log` open because no fsync has covered their
/// bytes yet. A roll past it fsyncs the oldest, so a log that is never flushed (acks=1 and
/// no flush policy) still holds a bounded number of descriptors.
const MAX_UNSYNCED_SEALED: usize = 2;

/// Per-log settings, in Kafka's topic-config terms.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`
    pub segment_bytes: u64,
    /// `segment.ms`
    pub segment_ms: i64,
    /// `retention.ms`; negative means unlimited.
    pub retention_ms: i64,
    /// `retention.bytes`; negative means unlimited.
    pub retention_bytes: i64,
    /// `index.interval.bytes`
    pub index_interval_bytes: u64,
    /// `max.message.bytes`: largest batch accepted.
    pub max_message_bytes: usize,
    /// `message.timestamp.type` is LogAppendTime.
    pub log_append_time: bool,
    /// `cleanup.policy` includes `delete`; compacted-only logs are never trimmed by time or size.
    pub delete_retention: bool,
    /// `cleanup.policy` includes `compact`: the cleaner keeps the latest record per key.
    pub compact: bool,
    /// `delete.retention.ms`: how long a tombstone stays after the cleaner's point passed it.
    pub delete_retention_ms: i64,
    /// `min.cleanable.dirty.ratio`
    pub min_cleanable_dirty_ratio: f64,
    /// `min.compaction.lag.ms`: records newer than this stay uncleaned.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: a dirty record older than this makes the log cleanable
    /// whatever its dirty ratio.
    pub max_compaction_lag_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: 7 * 24 * 3600 * 1000,
            retention_ms: 7 * 24 * 3600 * 1000,
            retention_bytes: -1,
            index_interval_bytes: 4096,
            max_message_bytes: 1_048_588,
            log_append_time: false,
            delete_retention: true,
            compact: false,
            delete_retention_ms: 24 * 3600 * 1000,
            min_cleanable_dirty_ratio: 0.5,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: Offset,
    pub last_offset: Offset,
    /// The broker timestamp if LogAppendTime was applied, else -1.
    pub log_append_time: i64,
    pub log_start_offset: Offset,
    /// The batch was a producer's retry of one already in the log: nothing was written, and
    /// the offsets are the original ones.
    pub duplicate: bool,
}

/// A producer this partition knows, for DescribeProducers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerInfo {
    pub producer_id: ProducerId,
    pub epoch: ProducerEpoch,
    pub last_sequence: i32,
    pub last_timestamp: i64,
    pub coordinator_epoch: i32,
    /// `Offset::NONE` when no transaction is open.
    pub current_txn_start_offset: Offset,
}

/// The bytes a fetch returns plus the log's offsets at the time of the read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole record batches, exactly as stored.
    pub records: Bytes,
    pub log_end_offset: Offset,
    pub log_start_offset: Offset,
}

/// Whole stored batches as a range of a segment's file. A fetch sends them to the socket
/// from the page cache (`sendfile`) instead of reading them into memory first.
///
/// The range was whole batches when it was found. Only a truncation (a follower
/// diverging from its leader, recovery) can shorten the file under it; a reader then
/// gets fewer bytes than `len` and must drop what it was answering rather than pad it.
/// Retention and compaction replace or unlink files but leave an open one intact.
#[derive(Clone)]
pub struct FileRegion {
    file: Arc<dyn crate::FsFile>,
    pub position: u64,
    pub len: usize,
}

impl FileRegion {
    /// The open file, for `sendfile`; `None` on a simulated disk.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.file.as_fd()
    }

    /// Copies the range into memory, for a stream that cannot take file bytes directly
    /// (TLS). Blocking: call it off the async workers.
    pub fn read(&self) -> std::io::Result<Vec<u8>> {
        self.file.read_exact_vec_at(self.len, self.position)
    }
}

impl std::fmt::Debug for FileRegion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileRegion")
            .field("position", &self.position)
            .field("len", &self.len)
            .finish()
    }
}

/// What [`Log::read_region`] found: the batches' place, not their bytes.
#[derive(Debug, Clone)]
pub struct RegionRead {
    pub region: Option<FileRegion>,
    /// The offset after the last batch in the region (the fetch offset when it is empty).
    pub next_offset: Offset,
    pub log_end_offset: Offset,
    pub log_start_offset: Offset,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start_offset: Offset,
    /// Offset the next appended record will get (Kafka's log end offset).
    pub log_end_offset: Offset,
    /// Everything below this offset is known to be on stable storage.
    pub flushed_offset: Offset,
}

/// An append validator that accepts everything, for appends with no producer state to check.
pub fn accept_all(_: &BatchHeader) -> Result<(), StorageError> {
    Ok(())
}

/// What a leader append takes: batches in memory, or batches validated as they were streamed
/// whose bodies a [`BodySource`] writes.
enum Incoming<'a, 'b> {
    Bytes(&'a [u8]),
    Streamed(&'a [StreamedBatch], &'a mut (dyn BodySource + 'b)),
}

/// A KIP-890 verification guard (see [`Log::start_txn_verification`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TxnGuard {
    pub producer_id: ProducerId,
    token: u64,
}

pub(crate) struct Inner {
    pub(crate) segments: BTreeMap<i64, Arc<Segment>>,
    pub(crate) next_offset: i64,
    pub(crate) log_start_offset: i64,
    pub(crate) config: LogConfig,
    epochs: LeaderEpochCache,
    /// Base offsets of sealed segments whose `.log` stays open until a flush covers them
    /// (see `Segment::retire`), oldest first.
    pub(crate) unsynced_sealed: Vec<i64>,
    producers: ProducerStateManager,
    /// Every aborted transaction in the log, by marker offset. Small (one entry per aborted
    /// transaction still in the log), and read by every read_committed fetch.
    aborted: Vec<AbortedTxn>,
    /// Offsets of the `.snapshot` files in the directory.
    snapshots: BTreeSet<i64>,
    /// KIP-890 verification guards: producers whose next transactional batch the
    /// coordinator is checking, by guard token. A marker for the producer drops its guard,
    /// so a batch verified before the transaction ended cannot open a new one after it.
    verifying: std::collections::HashMap<i64, u64>,
    next_guard: u64,
}

impl Inner {
    pub(crate) fn active(&self) -> &Arc<Segment> {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
}

/// What loading a log directory produced.
struct LoadedLog {
    inner: Inner,
    flushed_offset: i64,
    /// A batch header below the recovery point of the last segment is unreadable: the log
    /// cannot know its true end, so it must not accept writes.
    damaged: bool,
}

/// A partition log. Appends are serialised by one mutex held only for in-memory work and a
/// write into the page cache; fsync and reads run outside it. The exceptions are rare: a new
/// leader epoch's checkpoint and a truncation are made durable before the lock is released,
/// as Kafka does, because later appends depend on them.
pub struct Log {
    pub(crate) dir: PathBuf,
    pub(crate) files: SegmentFs,
    pub(crate) inner: Mutex<Inner>,
    /// The cleaner's progress; held for a whole cleaning, so retention (which only tries it)
    /// and a reload never change the segments the cleaner is rewriting.
    pub(crate) cleaner: Mutex<crate::cleaner::CleanerState>,
    /// Where the cleaned part of the log ends (Kafka's cleaner checkpoint), readable without
    /// waiting for a cleaning in progress.
    pub(crate) clean_offset: AtomicI64,
    /// The highest offset the caller wrote to the recovery-point checkpoint; see
    /// [`Log::recovery_point_written`].
    pub(crate) recovery_checkpoint: AtomicI64,
    /// Serialises fsyncs of this log so a flush knows exactly what it covered.
    flush_lock: Mutex<()>,
    flushed_offset: AtomicI64,
    /// Set after a failed write or fsync: nothing more is accepted, since what reached the
    /// disk is unknown.
    poisoned: AtomicBool,
    /// Set when a segment file is created; the next flush fsyncs the directory so the new
    /// file's name is as durable as its bytes.
    dir_dirty: AtomicBool,
}

impl std::fmt::Debug for Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Log")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// How to open an existing log directory.
#[derive(Debug, Clone, Copy)]
pub struct OpenOptions {
    /// The previous process shut down cleanly, so indexes can be trusted.
    pub clean_shutdown: bool,
    /// Offsets below this were flushed before the last stop (from the checkpoint); after an
    /// unclean stop, segments that may hold offsets at or above it are fully validated.
    pub recovery_point: Offset,
    /// Persisted log start offset, if any (DeleteRecords moves it inside a segment).
    pub log_start_offset: Offset,
}

/// Producer state snapshots are named by the offset they cover up to, like segments.
fn snapshot_path(dir: &Path, offset: i64) -> PathBuf {
    dir.join(format!("{}.snapshot", crate::segment::file_stem(offset)))
}

fn parse_snapshot_name(name: &str) -> Option<i64> {
    let stem = name.strip_suffix(".snapshot")?;
    let offset = stem.parse::<i64>().ok()?;
    (stem.len() == 20 && offset >= 0).then_some(offset)
}

/// How much of a segment recovery reads at once when it replays batch headers.
const SCAN_WINDOW: usize = 256 << 10;

/// Calls `f` with the header of every batch of `seg` that ends at or after `from` and starts
/// before `upto`, with the transaction marker of control batches. Reads in windows, so a
/// replay costs a few large reads, not one per batch.
fn scan_batches(
    seg: &Segment,
    from: i64,
    upto: i64,
    mut f: impl FnMut(&BatchHeader, Option<EndTxnMarker>),
) -> Result<(), StorageError> {
    let size = seg.size();
    let Some((mut pos, _)) = seg.find_position(from, size)? else {
        return Ok(());
    };
    let mut window: Vec<u8> = Vec::new();
    let mut window_start = pos;
    let corrupt = |pos: u64, source| StorageError::Corrupt {
        path: seg.log_path.clone(),
        position: pos,
        source,
    };
    while pos + vltava_record::HEADER_LEN as u64 <= size {
        let in_window = |pos: u64, len: usize, window: &Vec<u8>, start: u64| {
            pos >= start && pos + len as u64 <= start + window.len() as u64
        };
        if !in_window(pos, vltava_record::HEADER_LEN, &window, window_start) {
            window = seg.read_range(pos, SCAN_WINDOW.min((size - pos) as usize))?;
            window_start = pos;
        }
        let at = (pos - window_start) as usize;
        let h = BatchHeader::parse(&window[at..]).map_err(|e| corrupt(pos, e))?;
        if h.base_offset >= upto {
            break;
        }
        let total = h.total_len();
        let marker = if h.is_control() {
            if !in_window(pos, total, &window, window_start) {
                window = seg.read_range(pos, total.max(SCAN_WINDOW).min((size - pos) as usize))?;
                window_start = pos;
            }
            let at = (pos - window_start) as usize;
            window
                .get(at..at + total)
                .and_then(|b| vltava_record::read_end_txn_marker(b).ok())
        } else {
            None
        };
        f(&h, marker);
        pos += total as u64;
    }
    Ok(())
}

/// Producer state rebuilt for a log that ends at `upto`.
struct RebuiltProducers {
    state: ProducerStateManager,
    /// Where the replay started (the snapshot's offset): `.txnindex` entries below it are
    /// trusted, the ones at or above it came from the replay.
    replay_start: i64,
    replayed_aborted: Vec<AbortedTxn>,
}

/// Loads the latest readable snapshot at or below `upto` (deleting those above it and those
/// that fail their CRC) and replays every batch from there to `upto`. Without a snapshot the
/// replay starts at `no_snapshot_start`.
fn rebuild_producers(
    fs: &dyn Fs,
    dir: &Path,
    segments: &BTreeMap<i64, Arc<Segment>>,
    snapshots: &mut BTreeSet<i64>,
    upto: i64,
    no_snapshot_start: i64,
) -> Result<RebuiltProducers, StorageError> {
    for off in snapshots.split_off(&(upto + 1)) {
        let _ = fs.remove_file(&snapshot_path(dir, off));
    }
    let mut state = None;
    while let Some(&off) = snapshots.last() {
        let path = snapshot_path(dir, off);
        let read = fs
            .read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| producer_state::decode_snapshot(&b).map_err(|e| e.to_string()));
        match read {
            Ok(entries) => {
                state = Some(ProducerStateManager::from_entries(entries, off));
                break;
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "unreadable producer snapshot; using an older one");
                let _ = fs.remove_file(&path);
                snapshots.remove(&off);
            }
        }
    }
    let mut state = state.unwrap_or_else(|| ProducerStateManager::new(no_snapshot_start));
    let replay_start = state.end_offset();
    let mut replayed_aborted = Vec::new();
    let from_base = segments
        .range(..=replay_start)
        .next_back()
        .map_or(i64::MIN, |(b, _)| *b);
    for seg in segments.range(from_base..).map(|(_, s)| s) {
        if seg.base_offset >= upto {
            break;
        }
        scan_batches(seg, replay_start, upto, |h, marker| {
            if h.producer_id == NO_PRODUCER_ID || h.last_offset() < replay_start {
                return;
            }
            let mut staged = Staged::default();
            let info = BatchInfo {
                header: h,
                marker: marker.map(|m| (m.result, m.coordinator_epoch)),
            };
            if state.stage(&mut staged, info, Origin::Replication).is_ok() {
                for c in state.commit(staged) {
                    if c.aborted {
                        replayed_aborted.push(aborted_entry(&state, &c));
                    }
                }
            }
        })?;
    }
    Ok(RebuiltProducers {
        state,
        replay_start,
        replayed_aborted,
    })
}

fn aborted_entry(state: &ProducerStateManager, c: &CompletedTxn) -> AbortedTxn {
    AbortedTxn {
        producer_id: ProducerId::new(c.producer_id),
        first_offset: Offset::new(c.first_offset),
        last_offset: Offset::new(c.last_offset),
        last_stable_offset: Offset::new(state.last_stable_offset_after(c)),
    }
}

/// The `.txnindex` entries of every segment that end below `below`.
fn read_txn_indexes(
    fs: &dyn Fs,
    dir: &Path,
    segments: &BTreeMap<i64, Arc<Segment>>,
    below: i64,
) -> Result<Vec<AbortedTxn>, StorageError> {
    let mut out = Vec::new();
    for &base in segments.keys() {
        if base >= below {
            break;
        }
        let path = SegmentFile::TxnIndex.path(dir, base);
        match fs.read(&path) {
            Ok(b) => out.extend(
                producer_state::decode_aborted(&b)
                    .into_iter()
                    .filter(|t| t.last_offset.get() < below),
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("read", &path, e)),
        }
    }
    Ok(out)
}

/// Reads a log directory back: segments, offsets and the leader-epoch cache.
///
/// Only data at or above the recovery point after an unclean stop can be cut (at its first
/// bad byte, with every later segment, all of which are unflushed too). Anything below it was
/// acknowledged as durable: damage there is reported and the bytes are kept.
fn load(
    files: &SegmentFs,
    dir: &Path,
    config: LogConfig,
    opts: OpenOptions,
    now_ms: i64,
) -> Result<LoadedLog, StorageError> {
    let (recovery_point, opts_log_start) = (opts.recovery_point.get(), opts.log_start_offset.get());
    let fs = &*files.fs;
    if !fs.exists(dir) {
        fs.create_dir_all(dir)
            .map_err(|e| io_err("create dir", dir, e))?;
        if let Some(parent) = dir.parent() {
            crate::sync_dir_in(fs, parent)?;
        }
    }
    crate::cleaner::recover_swaps(fs, dir)?;
    let mut bases = Vec::new();
    let mut index_files = Vec::new();
    let mut snapshots = BTreeSet::new();
    for name in fs.read_dir(dir).map_err(|e| io_err("list", dir, e))? {
        if let Some(offset) = parse_snapshot_name(&name) {
            snapshots.insert(offset);
            continue;
        }
        match SegmentFile::parse_name(&name) {
            Some((SegmentFile::Log, base)) => bases.push(base),
            Some((_, base)) => index_files.push((base, dir.join(&name))),
            None => {}
        }
    }
    bases.sort_unstable();
    // An index whose log is gone (a deletion cut short) would be mistaken for a new
    // segment's index later.
    for (base, path) in index_files {
        if bases.binary_search(&base).is_err() {
            let _ = fs.remove_file(&path);
        }
    }
    let mut segments = BTreeMap::new();
    let mut next_offset = 0;
    let mut cut_at: Option<i64> = None;
    let mut damaged = false;
    for (i, base) in bases.iter().copied().enumerate() {
        if let Some(cut) = cut_at {
            // Later segments start past the cut, so above the recovery point: unflushed.
            tracing::warn!(dir = %dir.display(), base_offset = base, cut_offset = cut, "deleting unflushed segment after a cut");
            SegmentFile::delete_all(fs, dir, base);
            continue;
        }
        let next_base = bases.get(i + 1).copied();
        let may_be_unflushed = next_base.is_none_or(|n| n > recovery_point);
        let cut_from = (!opts.clean_shutdown && may_be_unflushed).then_some(recovery_point);
        let (seg, loaded) = Segment::open(
            files,
            dir,
            base,
            cut_from,
            config.index_interval_bytes,
            now_ms,
        )?;
        next_offset = seg.next_offset().max(base);
        // The segment ends before the next one starts: its unflushed tail never reached the
        // disk but a later segment's name did (a directory sync for another reason). What
        // follows the gap is unflushed too and must go, or offsets would have a hole.
        let gap = cut_from.is_some_and(|rp| next_offset >= rp)
            && next_base.is_some_and(|n| next_offset < n);
        match loaded {
            Loaded::Clean if gap => {
                tracing::warn!(dir = %dir.display(), base_offset = base, end_offset = next_offset, "segment ends before the next one starts: dropping the unflushed segments after it");
                cut_at = Some(next_offset);
            }
            Loaded::Clean => {}
            Loaded::Cut => cut_at = Some(next_offset),
            Loaded::Damaged => damaged |= next_base.is_none(),
        }
        segments.insert(base, Arc::new(seg));
    }
    if cut_at.is_some() {
        // New batches will take the offsets of the deleted segments: their names must not
        // come back after another crash.
        crate::sync_dir_in(fs, dir)?;
    }
    if segments.is_empty() {
        let base = opts_log_start.max(0);
        segments.insert(base, Arc::new(Segment::create(files, dir, base, now_ms)?));
        next_offset = base;
    }
    // Only the active segment keeps its files open; sealed ones reopen their `.log` to read.
    let mut iter = segments.values().rev();
    iter.next().expect("non-empty").activate()?;
    iter.for_each(|s| s.release());
    let first_base = *segments.keys().next().expect("non-empty");
    let log_start_offset = opts_log_start.clamp(first_base, next_offset);
    let flushed_offset = if opts.clean_shutdown {
        next_offset
    } else {
        recovery_point.min(next_offset)
    };
    let mut epochs = LeaderEpochCache::read(fs, dir)?;
    let trimmed_end = epochs.truncate_from_end(next_offset);
    let trimmed_start = epochs.truncate_from_start(log_start_offset);
    if trimmed_end || trimmed_start {
        epochs.write(fs, dir)?;
    }
    if damaged {
        tracing::error!(dir = %dir.display(), "log end is unknown after damage below the recovery point; refusing writes");
    }
    // A clean stop writes a snapshot at the log end, so a cleanly stopped log without any
    // was written before producer state existed: it has no transactions, and its last two
    // segments hold every producer's recent batches, as Kafka assumes when it upgrades.
    let no_snapshot_start = if opts.clean_shutdown && snapshots.is_empty() {
        segments
            .keys()
            .rev()
            .nth(1)
            .copied()
            .unwrap_or(first_base)
            .max(log_start_offset)
    } else {
        log_start_offset
    };
    let rebuilt = rebuild_producers(
        fs,
        dir,
        &segments,
        &mut snapshots,
        next_offset,
        no_snapshot_start,
    )?;
    let mut aborted = read_txn_indexes(fs, dir, &segments, rebuilt.replay_start)?;
    aborted.extend(rebuilt.replayed_aborted);
    aborted.sort_by_key(|t| t.last_offset);
    Ok(LoadedLog {
        inner: Inner {
            segments,
            next_offset,
            log_start_offset,
            config,
            epochs,
            unsynced_sealed: Vec::new(),
            producers: rebuilt.state,
            aborted,
            snapshots,
            verifying: Default::default(),
            next_guard: 0,
        },
        flushed_offset,
        damaged,
    })
}

impl Log {
    /// Opens or creates the log in `dir` on the real file system, recovering from an unclean
    /// shutdown.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        opts: OpenOptions,
        now_ms: i64,
    ) -> Result<Self, StorageError> {
        Self::open_with(StdFs::shared(), dir, config, opts, now_ms)
    }

    /// [`Log::open`] on the file system `fs` (a simulated one in tests).
    pub fn open_with(
        fs: Arc<dyn Fs>,
        dir: &Path,
        config: LogConfig,
        opts: OpenOptions,
        now_ms: i64,
    ) -> Result<Self, StorageError> {
        let files = SegmentFs::new(fs);
        let loaded = load(&files, dir, config, opts, now_ms)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            files,
            inner: Mutex::new(loaded.inner),
            cleaner: Mutex::new(crate::cleaner::CleanerState::new(now_ms)),
            clean_offset: AtomicI64::new(0),
            recovery_checkpoint: AtomicI64::new(loaded.flushed_offset),
            flush_lock: Mutex::new(()),
            flushed_offset: AtomicI64::new(loaded.flushed_offset),
            poisoned: AtomicBool::new(loaded.damaged),
            // Recovery may have created or truncated files: the first flush syncs the dir.
            dir_dirty: AtomicBool::new(true),
        })
    }

    /// Brings a poisoned log back without a process restart (once the disk works again):
    /// the directory is loaded afresh, as after an unclean stop, and cut back to the last
    /// flushed offset, since nothing above it is known to be on disk. A log that is not
    /// poisoned is left alone.
    pub fn reopen(&self, now_ms: i64) -> Result<(), StorageError> {
        let _cleaning = self.cleaner.lock();
        let _flush = self.flush_lock.lock();
        let mut inner = self.inner.lock();
        if !self.is_poisoned() {
            return Ok(());
        }
        let durable = self.flushed_offset.load(Ordering::Acquire);
        let opts = OpenOptions {
            clean_shutdown: false,
            recovery_point: Offset::new(durable),
            log_start_offset: Offset::new(inner.log_start_offset),
        };
        let loaded = load(&self.files, &self.dir, inner.config.clone(), opts, now_ms)?;
        if loaded.damaged {
            return Err(self.poisoned_err());
        }
        *inner = loaded.inner;
        self.flushed_offset
            .store(loaded.flushed_offset, Ordering::Release);
        self.dir_dirty.store(true, Ordering::Release);
        if inner.next_offset > durable {
            self.truncate_locked(&mut inner, durable)?;
        }
        self.poisoned.store(false, Ordering::Release);
        tracing::warn!(dir = %self.dir.display(), log_end_offset = inner.next_offset, "poisoned log reopened at its last flushed offset");
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> LogConfig {
        self.inner.lock().config.clone()
    }

    pub fn set_config(&self, config: LogConfig) {
        self.inner.lock().config = config;
    }

    pub fn offsets(&self) -> LogOffsets {
        let inner = self.inner.lock();
        LogOffsets {
            log_start_offset: Offset::new(inner.log_start_offset),
            log_end_offset: Offset::new(inner.next_offset),
            flushed_offset: Offset::new(self.flushed_offset.load(Ordering::Acquire)),
        }
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    pub(crate) fn poisoned_err(&self) -> StorageError {
        StorageError::Poisoned {
            dir: self.dir.clone(),
        }
    }

    /// Marks the log unwritable after a failed write, fsync, roll or truncation: what reached
    /// the disk is unknown, so nothing more is accepted until [`Log::reopen`].
    pub(crate) fn poison(&self, e: StorageError) -> StorageError {
        self.poisoned.store(true, Ordering::Release);
        tracing::error!(dir = %self.dir.display(), error = %e, "log stops accepting writes");
        e
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner.lock().segments.values().map(|s| s.size()).sum()
    }

    /// The leader-epoch cache's entries, oldest first.
    pub fn leader_epochs(&self) -> Vec<EpochEntry> {
        self.inner.lock().epochs.entries().to_vec()
    }

    /// OffsetForLeaderEpoch: `(epoch, end_offset)` with Kafka's semantics, see
    /// [`LeaderEpochCache::end_offset_for`].
    pub fn end_offset_for_epoch(&self, requested_epoch: LeaderEpoch) -> (LeaderEpoch, Offset) {
        let inner = self.inner.lock();
        let (epoch, end) = inner
            .epochs
            .end_offset_for(requested_epoch.get(), inner.next_offset);
        (LeaderEpoch::new(epoch), Offset::new(end))
    }

    /// Records that `leader_epoch` starts at the current log end, as a new leader does before
    /// its first append, so OffsetForLeaderEpoch can answer for an epoch that has written
    /// nothing yet. An epoch not newer than the latest one is ignored.
    pub fn assign_leader_epoch(&self, leader_epoch: LeaderEpoch) -> Result<(), StorageError> {
        let leader_epoch = leader_epoch.get();
        let mut inner = self.inner.lock();
        if leader_epoch < 0
            || inner
                .epochs
                .latest_epoch()
                .is_some_and(|l| leader_epoch <= l)
        {
            return Ok(());
        }
        let mut epochs = inner.epochs.clone();
        epochs.assign(leader_epoch, inner.next_offset);
        epochs
            .write(self.fs(), &self.dir)
            .map_err(|e| self.poison(e))?;
        inner.epochs = epochs;
        Ok(())
    }

    /// Appends a validated produce payload (one or more v2 batches) as the partition leader:
    /// assigns offsets and stamps `leader_epoch`, and records the epoch's start offset if it
    /// is new. `batches` is written as it is (no copy): each batch's rewritten 61-byte header
    /// goes to the file in front of the rest of the batch, in one vectored write.
    ///
    /// `validator` runs under the log's lock, before anything is written, once per batch with
    /// the header as it will be stored (assigned offsets and epoch, LogAppendTime applied), so
    /// checks against producer state see appends in their true order. Its error aborts the
    /// whole append and is returned as is; it should only commit state once this returns
    /// `Ok`. The caller has validated `batches` with [`vltava_record::validate`]; this only
    /// rewrites the fields outside the CRC (and, for LogAppendTime, the max timestamp and CRC).
    pub fn append_as_leader<E, V>(
        &self,
        batches: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
        validator: V,
    ) -> Result<AppendInfo, E>
    where
        E: From<StorageError>,
        V: FnMut(&BatchHeader) -> Result<(), E>,
    {
        self.append_from(
            Incoming::Bytes(batches),
            leader_epoch.get(),
            now_ms,
            validator,
            Origin::Client,
            None,
        )
    }

    /// [`Log::append_as_leader`], with the KIP-890 guard of a transactional batch the
    /// coordinator has just verified, if any: unless the producer's transaction is already
    /// open here, the batch is written only if `guard` is still the producer's verification
    /// guard, i.e. no marker for that producer was written since
    /// [`Log::start_txn_verification`].
    pub fn append_as_leader_guarded<E, V>(
        &self,
        batches: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
        validator: V,
        guard: Option<TxnGuard>,
    ) -> Result<AppendInfo, E>
    where
        E: From<StorageError>,
        V: FnMut(&BatchHeader) -> Result<(), E>,
    {
        self.append_from(
            Incoming::Bytes(batches),
            leader_epoch.get(),
            now_ms,
            validator,
            Origin::Client,
            guard,
        )
    }

    /// [`Log::append_as_leader_guarded`] for batches validated as they were streamed
    /// ([`vltava_record::stream::StreamValidator`]): their headers are here, and `bodies`
    /// writes the rest of each batch into the file behind its rewritten header. A failure
    /// of `bodies` poisons the log, as any failed write does.
    pub fn append_streamed_as_leader<E, V>(
        &self,
        batches: &[StreamedBatch],
        bodies: &mut dyn BodySource,
        leader_epoch: LeaderEpoch,
        now_ms: i64,
        validator: V,
        guard: Option<TxnGuard>,
    ) -> Result<AppendInfo, E>
    where
        E: From<StorageError>,
        V: FnMut(&BatchHeader) -> Result<(), E>,
    {
        self.append_from(
            Incoming::Streamed(batches, bodies),
            leader_epoch.get(),
            now_ms,
            validator,
            Origin::Client,
            guard,
        )
    }

    /// Starts a KIP-890 verification of `producer_id`'s next transactional batch: the guard
    /// to append it with once the coordinator has confirmed the partition is in its
    /// transaction.
    pub fn start_txn_verification(&self, producer_id: ProducerId) -> TxnGuard {
        let mut inner = self.inner.lock();
        inner.next_guard += 1;
        let token = inner.next_guard;
        inner.verifying.insert(producer_id.get(), token);
        TxnGuard { producer_id, token }
    }

    /// Drops a guard that will not be used (the verification failed).
    pub fn end_txn_verification(&self, guard: TxnGuard) {
        let mut inner = self.inner.lock();
        if inner.verifying.get(&guard.producer_id.get()) == Some(&guard.token) {
            inner.verifying.remove(&guard.producer_id.get());
        }
    }

    /// Appends a coordinator's own batch as the partition leader (Kafka's
    /// `AppendOrigin.COORDINATOR`): producer epochs are checked, sequences are not and no
    /// batch is taken for a retry, because a coordinator's transactional batches (the
    /// offsets of TxnOffsetCommit) carry no sequence.
    pub fn append_as_coordinator(
        &self,
        batches: &[u8],
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        self.append_from(
            Incoming::Bytes(batches),
            leader_epoch.get(),
            now_ms,
            |_| Ok(()),
            Origin::Coordinator,
            None,
        )
    }

    fn append_from<E, V>(
        &self,
        incoming: Incoming<'_, '_>,
        leader_epoch: i32,
        now_ms: i64,
        mut validator: V,
        origin: Origin,
        guard: Option<TxnGuard>,
    ) -> Result<AppendInfo, E>
    where
        E: From<StorageError>,
        V: FnMut(&BatchHeader) -> Result<(), E>,
    {
        let mut inner = self.inner.lock();
        if self.is_poisoned() {
            return Err(self.poisoned_err().into());
        }
        let base_offset = inner.next_offset;
        let log_append = inner.config.log_append_time;
        // First pass, headers only: a rejected append leaves the log and the buffer untouched.
        let mut offset = base_offset;
        let mut staged = Staged::default();
        let mut count = 0usize;
        let mut idempotent = false;
        let mut duplicate = None;
        let mut in_memory;
        let mut streamed;
        let headers: &mut dyn Iterator<Item = Result<BatchHeader, StorageError>> = match &incoming {
            Incoming::Bytes(batches) => {
                in_memory = self.headers(batches);
                &mut in_memory
            }
            Incoming::Streamed(batches, _) => {
                streamed = batches.iter().map(|b| Ok(b.parsed()));
                &mut streamed
            }
        };
        for header in headers {
            let mut h = header?;
            h.base_offset = offset;
            h.partition_leader_epoch = leader_epoch;
            if log_append {
                h = h.with_log_append_time(now_ms);
            }
            validator(&h)?;
            if let Some(g) = guard.filter(|g| g.producer_id.get() == h.producer_id) {
                let pid = g.producer_id.get();
                let open = inner
                    .producers
                    .entry(pid)
                    .is_some_and(|e| e.current_txn_first_offset.is_some());
                if !open && inner.verifying.get(&pid) != Some(&g.token) {
                    return Err(StorageError::from(ProducerError::InvalidTxnState {
                        producer_id: pid,
                        reason: "its transaction ended while the batch was being verified",
                    })
                    .into());
                }
            }
            if h.producer_id != NO_PRODUCER_ID || h.is_control() {
                idempotent = true;
                let retry = match origin {
                    Origin::Client => inner.producers.find_duplicate(&h),
                    _ => None,
                };
                match retry {
                    Some(d) => duplicate = Some(d),
                    None => inner
                        .producers
                        .stage(
                            &mut staged,
                            BatchInfo {
                                header: &h,
                                marker: None,
                            },
                            origin,
                        )
                        .map_err(StorageError::from)?,
                }
            }
            count += 1;
            offset = h.next_offset();
        }
        if idempotent && count > 1 {
            return Err(StorageError::from(ProducerError::MultipleBatches).into());
        }
        if let Some(d) = duplicate {
            return Ok(AppendInfo {
                base_offset: Offset::new(d.first_offset()),
                last_offset: Offset::new(d.last_offset),
                log_append_time: if log_append { d.timestamp } else { -1 },
                log_start_offset: Offset::new(inner.log_start_offset),
                duplicate: true,
            });
        }
        // The caller's bytes are written as they are; only each batch's header is rewritten,
        // in a copy written in front of the rest of the batch.
        let mut max_ts = -1i64;
        let mut offset_of_max_ts = base_offset;
        let mut next = base_offset;
        let mut headers: Vec<[u8; vltava_record::HEADER_LEN]> = Vec::with_capacity(count);
        let lat = log_append.then_some(now_ms);
        let mut account = |h: &BatchHeader, next: &mut i64| {
            let ts = if log_append { now_ms } else { h.max_timestamp };
            let last = *next + i64::from(h.last_offset_delta);
            if ts > max_ts {
                max_ts = ts;
                offset_of_max_ts = last;
            }
            *next = last + 1;
        };
        let parts: Vec<&[u8]>;
        let body_lens: Vec<usize>;
        let pieces = match incoming {
            Incoming::Bytes(batches) => {
                let mut bodies: Vec<&[u8]> = Vec::with_capacity(count);
                let mut pos = 0;
                while pos < batches.len() {
                    let h =
                        vltava_record::BatchHeader::parse(&batches[pos..]).map_err(|source| {
                            StorageError::Corrupt {
                                path: self.dir.clone(),
                                position: pos as u64,
                                source,
                            }
                        })?;
                    let batch = &batches[pos..pos + h.total_len()];
                    headers.push(vltava_record::stored_header(batch, next, leader_epoch, lat));
                    bodies.push(&batch[vltava_record::HEADER_LEN..]);
                    account(&h, &mut next);
                    pos += h.total_len();
                }
                parts = headers
                    .iter()
                    .zip(&bodies)
                    .flat_map(|(h, b)| [&h[..], b])
                    .collect();
                Pieces::Parts(&parts)
            }
            Incoming::Streamed(batches, bodies) => {
                for b in batches {
                    headers.push(b.stored_header(next, leader_epoch, lat));
                    account(&b.parsed(), &mut next);
                }
                body_lens = batches.iter().map(|b| b.body_len).collect();
                Pieces::Streamed {
                    headers: &headers,
                    body_lens: &body_lens,
                    bodies,
                }
            }
        };
        debug_assert_eq!(next, offset);
        let epoch_start = (leader_epoch >= 0).then_some((leader_epoch, base_offset));
        self.write_locked(
            &mut inner,
            pieces,
            offset,
            max_ts,
            offset_of_max_ts,
            epoch_start.as_slice(),
            now_ms,
        )?;
        Self::commit_producers(&mut inner, staged);
        if let Some(g) = guard {
            // The transaction is open here now: later batches need no verification.
            inner.verifying.remove(&g.producer_id.get());
        }
        Ok(AppendInfo {
            base_offset: Offset::new(base_offset),
            last_offset: Offset::new(offset - 1),
            log_append_time: if log_append { now_ms } else { -1 },
            log_start_offset: Offset::new(inner.log_start_offset),
            duplicate: false,
        })
    }

    /// Applies an append's producer changes once its batches are written, and indexes the
    /// transactions it aborted.
    fn commit_producers(inner: &mut Inner, staged: Staged) {
        let completed = staged.completed().to_vec();
        let entries: Vec<AbortedTxn> = completed
            .iter()
            .filter(|c| c.aborted)
            .map(|c| aborted_entry(&inner.producers, c))
            .collect();
        inner.producers.commit(staged);
        inner.aborted.extend(entries);
    }

    /// Writes a transaction marker for `producer_id` as the partition leader (the
    /// transaction coordinator's WriteTxnMarkers): one control batch that commits or aborts
    /// the producer's open transaction here. A marker with an older producer epoch gets
    /// INVALID_PRODUCER_EPOCH, one from an older coordinator TRANSACTION_COORDINATOR_FENCED.
    #[allow(clippy::too_many_arguments)]
    pub fn append_txn_marker(
        &self,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        result: TransactionResult,
        coordinator_epoch: i32,
        leader_epoch: LeaderEpoch,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        let (producer_id, producer_epoch) = (producer_id.get(), producer_epoch.get());
        let leader_epoch = leader_epoch.get();
        let mut inner = self.inner.lock();
        if self.is_poisoned() {
            return Err(self.poisoned_err());
        }
        let base_offset = inner.next_offset;
        let batch = vltava_record::write_end_txn_marker(
            &vltava_record::MarkerBatch {
                base_offset,
                partition_leader_epoch: leader_epoch,
                producer_id,
                producer_epoch,
                timestamp: now_ms,
            },
            EndTxnMarker {
                result,
                coordinator_epoch,
            },
        );
        let h = BatchHeader::parse(&batch).map_err(|source| StorageError::Corrupt {
            path: self.dir.clone(),
            position: 0,
            source,
        })?;
        let mut staged = Staged::default();
        inner.producers.stage(
            &mut staged,
            BatchInfo {
                header: &h,
                marker: Some((result, coordinator_epoch)),
            },
            Origin::Coordinator,
        )?;
        let epoch_start = (leader_epoch >= 0).then_some((leader_epoch, base_offset));
        self.write_locked(
            &mut inner,
            Pieces::Parts(&[&batch]),
            base_offset + 1,
            now_ms,
            base_offset,
            epoch_start.as_slice(),
            now_ms,
        )?;
        Self::commit_producers(&mut inner, staged);
        // A batch verified for the transaction this marker ends must not open another.
        inner.verifying.remove(&producer_id);
        Ok(AppendInfo {
            base_offset: Offset::new(base_offset),
            last_offset: Offset::new(base_offset),
            log_append_time: -1,
            log_start_offset: Offset::new(inner.log_start_offset),
            duplicate: false,
        })
    }

    /// The first offset of the oldest open transaction, if any: consumers reading committed
    /// data stop there.
    pub fn first_unstable_offset(&self) -> Option<Offset> {
        self.inner
            .lock()
            .producers
            .first_unstable_offset()
            .map(Offset::new)
    }

    /// Whether `producer_id` has a transaction open here (a transactional batch with no
    /// marker after it yet), in `epoch` or an older one.
    pub fn in_transaction(&self, producer_id: ProducerId, epoch: ProducerEpoch) -> bool {
        self.inner
            .lock()
            .producers
            .entry(producer_id.get())
            .is_some_and(|e| e.current_txn_first_offset.is_some() && e.epoch <= epoch.get())
    }

    /// Aborted transactions that overlap `[from, upto)`, oldest marker first: what a
    /// read_committed fetch of that range returns so clients drop those records.
    pub fn aborted_transactions(&self, from: Offset, upto: Offset) -> Vec<AbortedTxn> {
        let (from, upto) = (from.get(), upto.get());
        let inner = self.inner.lock();
        let start = inner
            .aborted
            .partition_point(|t| t.last_offset.get() < from);
        inner.aborted[start..]
            .iter()
            .filter(|t| t.first_offset.get() < upto)
            .copied()
            .collect()
    }

    /// The producers this partition knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerInfo> {
        let inner = self.inner.lock();
        inner
            .producers
            .entries()
            .into_iter()
            .map(|e: &ProducerEntry| ProducerInfo {
                producer_id: ProducerId::new(e.producer_id),
                epoch: ProducerEpoch::new(e.epoch),
                last_sequence: e.last_seq(),
                last_timestamp: e.last_timestamp,
                coordinator_epoch: e.coordinator_epoch,
                current_txn_start_offset: e
                    .current_txn_first_offset
                    .map_or(Offset::NONE, Offset::new),
            })
            .collect()
    }

    /// Forgets producers idle for `expiration_ms` with no open transaction
    /// (`producer.id.expiration.ms`). Returns how many went.
    pub fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.inner
            .lock()
            .producers
            .remove_expired(now_ms, expiration_ms)
    }

    /// Writes the producer snapshot at the log end and the active segment's `.txnindex`,
    /// both synced: after a clean stop the next start replays nothing.
    fn persist_producer_state(&self, inner: &mut Inner) -> Result<(), StorageError> {
        let active = Arc::clone(inner.active());
        self.write_txn_index(inner, active.base_offset, inner.next_offset)?;
        self.write_snapshot(inner, inner.next_offset, true)
    }

    /// Writes the `.txnindex` of the segment at `base` (markers in `[base, end)`), if it has
    /// aborted transactions; removes a stale one otherwise.
    pub(crate) fn write_txn_index(
        &self,
        inner: &Inner,
        base: i64,
        end: i64,
    ) -> Result<(), StorageError> {
        let path = SegmentFile::TxnIndex.path(&self.dir, base);
        let from = inner
            .aborted
            .partition_point(|t| t.last_offset.get() < base);
        let to = inner.aborted.partition_point(|t| t.last_offset.get() < end);
        if from == to {
            return match self.fs().remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(io_err("delete", &path, e))
                }
                _ => Ok(()),
            };
        }
        let bytes = producer_state::encode_aborted(&inner.aborted[from..to]);
        let f = self
            .fs()
            .open(&path, OpenMode::Truncate)
            .map_err(|e| io_err("create", &path, e))?;
        f.write_all_at(&bytes, 0)
            .and_then(|()| f.sync_data())
            .map_err(|e| io_err("write", &path, e))?;
        self.dir_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes the producer snapshot for offset `at` (the state covers everything below it).
    /// At a roll it is not synced, as in Kafka: one lost to a power cut fails its CRC or is
    /// missing, and recovery then replays from an older one.
    fn write_snapshot(&self, inner: &mut Inner, at: i64, sync: bool) -> Result<(), StorageError> {
        let path = snapshot_path(&self.dir, at);
        let bytes = producer_state::encode_snapshot(&inner.producers);
        let f = self
            .fs()
            .open(&path, OpenMode::Truncate)
            .map_err(|e| io_err("create", &path, e))?;
        f.write_all_at(&bytes, 0)
            .and_then(|()| if sync { f.sync_data() } else { Ok(()) })
            .map_err(|e| io_err("write", &path, e))?;
        inner.snapshots.insert(at);
        self.dir_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Drops what belonged to segments below the first remaining one: aborted transactions
    /// that ended there and snapshots older than it.
    fn trim_producer_state(&self, inner: &mut Inner) {
        let first = *inner.segments.keys().next().expect("non-empty");
        inner.aborted.retain(|t| t.last_offset.get() >= first);
        let keep = inner.snapshots.split_off(&first);
        for off in std::mem::replace(&mut inner.snapshots, keep) {
            let _ = self.fs().remove_file(&snapshot_path(&self.dir, off));
        }
    }

    /// Appends batches fetched from the leader as they are: offsets, epochs and timestamps
    /// are the leader's. Each batch must start at or past the end of what precedes it, not
    /// necessarily right at it: the leader's compacted segments have gaps where the cleaner
    /// removed whole batches. A new epoch in the batches is recorded in the epoch cache.
    /// `validator` runs as for [`Log::append_as_leader`]. The caller has checked the CRCs.
    pub fn append_as_follower<E, V>(
        &self,
        batches: &[u8],
        now_ms: i64,
        mut validator: V,
    ) -> Result<AppendInfo, E>
    where
        E: From<StorageError>,
        V: FnMut(&BatchHeader) -> Result<(), E>,
    {
        let mut inner = self.inner.lock();
        if self.is_poisoned() {
            return Err(self.poisoned_err().into());
        }
        let mut base_offset = None;
        let mut next = inner.next_offset;
        let mut max_ts = -1i64;
        let mut offset_of_max_ts = next;
        let mut epoch_starts: Vec<(i32, i64)> = Vec::new();
        let mut latest_epoch = inner.epochs.latest_epoch();
        let mut staged = Staged::default();
        let mut pos = 0usize;
        for header in self.headers(batches) {
            let h = header?;
            if h.base_offset < next || h.last_offset_delta < 0 {
                return Err(StorageError::UnexpectedAppendOffset {
                    expected: next,
                    actual: h.base_offset,
                }
                .into());
            }
            validator(&h)?;
            if h.producer_id != NO_PRODUCER_ID {
                let marker = h
                    .is_control()
                    .then(|| vltava_record::read_end_txn_marker(&batches[pos..pos + h.total_len()]))
                    .and_then(Result::ok)
                    .map(|m| (m.result, m.coordinator_epoch));
                inner
                    .producers
                    .stage(
                        &mut staged,
                        BatchInfo { header: &h, marker },
                        Origin::Replication,
                    )
                    .map_err(StorageError::from)?;
            }
            pos += h.total_len();
            base_offset.get_or_insert(h.base_offset);
            let epoch = h.partition_leader_epoch;
            if epoch >= 0 && latest_epoch.is_none_or(|l| epoch > l) {
                epoch_starts.push((epoch, h.base_offset));
                latest_epoch = Some(epoch);
            }
            if h.max_timestamp > max_ts {
                max_ts = h.max_timestamp;
                offset_of_max_ts = h.last_offset();
            }
            next = h.next_offset();
        }
        self.write_locked(
            &mut inner,
            Pieces::Parts(&[batches]),
            next,
            max_ts,
            offset_of_max_ts,
            &epoch_starts,
            now_ms,
        )?;
        Self::commit_producers(&mut inner, staged);
        Ok(AppendInfo {
            base_offset: Offset::new(base_offset.unwrap_or(next)),
            last_offset: Offset::new(next - 1),
            log_append_time: -1,
            log_start_offset: Offset::new(inner.log_start_offset),
            duplicate: false,
        })
    }

    /// The headers of the whole batches in `batches`; bytes that are not whole batches are
    /// an error, never silently dropped.
    fn headers<'a>(
        &'a self,
        batches: &'a [u8],
    ) -> impl Iterator<Item = Result<BatchHeader, StorageError>> + 'a {
        let mut pos = 0usize;
        std::iter::from_fn(move || {
            if pos >= batches.len() {
                return None;
            }
            let corrupt = |source| StorageError::Corrupt {
                path: self.dir.clone(),
                position: pos as u64,
                source,
            };
            let rest = &batches[pos..];
            let item = BatchHeader::parse(rest).map_err(corrupt).and_then(|h| {
                if h.total_len() > rest.len() {
                    Err(corrupt(vltava_record::RecordError::Truncated {
                        offset: pos,
                        need: h.total_len(),
                        have: rest.len(),
                    }))
                } else {
                    Ok(h)
                }
            });
            pos = match &item {
                Ok(h) => pos + h.total_len(),
                Err(_) => batches.len(),
            };
            Some(item)
        })
    }

    /// The common tail of both appends, under the lock: record new epochs (durably, before
    /// any batch of theirs is written), roll if due, write. Any failure poisons the log.
    #[allow(clippy::too_many_arguments)]
    fn write_locked(
        &self,
        inner: &mut Inner,
        pieces: Pieces<'_, '_>,
        next_offset: i64,
        max_timestamp: i64,
        offset_of_max_timestamp: i64,
        epoch_starts: &[(i32, i64)],
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let base_offset = inner.next_offset;
        let mut epochs = None;
        for &(epoch, start) in epoch_starts {
            // Kafka records an epoch only when it is newer than the latest one.
            let cache = epochs.as_ref().unwrap_or(&inner.epochs);
            if cache.latest_epoch().is_none_or(|l| epoch > l) {
                epochs
                    .get_or_insert_with(|| inner.epochs.clone())
                    .assign(epoch, start);
            }
        }
        if let Some(epochs) = epochs {
            epochs
                .write(self.fs(), &self.dir)
                .map_err(|e| self.poison(e))?;
            inner.epochs = epochs;
        }
        self.maybe_roll(inner, pieces.len(), next_offset, now_ms)?;
        let active = Arc::clone(inner.active());
        let interval = inner.config.index_interval_bytes;
        active
            .append(
                pieces,
                base_offset,
                next_offset,
                max_timestamp,
                offset_of_max_timestamp,
                interval,
            )
            .map_err(|e| self.poison(e))?;
        inner.next_offset = next_offset;
        Ok(())
    }

    fn maybe_roll(
        &self,
        inner: &mut Inner,
        incoming_bytes: u64,
        incoming_next_offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let active = inner.active();
        let size = active.size();
        if size == 0 {
            return Ok(());
        }
        let created = active.state.lock().created_ms;
        let too_big = size + incoming_bytes > inner.config.segment_bytes;
        // A compacted log also rolls by max.compaction.lag.ms, as Kafka's does: the active
        // segment is never cleaned, so a record must leave it within the lag.
        let roll_ms = if inner.config.compact {
            inner
                .config
                .segment_ms
                .min(inner.config.max_compaction_lag_ms)
        } else {
            inner.config.segment_ms
        };
        let too_old = now_ms - created >= roll_ms;
        // Index entries hold offsets relative to the segment's base.
        let offset_overflow = incoming_next_offset - 1 - active.base_offset > i64::from(i32::MAX);
        if too_big || too_old || offset_overflow {
            self.roll(inner, now_ms)?;
        }
        Ok(())
    }

    /// Seals the active segment and starts a new one at the log end. A failure poisons the
    /// log: the old segment's index may be half-synced and the new file may half exist.
    fn roll(&self, inner: &mut Inner, now_ms: i64) -> Result<(), StorageError> {
        let old = Arc::clone(inner.active());
        let base = inner.next_offset;
        let seg = old
            .seal()
            .and_then(|()| Segment::create(&self.files, &self.dir, base, now_ms))
            .map_err(|e| self.poison(e))?;
        tracing::debug!(dir = %self.dir.display(), base_offset = base, "rolled segment");
        inner.segments.insert(base, Arc::new(seg));
        self.dir_dirty.store(true, Ordering::Release);
        // The sealed segment's aborted transactions and the producer state at the new base:
        // recovery trusts both below the latest snapshot and replays only what follows it.
        self.write_txn_index(inner, old.base_offset, base)
            .and_then(|()| self.write_snapshot(inner, base, false))
            .map_err(|e| self.poison(e))?;
        old.retire();
        if old.next_offset() <= self.flushed_offset.load(Ordering::Acquire) {
            old.release();
        } else {
            inner.unsynced_sealed.push(old.base_offset);
        }
        if inner.unsynced_sealed.len() > MAX_UNSYNCED_SEALED {
            let oldest = inner.unsynced_sealed.remove(0);
            if let Some(seg) = inner.segments.get(&oldest) {
                // Sealed two segments ago: the kernel has most likely written it back, so
                // this fsync is cheap even under the lock.
                seg.sync().map_err(|e| self.poison(e))?;
                seg.release();
            }
        }
        Ok(())
    }

    /// Removes everything from `offset` on (a follower dropping a divergent tail): whole
    /// segments above it go, the segment holding it is cut at that batch boundary with its
    /// indexes, epochs starting at or after it are forgotten, and the flushed offset is
    /// lowered. An offset inside a batch is refused; one at or past the log end only forgets
    /// epochs that start at the log end (as Kafka's truncateTo). Durable before it returns; a
    /// failure poisons the log.
    pub fn truncate_to(&self, offset: Offset) -> Result<(), StorageError> {
        let offset = offset.get();
        // A cleaning in progress finishes its swap first (locks in the order the cleaner
        // takes them: cleaner, then the log's).
        let _cleaning = self.cleaner.lock();
        let _flush = self.flush_lock.lock();
        let mut inner = self.inner.lock();
        if self.is_poisoned() {
            return Err(self.poisoned_err());
        }
        self.truncate_locked(&mut inner, offset)
    }

    /// Empties the log and starts it again at `offset`, past its end: a follower whose log
    /// ends below the leader's log start (retention or DeleteRecords moved it while the
    /// follower was away) cannot fetch what it lacks, so it starts where the leader's log
    /// does (Kafka's truncateFullyAndStartAt). A new segment begins at `offset`; the old
    /// ones are below the new log start and go with the next retention pass. The epoch
    /// cache and the producer state, which described the dropped records, are cleared.
    /// Durable before it returns; after a crash the old log start may come back, with an
    /// empty log end still at `offset`.
    pub fn truncate_fully_and_start_at(
        &self,
        offset: Offset,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let offset = offset.get();
        let _cleaning = self.cleaner.lock();
        let _flush = self.flush_lock.lock();
        let mut inner = self.inner.lock();
        if self.is_poisoned() {
            return Err(self.poisoned_err());
        }
        if offset <= inner.next_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.log_start_offset,
                log_end_offset: inner.next_offset,
            });
        }
        inner.epochs.truncate_from_end(i64::MIN);
        inner
            .epochs
            .write(self.fs(), &self.dir)
            .map_err(|e| self.poison(e))?;
        inner.producers = ProducerStateManager::new(offset);
        inner.aborted.clear();
        inner.next_offset = offset;
        self.roll(&mut inner, now_ms)?;
        crate::sync_dir_in(self.fs(), &self.dir).map_err(|e| self.poison(e))?;
        inner.log_start_offset = offset;
        self.flushed_offset.fetch_max(offset, Ordering::AcqRel);
        tracing::info!(dir = %self.dir.display(), offset, "log emptied to start at the leader's log start");
        Ok(())
    }

    /// [`Log::truncate_to`] with the flush lock and the log lock held.
    fn truncate_locked(&self, inner: &mut Inner, offset: i64) -> Result<(), StorageError> {
        if offset >= inner.next_offset {
            // No records to cut, but an epoch this replica started as leader without
            // appending anything may sit at the log end; left there, its fetches would keep
            // diverging from the new leader's log.
            let end = inner.next_offset;
            if inner.epochs.truncate_from_end(end) {
                inner
                    .epochs
                    .write(self.fs(), &self.dir)
                    .map_err(|e| self.poison(e))?;
            }
            return Ok(());
        }
        if offset < inner.log_start_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.log_start_offset,
                log_end_offset: inner.next_offset,
            });
        }
        let (&base, seg) = inner
            .segments
            .range(..=offset)
            .next_back()
            .expect("the first segment starts at or below the log start");
        let seg = Arc::clone(seg);
        let size = seg.size();
        // Checked before anything changes, so a refused truncation leaves the log as it was.
        let position = match seg.find_position(offset, size)? {
            Some((pos, h)) if h.base_offset == offset => pos,
            Some((_, h)) => {
                return Err(StorageError::NotBatchBoundary {
                    offset,
                    batch_base_offset: h.base_offset,
                    batch_last_offset: h.last_offset(),
                })
            }
            None => size,
        };
        let later: Vec<i64> = inner.segments.range(base + 1..).map(|(b, _)| *b).collect();
        for b in &later {
            let gone = inner.segments.remove(b).expect("listed");
            gone.delete_files();
        }
        // The cut segment becomes the active one.
        inner.unsynced_sealed.retain(|b| *b < base);
        let interval = inner.config.index_interval_bytes;
        seg.truncate_to(position, interval)
            .and_then(|()| {
                if later.is_empty() {
                    Ok(())
                } else {
                    crate::sync_dir_in(self.fs(), &self.dir)
                }
            })
            .map_err(|e| self.poison(e))?;
        inner.next_offset = offset;
        self.flushed_offset.fetch_min(offset, Ordering::AcqRel);
        let rebuilt = rebuild_producers(
            self.fs(),
            &self.dir,
            &inner.segments,
            &mut inner.snapshots,
            offset,
            inner.log_start_offset,
        )
        .map_err(|e| self.poison(e))?;
        inner
            .aborted
            .retain(|t| t.last_offset.get() < rebuilt.replay_start);
        inner.aborted.extend(rebuilt.replayed_aborted);
        inner.producers = rebuilt.state;
        if inner.epochs.truncate_from_end(offset) {
            inner
                .epochs
                .write(self.fs(), &self.dir)
                .map_err(|e| self.poison(e))?;
        }
        tracing::info!(dir = %self.dir.display(), offset, removed_segments = later.len(), "truncated log");
        Ok(())
    }

    /// Starts writing the active segment's unsynced bytes to the disk, without waiting
    /// ([`Segment::start_writeback`]): for an append whose fsync is about to be asked for.
    pub fn start_writeback(&self) {
        let active = Arc::clone(self.inner.lock().active());
        active.start_writeback();
    }

    /// Makes everything appended so far durable. Returns the offset below which all data is
    /// on stable storage. Concurrent appends continue during the fsync.
    pub fn flush(&self) -> Result<Offset, StorageError> {
        if self.is_poisoned() {
            return Err(self.poisoned_err());
        }
        let _guard = self.flush_lock.lock();
        let flushed = self.flushed_offset.load(Ordering::Acquire);
        let (target, to_sync) = {
            let mut inner = self.inner.lock();
            let target = inner.next_offset;
            if target <= flushed {
                Self::release_synced(&mut inner, flushed);
                drop(inner);
                // Nothing new to sync but names (a snapshot written at a clean stop).
                if self.dir_dirty.swap(false, Ordering::AcqRel) {
                    crate::sync_dir_in(self.fs(), &self.dir).map_err(|e| self.poison(e))?;
                }
                return Ok(Offset::new(flushed));
            }
            // Segments that may hold unflushed offsets: the one containing `flushed` onward.
            let from = inner
                .segments
                .range(..=flushed)
                .next_back()
                .map_or(i64::MIN, |(b, _)| *b);
            let segs: Vec<_> = inner
                .segments
                .range(from..)
                .map(|(_, s)| Arc::clone(s))
                .collect();
            (target, segs)
        };
        // A roll sets `dir_dirty` under the inner lock before `target` could cover the new
        // segment, so this swap sees every segment that `target` includes.
        let sync_dir = self.dir_dirty.swap(false, Ordering::AcqRel);
        let synced = to_sync
            .iter()
            .try_for_each(|seg| seg.sync())
            .and_then(|()| {
                if sync_dir {
                    crate::sync_dir_in(self.fs(), &self.dir)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = synced {
            return Err(self.poison(e));
        }
        self.flushed_offset.store(target, Ordering::Release);
        Self::release_synced(&mut self.inner.lock(), target);
        Ok(Offset::new(target))
    }

    /// Closes the `.log` of sealed segments that end at or below `durable`: a flush has
    /// covered all their bytes.
    fn release_synced(inner: &mut Inner, durable: i64) {
        let Inner {
            segments,
            unsynced_sealed,
            ..
        } = inner;
        unsynced_sealed.retain(|base| match segments.get(base) {
            Some(seg) if seg.next_offset() <= durable => {
                seg.release();
                false
            }
            Some(_) => true,
            None => false,
        });
    }

    pub(crate) fn fs(&self) -> &dyn Fs {
        &*self.files.fs
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// (but always at least one whole batch when `min_one` is set, as KIP-74 asks).
    ///
    /// Only batches whose last offset is below `max_offset` are returned: the caller passes
    /// the high watermark or the last stable offset, so a batch that straddles it is held
    /// back until it is wholly visible. The batch containing `offset` may start below the log
    /// start offset (after DeleteRecords inside a batch); clients skip those records.
    pub fn read(
        &self,
        offset: Offset,
        max_offset: Offset,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, StorageError> {
        let (offset, max_offset) = (offset.get(), max_offset.get());
        let (segments, log_end, log_start) = self.read_snapshot(offset)?;
        let empty = ReadResult {
            records: Bytes::new(),
            log_end_offset: Offset::new(log_end),
            log_start_offset: Offset::new(log_start),
        };
        if offset >= log_end.min(max_offset) {
            return Ok(empty);
        }
        match Self::read_segments(segments, offset, max_offset, max_bytes, min_one) {
            Ok(records) => Ok(ReadResult { records, ..empty }),
            Err(e) => Err(self.read_error(offset, e)),
        }
    }

    /// The segments a read at `offset` starts in (at most two: compaction leaves gaps),
    /// with their sizes, and the log's end and start offsets, under one lock.
    #[allow(clippy::type_complexity)]
    fn read_snapshot(
        &self,
        offset: i64,
    ) -> Result<(Vec<(Arc<Segment>, u64)>, i64, i64), StorageError> {
        let inner = self.inner.lock();
        if offset < inner.log_start_offset || offset > inner.next_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.log_start_offset,
                log_end_offset: inner.next_offset,
            });
        }
        let from = inner
            .segments
            .range(..=offset)
            .next_back()
            .map_or(i64::MIN, |(b, _)| *b);
        // Compaction leaves gaps: a segment may end before `offset`, or hold nothing.
        let segs: Vec<_> = inner
            .segments
            .range(from..)
            .skip_while(|(_, s)| s.next_offset() <= offset || s.size() == 0)
            .take(2)
            .map(|(_, s)| (Arc::clone(s), s.size()))
            .collect();
        Ok((segs, inner.next_offset, inner.log_start_offset))
    }

    /// A sealed segment's `.log` is opened on demand, so retention may have deleted it since
    /// the snapshot: that is a read below the log start, not damage.
    fn read_error(&self, offset: i64, e: StorageError) -> StorageError {
        let now = self.offsets();
        if offset < now.log_start_offset.get() {
            StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: now.log_start_offset.get(),
                log_end_offset: now.log_end_offset.get(),
            }
        } else {
            e
        }
    }

    /// [`Log::read`] without the read: where the same whole batches lie in a segment file.
    /// Only batch headers are read (a few, thanks to the offset index), so a fetch costs no
    /// copy of the records here.
    pub fn read_region(
        &self,
        offset: Offset,
        max_offset: Offset,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<RegionRead, StorageError> {
        let (offset, max_offset) = (offset.get(), max_offset.get());
        let (segments, log_end, log_start) = self.read_snapshot(offset)?;
        let empty = RegionRead {
            region: None,
            next_offset: Offset::new(offset),
            log_end_offset: Offset::new(log_end),
            log_start_offset: Offset::new(log_start),
        };
        if offset >= log_end.min(max_offset) {
            return Ok(empty);
        }
        match Self::region_in_segments(segments, offset, max_offset, max_bytes, min_one) {
            Ok(Some((region, next))) => Ok(RegionRead {
                region: Some(region),
                next_offset: Offset::new(next),
                ..empty
            }),
            Ok(None) => Ok(empty),
            Err(e) => Err(self.read_error(offset, e)),
        }
    }

    fn region_in_segments(
        segments: Vec<(Arc<Segment>, u64)>,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Option<(FileRegion, i64)>, StorageError> {
        for (seg, size) in segments {
            let Some((pos, first)) = seg.find_position(offset, size)? else {
                continue;
            };
            if first.last_offset() >= max_offset {
                return Ok(None);
            }
            let available = size - pos;
            let mut want = available.min(max_bytes as u64);
            if min_one {
                want = want.max((first.total_len() as u64).min(available));
            }
            let (end, next) = seg.whole_batches_end(pos, &first, pos + want, max_offset, size)?;
            if end == pos {
                return Ok(None);
            }
            let region = FileRegion {
                file: seg.log_file()?,
                position: pos,
                len: (end - pos) as usize,
            };
            return Ok(Some((region, next)));
        }
        Ok(None)
    }

    /// The read part of [`Log::read`], over a snapshot of segments and their sizes.
    fn read_segments(
        segments: Vec<(Arc<Segment>, u64)>,
        offset: i64,
        max_offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<Bytes, StorageError> {
        for (seg, size) in segments {
            let Some((pos, first)) = seg.find_position(offset, size)? else {
                continue;
            };
            if first.last_offset() >= max_offset {
                return Ok(Bytes::new());
            }
            let available = (size - pos) as usize;
            let mut want = available.min(max_bytes);
            if min_one {
                want = want.max(first.total_len().min(available));
            }
            if want == 0 {
                return Ok(Bytes::new());
            }
            let mut buf = seg.read_range(pos, want)?;
            // Trim to whole batches below `max_offset` so clients never see a partial one.
            let whole = Batches::new(&buf)
                .map_while(Result::ok)
                .take_while(|(h, _)| h.last_offset() < max_offset)
                .last()
                .map_or(0, |(_, r)| r.end);
            buf.truncate(whole);
            return Ok(Bytes::from(buf));
        }
        Ok(Bytes::new())
    }

    /// ListOffsets by timestamp: the first batch whose max timestamp is `>= ts`, as
    /// `(offset, timestamp)`. The offset is the batch's base offset.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(Offset, i64)>, StorageError> {
        let (segs, log_start) = {
            let inner = self.inner.lock();
            let segs: Vec<_> = inner
                .segments
                .values()
                .map(|s| (Arc::clone(s), s.size()))
                .collect();
            (segs, inner.log_start_offset)
        };
        for (seg, size) in segs {
            if seg.max_timestamp() < ts {
                continue;
            }
            if let Some((off, t)) = seg.find_timestamp(ts, size)? {
                return Ok(Some((Offset::new(off.max(log_start)), t)));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: `(offset, timestamp)` of the largest timestamp in the log.
    pub fn max_timestamp(&self) -> Option<(Offset, i64)> {
        let inner = self.inner.lock();
        let mut best: Option<(i64, i64)> = None;
        for seg in inner.segments.values() {
            let st = seg.state.lock();
            if st.max_timestamp >= 0 && best.is_none_or(|(_, t)| st.max_timestamp > t) {
                best = Some((st.offset_of_max_timestamp, st.max_timestamp));
            }
        }
        best.map(|(o, t)| (Offset::new(o), t))
    }

    /// DeleteRecords: moves the log start offset forward; segments wholly below it are
    /// deleted by the next retention pass.
    pub fn delete_records_before(&self, offset: Offset) -> Result<Offset, StorageError> {
        let offset = offset.get();
        let mut inner = self.inner.lock();
        let target = if offset == -1 {
            inner.next_offset
        } else {
            offset
        };
        if target < 0 || target > inner.next_offset {
            return Err(StorageError::OffsetOutOfRange {
                offset,
                log_start_offset: inner.log_start_offset,
                log_end_offset: inner.next_offset,
            });
        }
        inner.log_start_offset = inner.log_start_offset.max(target);
        self.trim_epochs_to_start(&mut inner)?;
        Ok(Offset::new(inner.log_start_offset))
    }

    /// Applies retention by time and size and deletes segments below the log start offset.
    /// Returns how many segments were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        // A cleaning in progress is rewriting the oldest segments: retention waits for the
        // next round rather than delete what the cleaner is about to swap.
        let Some(_cleaning) = self.cleaner.try_lock() else {
            return Ok(0);
        };
        let mut inner = self.inner.lock();
        let mut deleted = 0;
        let retention_ms = inner.config.retention_ms;
        let retention_bytes = inner.config.retention_bytes;
        let mut total: i64 = inner.segments.values().map(|s| s.size() as i64).sum();
        loop {
            let mut iter = inner.segments.iter();
            let Some((&base, seg)) = iter.next() else {
                break;
            };
            let next_base = iter.next().map(|(b, _)| *b);
            let is_active = next_base.is_none();
            let size = seg.size() as i64;
            if size == 0 && is_active {
                break;
            }
            let delete = inner.config.delete_retention;
            let expired = delete
                && retention_ms >= 0
                && seg.max_timestamp() >= 0
                && now_ms - seg.max_timestamp() > retention_ms;
            let over_size = delete && retention_bytes >= 0 && total - size >= retention_bytes;
            let below_start = next_base.is_some_and(|n| n <= inner.log_start_offset);
            // The cleaner can leave a sealed segment with no batches: it holds nothing and
            // has no timestamp to expire by.
            let empty = !is_active && size == 0;
            if !(expired || over_size || below_start || empty) {
                break;
            }
            if is_active {
                // Kafka deletes an expired active segment by rolling first; size retention
                // never removes the active segment (it would leave an empty log for a big one).
                if !expired {
                    break;
                }
                self.roll(&mut inner, now_ms)?;
            }
            let seg = inner.segments.remove(&base).expect("present");
            inner.unsynced_sealed.retain(|b| *b != base);
            total -= size;
            seg.delete_files();
            deleted += 1;
            let first = *inner
                .segments
                .keys()
                .next()
                .expect("active segment remains");
            inner.log_start_offset = inner.log_start_offset.max(first);
            tracing::info!(dir = %self.dir.display(), base_offset = base, expired, over_size, below_start, empty, "deleted segment");
        }
        if deleted > 0 {
            self.trim_epochs_to_start(&mut inner)?;
            self.trim_producer_state(&mut inner);
        }
        Ok(deleted)
    }

    /// The epoch cache starts where the log does, as Kafka keeps it.
    fn trim_epochs_to_start(&self, inner: &mut Inner) -> Result<(), StorageError> {
        if inner.epochs.truncate_from_start(inner.log_start_offset) {
            inner
                .epochs
                .write(self.fs(), &self.dir)
                .map_err(|e| self.poison(e))?;
        }
        Ok(())
    }

    /// Flushes and seals the active segment; called on clean shutdown.
    pub fn close(&self) -> Result<(), StorageError> {
        if self.is_poisoned() {
            return Err(self.poisoned_err());
        }
        {
            let mut inner = self.inner.lock();
            self.persist_producer_state(&mut inner)
                .map_err(|e| self.poison(e))?;
        }
        // Also makes the snapshot's and the `.txnindex`'s names durable.
        self.flush()?;
        let inner = self.inner.lock();
        inner.active().seal().map_err(|e| self.poison(e))
    }

    /// Number of segments, for tests and metrics.
    pub fn segment_count(&self) -> usize {
        self.inner.lock().segments.len()
    }
}
