//! Reading the records inside a batch, decompressing if need be. Fetch never calls this and
//! uncompressed produce never does: batches are stored and served as they arrived. Compressed
//! produce payloads are checked once here (a bomb must be refused, not stored for consumers to
//! choke on), and ListOffsets by timestamp looks inside batches. It streams: memory stays small
//! whatever a batch expands to, and a cap on decompressed bytes bounds the work, so a small
//! hostile batch can cost neither memory nor unbounded time.

use std::io::{self, BufRead, BufReader, Read};

use crate::varint::{self, VarintError};
use crate::{BatchHeader, Compression, RecordError, HEADER_LEN};

/// xerial snappy-java's stream header, which the Java producer writes; librdkafka writes a
/// bare snappy block. Kafka reads both, so do we.
pub(crate) const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
pub(crate) const XERIAL_HEADER_LEN: usize = 16;

/// What a record says about itself before its key, value and headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    pub offset_delta: i64,
    pub timestamp_delta: i64,
    /// The record has no key (a compacted topic refuses it).
    pub key_is_null: bool,
}

/// Streams the records of one batch: each item is one record's deltas; key, value and
/// headers are skipped. At most `record_count` items; the first error ends the stream.
pub struct RecordStream<'a> {
    reader: BufReader<Capped<Box<dyn Read + 'a>>>,
    remaining: i32,
    codec: Compression,
    limit: u64,
    /// Decompressed bytes read so far, to say where a malformed varint starts.
    consumed: u64,
}

/// A varint read from the stream fails either way: the stream's, or the varint's own.
enum StreamVarintError {
    Record(RecordError),
    Varint(VarintError),
}

impl From<VarintError> for StreamVarintError {
    fn from(e: VarintError) -> Self {
        StreamVarintError::Varint(e)
    }
}

impl From<RecordError> for StreamVarintError {
    fn from(e: RecordError) -> Self {
        StreamVarintError::Record(e)
    }
}

/// Opens the record section of `batch`, failing once more than `limit` decompressed bytes
/// have been read.
pub fn record_stream(batch: &[u8], limit: u64) -> Result<RecordStream<'_>, RecordError> {
    let h = BatchHeader::parse(batch)?;
    let end = h.total_len();
    if batch.len() < end {
        return Err(RecordError::Truncated {
            offset: 0,
            need: end,
            have: batch.len(),
        });
    }
    let codec = h.compression();
    let inner = body_reader(&batch[HEADER_LEN..end], codec, limit)?;
    Ok(RecordStream {
        reader: BufReader::with_capacity(8192, Capped { inner, left: limit }),
        limit,
        remaining: h.record_count.max(0),
        codec,
        consumed: 0,
    })
}

fn body_reader(
    body: &[u8],
    codec: Compression,
    limit: u64,
) -> Result<Box<dyn Read + '_>, RecordError> {
    let fail = |reason: String| RecordError::Decompress { codec, reason };
    Ok(match codec {
        Compression::None => Box::new(body),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(body)),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(body)),
        Compression::Zstd => Box::new(
            zstd::stream::read::Decoder::with_buffer(body).map_err(|e| fail(e.to_string()))?,
        ),
        Compression::Snappy => Box::new(io::Cursor::new(snappy(body, limit)?)),
        Compression::Unknown(n) => return Err(fail(format!("unknown codec id {n}"))),
    })
}

/// Decompresses a whole records section, failing past `limit` bytes: for readers that must
/// hold the records (compaction, markers), where streaming would not help.
pub(crate) fn decompress(
    section: &[u8],
    codec: Compression,
    limit: u64,
) -> Result<Vec<u8>, RecordError> {
    if codec == Compression::Snappy {
        return snappy(section, limit);
    }
    let inner = body_reader(section, codec, limit)?;
    let mut out = Vec::new();
    Capped { inner, left: limit }
        .read_to_end(&mut out)
        .map_err(|e| stream_err(codec, limit, e))?;
    Ok(out)
}

/// Checks a compressed batch all the way through: it must decompress within `limit` bytes
/// into exactly its declared number of well-formed records and nothing after them. An
/// uncompressed batch is left alone (its record section is never parsed on produce).
pub fn check_compressed(batch: &[u8], limit: u64) -> Result<(), RecordError> {
    let h = BatchHeader::parse(batch)?;
    if h.compression() == Compression::None {
        return Ok(());
    }
    check_records(batch, limit, |_| {})
}

