//! A zero-copy view of Kafka's RecordBatch v2 (magic 2).
//!
//! The broker never decodes individual records on the produce or fetch path: it reads the
//! 61-byte batch header, checks the CRC-32C, and rewrites the two fields that are outside the
//! CRC (`baseOffset` and `partitionLeaderEpoch`). This crate owns that byte layout so storage
//! and the broker share one definition of it. Where records must be read or written
//! (coordinator replay, compaction, transaction markers), `reader` and `writer` do it for
//! every codec, so no caller special-cases compression and no other crate encodes a varint.

use thiserror::Error;

mod compression;
mod control;
mod reader;
pub mod stream;
pub mod varint;
mod writer;
pub use compression::{check_compressed, check_records, record_stream, RecordMeta, RecordStream};
pub use control::{
    read_end_txn_marker, write_end_txn_marker, ControlError, ControlKey, ControlRecordType,
    EndTxnMarker, MarkerBatch, TransactionResult,
};
pub use reader::{read_records, BatchRecords, Header, Record, RecordIter, RecordProblem, Records};
pub use varint::VarintError;
pub use writer::{recompress, BatchAttributes, BatchBuilder};

/// Length of the fixed RecordBatch v2 header.
pub const HEADER_LEN: usize = 61;
/// Bytes before `batchLength` counts: `baseOffset` (8) + `batchLength` (4).
pub const LOG_OVERHEAD: usize = 12;
/// The only message format this broker stores.
pub const CURRENT_MAGIC: i8 = 2;

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORDS_COUNT: usize = 57;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// What can be wrong with bytes that claim to be record batches.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RecordError {
    #[error("record batch truncated at byte {offset}: need {need} bytes, have {have}")]
    Truncated {
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("unsupported message format magic {magic}")]
    UnsupportedMagic { magic: i8 },
    #[error("record batch crc mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("invalid batch length {length}")]
    InvalidLength { length: i32 },
    #[error("record batch of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge { size: usize, limit: usize },
    #[error("invalid record count {count} with last offset delta {last_offset_delta}")]
    InvalidRecordCount { count: i32, last_offset_delta: i32 },
    #[error("no record batches")]
    Empty,
    #[error("cannot decompress {codec:?} records: {reason}")]
    Decompress { codec: Compression, reason: String },
    #[error("{codec:?} batch expands past {limit} bytes: a decompression bomb")]
    DecompressionBomb { codec: Compression, limit: u64 },
    #[error("malformed varint at byte {offset} of the records: {source}")]
    Varint { offset: usize, source: VarintError },
    #[error("record {index} is malformed: {problem}")]
    MalformedRecord { index: i32, problem: RecordProblem },
    #[error("bytes follow the {declared} records the batch declares")]
    TrailingBytes { declared: i32 },
    #[error("invalid control batch: {0}")]
    Control(#[from] ControlError),
}

/// Compression codec from the low three attribute bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
    Unknown(u8),
}

/// The decoded fixed header of one RecordBatch v2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub record_count: i32,
}

