//! Log compaction, as Kafka's log cleaner does it: keep the latest record of every key.
//!
//! A compacted log is split at the cleaner's checkpoint into a *clean* head (already
//! compacted) and a *dirty* tail. A pass builds a map from each key of the dirty tail to its
//! latest offset, within a bounded number of entries (a log whose dirty part holds more keys
//! is cleaned in several passes), then rewrites every sealed segment below the map's end,
//! keeping a record only if no later offset holds its key. Offsets are kept (gaps are
//! normal), batches keep their producer id, epoch, base sequence, last offset and timestamps,
//! and a rewritten batch is compressed with its original codec. Small results are grouped
//! into one segment up to `segment.bytes`.
//!
//! Tombstones (null values) stay for `delete.retention.ms` after the cleaner's point first
//! passed them, then go. Transaction state is an input: with
//! [`Transactions::Aborted`] records of aborted transactions are removed; with
//! [`Transactions::Unknown`] every transactional batch is kept whole and its keys are left
//! out of the map, since an aborted record must never hide a committed one. Control batches
//! (transaction markers) are always kept.
//!
//! Swap protocol, each group of segments at base offset `B`:
//! 1. the cleaned bytes are written to `B.log.cleaned` and fsynced;
//! 2. it is renamed to `B.log.swap` and the directory fsynced: the swap is committed;
//! 3. the other segments of the group are deleted, then `B`'s indexes, then `B.log.swap` is
//!    renamed over `B.log`, and the directory fsynced.
//!
//! Recovery ([`recover_swaps`], run before a log loads) follows Kafka's rules: `.cleaned`
//! and `.deleted` files are removed (the originals are intact); a `.swap` replaces every
//! segment whose base offset lies in `[B, next offset of the swap)`, then becomes `B.log`.
//! A segment of the group that lies wholly past the swap's next offset may survive a crash
//! in step 3; its records all sit above every record of the swap, so it only brings back
//! superseded records, which the next pass removes again, never a duplicate offset. Groups are
//! swapped oldest first, so a removed tombstone's older values are always gone before it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vltava_record::{BatchAttributes, BatchBuilder, BatchHeader, Compression, HEADER_LEN};
use vltava_types::Offset;

use crate::fs::{Fs, OpenMode};
use crate::log::Log;
use crate::producer_state::AbortedTxn;
use crate::segment::{Segment, SegmentFile};
use crate::{io_err, StorageError};

/// Cap on what one batch may decompress to while cleaning (as for the other readers).
const MAX_DECOMPRESSED: u64 = 256 << 20;
/// Bytes read from a segment at once, and written to a cleaned one at once.
const IO_CHUNK: usize = 1 << 20;
/// Bytes of the dedupe buffer one map entry accounts for: a 16-byte key digest and an
/// 8-byte offset, as Kafka's `SkimpyOffsetMap` counts them.
pub const MAP_ENTRY_BYTES: usize = 24;
/// Cleaning passes remembered for tombstone horizons; older ones merge (conservatively).
const MAX_HORIZONS: usize = 64;

/// What the cleaner knows of transactions in the range it cleans.
#[derive(Debug, Clone, Copy)]
pub enum Transactions<'a> {
    /// No transaction state: transactional batches are kept whole and do not supersede.
    Unknown,
    /// Every aborted transaction overlapping the cleaned range; all other transactional
    /// records below the bound were committed.
    Aborted(&'a [AbortedTxn]),
}

/// One cleaning pass as the caller wants it.
#[derive(Debug, Clone, Copy)]
pub struct CleanRequest<'a> {
    pub now_ms: i64,
    /// Nothing at or past this offset is cleaned: the caller's high watermark or last stable
    /// offset. The active segment and unflushed data are never cleaned either.
    pub upper_bound: Offset,
    /// Keys the offset map may hold (`log.cleaner.dedupe.buffer.size` / threads /
    /// [`MAP_ENTRY_BYTES`]).
    pub map_entries: usize,
    pub transactions: Transactions<'a>,
}

/// What a pass did, for the log line and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanStats {
    pub first_dirty_offset: Offset,
    /// The new clean offset: the map covered the dirty part up to here.
    pub end_offset: Offset,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub records_read: u64,
    pub records_removed: u64,
    pub tombstones_removed: u64,
    pub segments_before: usize,
    pub segments_after: usize,
}

