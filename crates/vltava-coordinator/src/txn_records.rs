//! Records of `__transaction_state` in Kafka's own binary layout (its `transaction-coordinator`
//! message schemas), so tools that read that topic as Kafka writes it, and data moved from
//! Kafka, work unchanged.
//!
//! The key is TransactionLogKey v0: an int16 version (0), then the transactional id as an
//! int16-prefixed string. The value is TransactionLogValue: an int16 version, then that
//! version's fields. Version 0 is non-flexible; version 1 (what Kafka 4 writes once
//! `transaction.version` ≥ 1) is flexible and carries PreviousProducerId (tag 0),
//! NextProducerId (tag 1) and ClientTransactionVersion (tag 2) as tagged fields, written only
//! when they differ from their defaults (-1, -1, 0). A null value is a tombstone: the
//! transactional id expired.

use std::collections::{BTreeMap, BTreeSet};

use crate::records::RecordError;
use crate::wire::{Reader, Writer};
use vltava_types::{ProducerEpoch, ProducerId};

const TXN_KEY_VERSION: i16 = 0;
/// The version written; a higher one is read as this one (KIP-915: later versions may only
/// add tagged fields).
const TXN_VALUE_WRITE: i16 = 1;

const TAG_PREVIOUS_PRODUCER_ID: u32 = 0;
const TAG_NEXT_PRODUCER_ID: u32 = 1;
const TAG_CLIENT_TRANSACTION_VERSION: u32 = 2;

/// Kafka's `RecordBatch.NO_PRODUCER_ID` / `NO_PRODUCER_EPOCH`.
pub const NO_PRODUCER_ID: ProducerId = ProducerId::NONE;
pub const NO_PRODUCER_EPOCH: ProducerEpoch = ProducerEpoch::NONE;

/// Kafka's transaction states, with the ids it stores and the names its admin APIs use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub const ALL: [TxnState; 8] = [
        TxnState::Empty,
        TxnState::Ongoing,
        TxnState::PrepareCommit,
        TxnState::PrepareAbort,
        TxnState::CompleteCommit,
        TxnState::CompleteAbort,
        TxnState::Dead,
        TxnState::PrepareEpochFence,
    ];

    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.id() == id)
    }

    /// The name DescribeTransactions and ListTransactions use.
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// TransactionLogValue: one transactional id's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMetadata {
    pub producer_id: ProducerId,
    /// The producer id before the transition that wrote this value (Kafka's
    /// `prevProducerId`): after a rotation, the old id, which a KIP-360 retry may still name.
    pub previous_producer_id: ProducerId,
    /// The producer id an epoch-exhausting end (KIP-890) will move to once complete.
    pub next_producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    /// The epoch before the last bump, which a retried InitProducerId may name (KIP-360).
    /// Not stored, as in Kafka: a reloaded coordinator has none (-1).
    pub last_producer_epoch: ProducerEpoch,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// Topic → partitions in the transaction.
    pub partitions: BTreeMap<String, BTreeSet<i32>>,
    pub last_update_ms: i64,
    /// -1 while no transaction has started.
    pub start_ms: i64,
    /// Kafka's `ClientTransactionVersion`: 2 when the client bumps the epoch at each end
    /// (KIP-890 part 2).
    pub client_txn_version: i16,
}

impl TxnMetadata {
    pub fn partition_list(&self) -> Vec<(String, i32)> {
        self.partitions
            .iter()
            .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
            .collect()
    }

    pub fn contains(&self, topic: &str, partition: i32) -> bool {
        self.partitions
            .get(topic)
            .is_some_and(|ps| ps.contains(&partition))
    }

    /// The same state as a reloaded coordinator would have it.
    pub fn as_stored(&self) -> Self {
        Self {
            last_producer_epoch: NO_PRODUCER_EPOCH,
            ..self.clone()
        }
    }
}

/// One record of `__transaction_state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnRecord {
    pub transactional_id: String,
    /// `None`: the id expired (tombstone).
    pub value: Option<TxnMetadata>,
}

