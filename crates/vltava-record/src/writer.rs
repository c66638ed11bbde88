//! Writing RecordBatch v2, for every codec: the broker's own batches (coordinator records,
//! transaction markers) and rewritten ones (compaction). Each codec is framed as Kafka's Java
//! client frames it, so every client reads what the broker writes:
//! gzip is a gzip stream; snappy uses snappy-java's xerial stream framing (librdkafka writes a
//! bare block but reads both, and Kafka reads both); lz4 is an lz4 frame with independent
//! 64 KiB blocks and no content checksum (Kafka's `Lz4BlockInputStream` refuses linked
//! blocks); zstd is a standard zstd frame.

use std::io::Write;

use crate::compression::XERIAL_MAGIC;
use crate::reader::{Header, Record};
use crate::varint::{put_varint, put_varlong, varint_len, varlong_len};
use crate::{compute_crc, Compression, RecordError, CURRENT_MAGIC, HEADER_LEN, LOG_OVERHEAD};

/// snappy-java's default block size, which Kafka's producer uses.
const XERIAL_BLOCK_LEN: usize = 32 * 1024;
/// Kafka's default levels (`CompressionType`): gzip 6 (zlib's default), zstd 3.
const GZIP_LEVEL: u32 = 6;
const ZSTD_LEVEL: i32 = 3;

/// Everything in a batch header that is not derived from its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchAttributes {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub transactional: bool,
    pub control: bool,
    /// `Some(now_ms)` marks the batch LogAppendTime with `maxTimestamp = now_ms`, as the broker
    /// stamps it; `None` is CreateTime, `maxTimestamp` the largest record timestamp.
    pub log_append_time_ms: Option<i64>,
    pub compression: Compression,
}

impl Default for BatchAttributes {
    /// A non-idempotent, uncompressed CreateTime batch at offset 0: Kafka's "no producer id",
    /// "no sequence" and "no partition leader epoch" are all -1.
    fn default() -> Self {
        Self {
            base_offset: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            transactional: false,
            control: false,
            log_append_time_ms: None,
            compression: Compression::None,
        }
    }
}

/// Builds one batch: records are encoded as they are pushed, the section is compressed and
/// the header and CRC written by [`BatchBuilder::finish`].
#[derive(Debug)]
pub struct BatchBuilder {
    attributes: BatchAttributes,
    /// Room for the header, then the uncompressed records section.
    buf: Vec<u8>,
    count: i32,
    base_timestamp: i64,
    max_timestamp: i64,
    last_offset_delta: i32,
}

impl BatchBuilder {
    pub fn new(attributes: BatchAttributes) -> Self {
        assert!(
            !matches!(attributes.compression, Compression::Unknown(_)),
            "no codec to write {:?}",
            attributes.compression
        );
        Self {
            attributes,
            buf: vec![0; HEADER_LEN],
            count: 0,
            base_timestamp: -1,
            max_timestamp: -1,
            last_offset_delta: -1,
        }
    }

    /// Records pushed so far.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Appends a record at the next offset (one past the last pushed, 0 for the first).
    pub fn push(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) {
        let next = self.last_offset_delta + 1;
        self.append(next, timestamp, key, value, headers);
    }

    /// Appends a record at `offset_delta`, which must be past the last one: compaction keeps
    /// the offsets of the records it keeps, so gaps are allowed.
    pub fn append(
        &mut self,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header<'_>],
    ) {
        assert!(
            offset_delta > self.last_offset_delta,
            "offset delta {offset_delta} does not follow {}",
            self.last_offset_delta
        );
        if self.count == 0 {
            self.base_timestamp = timestamp;
        }
        // Wrapping, as Java's long arithmetic: any timestamps a batch can hold rewrite exactly.
        let timestamp_delta = timestamp.wrapping_sub(self.base_timestamp);
        let fields = 1
            + varlong_len(timestamp_delta)
            + varint_len(offset_delta)
            + bytes_len(key)
            + bytes_len(value)
            + varint_len(len_i32(headers.len()))
            + headers
                .iter()
                .map(|h| bytes_len(Some(&h.key[..])) + bytes_len(h.value.as_deref()))
                .sum::<usize>();
        let b = &mut self.buf;
        put_varint(b, len_i32(fields));
        let start = b.len();
        b.push(0); // attributes: unused
        put_varlong(b, timestamp_delta);
        put_varint(b, offset_delta);
        put_bytes(b, key);
        put_bytes(b, value);
        put_varint(b, len_i32(headers.len()));
        for h in headers {
            put_bytes(b, Some(&h.key[..]));
            put_bytes(b, h.value.as_deref());
        }
        debug_assert_eq!(b.len() - start, fields);
        self.count += 1;
        self.last_offset_delta = offset_delta;
        self.max_timestamp = self.max_timestamp.max(timestamp);
    }