/// How dirty a compacted log is, for choosing which to clean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cleanable {
    pub first_dirty_offset: Offset,
    pub first_uncleanable_offset: Offset,
    pub clean_bytes: u64,
    pub dirty_bytes: u64,
    /// dirty / (clean + dirty).
    pub dirty_ratio: f64,
    /// Due now: the ratio reached `min.cleanable.dirty.ratio`, or a dirty record is older
    /// than `max.compaction.lag.ms`.
    pub due: bool,
}

/// Paces the cleaner's I/O (`log.cleaner.io.max.bytes.per.second`); storage has no clock,
/// so the caller sleeps.
pub trait Throttle {
    fn bytes_done(&mut self, bytes: u64);
}

impl<F: FnMut(u64)> Throttle for F {
    fn bytes_done(&mut self, bytes: u64) {
        self(bytes);
    }
}

/// The cleaner's memory of a log between passes.
#[derive(Debug)]
pub struct CleanerState {
    /// `(end offset, time)` of past passes, oldest first: offsets below `end` had been passed
    /// by the cleaner's point at `time`. A restart forgets the real times and starts from the
    /// open time, so tombstones are kept longer after a restart, never shorter.
    horizons: Vec<(i64, i64)>,
}

impl CleanerState {
    pub(crate) fn new(now_ms: i64) -> Self {
        Self {
            horizons: vec![(0, now_ms)],
        }
    }

    /// When the cleaner's point first passed `offset`, or `None` if it has not yet.
    fn passed_at(&self, offset: i64) -> Option<i64> {
        self.horizons
            .iter()
            .find(|(end, _)| *end > offset)
            .map(|(_, t)| *t)
    }

    fn passed(&mut self, end: i64, now_ms: i64) {
        if self.horizons.last().is_none_or(|(e, _)| end > *e) {
            self.horizons.push((end, now_ms));
        }
        while self.horizons.len() > MAX_HORIZONS {
            // Offsets of the first entry now count as passed at the second's (later) time.
            self.horizons.remove(0);
        }
    }
}

/// A key's digest: 128 bits, so a collision (which would drop a live record) is as unlikely
/// as with Kafka's MD5 digests.
fn digest(key: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(key)
}

/// Key digest → latest offset of the dirty part, within a fixed number of entries.
struct OffsetMap {
    map: HashMap<u128, i64>,
    capacity: usize,
}

impl OffsetMap {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            map: HashMap::with_capacity(capacity.min(1 << 24)),
            capacity,
        }
    }
}

impl Log {
    /// Starts the cleaner from `offset` (read from `cleaner-offset-checkpoint`); tombstones
    /// below it count as passed at `now_ms`.
    pub fn init_clean_offset(&self, offset: Offset, now_ms: i64) {
        let offset = offset.get();
        let mut st = self.cleaner.lock();
        st.horizons = vec![(offset.max(0), now_ms)];
        self.clean_offset.store(offset.max(0), Ordering::Release);
    }

    /// Where the cleaned part of the log ends (for `cleaner-offset-checkpoint`).
    pub fn clean_offset(&self) -> Offset {
        Offset::new(self.clean_offset.load(Ordering::Acquire))
    }

    /// The caller wrote `offset` to the recovery-point checkpoint. The cleaner stays below
    /// it: a cleaned segment ends before the next one starts, which recovery above the
    /// recovery point would take for a lost tail.
    pub fn recovery_point_written(&self, offset: Offset) {
        self.recovery_checkpoint
            .store(offset.get(), Ordering::Release);
    }

    /// The highest offset [`Log::recovery_point_written`] was told of.
    pub fn recovery_checkpoint(&self) -> Offset {
        Offset::new(self.recovery_checkpoint.load(Ordering::Acquire))
    }

    /// Base offsets of the segments, oldest first; the last one is the active segment.
    pub fn segment_bases(&self) -> Vec<i64> {
        self.inner.lock().segments.keys().copied().collect()
    }