impl TxnRecord {
    /// Key and value bytes in Kafka's layout. Fails only for a name longer than an int16
    /// string holds, which Kafka cannot store either.
    pub fn encode(&self) -> Result<(Vec<u8>, Option<Vec<u8>>), RecordError> {
        let mut key = Writer::default();
        key.i16(TXN_KEY_VERSION);
        key.string(&self.transactional_id);
        let value = self.value.as_ref().map(encode_value);
        match key.too_long.or(value.as_ref().and_then(|v| v.too_long)) {
            Some(len) => Err(RecordError::FieldTooLong { len }),
            None => Ok((key.buf, value.map(|v| v.buf))),
        }
    }

    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self, RecordError> {
        let mut k = Reader::new(key);
        let version = k.i16()?;
        if version != TXN_KEY_VERSION {
            return Err(RecordError::UnknownRecordType { version });
        }
        let transactional_id = k.string()?;
        if !k.is_empty() {
            return Err(RecordError::TrailingKeyBytes {
                extra: key.len() - k.position(),
            });
        }
        let value = value.map(decode_value).transpose()?;
        Ok(Self {
            transactional_id,
            value,
        })
    }
}

fn encode_value(m: &TxnMetadata) -> Writer {
    let mut w = Writer::default();
    w.i16(TXN_VALUE_WRITE);
    w.i64(m.producer_id.get());
    w.i16(m.producer_epoch.get());
    w.i32(m.timeout_ms);
    w.i8(m.state.id());
    // Kafka stores no partition list (null) for Empty, and a list (maybe empty) otherwise.
    if m.state == TxnState::Empty {
        w.unsigned_varint(0);
    } else {
        w.compact_array_len(m.partitions.len());
        for (topic, ps) in &m.partitions {
            w.compact_string(topic);
            w.compact_array_len(ps.len());
            for p in ps {
                w.i32(*p);
            }
            w.no_tagged_fields();
        }
    }
    w.i64(m.last_update_ms);
    w.i64(m.start_ms);
    let mut tags: Vec<(u32, Vec<u8>)> = Vec::new();
    if m.previous_producer_id != NO_PRODUCER_ID {
        tags.push((
            TAG_PREVIOUS_PRODUCER_ID,
            m.previous_producer_id.get().to_be_bytes().to_vec(),
        ));
    }
    if m.next_producer_id != NO_PRODUCER_ID {
        tags.push((
            TAG_NEXT_PRODUCER_ID,
            m.next_producer_id.get().to_be_bytes().to_vec(),
        ));
    }
    if m.client_txn_version != 0 {
        tags.push((
            TAG_CLIENT_TRANSACTION_VERSION,
            m.client_txn_version.to_be_bytes().to_vec(),
        ));
    }
    w.unsigned_varint(tags.len() as u32);
    for (tag, body) in tags {
        w.unsigned_varint(tag);
        w.unsigned_varint(body.len() as u32);
        w.buf.extend_from_slice(&body);
    }
    w
}

