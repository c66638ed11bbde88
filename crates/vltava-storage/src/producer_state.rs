//! Per-partition producer state, as Kafka keeps it: for each producer id its epoch, the
//! sequence ranges and offsets of its last five batches (to answer a retried batch with its
//! original offsets), the coordinator epoch of its last transaction marker and the first
//! offset of its open transaction. The open transactions give the partition's first unstable
//! offset, and so its last stable offset.
//!
//! Pure: no files, no clock. [`ProducerStateManager::stage`] checks a batch against the state
//! without changing it; [`ProducerStateManager::commit`] applies what was staged once the
//! batches are written. The log snapshots this state in Kafka's `.snapshot` layout
//! ([`encode_snapshot`] / [`decode_snapshot`]) and rebuilds the rest by replaying its tail.

use std::collections::{BTreeMap, HashMap, VecDeque};

use vltava_record::BatchHeader;
use vltava_record::TransactionResult;
use vltava_types::{Offset, ProducerId};

/// A batch written without idempotence carries this producer id.
pub const NO_PRODUCER_ID: i64 = -1;
/// No epoch known: a producer id this partition has not seen (or has expired).
pub const NO_PRODUCER_EPOCH: i16 = -1;
pub const NO_SEQUENCE: i32 = -1;
/// How many recent batches per producer are remembered for duplicate detection; the client
/// never has more than this many in flight with idempotence on.
pub const MAX_BATCHES_PER_PRODUCER: usize = 5;

/// One remembered batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchMetadata {
    pub last_seq: i32,
    pub last_offset: i64,
    /// `last_seq - first_seq`, which is also `last_offset - first_offset`.
    pub offset_delta: i32,
    pub timestamp: i64,
}

impl BatchMetadata {
    pub fn first_seq(&self) -> i32 {
        decrement_sequence(self.last_seq, self.offset_delta)
    }

    pub fn first_offset(&self) -> i64 {
        self.last_offset - i64::from(self.offset_delta)
    }
}

/// Sequences wrap from `i32::MAX` to 0.
fn decrement_sequence(seq: i32, by: i32) -> i32 {
    if seq < by {
        i32::MAX - (by - seq) + 1
    } else {
        seq - by
    }
}

fn increment_sequence(seq: i32, by: i32) -> i32 {
    if seq > i32::MAX - by {
        by - (i32::MAX - seq) - 1
    } else {
        seq + by
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    next_seq == last_seq.wrapping_add(1) || (next_seq == 0 && last_seq == i32::MAX)
}

/// What the partition knows of one producer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    pub producer_id: i64,
    pub epoch: i16,
    /// Oldest first, at most [`MAX_BATCHES_PER_PRODUCER`].
    pub batches: VecDeque<BatchMetadata>,
    pub coordinator_epoch: i32,
    /// Max timestamp of its last batch (or marker): what expiry measures.
    pub last_timestamp: i64,
    pub current_txn_first_offset: Option<i64>,
}

impl ProducerEntry {
    fn empty(producer_id: i64) -> Self {
        Self {
            producer_id,
            epoch: NO_PRODUCER_EPOCH,
            batches: VecDeque::new(),
            coordinator_epoch: -1,
            last_timestamp: -1,
            current_txn_first_offset: None,
        }
    }

    pub fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }

    pub fn last_data_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }

    fn find_duplicate(&self, h: &BatchHeader) -> Option<BatchMetadata> {
        if h.producer_epoch != self.epoch {
            return None;
        }
        let last_seq = increment_sequence(h.base_sequence, h.last_offset_delta);
        self.batches
            .iter()
            .find(|b| b.first_seq() == h.base_sequence && b.last_seq == last_seq)
            .copied()
    }

    fn add_batch(&mut self, epoch: i16, b: BatchMetadata) {
        if epoch != self.epoch {
            self.batches.clear();
            self.epoch = epoch;
        }
        if self.batches.len() == MAX_BATCHES_PER_PRODUCER {
            self.batches.pop_front();
        }
        self.batches.push_back(b);
        self.last_timestamp = b.timestamp;
    }
}

/// A transaction that a marker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompletedTxn {
    pub producer_id: i64,
    pub first_offset: i64,
    /// The marker's offset.
    pub last_offset: i64,
    pub aborted: bool,
}