    /// The sealed segments the cleaner may touch (wholly below the bound), the log start and
    /// the bound itself.
    fn cleanable_segments(&self, now_ms: i64, upper_bound: i64) -> (Vec<Arc<Segment>>, i64, i64) {
        let inner = self.inner.lock();
        let active_base = inner.active().base_offset;
        let mut bound = upper_bound
            .min(active_base)
            .min(self.recovery_checkpoint.load(Ordering::Acquire));
        let lag = inner.config.min_compaction_lag_ms;
        let mut segs = Vec::new();
        for seg in inner.segments.values() {
            if seg.base_offset >= active_base {
                break;
            }
            // min.compaction.lag.ms: a segment with a record newer than the lag stays dirty
            // and uncleanable, and so does everything after it.
            if lag > 0 && seg.max_timestamp() > now_ms.saturating_sub(lag) {
                bound = bound.min(seg.base_offset);
            }
            if seg.next_offset() > bound || seg.base_offset >= bound {
                break;
            }
            segs.push(Arc::clone(seg));
        }
        (segs, inner.log_start_offset, bound)
    }

    fn first_dirty(&self, segs: &[Arc<Segment>], log_start: i64) -> i64 {
        let first = segs.first().map_or(log_start, |s| s.base_offset);
        let cp = self.clean_offset().get();
        // Kafka resets a checkpoint that lies outside the log to the log start.
        if cp < first.max(log_start) {
            first.max(log_start)
        } else {
            cp
        }
    }