fn decode_value(bytes: &[u8]) -> Result<TxnMetadata, RecordError> {
    let mut r = Reader::new(bytes);
    let version = r.i16()?;
    if version < 0 {
        return Err(RecordError::UnknownValueVersion {
            key_version: TXN_KEY_VERSION,
            version,
        });
    }
    let flexible = version >= 1;
    let producer_id = r.i64()?;
    let producer_epoch = r.i16()?;
    let timeout_ms = r.i32()?;
    let state_id = r.i8()?;
    let state = TxnState::from_id(state_id).ok_or(RecordError::UnknownTxnState { id: state_id })?;
    // A topic entry takes at least 2 bytes flexible (two lengths), 6 otherwise.
    let topics = if flexible {
        r.compact_nullable_array_len(2)?
    } else {
        r.nullable_array_len(6)?
    };
    let mut partitions: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for _ in 0..topics.unwrap_or(0) {
        let (topic, n) = if flexible {
            (r.compact_string()?, r.compact_array_len(4)?)
        } else {
            (r.string()?, r.array_len(4)?)
        };
        let set = partitions.entry(topic).or_default();
        for _ in 0..n {
            set.insert(r.i32()?);
        }
        if flexible {
            r.skip_tagged_fields()?;
        }
    }
    let last_update_ms = r.i64()?;
    let start_ms = r.i64()?;
    let mut m = TxnMetadata {
        producer_id: ProducerId::new(producer_id),
        previous_producer_id: NO_PRODUCER_ID,
        next_producer_id: NO_PRODUCER_ID,
        producer_epoch: ProducerEpoch::new(producer_epoch),
        last_producer_epoch: NO_PRODUCER_EPOCH,
        timeout_ms,
        state,
        // Kafka ignores the partitions of an Empty value.
        partitions: if state == TxnState::Empty {
            BTreeMap::new()
        } else {
            partitions
        },
        last_update_ms,
        start_ms,
        client_txn_version: 0,
    };
    if flexible {
        let count = r.unsigned_varint()?;
        for _ in 0..count {
            let tag = r.unsigned_varint()?;
            let size = r.unsigned_varint()? as usize;
            let body = r.raw(size)?;
            let mut b = Reader::new(body);
            match tag {
                TAG_PREVIOUS_PRODUCER_ID => m.previous_producer_id = ProducerId::new(b.i64()?),
                TAG_NEXT_PRODUCER_ID => m.next_producer_id = ProducerId::new(b.i64()?),
                TAG_CLIENT_TRANSACTION_VERSION => m.client_txn_version = b.i16()?,
                // Tags of newer versions: skipped, as Kafka's readers do.
                _ => {}
            }
        }
    }
    Ok(m)
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ongoing() -> TxnMetadata {
        TxnMetadata {
            producer_id: ProducerId::new(7),
            previous_producer_id: ProducerId::new(7),
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: ProducerEpoch::new(2),
            last_producer_epoch: NO_PRODUCER_EPOCH,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: BTreeMap::from([("t".to_string(), BTreeSet::from([0, 1]))]),
            last_update_ms: 5,
            start_ms: 4,
            client_txn_version: 2,
        }
    }

    /// Bytes derived by hand from TransactionLogKey v0 and TransactionLogValue v1: int16
    /// version, then the fields in schema order; compact lengths are length + 1; the tagged
    /// fields section is a count, then (tag, size, body) in tag order.
    #[test]
    fn encodes_with_kafkas_schema_layout() {
        let r = TxnRecord {
            transactional_id: "tx".into(),
            value: Some(ongoing()),
        };
        let key = b"\x00\x00\x00\x02tx";
        let value = b"\x00\x01\
            \x00\x00\x00\x00\x00\x00\x00\x07\
            \x00\x02\
            \x00\x00\xea\x60\
            \x01\
            \x02\x02t\x03\x00\x00\x00\x00\x00\x00\x00\x01\x00\
            \x00\x00\x00\x00\x00\x00\x00\x05\
            \x00\x00\x00\x00\x00\x00\x00\x04\
            \x02\
            \x00\x08\x00\x00\x00\x00\x00\x00\x00\x07\
            \x02\x02\x00\x02";
        let (k, v) = r.encode().unwrap();
        assert_eq!(k, key);
        assert_eq!(v.as_deref(), Some(&value[..]));
        assert_eq!(TxnRecord::decode(key, Some(value)), Ok(r));
    }

    /// Version 0, as Kafka wrote it before `transaction.version` 1: no tagged fields, int16
    /// strings and int32 array counts; an Empty value with a null partition list.
    #[test]
    fn decodes_version_0() {
        let value = b"\x00\x00\
            \x00\x00\x00\x00\x00\x00\x00\x07\
            \x00\x02\
            \x00\x00\xea\x60\
            \x01\
            \x00\x00\x00\x01\x00\x01t\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x01\
            \x00\x00\x00\x00\x00\x00\x00\x05\
            \x00\x00\x00\x00\x00\x00\x00\x04";
        let r = TxnRecord::decode(b"\x00\x00\x00\x02tx", Some(value)).unwrap();
        assert_eq!(
            r.value,
            Some(TxnMetadata {
                previous_producer_id: NO_PRODUCER_ID,
                client_txn_version: 0,
                ..ongoing()
            })
        );
        let empty = b"\x00\x00\
            \x00\x00\x00\x00\x00\x00\x00\x07\
            \x00\x00\
            \x00\x00\xea\x60\
            \x00\
            \xff\xff\xff\xff\
            \x00\x00\x00\x00\x00\x00\x00\x05\
            \xff\xff\xff\xff\xff\xff\xff\xff";
        let r = TxnRecord::decode(b"\x00\x00\x00\x02tx", Some(empty)).unwrap();
        let v = r.value.unwrap();
        assert_eq!(
            (v.state, v.producer_epoch.get(), v.start_ms),
            (TxnState::Empty, 0, -1)
        );
        assert!(v.partitions.is_empty());
        // A tombstone.
        assert_eq!(
            TxnRecord::decode(b"\x00\x00\x00\x02tx", None),
            Ok(TxnRecord {
                transactional_id: "tx".into(),
                value: None
            })
        );
    }

    #[test]
    fn empty_state_writes_a_null_partition_list_and_default_tags_are_omitted() {
        let m = TxnMetadata {
            state: TxnState::Empty,
            partitions: BTreeMap::new(),
            previous_producer_id: NO_PRODUCER_ID,
            client_txn_version: 0,
            ..ongoing()
        };
        let (_, v) = TxnRecord {
            transactional_id: "tx".into(),
            value: Some(m),
        }
        .encode()
        .unwrap();
        let v = v.unwrap();
        // version, pid, epoch, timeout, state, null list (0), two timestamps, no tags (0).
        assert_eq!(v.len(), 2 + 8 + 2 + 4 + 1 + 1 + 8 + 8 + 1);
        assert_eq!(v[17], 0);
        assert_eq!(*v.last().unwrap(), 0);
    }

    #[test]
    fn bad_bytes_are_errors() {
        assert_eq!(
            TxnRecord::decode(b"\x00\x01\x00\x01g", None),
            Err(RecordError::UnknownRecordType { version: 1 })
        );
        assert_eq!(
            TxnRecord::decode(b"\x00\x00\x00\x01gx", None),
            Err(RecordError::TrailingKeyBytes { extra: 1 })
        );
        let (k, v) = TxnRecord {
            transactional_id: "tx".into(),
            value: Some(ongoing()),
        }
        .encode()
        .unwrap();
        let mut v = v.unwrap();
        v[16] = 9; // state byte
        assert_eq!(
            TxnRecord::decode(&k, Some(&v)),
            Err(RecordError::UnknownTxnState { id: 9 })
        );
        let long = "x".repeat(40_000);
        assert_eq!(
            TxnRecord {
                transactional_id: long,
                value: None
            }
            .encode(),
            Err(RecordError::FieldTooLong { len: 40_000 })
        );
    }

    pub(crate) fn metadata() -> impl Strategy<Value = TxnMetadata> {
        (
            (any::<i64>(), -1..3i64, -1..3i64, any::<i16>(), any::<i32>()),
            0..8i8,
            proptest::collection::btree_map(
                "[a-z_]{1,8}",
                proptest::collection::btree_set(0..100i32, 0..4),
                0..3,
            ),
            (any::<i64>(), any::<i64>(), 0..3i16),
        )
            .prop_map(
                |((pid, prev, next, epoch, timeout), s, parts, (lu, st, tv))| {
                    let state = TxnState::from_id(s).expect("0..8");
                    TxnMetadata {
                        producer_id: ProducerId::new(pid),
                        previous_producer_id: ProducerId::new(prev),
                        next_producer_id: ProducerId::new(next),
                        producer_epoch: ProducerEpoch::new(epoch),
                        last_producer_epoch: NO_PRODUCER_EPOCH,
                        timeout_ms: timeout,
                        state,
                        partitions: if state == TxnState::Empty {
                            BTreeMap::new()
                        } else {
                            parts
                        },
                        last_update_ms: lu,
                        start_ms: st,
                        client_txn_version: tv,
                    }
                },
            )
    }

    proptest! {
        #[test]
        fn records_round_trip(id in "[a-z]{1,10}", value in proptest::option::of(metadata())) {
            let r = TxnRecord { transactional_id: id, value };
            let (k, v) = r.encode().unwrap();
            prop_assert_eq!(TxnRecord::decode(&k, v.as_deref()), Ok(r));
        }

        #[test]
        fn truncated_values_are_errors(value in metadata()) {
            let r = TxnRecord { transactional_id: "t".into(), value: Some(value) };
            let (k, v) = r.encode().unwrap();
            let v = v.unwrap();
            for cut in 0..v.len() {
                prop_assert!(TxnRecord::decode(&k, Some(&v[..cut])).is_err());
            }
        }

        #[test]
        fn garbage_never_panics(k in proptest::collection::vec(any::<u8>(), 0..40),
                                v in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..80))) {
            let _ = TxnRecord::decode(&k, v.as_deref());
        }
    }
}
