//! Records of `__consumer_offsets` in Kafka's own binary layout, so that tools reading that
//! topic as Kafka writes it, and data moved from Kafka, work unchanged.
//!
//! A key is an int16 version that names the record type, then that type's key fields; a
//! value is an int16 version, then the fields of that version of the value schema
//! (Kafka's `group-coordinator/src/main/resources/common/message/*.json`). A null value is
//! a tombstone. We write the versions Kafka 4 writes and read every version Kafka may have
//! written. Records written before this layout (JSON, key starting with `{`) are still read.
//!
//! KIP-848 assignments name topics by id on disk and by name in memory; [`TopicIds`]
//! translates at this boundary, and partitions of a topic it does not know (deleted since)
//! are dropped, as Kafka drops them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::classic::{GroupSnapshot, Member};
use crate::consumer::{ConsumerGroup, TopicPartition};
use crate::wire::{Reader, Writer};

/// Key versions: each names one record type (Kafka's `CoordinatorRecordType`).
const OFFSET_COMMIT_KEY_V0: i16 = 0;
const OFFSET_COMMIT_KEY: i16 = 1;
const GROUP_METADATA_KEY: i16 = 2;
const CONSUMER_GROUP_METADATA_KEY: i16 = 3;
const CONSUMER_GROUP_PARTITION_METADATA_KEY: i16 = 4;
const CONSUMER_GROUP_MEMBER_METADATA_KEY: i16 = 5;
const CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_KEY: i16 = 6;
const CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_KEY: i16 = 7;
const CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_KEY: i16 = 8;

/// Kafka 4 writes the newest non-flexible versions of these two values (3) and reads up to 4,
/// the first flexible one; a higher version is read as 4 (KIP-915), since later versions
/// may only add tagged fields.
const OFFSET_COMMIT_VALUE_WRITE: i16 = 3;
const OFFSET_COMMIT_VALUE_MAX: i16 = 4;
const GROUP_METADATA_VALUE_WRITE: i16 = 3;
const GROUP_METADATA_VALUE_MAX: i16 = 4;
/// The KIP-848 values have one version, flexible from the start.
const CONSUMER_VALUE_VERSION: i16 = 0;

/// Kafka's `ConsumerGroupHeartbeatRequest.LEAVE_GROUP_STATIC_MEMBER_EPOCH`: the member epoch
/// Kafka stores for a static member that left and may come back.
const LEAVE_GROUP_STATIC_MEMBER_EPOCH: i32 = -2;

/// Why stored bytes could not be read. Separate from `GroupError`: these never reach a
/// client, the loader logs them and skips the record.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecordError {
    #[error("record ends at byte {offset}: need {need} more bytes, have {have}")]
    UnexpectedEof {
        offset: usize,
        need: usize,
        have: usize,
    },
    #[error("invalid length {length} at byte {offset}")]
    InvalidLength { offset: usize, length: i64 },
    #[error("invalid varint at byte {offset}")]
    InvalidVarint { offset: usize },
    #[error("invalid utf-8 in string at byte {offset}")]
    InvalidUtf8 { offset: usize },
    #[error("null where the schema allows none, before byte {offset}")]
    UnexpectedNull { offset: usize },
    #[error("unknown record type (key version {version})")]
    UnknownRecordType { version: i16 },
    #[error("unknown value version {version} for key version {key_version}")]
    UnknownValueVersion { key_version: i16, version: i16 },
    #[error("a field of {len} bytes is longer than its length field allows")]
    FieldTooLong { len: usize },
    #[error("{extra} unexpected bytes after the key")]
    TrailingKeyBytes { extra: usize },
    #[error("unknown transaction state id {id}")]
    UnknownTxnState { id: i8 },
    #[error("legacy json record: {reason}")]
    LegacyJson { reason: String },
}

/// Translates between the topic names groups use in memory and the topic ids Kafka's
/// KIP-848 records store.
pub trait TopicIds {
    fn topic_id(&self, name: &str) -> Option<Uuid>;
    fn topic_name(&self, id: Uuid) -> Option<String>;
}

/// OffsetCommitValue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    /// Kafka's field is a non-null string: `None` is stored as "" and "" reads back as `None`.
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

/// ConsumerGroupMemberMetadataValue: what a KIP-848 member asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberSubscription {
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub subscribed: BTreeSet<String>,
    /// `SubscribedTopicRegex`.
    pub regex: Option<String>,
    pub rebalance_timeout_ms: i32,
    pub assignor: Option<String>,
}

/// ConsumerGroupCurrentMemberAssignmentValue: what a KIP-848 member has been given.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MemberAssignment {
    pub member_epoch: i32,
    pub previous_member_epoch: i32,
    /// A static member that left with epoch -2. Kafka stores such a member with epoch -2,
    /// which loses its real epoch; the previous-epoch field carries it instead, so a
    /// departed member comes back with `previous_member_epoch == member_epoch`.
    pub departed: bool,
    pub assigned: BTreeSet<TopicPartition>,
    pub revoking: BTreeSet<TopicPartition>,
}

/// One record of `__consumer_offsets`; `None` values are tombstones. A KIP-848 group is
/// several records, as in Kafka: one per group for its epoch, its subscribed topics'
/// partition counts and its target assignment epoch, and three per member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// OffsetCommitKey / OffsetCommitValue.
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    /// GroupMetadataKey / GroupMetadataValue: a classic group.
    Group {
        group: String,
        value: Option<GroupSnapshot>,
    },
    /// ConsumerGroupMetadata: the group epoch. Its tombstone removes the group.
    ConsumerGroupMetadata { group: String, epoch: Option<i32> },
    /// ConsumerGroupPartitionMetadata: partition counts of the subscribed topics when the
    /// target assignment was computed.
    ConsumerGroupPartitionMetadata {
        group: String,
        topics: Option<BTreeMap<String, i32>>,
    },
    /// ConsumerGroupMemberMetadata: a member's subscription. Its tombstone removes the member.
    ConsumerGroupMemberMetadata {
        group: String,
        member: String,
        value: Option<MemberSubscription>,
    },
    /// ConsumerGroupTargetAssignmentMetadata: the assignment epoch.
    ConsumerGroupTargetAssignmentMetadata { group: String, epoch: Option<i32> },
    /// ConsumerGroupTargetAssignmentMember: a member's part of the target assignment.
    ConsumerGroupTargetAssignmentMember {
        group: String,
        member: String,
        partitions: Option<BTreeSet<TopicPartition>>,
    },
    /// ConsumerGroupCurrentMemberAssignment: a member's epochs and owned partitions.
    ConsumerGroupCurrentMemberAssignment {
        group: String,
        member: String,
        value: Option<MemberAssignment>,
    },
}