    /// How dirty this log is, or `None` if it is not compacted or nothing is cleanable.
    pub fn cleanable(&self, now_ms: i64, upper_bound: Offset) -> Option<Cleanable> {
        let upper_bound = upper_bound.get();
        let config = self.config();
        if !config.compact || self.is_poisoned() {
            return None;
        }
        let (segs, log_start, bound) = self.cleanable_segments(now_ms, upper_bound);
        if segs.is_empty() {
            return None;
        }
        let first_dirty = self.first_dirty(&segs, log_start);
        let (mut clean_bytes, mut dirty_bytes) = (0u64, 0u64);
        let mut oldest_dirty = i64::MAX;
        for s in &segs {
            if s.next_offset() <= first_dirty {
                clean_bytes += s.size();
            } else {
                dirty_bytes += s.size();
                let t = s.first_timestamp();
                if t >= 0 {
                    oldest_dirty = oldest_dirty.min(t);
                }
            }
        }
        let total = clean_bytes + dirty_bytes;
        let dirty_ratio = if total == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total as f64
        };
        let lag_due = config.max_compaction_lag_ms < i64::MAX
            && oldest_dirty < i64::MAX
            && now_ms.saturating_sub(oldest_dirty) > config.max_compaction_lag_ms;
        Some(Cleanable {
            first_dirty_offset: Offset::new(first_dirty),
            first_uncleanable_offset: Offset::new(segs.last().map_or(bound, |s| s.next_offset())),
            clean_bytes,
            dirty_bytes,
            dirty_ratio,
            due: dirty_bytes > 0 && (dirty_ratio >= config.min_cleanable_dirty_ratio || lag_due),
        })
    }

    /// Runs one cleaning pass. Returns `None` when another thread is cleaning this log or
    /// nothing is cleanable. Appends and reads go on meanwhile: the log's lock is taken only
    /// to snapshot the segments and to swap each cleaned group in.
    pub fn clean(
        &self,
        req: &CleanRequest<'_>,
        throttle: &mut dyn Throttle,
    ) -> Result<Option<CleanStats>, StorageError> {
        let Some(mut state) = self.cleaner.try_lock() else {
            return Ok(None);
        };
        if self.is_poisoned() {
            return Err(self.poisoned_err());
        }
        let config = self.config();
        let (segs, log_start, _) = self.cleanable_segments(req.now_ms, req.upper_bound.get());
        if segs.is_empty() {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let first_dirty = self.first_dirty(&segs, log_start);
        let mut stats = CleanStats {
            first_dirty_offset: Offset::new(first_dirty),
            segments_before: self.segment_count(),
            ..CleanStats::default()
        };
        let mut map = OffsetMap::new(req.map_entries);
        let end = build_map(&segs, first_dirty, req, &mut map, &mut stats, throttle)?;
        stats.end_offset = Offset::new(end);
        let rewrite: Vec<Arc<Segment>> = segs.into_iter().filter(|s| s.base_offset < end).collect();
        let filter = Filter {
            map: &map,
            end,
            now_ms: req.now_ms,
            delete_retention_ms: config.delete_retention_ms,
            state: &state,
            transactions: req.transactions,
            open_txns: Default::default(),
        };
        for group in group_segments(&rewrite, config.segment_bytes) {
            self.clean_group(group, &filter, &mut stats, throttle, req.now_ms)?;
        }
        state.passed(end, req.now_ms);
        self.clean_offset.fetch_max(end, Ordering::AcqRel);
        stats.segments_after = self.segment_count();
        tracing::info!(
            dir = %self.dir.display(),
            first_dirty_offset = stats.first_dirty_offset.get(),
            end_offset = stats.end_offset.get(),
            bytes_read = stats.bytes_read,
            bytes_written = stats.bytes_written,
            records_read = stats.records_read,
            records_removed = stats.records_removed,
            tombstones_removed = stats.tombstones_removed,
            segments_before = stats.segments_before,
            segments_after = stats.segments_after,
            duration_ms = started.elapsed().as_millis() as u64,
            "log cleaned"
        );
        Ok(Some(stats))
    }

    /// Rewrites one group into a cleaned segment at its first base offset and swaps it in.
    fn clean_group(
        &self,
        group: &[Arc<Segment>],
        filter: &Filter<'_>,
        stats: &mut CleanStats,
        throttle: &mut dyn Throttle,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let base = group[0].base_offset;
        let fs = self.fs();
        let cleaned = Segment::log_path_with(&self.dir, base, ".cleaned");
        let out = fs
            .open(&cleaned, OpenMode::Truncate)
            .map_err(|e| io_err("create", &cleaned, e))?;
        let mut buf: Vec<u8> = Vec::with_capacity(IO_CHUNK);
        let mut written = 0u64;
        let mut changed = group.len() > 1;
        let mut bytes_read = 0;
        for seg in group {
            let mut result = Ok(());
            let whole = for_each_batch(seg, throttle, &mut bytes_read, |h, batch| {
                let kept = filter.apply(h, batch, stats);
                let bytes: &[u8] = match &kept {
                    Kept::Whole => batch,
                    Kept::Rewritten(b) => {
                        changed = true;
                        b
                    }
                    Kept::Nothing => {
                        changed = true;
                        return true;
                    }
                };
                buf.extend_from_slice(bytes);
                if buf.len() >= IO_CHUNK {
                    result = write_chunk(&*out, &cleaned, &mut buf, &mut written);
                    if result.is_err() {
                        return false;
                    }
                }
                true
            })?;
            result?;
            if !whole {
                tracing::error!(segment = %seg.log_path.display(), "segment has bytes the cleaner cannot walk; its group is left as it is");
                drop(out);
                fs.remove_file(&cleaned)
                    .map_err(|e| io_err("remove", &cleaned, e))?;
                return Ok(());
            }
        }
        write_chunk(&*out, &cleaned, &mut buf, &mut written)?;
        stats.bytes_read += bytes_read;
        stats.bytes_written += written;
        throttle.bytes_done(written);
        if !changed {
            drop(out);
            fs.remove_file(&cleaned)
                .map_err(|e| io_err("remove", &cleaned, e))?;
            return Ok(());
        }
        out.sync_data().map_err(|e| io_err("fsync", &cleaned, e))?;
        drop(out);
        let swap = Segment::log_path_with(&self.dir, base, ".swap");
        fs.rename(&cleaned, &swap)
            .map_err(|e| io_err("rename", &swap, e))?;
        crate::sync_dir_in(fs, &self.dir)?;
        self.replace_segments(group, &swap, now_ms)
    }

    /// Step 3 of the swap: the committed `.swap` replaces the group's segments on disk and in
    /// the segment map. Reads in flight keep their `Arc` to an old segment, whose `.log`
    /// stays open. A failure poisons the log; reopening it finishes the swap from disk.
    fn replace_segments(
        &self,
        group: &[Arc<Segment>],
        swap: &Path,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let base = group[0].base_offset;
        let fs = self.fs();
        let swapped = (|| {
            for seg in group {
                seg.pin_for_replacement()?;
            }
            for seg in &group[1..] {
                remove_segment_files(fs, &self.dir, seg.base_offset, &SegmentFile::ALL)?;
            }
            remove_segment_files(
                fs,
                &self.dir,
                base,
                &[SegmentFile::OffsetIndex, SegmentFile::TimeIndex],
            )?;
            let log = SegmentFile::Log.path(&self.dir, base);
            fs.rename(swap, &log)
                .map_err(|e| io_err("rename", &log, e))?;
            crate::sync_dir_in(fs, &self.dir)?;
            let interval = self.config().index_interval_bytes;
            let (seg, _) = Segment::open(&self.files, &self.dir, base, None, interval, now_ms)?;
            seg.release();
            Ok(seg)
        })();
        let seg = swapped.map_err(|e| self.poison(e))?;
        let mut inner = self.inner.lock();
        for old in group {
            if inner
                .segments
                .get(&old.base_offset)
                .is_some_and(|s| Arc::ptr_eq(s, old))
            {
                inner.segments.remove(&old.base_offset);
            }
        }
        inner
            .unsynced_sealed
            .retain(|b| !group.iter().any(|s| s.base_offset == *b));
        inner.segments.insert(base, Arc::new(seg));
        // The group's `.txnindex` files went with its other segments: one file for the
        // cleaned segment keeps every aborted transaction whose marker it holds.
        let end = inner
            .segments
            .range(base + 1..)
            .next()
            .map_or(inner.next_offset, |(b, _)| *b);
        self.write_txn_index(&inner, base, end)
            .map_err(|e| self.poison(e))
    }
}

