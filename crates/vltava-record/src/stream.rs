//! [`validate`](crate::validate) for a payload that is not in memory at once: the bytes are
//! fed in pieces as they are read (from a pipe, a slice at a time), and each batch's header
//! is kept, with its checked CRC-32C all a log needs to rewrite the header (offsets, leader
//! epoch, LogAppendTime) without the batch's bytes.

use crate::{
    BatchHeader, RecordError, ValidatedBatches, ATTRIBUTES, CRC, HEADER_LEN, MAX_TIMESTAMP,
    TIMESTAMP_TYPE_BIT,
};

/// One validated batch of a streamed payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamedBatch {
    /// The header bytes as received; its CRC is the batch's, checked.
    pub header: [u8; HEADER_LEN],
    /// Bytes after the header.
    pub body_len: usize,
}

impl StreamedBatch {
    pub fn parsed(&self) -> BatchHeader {
        BatchHeader::parse(&self.header).expect("validated when streamed")
    }

    /// The header as stored: as [`crate::stored_header`] rewrites it, without the body.
    pub fn stored_header(
        &self,
        base_offset: i64,
        leader_epoch: i32,
        log_append_time: Option<i64>,
    ) -> [u8; HEADER_LEN] {
        let mut h = self.header;
        crate::set_base_offset(&mut h, base_offset);
        crate::set_partition_leader_epoch(&mut h, leader_epoch);
        if let Some(now_ms) = log_append_time {
            let attrs = crate::i16_at(&h, ATTRIBUTES) | TIMESTAMP_TYPE_BIT;
            h[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&attrs.to_be_bytes());
            h[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&now_ms.to_be_bytes());
            // CRC-32C is linear: the new CRC is the checked one changed by what the header's
            // change contributes once followed by the body's length of bytes.
            let old = crc32c::crc32c(&self.header[ATTRIBUTES..]);
            let new = crc32c::crc32c(&h[ATTRIBUTES..]);
            let stored = crate::i32_at(&self.header, CRC) as u32;
            let crc = stored ^ crc32c::crc32c_combine(old ^ new, 0, self.body_len);
            h[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        }
        h
    }
}

/// Checks a payload fed in pieces exactly as [`crate::validate`] checks it whole.
#[derive(Debug)]
pub struct StreamValidator {
    max_batch_bytes: usize,
    /// Where the current batch starts in the payload.
    batch_at: usize,
    header: [u8; HEADER_LEN],
    header_have: usize,
    /// The current batch, once its header is whole: its header, body bytes still to come
    /// and the CRC of what it has seen (from `attributes` on, as the stored CRC covers).
    current: Option<(BatchHeader, usize, u32)>,
    batches: Vec<StreamedBatch>,
    summary: ValidatedBatches,
}

impl StreamValidator {
    pub fn new(max_batch_bytes: usize) -> Self {
        Self {
            max_batch_bytes,
            batch_at: 0,
            header: [0; HEADER_LEN],
            header_have: 0,
            current: None,
            batches: Vec::new(),
            summary: ValidatedBatches {
                batch_count: 0,
                offset_count: 0,
                max_timestamp: -1,
                first_timestamp: -1,
            },
        }
    }

    /// Feeds the next bytes of the payload; the first error ends the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) -> Result<(), RecordError> {
        while !chunk.is_empty() {
            let Some((_, left, crc)) = self.current.as_mut() else {
                let n = (HEADER_LEN - self.header_have).min(chunk.len());
                self.header[self.header_have..self.header_have + n].copy_from_slice(&chunk[..n]);
                self.header_have += n;
                chunk = &chunk[n..];
                if self.header_have == HEADER_LEN {
                    let h = self.start_batch()?;
                    let body = h.total_len() - HEADER_LEN;
                    let crc = crc32c::crc32c(&self.header[ATTRIBUTES..]);
                    self.current = Some((h, body, crc));
                    if body == 0 {
                        self.end_batch()?;
                    }
                }
                continue;
            };
            let n = (*left).min(chunk.len());
            *crc = crc32c::crc32c_append(*crc, &chunk[..n]);
            *left -= n;
            chunk = &chunk[n..];
            if *left == 0 {
                self.end_batch()?;
            }
        }
        Ok(())
    }

    fn start_batch(&self) -> Result<BatchHeader, RecordError> {
        let h = BatchHeader::parse(&self.header)?;
        let len = h.total_len();
        if len > self.max_batch_bytes {
            return Err(RecordError::TooLarge {
                size: len,
                limit: self.max_batch_bytes,
            });
        }
        Ok(h)
    }