/// Walks every record of a batch of any codec, as [`check_compressed`] does, and calls
/// `keyless` with the index of each record without a key: a compacted topic's produce check.
/// Streams with one small buffer per batch and allocates nothing per record.
pub fn check_records(
    batch: &[u8],
    limit: u64,
    mut keyless: impl FnMut(i32),
) -> Result<(), RecordError> {
    let h = BatchHeader::parse(batch)?;
    let mut stream = record_stream(batch, limit)?;
    for (index, r) in (&mut stream).enumerate() {
        if r?.key_is_null {
            // At most `record_count` records, an i32.
            keyless(index as i32);
        }
    }
    let codec = stream.codec;
    let trailing = stream
        .reader
        .fill_buf()
        .map_err(|e| stream_err(codec, limit, e))?
        .len();
    if trailing > 0 {
        return Err(RecordError::Decompress {
            codec,
            reason: format!(
                "bytes follow the {} records the batch declares",
                h.record_count
            ),
        });
    }
    Ok(())
}

/// The marker inside the I/O error [`Capped`] raises, so the cap can be told from corruption.
#[derive(Debug)]
struct OverCap;

impl std::fmt::Display for OverCap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("decompressed size exceeds the limit")
    }
}

impl std::error::Error for OverCap {}

/// A reader that fails, rather than ends, past its budget: running out is an error here.
struct Capped<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // Anything more is over the cap; nothing more is an honest end.
            let mut probe = [0u8; 1];
            return match self.inner.read(&mut probe)? {
                0 => Ok(0),
                _ => Err(io::Error::other(OverCap)),
            };
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

fn stream_err(codec: Compression, limit: u64, e: io::Error) -> RecordError {
    if e.get_ref().is_some_and(|inner| inner.is::<OverCap>()) {
        RecordError::DecompressionBomb { codec, limit }
    } else if e.kind() == io::ErrorKind::UnexpectedEof {
        RecordError::Truncated {
            offset: 0,
            need: 1,
            have: 0,
        }
    } else {
        RecordError::Decompress {
            codec,
            reason: e.to_string(),
        }
    }
}

impl RecordStream<'_> {
    fn byte(&mut self) -> Result<u8, RecordError> {
        let mut b = [0u8; 1];
        let (codec, limit) = (self.codec, self.limit);
        self.reader
            .read_exact(&mut b)
            .map_err(|e| stream_err(codec, limit, e))?;
        self.consumed += 1;
        Ok(b[0])
    }

    /// A zigzag varint of at most `max_len` bytes and how many bytes it took.
    fn varint(&mut self, max_len: usize) -> Result<(i64, u64), RecordError> {
        let offset = self.consumed;
        let (codec, limit) = (self.codec, self.limit);
        let reader = &mut self.reader;
        let (z, n) = varint::decode_unsigned::<StreamVarintError>(max_len, || {
            let buf = reader.fill_buf().map_err(|e| stream_err(codec, limit, e))?;
            let Some(&byte) = buf.first() else {
                return Ok(None);
            };
            reader.consume(1);
            Ok(Some(byte))
        })
        .map_err(|e| match e {
            StreamVarintError::Record(e) => e,
            StreamVarintError::Varint(source) => RecordError::Varint {
                offset: offset as usize,
                source,
            },
        })?;
        self.consumed += n as u64;
        let v = if max_len == varint::MAX_VARINT_LEN {
            i64::from(varint::zigzag_decode_32(z))
        } else {
            varint::zigzag_decode(z)
        };
        Ok((v, n as u64))
    }

    fn next_record(&mut self) -> Result<RecordMeta, RecordError> {
        let (len, _) = self.varint(varint::MAX_VARINT_LEN)?;
        let len =
            u64::try_from(len).map_err(|_| RecordError::InvalidLength { length: len as i32 })?;
        self.byte()?; // attributes
        let (timestamp_delta, a) = self.varint(varint::MAX_VARLONG_LEN)?;
        let (offset_delta, b) = self.varint(varint::MAX_VARINT_LEN)?;
        let (key_len, c) = self.varint(varint::MAX_VARINT_LEN)?;
        let rest = len
            .checked_sub(1 + a + b + c)
            .ok_or(RecordError::InvalidLength { length: len as i32 })?;
        // Skip key, value and headers without holding them.
        let (codec, limit) = (self.codec, self.limit);
        let mut left = rest;
        while left > 0 {
            let avail = self
                .reader
                .fill_buf()
                .map_err(|e| stream_err(codec, limit, e))?
                .len() as u64;
            if avail == 0 {
                return Err(RecordError::Truncated {
                    offset: 0,
                    need: left as usize,
                    have: 0,
                });
            }
            let n = avail.min(left);
            self.reader.consume(n as usize);
            self.consumed += n;
            left -= n;
        }
        Ok(RecordMeta {
            offset_delta,
            timestamp_delta,
            key_is_null: key_len < 0,
        })
    }
}