fn remove_segment_files(
    fs: &dyn Fs,
    dir: &Path,
    base: i64,
    kinds: &[SegmentFile],
) -> Result<(), StorageError> {
    for kind in kinds {
        let p = kind.path(dir, base);
        match fs.remove_file(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", &p, e)),
        }
    }
    Ok(())
}

fn write_chunk(
    out: &dyn crate::fs::FsFile,
    path: &Path,
    buf: &mut Vec<u8>,
    written: &mut u64,
) -> Result<(), StorageError> {
    if buf.is_empty() {
        return Ok(());
    }
    out.write_all_at(buf, *written)
        .map_err(|e| io_err("write", path, e))?;
    *written += buf.len() as u64;
    buf.clear();
    Ok(())
}

/// Calls `f` with every whole batch of a sealed segment, in order, reading in chunks; `f`
/// returns false to stop. Returns whether every byte of the segment was walked: not when
/// `f` stopped, nor at damage kept below the recovery point (which must not be rewritten
/// away).
fn for_each_batch(
    seg: &Segment,
    throttle: &mut dyn Throttle,
    bytes_read: &mut u64,
    mut f: impl FnMut(&BatchHeader, &[u8]) -> bool,
) -> Result<bool, StorageError> {
    let size = seg.size();
    let file = seg.log_file()?;
    let mut pos = 0u64;
    let mut buf: Vec<u8> = Vec::new();
    while pos + HEADER_LEN as u64 <= size {
        let want = IO_CHUNK.min((size - pos) as usize);
        buf.resize(want, 0);
        file.read_exact_at(&mut buf, pos)
            .map_err(|e| io_err("read", &seg.log_path, e))?;
        let mut at = 0usize;
        loop {
            let rest = &buf[at..];
            let Ok(h) = BatchHeader::parse(rest) else {
                break;
            };
            let len = h.total_len();
            if len < HEADER_LEN {
                return Err(StorageError::Corrupt {
                    path: seg.log_path.clone(),
                    position: pos + at as u64,
                    source: vltava_record::RecordError::Truncated {
                        offset: 0,
                        need: HEADER_LEN,
                        have: len,
                    },
                });
            }
            if len > rest.len() {
                if at == 0 {
                    // A batch bigger than the chunk: read it whole.
                    if pos + len as u64 > size {
                        return Ok(false);
                    }
                    buf.resize(len, 0);
                    file.read_exact_at(&mut buf, pos)
                        .map_err(|e| io_err("read", &seg.log_path, e))?;
                    continue;
                }
                break;
            }
            *bytes_read += len as u64;
            throttle.bytes_done(len as u64);
            if !f(&h, &rest[..len]) {
                return Ok(false);
            }
            at += len;
        }
        if at == 0 {
            // Nothing parsed at this position: damage kept below the recovery point.
            return Ok(false);
        }
        pos += at as u64;
    }
    Ok(pos == size)
}

