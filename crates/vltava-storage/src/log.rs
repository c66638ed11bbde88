//! A partition's log: an ordered set of segments, the only writer of offsets.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use vltava_record::Batches;

use crate::segment::{Recovery, Segment};
use crate::{io_err, StorageError};

/// Per-log settings, in Kafka's topic-config terms.
#[derive(Debug, Clone, PartialEq, Eq)]
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
        }
    }
}

/// Where an append landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    pub base_offset: i64,
    pub last_offset: i64,
    /// The broker timestamp if LogAppendTime was applied, else -1.
    pub log_append_time: i64,
    pub log_start_offset: i64,
}

/// The bytes a fetch returns plus the log's offsets at the time of the read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    /// Whole record batches, exactly as stored.
    pub records: Bytes,
    pub high_watermark: i64,
    pub log_start_offset: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start_offset: i64,
    /// Offset the next appended record will get (Kafka's log end offset).
    pub log_end_offset: i64,
    /// Everything below this offset is known to be on stable storage.
    pub flushed_offset: i64,
}

struct Inner {
    segments: BTreeMap<i64, Arc<Segment>>,
    next_offset: i64,
    log_start_offset: i64,
    config: LogConfig,
}

impl Inner {
    fn active(&self) -> &Arc<Segment> {
        self.segments
            .values()
            .next_back()
            .expect("a log always has an active segment")
    }
}

/// A partition log. Appends are serialised by one mutex held only for in-memory work and a
/// write into the page cache; fsync and reads run outside it.
pub struct Log {
    dir: PathBuf,
    inner: Mutex<Inner>,
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
    /// Offsets below this were flushed before the last stop (from the checkpoint); segments
    /// that start at or above it are fully validated after an unclean stop.
    pub recovery_point: i64,
    /// Persisted log start offset, if any (DeleteRecords moves it inside a segment).
    pub log_start_offset: i64,
}

