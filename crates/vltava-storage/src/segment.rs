//! One log segment: `<base>.log` holding whole record batches, with its two sparse indexes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use vltava_record::{BatchHeader, RecordError, HEADER_LEN};

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

/// Mutable per-segment bookkeeping, changed only by the appender (under the log's lock).
#[derive(Debug)]
pub(crate) struct SegmentState {
    pub offset_index: OffsetIndex,
    pub time_index: TimeIndex,
    pub bytes_since_index: u64,
    /// Offset just past the last batch in this segment.
    pub next_offset: i64,
    pub max_timestamp: i64,
    pub offset_of_max_timestamp: i64,
    pub created_ms: i64,
}

#[derive(Debug)]
pub struct Segment {
    pub base_offset: i64,
    pub(crate) log_path: PathBuf,
    file: File,
    index_file: File,
    time_index_file: File,
    /// Bytes of whole batches written; readers never look past it.
    size: AtomicU64,
    pub(crate) state: Mutex<SegmentState>,
}

/// How a segment is opened from disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Recovery {
    /// Trust the indexes if they look valid; only scan the tail past the last index entry.
    TrustIndexes,
    /// Validate every batch's CRC, truncate at the first bad one and rebuild the indexes.
    Full,
}

impl Segment {
    pub(crate) fn create(dir: &Path, base_offset: i64, now_ms: i64) -> Result<Self, StorageError> {
        let stem = file_stem(base_offset);
        let log_path = dir.join(format!("{stem}.log"));
        let open = |p: PathBuf| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&p)
                .map_err(|e| io_err("create", &p, e))
        };
        let file = open(log_path.clone())?;
        let index_file = open(dir.join(format!("{stem}.index")))?;
        let time_index_file = open(dir.join(format!("{stem}.timeindex")))?;
        Ok(Self {
            base_offset,
            log_path,
            file,
            index_file,
            time_index_file,
            size: AtomicU64::new(0),
            state: Mutex::new(SegmentState {
                offset_index: OffsetIndex::default(),
                time_index: TimeIndex::default(),
                bytes_since_index: 0,
                next_offset: base_offset,
                max_timestamp: -1,
                offset_of_max_timestamp: base_offset,
                created_ms: now_ms,
            }),
        })
    }

    /// Opens an existing segment. Returns the segment and whether it had to truncate bytes.
    pub(crate) fn open(
        dir: &Path,
        base_offset: i64,
        recovery: Recovery,
        index_interval_bytes: u64,
        now_ms: i64,
    ) -> Result<(Self, bool), StorageError> {
        let stem = file_stem(base_offset);
        let log_path = dir.join(format!("{stem}.log"));
        let index_path = dir.join(format!("{stem}.index"));
        let time_path = dir.join(format!("{stem}.timeindex"));
        let rw = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
                .map_err(|e| io_err("open", p, e))
        };
        // Opening creates a missing index as an empty file, which would then parse as a valid
        // empty index: note which were missing so they are rebuilt rather than trusted.
        let indexes_present = index_path.exists() && time_path.exists();
        let file = rw(&log_path)?;
        let index_file = rw(&index_path)?;
        let time_index_file = rw(&time_path)?;
        let file_len = file
            .metadata()
            .map_err(|e| io_err("stat", &log_path, e))?
            .len();
        let seg = Self {
            base_offset,
            log_path: log_path.clone(),
            file,
            index_file,
            time_index_file,
            size: AtomicU64::new(file_len),
            state: Mutex::new(SegmentState {
                offset_index: OffsetIndex::default(),
                time_index: TimeIndex::default(),
                bytes_since_index: 0,
                next_offset: base_offset,
                max_timestamp: -1,
                offset_of_max_timestamp: base_offset,
                created_ms: now_ms,
            }),
        };
        let loaded = if recovery == Recovery::TrustIndexes && indexes_present {
            let idx = std::fs::read(&index_path)
                .ok()
                .and_then(|b| OffsetIndex::parse(&b, file_len));
            let tidx = std::fs::read(&time_path)
                .ok()
                .and_then(|b| TimeIndex::parse(&b));
            idx.zip(tidx)
        } else {
            None
        };
        let truncated = match loaded {
            Some((idx, tidx)) => {
                let start = idx.entries.last().map_or(0, |e| u64::from(e.position));
                {
                    let mut st = seg.state.lock();
                    if let Some(last) = tidx.entries.last() {
                        st.max_timestamp = last.timestamp;
                        st.offset_of_max_timestamp = base_offset + i64::from(last.relative_offset);
                    }
                    st.offset_index = idx;
                    st.time_index = tidx;
                }
                // Index entries are hints; the tail past the last one is scanned (and must be
                // valid, or the whole segment is recovered).
                match seg.scan(start, file_len, true, index_interval_bytes, false)? {
                    ScanEnd::Clean => false,
                    ScanEnd::Invalid(_) => seg.recover(file_len, index_interval_bytes)?,
                }
            }
            None => seg.recover(file_len, index_interval_bytes)?,
        };
        Ok((seg, truncated))
    }

    /// Rebuilds both indexes from the log bytes, validating CRCs, and truncates a torn or
    /// corrupt tail. Returns whether bytes were cut.
    fn recover(&self, file_len: u64, index_interval_bytes: u64) -> Result<bool, StorageError> {
        {
            let mut st = self.state.lock();
            st.offset_index = OffsetIndex::default();
            st.time_index = TimeIndex::default();
            st.bytes_since_index = 0;
            st.next_offset = self.base_offset;
            st.max_timestamp = -1;
            st.offset_of_max_timestamp = self.base_offset;
        }
        let end = match self.scan(0, file_len, true, index_interval_bytes, true)? {
            ScanEnd::Clean => file_len,
            ScanEnd::Invalid(pos) => pos,
        };
        let truncated = end < file_len;
        if truncated {
            tracing::warn!(
                segment = %self.log_path.display(),
                valid_bytes = end,
                file_bytes = file_len,
                "truncating invalid or torn tail of segment"
            );
            self.file
                .set_len(end)
                .map_err(|e| io_err("truncate", &self.log_path, e))?;
            self.file
                .sync_all()
                .map_err(|e| io_err("fsync", &self.log_path, e))?;
        }
        self.size.store(end, Ordering::Release);
        self.rewrite_index_files()?;
        Ok(truncated)
    }

    /// Walks batch headers in `[start, end)`, updating next offset and max timestamp, and,
    /// when `build_index` is set, the indexes. With `check_crc`, reads whole batches to verify.
    fn scan(
        &self,
        start: u64,
        end: u64,
        check_crc: bool,
        index_interval_bytes: u64,
        build_index: bool,
    ) -> Result<ScanEnd, StorageError> {
        let mut pos = start;
        let mut st = self.state.lock();
        let mut header_buf = [0u8; HEADER_LEN];
        let mut batch_buf = Vec::new();
        while pos < end {
            if end - pos < HEADER_LEN as u64 {
                return Ok(ScanEnd::Invalid(pos));
            }
            self.read_exact_at(&mut header_buf, pos)?;
            let header = match BatchHeader::parse(&header_buf) {
                Ok(h) => h,
                Err(_) => return Ok(ScanEnd::Invalid(pos)),
            };
            let len = header.total_len() as u64;
            if pos + len > end
                || header.base_offset < st.next_offset
                || header.last_offset_delta < 0
                || header.last_offset() - self.base_offset > i64::from(u32::MAX)
            {
                return Ok(ScanEnd::Invalid(pos));
            }
            if check_crc {
                batch_buf.resize(len as usize, 0);
                self.read_exact_at(&mut batch_buf, pos)?;
                if vltava_record::compute_crc(&batch_buf) != header.crc {
                    return Ok(ScanEnd::Invalid(pos));
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
        let st = self.state.lock();
        let mut idx = Vec::with_capacity(st.offset_index.entries.len() * OFFSET_ENTRY_LEN);
        for e in &st.offset_index.entries {
            idx.extend_from_slice(&OffsetIndex::encode_entry(*e));
        }
        let mut tidx = Vec::with_capacity(st.time_index.entries.len() * TIME_ENTRY_LEN);
        for e in &st.time_index.entries {
            tidx.extend_from_slice(&TimeIndex::encode_entry(*e));
        }
        drop(st);
        let path = self.log_path.with_extension("index");
        self.index_file
            .set_len(0)
            .map_err(|e| io_err("truncate", &path, e))?;
        self.index_file
            .write_all_at(&idx, 0)
            .map_err(|e| io_err("write", &path, e))?;
        let tpath = self.log_path.with_extension("timeindex");
        self.time_index_file
            .set_len(0)
            .map_err(|e| io_err("truncate", &tpath, e))?;
        self.time_index_file
            .write_all_at(&tidx, 0)
            .map_err(|e| io_err("write", &tpath, e))?;
        Ok(())
    }

    pub fn size(&self) -> u64 {
        self.size.load(Ordering::Acquire)
    }

    pub(crate) fn next_offset(&self) -> i64 {
        self.state.lock().next_offset
    }

    pub(crate) fn max_timestamp(&self) -> i64 {
        self.state.lock().max_timestamp
    }

    pub(crate) fn read_exact_at(&self, buf: &mut [u8], pos: u64) -> Result<(), StorageError> {
        self.file
            .read_exact_at(buf, pos)
            .map_err(|e| io_err("read", &self.log_path, e))
    }

    /// Appends already-validated batches whose offsets have been assigned.
    /// Caller holds the log lock, so appends to one segment are serial.
    pub(crate) fn append(
        &self,
        batches: &[u8],
        first_offset: i64,
        next_offset: i64,
        max_timestamp: i64,
        offset_of_max_timestamp: i64,
        index_interval_bytes: u64,
    ) -> Result<(), StorageError> {
        let pos = self.size();
        self.file
            .write_all_at(batches, pos)
            .map_err(|e| io_err("write", &self.log_path, e))?;
        let mut st = self.state.lock();
        st.bytes_since_index += batches.len() as u64;
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
            let n = st.offset_index.entries.len() as u64;
            st.offset_index.entries.push(e);
            let te = TimeEntry {
                timestamp: st.max_timestamp,
                relative_offset: rel,
            };
            let tn = st.time_index.entries.len() as u64;
            st.time_index.entries.push(te);
            st.bytes_since_index = 0;
            self.index_file
                .write_all_at(&OffsetIndex::encode_entry(e), n * OFFSET_ENTRY_LEN as u64)
                .map_err(|e| io_err("write", &self.log_path.with_extension("index"), e))?;
            self.time_index_file
                .write_all_at(&TimeIndex::encode_entry(te), tn * TIME_ENTRY_LEN as u64)
                .map_err(|e| io_err("write", &self.log_path.with_extension("timeindex"), e))?;
        }
        st.next_offset = next_offset;
        drop(st);
        self.size
            .store(pos + batches.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Byte position of the batch containing `offset`, or `None` if the segment ends first.
    /// Starts from the offset index and hops batch headers.
    pub(crate) fn find_position(
        &self,
        offset: i64,
        size: u64,
    ) -> Result<Option<u64>, StorageError> {
        let rel = (offset - self.base_offset).clamp(0, i64::from(u32::MAX)) as u32;
        let mut pos = u64::from(self.state.lock().offset_index.lookup(rel));
        let mut header = [0u8; 27];
        while pos + HEADER_LEN as u64 <= size {
            self.read_exact_at(&mut header, pos)?;
            let base = i64::from_be_bytes(header[0..8].try_into().expect("8 bytes"));
            let len = i32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
            let delta = i32::from_be_bytes(header[23..27].try_into().expect("4 bytes"));
            if len < (HEADER_LEN - vltava_record::LOG_OVERHEAD) as i32 {
                // Only a lying index can lead here; refuse rather than read garbage.
                return Err(StorageError::Corrupt {
                    path: self.log_path.clone(),
                    position: pos,
                    source: RecordError::InvalidLength { length: len },
                });
            }
            if base + i64::from(delta) >= offset {
                return Ok(Some(pos));
            }
            pos += len as u64 + vltava_record::LOG_OVERHEAD as u64;
        }
        Ok(None)
    }

    /// First batch whose max timestamp is `>= ts`: `(base offset, max timestamp)`.
    pub(crate) fn find_timestamp(
        &self,
        ts: i64,
        size: u64,
    ) -> Result<Option<(i64, i64)>, StorageError> {
        let start_rel = self.state.lock().time_index.lookup(ts);
        let Some(mut pos) = self.find_position(self.base_offset + i64::from(start_rel), size)?
        else {
            return Ok(None);
        };
        let mut buf = [0u8; HEADER_LEN];
        while pos + HEADER_LEN as u64 <= size {
            self.read_exact_at(&mut buf, pos)?;
            let h = BatchHeader::parse(&buf).map_err(|e| StorageError::Corrupt {
                path: self.log_path.clone(),
                position: pos,
                source: e,
            })?;
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
        let mut buf = vec![0u8; len];
        self.read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    pub(crate) fn sync(&self) -> Result<(), StorageError> {
        #[cfg(test)]
        if FAIL_NEXT_SYNC.with(|f| f.replace(false)) {
            let e = std::io::Error::other("injected fsync failure");
            return Err(io_err("fsync", &self.log_path, e));
        }
        self.file
            .sync_data()
            .map_err(|e| io_err("fsync", &self.log_path, e))
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
            let tn = st.time_index.entries.len() as u64;
            st.time_index.entries.push(te);
            let tpath = self.log_path.with_extension("timeindex");
            self.time_index_file
                .write_all_at(&TimeIndex::encode_entry(te), tn * TIME_ENTRY_LEN as u64)
                .map_err(|e| io_err("write", &tpath, e))?;
        }
        drop(st);
        self.index_file
            .sync_data()
            .map_err(|e| io_err("fsync", &self.log_path.with_extension("index"), e))?;
        self.time_index_file
            .sync_data()
            .map_err(|e| io_err("fsync", &self.log_path.with_extension("timeindex"), e))
    }

    pub(crate) fn delete_files(&self) {
        for ext in ["log", "index", "timeindex"] {
            let p = self.log_path.with_extension(ext);
            if let Err(e) = std::fs::remove_file(&p) {
                tracing::warn!(path = %p.display(), error = %e, "could not delete segment file");
            }
        }
    }
}

enum ScanEnd {
    Clean,
    /// The first invalid byte position.
    Invalid(u64),
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

#[cfg(test)]
thread_local! {
    /// Set by tests to make this thread's next segment fsync fail, as a failing disk would.
    pub(crate) static FAIL_NEXT_SYNC: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}
