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