/// The JSON keys written before the binary layout; read, never written.
#[derive(Deserialize)]
enum LegacyKey {
    #[serde(rename = "offset")]
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    #[serde(rename = "group")]
    Group { group: String },
    #[serde(rename = "consumer_group")]
    ConsumerGroup { group: String },
}

impl Record {
    pub fn group(&self) -> &str {
        match self {
            Record::Offset { group, .. }
            | Record::Group { group, .. }
            | Record::ConsumerGroupMetadata { group, .. }
            | Record::ConsumerGroupPartitionMetadata { group, .. }
            | Record::ConsumerGroupMemberMetadata { group, .. }
            | Record::ConsumerGroupTargetAssignmentMetadata { group, .. }
            | Record::ConsumerGroupTargetAssignmentMember { group, .. }
            | Record::ConsumerGroupCurrentMemberAssignment { group, .. } => group,
        }
    }

    pub fn is_tombstone(&self) -> bool {
        match self {
            Record::Offset { value, .. } => value.is_none(),
            Record::Group { value, .. } => value.is_none(),
            Record::ConsumerGroupMetadata { epoch, .. }
            | Record::ConsumerGroupTargetAssignmentMetadata { epoch, .. } => epoch.is_none(),
            Record::ConsumerGroupPartitionMetadata { topics, .. } => topics.is_none(),
            Record::ConsumerGroupMemberMetadata { value, .. } => value.is_none(),
            Record::ConsumerGroupTargetAssignmentMember { partitions, .. } => partitions.is_none(),
            Record::ConsumerGroupCurrentMemberAssignment { value, .. } => value.is_none(),
        }
    }

    /// `(key, value)` bytes for a record batch, in Kafka's layout. Fails only for a name
    /// longer than Kafka's layout can hold (`FieldTooLong`), which Kafka cannot store either.
    pub fn encode(&self, topics: &dyn TopicIds) -> Result<(Vec<u8>, Option<Vec<u8>>), RecordError> {
        let mut key = Writer::default();
        let value = match self {
            Record::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                key.i16(OFFSET_COMMIT_KEY);
                key.string(group);
                key.string(topic);
                key.i32(*partition);
                value.as_ref().map(encode_offset_value)
            }
            Record::Group { group, value } => {
                key.i16(GROUP_METADATA_KEY);
                key.string(group);
                value.as_ref().map(encode_group_value)
            }
            Record::ConsumerGroupMetadata { group, epoch } => {
                key.i16(CONSUMER_GROUP_METADATA_KEY);
                key.string(group);
                epoch.map(encode_epoch_value)
            }
            Record::ConsumerGroupPartitionMetadata { group, topics: t } => {
                key.i16(CONSUMER_GROUP_PARTITION_METADATA_KEY);
                key.string(group);
                t.as_ref()
                    .map(|t| encode_partition_metadata_value(t, topics))
            }
            Record::ConsumerGroupMemberMetadata {
                group,
                member,
                value,
            } => {
                key.i16(CONSUMER_GROUP_MEMBER_METADATA_KEY);
                key.string(group);
                key.string(member);
                value.as_ref().map(encode_member_metadata_value)
            }
            Record::ConsumerGroupTargetAssignmentMetadata { group, epoch } => {
                key.i16(CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_KEY);
                key.string(group);
                epoch.map(encode_epoch_value)
            }
            Record::ConsumerGroupTargetAssignmentMember {
                group,
                member,
                partitions,
            } => {
                key.i16(CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_KEY);
                key.string(group);
                key.string(member);
                partitions.as_ref().map(|p| {
                    let mut w = value_writer(CONSUMER_VALUE_VERSION);
                    topic_partitions(&mut w, p, topics);
                    w.no_tagged_fields();
                    w
                })
            }
            Record::ConsumerGroupCurrentMemberAssignment {
                group,
                member,
                value,
            } => {
                key.i16(CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_KEY);
                key.string(group);
                key.string(member);
                value
                    .as_ref()
                    .map(|v| encode_current_assignment_value(v, topics))
            }
        };
        match key.too_long.or(value.as_ref().and_then(|v| v.too_long)) {
            Some(len) => Err(RecordError::FieldTooLong { len }),
            None => Ok((key.buf, value.map(|v| v.buf))),
        }
    }

    /// Decodes a stored record. Most keys give one record; a legacy JSON KIP-848 group gives
    /// the records Kafka's layout splits it into. Unknown record types (share groups, types
    /// newer than this broker) are `UnknownRecordType`, for the caller to skip.
    pub fn decode(
        key: &[u8],
        value: Option<&[u8]>,
        topics: &dyn TopicIds,
    ) -> Result<Vec<Record>, RecordError> {
        if key.first() == Some(&b'{') {
            return decode_legacy(key, value);
        }
        let mut k = Reader::new(key);
        let key_version = k.i16()?;
        let group = match key_version {
            OFFSET_COMMIT_KEY_V0..=CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_KEY => k.string()?,
            version => return Err(RecordError::UnknownRecordType { version }),
        };
        let mut v = value.map(Reader::new);
        let record = match key_version {
            OFFSET_COMMIT_KEY_V0 | OFFSET_COMMIT_KEY => {
                let topic = k.string()?;
                let partition = k.i32()?;
                Record::Offset {
                    group,
                    topic,
                    partition,
                    value: v.as_mut().map(decode_offset_value).transpose()?,
                }
            }
            GROUP_METADATA_KEY => Record::Group {
                group,
                value: v.as_mut().map(decode_group_value).transpose()?,
            },
            CONSUMER_GROUP_METADATA_KEY => Record::ConsumerGroupMetadata {
                group,
                epoch: v
                    .as_mut()
                    .map(|r| decode_epoch_value(r, key_version))
                    .transpose()?,
            },
            CONSUMER_GROUP_PARTITION_METADATA_KEY => Record::ConsumerGroupPartitionMetadata {
                group,
                topics: v
                    .as_mut()
                    .map(|r| decode_partition_metadata_value(r, key_version))
                    .transpose()?,
            },
            CONSUMER_GROUP_MEMBER_METADATA_KEY => Record::ConsumerGroupMemberMetadata {
                group,
                member: k.string()?,
                value: v
                    .as_mut()
                    .map(|r| decode_member_metadata_value(r, key_version))
                    .transpose()?,
            },
            CONSUMER_GROUP_TARGET_ASSIGNMENT_METADATA_KEY => {
                Record::ConsumerGroupTargetAssignmentMetadata {
                    group,
                    epoch: v
                        .as_mut()
                        .map(|r| decode_epoch_value(r, key_version))
                        .transpose()?,
                }
            }
            CONSUMER_GROUP_TARGET_ASSIGNMENT_MEMBER_KEY => {
                Record::ConsumerGroupTargetAssignmentMember {
                    group,
                    member: k.string()?,
                    partitions: v
                        .as_mut()
                        .map(|r| -> Result<_, RecordError> {
                            consumer_value_version(r, key_version)?;
                            let p = read_topic_partitions(r, topics)?;
                            r.skip_tagged_fields()?;
                            Ok(p)
                        })
                        .transpose()?,
                }
            }
            CONSUMER_GROUP_CURRENT_MEMBER_ASSIGNMENT_KEY => {
                Record::ConsumerGroupCurrentMemberAssignment {
                    group,
                    member: k.string()?,
                    value: v
                        .as_mut()
                        .map(|r| decode_current_assignment_value(r, key_version, topics))
                        .transpose()?,
                }
            }
            _ => unreachable!("key version checked above"),
        };
        if !k.is_empty() {
            return Err(RecordError::TrailingKeyBytes {
                extra: key.len() - k.position(),
            });
        }
        Ok(vec![record])
    }
}

