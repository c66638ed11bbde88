//! Stand-ins for bytes that are not in memory: a Fetch answer names a range of a segment
//! file for each partition's records, and the connection writer sends that range from the
//! file (`sendfile`) where the stand-in sits in the encoded frame.
//!
//! A stand-in is a `Bytes` slice of one shared block of zeros, starting at its own index,
//! so the writer recognises it by address alone. The encoder stores every `Bytes` field as
//! a reference, never a copy ([`crate::encode_response_segmented`]), so the slice arrives
//! at the writer as one chunk of its own; the writer checks that every stand-in was
//! found (see [`count_stand_ins`]) before it writes anything. The block is allocated
//! zeroed and never written, so it costs address space, not memory.

use std::sync::OnceLock;

use bytes::{Buf, Bytes};

/// Stand-ins per frame at most (partitions with records in one Fetch answer).
pub const MAX_STAND_INS: usize = 1 << 16;
/// The longest range one stand-in can stand for.
pub const MAX_STAND_IN_LEN: usize = 64 << 20;

fn block() -> &'static [u8] {
    static BLOCK: OnceLock<&'static [u8]> = OnceLock::new();
    BLOCK.get_or_init(|| Box::leak(vec![0u8; MAX_STAND_INS + MAX_STAND_IN_LEN].into_boxed_slice()))
}

/// A stand-in for `len` bytes, number `index` of its frame; `None` when either is out of
/// range or `len` is 0 (the caller then puts the bytes themselves in the message).
pub fn stand_in(index: usize, len: usize) -> Option<Bytes> {
    (index < MAX_STAND_INS && (1..=MAX_STAND_IN_LEN).contains(&len))
        .then(|| Bytes::from_static(&block()[index..index + len]))
}

/// The index of the stand-in that starts `chunk`, if it is one.
pub fn stand_in_index(chunk: &[u8]) -> Option<usize> {
    let base = block().as_ptr() as usize;
    let at = chunk.as_ptr() as usize;
    (!chunk.is_empty() && (base..base + MAX_STAND_INS).contains(&at)).then(|| at - base)
}

/// How many stand-ins an encoded frame holds, each as a chunk of its own. `shared_at_most`
/// bounds the `Bytes` fields the message has (so the frame has at most twice as many chunks
/// plus one); `None` if the frame has more chunks than that allows.
pub fn count_stand_ins(frame: &crate::SegmentedBuf, shared_at_most: usize) -> Option<usize> {
    let mut slices = vec![std::io::IoSlice::new(&[]); 2 * shared_at_most + 2];
    let filled = frame.chunks_vectored(&mut slices);
    if filled == slices.len() {
        return None;
    }
    Some(
        slices[..filled]
            .iter()
            .filter(|s| stand_in_index(s).is_some())
            .count(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use crate::messages::FetchResponse;

    /// Every Fetch version the broker answers keeps each partition's records as a chunk of
    /// their own, so a stand-in reaches the writer whole and is never copied into the frame.
    #[test]
    fn fetch_answers_keep_stand_ins_as_their_own_chunks() {
        for version in 4..=17i16 {
            let mut topic = FetchableTopicResponse::default();
            for (i, len) in [(0usize, 100usize), (1, 1), (2, 70_000)] {
                let mut p = PartitionData::default();
                p.partition_index = i as i32;
                p.records = stand_in(i, len);
                topic.partitions.push(p);
            }
            let mut r = FetchResponse::default();
            r.responses.push(topic);
            let frame =
                crate::encode_response_segmented(7, version, &crate::Response::Fetch(r)).unwrap();
            assert_eq!(count_stand_ins(&frame, 3), Some(3), "v{version}");
            let mut slices = vec![std::io::IoSlice::new(&[]); 8];
            let n = frame.chunks_vectored(&mut slices);
            let found: Vec<_> = slices[..n]
                .iter()
                .filter_map(|s| stand_in_index(s).map(|i| (i, s.len())))
                .collect();
            assert_eq!(found, [(0, 100), (1, 1), (2, 70_000)], "v{version}");
        }
    }

    #[test]
    fn stand_ins_are_bounded_and_recognised_by_address_only() {
        assert!(stand_in(MAX_STAND_INS, 1).is_none());
        assert!(stand_in(0, MAX_STAND_IN_LEN + 1).is_none());
        assert!(stand_in(0, 0).is_none());
        let s = stand_in(5, 10).unwrap();
        assert_eq!(stand_in_index(&s), Some(5));
        assert_eq!(stand_in_index(&s[1..]), Some(6));
        assert_eq!(stand_in_index(&[0u8; 10]), None);
        assert_eq!(stand_in_index(&s[..0]), None);
    }
}