impl Iterator for RecordStream<'_> {
    type Item = Result<RecordMeta, RecordError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let r = self.next_record();
        if r.is_err() {
            self.remaining = 0;
        }
        Some(r)
    }
}

fn snappy(body: &[u8], limit: u64) -> Result<Vec<u8>, RecordError> {
    snappy_inner(body, limit).map_err(|e| match e {
        SnappyError::OverCap => RecordError::DecompressionBomb {
            codec: Compression::Snappy,
            limit,
        },
        SnappyError::Bad(reason) => RecordError::Decompress {
            codec: Compression::Snappy,
            reason,
        },
    })
}

enum SnappyError {
    OverCap,
    Bad(String),
}

impl From<&str> for SnappyError {
    fn from(s: &str) -> Self {
        SnappyError::Bad(s.into())
    }
}

fn snappy_inner(body: &[u8], limit: u64) -> Result<Vec<u8>, SnappyError> {
    if !body.starts_with(&XERIAL_MAGIC) {
        return snappy_block(body, limit, Vec::new());
    }
    let mut out = Vec::new();
    let mut rest = body.get(XERIAL_HEADER_LEN..).ok_or("short xerial header")?;
    while !rest.is_empty() {
        let len_bytes: [u8; 4] = rest
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .ok_or("short xerial block length")?;
        let len = u32::from_be_bytes(len_bytes) as usize;
        let block = rest.get(4..4 + len).ok_or("short xerial block")?;
        out = snappy_block(block, limit, out)?;
        rest = &rest[4 + len..];
    }
    Ok(out)
}

