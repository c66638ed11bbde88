//! Control batches: transaction markers, laid out as Kafka's `ControlRecordType` and
//! `EndTransactionMarker` lay them out, so consumers in `read_committed` can tell a committed
//! transaction from an aborted one. A marker batch holds one control record, is transactional,
//! carries the control attribute bit and is never compressed.
//!
//! Key: `version: int16` (0), `type: int16` (ABORT = 0, COMMIT = 1). Value: `version: int16`
//! (0), `coordinatorEpoch: int32`. Like Kafka, a reader accepts newer versions and reads the
//! fields it knows, and refuses negative versions and short keys or values.

use thiserror::Error;

use crate::reader::read_records;
use crate::writer::{BatchAttributes, BatchBuilder};
use crate::{Compression, RecordError};

/// Kafka's `ControlRecordType.CURRENT_CONTROL_RECORD_KEY_VERSION`.
const CONTROL_KEY_VERSION: i16 = 0;
/// Kafka's `EndTransactionMarker.CURRENT_END_TXN_MARKER_VERSION`.
const END_TXN_MARKER_VERSION: i16 = 0;
const CONTROL_KEY_LEN: usize = 4;
const END_TXN_MARKER_LEN: usize = 6;
/// A marker batch is one small record; this cap only matters for a hostile compressed one.
const MARKER_READ_LIMIT: u64 = 64 * 1024;

/// What can be wrong with a control batch.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ControlError {
    #[error("the batch does not have the control attribute")]
    NotControl,
    #[error("a marker batch holds one record, not {count}")]
    RecordCount { count: i32 },
    #[error("control record key of {len} bytes, need {CONTROL_KEY_LEN}")]
    ShortKey { len: usize },
    #[error("negative control record key version {version}")]
    NegativeKeyVersion { version: i16 },
    #[error("control record type {record_type} is not a transaction marker")]
    NotAMarker { record_type: i16 },
    #[error("transaction marker value of {len} bytes, need {END_TXN_MARKER_LEN}")]
    ShortValue { len: usize },
    #[error("negative transaction marker version {version}")]
    NegativeValueVersion { version: i16 },
}

/// Kafka's control record types; only the transaction markers are written here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlRecordType {
    Abort,
    Commit,
    /// KRaft's types (LEADER_CHANGE, SNAPSHOT_HEADER, ...) and any later ones.
    Other(i16),
}

impl ControlRecordType {
    pub fn id(self) -> i16 {
        match self {
            ControlRecordType::Abort => 0,
            ControlRecordType::Commit => 1,
            ControlRecordType::Other(id) => id,
        }
    }

    pub fn from_id(id: i16) -> Self {
        match id {
            0 => ControlRecordType::Abort,
            1 => ControlRecordType::Commit,
            id => ControlRecordType::Other(id),
        }
    }
}

/// The key of a control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlKey {
    pub version: i16,
    pub record_type: ControlRecordType,
}

impl ControlKey {
    pub fn new(record_type: ControlRecordType) -> Self {
        Self {
            version: CONTROL_KEY_VERSION,
            record_type,
        }
    }

    pub fn encode(&self) -> [u8; CONTROL_KEY_LEN] {
        let mut b = [0; CONTROL_KEY_LEN];
        b[..2].copy_from_slice(&self.version.to_be_bytes());
        b[2..].copy_from_slice(&self.record_type.id().to_be_bytes());
        b
    }

    /// Parses a control record key; a null key reads as empty, which is too short.
    pub fn parse(key: Option<&[u8]>) -> Result<Self, ControlError> {
        let key = key.unwrap_or_default();
        if key.len() < CONTROL_KEY_LEN {
            return Err(ControlError::ShortKey { len: key.len() });
        }
        let version = i16::from_be_bytes([key[0], key[1]]);
        if version < 0 {
            return Err(ControlError::NegativeKeyVersion { version });
        }
        Ok(Self {
            version,
            record_type: ControlRecordType::from_id(i16::from_be_bytes([key[2], key[3]])),
        })
    }
}