fn i16_at(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
fn i32_at(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn i64_at(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

impl BatchHeader {
    /// Parses the header at the start of `b`. Checks the length and magic but not the CRC.
    pub fn parse(b: &[u8]) -> Result<Self, RecordError> {
        if b.len() < MAGIC + 1 {
            return Err(RecordError::Truncated {
                offset: 0,
                need: MAGIC + 1,
                have: b.len(),
            });
        }
        let magic = b[MAGIC] as i8;
        if magic != CURRENT_MAGIC {
            return Err(RecordError::UnsupportedMagic { magic });
        }
        if b.len() < HEADER_LEN {
            return Err(RecordError::Truncated {
                offset: 0,
                need: HEADER_LEN,
                have: b.len(),
            });
        }
        let batch_length = i32_at(b, BATCH_LENGTH);
        if batch_length < (HEADER_LEN - LOG_OVERHEAD) as i32 {
            return Err(RecordError::InvalidLength {
                length: batch_length,
            });
        }
        Ok(Self {
            base_offset: i64_at(b, BASE_OFFSET),
            batch_length,
            partition_leader_epoch: i32_at(b, PARTITION_LEADER_EPOCH),
            magic,
            crc: i32_at(b, CRC) as u32,
            attributes: i16_at(b, ATTRIBUTES),
            last_offset_delta: i32_at(b, LAST_OFFSET_DELTA),
            base_timestamp: i64_at(b, BASE_TIMESTAMP),
            max_timestamp: i64_at(b, MAX_TIMESTAMP),
            producer_id: i64_at(b, PRODUCER_ID),
            producer_epoch: i16_at(b, PRODUCER_EPOCH),
            base_sequence: i32_at(b, BASE_SEQUENCE),
            record_count: i32_at(b, RECORDS_COUNT),
        })
    }

    /// Size of the whole batch on the wire and on disk, header included.
    pub fn total_len(&self) -> usize {
        self.batch_length as usize + LOG_OVERHEAD
    }

    pub fn last_offset(&self) -> i64 {
        self.base_offset + i64::from(self.last_offset_delta)
    }

    /// Offset just past this batch.
    pub fn next_offset(&self) -> i64 {
        self.last_offset() + 1
    }

    pub fn compression(&self) -> Compression {
        match self.attributes & COMPRESSION_MASK {
            0 => Compression::None,
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            n => Compression::Unknown(n as u8),
        }
    }

    /// The header as [`set_log_append_time`] leaves the batch (except the CRC, which is not
    /// recomputed), for checks that must see a batch as it will be stored before it is.
    pub fn with_log_append_time(mut self, now_ms: i64) -> Self {
        self.attributes |= TIMESTAMP_TYPE_BIT;
        self.max_timestamp = now_ms;
        self
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }
}

/// Computes the CRC-32C that a batch's header should carry.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[ATTRIBUTES..])
}

/// Iterates over the complete batches at the start of a buffer; stops at a partial batch.
///
/// Used on fetch results and segment scans, where a trailing partial batch is normal.
pub struct Batches<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Batches<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    /// Byte position just past the last batch returned.
    pub fn position(&self) -> usize {
        self.pos
    }
}

impl Iterator for Batches<'_> {
    /// The header and the byte range of the whole batch within the buffer.
    type Item = Result<(BatchHeader, std::ops::Range<usize>), RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        let rest = &self.buf[self.pos..];
        if rest.len() < LOG_OVERHEAD + 5 {
            return None;
        }
        let header = match BatchHeader::parse(rest) {
            Ok(h) => h,
            Err(RecordError::Truncated { .. }) => return None,
            Err(e) => {
                // Fuse: nothing after a bad header can be trusted.
                self.pos = self.buf.len();
                return Some(Err(e));
            }
        };
        let len = header.total_len();
        if rest.len() < len {
            return None;
        }
        let range = self.pos..self.pos + len;
        self.pos += len;
        Some(Ok((header, range)))
    }
}

/// Summary of a produce payload after validation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidatedBatches {
    pub batch_count: usize,
    /// Offsets the payload occupies once appended (sum of `last_offset_delta + 1`).
    pub offset_count: i64,
    pub max_timestamp: i64,
    pub first_timestamp: i64,
}

/// A batch holds at least one record, and its last offset delta covers them all.
fn check_record_count(header: &BatchHeader) -> Result<(), RecordError> {
    if header.record_count <= 0
        || header.last_offset_delta < 0
        || header.last_offset_delta < header.record_count - 1
    {
        return Err(RecordError::InvalidRecordCount {
            count: header.record_count,
            last_offset_delta: header.last_offset_delta,
        });
    }
    Ok(())
}

