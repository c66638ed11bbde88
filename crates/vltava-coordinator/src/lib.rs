//! Group coordination as pure state machines: an operation goes in with the current time,
//! a reply and the records to persist come out. Replaying the records rebuilds the state, so
//! live operation and recovery after a restart share one code path. No sockets, no clocks.
//! `shard` is the contract with the broker's coordinator runtime; `group_shard` is the
//! group coordinator's shard (one `__consumer_offsets` partition); `txn_shard` is the
//! transaction coordinator's (one `__transaction_state` partition), with its records in
//! `txn_records`.

pub mod classic;
pub mod consumer;
pub mod group_shard;
pub mod offsets;
pub mod records;
#[cfg(test)]
mod replay_tests;
pub mod shard;
pub mod state;
pub mod txn_records;
#[cfg(test)]
mod txn_replay_tests;
pub mod txn_shard;
mod wire;

use thiserror::Error;

/// Group-level failures; the broker maps each to Kafka's error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum GroupError {
    #[error("the member id is not known to the group")]
    UnknownMemberId,
    #[error("the generation id is not current")]
    IllegalGeneration,
    #[error("the group is rebalancing")]
    RebalanceInProgress,
    #[error("another member uses this group.instance.id")]
    FencedInstanceId,
    #[error("the member must rejoin with the member id it was given")]
    MemberIdRequired,
    #[error("the member's protocols do not match the group's")]
    InconsistentGroupProtocol,
    #[error("the session timeout is outside the broker's allowed range")]
    InvalidSessionTimeout,
    #[error("the group has reached group.max.size")]
    GroupMaxSizeReached,
    #[error("the coordinator is not available")]
    CoordinatorNotAvailable,
    #[error("this broker is not the group's coordinator")]
    NotCoordinator,
    #[error("the group's coordinator is still loading it")]
    CoordinatorLoadInProgress,
    #[error("the group still has members")]
    NonEmptyGroup,
    #[error("the group does not exist")]
    GroupIdNotFound,
    #[error("the member epoch is fenced")]
    FencedMemberEpoch,
    #[error("the member epoch is not known")]
    UnknownMemberEpoch,
    #[error("the assignor is not supported")]
    UnsupportedAssignor,
    #[error("the group is of another type")]
    GroupIdTypeMismatch,
    #[error("the request is invalid")]
    InvalidRequest,
    #[error("the offset metadata is too large")]
    OffsetMetadataTooLarge,
    #[error("the group is subscribed to the topic")]
    GroupSubscribedToTopic,
    #[error("the regular expression is not valid")]
    InvalidRegularExpression,
}

/// `abs(javaHashCode(transactional_id)) % partitions`: a transactional id's
/// `__transaction_state` partition, as Kafka picks it (the same hash as for groups).
pub fn txn_partition_for(transactional_id: &str, partitions: i32) -> i32 {
    offsets_partition_for(transactional_id, partitions)
}

/// `abs(javaHashCode(group)) % partitions`, as Kafka picks a group's `__consumer_offsets`
/// partition — kept identical so the layout matches Kafka's.
pub fn offsets_partition_for(group_id: &str, partitions: i32) -> i32 {
    let mut h: i32 = 0;
    for c in group_id.encode_utf16() {
        h = h
            .wrapping_mul(31)
            .wrapping_add(i32::from(c as i16 as i32 as u16 as i16) & 0xffff);
    }
    let abs = if h == i32::MIN { 0 } else { h.abs() };
    abs % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_matches_java_hash() {
        // "group".hashCode() == 98629247 in Java.
        assert_eq!(offsets_partition_for("group", 50), 98629247 % 50);
        assert!((0..50).contains(&offsets_partition_for("some-other-group-name", 50)));
        assert_eq!(offsets_partition_for("", 50), 0);
    }
}