    /// Appends a record read from another batch whose `baseTimestamp` was `base_timestamp`,
    /// keeping its offset delta and timestamp: how a rewritten batch keeps its records.
    pub fn append_record(&mut self, base_timestamp: i64, record: &Record<'_>) {
        self.append(
            record.offset_delta,
            base_timestamp.wrapping_add(record.timestamp_delta),
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        );
    }

    /// Keeps a rewritten batch's original last offset when its last records were removed, as
    /// Kafka's cleaner does: the batch still spans the producer's whole sequence range.
    pub fn set_last_offset_delta(&mut self, last_offset_delta: i32) {
        assert!(
            last_offset_delta >= self.last_offset_delta,
            "last offset delta {last_offset_delta} is before the last record's {}",
            self.last_offset_delta
        );
        self.last_offset_delta = last_offset_delta;
    }

    /// Compresses the records section with the batch's codec and writes the header and CRC.
    pub fn finish(self) -> Vec<u8> {
        assert!(self.count > 0, "a batch holds at least one record");
        let a = self.attributes;
        let mut b = match a.compression {
            Compression::None => self.buf,
            codec => {
                let mut out = vec![0; HEADER_LEN];
                compress(&self.buf[HEADER_LEN..], codec, &mut out);
                out
            }
        };
        let mut attributes = codec_id(a.compression);
        if a.log_append_time_ms.is_some() {
            attributes |= 0x08;
        }
        if a.transactional {
            attributes |= 0x10;
        }
        if a.control {
            attributes |= 0x20;
        }
        let max_timestamp = a.log_append_time_ms.unwrap_or(self.max_timestamp);
        let batch_length = len_i32(b.len() - LOG_OVERHEAD);
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(&a.base_offset.to_be_bytes());
        h.extend_from_slice(&batch_length.to_be_bytes());
        h.extend_from_slice(&a.partition_leader_epoch.to_be_bytes());
        h.push(CURRENT_MAGIC as u8);
        h.extend_from_slice(&0u32.to_be_bytes()); // crc, below
        h.extend_from_slice(&attributes.to_be_bytes());
        h.extend_from_slice(&self.last_offset_delta.to_be_bytes());
        h.extend_from_slice(&self.base_timestamp.to_be_bytes());
        h.extend_from_slice(&max_timestamp.to_be_bytes());
        h.extend_from_slice(&a.producer_id.to_be_bytes());
        h.extend_from_slice(&a.producer_epoch.to_be_bytes());
        h.extend_from_slice(&a.base_sequence.to_be_bytes());
        h.extend_from_slice(&self.count.to_be_bytes());
        b[..HEADER_LEN].copy_from_slice(&h);
        let crc = compute_crc(&b);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        b
    }
}

fn codec_id(codec: Compression) -> i16 {
    match codec {
        Compression::None => 0,
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
        Compression::Unknown(n) => unreachable!("refused by BatchBuilder::new: codec {n}"),
    }
}

/// Lengths on the wire are int32; a record or batch past 2 GiB is a caller's bug.
fn len_i32(n: usize) -> i32 {
    i32::try_from(n).expect("record batch fields fit in an int32 length")
}

fn bytes_len(b: Option<&[u8]>) -> usize {
    match b {
        Some(b) => varint_len(len_i32(b.len())) + b.len(),
        None => varint_len(-1),
    }
}

fn put_bytes(out: &mut Vec<u8>, b: Option<&[u8]>) {
    match b {
        Some(b) => {
            put_varint(out, len_i32(b.len()));
            out.extend_from_slice(b);
        }
        None => put_varint(out, -1),
    }
}

/// Appends `section` compressed with `codec` to `out`. Compressing into memory only fails if
/// memory does, so errors are not part of the API.
fn compress(section: &[u8], codec: Compression, out: &mut Vec<u8>) {
    const MEMORY: &str = "compressing into memory cannot fail";
    match codec {
        Compression::Gzip => {
            let mut e = flate2::write::GzEncoder::new(out, flate2::Compression::new(GZIP_LEVEL));
            e.write_all(section).expect(MEMORY);
            e.finish().expect(MEMORY);
        }
        Compression::Snappy => {
            // snappy-java's stream header: magic, then version 1 and minimum compatible 1.
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in section.chunks(XERIAL_BLOCK_LEN) {
                let block = encoder.compress_vec(chunk).expect(MEMORY);
                out.extend_from_slice(&(block.len() as u32).to_be_bytes());
                out.extend_from_slice(&block);
            }
        }
        Compression::Lz4 => {
            use lz4_flex::frame::{BlockMode, BlockSize, FrameEncoder, FrameInfo};
            let info = FrameInfo::new()
                .block_size(BlockSize::Max64KB)
                .block_mode(BlockMode::Independent);
            let mut e = FrameEncoder::with_frame_info(info, out);
            e.write_all(section).expect(MEMORY);
            e.finish().expect(MEMORY);
        }
        Compression::Zstd => {
            let mut e = zstd::stream::write::Encoder::new(out, ZSTD_LEVEL).expect(MEMORY);
            e.write_all(section).expect(MEMORY);
            e.finish().expect(MEMORY);
        }
        Compression::None | Compression::Unknown(_) => {
            unreachable!("{codec:?} is not compressed here")
        }
    }
}