/// An aborted transaction, as the `.txnindex` stores it: read_committed fetches tell
/// consumers which producer's records in which range to drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTxn {
    pub producer_id: ProducerId,
    pub first_offset: Offset,
    pub last_offset: Offset,
    pub last_stable_offset: Offset,
}

/// Why a batch was refused. The broker maps each to Kafka's error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    /// INVALID_PRODUCER_EPOCH
    #[error("epoch {epoch} of producer {producer_id} is older than its current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        epoch: i16,
        current: i16,
    },
    /// OUT_OF_ORDER_SEQUENCE_NUMBER
    #[error("out of order sequence number for producer {producer_id}: got {first_seq}, expected {expected} (epoch {epoch})")]
    OutOfOrderSequence {
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        expected: i32,
    },
    /// INVALID_TXN_STATE
    #[error("producer {producer_id}: {reason}")]
    InvalidTxnState {
        producer_id: i64,
        reason: &'static str,
    },
    /// TRANSACTION_COORDINATOR_FENCED
    #[error("marker for producer {producer_id} has coordinator epoch {coordinator_epoch}, older than {current}")]
    CoordinatorFenced {
        producer_id: i64,
        coordinator_epoch: i32,
        current: i32,
    },
    /// INVALID_RECORD: clients may not write control batches.
    #[error("control batches cannot be produced by clients")]
    ControlBatchFromClient,
    /// INVALID_RECORD: Kafka takes exactly one batch per partition from an idempotent producer.
    #[error("a produce payload with a producer id must hold exactly one record batch")]
    MultipleBatches,
}

/// Who is appending: a client through Produce (every check), a follower copying the leader or
/// recovery replaying the log (no checks: the leader made them), or the transaction
/// coordinator writing a marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Client,
    Replication,
    Coordinator,
}

/// One batch as producer state sees it.
#[derive(Debug, Clone, Copy)]
pub struct BatchInfo<'a> {
    /// The header as stored (offsets assigned).
    pub header: &'a BatchHeader,
    /// For a control batch, the marker it holds (`None` for other control records).
    pub marker: Option<(TransactionResult, i32)>,
}

/// Changes an append makes, held until the batches are written.
#[derive(Debug, Default)]
pub struct Staged {
    entries: HashMap<i64, ProducerEntry>,
    started: Vec<(i64, i64)>,
    completed: Vec<CompletedTxn>,
    end_offset: i64,
}

impl Staged {
    pub fn completed(&self) -> &[CompletedTxn] {
        &self.completed
    }
}

/// The producer state of one partition.
#[derive(Debug, Default, Clone)]
pub struct ProducerStateManager {
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions by first offset: the smallest is the first unstable offset.
    ongoing: BTreeMap<i64, i64>,
    /// The state covers the log below this offset.
    end_offset: i64,
}

impl ProducerStateManager {
    pub fn new(end_offset: i64) -> Self {
        Self {
            end_offset,
            ..Self::default()
        }
    }

    /// The state as a snapshot at `offset` holds it.
    pub fn from_entries(entries: Vec<ProducerEntry>, offset: i64) -> Self {
        let mut m = Self::new(offset);
        for e in entries {
            if let Some(first) = e.current_txn_first_offset {
                m.ongoing.insert(first, e.producer_id);
            }
            m.producers.insert(e.producer_id, e);
        }
        m
    }

    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    pub fn entry(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Every known producer, in producer id order.
    pub fn entries(&self) -> Vec<&ProducerEntry> {
        let mut v: Vec<_> = self.producers.values().collect();
        v.sort_by_key(|e| e.producer_id);
        v
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The first offset of the oldest open transaction: the last stable offset cannot pass it.
    pub fn first_unstable_offset(&self) -> Option<i64> {
        self.ongoing.keys().next().copied()
    }

    /// The last stable offset once `completed` is applied, for its `.txnindex` entry: the
    /// first offset of another open transaction, or just past the marker.
    pub fn last_stable_offset_after(&self, completed: &CompletedTxn) -> i64 {
        self.ongoing
            .iter()
            .find(|(_, pid)| **pid != completed.producer_id)
            .map_or(completed.last_offset + 1, |(first, _)| *first)
    }

    /// The entry `staged` holds for `producer_id`, taken from the committed state first.
    fn staged_entry<'s>(&self, staged: &'s mut Staged, producer_id: i64) -> &'s mut ProducerEntry {
        staged.entries.entry(producer_id).or_insert_with(|| {
            self.producers
                .get(&producer_id)
                .cloned()
                .unwrap_or_else(|| ProducerEntry::empty(producer_id))
        })
    }