/// Builds the offset map over the dirty part `[first_dirty, ..)` of `segs`; returns the
/// offset it covers up to (a batch boundary).
fn build_map(
    segs: &[Arc<Segment>],
    first_dirty: i64,
    req: &CleanRequest<'_>,
    map: &mut OffsetMap,
    stats: &mut CleanStats,
    throttle: &mut dyn Throttle,
) -> Result<i64, StorageError> {
    let mut end = segs.last().map_or(first_dirty, |s| s.next_offset());
    'segments: for seg in segs {
        if seg.next_offset() <= first_dirty {
            continue;
        }
        let mut full_at = None;
        for_each_batch(seg, throttle, &mut stats.bytes_read, |h, batch| {
            if h.last_offset() < first_dirty || h.is_control() {
                return true;
            }
            let aborted = match req.transactions {
                _ if !h.is_transactional() => false,
                Transactions::Unknown => return true,
                Transactions::Aborted(list) => is_aborted(list, h),
            };
            if aborted {
                return true;
            }
            let count = h.record_count.max(0) as usize;
            if !map.map.is_empty() && map.map.len() + count > map.capacity {
                full_at = Some(h.base_offset);
                return false;
            }
            // An unreadable batch is kept whole by the rewrite, so its keys may stay in the
            // map (they are real records) and the rest of it is simply not looked at.
            let records = match vltava_record::read_records(batch, MAX_DECOMPRESSED) {
                Ok(records) => records,
                Err(e) => {
                    tracing::warn!(segment = %seg.log_path.display(), offset = h.base_offset, error = %e, "cleaner cannot read a batch; it is kept as it is");
                    return true;
                }
            };
            for r in records {
                let Ok(r) = r else {
                    tracing::warn!(segment = %seg.log_path.display(), offset = h.base_offset, "cleaner cannot read a record; its batch is kept as it is");
                    return true;
                };
                let offset = h.base_offset + i64::from(r.offset_delta);
                if let (Some(key), true) = (r.key, offset >= first_dirty) {
                    map.map.insert(digest(&key), offset);
                }
            }
            true
        })?;
        if let Some(at) = full_at {
            end = at;
            break 'segments;
        }
    }
    Ok(end.max(first_dirty))
}

fn is_aborted(list: &[AbortedTxn], h: &BatchHeader) -> bool {
    list.iter().any(|t| {
        t.producer_id.get() == h.producer_id
            && t.first_offset.get() <= h.base_offset
            && h.base_offset <= t.last_offset.get()
    })
}

/// Groups consecutive segments so each group fits one segment: at most `segment.bytes` and
/// an offset span the relative offsets of its indexes can hold.
fn group_segments(segs: &[Arc<Segment>], segment_bytes: u64) -> Vec<&[Arc<Segment>]> {
    let mut groups = Vec::new();
    let mut start = 0;
    while start < segs.len() {
        let mut size = segs[start].size();
        let mut end = start + 1;
        while end < segs.len() {
            let next = &segs[end];
            let span = next.next_offset() - 1 - segs[start].base_offset;
            if size + next.size() > segment_bytes || span > i64::from(i32::MAX) {
                break;
            }
            size += next.size();
            end += 1;
        }
        groups.push(&segs[start..end]);
        start = end;
    }
    groups
}

/// What survives of one batch.
enum Kept {
    Whole,
    Rewritten(Vec<u8>),
    Nothing,
}

/// The retention rule of one pass.
struct Filter<'a> {
    map: &'a OffsetMap,
    end: i64,
    now_ms: i64,
    delete_retention_ms: i64,
    state: &'a CleanerState,
    transactions: Transactions<'a>,
    /// Producers whose transactional batches this pass has read since their last marker.
    /// A producer has one transaction at a time, so its next marker ends exactly those.
    open_txns: std::cell::RefCell<std::collections::HashSet<i64>>,
}