/// How a transaction ended (Kafka's `TransactionResult`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransactionResult {
    Abort,
    Commit,
}

/// A transaction marker: written by the transaction coordinator's EndTxn to each partition
/// the transaction touched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndTxnMarker {
    pub result: TransactionResult,
    pub coordinator_epoch: i32,
}

/// The header fields of a marker batch; the rest is fixed by what a marker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerBatch {
    pub base_offset: i64,
    pub partition_leader_epoch: i32,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub timestamp: i64,
}

/// Writes a marker batch: one control record, transactional, uncompressed, no sequence.
pub fn write_end_txn_marker(batch: &MarkerBatch, marker: EndTxnMarker) -> Vec<u8> {
    let record_type = match marker.result {
        TransactionResult::Abort => ControlRecordType::Abort,
        TransactionResult::Commit => ControlRecordType::Commit,
    };
    let key = ControlKey::new(record_type).encode();
    let mut value = [0u8; END_TXN_MARKER_LEN];
    value[..2].copy_from_slice(&END_TXN_MARKER_VERSION.to_be_bytes());
    value[2..].copy_from_slice(&marker.coordinator_epoch.to_be_bytes());
    let mut b = BatchBuilder::new(BatchAttributes {
        base_offset: batch.base_offset,
        partition_leader_epoch: batch.partition_leader_epoch,
        producer_id: batch.producer_id,
        producer_epoch: batch.producer_epoch,
        base_sequence: -1,
        transactional: true,
        control: true,
        log_append_time_ms: None,
        compression: Compression::None,
    });
    b.push(batch.timestamp, Some(&key), Some(&value), &[]);
    b.finish()
}