    /// A retried batch this producer already wrote: answered with its original offsets.
    /// Only a client's batch with a producer id, in the current epoch, can be one.
    pub fn find_duplicate(&self, h: &BatchHeader) -> Option<BatchMetadata> {
        if h.producer_id == NO_PRODUCER_ID || h.is_control() {
            return None;
        }
        self.producers.get(&h.producer_id)?.find_duplicate(h)
    }

    /// Checks one batch (in log order) and stages its effect. Batches without a producer id
    /// only move the end offset.
    pub fn stage(
        &self,
        staged: &mut Staged,
        batch: BatchInfo<'_>,
        origin: Origin,
    ) -> Result<(), ProducerError> {
        let h = batch.header;
        staged.end_offset = h.next_offset();
        if h.producer_id == NO_PRODUCER_ID {
            if h.is_control() && origin == Origin::Client {
                return Err(ProducerError::ControlBatchFromClient);
            }
            return Ok(());
        }
        let pid = h.producer_id;
        let entry = self.staged_entry(staged, pid);
        if h.producer_epoch < entry.epoch && origin != Origin::Replication {
            return Err(ProducerError::InvalidProducerEpoch {
                producer_id: pid,
                epoch: h.producer_epoch,
                current: entry.epoch,
            });
        }
        if h.is_control() {
            if origin == Origin::Client {
                return Err(ProducerError::ControlBatchFromClient);
            }
            let Some((result, coordinator_epoch)) = batch.marker else {
                return Ok(());
            };
            if origin == Origin::Coordinator && coordinator_epoch < entry.coordinator_epoch {
                return Err(ProducerError::CoordinatorFenced {
                    producer_id: pid,
                    coordinator_epoch,
                    current: entry.coordinator_epoch,
                });
            }
            if h.producer_epoch != entry.epoch {
                entry.batches.clear();
                entry.epoch = h.producer_epoch;
            }
            entry.coordinator_epoch = coordinator_epoch;
            entry.last_timestamp = h.max_timestamp;
            let first_offset = entry
                .current_txn_first_offset
                .take()
                .unwrap_or(h.base_offset);
            staged.completed.push(CompletedTxn {
                producer_id: pid,
                first_offset,
                last_offset: h.base_offset,
                aborted: result == TransactionResult::Abort,
            });
            return Ok(());
        }
        if origin == Origin::Client {
            check_sequence(entry, h)?;
            if !h.is_transactional() && entry.current_txn_first_offset.is_some() {
                return Err(ProducerError::InvalidTxnState {
                    producer_id: pid,
                    reason: "a non-transactional write arrived while its transaction is open",
                });
            }
        }
        entry.add_batch(
            h.producer_epoch,
            BatchMetadata {
                last_seq: increment_sequence(h.base_sequence, h.last_offset_delta),
                last_offset: h.last_offset(),
                offset_delta: h.last_offset_delta,
                timestamp: h.max_timestamp,
            },
        );
        if h.is_transactional() && entry.current_txn_first_offset.is_none() {
            entry.current_txn_first_offset = Some(h.base_offset);
            staged.started.push((h.base_offset, pid));
        }
        Ok(())
    }

    /// Applies what was staged, once its batches are in the log.
    pub fn commit(&mut self, staged: Staged) -> Vec<CompletedTxn> {
        for c in &staged.completed {
            self.ongoing.remove(&c.first_offset);
        }
        for (first, pid) in staged.started {
            self.ongoing.insert(first, pid);
        }
        // A transaction started and ended in one append is no longer open.
        for c in &staged.completed {
            if self.ongoing.get(&c.first_offset) == Some(&c.producer_id) {
                self.ongoing.remove(&c.first_offset);
            }
        }
        self.producers.extend(staged.entries);
        self.end_offset = self.end_offset.max(staged.end_offset);
        staged.completed
    }