impl Filter<'_> {
    fn apply(&self, h: &BatchHeader, batch: &[u8], stats: &mut CleanStats) -> Kept {
        stats.records_read += h.record_count.max(0) as u64;
        if h.base_offset >= self.end {
            return Kept::Whole;
        }
        if h.is_control() {
            return self.marker(h, stats);
        }
        if h.is_transactional() {
            self.open_txns.borrow_mut().insert(h.producer_id);
            match self.transactions {
                Transactions::Unknown => return Kept::Whole,
                Transactions::Aborted(list) if is_aborted(list, h) => {
                    stats.records_removed += h.record_count.max(0) as u64;
                    return Kept::Nothing;
                }
                Transactions::Aborted(_) => {}
            }
        }
        let Ok(records) = vltava_record::BatchRecords::open(batch, MAX_DECOMPRESSED) else {
            return Kept::Whole;
        };
        let mut keep = Vec::with_capacity(h.record_count.max(0) as usize);
        let mut removed = 0u64;
        let mut tombstones = 0u64;
        for r in records.iter() {
            let Ok(r) = r else {
                return Kept::Whole;
            };
            let offset = h.base_offset + i64::from(r.offset_delta);
            let retain = self.retain(offset, r.key.as_deref(), r.value.is_none());
            if retain {
                keep.push(r);
            } else {
                removed += 1;
                tombstones += u64::from(r.value.is_none() && r.key.is_some());
            }
        }
        stats.records_removed += removed;
        stats.tombstones_removed += tombstones;
        if removed == 0 {
            return Kept::Whole;
        }
        if keep.is_empty() {
            return Kept::Nothing;
        }
        let codec = match h.compression() {
            Compression::Unknown(_) => return Kept::Whole,
            c => c,
        };
        let mut b = BatchBuilder::new(BatchAttributes {
            base_offset: h.base_offset,
            partition_leader_epoch: h.partition_leader_epoch,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            transactional: h.is_transactional(),
            control: false,
            log_append_time_ms: h.is_log_append_time().then_some(h.max_timestamp),
            compression: codec,
        });
        for r in &keep {
            b.append_record(h.base_timestamp, r);
        }
        b.set_last_offset_delta(h.last_offset_delta);
        Kept::Rewritten(b.finish())
    }

    /// Kafka's rule for a transaction marker: it goes once no batch of its transaction is
    /// left (none was read in this pass: earlier passes removed them all) and
    /// `delete.retention.ms` has passed since a pass first covered it, so a consumer that
    /// read the transaction's records has had that long to read the marker too.
    fn marker(&self, h: &BatchHeader, stats: &mut CleanStats) -> Kept {
        if matches!(self.transactions, Transactions::Unknown) {
            return Kept::Whole;
        }
        let had_batches = self.open_txns.borrow_mut().remove(&h.producer_id);
        let expired = self
            .state
            .passed_at(h.base_offset)
            .is_some_and(|t| self.now_ms.saturating_sub(t) >= self.delete_retention_ms);
        if had_batches || !expired {
            return Kept::Whole;
        }
        stats.records_removed += h.record_count.max(0) as u64;
        Kept::Nothing
    }

    fn retain(&self, offset: i64, key: Option<&[u8]>, tombstone: bool) -> bool {
        let Some(key) = key else {
            // A compacted log has no room for keyless records; Kafka's cleaner drops them.
            return false;
        };
        if offset >= self.end {
            return true;
        }
        if self
            .map
            .map
            .get(&digest(key))
            .is_some_and(|latest| *latest > offset)
        {
            return false;
        }
        if tombstone {
            let passed = self.state.passed_at(offset).unwrap_or(self.now_ms);
            return self.now_ms.saturating_sub(passed) < self.delete_retention_ms;
        }
        true
    }
}

/// A partition directory's cleaner state as its files show it, for tools that read a data
/// dir (`vltava cleaner-status`): no log is opened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DirStatus {
    pub clean_offset: i64,
    /// Bytes of sealed segments wholly below the clean offset.
    pub clean_bytes: u64,
    /// Bytes of the other sealed segments (the active segment is never cleaned).
    pub dirty_bytes: u64,
    pub dirty_ratio: f64,
    pub segments: usize,
}