/// Validates a produce payload: every byte must belong to a whole v2 batch with a valid CRC,
/// no batch larger than `max_batch_bytes`.
pub fn validate(buf: &[u8], max_batch_bytes: usize) -> Result<ValidatedBatches, RecordError> {
    let mut pos = 0;
    let mut summary = ValidatedBatches {
        batch_count: 0,
        offset_count: 0,
        max_timestamp: -1,
        first_timestamp: -1,
    };
    while pos < buf.len() {
        let rest = &buf[pos..];
        let header = BatchHeader::parse(rest).map_err(|e| match e {
            RecordError::Truncated { need, have, .. } => RecordError::Truncated {
                offset: pos,
                need,
                have,
            },
            other => other,
        })?;
        let len = header.total_len();
        if len > max_batch_bytes {
            return Err(RecordError::TooLarge {
                size: len,
                limit: max_batch_bytes,
            });
        }
        if rest.len() < len {
            return Err(RecordError::Truncated {
                offset: pos,
                need: len,
                have: rest.len(),
            });
        }
        check_record_count(&header)?;
        let computed = compute_crc(&rest[..len]);
        if computed != header.crc {
            return Err(RecordError::CrcMismatch {
                stored: header.crc,
                computed,
            });
        }
        if summary.batch_count == 0 {
            summary.first_timestamp = header.base_timestamp;
        }
        summary.batch_count += 1;
        summary.offset_count += i64::from(header.last_offset_delta) + 1;
        summary.max_timestamp = summary.max_timestamp.max(header.max_timestamp);
        pos += len;
    }
    if summary.batch_count == 0 {
        return Err(RecordError::Empty);
    }
    Ok(summary)
}

/// Rewrites `baseOffset` in place; it is outside the CRC, so the CRC stays valid.
pub fn set_base_offset(batch: &mut [u8], base_offset: i64) {
    batch[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&base_offset.to_be_bytes());
}