    fn end_batch(&mut self) -> Result<(), RecordError> {
        let (h, _, crc) = self.current.take().expect("a batch in progress");
        let body_len = h.total_len() - HEADER_LEN;
        crate::check_record_count(&h)?;
        if crc != h.crc {
            return Err(RecordError::CrcMismatch {
                stored: h.crc,
                computed: crc,
            });
        }
        let s = &mut self.summary;
        if s.batch_count == 0 {
            s.first_timestamp = h.base_timestamp;
        }
        s.batch_count += 1;
        s.offset_count += i64::from(h.last_offset_delta) + 1;
        s.max_timestamp = s.max_timestamp.max(h.max_timestamp);
        self.batches.push(StreamedBatch {
            header: self.header,
            body_len,
        });
        self.batch_at += h.total_len();
        self.header_have = 0;
        Ok(())
    }

    /// Ends the payload: every byte fed must have belonged to a whole batch.
    pub fn finish(self) -> Result<(ValidatedBatches, Vec<StreamedBatch>), RecordError> {
        let at = self.batch_at;
        let truncated = |need, have| RecordError::Truncated {
            offset: at,
            need,
            have,
        };
        if let Some((h, left, _)) = self.current {
            let len = h.total_len();
            return Err(truncated(len, len - left));
        }
        if self.header_have > 0 {
            return Err(match BatchHeader::parse(&self.header[..self.header_have]) {
                Err(RecordError::Truncated { need, have, .. }) => truncated(need, have),
                Err(e) => e,
                Ok(_) => unreachable!("a partial header never parses"),
            });
        }
        if self.summary.batch_count == 0 {
            return Err(RecordError::Empty);
        }
        Ok((self.summary, self.batches))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn batch(records: &[(&[u8], &[u8])], producer_id: i64) -> Vec<u8> {
        let mut b = crate::BatchBuilder::new(crate::BatchAttributes {
            producer_id,
            producer_epoch: if producer_id >= 0 { 0 } else { -1 },
            base_sequence: if producer_id >= 0 { 0 } else { -1 },
            ..crate::BatchAttributes::default()
        });
        for (k, v) in records {
            b.push(1_700_000_000_000, Some(k), Some(v), &[]);
        }
        b.finish()
    }

    fn streamed(
        payload: &[u8],
        cuts: &[usize],
        max: usize,
    ) -> Result<(ValidatedBatches, Vec<StreamedBatch>), RecordError> {
        let mut v = StreamValidator::new(max);
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (payload.len() + 1)).collect();
        cuts.sort_unstable();
        for c in cuts.into_iter().chain([payload.len()]) {
            v.feed(&payload[at..c])?;
            at = c;
        }
        v.finish()
    }

    fn valid_payload() -> Vec<u8> {
        let mut p = batch(&[(b"k1", b"value one"), (b"k2", b"value two")], -1);
        p.extend(batch(&[(b"k3", &[9u8; 300])], -1));
        p.extend(batch(&[(b"k4", b"v")], 77));
        p
    }

    #[test]
    fn headers_and_body_crcs_rebuild_what_stored_header_writes() {
        let p = valid_payload();
        let (summary, batches) = streamed(&p, &[5, 70, 71, 200], 1 << 20).unwrap();
        assert_eq!(summary, crate::validate(&p, 1 << 20).unwrap());
        let mut at = 0;
        for b in &batches {
            let whole = &p[at..at + HEADER_LEN + b.body_len];
            for lat in [None, Some(1_800_000_000_000)] {
                assert_eq!(
                    b.stored_header(1234, 7, lat),
                    crate::stored_header(whole, 1234, 7, lat)
                );
            }
            at += HEADER_LEN + b.body_len;
        }
        assert_eq!(at, p.len());
    }

    proptest! {
        /// Damaged, cut and oversized payloads, fed in any pieces: the stream says what
        /// `validate` says of the whole.
        #[test]
        fn agrees_with_validate(
            flips in proptest::collection::vec((0usize..600, any::<u8>()), 0..3),
            cut in 0usize..600,
            truncate in proptest::bool::ANY,
            pieces in proptest::collection::vec(any::<usize>(), 0..6),
            max in prop_oneof![Just(1usize << 20), 50usize..400],
        ) {
            let mut p = valid_payload();
            for (at, v) in flips {
                if at < p.len() {
                    p[at] = v;
                }
            }
            if truncate {
                p.truncate(cut.min(p.len()));
            }
            let whole = crate::validate(&p, max);
            let stream = streamed(&p, &pieces, max).map(|(s, _)| s);
            prop_assert_eq!(stream, whole);
        }
    }
}