    /// Drops producers idle for `expiration_ms` (`producer.id.expiration.ms`) that have no
    /// open transaction. Returns how many went.
    pub fn remove_expired(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        self.producers.retain(|_, e| {
            e.current_txn_first_offset.is_some() || now_ms - e.last_timestamp < expiration_ms
        });
        before - self.producers.len()
    }
}

/// Kafka's checkSequence: the first batch of a new epoch starts at 0 (unless the producer is
/// unknown here), later ones follow on; an unknown producer may start anywhere.
fn check_sequence(entry: &ProducerEntry, h: &BatchHeader) -> Result<(), ProducerError> {
    let first_seq = h.base_sequence;
    if h.producer_epoch != entry.epoch {
        if first_seq != 0 && entry.epoch != NO_PRODUCER_EPOCH {
            return Err(ProducerError::OutOfOrderSequence {
                producer_id: h.producer_id,
                epoch: h.producer_epoch,
                first_seq,
                expected: 0,
            });
        }
        return Ok(());
    }
    let last = entry.last_seq();
    if entry.epoch == NO_PRODUCER_EPOCH || last == NO_SEQUENCE || in_sequence(last, first_seq) {
        return Ok(());
    }
    Err(ProducerError::OutOfOrderSequence {
        producer_id: h.producer_id,
        epoch: h.producer_epoch,
        first_seq,
        expected: last.wrapping_add(1).max(0),
    })
}

const SNAPSHOT_VERSION: i16 = 1;
/// Version (2) and CRC (4); the CRC covers everything after them.
const SNAPSHOT_HEADER_LEN: usize = 6;
const SNAPSHOT_ENTRY_LEN: usize = 8 + 2 + 4 + 8 + 4 + 8 + 4 + 8;

/// Why a snapshot file could not be read; the log then falls back to an older one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("snapshot is {0} bytes, too short")]
    Short(usize),
    #[error("unknown snapshot version {0}")]
    Version(i16),
    #[error("snapshot CRC {stored:#x} does not match {computed:#x}")]
    Crc { stored: u32, computed: u32 },
    #[error("snapshot says {count} entries but holds {len} bytes")]
    Length { count: i32, len: usize },
}

/// Kafka's producer snapshot (version 1): version, CRC-32C of the rest, then the entries
/// (producer id, epoch, last sequence, last offset, offset delta, timestamp, coordinator
/// epoch, open transaction's first offset or -1). Only each producer's last batch is kept.
pub fn encode_snapshot(state: &ProducerStateManager) -> Vec<u8> {
    let entries = state.entries();
    let mut b = Vec::with_capacity(SNAPSHOT_HEADER_LEN + 4 + entries.len() * SNAPSHOT_ENTRY_LEN);
    b.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
    b.extend_from_slice(&[0; 4]);
    b.extend_from_slice(&(entries.len() as i32).to_be_bytes());
    for e in entries {
        let last = e.batches.back();
        b.extend_from_slice(&e.producer_id.to_be_bytes());
        b.extend_from_slice(&e.epoch.to_be_bytes());
        b.extend_from_slice(&last.map_or(NO_SEQUENCE, |l| l.last_seq).to_be_bytes());
        b.extend_from_slice(&last.map_or(-1, |l| l.last_offset).to_be_bytes());
        b.extend_from_slice(&last.map_or(0, |l| l.offset_delta).to_be_bytes());
        b.extend_from_slice(&e.last_timestamp.to_be_bytes());
        b.extend_from_slice(&e.coordinator_epoch.to_be_bytes());
        b.extend_from_slice(&e.current_txn_first_offset.unwrap_or(-1).to_be_bytes());
    }
    let crc = crc32c::crc32c(&b[SNAPSHOT_HEADER_LEN..]);
    b[2..6].copy_from_slice(&crc.to_be_bytes());
    b
}