/// Rewrites every batch of `batches` whose codec is not `target` with `target`, keeping its
/// records (offset deltas, timestamps, keys, values, headers) and its producer id, epoch,
/// base sequence and transactional flag, as Kafka does for a topic whose `compression.type`
/// names a codec. Batches already in `target` and control batches are copied as they are.
/// `limit` caps each batch's decompressed bytes.
pub fn recompress(batches: &[u8], target: Compression, limit: u64) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::with_capacity(batches.len());
    for item in crate::Batches::new(batches) {
        let (h, range) = item?;
        let batch = &batches[range];
        if h.compression() == target || h.is_control() {
            out.extend_from_slice(batch);
            continue;
        }
        let records = crate::read_records(batch, limit)?;
        let mut b = BatchBuilder::new(BatchAttributes {
            base_offset: h.base_offset,
            partition_leader_epoch: h.partition_leader_epoch,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            transactional: h.is_transactional(),
            control: false,
            log_append_time_ms: None,
            compression: target,
        });
        for r in records {
            b.append_record(h.base_timestamp, &r?);
        }
        if b.is_empty() {
            return Err(RecordError::Empty);
        }
        out.extend_from_slice(&b.finish());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(codec: Compression, pid: i64) -> Vec<u8> {
        let mut b = BatchBuilder::new(BatchAttributes {
            producer_id: pid,
            producer_epoch: 3,
            base_sequence: 17,
            transactional: pid >= 0,
            compression: codec,
            ..Default::default()
        });
        b.push(1_000, Some(b"k1"), Some(b"v1"), &[]);
        b.push(
            1_005,
            None,
            Some(b"v2"),
            &[Header {
                key: b"h".as_slice().into(),
                value: Some(b"x".as_slice().into()),
            }],
        );
        b.push(999, Some(b"k3"), None, &[]);
        b.finish()
    }

    /// Offset delta, timestamp delta, key, value and header count of each record.
    type Fields = (i32, i64, Option<Vec<u8>>, Option<Vec<u8>>, usize);

    fn records(batch: &[u8]) -> Vec<Fields> {
        crate::read_records(batch, 1 << 20)
            .unwrap()
            .map(|r| {
                let r = r.unwrap();
                (
                    r.offset_delta,
                    r.timestamp_delta,
                    r.key.map(|k| k.to_vec()),
                    r.value.map(|v| v.to_vec()),
                    r.headers.len(),
                )
            })
            .collect()
    }

    #[test]
    fn recompress_keeps_records_and_producer_fields() {
        let mut input = batch(Compression::Gzip, 42);
        input.extend(batch(Compression::None, -1));
        input.extend(batch(Compression::Zstd, 7));
        let out = recompress(&input, Compression::Zstd, 1 << 20).unwrap();
        let before: Vec<_> = crate::Batches::new(&input).map(|b| b.unwrap()).collect();
        let after: Vec<_> = crate::Batches::new(&out).map(|b| b.unwrap()).collect();
        assert_eq!(after.len(), 3);
        for ((hb, rb), (ha, ra)) in before.iter().zip(&after) {
            assert_eq!(ha.compression(), Compression::Zstd);
            assert_eq!(
                (ha.producer_id, ha.producer_epoch, ha.base_sequence),
                (hb.producer_id, hb.producer_epoch, hb.base_sequence)
            );
            assert_eq!(ha.is_transactional(), hb.is_transactional());
            assert_eq!(ha.last_offset_delta, hb.last_offset_delta);
            assert_eq!(ha.max_timestamp, hb.max_timestamp);
            assert_eq!(records(&out[ra.clone()]), records(&input[rb.clone()]));
            crate::validate(&out[ra.clone()], usize::MAX).unwrap();
        }
        // Already in the target codec: the same bytes.
        assert_eq!(&out[after[2].1.clone()], &input[before[2].1.clone()]);
        // And back to uncompressed.
        let plain = recompress(&out, Compression::None, 1 << 20).unwrap();
        for item in crate::Batches::new(&plain) {
            assert_eq!(item.unwrap().0.compression(), Compression::None);
        }
    }
}
