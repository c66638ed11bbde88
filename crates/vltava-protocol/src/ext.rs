//! Vltava's additions to Kafka messages.
//!
//! Kafka has no request that reports the log cleaner's progress per partition (it exposes only
//! broker-wide JMX gauges). Vltava answers it in DescribeLogDirs, the per-partition storage
//! report, as *tagged fields* of each partition: every Kafka client skips tags it does not
//! know (the flexible-version rule of KIP-482), so other tools see Kafka's answer unchanged.
//! The tags sit far above Kafka's own (which count up from 0) so a future Kafka field cannot
//! collide with them. Only flexible versions (DescribeLogDirs v2+) carry tagged fields.

use bytes::Bytes;

use crate::messages::describe_log_dirs_response::DescribeLogDirsPartition;

/// Where the cleaned part of the log ends (the `cleaner-offset-checkpoint` entry): i64.
pub const TAG_CLEAN_OFFSET: i32 = 0x5654_0001;
/// Dirty bytes ÷ cleanable bytes, as the cleaner ranks logs (`min.cleanable.dirty.ratio`):
/// IEEE-754 f64 bits.
pub const TAG_DIRTY_RATIO: i32 = 0x5654_0002;
/// Bytes written since the clean offset that the cleaner may clean: i64.
pub const TAG_DIRTY_BYTES: i32 = 0x5654_0003;

/// The log cleaner's state for one compacted partition.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CleanerState {
    pub clean_offset: i64,
    pub dirty_ratio: f64,
    pub dirty_bytes: i64,
}

/// Adds `state` to a DescribeLogDirs partition.
pub fn put_cleaner_state(p: &mut DescribeLogDirsPartition, state: CleanerState) {
    let tags = &mut p.unknown_tagged_fields;
    tags.insert(
        TAG_CLEAN_OFFSET,
        Bytes::copy_from_slice(&state.clean_offset.to_be_bytes()),
    );
    tags.insert(
        TAG_DIRTY_RATIO,
        Bytes::copy_from_slice(&state.dirty_ratio.to_bits().to_be_bytes()),
    );
    tags.insert(
        TAG_DIRTY_BYTES,
        Bytes::copy_from_slice(&state.dirty_bytes.to_be_bytes()),
    );
}

/// The cleaner state a broker put into a DescribeLogDirs partition: `None` when it sent none
/// (a Kafka broker, a partition that is not compacted) or sent something malformed.
pub fn cleaner_state(p: &DescribeLogDirsPartition) -> Option<CleanerState> {
    let tag8 = |tag: i32| -> Option<[u8; 8]> {
        p.unknown_tagged_fields
            .get(&tag)
            .and_then(|b| b.as_ref().try_into().ok())
    };
    let dirty_ratio = f64::from_bits(u64::from_be_bytes(tag8(TAG_DIRTY_RATIO)?));
    Some(CleanerState {
        clean_offset: i64::from_be_bytes(tag8(TAG_CLEAN_OFFSET)?),
        dirty_ratio: if dirty_ratio.is_finite() {
            dirty_ratio
        } else {
            return None;
        },
        dirty_bytes: i64::from_be_bytes(tag8(TAG_DIRTY_BYTES)?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::describe_log_dirs_response::{
        DescribeLogDirsResult, DescribeLogDirsTopic,
    };
    use crate::messages::DescribeLogDirsResponse;
    use crate::{Decodable, Encodable};
    use bytes::BytesMut;

    fn response(p: DescribeLogDirsPartition) -> DescribeLogDirsResponse {
        let mut t = DescribeLogDirsTopic::default();
        t.partitions.push(p);
        let mut r = DescribeLogDirsResult::default();
        r.topics.push(t);
        DescribeLogDirsResponse::default().with_results(vec![r])
    }

    fn round_trip(resp: &DescribeLogDirsResponse, version: i16) -> DescribeLogDirsPartition {
        let mut buf = BytesMut::new();
        resp.encode(&mut buf, version).unwrap();
        let mut bytes = buf.freeze();
        let back = DescribeLogDirsResponse::decode(&mut bytes, version).unwrap();
        back.results[0].topics[0].partitions[0].clone()
    }

    #[test]
    fn the_state_survives_flexible_versions_and_is_absent_before_them() {
        let state = CleanerState {
            clean_offset: 1234,
            dirty_ratio: 0.375,
            dirty_bytes: 9_000,
        };
        let mut p = DescribeLogDirsPartition::default();
        p.partition_index = 3;
        put_cleaner_state(&mut p, state);
        let resp = response(p);
        for v in 2..=4 {
            assert_eq!(cleaner_state(&round_trip(&resp, v)), Some(state), "v{v}");
        }
        // v0 and v1 have no tagged fields: the answer is Kafka's, without the state.
        assert_eq!(cleaner_state(&round_trip(&resp, 1)), None);
    }

    #[test]
    fn malformed_tags_are_ignored() {
        let mut p = DescribeLogDirsPartition::default();
        p.unknown_tagged_fields
            .insert(TAG_CLEAN_OFFSET, Bytes::from_static(b"\x01"));
        p.unknown_tagged_fields.insert(
            TAG_DIRTY_RATIO,
            Bytes::copy_from_slice(&f64::NAN.to_bits().to_be_bytes()),
        );
        p.unknown_tagged_fields
            .insert(TAG_DIRTY_BYTES, Bytes::from_static(&[0; 8]));
        assert_eq!(cleaner_state(&p), None);
    }
}
