//! Decompression of a batch's record section. The produce and fetch paths never call this:
//! batches are stored and served compressed. It is for the few places that must look inside
//! a batch (ListOffsets by timestamp, and later compaction), always with an output cap so a
//! small hostile batch cannot expand without bound.

use std::borrow::Cow;
use std::io::Read;

use crate::{BatchHeader, Compression, RecordError, HEADER_LEN};

/// xerial snappy-java's stream header, which the Java producer writes; librdkafka writes a
/// bare snappy block. Kafka reads both, so do we.
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
const XERIAL_HEADER_LEN: usize = 16;

/// Returns the record section of `batch` (the bytes after the 61-byte header), decompressed
/// when the batch is compressed. Fails if the output would exceed `limit` bytes.
pub fn records_body(batch: &[u8], limit: usize) -> Result<Cow<'_, [u8]>, RecordError> {
    let h = BatchHeader::parse(batch)?;
    let end = h.total_len();
    if batch.len() < end {
        return Err(RecordError::Truncated {
            offset: 0,
            need: end,
            have: batch.len(),
        });
    }
    let body = &batch[HEADER_LEN..end];
    let codec = h.compression();
    let fail = |reason: String| RecordError::Decompress { codec, reason };
    let out = match codec {
        Compression::None => return Ok(Cow::Borrowed(body)),
        Compression::Gzip => read_capped(flate2::read::MultiGzDecoder::new(body), limit),
        Compression::Lz4 => read_capped(lz4_flex::frame::FrameDecoder::new(body), limit),
        Compression::Zstd => match zstd::stream::read::Decoder::new(body) {
            Ok(d) => read_capped(d, limit),
            Err(e) => Err(e.to_string()),
        },
        Compression::Snappy => snappy(body, limit),
        Compression::Unknown(n) => Err(format!("unknown codec id {n}")),
    };
    out.map(Cow::Owned).map_err(fail)
}

fn read_capped(r: impl Read, limit: usize) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| e.to_string())?;
    if out.len() > limit {
        return Err(format!("decompressed size exceeds {limit} bytes"));
    }
    Ok(out)
}

fn snappy(body: &[u8], limit: usize) -> Result<Vec<u8>, String> {
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

fn snappy_block(block: &[u8], limit: usize, mut out: Vec<u8>) -> Result<Vec<u8>, String> {
    let n = snap::raw::decompress_len(block).map_err(|e| e.to_string())?;
    if out.len().saturating_add(n) > limit {
        return Err(format!("decompressed size exceeds {limit} bytes"));
    }
    let start = out.len();
    out.resize(start + n, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| e.to_string())?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{build_batch, compute_crc, parse_records};
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

    #[test]
    fn every_codec_round_trips_and_respects_the_cap() {
        let value = vec![b'x'; 10_000];
        let plain = build_batch(
            0,
            &[(Some(b"a"), Some(&value), 1), (None, Some(b"second"), 2)],
        );
        for (codec, xerial) in [
            (Compression::Gzip, false),
            (Compression::Snappy, false),
            (Compression::Snappy, true),
            (Compression::Lz4, false),
            (Compression::Zstd, false),
        ] {
            let packed = compress(&plain, codec, xerial);
            assert!(packed.len() < plain.len(), "{codec:?} compresses");
            let body = records_body(&packed, 1 << 20).unwrap();
            assert_eq!(&body[..], &plain[HEADER_LEN..], "{codec:?} xerial={xerial}");
            let recs = parse_records(&body, 2).unwrap();
            assert_eq!(recs[1].value, Some(&b"second"[..]));
            let err = records_body(&packed, 1000).unwrap_err();
            assert!(matches!(err, RecordError::Decompress { .. }), "{err}");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let plain = build_batch(0, &[(None, Some(b"v"), 1)]);
        for id in 1..=4i16 {
            let mut b = plain.clone();
            b[21..23].copy_from_slice(&id.to_be_bytes());
            assert!(records_body(&b, 1 << 20).is_err(), "codec {id}");
        }
    }
}