/// Raw snappy has no streaming form; its header states the output size, checked against the
/// cap before anything is allocated.
fn snappy_block(block: &[u8], limit: u64, mut out: Vec<u8>) -> Result<Vec<u8>, SnappyError> {
    let bad = |e: snap::Error| SnappyError::Bad(e.to_string());
    let n = snap::raw::decompress_len(block).map_err(bad)?;
    if (out.len() as u64).saturating_add(n as u64) > limit {
        return Err(SnappyError::OverCap);
    }
    let start = out.len();
    out.resize(start + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(bad)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_batch, compute_crc};
    use std::io::Write;

    /// Re-packs an uncompressed batch's records with `codec`, fixing length and CRC.
    fn compress(batch: &[u8], codec: Compression, xerial: bool) -> Vec<u8> {
        let body = &batch[HEADER_LEN..];
        let packed = match codec {
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(body).unwrap();
                e.finish().unwrap()
            }
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(body).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::bulk::compress(body, 1).unwrap(),
            Compression::Snappy if xerial => {
                let block = snap::raw::Encoder::new().compress_vec(body).unwrap();
                let mut v = XERIAL_MAGIC.to_vec();
                v.extend_from_slice(&1i32.to_be_bytes());
                v.extend_from_slice(&1i32.to_be_bytes());
                v.extend_from_slice(&(block.len() as u32).to_be_bytes());
                v.extend_from_slice(&block);
                v
            }
            Compression::Snappy => snap::raw::Encoder::new().compress_vec(body).unwrap(),
            _ => unreachable!(),
        };
        let id: i16 = match codec {
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            _ => 4,
        };
        let mut out = batch[..HEADER_LEN].to_vec();
        out.extend_from_slice(&packed);
        let len = (out.len() - 12) as i32;
        out[8..12].copy_from_slice(&len.to_be_bytes());
        out[21..23].copy_from_slice(&id.to_be_bytes());
        let crc = compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }

    fn metas(batch: &[u8], limit: u64) -> Result<Vec<RecordMeta>, RecordError> {
        record_stream(batch, limit)?.collect()
    }

    #[test]
    fn every_codec_streams_records_and_respects_the_cap() {
        let value = vec![b'x'; 10_000];
        let plain = build_batch(
            0,
            &[(Some(b"a"), Some(&value), 1), (None, Some(b"second"), 4)],
        );
        let want = vec![
            RecordMeta {
                offset_delta: 0,
                timestamp_delta: 0,
                key_is_null: false,
            },
            RecordMeta {
                offset_delta: 1,
                timestamp_delta: 3,
                key_is_null: true,
            },
        ];
        assert_eq!(metas(&plain, 1 << 20).unwrap(), want);
        let mut keyless = Vec::new();
        check_records(&plain, 1 << 20, |i| keyless.push(i)).unwrap();
        assert_eq!(keyless, vec![1]);
        for (codec, xerial) in [
            (Compression::Gzip, false),
            (Compression::Snappy, false),
            (Compression::Snappy, true),
            (Compression::Lz4, false),
            (Compression::Zstd, false),
        ] {
            let packed = compress(&plain, codec, xerial);
            assert!(packed.len() < plain.len(), "{codec:?} compresses");
            assert_eq!(
                metas(&packed, 1 << 20).unwrap(),
                want,
                "{codec:?} xerial={xerial}"
            );
            let err = metas(&packed, 1000).unwrap_err();
            assert!(
                matches!(err, RecordError::DecompressionBomb { limit: 1000, .. }),
                "{codec:?}: {err}"
            );
            check_compressed(&packed, 1 << 20).unwrap();
            let err = check_compressed(&packed, 1000).unwrap_err();
            assert!(
                matches!(err, RecordError::DecompressionBomb { .. }),
                "{codec:?}: {err}"
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let plain = build_batch(0, &[(None, Some(b"v"), 1)]);
        for id in 1..=4i16 {
            let mut b = plain.clone();
            b[21..23].copy_from_slice(&id.to_be_bytes());
            assert!(metas(&b, 1 << 20).is_err(), "codec {id}");
        }
        // A record claiming more bytes than the batch holds.
        let mut b = plain.clone();
        b[HEADER_LEN] = 0x7e;
        assert!(metas(&b, 1 << 20).is_err());
    }

    #[test]
    fn a_bomb_costs_only_its_cap() {
        // One record whose value is 64 MiB of zeros: gzip packs it into ~64 KiB.
        let zeros = vec![0u8; 64 << 20];
        let plain = build_batch(0, &[(None, Some(&zeros), 1)]);
        let bomb = compress(&plain, Compression::Gzip, false);
        assert!(bomb.len() < 1 << 20);
        let err = check_compressed(&bomb, 1 << 20).unwrap_err();
        assert!(
            matches!(err, RecordError::DecompressionBomb { limit, .. } if limit == 1 << 20),
            "{err}"
        );
        check_compressed(&bomb, 65 << 20).unwrap();
        // Zeros where records should be decode as zero-length records, which are invalid.
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        e.write_all(&zeros[..1 << 20]).unwrap();
        let mut b = plain[..HEADER_LEN].to_vec();
        b.extend_from_slice(&e.finish().unwrap());
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        b[21..23].copy_from_slice(&1i16.to_be_bytes());
        assert!(metas(&b, 1 << 20).is_err());
        assert!(check_compressed(&b, 1 << 20).is_err());
    }

    #[test]
    fn record_count_must_match_what_the_batch_declares() {
        let plain = build_batch(0, &[(None, Some(b"a"), 1), (None, Some(b"b"), 1)]);
        let good = compress(&plain, Compression::Lz4, false);
        check_compressed(&good, 1 << 20).unwrap();
        // Declares one record but holds two: trailing bytes.
        let mut fewer = good.clone();
        fewer[57..61].copy_from_slice(&1i32.to_be_bytes());
        assert!(check_compressed(&fewer, 1 << 20).is_err());
        // Declares three but holds two: runs out.
        let mut more = good.clone();
        more[57..61].copy_from_slice(&3i32.to_be_bytes());
        assert!(check_compressed(&more, 1 << 20).is_err());
        // Uncompressed batches are not parsed here at all.
        let mut odd = plain.clone();
        odd[57..61].copy_from_slice(&3i32.to_be_bytes());
        check_compressed(&odd, 1).unwrap();
    }
}