/// Rewrites `partitionLeaderEpoch` in place; outside the CRC too.
pub fn set_partition_leader_epoch(batch: &mut [u8], epoch: i32) {
    batch[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4].copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps LogAppendTime: sets the timestamp-type bit and `maxTimestamp`, then recomputes
/// the CRC because both are covered by it.
pub fn set_log_append_time(batch: &mut [u8], now_ms: i64) {
    let attrs = i16_at(batch, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
    batch[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
    batch[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
    let crc = compute_crc(batch);
    batch[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

/// The header of a batch as the log stores it, for an append that writes the caller's bytes
/// without copying them: the 61-byte header with `baseOffset` and `partitionLeaderEpoch`
/// set, and, with `log_append_time`, the LogAppendTime stamp and the CRC recomputed over
/// the new header and the untouched rest of the batch (`batch[HEADER_LEN..]`).
pub fn stored_header(
    batch: &[u8],
    base_offset: i64,
    leader_epoch: i32,
    log_append_time: Option<i64>,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h.copy_from_slice(&batch[..HEADER_LEN]);
    set_base_offset(&mut h, base_offset);
    set_partition_leader_epoch(&mut h, leader_epoch);
    if let Some(now_ms) = log_append_time {
        let attrs = i16_at(&h, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
        h[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
        h[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
        let crc = crc32c::crc32c_append(crc32c::crc32c(&h[ATTRIBUTES..]), &batch[HEADER_LEN..]);
        h[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
    h
}

/// One record of an uncompressed batch, borrowed from the batch bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordRef<'a> {
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
}

/// Decodes the records of one uncompressed batch, borrowed from it (the coordinator's replay
/// of batches the broker wrote itself). Compressed batches are refused: [`read_records`]
/// reads any batch.
pub fn uncompressed_records(batch: &[u8]) -> Result<Vec<RecordRef<'_>>, RecordError> {
    let h = BatchHeader::parse(batch)?;
    if h.compression() != Compression::None {
        return Err(RecordError::InvalidLength {
            length: h.batch_length,
        });
    }
    let end = h.total_len();
    if batch.len() < end {
        return Err(RecordError::Truncated {
            offset: 0,
            need: end,
            have: batch.len(),
        });
    }
    parse_records(&batch[HEADER_LEN..end], h.record_count)
}

/// Decodes `count` records from the record section of a batch (decompressed if need be).
pub fn parse_records(body: &[u8], count: i32) -> Result<Vec<RecordRef<'_>>, RecordError> {
    reader::RecordIter::new(body, count)
        .map(|r| r.map(|r| RecordRef::from_record(&r)))
        .collect()
}

impl<'a> RecordRef<'a> {
    /// `r` was parsed from a borrowed section, so its fields borrow from it too.
    fn from_record(r: &Record<'a>) -> Self {
        fn borrowed<'a>(c: &Option<std::borrow::Cow<'a, [u8]>>) -> Option<&'a [u8]> {
            match c {
                None => None,
                Some(std::borrow::Cow::Borrowed(b)) => Some(b),
                Some(std::borrow::Cow::Owned(_)) => unreachable!("RecordIter only borrows"),
            }
        }
        Self {
            offset_delta: i64::from(r.offset_delta),
            timestamp_delta: r.timestamp_delta,
            key: borrowed(&r.key),
            value: borrowed(&r.value),
        }
    }
}

/// A record for [`build_batch`]: key, value and timestamp.
pub type RecordSpec<'a> = (Option<&'a [u8]>, Option<&'a [u8]>, i64);

/// Builds an uncompressed batch from `(key, value, timestamp)` records, for tests and tools
/// that need a well-formed batch without a client library. [`BatchBuilder`] writes any batch.
pub fn build_batch(base_offset: i64, records: &[RecordSpec<'_>]) -> Vec<u8> {
    let mut b = BatchBuilder::new(BatchAttributes {
        base_offset,
        partition_leader_epoch: 0,
        ..BatchAttributes::default()
    });
    for (key, value, timestamp) in records {
        b.push(*timestamp, *key, *value, &[]);
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The header an append writes in front of the caller's untouched bytes is the header
    /// an in-place rewrite produces, CRC included.
    #[test]
    fn stored_header_equals_the_in_place_rewrite() {
        let b = build_batch(0, &[(Some(b"k"), Some(b"v"), 10), (None, Some(b"w"), 12)]);
        for stamp in [None, Some(99_000)] {
            let mut in_place = b.clone();
            set_base_offset(&mut in_place, 41);
            set_partition_leader_epoch(&mut in_place, 7);
            if let Some(now) = stamp {
                set_log_append_time(&mut in_place, now);
            }
            let h = stored_header(&b, 41, 7, stamp);
            assert_eq!(&h[..], &in_place[..HEADER_LEN], "{stamp:?}");
            let mut joined = h.to_vec();
            joined.extend_from_slice(&b[HEADER_LEN..]);
            assert!(validate(&joined, usize::MAX).is_ok());
        }
    }

    #[test]
    fn built_batch_validates_and_parses() {
        let b = build_batch(0, &[(Some(b"k"), Some(b"v"), 10), (None, Some(b"w"), 12)]);
        let v = validate(&b, usize::MAX).unwrap();
        assert_eq!(v.batch_count, 1);
        assert_eq!(v.offset_count, 2);
        assert_eq!(v.max_timestamp, 12);
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!(h.total_len(), b.len());
        assert_eq!(h.compression(), Compression::None);
    }

    #[test]
    fn build_batch_bytes_are_stable() {
        // The bytes `build_batch` wrote before it became a wrapper over `BatchBuilder`.
        let b = build_batch(7, &[(Some(b"k"), Some(b"v"), 10), (None, None, 300)]);
        let want: &[u8] = &[
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x00, 0x00, 0x00, 0x42, 0x00, 0x00,
            0x00, 0x00, 0x02, 0xb8, 0xed, 0x2c, 0xf5, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00,
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01,
            0x2c, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0x00, 0x00, 0x00, 0x02, 0x10, 0x00, 0x00, 0x00, 0x02, 0x6b, 0x02, 0x76, 0x00,
            0x0e, 0x00, 0xc4, 0x04, 0x02, 0x01, 0x01, 0x00,
        ];
        assert_eq!(b, want);
    }

    #[test]
    fn uncompressed_records_decode() {
        let b = build_batch(5, &[(Some(b"k"), Some(b"v"), 10), (None, None, 12)]);
        let recs = uncompressed_records(&b).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(
            (recs[0].key, recs[0].value, recs[0].offset_delta),
            (Some(&b"k"[..]), Some(&b"v"[..]), 0)
        );
        assert_eq!(
            (recs[1].key, recs[1].value, recs[1].timestamp_delta),
            (None, None, 2)
        );
        assert!(uncompressed_records(&b[..b.len() - 1]).is_err());
    }

    #[test]
    fn offset_rewrite_keeps_crc_valid() {
        let mut b = build_batch(0, &[(None, Some(b"v"), 1)]);
        set_base_offset(&mut b, 42);
        set_partition_leader_epoch(&mut b, 7);
        validate(&b, usize::MAX).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        assert_eq!((h.base_offset, h.partition_leader_epoch), (42, 7));
    }

    #[test]
    fn log_append_time_recomputes_crc() {
        let mut b = build_batch(0, &[(None, Some(b"v"), 1)]);
        set_log_append_time(&mut b, 99);
        validate(&b, usize::MAX).unwrap();
        let h = BatchHeader::parse(&b).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 99);
    }

    #[test]
    fn bad_inputs_are_named() {
        let mut b = build_batch(0, &[(None, Some(b"v"), 1)]);
        let last = b.len() - 1;
        b[last] ^= 1;
        assert!(matches!(
            validate(&b, usize::MAX),
            Err(RecordError::CrcMismatch { .. })
        ));
        let mut old = build_batch(0, &[(None, Some(b"v"), 1)]);
        old[MAGIC] = 1;
        assert_eq!(
            validate(&old, usize::MAX),
            Err(RecordError::UnsupportedMagic { magic: 1 })
        );
        let ok = build_batch(0, &[(None, Some(b"v"), 1)]);
        assert!(matches!(
            validate(&ok[..30], usize::MAX),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(
            validate(&ok, 10),
            Err(RecordError::TooLarge { .. })
        ));
        assert_eq!(validate(&[], usize::MAX), Err(RecordError::Empty));
    }

    proptest! {
        #[test]
        fn batches_round_trip(
            recs in prop::collection::vec(
                prop::collection::vec((prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
                                       prop::collection::vec(any::<u8>(), 0..64), 0i64..1_000_000), 1..8),
                1..6),
            base in 0i64..1_000_000_000,
        ) {
            let mut buf = Vec::new();
            let mut next = base;
            for batch in &recs {
                let r: Vec<_> = batch.iter().map(|(k, v, t)| (k.as_deref(), Some(v.as_slice()), *t)).collect();
                buf.extend_from_slice(&build_batch(next, &r));
                next += batch.len() as i64;
            }
            let v = validate(&buf, usize::MAX).unwrap();
            prop_assert_eq!(v.batch_count, recs.len());
            prop_assert_eq!(v.offset_count, next - base);
            let mut expect = base;
            for item in Batches::new(&buf) {
                let (h, range) = item.unwrap();
                prop_assert_eq!(h.base_offset, expect);
                prop_assert_eq!(h.total_len(), range.len());
                expect = h.next_offset();
            }
            prop_assert_eq!(expect, next);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
            let _ = validate(&bytes, 1 << 20);
            for item in Batches::new(&bytes) { let _ = item; }
            let _ = uncompressed_records(&bytes);
        }
    }
}