fn value_writer(version: i16) -> Writer {
    let mut w = Writer::default();
    w.i16(version);
    w
}

fn encode_offset_value(v: &OffsetValue) -> Writer {
    let mut w = value_writer(OFFSET_COMMIT_VALUE_WRITE);
    w.i64(v.offset);
    w.i32(v.leader_epoch);
    w.string(v.metadata.as_deref().unwrap_or(""));
    w.i64(v.commit_timestamp_ms);
    w
}

/// OffsetCommitValue v0..=4: v1 adds expireTimestamp (which we ignore: KIP-211 expiry
/// replaced it), v2 drops it, v3 adds leaderEpoch, v4 is v3 made flexible.
fn decode_offset_value(r: &mut Reader<'_>) -> Result<OffsetValue, RecordError> {
    let version = r.i16()?;
    if version < 0 {
        return Err(RecordError::UnknownValueVersion {
            key_version: OFFSET_COMMIT_KEY,
            version,
        });
    }
    let version = version.min(OFFSET_COMMIT_VALUE_MAX);
    let flexible = version >= 4;
    let offset = r.i64()?;
    let leader_epoch = if version >= 3 { r.i32()? } else { -1 };
    let metadata = if flexible {
        r.compact_string()?
    } else {
        r.string()?
    };
    let commit_timestamp_ms = r.i64()?;
    if version == 1 {
        let _expire_timestamp = r.i64()?;
    }
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(OffsetValue {
        offset,
        leader_epoch,
        metadata: (!metadata.is_empty()).then_some(metadata),
        commit_timestamp_ms,
    })
}

/// GroupMetadataValue v3. Each member's `subscription` is its metadata for the group's
/// chosen protocol: Kafka's value has room for no other, so a member's other protocols
/// are not stored (Kafka restores members the same way).
fn encode_group_value(s: &GroupSnapshot) -> Writer {
    let mut w = value_writer(GROUP_METADATA_VALUE_WRITE);
    w.string(s.protocol_type.as_deref().unwrap_or(""));
    w.i32(s.generation_id);
    w.nullable_string(s.protocol_name.as_deref());
    w.nullable_string(s.leader.as_deref());
    w.i64(s.state_since_ms);
    w.array_len(s.members.len());
    for m in &s.members {
        let subscription = s
            .protocol_name
            .as_deref()
            .and_then(|p| m.protocols.iter().find(|(n, _)| n == p))
            .map(|(_, meta)| meta.as_slice())
            .unwrap_or_default();
        w.string(&m.member_id);
        w.nullable_string(m.instance_id.as_deref());
        w.string(&m.client_id);
        w.string(&m.client_host);
        w.i32(m.rebalance_timeout_ms);
        w.i32(m.session_timeout_ms);
        w.bytes(subscription);
        w.bytes(&m.assignment);
    }
    w
}