/// Reads a snapshot written by [`encode_snapshot`] (or by Kafka).
pub fn decode_snapshot(b: &[u8]) -> Result<Vec<ProducerEntry>, SnapshotError> {
    if b.len() < SNAPSHOT_HEADER_LEN + 4 {
        return Err(SnapshotError::Short(b.len()));
    }
    let version = i16::from_be_bytes([b[0], b[1]]);
    if version != SNAPSHOT_VERSION {
        return Err(SnapshotError::Version(version));
    }
    let stored = u32::from_be_bytes(b[2..6].try_into().expect("4 bytes"));
    let computed = crc32c::crc32c(&b[SNAPSHOT_HEADER_LEN..]);
    if stored != computed {
        return Err(SnapshotError::Crc { stored, computed });
    }
    let count = i32::from_be_bytes(b[6..10].try_into().expect("4 bytes"));
    let body = &b[10..];
    if count < 0 || body.len() != count as usize * SNAPSHOT_ENTRY_LEN {
        return Err(SnapshotError::Length {
            count,
            len: body.len(),
        });
    }
    Ok(body
        .chunks_exact(SNAPSHOT_ENTRY_LEN)
        .map(|c| {
            let i64_at = |at: usize| i64::from_be_bytes(c[at..at + 8].try_into().expect("8"));
            let i32_at = |at: usize| i32::from_be_bytes(c[at..at + 4].try_into().expect("4"));
            let producer_id = i64_at(0);
            let epoch = i16::from_be_bytes([c[8], c[9]]);
            let last_seq = i32_at(10);
            let last_offset = i64_at(14);
            let offset_delta = i32_at(22);
            let timestamp = i64_at(26);
            let coordinator_epoch = i32_at(34);
            let txn_first = i64_at(38);
            let mut batches = VecDeque::new();
            if last_offset >= 0 {
                batches.push_back(BatchMetadata {
                    last_seq,
                    last_offset,
                    offset_delta,
                    timestamp,
                });
            }
            ProducerEntry {
                producer_id,
                epoch,
                batches,
                coordinator_epoch,
                last_timestamp: timestamp,
                current_txn_first_offset: (txn_first >= 0).then_some(txn_first),
            }
        })
        .collect())
}

/// One `.txnindex` entry: version 0, producer id, first offset, last offset, last stable
/// offset (34 bytes, Kafka's layout).
pub const ABORTED_TXN_LEN: usize = 2 + 8 + 8 + 8 + 8;

pub fn encode_aborted(txns: &[AbortedTxn]) -> Vec<u8> {
    let mut b = Vec::with_capacity(txns.len() * ABORTED_TXN_LEN);
    for t in txns {
        b.extend_from_slice(&0i16.to_be_bytes());
        b.extend_from_slice(&t.producer_id.get().to_be_bytes());
        b.extend_from_slice(&t.first_offset.get().to_be_bytes());
        b.extend_from_slice(&t.last_offset.get().to_be_bytes());
        b.extend_from_slice(&t.last_stable_offset.get().to_be_bytes());
    }
    b
}