/// Reads `dir`'s segment names and sizes and splits them at `clean_offset` as
/// [`Log::cleanable`] does (without the time and recovery-point bounds a live log adds).
pub fn dir_status(fs: &dyn Fs, dir: &Path, clean_offset: i64) -> Result<DirStatus, StorageError> {
    let mut bases: Vec<i64> = fs
        .read_dir(dir)
        .map_err(|e| io_err("list", dir, e))?
        .iter()
        .filter_map(|n| match SegmentFile::parse_name(n) {
            Some((SegmentFile::Log, base)) => Some(base),
            _ => None,
        })
        .collect();
    bases.sort_unstable();
    let (mut clean_bytes, mut dirty_bytes) = (0, 0);
    for pair in bases.windows(2) {
        let path = SegmentFile::Log.path(dir, pair[0]);
        let size = fs
            .open(&path, OpenMode::Read)
            .and_then(|f| f.size())
            .map_err(|e| io_err("stat", &path, e))?;
        if pair[1] <= clean_offset {
            clean_bytes += size;
        } else {
            dirty_bytes += size;
        }
    }
    let total = clean_bytes + dirty_bytes;
    Ok(DirStatus {
        clean_offset,
        clean_bytes,
        dirty_bytes,
        dirty_ratio: if total == 0 {
            0.0
        } else {
            dirty_bytes as f64 / total as f64
        },
        segments: bases.len(),
    })
}

/// Finishes or rolls back swaps a crash interrupted, before a log directory loads (Kafka's
/// rules, see the module docs): `.cleaned` and `.deleted` files go; each `B.log.swap`
/// replaces the segments with base offsets in `[B, its next offset)` and becomes `B.log`.
pub(crate) fn recover_swaps(fs: &dyn Fs, dir: &Path) -> Result<(), StorageError> {
    let names = fs.read_dir(dir).map_err(|e| io_err("list", dir, e))?;
    let mut swaps = Vec::new();
    let mut bases = Vec::new();
    let mut changed = false;
    for name in &names {
        if let Some((SegmentFile::Log, base)) = SegmentFile::parse_name(name) {
            bases.push(base);
        } else if let Some(base) = name
            .strip_suffix(".log.swap")
            .filter(|s| s.len() == 20)
            .and_then(|s| s.parse::<i64>().ok())
        {
            swaps.push(base);
        } else if name.ends_with(".cleaned")
            || name.ends_with(".deleted")
            || name.ends_with(".swap")
        {
            // An unfinished cleaning (the originals are whole) or a deletion cut short.
            let p = dir.join(name);
            fs.remove_file(&p).map_err(|e| io_err("remove", &p, e))?;
            changed = true;
        }
    }
    swaps.sort_unstable();
    for base in swaps {
        let swap = Segment::log_path_with(dir, base, ".swap");
        let next = match scan_next_offset(fs, &swap, base) {
            Some(next) => next,
            None => {
                // Never written by the protocol above (the swap is fsynced before it is
                // named): keep the originals rather than trust it.
                tracing::error!(path = %swap.display(), "unreadable swap file left from a cleaning; originals kept");
                fs.remove_file(&swap)
                    .map_err(|e| io_err("remove", &swap, e))?;
                changed = true;
                continue;
            }
        };
        for b in bases.iter().copied().filter(|b| *b > base && *b < next) {
            remove_segment_files(fs, dir, b, &SegmentFile::ALL)?;
        }
        remove_segment_files(
            fs,
            dir,
            base,
            &[SegmentFile::OffsetIndex, SegmentFile::TimeIndex],
        )?;
        let log = SegmentFile::Log.path(dir, base);
        fs.rename(&swap, &log)
            .map_err(|e| io_err("rename", &log, e))?;
        tracing::warn!(dir = %dir.display(), base_offset = base, next_offset = next, "finished a segment swap a crash interrupted");
        changed = true;
    }
    if changed {
        crate::sync_dir_in(fs, dir)?;
    }
    Ok(())
}

/// The next offset of a whole, CRC-clean segment file, or `None` if any batch is bad.
fn scan_next_offset(fs: &dyn Fs, path: &Path, base: i64) -> Option<i64> {
    let bytes = fs.read(path).ok()?;
    let mut next = base;
    let mut pos = 0;
    while pos < bytes.len() {
        let h = BatchHeader::parse(&bytes[pos..]).ok()?;
        let batch = bytes.get(pos..pos + h.total_len())?;
        if h.total_len() < HEADER_LEN || vltava_record::compute_crc(batch) != h.crc {
            return None;
        }
        next = h.next_offset();
        pos += h.total_len();
    }
    Some(next)
}

#[cfg(test)]
mod tests;