/// GroupMetadataValue v0..=4: v1 adds rebalanceTimeout, v2 currentStateTimestamp, v3
/// groupInstanceId, v4 is v3 made flexible. Missing fields get Kafka's defaults (-1).
fn decode_group_value(r: &mut Reader<'_>) -> Result<GroupSnapshot, RecordError> {
    let version = r.i16()?;
    if version < 0 {
        return Err(RecordError::UnknownValueVersion {
            key_version: GROUP_METADATA_KEY,
            version,
        });
    }
    let version = version.min(GROUP_METADATA_VALUE_MAX);
    let flexible = version >= 4;
    let string = |r: &mut Reader<'_>| match flexible {
        true => r.compact_string(),
        false => r.string(),
    };
    let nullable_string = |r: &mut Reader<'_>| match flexible {
        true => r.compact_nullable_string(),
        false => r.nullable_string(),
    };
    let bytes = |r: &mut Reader<'_>| match flexible {
        true => r.compact_bytes(),
        false => r.bytes(),
    };
    let protocol_type = string(r)?;
    let generation_id = r.i32()?;
    let protocol_name = nullable_string(r)?;
    let leader = nullable_string(r)?;
    let state_since_ms = if version >= 2 { r.i64()? } else { -1 };
    // A member is at least a few length fields; the bound only keeps allocation honest.
    let count = match flexible {
        true => r.compact_array_len(8)?,
        false => r.array_len(8)?,
    };
    let mut members = Vec::with_capacity(count);
    for _ in 0..count {
        let member_id = string(r)?;
        let instance_id = if version >= 3 {
            nullable_string(r)?
        } else {
            None
        };
        let client_id = string(r)?;
        let client_host = string(r)?;
        let rebalance_timeout_ms = if version >= 1 { r.i32()? } else { -1 };
        let session_timeout_ms = r.i32()?;
        let subscription = bytes(r)?;
        let assignment = bytes(r)?;
        if flexible {
            r.skip_tagged_fields()?;
        }
        members.push(Member {
            member_id,
            instance_id,
            client_id,
            client_host,
            session_timeout_ms,
            // Kafka wrote -1 before it stored rebalance timeouts, meaning "as the session".
            rebalance_timeout_ms: if rebalance_timeout_ms < 0 {
                session_timeout_ms
            } else {
                rebalance_timeout_ms
            },
            protocols: protocol_name
                .iter()
                .map(|p| (p.clone(), subscription.clone()))
                .collect(),
            assignment,
            last_heartbeat_ms: 0,
            awaiting_join: false,
            awaiting_sync: false,
        });
    }
    if flexible {
        r.skip_tagged_fields()?;
    }
    Ok(GroupSnapshot {
        protocol_type: (!protocol_type.is_empty()).then_some(protocol_type),
        generation_id,
        protocol_name,
        leader,
        members,
        state_since_ms,
    })
}

/// Checks the version of a KIP-848 value: 0, or newer ones, which may only add tagged
/// fields.
fn consumer_value_version(r: &mut Reader<'_>, key_version: i16) -> Result<(), RecordError> {
    match r.i16()? {
        v if v >= CONSUMER_VALUE_VERSION => Ok(()),
        version => Err(RecordError::UnknownValueVersion {
            key_version,
            version,
        }),
    }
}

/// ConsumerGroupMetadataValue and ConsumerGroupTargetAssignmentMetadataValue: one epoch.
fn encode_epoch_value(epoch: i32) -> Writer {
    let mut w = value_writer(CONSUMER_VALUE_VERSION);
    w.i32(epoch);
    w.no_tagged_fields();
    w
}

fn decode_epoch_value(r: &mut Reader<'_>, key_version: i16) -> Result<i32, RecordError> {
    consumer_value_version(r, key_version)?;
    let epoch = r.i32()?;
    r.skip_tagged_fields()?;
    Ok(epoch)
}

/// ConsumerGroupPartitionMetadataValue. Rack information is not kept (stored empty, as
/// Kafka does when it has none).
fn encode_partition_metadata_value(t: &BTreeMap<String, i32>, topics: &dyn TopicIds) -> Writer {
    let known: Vec<(Uuid, &String, i32)> = t
        .iter()
        .filter_map(|(name, &n)| topics.topic_id(name).map(|id| (id, name, n)))
        .collect();
    let mut w = value_writer(CONSUMER_VALUE_VERSION);
    w.compact_array_len(known.len());
    for (id, name, n) in known {
        w.uuid(id);
        w.compact_string(name);
        w.i32(n);
        w.compact_array_len(0);
        w.no_tagged_fields();
    }
    w.no_tagged_fields();
    w
}

fn decode_partition_metadata_value(
    r: &mut Reader<'_>,
    key_version: i16,
) -> Result<BTreeMap<String, i32>, RecordError> {
    consumer_value_version(r, key_version)?;
    let mut out = BTreeMap::new();
    for _ in 0..r.compact_array_len(16)? {
        let _id = r.uuid()?;
        let name = r.compact_string()?;
        let n = r.i32()?;
        for _ in 0..r.compact_array_len(4)? {
            let _partition = r.i32()?;
            for _ in 0..r.compact_array_len(1)? {
                r.compact_string()?;
            }
            r.skip_tagged_fields()?;
        }
        r.skip_tagged_fields()?;
        out.insert(name, n);
    }
    r.skip_tagged_fields()?;
    Ok(out)
}

/// ConsumerGroupMemberMetadataValue. Rack and classic-member metadata (tag 0) are features
/// this broker does not have: written null, ignored when read.
fn encode_member_metadata_value(m: &MemberSubscription) -> Writer {
    let mut w = value_writer(CONSUMER_VALUE_VERSION);
    w.compact_nullable_string(m.instance_id.as_deref());
    w.compact_nullable_string(None);
    w.compact_string(&m.client_id);
    w.compact_string(&m.client_host);
    w.compact_array_len(m.subscribed.len());
    for t in &m.subscribed {
        w.compact_string(t);
    }
    w.compact_nullable_string(m.regex.as_deref());
    w.i32(m.rebalance_timeout_ms);
    w.compact_nullable_string(m.assignor.as_deref());
    w.no_tagged_fields();
    w
}