impl Log {
    /// Opens or creates the log in `dir`, recovering from an unclean shutdown.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        opts: OpenOptions,
        now_ms: i64,
    ) -> Result<Self, StorageError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(|e| io_err("create dir", dir, e))?;
            if let Some(parent) = dir.parent() {
                crate::sync_dir(parent)?;
            }
        }
        let mut bases = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
            let entry = entry.map_err(|e| io_err("list", dir, e))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(stem) = name.strip_suffix(".log") {
                if let Ok(base) = stem.parse::<i64>() {
                    bases.push(base);
                }
            } else if name.ends_with(".deleted")
                || name.ends_with(".cleaned")
                || name.ends_with(".swap")
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        bases.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut next_offset = 0;
        let mut cut = false;
        for (i, base) in bases.iter().copied().enumerate() {
            if cut {
                // A torn segment invalidates everything after it.
                for ext in ["log", "index", "timeindex"] {
                    let _ = std::fs::remove_file(
                        dir.join(format!("{}.{ext}", crate::segment::file_stem(base))),
                    );
                }
                continue;
            }
            let is_last = i + 1 == bases.len();
            let next_base = bases.get(i + 1).copied();
            let recovery = if !opts.clean_shutdown
                && (is_last || next_base.is_some_and(|n| n > opts.recovery_point))
            {
                Recovery::Full
            } else {
                Recovery::TrustIndexes
            };
            let (seg, truncated) =
                Segment::open(dir, base, recovery, config.index_interval_bytes, now_ms)?;
            if truncated && !is_last {
                cut = true;
            }
            next_offset = seg.next_offset().max(base);
            segments.insert(base, Arc::new(seg));
        }
        if segments.is_empty() {
            let base = opts.log_start_offset.max(0);
            segments.insert(base, Arc::new(Segment::create(dir, base, now_ms)?));
            next_offset = base;
        }
        let first_base = *segments.keys().next().expect("non-empty");
        let log_start_offset = opts.log_start_offset.clamp(first_base, next_offset);
        let flushed = if opts.clean_shutdown {
            next_offset
        } else {
            opts.recovery_point.min(next_offset)
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner {
                segments,
                next_offset,
                log_start_offset,
                config,
            }),
            flush_lock: Mutex::new(()),
            flushed_offset: AtomicI64::new(flushed),
            poisoned: AtomicBool::new(false),
            // Recovery may have created or truncated files: the first flush syncs the dir.
            dir_dirty: AtomicBool::new(true),
        })
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
            log_start_offset: inner.log_start_offset,
            log_end_offset: inner.next_offset,
            flushed_offset: self.flushed_offset.load(Ordering::Acquire),
        }
    }

    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Total bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.inner.lock().segments.values().map(|s| s.size()).sum()
    }

    /// Appends a validated produce payload (one or more v2 batches), assigning offsets in place.
    ///
    /// The caller has validated `batches` with [`vltava_record::validate`]; this only rewrites
    /// the fields outside the CRC (and, for LogAppendTime, the max timestamp and CRC).
    pub fn append(
        &self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, StorageError> {
        if self.is_poisoned() {
            return Err(StorageError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        let mut inner = self.inner.lock();
        let base_offset = inner.next_offset;
        let log_append = inner.config.log_append_time;
        let mut offset = base_offset;
        let mut max_ts = -1i64;
        let mut offset_of_max_ts = base_offset;
        let mut pos = 0;
        while pos < batches.len() {
            let batch = &mut batches[pos..];
            let h = vltava_record::BatchHeader::parse(batch).map_err(|source| {
                StorageError::Corrupt {
                    path: self.dir.clone(),
                    position: pos as u64,
                    source,
                }
            })?;
            let len = h.total_len();
            let batch = &mut batch[..len];
            vltava_record::set_base_offset(batch, offset);
            vltava_record::set_partition_leader_epoch(batch, leader_epoch);
            if log_append {
                vltava_record::set_log_append_time(batch, now_ms);
            }
            let ts = if log_append { now_ms } else { h.max_timestamp };
            let last = offset + i64::from(h.last_offset_delta);
            if ts > max_ts {
                max_ts = ts;
                offset_of_max_ts = last;
            }
            offset = last + 1;
            pos += len;
        }
        self.maybe_roll(&mut inner, batches.len() as u64, now_ms)?;
        let active = Arc::clone(inner.active());
        let interval = inner.config.index_interval_bytes;
        if let Err(e) = active.append(
            batches,
            base_offset,
            offset,
            max_ts,
            offset_of_max_ts,
            interval,
        ) {
            self.poisoned.store(true, Ordering::Release);
            tracing::error!(dir = %self.dir.display(), error = %e, "write failed; log stops accepting writes");
            return Err(e);
        }
        inner.next_offset = offset;
        Ok(AppendInfo {
            base_offset,
            last_offset: offset - 1,
            log_append_time: if log_append { now_ms } else { -1 },
            log_start_offset: inner.log_start_offset,
        })
    }

    fn maybe_roll(
        &self,
        inner: &mut Inner,
        incoming: u64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let active = inner.active();
        let size = active.size();
        if size == 0 {
            return Ok(());
        }
        let created = active.state.lock().created_ms;
        let too_big = size + incoming > inner.config.segment_bytes;
        let too_old = now_ms - created >= inner.config.segment_ms;
        let offset_overflow = inner.next_offset - active.base_offset > i64::from(i32::MAX);
        if too_big || too_old || offset_overflow {
            self.roll(inner, now_ms)?;
        }
        Ok(())
    }

    fn roll(&self, inner: &mut Inner, now_ms: i64) -> Result<(), StorageError> {
        let old = Arc::clone(inner.active());
        old.seal()?;
        let seg = Segment::create(&self.dir, inner.next_offset, now_ms)?;
        tracing::debug!(dir = %self.dir.display(), base_offset = inner.next_offset, "rolled segment");
        inner.segments.insert(inner.next_offset, Arc::new(seg));
        self.dir_dirty.store(true, Ordering::Release);
        Ok(())
    }

    /// Makes everything appended so far durable. Returns the offset below which all data is
    /// on stable storage. Concurrent appends continue during the fsync.
    pub fn flush(&self) -> Result<i64, StorageError> {
        if self.is_poisoned() {
            return Err(StorageError::Poisoned {
                dir: self.dir.clone(),
            });
        }
        let _guard = self.flush_lock.lock();
        let flushed = self.flushed_offset.load(Ordering::Acquire);
        let (target, to_sync) = {
            let inner = self.inner.lock();
            let target = inner.next_offset;
            if target <= flushed {
                return Ok(flushed);
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
                    crate::sync_dir(&self.dir)
                } else {
                    Ok(())
                }
            });
        if let Err(e) = synced {
            self.poisoned.store(true, Ordering::Release);
            tracing::error!(dir = %self.dir.display(), error = %e, "fsync failed; log stops accepting writes");
            return Err(e);
        }
        self.flushed_offset.store(target, Ordering::Release);
        Ok(target)
    }

    /// Reads whole batches starting with the one that contains `offset`, up to `max_bytes`
    /// (but always at least one whole batch when `min_one` is set, as KIP-74 asks).
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
    ) -> Result<ReadResult, StorageError> {
        let (segments, hw, log_start) = {
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
            let segs: Vec<_> = inner
                .segments
                .range(from..)
                .take(2)
                .map(|(_, s)| (Arc::clone(s), s.size()))
                .collect();
            (segs, inner.next_offset, inner.log_start_offset)
        };
        let empty = ReadResult {
            records: Bytes::new(),
            high_watermark: hw,
            log_start_offset: log_start,
        };
        if offset == hw {
            return Ok(empty);
        }
        for (seg, size) in segments {
            let Some(pos) = seg.find_position(offset, size)? else {
                continue;
            };
            let available = (size - pos) as usize;
            let mut want = available.min(max_bytes);
            if min_one {
                let mut len_buf = [0u8; 12];
                seg.read_exact_at(&mut len_buf, pos)?;
                let first =
                    i32::from_be_bytes(len_buf[8..12].try_into().expect("4 bytes")) as usize + 12;
                want = want.max(first.min(available));
            }
            if want == 0 {
                return Ok(empty);
            }
            let mut buf = seg.read_range(pos, want)?;
            // Trim to whole batches so clients never see a partial one.
            let whole = Batches::new(&buf)
                .map_while(Result::ok)
                .last()
                .map_or(0, |(_, r)| r.end);
            buf.truncate(whole);
            return Ok(ReadResult {
                records: Bytes::from(buf),
                high_watermark: hw,
                log_start_offset: log_start,
            });
        }
        Ok(empty)
    }

    /// ListOffsets by timestamp: the first batch whose max timestamp is `>= ts`, as
    /// `(offset, timestamp)`. The offset is the batch's base offset.
    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
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
                return Ok(Some((off.max(log_start), t)));
            }
        }
        Ok(None)
    }

    /// ListOffsets MAX_TIMESTAMP: `(offset, timestamp)` of the largest timestamp in the log.
    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        let inner = self.inner.lock();
        let mut best: Option<(i64, i64)> = None;
        for seg in inner.segments.values() {
            let st = seg.state.lock();
            if st.max_timestamp >= 0 && best.is_none_or(|(_, t)| st.max_timestamp > t) {
                best = Some((st.offset_of_max_timestamp, st.max_timestamp));
            }
        }
        best
    }

    /// DeleteRecords: moves the log start offset forward; segments wholly below it are
    /// deleted by the next retention pass.
    pub fn delete_records_before(&self, offset: i64) -> Result<i64, StorageError> {
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
        Ok(inner.log_start_offset)
    }

    /// Applies retention by time and size and deletes segments below the log start offset.
    /// Returns how many segments were deleted.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
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
            if !(expired || over_size || below_start) {
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
            total -= size;
            seg.delete_files();
            deleted += 1;
            let first = *inner
                .segments
                .keys()
                .next()
                .expect("active segment remains");
            inner.log_start_offset = inner.log_start_offset.max(first);
            tracing::info!(dir = %self.dir.display(), base_offset = base, expired, over_size, below_start, "deleted segment");
        }
        Ok(deleted)
    }

    /// Flushes and seals the active segment; called on clean shutdown.
    pub fn close(&self) -> Result<(), StorageError> {
        self.flush()?;
        let inner = self.inner.lock();
        inner.active().seal()
    }

    /// Number of segments, for tests and metrics.
    pub fn segment_count(&self) -> usize {
        self.inner.lock().segments.len()
    }
}