/// Reads a `.txnindex`; a torn last entry is ignored.
pub fn decode_aborted(b: &[u8]) -> Vec<AbortedTxn> {
    b.chunks_exact(ABORTED_TXN_LEN)
        .map(|c| {
            let i64_at = |at: usize| i64::from_be_bytes(c[at..at + 8].try_into().expect("8"));
            AbortedTxn {
                producer_id: ProducerId::new(i64_at(2)),
                first_offset: Offset::new(i64_at(10)),
                last_offset: Offset::new(i64_at(18)),
                last_stable_offset: Offset::new(i64_at(26)),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, base: i64, count: i32, txn: bool) -> BatchHeader {
        BatchHeader {
            base_offset: base,
            batch_length: 0,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: if txn { 0x10 } else { 0 },
            last_offset_delta: count - 1,
            base_timestamp: 1000,
            max_timestamp: 1000 + base,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            record_count: count,
        }
    }

    fn marker(pid: i64, epoch: i16, offset: i64) -> BatchHeader {
        let mut h = header(pid, epoch, -1, offset, 1, true);
        h.attributes = 0x30;
        h
    }

    fn append(m: &mut ProducerStateManager, h: BatchHeader) -> Result<(), ProducerError> {
        let mut s = Staged::default();
        m.stage(
            &mut s,
            BatchInfo {
                header: &h,
                marker: None,
            },
            Origin::Client,
        )?;
        m.commit(s);
        Ok(())
    }

    fn end_txn(
        m: &mut ProducerStateManager,
        h: BatchHeader,
        result: TransactionResult,
        coordinator_epoch: i32,
    ) -> Result<Vec<CompletedTxn>, ProducerError> {
        let mut s = Staged::default();
        m.stage(
            &mut s,
            BatchInfo {
                header: &h,
                marker: Some((result, coordinator_epoch)),
            },
            Origin::Coordinator,
        )?;
        Ok(m.commit(s))
    }

    #[test]
    fn sequences_follow_on_and_duplicates_are_found() {
        let mut m = ProducerStateManager::new(0);
        append(&mut m, header(7, 0, 0, 0, 3, false)).unwrap();
        append(&mut m, header(7, 0, 3, 3, 2, false)).unwrap();
        let dup = m.find_duplicate(&header(7, 0, 0, 99, 3, false)).unwrap();
        assert_eq!((dup.first_offset(), dup.last_offset), (0, 2));
        let dup = m.find_duplicate(&header(7, 0, 3, 99, 2, false)).unwrap();
        assert_eq!((dup.first_offset(), dup.last_offset), (3, 4));
        // Same start, different length: not a duplicate, and out of order.
        assert!(m.find_duplicate(&header(7, 0, 3, 99, 1, false)).is_none());
        assert!(matches!(
            append(&mut m, header(7, 0, 3, 5, 1, false)),
            Err(ProducerError::OutOfOrderSequence { expected: 5, .. })
        ));
        // A gap.
        assert!(matches!(
            append(&mut m, header(7, 0, 9, 5, 1, false)),
            Err(ProducerError::OutOfOrderSequence { .. })
        ));
        append(&mut m, header(7, 0, 5, 5, 1, false)).unwrap();
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut m = ProducerStateManager::new(0);
        for i in 0..7 {
            append(&mut m, header(1, 0, i, i64::from(i), 1, false)).unwrap();
        }
        assert!(m.find_duplicate(&header(1, 0, 1, 0, 1, false)).is_none());
        assert!(m.find_duplicate(&header(1, 0, 2, 0, 1, false)).is_some());
        assert_eq!(m.entry(1).unwrap().batches.len(), MAX_BATCHES_PER_PRODUCER);
    }

    #[test]
    fn epochs_fence_and_restart_sequences() {
        let mut m = ProducerStateManager::new(0);
        append(&mut m, header(1, 3, 0, 0, 1, false)).unwrap();
        assert!(matches!(
            append(&mut m, header(1, 2, 1, 1, 1, false)),
            Err(ProducerError::InvalidProducerEpoch { current: 3, .. })
        ));
        // A new epoch must start at sequence 0.
        assert!(matches!(
            append(&mut m, header(1, 4, 5, 1, 1, false)),
            Err(ProducerError::OutOfOrderSequence { expected: 0, .. })
        ));
        append(&mut m, header(1, 4, 0, 1, 1, false)).unwrap();
        // Duplicates are per epoch.
        assert!(m.find_duplicate(&header(1, 3, 0, 0, 1, false)).is_none());
    }

    #[test]
    fn an_unknown_producer_may_start_at_any_sequence() {
        let mut m = ProducerStateManager::new(0);
        append(&mut m, header(9, 0, 42, 0, 1, false)).unwrap();
        append(&mut m, header(9, 0, 43, 1, 1, false)).unwrap();
    }

    #[test]
    fn sequences_wrap() {
        let mut m = ProducerStateManager::new(0);
        append(&mut m, header(1, 0, i32::MAX - 1, 0, 2, false)).unwrap();
        assert_eq!(m.entry(1).unwrap().last_seq(), i32::MAX);
        append(&mut m, header(1, 0, 0, 2, 1, false)).unwrap();
        let dup = m.find_duplicate(&header(1, 0, i32::MAX - 1, 9, 2, false));
        assert_eq!(dup.map(|d| d.first_seq()), Some(i32::MAX - 1));
    }

    #[test]
    fn transactions_hold_the_first_unstable_offset() {
        let mut m = ProducerStateManager::new(0);
        append(&mut m, header(1, 0, 0, 10, 2, true)).unwrap();
        append(&mut m, header(2, 0, 0, 12, 1, true)).unwrap();
        append(&mut m, header(1, 0, 2, 13, 1, true)).unwrap();
        assert_eq!(m.first_unstable_offset(), Some(10));
        assert!(matches!(
            append(&mut m, header(1, 0, 3, 14, 1, false)),
            Err(ProducerError::InvalidTxnState { .. })
        ));
        let done = end_txn(&mut m, marker(1, 0, 14), TransactionResult::Abort, 5).unwrap();
        assert_eq!(
            done,
            vec![CompletedTxn {
                producer_id: 1,
                first_offset: 10,
                last_offset: 14,
                aborted: true
            }]
        );
        assert_eq!(m.last_stable_offset_after(&done[0]), 12);
        assert_eq!(m.first_unstable_offset(), Some(12));
        // A marker from an older coordinator is fenced.
        assert!(matches!(
            end_txn(&mut m, marker(1, 0, 15), TransactionResult::Commit, 4),
            Err(ProducerError::CoordinatorFenced { .. })
        ));
        end_txn(&mut m, marker(2, 0, 15), TransactionResult::Commit, 5).unwrap();
        assert_eq!(m.first_unstable_offset(), None);
    }

    #[test]
    fn clients_cannot_write_markers() {
        let m = ProducerStateManager::new(0);
        let mut s = Staged::default();
        let h = marker(1, 0, 0);
        let r = m.stage(
            &mut s,
            BatchInfo {
                header: &h,
                marker: Some((TransactionResult::Commit, 0)),
            },
            Origin::Client,
        );
        assert_eq!(r, Err(ProducerError::ControlBatchFromClient));
    }

    #[test]
    fn expiry_keeps_open_transactions() {
        let mut m = ProducerStateManager::new(0);
        append(&mut m, header(1, 0, 0, 0, 1, false)).unwrap();
        append(&mut m, header(2, 0, 0, 1, 1, true)).unwrap();
        assert_eq!(m.remove_expired(1_000_000, 1000), 1);
        assert!(m.entry(1).is_none());
        assert!(m.entry(2).is_some());
    }

    #[test]
    fn snapshot_round_trips_in_kafkas_layout() {
        let mut m = ProducerStateManager::new(0);
        append(&mut m, header(5, 2, 0, 0, 3, false)).unwrap();
        append(&mut m, header(6, 0, 0, 3, 1, true)).unwrap();
        let bytes = encode_snapshot(&m);
        assert_eq!(&bytes[..2], &[0, 1]);
        assert_eq!(bytes.len(), 10 + 2 * SNAPSHOT_ENTRY_LEN);
        // Entry 1 begins after version, crc and count: producer id 5, epoch 2, last seq 2,
        // last offset 2, offset delta 2, timestamp 1000, coordinator epoch -1, no txn.
        let e = &bytes[10..10 + SNAPSHOT_ENTRY_LEN];
        assert_eq!(&e[..8], &5i64.to_be_bytes());
        assert_eq!(&e[8..10], &2i16.to_be_bytes());
        assert_eq!(&e[10..14], &2i32.to_be_bytes());
        assert_eq!(&e[14..22], &2i64.to_be_bytes());
        assert_eq!(&e[22..26], &2i32.to_be_bytes());
        assert_eq!(&e[26..34], &1000i64.to_be_bytes());
        assert_eq!(&e[34..38], &(-1i32).to_be_bytes());
        assert_eq!(&e[38..46], &(-1i64).to_be_bytes());
        let entries = decode_snapshot(&bytes).unwrap();
        let back = ProducerStateManager::from_entries(entries, 4);
        assert_eq!(back.first_unstable_offset(), Some(3));
        assert!(back.find_duplicate(&header(5, 2, 0, 9, 3, false)).is_some());
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(matches!(
            decode_snapshot(&bad),
            Err(SnapshotError::Crc { .. })
        ));
        assert!(decode_snapshot(&bytes[..5]).is_err());
    }

    #[test]
    fn txn_index_round_trips() {
        let t = AbortedTxn {
            producer_id: ProducerId::new(3),
            first_offset: Offset::new(10),
            last_offset: Offset::new(20),
            last_stable_offset: Offset::new(21),
        };
        let mut b = encode_aborted(&[t, t]);
        assert_eq!(b.len(), 2 * ABORTED_TXN_LEN);
        b.pop();
        assert_eq!(decode_aborted(&b), vec![t]);
    }
}