fn decode_member_metadata_value(
    r: &mut Reader<'_>,
    key_version: i16,
) -> Result<MemberSubscription, RecordError> {
    consumer_value_version(r, key_version)?;
    let instance_id = r.compact_nullable_string()?;
    let _rack_id = r.compact_nullable_string()?;
    let client_id = r.compact_string()?;
    let client_host = r.compact_string()?;
    let mut subscribed = BTreeSet::new();
    for _ in 0..r.compact_array_len(1)? {
        subscribed.insert(r.compact_string()?);
    }
    let regex = r.compact_nullable_string()?;
    let rebalance_timeout_ms = r.i32()?;
    let assignor = r.compact_nullable_string()?;
    r.skip_tagged_fields()?;
    Ok(MemberSubscription {
        instance_id,
        client_id,
        client_host,
        subscribed,
        regex,
        rebalance_timeout_ms,
        assignor,
    })
}

/// Kafka's `MemberState`, derived from what the member holds; read back it is not needed,
/// since the same facts are stored beside it.
fn member_state(v: &MemberAssignment) -> i8 {
    const STABLE: i8 = 0;
    const UNREVOKED_PARTITIONS: i8 = 1;
    if v.revoking.is_empty() {
        STABLE
    } else {
        UNREVOKED_PARTITIONS
    }
}

fn encode_current_assignment_value(v: &MemberAssignment, topics: &dyn TopicIds) -> Writer {
    let mut w = value_writer(CONSUMER_VALUE_VERSION);
    if v.departed {
        w.i32(LEAVE_GROUP_STATIC_MEMBER_EPOCH);
        w.i32(v.member_epoch);
    } else {
        w.i32(v.member_epoch);
        w.i32(v.previous_member_epoch);
    }
    w.i8(member_state(v));
    topic_partitions(&mut w, &v.assigned, topics);
    topic_partitions(&mut w, &v.revoking, topics);
    w.no_tagged_fields();
    w
}

fn decode_current_assignment_value(
    r: &mut Reader<'_>,
    key_version: i16,
    topics: &dyn TopicIds,
) -> Result<MemberAssignment, RecordError> {
    consumer_value_version(r, key_version)?;
    let member_epoch = r.i32()?;
    let previous_member_epoch = r.i32()?;
    let _state = r.i8()?;
    let assigned = read_topic_partitions(r, topics)?;
    let revoking = read_topic_partitions(r, topics)?;
    r.skip_tagged_fields()?;
    let departed = member_epoch == LEAVE_GROUP_STATIC_MEMBER_EPOCH;
    Ok(MemberAssignment {
        member_epoch: if departed {
            previous_member_epoch
        } else {
            member_epoch
        },
        previous_member_epoch,
        departed,
        assigned,
        revoking,
    })
}

/// `[]TopicPartitions { TopicId, []Partitions }` of the flexible KIP-848 values.
fn topic_partitions(w: &mut Writer, set: &BTreeSet<TopicPartition>, topics: &dyn TopicIds) {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in set {
        by_topic.entry(t).or_default().push(*p);
    }
    let known: Vec<(Uuid, Vec<i32>)> = by_topic
        .into_iter()
        .filter_map(|(t, ps)| topics.topic_id(t).map(|id| (id, ps)))
        .collect();
    w.compact_array_len(known.len());
    for (id, ps) in known {
        w.uuid(id);
        w.compact_array_len(ps.len());
        for p in ps {
            w.i32(p);
        }
        w.no_tagged_fields();
    }
}

fn read_topic_partitions(
    r: &mut Reader<'_>,
    topics: &dyn TopicIds,
) -> Result<BTreeSet<TopicPartition>, RecordError> {
    let mut out = BTreeSet::new();
    for _ in 0..r.compact_array_len(18)? {
        let id = r.uuid()?;
        let name = topics.topic_name(id);
        for _ in 0..r.compact_array_len(4)? {
            let p = r.i32()?;
            if let Some(name) = &name {
                out.insert((name.clone(), p));
            }
        }
        r.skip_tagged_fields()?;
    }
    Ok(out)
}