/// Reads the marker in a control batch. Fails on a batch without the control bit, with other
/// than one record, or whose record is another control type.
pub fn read_end_txn_marker(batch: &[u8]) -> Result<EndTxnMarker, RecordError> {
    let mut records = read_records(batch, MARKER_READ_LIMIT)?;
    let h = *records.header();
    if !h.is_control() {
        return Err(ControlError::NotControl.into());
    }
    if h.record_count != 1 {
        return Err(ControlError::RecordCount {
            count: h.record_count,
        }
        .into());
    }
    let record = records
        .next()
        .ok_or(ControlError::RecordCount { count: 0 })??;
    if let Some(r) = records.next() {
        r?; // trailing bytes
    }
    let key = ControlKey::parse(record.key.as_deref())?;
    let result = match key.record_type {
        ControlRecordType::Abort => TransactionResult::Abort,
        ControlRecordType::Commit => TransactionResult::Commit,
        ControlRecordType::Other(record_type) => {
            return Err(ControlError::NotAMarker { record_type }.into())
        }
    };
    let value = record.value.as_deref().unwrap_or_default();
    if value.len() < END_TXN_MARKER_LEN {
        return Err(ControlError::ShortValue { len: value.len() }.into());
    }
    let version = i16::from_be_bytes([value[0], value[1]]);
    if version < 0 {
        return Err(ControlError::NegativeValueVersion { version }.into());
    }
    Ok(EndTxnMarker {
        result,
        coordinator_epoch: i32::from_be_bytes(value[2..6].try_into().expect("6 bytes checked")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{check_compressed, validate, BatchHeader};

    fn marker_batch() -> MarkerBatch {
        MarkerBatch {
            base_offset: 17,
            partition_leader_epoch: 4,
            producer_id: 9000,
            producer_epoch: 2,
            timestamp: 1_700_000_000_000,
        }
    }

    #[test]
    fn markers_round_trip_as_kafka_lays_them_out() {
        for result in [TransactionResult::Commit, TransactionResult::Abort] {
            let marker = EndTxnMarker {
                result,
                coordinator_epoch: 77,
            };
            let b = write_end_txn_marker(&marker_batch(), marker);
            validate(&b, usize::MAX).unwrap();
            check_compressed(&b, 1 << 20).unwrap();
            let h = BatchHeader::parse(&b).unwrap();
            assert!(h.is_control() && h.is_transactional() && !h.is_log_append_time());
            assert_eq!(h.compression(), Compression::None);
            assert_eq!(
                (h.base_offset, h.partition_leader_epoch, h.producer_id),
                (17, 4, 9000)
            );
            assert_eq!(
                (h.producer_epoch, h.base_sequence, h.record_count),
                (2, -1, 1)
            );
            assert_eq!(h.base_timestamp, 1_700_000_000_000);
            assert_eq!(read_end_txn_marker(&b), Ok(marker));

            // The record as Kafka writes it: key version 0 and type, value version 0 and epoch.
            let r = read_records(&b, 1 << 20).unwrap().next().unwrap().unwrap();
            let type_id = if result == TransactionResult::Commit {
                1
            } else {
                0
            };
            assert_eq!(r.key.as_deref(), Some(&[0, 0, 0, type_id][..]));
            assert_eq!(r.value.as_deref(), Some(&[0, 0, 0, 0, 0, 77][..]));
            assert!(r.headers.is_empty());
        }
    }

    /// A marker batch with the given key and value, for the refusals below.
    fn control_batch(key: Option<&[u8]>, value: Option<&[u8]>, control: bool) -> Vec<u8> {
        let mut b = BatchBuilder::new(BatchAttributes {
            control,
            transactional: true,
            ..BatchAttributes::default()
        });
        b.push(0, key, value, &[]);
        b.finish()
    }

    #[test]
    fn newer_versions_read_and_bad_markers_are_named() {
        // A later version may append fields: what we know is still read.
        let later = control_batch(Some(&[0, 1, 0, 1, 9]), Some(&[0, 1, 0, 0, 0, 5, 1]), true);
        assert_eq!(
            read_end_txn_marker(&later),
            Ok(EndTxnMarker {
                result: TransactionResult::Commit,
                coordinator_epoch: 5
            })
        );
        let value = [0, 0, 0, 0, 0, 1];
        let cases: [(Vec<u8>, ControlError); 7] = [
            (
                control_batch(Some(&[0, 0, 0, 1]), Some(&value), false),
                ControlError::NotControl,
            ),
            (
                control_batch(Some(&[0, 0, 0]), Some(&value), true),
                ControlError::ShortKey { len: 3 },
            ),
            (
                control_batch(None, Some(&value), true),
                ControlError::ShortKey { len: 0 },
            ),
            (
                control_batch(Some(&[0xff, 0xff, 0, 1]), Some(&value), true),
                ControlError::NegativeKeyVersion { version: -1 },
            ),
            (
                control_batch(Some(&[0, 0, 0, 2]), Some(&value), true),
                ControlError::NotAMarker { record_type: 2 },
            ),
            (
                control_batch(Some(&[0, 0, 0, 0]), Some(&value[..5]), true),
                ControlError::ShortValue { len: 5 },
            ),
            (
                control_batch(Some(&[0, 0, 0, 0]), Some(&[0x80, 0, 0, 0, 0, 0]), true),
                ControlError::NegativeValueVersion { version: -32768 },
            ),
        ];
        for (batch, want) in cases {
            assert_eq!(read_end_txn_marker(&batch), Err(want.into()));
        }
        let mut two = BatchBuilder::new(BatchAttributes {
            control: true,
            ..BatchAttributes::default()
        });
        two.push(0, Some(&[0, 0, 0, 1]), Some(&value), &[]);
        two.push(0, Some(&[0, 0, 0, 1]), Some(&value), &[]);
        assert_eq!(
            read_end_txn_marker(&two.finish()),
            Err(ControlError::RecordCount { count: 2 }.into())
        );
    }

    #[test]
    fn control_key_types() {
        for id in [-1i16, 0, 1, 2, 6, i16::MAX] {
            let k = ControlKey {
                version: 0,
                record_type: ControlRecordType::from_id(id),
            };
            assert_eq!(k.record_type.id(), id);
            assert_eq!(ControlKey::parse(Some(&k.encode())), Ok(k));
        }
    }
}