fn decode_legacy(key: &[u8], value: Option<&[u8]>) -> Result<Vec<Record>, RecordError> {
    fn json<'a, T: Deserialize<'a>>(b: &'a [u8]) -> Result<T, RecordError> {
        serde_json::from_slice(b).map_err(|e| RecordError::LegacyJson {
            reason: e.to_string(),
        })
    }
    fn value_json<'a, T: Deserialize<'a>>(v: Option<&'a [u8]>) -> Result<Option<T>, RecordError> {
        v.map(json).transpose()
    }
    Ok(match json::<LegacyKey>(key)? {
        LegacyKey::Offset {
            group,
            topic,
            partition,
        } => vec![Record::Offset {
            group,
            topic,
            partition,
            value: value_json(value)?,
        }],
        LegacyKey::Group { group } => vec![Record::Group {
            group,
            value: value_json(value)?,
        }],
        LegacyKey::ConsumerGroup { group } => match value_json::<ConsumerGroup>(value)? {
            Some(g) => g.records(None),
            None => vec![Record::ConsumerGroupMetadata { group, epoch: None }],
        },
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Topic ids that spell the topic's name (up to 16 bytes), so tests need no table.
    pub(crate) struct TestTopics;

    impl TopicIds for TestTopics {
        fn topic_id(&self, name: &str) -> Option<Uuid> {
            let mut b = [0u8; 16];
            b.get_mut(..name.len())?.copy_from_slice(name.as_bytes());
            Some(Uuid::from_bytes(b))
        }

        fn topic_name(&self, id: Uuid) -> Option<String> {
            let b = id.as_bytes();
            let end = b.iter().position(|&c| c == 0).unwrap_or(16);
            String::from_utf8(b[..end].to_vec())
                .ok()
                .filter(|n| !n.is_empty())
        }
    }

    fn decode_one(key: &[u8], value: Option<&[u8]>) -> Result<Record, RecordError> {
        let mut v = Record::decode(key, value, &TestTopics)?;
        assert_eq!(v.len(), 1);
        Ok(v.remove(0))
    }

    fn round_trip(r: &Record) -> Record {
        let (k, v) = r.encode(&TestTopics).unwrap();
        decode_one(&k, v.as_deref()).expect("decodes")
    }

    fn offset_record() -> Record {
        Record::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(OffsetValue {
                offset: 9,
                leader_epoch: 2,
                metadata: Some("m".into()),
                commit_timestamp_ms: 5,
            }),
        }
    }

    fn group_record() -> Record {
        Record::Group {
            group: "g".into(),
            value: Some(GroupSnapshot {
                protocol_type: Some("consumer".into()),
                generation_id: 1,
                protocol_name: Some("range".into()),
                leader: Some("m1".into()),
                members: vec![Member {
                    member_id: "m1".into(),
                    instance_id: None,
                    client_id: "c".into(),
                    client_host: "/h".into(),
                    session_timeout_ms: 100,
                    rebalance_timeout_ms: 300,
                    protocols: vec![("range".into(), vec![1, 2])],
                    assignment: vec![3],
                    last_heartbeat_ms: 0,
                    awaiting_join: false,
                    awaiting_sync: false,
                }],
                state_since_ms: 7,
            }),
        }
    }

    /// Bytes derived by hand from OffsetCommitKey v1, OffsetCommitValue v3, GroupMetadataKey
    /// v2 and GroupMetadataValue v3: int16 version, then the fields in schema order;
    /// non-flexible strings are int16-length-prefixed, bytes and arrays int32-prefixed.
    #[test]
    fn decodes_with_kafkas_schema_layout() {
        let offset_key = b"\x00\x01\x00\x01g\x00\x01t\x00\x00\x00\x03";
        let offset_value = b"\x00\x03\
            \x00\x00\x00\x00\x00\x00\x00\x09\
            \x00\x00\x00\x02\
            \x00\x01m\
            \x00\x00\x00\x00\x00\x00\x00\x05";
        let (k, v) = offset_record().encode(&TestTopics).unwrap();
        assert_eq!(k, offset_key);
        assert_eq!(v.as_deref(), Some(&offset_value[..]));
        assert_eq!(
            decode_one(offset_key, Some(offset_value)),
            Ok(offset_record())
        );

        let group_key = b"\x00\x02\x00\x01g";
        let group_value = b"\x00\x03\
            \x00\x08consumer\
            \x00\x00\x00\x01\
            \x00\x05range\
            \x00\x02m1\
            \x00\x00\x00\x00\x00\x00\x00\x07\
            \x00\x00\x00\x01\
            \x00\x02m1\
            \xff\xff\
            \x00\x01c\
            \x00\x02/h\
            \x00\x00\x01\x2c\
            \x00\x00\x00\x64\
            \x00\x00\x00\x02\x01\x02\
            \x00\x00\x00\x01\x03";
        let (k, v) = group_record().encode(&TestTopics).unwrap();
        assert_eq!(k, group_key);
        assert_eq!(v.as_deref(), Some(&group_value[..]));
        assert_eq!(decode_one(group_key, Some(group_value)), Ok(group_record()));

        // A KIP-848 record: ConsumerGroupMetadataKey (3) and a flexible value v0 (epoch 5,
        // no tagged fields).
        let r = Record::ConsumerGroupMetadata {
            group: "g".into(),
            epoch: Some(5),
        };
        let (k, v) = r.encode(&TestTopics).unwrap();
        assert_eq!(k, b"\x00\x03\x00\x01g");
        assert_eq!(v.as_deref(), Some(&b"\x00\x00\x00\x00\x00\x05\x00"[..]));
        // A tombstone is a null value.
        let t = Record::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: None,
        };
        assert_eq!(t.encode(&TestTopics).unwrap(), (offset_key.to_vec(), None));
    }

    #[test]
    fn decodes_every_offset_commit_value_version() {
        let key = b"\x00\x00\x00\x01g\x00\x01t\x00\x00\x00\x03"; // key v0
        let value = |metadata: Option<&str>, leader_epoch| {
            Some(OffsetValue {
                offset: 9,
                leader_epoch,
                metadata: metadata.map(str::to_string),
                commit_timestamp_ms: 5,
            })
        };
        let cases: [(&[u8], _); 6] = [
            (
                b"\x00\x00\0\0\0\0\0\0\0\x09\x00\x00\0\0\0\0\0\0\0\x05",
                value(None, -1),
            ),
            (
                b"\x00\x01\0\0\0\0\0\0\0\x09\x00\x01m\0\0\0\0\0\0\0\x05\xff\xff\xff\xff\xff\xff\xff\xff",
                value(Some("m"), -1),
            ),
            (
                b"\x00\x02\0\0\0\0\0\0\0\x09\x00\x01m\0\0\0\0\0\0\0\x05",
                value(Some("m"), -1),
            ),
            (
                b"\x00\x03\0\0\0\0\0\0\0\x09\0\0\0\x04\x00\x01m\0\0\0\0\0\0\0\x05",
                value(Some("m"), 4),
            ),
            // Flexible: compact string (length + 1), then tagged fields, here one unknown.
            (
                b"\x00\x04\0\0\0\0\0\0\0\x09\0\0\0\x04\x02m\0\0\0\0\0\0\0\x05\x01\x07\x02\xaa\xbb",
                value(Some("m"), 4),
            ),
            // A version newer than Kafka 4 knows reads as the newest flexible one (KIP-915).
            (
                b"\x00\x05\0\0\0\0\0\0\0\x09\0\0\0\x04\x02m\0\0\0\0\0\0\0\x05\x00",
                value(Some("m"), 4),
            ),
        ];
        for (bytes, expect) in cases {
            let r = decode_one(key, Some(bytes)).expect("decodes");
            let Record::Offset { value, .. } = r else {
                panic!("an offset record")
            };
            assert_eq!(value, expect, "{bytes:02x?}");
        }
    }

    #[test]
    fn decodes_old_and_flexible_group_metadata_values() {
        let key = b"\x00\x02\x00\x01g";
        // v0: no rebalance timeout, state timestamp or instance id.
        let v0 = b"\x00\x00\x00\x08consumer\x00\x00\x00\x02\xff\xff\xff\xff\x00\x00\x00\x01\
            \x00\x02m1\x00\x01c\x00\x02/h\x00\x00\x00\x64\x00\x00\x00\x00\x00\x00\x00\x00";
        let Record::Group { value: Some(s), .. } = decode_one(key, Some(v0)).unwrap() else {
            panic!("a group record")
        };
        assert_eq!(s.generation_id, 2);
        assert_eq!(s.state_since_ms, -1);
        assert_eq!(s.protocol_name, None);
        assert_eq!(
            s.members[0].rebalance_timeout_ms, 100,
            "defaults to the session"
        );
        assert!(s.members[0].protocols.is_empty());

        // v4: flexible; the same content as the v3 layout test, plus tagged fields.
        let v4 = b"\x00\x04\
            \x09consumer\
            \x00\x00\x00\x01\
            \x06range\
            \x03m1\
            \x00\x00\x00\x00\x00\x00\x00\x07\
            \x02\
            \x03m1\x00\x02c\x03/h\x00\x00\x01\x2c\x00\x00\x00\x64\x03\x01\x02\x02\x03\x00\
            \x00";
        assert_eq!(decode_one(key, Some(v4)), Ok(group_record()));
    }

    #[test]
    fn reads_legacy_json_records() {
        let r = decode_one(
            br#"{"offset":{"group":"g","topic":"t","partition":3}}"#,
            Some(br#"{"offset":9,"leader_epoch":2,"metadata":"m","commit_timestamp_ms":5}"#),
        );
        assert_eq!(r, Ok(offset_record()));
        let r = decode_one(br#"{"group":{"group":"g"}}"#, None);
        assert_eq!(
            r,
            Ok(Record::Group {
                group: "g".into(),
                value: None
            })
        );
        let Record::Group { value: Some(s), .. } = group_record() else {
            unreachable!()
        };
        let json = serde_json::to_vec(&s).unwrap();
        assert_eq!(
            decode_one(br#"{"group":{"group":"g"}}"#, Some(&json)),
            Ok(group_record())
        );
        // A whole KIP-848 group becomes Kafka's records for it.
        let g = ConsumerGroup::new("cg", 0);
        let json = serde_json::to_vec(&g).unwrap();
        let rs = Record::decode(
            br#"{"consumer_group":{"group":"cg"}}"#,
            Some(&json),
            &TestTopics,
        )
        .unwrap();
        assert_eq!(rs, g.records(None));
        let rs = Record::decode(br#"{"consumer_group":{"group":"cg"}}"#, None, &TestTopics);
        assert_eq!(
            rs,
            Ok(vec![Record::ConsumerGroupMetadata {
                group: "cg".into(),
                epoch: None
            }])
        );
    }

    #[test]
    fn partitions_of_unknown_topics_are_dropped() {
        let r = Record::ConsumerGroupTargetAssignmentMember {
            group: "g".into(),
            member: "m".into(),
            partitions: Some([("t".into(), 0), ("deleted".into(), 1)].into()),
        };
        struct OnlyT;
        impl TopicIds for OnlyT {
            fn topic_id(&self, name: &str) -> Option<Uuid> {
                (name == "t").then(|| Uuid::from_u128(1))
            }
            fn topic_name(&self, id: Uuid) -> Option<String> {
                (id == Uuid::from_u128(1)).then(|| "t".into())
            }
        }
        let (k, v) = r.encode(&OnlyT).unwrap();
        let back = Record::decode(&k, v.as_deref(), &OnlyT).unwrap();
        assert_eq!(
            back,
            vec![Record::ConsumerGroupTargetAssignmentMember {
                group: "g".into(),
                member: "m".into(),
                partitions: Some([("t".into(), 0)].into()),
            }]
        );
        // Unknown ids on the way in are dropped the same way.
        assert_eq!(
            Record::decode(&k, v.as_deref(), &TestTopics).unwrap(),
            vec![Record::ConsumerGroupTargetAssignmentMember {
                group: "g".into(),
                member: "m".into(),
                partitions: Some(BTreeSet::new()),
            }]
        );
    }

    #[test]
    fn unknown_types_and_bad_lengths_are_errors() {
        assert_eq!(
            decode_one(b"\x00\x09\x00\x01g", None),
            Err(RecordError::UnknownRecordType { version: 9 })
        );
        assert!(matches!(
            decode_one(b"\x00\x02\x7f\xffg", None),
            Err(RecordError::InvalidLength { .. })
        ));
        assert!(matches!(
            decode_one(b"\x00\x02\x00\x01g\x00", None),
            Err(RecordError::TrailingKeyBytes { extra: 1 })
        ));
        assert!(matches!(
            decode_one(b"\x00\x02\x00\x01\xff", None),
            Err(RecordError::InvalidUtf8 { .. })
        ));
        // A huge member count must be refused before anything is allocated.
        let mut v = b"\x00\x03\x00\x00\x00\x00\x00\x00\xff\xff\xff\xff\0\0\0\0\0\0\0\0".to_vec();
        v.extend_from_slice(b"\x7f\xff\xff\xff");
        assert!(decode_one(b"\x00\x02\x00\x01g", Some(&v)).is_err());
        assert!(decode_one(b"{", None).is_err());
        // A client may send a group id longer than an int16 string holds: refused, no panic.
        let long = Record::Group {
            group: "g".repeat(40_000),
            value: None,
        };
        assert_eq!(
            long.encode(&TestTopics),
            Err(RecordError::FieldTooLong { len: 40_000 })
        );
        assert!(decode_one(b"", None).is_err());
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z0-9-]{0,10}"
    }

    fn topic() -> impl Strategy<Value = String> {
        "[a-d]{1,3}"
    }

    fn partitions() -> impl Strategy<Value = BTreeSet<TopicPartition>> {
        proptest::collection::btree_set((topic(), 0..50i32), 0..6)
    }

    fn snapshot() -> impl Strategy<Value = GroupSnapshot> {
        let member = (
            name(),
            proptest::option::of(name()),
            name(),
            name(),
            any::<i32>(),
            0..i32::MAX,
            proptest::collection::vec(any::<u8>(), 0..8),
            proptest::collection::vec(any::<u8>(), 0..8),
        );
        (
            proptest::option::of("[a-z]{1,8}"),
            any::<i32>(),
            proptest::option::of(name()),
            proptest::option::of(name()),
            proptest::collection::vec(member, 0..4),
            -1..i64::MAX,
        )
            .prop_map(
                |(protocol_type, generation_id, protocol_name, leader, ms, since)| {
                    let members = ms
                        .into_iter()
                        .map(
                            |(id, inst, client, host, session, rebalance, sub, asg)| Member {
                                member_id: id,
                                instance_id: inst,
                                client_id: client,
                                client_host: host,
                                session_timeout_ms: session,
                                rebalance_timeout_ms: rebalance,
                                protocols: protocol_name
                                    .iter()
                                    .map(|p| (p.clone(), sub.clone()))
                                    .collect(),
                                assignment: asg,
                                last_heartbeat_ms: 0,
                                awaiting_join: false,
                                awaiting_sync: false,
                            },
                        )
                        .collect();
                    GroupSnapshot {
                        protocol_type,
                        generation_id,
                        protocol_name,
                        leader,
                        members,
                        state_since_ms: since,
                    }
                },
            )
    }

    fn record() -> impl Strategy<Value = Record> {
        let offset = (
            any::<i64>(),
            any::<i32>(),
            proptest::option::of("[a-z ]{1,8}"),
            any::<i64>(),
        )
            .prop_map(|(offset, leader_epoch, metadata, ts)| OffsetValue {
                offset,
                leader_epoch,
                metadata,
                commit_timestamp_ms: ts,
            });
        let subscription = (
            proptest::option::of(name()),
            name(),
            name(),
            proptest::collection::btree_set(topic(), 0..4),
            proptest::option::of("[a-z.*^$]{1,8}"),
            any::<i32>(),
            proptest::option::of(name()),
        )
            .prop_map(
                |(instance_id, client_id, client_host, subscribed, regex, rt, assignor)| {
                    MemberSubscription {
                        instance_id,
                        client_id,
                        client_host,
                        subscribed,
                        regex,
                        rebalance_timeout_ms: rt,
                        assignor,
                    }
                },
            );
        let assignment = (
            any::<i32>().prop_filter("-2 means departed", |e| *e != -2),
            any::<i32>(),
            any::<bool>(),
            partitions(),
            partitions(),
        )
            .prop_map(
                |(epoch, previous, departed, assigned, revoking)| MemberAssignment {
                    member_epoch: epoch,
                    previous_member_epoch: if departed { epoch } else { previous },
                    departed,
                    assigned,
                    revoking,
                },
            );
        prop_oneof![
            (name(), topic(), any::<i32>(), proptest::option::of(offset)).prop_map(
                |(group, topic, partition, value)| Record::Offset {
                    group,
                    topic,
                    partition,
                    value
                }
            ),
            (name(), proptest::option::of(snapshot()))
                .prop_map(|(group, value)| Record::Group { group, value }),
            (name(), proptest::option::of(any::<i32>()))
                .prop_map(|(group, epoch)| Record::ConsumerGroupMetadata { group, epoch }),
            (
                name(),
                proptest::option::of(proptest::collection::btree_map(topic(), any::<i32>(), 0..4))
            )
                .prop_map(|(group, topics)| Record::ConsumerGroupPartitionMetadata {
                    group,
                    topics
                }),
            (name(), name(), proptest::option::of(subscription)).prop_map(
                |(group, member, value)| Record::ConsumerGroupMemberMetadata {
                    group,
                    member,
                    value
                }
            ),
            (name(), proptest::option::of(any::<i32>())).prop_map(|(group, epoch)| {
                Record::ConsumerGroupTargetAssignmentMetadata { group, epoch }
            }),
            (name(), name(), proptest::option::of(partitions())).prop_map(
                |(group, member, partitions)| Record::ConsumerGroupTargetAssignmentMember {
                    group,
                    member,
                    partitions
                }
            ),
            (name(), name(), proptest::option::of(assignment)).prop_map(
                |(group, member, value)| Record::ConsumerGroupCurrentMemberAssignment {
                    group,
                    member,
                    value
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn every_record_type_round_trips(r in record()) {
            prop_assert_eq!(round_trip(&r), r);
        }

        /// Stored bytes cut short anywhere are an error, never a panic or a wrong record.
        #[test]
        fn truncated_records_are_errors(r in record()) {
            let (k, v) = r.encode(&TestTopics).unwrap();
            for n in 0..k.len() {
                prop_assert!(Record::decode(&k[..n], v.as_deref(), &TestTopics).is_err());
            }
            if let Some(v) = &v {
                for n in 0..v.len() {
                    prop_assert!(Record::decode(&k, Some(&v[..n]), &TestTopics).is_err());
                }
            }
        }

        #[test]
        fn garbage_never_panics(
            k in proptest::collection::vec(any::<u8>(), 0..40),
            v in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80)),
            version in 0..12i16,
        ) {
            let _ = Record::decode(&k, v.as_deref(), &TestTopics);
            // And with a valid record type in front, so the field decoders see the garbage.
            let mut key = version.to_be_bytes().to_vec();
            key.extend_from_slice(b"\x00\x01g\x00\x01m");
            let _ = Record::decode(&key, v.as_deref(), &TestTopics);
            let mut value = 0i16.to_be_bytes().to_vec();
            value.extend_from_slice(&k);
            let _ = Record::decode(&key, Some(&value), &TestTopics);
        }
    }
}
