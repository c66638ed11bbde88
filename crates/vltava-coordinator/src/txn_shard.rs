//! The transaction coordinator's shard: the transactional ids of one `__transaction_state`
//! partition, and every transaction operation as *records to write + reply*, following
//! Kafka's `TransactionCoordinator` and `TransactionMetadata` rules.
//!
//! Every operation writes a whole TransactionLogValue, and replay stores it as the id's
//! state, so the live state is always what a reload would build (except the last producer
//! epoch, which Kafka does not store either). Kafka's *pending* transitions are not needed:
//! operations on a shard run one at a time under its lock, and their records are replayed
//! as soon as they are appended. An operation that ends a transaction (EndTxn, a fenced or
//! timed-out transaction) returns [`TxnMarkers`]: the caller writes those markers, then calls
//! [`TxnShard::complete_txn`].
//!
//! The shard never allocates producer ids: an operation that needs a fresh one answers
//! [`InitOutcome::NeedsProducerId`] / [`EndOutcome::NeedsProducerId`] when called without,
//! and the caller allocates one and calls again (the state may have moved meanwhile, so the
//! second call decides afresh).

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::records::RecordError;
use crate::shard::{CoordinatorResult, CoordinatorShard};
use crate::txn_records::{TxnMetadata, TxnRecord, TxnState, NO_PRODUCER_EPOCH, NO_PRODUCER_ID};
use vltava_types::{ProducerEpoch, ProducerId};

/// Transaction failures, each one of Kafka's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum TxnError {
    #[error("the request is invalid")]
    InvalidRequest,
    #[error("the producer id is not the transactional id's")]
    InvalidProducerIdMapping,
    #[error("the producer epoch is not current")]
    InvalidProducerEpoch,
    #[error("a newer producer with the same transactional id fenced this one")]
    ProducerFenced,
    #[error("another transaction operation is in progress")]
    ConcurrentTransactions,
    #[error("the transaction is not in a state that allows this")]
    InvalidTxnState,
    #[error("the transactional id is not known")]
    TransactionalIdNotFound,
    #[error("the transaction timeout is larger than transaction.max.timeout.ms")]
    InvalidTransactionTimeout,
    #[error("the partition is not in the transaction; the transaction must abort")]
    TransactionAbortable,
}

impl TxnError {
    /// Kafka's error code.
    pub fn code(self) -> i16 {
        match self {
            TxnError::InvalidRequest => 42,
            TxnError::InvalidProducerEpoch => 47,
            TxnError::InvalidTxnState => 48,
            TxnError::InvalidProducerIdMapping => 49,
            TxnError::InvalidTransactionTimeout => 50,
            TxnError::ConcurrentTransactions => 51,
            TxnError::ProducerFenced => 90,
            TxnError::TransactionalIdNotFound => 105,
            TxnError::TransactionAbortable => 120,
        }
    }

    /// Clients older than PRODUCER_FENCED know it as INVALID_PRODUCER_EPOCH; Kafka answers
    /// that to them (InitProducerId < v4, AddPartitionsToTxn, AddOffsetsToTxn and EndTxn
    /// < v2, TxnOffsetCommit < v3).
    pub fn for_old_client(self, old: bool) -> Self {
        match self {
            TxnError::ProducerFenced if old => TxnError::InvalidProducerEpoch,
            e => e,
        }
    }
}

/// Kafka's `isEpochExhausted`: the coordinator keeps the last epochs for itself, so it can
/// always fence a producer.
pub fn epoch_exhausted(epoch: ProducerEpoch) -> bool {
    epoch.get() >= i16::MAX - 1
}

/// Broker settings the shard needs.
#[derive(Debug, Clone, Copy)]
pub struct TxnConfig {
    /// `transaction.max.timeout.ms`.
    pub max_timeout_ms: i32,
    /// `transactional.id.expiration.ms`.
    pub id_expiration_ms: i64,
    /// The cluster's `transaction.version`, used for aborts the coordinator starts itself
    /// (fencing, timeouts), as Kafka does.
    pub transaction_version: i16,
}

impl Default for TxnConfig {
    fn default() -> Self {
        Self {
            max_timeout_ms: 900_000,
            id_expiration_ms: 604_800_000,
            transaction_version: 2,
        }
    }
}

/// Markers the caller must write to end a transaction, before calling
/// [`TxnShard::complete_txn`] with the same producer id and epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnMarkers {
    pub transactional_id: String,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub commit: bool,
    pub partitions: Vec<(String, i32)>,
}

/// What InitProducerId with a transactional id leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitOutcome {
    /// Answer the client with these once the records are durable.
    Ready {
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
    },
    /// An ongoing transaction was fenced and is aborting: write the markers (then complete
    /// it); the client gets CONCURRENT_TRANSACTIONS and retries.
    Fenced(TxnMarkers),
    /// Call again with a freshly allocated producer id.
    NeedsProducerId,
}

/// What EndTxn leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EndOutcome {
    /// A retry of an end already complete: answer at once with these.
    Done {
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
    },
    /// The transaction is prepared: answer once durable with the producer id and epoch, then
    /// write the markers and complete it.
    Prepared {
        markers: TxnMarkers,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
    },
    /// Call again with a freshly allocated producer id.
    NeedsProducerId,
}

/// One partition's answer to an AddPartitionsToTxn verification (KIP-890).
pub type Verified = Vec<((String, i32), Result<(), TxnError>)>;

/// DescribeTransactions' view of one transactional id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnDescription {
    pub state: TxnState,
    pub producer_id: ProducerId,
    pub producer_epoch: ProducerEpoch,
    pub timeout_ms: i32,
    pub start_ms: i64,
    pub partitions: Vec<(String, i32)>,
}

/// ListTransactions' filters; empty lists and a negative duration match everything.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub states: Vec<TxnState>,
    pub producer_ids: Vec<ProducerId>,
    /// KIP-994: only transactions running longer than this.
    pub min_duration_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedTxn {
    pub transactional_id: String,
    pub producer_id: ProducerId,
    pub state: TxnState,
}

pub type TxnResult<R> = CoordinatorResult<TxnShard, R>;

pub struct TxnShard {
    pub config: TxnConfig,
    txns: BTreeMap<String, TxnMetadata>,
}

impl TxnShard {
    pub fn new(config: TxnConfig) -> Self {
        Self {
            config,
            txns: BTreeMap::new(),
        }
    }

    pub fn get(&self, transactional_id: &str) -> Option<&TxnMetadata> {
        self.txns.get(transactional_id)
    }

    pub fn len(&self) -> usize {
        self.txns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.txns.is_empty()
    }

    fn write<R>(&self, id: &str, value: TxnMetadata, reply: R) -> TxnResult<R> {
        TxnResult::new(
            vec![TxnRecord {
                transactional_id: id.to_string(),
                value: Some(value),
            }],
            reply,
        )
    }

    /// Whether an InitProducerId would need a fresh producer id: lets the caller allocate
    /// one before calling, so most calls need one round.
    pub fn needs_producer_id(
        &self,
        transactional_id: &str,
        expected_epoch: Option<ProducerEpoch>,
    ) -> bool {
        match self.txns.get(transactional_id) {
            None => true,
            Some(m) => {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && epoch_exhausted(m.producer_epoch)
                    && expected_epoch.is_none_or(|e| e == m.producer_epoch)
            }
        }
    }

    /// InitProducerId with a transactional id. `expected` is KIP-360's producer id and epoch
    /// (`None` when the client sent -1); `fresh_id` a newly allocated producer id, used only
    /// when one is needed.
    pub fn init_producer_id(
        &mut self,
        now_ms: i64,
        transactional_id: &str,
        timeout_ms: i32,
        expected: Option<(ProducerId, ProducerEpoch)>,
        fresh_id: Option<ProducerId>,
    ) -> TxnResult<Result<InitOutcome, TxnError>> {
        if transactional_id.is_empty() {
            return TxnResult::reply(Err(TxnError::InvalidRequest));
        }
        if timeout_ms <= 0 || timeout_ms > self.config.max_timeout_ms {
            return TxnResult::reply(Err(TxnError::InvalidTransactionTimeout));
        }
        let current = match self.txns.get(transactional_id) {
            Some(m) => m.clone(),
            None => match fresh_id {
                // A new id starts with no epoch; the bump below makes it 0.
                Some(pid) => TxnMetadata {
                    producer_id: pid,
                    previous_producer_id: NO_PRODUCER_ID,
                    next_producer_id: NO_PRODUCER_ID,
                    producer_epoch: NO_PRODUCER_EPOCH,
                    last_producer_epoch: NO_PRODUCER_EPOCH,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeMap::new(),
                    last_update_ms: now_ms,
                    start_ms: -1,
                    client_txn_version: 0,
                },
                None => return TxnResult::reply(Ok(InitOutcome::NeedsProducerId)),
            },
        };
        // KIP-360: a producer that names an id and epoch is fenced unless the id is new, the
        // id is current, or it is a retry of a rotation it never heard back from.
        if let Some((pid, epoch)) = expected {
            let valid = current.producer_epoch == NO_PRODUCER_EPOCH
                || pid == current.producer_id
                || (pid == current.previous_producer_id && epoch_exhausted(epoch));
            if !valid {
                return TxnResult::reply(Err(TxnError::ProducerFenced));
            }
        }
        match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => {
                TxnResult::reply(Err(TxnError::ConcurrentTransactions))
            }
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => {
                let expected_epoch = expected.map(|(_, e)| e);
                let next = if epoch_exhausted(current.producer_epoch)
                    && expected_epoch.is_none_or(|e| e == current.producer_epoch)
                {
                    let Some(pid) = fresh_id else {
                        return TxnResult::reply(Ok(InitOutcome::NeedsProducerId));
                    };
                    // A new producer id with epoch 0; the old epoch is kept for a retry.
                    let last = if expected.is_some() {
                        current.producer_epoch
                    } else {
                        NO_PRODUCER_EPOCH
                    };
                    (pid, ProducerEpoch::new(0), last)
                } else {
                    let bumped = ProducerEpoch::new(current.producer_epoch.get().saturating_add(1));
                    match expected_epoch {
                        None => (current.producer_id, bumped, NO_PRODUCER_EPOCH),
                        Some(e)
                            if current.producer_epoch == NO_PRODUCER_EPOCH
                                || e == current.producer_epoch =>
                        {
                            (current.producer_id, bumped, current.producer_epoch)
                        }
                        // A retry of a bump that succeeded: the same answer again.
                        Some(e) if e == current.last_producer_epoch => (
                            current.producer_id,
                            current.producer_epoch,
                            current.last_producer_epoch,
                        ),
                        Some(_) => return TxnResult::reply(Err(TxnError::ProducerFenced)),
                    }
                };
                let (producer_id, producer_epoch, last_producer_epoch) = next;
                let value = TxnMetadata {
                    producer_id,
                    previous_producer_id: current.producer_id,
                    next_producer_id: NO_PRODUCER_ID,
                    producer_epoch,
                    last_producer_epoch,
                    timeout_ms,
                    state: TxnState::Empty,
                    partitions: BTreeMap::new(),
                    last_update_ms: now_ms,
                    start_ms: -1,
                    client_txn_version: 0,
                };
                self.write(
                    transactional_id,
                    value,
                    Ok(InitOutcome::Ready {
                        producer_id,
                        producer_epoch,
                    }),
                )
            }
            TxnState::Ongoing => match self.fence(now_ms, transactional_id, &current) {
                Some((value, markers)) => {
                    self.write(transactional_id, value, Ok(InitOutcome::Fenced(markers)))
                }
                None => TxnResult::reply(Err(TxnError::ConcurrentTransactions)),
            },
            // Never stored by a coordinator: a record saying so is not Kafka's either.
            TxnState::Dead | TxnState::PrepareEpochFence => {
                TxnResult::reply(Err(TxnError::InvalidTxnState))
            }
        }
    }

    /// Kafka's epoch fence followed by its abort: the epoch is bumped to fence the producer,
    /// and the abort, at the cluster's transaction version, may bump it once more. `None`
    /// when the epoch has no room left (only a corrupt log gets there).
    fn fence(
        &self,
        now_ms: i64,
        transactional_id: &str,
        current: &TxnMetadata,
    ) -> Option<(TxnMetadata, TxnMarkers)> {
        let tv2 = self.config.transaction_version >= 2;
        let fenced = current.producer_epoch.checked_next()?;
        let (epoch, last) = if tv2 {
            (fenced.checked_next()?, fenced)
        } else {
            (fenced, NO_PRODUCER_EPOCH)
        };
        let value = TxnMetadata {
            previous_producer_id: current.producer_id,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: epoch,
            last_producer_epoch: last,
            state: TxnState::PrepareAbort,
            last_update_ms: now_ms,
            client_txn_version: self.config.transaction_version,
            ..current.clone()
        };
        let markers = TxnMarkers {
            transactional_id: transactional_id.to_string(),
            producer_id: value.producer_id,
            producer_epoch: epoch,
            commit: false,
            partitions: value.partition_list(),
        };
        Some((value, markers))
    }

    /// The checks AddPartitionsToTxn and its verification share.
    fn check_producer(
        &self,
        transactional_id: &str,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
    ) -> Result<&TxnMetadata, TxnError> {
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        let m = self
            .txns
            .get(transactional_id)
            .ok_or(TxnError::InvalidProducerIdMapping)?;
        if m.producer_id != producer_id {
            return Err(TxnError::InvalidProducerIdMapping);
        }
        if m.producer_epoch != producer_epoch {
            return Err(TxnError::ProducerFenced);
        }
        if matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort) {
            return Err(TxnError::ConcurrentTransactions);
        }
        Ok(m)
    }

    /// AddPartitionsToTxn (and AddOffsetsToTxn with the group's `__consumer_offsets`
    /// partition): the transaction becomes Ongoing with these partitions added.
    /// `client_txn_version` is 2 for a v5+ request (KIP-890), else 0.
    pub fn add_partitions(
        &mut self,
        now_ms: i64,
        transactional_id: &str,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        partitions: &[(String, i32)],
        client_txn_version: i16,
    ) -> TxnResult<Result<(), TxnError>> {
        let m = match self.check_producer(transactional_id, producer_id, producer_epoch) {
            Ok(m) => m,
            Err(e) => return TxnResult::reply(Err(e)),
        };
        if m.state == TxnState::Ongoing && partitions.iter().all(|(t, p)| m.contains(t, *p)) {
            return TxnResult::reply(Ok(()));
        }
        let mut value = m.clone();
        if value.state != TxnState::Ongoing {
            // Empty or Complete*: a new transaction starts now.
            value.start_ms = now_ms;
            value.partitions.clear();
        }
        for (t, p) in partitions {
            value.partitions.entry(t.clone()).or_default().insert(*p);
        }
        value.state = TxnState::Ongoing;
        value.previous_producer_id = m.producer_id;
        value.next_producer_id = NO_PRODUCER_ID;
        value.last_update_ms = now_ms;
        value.client_txn_version = client_txn_version;
        self.write(transactional_id, value, Ok(()))
    }

    /// AddPartitionsToTxn with `verify_only` (KIP-890 part 1): whether each partition is
    /// already in the ongoing transaction (TRANSACTION_ABORTABLE if not). Writes nothing.
    pub fn verify_partitions(
        &self,
        transactional_id: &str,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        partitions: &[(String, i32)],
    ) -> Result<Verified, TxnError> {
        let m = self.check_producer(transactional_id, producer_id, producer_epoch)?;
        Ok(partitions
            .iter()
            .map(|(t, p)| {
                let r = if m.contains(t, *p) {
                    Ok(())
                } else {
                    Err(TxnError::TransactionAbortable)
                };
                ((t.clone(), *p), r)
            })
            .collect())
    }

    /// EndTxn. `client_txn_version` is 2 for EndTxn v5+ (KIP-890 part 2: every end bumps the
    /// epoch, and the client learns the new one from the response), else 0. `fresh_id` is
    /// used only when that bump exhausts the epochs.
    #[allow(clippy::too_many_arguments)]
    pub fn end_txn(
        &mut self,
        now_ms: i64,
        transactional_id: &str,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
        commit: bool,
        client_txn_version: i16,
        fresh_id: Option<ProducerId>,
    ) -> TxnResult<Result<EndOutcome, TxnError>> {
        if transactional_id.is_empty() {
            return TxnResult::reply(Err(TxnError::InvalidRequest));
        }
        let Some(m) = self.txns.get(transactional_id) else {
            return TxnResult::reply(Err(TxnError::InvalidProducerIdMapping));
        };
        let tv2 = m.client_txn_version >= 2;
        // A retry of an end whose epoch bump exhausted the epochs: the id has moved on.
        let retry_on_overflow = tv2
            && m.previous_producer_id == producer_id
            && producer_epoch == ProducerEpoch::new(i16::MAX - 1)
            && m.producer_epoch == ProducerEpoch::new(0);
        // A retry of an end that bumped the epoch.
        let retry_on_bump =
            tv2 && i32::from(m.producer_epoch.get()) == i32::from(producer_epoch.get()) + 1;
        let valid_epoch = if tv2 {
            match m.state {
                TxnState::PrepareCommit | TxnState::PrepareAbort => retry_on_bump,
                TxnState::CompleteCommit | TxnState::CompleteAbort => {
                    retry_on_bump || retry_on_overflow
                }
                _ => producer_epoch == m.producer_epoch,
            }
        } else {
            producer_epoch == m.producer_epoch
        };
        if m.producer_id != producer_id && !retry_on_overflow {
            return TxnResult::reply(Err(TxnError::InvalidProducerIdMapping));
        }
        if !valid_epoch {
            return TxnResult::reply(Err(TxnError::ProducerFenced));
        }
        let done = || {
            Ok(EndOutcome::Done {
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
            })
        };
        let reply = match (m.state, commit) {
            (TxnState::Ongoing, _) => None,
            (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Some(done()),
            (TxnState::PrepareCommit, true) | (TxnState::PrepareAbort, false) => {
                Some(Err(TxnError::ConcurrentTransactions))
            }
            _ => Some(Err(TxnError::InvalidTxnState)),
        };
        if let Some(reply) = reply {
            return TxnResult::reply(reply);
        }
        let bump = client_txn_version >= 2;
        let next_producer_id = if bump && epoch_exhausted(m.producer_epoch) {
            match fresh_id {
                Some(pid) => pid,
                None => return TxnResult::reply(Ok(EndOutcome::NeedsProducerId)),
            }
        } else {
            NO_PRODUCER_ID
        };
        let (epoch, last) = if bump {
            match m.producer_epoch.checked_next() {
                Some(e) => (e, m.producer_epoch),
                None => return TxnResult::reply(Err(TxnError::InvalidTxnState)),
            }
        } else {
            (m.producer_epoch, m.last_producer_epoch)
        };
        let value = TxnMetadata {
            previous_producer_id: m.producer_id,
            next_producer_id,
            producer_epoch: epoch,
            last_producer_epoch: last,
            state: if commit {
                TxnState::PrepareCommit
            } else {
                TxnState::PrepareAbort
            },
            last_update_ms: now_ms,
            client_txn_version,
            ..m.clone()
        };
        let markers = TxnMarkers {
            transactional_id: transactional_id.to_string(),
            producer_id: value.producer_id,
            producer_epoch: epoch,
            commit,
            partitions: value.partition_list(),
        };
        let producer_id = value.producer_id;
        self.write(
            transactional_id,
            value,
            Ok(EndOutcome::Prepared {
                markers,
                producer_id,
                producer_epoch: epoch,
            }),
        )
    }

    /// Once every marker of a prepared end is written: CompleteCommit or CompleteAbort, no
    /// partitions. After an end that exhausted the epochs, the id moves to its next
    /// producer id with epoch 0.
    pub fn complete_txn(
        &mut self,
        now_ms: i64,
        transactional_id: &str,
        producer_id: ProducerId,
        producer_epoch: ProducerEpoch,
    ) -> TxnResult<Result<(), TxnError>> {
        let Some(m) = self.txns.get(transactional_id) else {
            return TxnResult::reply(Err(TxnError::InvalidProducerIdMapping));
        };
        if m.producer_id != producer_id {
            return TxnResult::reply(Err(TxnError::InvalidProducerIdMapping));
        }
        if m.producer_epoch != producer_epoch {
            return TxnResult::reply(Err(TxnError::ProducerFenced));
        }
        let state = match m.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return TxnResult::reply(Err(TxnError::InvalidTxnState)),
        };
        let rotate = m.client_txn_version >= 2 && m.next_producer_id != NO_PRODUCER_ID;
        let (pid, epoch) = if rotate {
            (m.next_producer_id, ProducerEpoch::new(0))
        } else {
            (m.producer_id, m.producer_epoch)
        };
        let value = TxnMetadata {
            producer_id: pid,
            previous_producer_id: m.producer_id,
            next_producer_id: NO_PRODUCER_ID,
            producer_epoch: epoch,
            last_producer_epoch: m.producer_epoch,
            state,
            partitions: BTreeMap::new(),
            last_update_ms: now_ms,
            ..m.clone()
        };
        self.write(transactional_id, value, Ok(()))
    }

    /// Ongoing transactions past their timeout are aborted, the producer fenced by an epoch
    /// bump as Kafka does. The reply is the markers to write for each.
    pub fn abort_timed_out(&mut self, now_ms: i64) -> TxnResult<Vec<TxnMarkers>> {
        let mut records = Vec::new();
        let mut markers = Vec::new();
        for (id, m) in &self.txns {
            if m.state != TxnState::Ongoing
                || m.start_ms.saturating_add(i64::from(m.timeout_ms)) >= now_ms
            {
                continue;
            }
            if let Some((value, mk)) = self.fence(now_ms, id, m) {
                records.push(TxnRecord {
                    transactional_id: id.clone(),
                    value: Some(value),
                });
                markers.push(mk);
            }
        }
        TxnResult::new(records, markers)
    }

    /// Tombstones for ids with no transaction in progress that have not been used for
    /// `transactional.id.expiration.ms`. The reply is how many expired.
    pub fn expire_transactional_ids(&mut self, now_ms: i64) -> TxnResult<usize> {
        let cutoff = now_ms.saturating_sub(self.config.id_expiration_ms);
        let records: Vec<TxnRecord> = self
            .txns
            .iter()
            .filter(|(_, m)| {
                matches!(
                    m.state,
                    TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort
                ) && m.last_update_ms <= cutoff
            })
            .map(|(id, _)| TxnRecord {
                transactional_id: id.clone(),
                value: None,
            })
            .collect();
        let n = records.len();
        TxnResult::new(records, n)
    }

    /// Prepared ends whose markers may not all be written (after a load, Kafka sends them
    /// again): the caller writes them and completes each.
    pub fn pending_markers(&self) -> Vec<TxnMarkers> {
        self.txns
            .iter()
            .filter(|(_, m)| matches!(m.state, TxnState::PrepareCommit | TxnState::PrepareAbort))
            .map(|(id, m)| TxnMarkers {
                transactional_id: id.clone(),
                producer_id: m.producer_id,
                producer_epoch: m.producer_epoch,
                commit: m.state == TxnState::PrepareCommit,
                partitions: m.partition_list(),
            })
            .collect()
    }

    pub fn describe(&self, transactional_id: &str) -> Result<TxnDescription, TxnError> {
        if transactional_id.is_empty() {
            return Err(TxnError::InvalidRequest);
        }
        let m = self
            .txns
            .get(transactional_id)
            .filter(|m| m.state != TxnState::Dead)
            .ok_or(TxnError::TransactionalIdNotFound)?;
        Ok(TxnDescription {
            state: m.state,
            producer_id: m.producer_id,
            producer_epoch: m.producer_epoch,
            timeout_ms: m.timeout_ms,
            start_ms: m.start_ms,
            partitions: m.partition_list(),
        })
    }

    pub fn list(&self, now_ms: i64, filter: &ListFilter) -> Vec<ListedTxn> {
        self.txns
            .iter()
            .filter(|(_, m)| {
                m.state != TxnState::Dead
                    && (filter.producer_ids.is_empty()
                        || filter.producer_ids.contains(&m.producer_id))
                    && (filter.states.is_empty() || filter.states.contains(&m.state))
                    && (filter.min_duration_ms < 0
                        || now_ms.saturating_sub(m.start_ms) > filter.min_duration_ms)
            })
            .map(|(id, m)| ListedTxn {
                transactional_id: id.clone(),
                producer_id: m.producer_id,
                state: m.state,
            })
            .collect()
    }

    /// Ids and states, for tests and diagnostics.
    pub fn states(&self) -> BTreeMap<String, TxnMetadata> {
        self.txns.clone()
    }
}

impl CoordinatorShard for TxnShard {
    type Record = TxnRecord;
    type CodecError = RecordError;

    fn replay(&mut self, record: &TxnRecord, _now_ms: i64) {
        match &record.value {
            Some(v) => {
                self.txns.insert(record.transactional_id.clone(), v.clone());
            }
            None => {
                self.txns.remove(&record.transactional_id);
            }
        }
    }

    fn encode(&self, record: &TxnRecord) -> Result<(Vec<u8>, Option<Vec<u8>>), RecordError> {
        record.encode()
    }

    fn decode(&self, key: &[u8], value: Option<&[u8]>) -> Result<Vec<TxnRecord>, RecordError> {
        TxnRecord::decode(key, value).map(|r| vec![r])
    }
}

#[cfg(test)]
impl TxnShard {
    /// One record per transactional id, its latest state: what compaction leaves of the log.
    pub(crate) fn live_records(&self) -> Vec<TxnRecord> {
        self.txns
            .iter()
            .map(|(id, m)| TxnRecord {
                transactional_id: id.clone(),
                value: Some(m.clone()),
            })
            .collect()
    }
}

/// The partitions a set of markers names, grouped by topic (as WriteTxnMarkers sends them).
pub fn partitions_by_topic(partitions: &[(String, i32)]) -> BTreeMap<String, BTreeSet<i32>> {
    let mut out: BTreeMap<String, BTreeSet<i32>> = BTreeMap::new();
    for (t, p) in partitions {
        out.entry(t.clone()).or_default().insert(*p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "tx";
    const T0: i64 = 1_000;

    /// Applies an operation's records as the runtime does, and returns its reply.
    fn apply<R>(s: &mut TxnShard, r: TxnResult<R>) -> R {
        for rec in &r.records {
            s.replay(rec, 0);
        }
        r.reply
    }

    fn shard() -> TxnShard {
        TxnShard::new(TxnConfig {
            max_timeout_ms: 60_000,
            id_expiration_ms: 100_000,
            transaction_version: 2,
        })
    }

    fn init(
        s: &mut TxnShard,
        expected: Option<(i64, i16)>,
        fresh: Option<i64>,
    ) -> Result<InitOutcome, TxnError> {
        let expected = expected.map(|(p, e)| (ProducerId::new(p), ProducerEpoch::new(e)));
        let r = s.init_producer_id(T0, ID, 10_000, expected, fresh.map(ProducerId::new));
        apply(s, r)
    }

    fn ready(pid: i64, epoch: i16) -> Result<InitOutcome, TxnError> {
        Ok(InitOutcome::Ready {
            producer_id: ProducerId::new(pid),
            producer_epoch: ProducerEpoch::new(epoch),
        })
    }

    fn add(s: &mut TxnShard, pid: i64, epoch: i16, parts: &[(&str, i32)]) -> Result<(), TxnError> {
        let parts: Vec<(String, i32)> = parts.iter().map(|(t, p)| (t.to_string(), *p)).collect();
        let r = s.add_partitions(
            T0 + 1,
            ID,
            ProducerId::new(pid),
            ProducerEpoch::new(epoch),
            &parts,
            0,
        );
        apply(s, r)
    }

    fn end(
        s: &mut TxnShard,
        pid: i64,
        epoch: i16,
        commit: bool,
        tv: i16,
    ) -> Result<EndOutcome, TxnError> {
        let r = s.end_txn(
            T0 + 2,
            ID,
            ProducerId::new(pid),
            ProducerEpoch::new(epoch),
            commit,
            tv,
            Some(ProducerId::new(99)),
        );
        apply(s, r)
    }

    fn state(s: &TxnShard) -> TxnState {
        s.get(ID).unwrap().state
    }

    #[test]
    fn a_new_id_needs_a_producer_id_then_starts_empty_at_epoch_0() {
        let mut s = shard();
        assert!(s.needs_producer_id(ID, None));
        let r = s.init_producer_id(T0, ID, 10_000, None, None);
        assert!(r.records.is_empty());
        assert_eq!(r.reply, Ok(InitOutcome::NeedsProducerId));
        assert_eq!(init(&mut s, None, Some(5)), ready(5, 0));
        let m = s.get(ID).unwrap();
        assert_eq!(
            (
                m.state,
                m.producer_id.get(),
                m.producer_epoch.get(),
                m.start_ms
            ),
            (TxnState::Empty, 5, 0, -1)
        );
        assert!(!s.needs_producer_id(ID, None));
        // Again: the epoch is bumped, the fresh id is not used.
        assert_eq!(init(&mut s, None, Some(6)), ready(5, 1));
    }

    #[test]
    fn bad_requests_are_refused() {
        let mut s = shard();
        let r = s.init_producer_id(T0, "", 10_000, None, Some(ProducerId::new(1)));
        assert_eq!(r.reply, Err(TxnError::InvalidRequest));
        for timeout in [0, 60_001] {
            let r = s.init_producer_id(T0, ID, timeout, None, Some(ProducerId::new(1)));
            assert_eq!(r.reply, Err(TxnError::InvalidTransactionTimeout));
            assert!(r.records.is_empty());
        }
    }

    #[test]
    fn an_exhausted_epoch_takes_the_new_producer_id() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap();
        let mut m = s.get(ID).unwrap().clone();
        m.producer_epoch = ProducerEpoch::new(i16::MAX - 1);
        s.replay(
            &TxnRecord {
                transactional_id: ID.into(),
                value: Some(m),
            },
            0,
        );
        assert!(s.needs_producer_id(ID, None));
        assert_eq!(init(&mut s, None, None), Ok(InitOutcome::NeedsProducerId));
        assert_eq!(init(&mut s, Some((5, i16::MAX - 1)), Some(8)), ready(8, 0));
        assert_eq!(s.get(ID).unwrap().previous_producer_id, ProducerId::new(5));
        // KIP-360: the old id with its exhausted epoch is a retry, answered with the same.
        assert_eq!(init(&mut s, Some((5, i16::MAX - 1)), Some(9)), ready(8, 0));
        // The old id with another epoch is fenced.
        assert_eq!(
            init(&mut s, Some((5, 3)), Some(9)),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn kip_360_expected_epochs() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap(); // epoch 0
        init(&mut s, None, None).unwrap(); // epoch 1
                                           // The current epoch: bumped, and remembered as the last one.
        assert_eq!(init(&mut s, Some((5, 1)), None), ready(5, 2));
        // A retry naming the previous epoch gets the same answer without a bump.
        assert_eq!(init(&mut s, Some((5, 1)), None), ready(5, 2));
        // Another epoch, or another producer id, is fenced.
        assert_eq!(
            init(&mut s, Some((5, 0)), None),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            init(&mut s, Some((6, 2)), None),
            Err(TxnError::ProducerFenced)
        );
        // A reloaded coordinator has no last epoch, as in Kafka.
        let mut reloaded = shard();
        for r in s.live_records() {
            let (k, v) = r.encode().unwrap();
            reloaded.replay(&TxnRecord::decode(&k, v.as_deref()).unwrap(), 0);
        }
        assert_eq!(
            init(&mut reloaded, Some((5, 1)), None),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn a_transaction_commits_through_prepare_and_complete() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap();
        assert_eq!(add(&mut s, 5, 0, &[("t", 0), ("t", 1)]), Ok(()));
        let m = s.get(ID).unwrap();
        assert_eq!((m.state, m.start_ms), (TxnState::Ongoing, T0 + 1));
        // Partitions already in: nothing to write.
        let r = s.add_partitions(
            T0 + 5,
            ID,
            ProducerId::new(5),
            ProducerEpoch::new(0),
            &[("t".into(), 1)],
            0,
        );
        assert!(r.records.is_empty());
        assert_eq!(r.reply, Ok(()));
        assert_eq!(add(&mut s, 5, 0, &[("u", 3)]), Ok(()));
        assert_eq!(
            s.get(ID).unwrap().start_ms,
            T0 + 1,
            "the start does not move"
        );
        let out = end(&mut s, 5, 0, true, 0).unwrap();
        let markers = TxnMarkers {
            transactional_id: ID.into(),
            producer_id: ProducerId::new(5),
            producer_epoch: ProducerEpoch::new(0),
            commit: true,
            partitions: vec![("t".into(), 0), ("t".into(), 1), ("u".into(), 3)],
        };
        assert_eq!(
            out,
            EndOutcome::Prepared {
                markers: markers.clone(),
                producer_id: ProducerId::new(5),
                producer_epoch: ProducerEpoch::new(0)
            }
        );
        assert_eq!(state(&s), TxnState::PrepareCommit);
        assert_eq!(s.pending_markers(), vec![markers]);
        // Meanwhile: the same end is CONCURRENT_TRANSACTIONS, the other INVALID_TXN_STATE,
        // adding partitions and InitProducerId are CONCURRENT_TRANSACTIONS.
        assert_eq!(
            end(&mut s, 5, 0, true, 0),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(end(&mut s, 5, 0, false, 0), Err(TxnError::InvalidTxnState));
        assert_eq!(
            add(&mut s, 5, 0, &[("v", 0)]),
            Err(TxnError::ConcurrentTransactions)
        );
        assert_eq!(
            init(&mut s, None, None),
            Err(TxnError::ConcurrentTransactions)
        );
        let r = s.complete_txn(T0 + 3, ID, ProducerId::new(5), ProducerEpoch::new(0));
        assert_eq!(apply(&mut s, r), Ok(()));
        let m = s.get(ID).unwrap();
        assert_eq!(
            (m.state, m.partitions.len(), m.producer_epoch.get()),
            (TxnState::CompleteCommit, 0, 0)
        );
        assert!(s.pending_markers().is_empty());
        // A retried commit is answered from the state; an abort is not allowed.
        let done = end(&mut s, 5, 0, true, 0);
        assert_eq!(
            done,
            Ok(EndOutcome::Done {
                producer_id: ProducerId::new(5),
                producer_epoch: ProducerEpoch::new(0)
            })
        );
        assert_eq!(end(&mut s, 5, 0, false, 0), Err(TxnError::InvalidTxnState));
        // Completing twice is refused.
        let r = s.complete_txn(T0 + 3, ID, ProducerId::new(5), ProducerEpoch::new(0));
        assert_eq!(r.reply, Err(TxnError::InvalidTxnState));
        // The next transaction starts anew.
        assert_eq!(add(&mut s, 5, 0, &[("w", 0)]), Ok(()));
        let m = s.get(ID).unwrap();
        assert_eq!(m.partition_list(), vec![("w".to_string(), 0)]);
    }

    #[test]
    fn producer_checks() {
        let mut s = shard();
        assert_eq!(
            add(&mut s, 5, 0, &[("t", 0)]),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            end(&mut s, 5, 0, true, 0),
            Err(TxnError::InvalidProducerIdMapping)
        );
        init(&mut s, None, Some(5)).unwrap();
        init(&mut s, None, None).unwrap(); // epoch 1
        assert_eq!(
            add(&mut s, 6, 1, &[("t", 0)]),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            add(&mut s, 5, 0, &[("t", 0)]),
            Err(TxnError::ProducerFenced)
        );
        // Ending a transaction that never started.
        assert_eq!(end(&mut s, 5, 1, true, 0), Err(TxnError::InvalidTxnState));
        add(&mut s, 5, 1, &[("t", 0)]).unwrap();
        assert_eq!(end(&mut s, 5, 0, true, 0), Err(TxnError::ProducerFenced));
        assert_eq!(
            end(&mut s, 6, 1, true, 0),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            TxnError::ProducerFenced.for_old_client(true),
            TxnError::InvalidProducerEpoch
        );
        assert_eq!(TxnError::ProducerFenced.for_old_client(false).code(), 90);
    }

    #[test]
    fn init_fences_an_ongoing_transaction_and_aborts_it() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap();
        add(&mut s, 5, 0, &[("t", 0)]).unwrap();
        let out = init(&mut s, None, None).unwrap();
        // Fence (+1), then the abort at transaction version 2 (+1).
        assert_eq!(
            out,
            InitOutcome::Fenced(TxnMarkers {
                transactional_id: ID.into(),
                producer_id: ProducerId::new(5),
                producer_epoch: ProducerEpoch::new(2),
                commit: false,
                partitions: vec![("t".into(), 0)],
            })
        );
        assert_eq!(state(&s), TxnState::PrepareAbort);
        // The old producer is fenced.
        assert_eq!(end(&mut s, 5, 0, true, 0), Err(TxnError::ProducerFenced));
        // Until the markers are written, the client's retries are CONCURRENT_TRANSACTIONS.
        assert_eq!(
            init(&mut s, None, None),
            Err(TxnError::ConcurrentTransactions)
        );
        let r = s.complete_txn(T0, ID, ProducerId::new(5), ProducerEpoch::new(2));
        apply(&mut s, r).unwrap();
        assert_eq!(state(&s), TxnState::CompleteAbort);
        assert_eq!(init(&mut s, None, None), ready(5, 3));
    }

    #[test]
    fn fencing_at_transaction_version_0_bumps_once() {
        let mut s = TxnShard::new(TxnConfig {
            transaction_version: 0,
            ..TxnConfig::default()
        });
        init(&mut s, None, Some(5)).unwrap();
        add(&mut s, 5, 0, &[("t", 0)]).unwrap();
        match init(&mut s, None, None) {
            Ok(InitOutcome::Fenced(m)) => assert_eq!(m.producer_epoch, ProducerEpoch::new(1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn verification_writes_nothing() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap();
        add(&mut s, 5, 0, &[("t", 0)]).unwrap();
        let v = s
            .verify_partitions(
                ID,
                ProducerId::new(5),
                ProducerEpoch::new(0),
                &[("t".into(), 0), ("t".into(), 1)],
            )
            .unwrap();
        assert_eq!(
            v,
            vec![
                (("t".to_string(), 0), Ok(())),
                (("t".to_string(), 1), Err(TxnError::TransactionAbortable))
            ]
        );
        assert_eq!(
            s.verify_partitions(ID, ProducerId::new(5), ProducerEpoch::new(1), &[]),
            Err(TxnError::ProducerFenced)
        );
        assert_eq!(
            s.verify_partitions(ID, ProducerId::new(4), ProducerEpoch::new(0), &[]),
            Err(TxnError::InvalidProducerIdMapping)
        );
        assert_eq!(
            s.verify_partitions("", ProducerId::new(5), ProducerEpoch::new(0), &[]),
            Err(TxnError::InvalidRequest)
        );
        end(&mut s, 5, 0, false, 0).unwrap();
        assert_eq!(
            s.verify_partitions(ID, ProducerId::new(5), ProducerEpoch::new(0), &[]),
            Err(TxnError::ConcurrentTransactions)
        );
    }

    #[test]
    fn kip_890_ends_bump_the_epoch_and_retries_are_recognised() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap();
        add(&mut s, 5, 0, &[("t", 0)]).unwrap();
        let out = end(&mut s, 5, 0, true, 2).unwrap();
        let EndOutcome::Prepared {
            markers,
            producer_id,
            producer_epoch,
        } = out
        else {
            panic!("{out:?}")
        };
        assert_eq!(
            (
                producer_id.get(),
                producer_epoch.get(),
                markers.producer_epoch.get()
            ),
            (5, 1, 1)
        );
        // A retry with the old epoch while prepared: CONCURRENT_TRANSACTIONS.
        assert_eq!(
            end(&mut s, 5, 0, true, 2),
            Err(TxnError::ConcurrentTransactions)
        );
        let r = s.complete_txn(T0, ID, ProducerId::new(5), ProducerEpoch::new(1));
        apply(&mut s, r).unwrap();
        // A retry after completion is answered with the new epoch.
        assert_eq!(
            end(&mut s, 5, 0, true, 2),
            Ok(EndOutcome::Done {
                producer_id: ProducerId::new(5),
                producer_epoch: ProducerEpoch::new(1)
            })
        );
        // The new epoch carries on; ending with the new epoch is the next transaction.
        add(&mut s, 5, 1, &[("t", 0)]).unwrap();
        assert!(matches!(
            end(&mut s, 5, 1, false, 2),
            Ok(EndOutcome::Prepared { producer_epoch, .. }) if producer_epoch == ProducerEpoch::new(2)
        ));
    }

    #[test]
    fn kip_890_an_exhausting_end_moves_to_the_next_producer_id() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap();
        add(&mut s, 5, 0, &[("t", 0)]).unwrap();
        let mut m = s.get(ID).unwrap().clone();
        m.producer_epoch = ProducerEpoch::new(i16::MAX - 1);
        m.client_txn_version = 2;
        s.replay(
            &TxnRecord {
                transactional_id: ID.into(),
                value: Some(m),
            },
            0,
        );
        let r = s.end_txn(
            T0,
            ID,
            ProducerId::new(5),
            ProducerEpoch::new(i16::MAX - 1),
            true,
            2,
            None,
        );
        assert_eq!(r.reply, Ok(EndOutcome::NeedsProducerId));
        assert!(r.records.is_empty());
        let out = end(&mut s, 5, i16::MAX - 1, true, 2).unwrap();
        assert!(matches!(
            out,
            EndOutcome::Prepared { producer_epoch, .. } if producer_epoch == ProducerEpoch::new(i16::MAX)
        ));
        assert_eq!(s.get(ID).unwrap().next_producer_id, ProducerId::new(99));
        let r = s.complete_txn(T0, ID, ProducerId::new(5), ProducerEpoch::new(i16::MAX));
        apply(&mut s, r).unwrap();
        let m = s.get(ID).unwrap();
        assert_eq!(
            (
                m.producer_id.get(),
                m.producer_epoch.get(),
                m.previous_producer_id.get()
            ),
            (99, 0, 5)
        );
        // The client's retry with the old id and its exhausted epoch is recognised.
        assert_eq!(
            end(&mut s, 5, i16::MAX - 1, true, 2),
            Ok(EndOutcome::Done {
                producer_id: ProducerId::new(99),
                producer_epoch: ProducerEpoch::new(0)
            })
        );
    }

    #[test]
    fn timed_out_transactions_are_aborted_with_a_bumped_epoch() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap();
        add(&mut s, 5, 0, &[("t", 0)]).unwrap(); // started at T0 + 1, timeout 10 s
        let r = s.abort_timed_out(T0 + 1 + 10_000);
        assert!(
            r.records.is_empty() && r.reply.is_empty(),
            "not past the timeout yet"
        );
        let r = s.abort_timed_out(T0 + 2 + 10_000);
        let markers = apply(&mut s, r);
        assert_eq!(markers.len(), 1);
        assert_eq!(
            (markers[0].producer_epoch.get(), markers[0].commit),
            (2, false)
        );
        assert_eq!(state(&s), TxnState::PrepareAbort);
        // Only Ongoing transactions time out.
        assert!(s.abort_timed_out(T0 + 100_000).records.is_empty());
        assert_eq!(
            add(&mut s, 5, 0, &[("t", 1)]),
            Err(TxnError::ProducerFenced)
        );
    }

    #[test]
    fn idle_ids_expire_unless_a_transaction_is_in_progress() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap(); // last update T0
        let r = s.init_producer_id(T0, "busy", 10_000, None, Some(ProducerId::new(6)));
        apply(&mut s, r).unwrap();
        let r = s.add_partitions(
            T0,
            "busy",
            ProducerId::new(6),
            ProducerEpoch::new(0),
            &[("t".into(), 0)],
            0,
        );
        apply(&mut s, r).unwrap();
        let r = s.expire_transactional_ids(T0 + 99_999);
        assert_eq!(apply(&mut s, r), 0);
        let r = s.expire_transactional_ids(T0 + 100_000);
        assert_eq!(
            r.records,
            vec![TxnRecord {
                transactional_id: ID.into(),
                value: None
            }]
        );
        assert_eq!(apply(&mut s, r), 1);
        assert!(s.get(ID).is_none());
        assert!(s.get("busy").is_some());
        assert_eq!(s.describe(ID), Err(TxnError::TransactionalIdNotFound));
    }

    #[test]
    fn describe_and_list() {
        let mut s = shard();
        init(&mut s, None, Some(5)).unwrap();
        add(&mut s, 5, 0, &[("t", 2)]).unwrap();
        let r = s.init_producer_id(T0, "other", 10_000, None, Some(ProducerId::new(6)));
        apply(&mut s, r).unwrap();
        assert_eq!(
            s.describe(ID),
            Ok(TxnDescription {
                state: TxnState::Ongoing,
                producer_id: ProducerId::new(5),
                producer_epoch: ProducerEpoch::new(0),
                timeout_ms: 10_000,
                start_ms: T0 + 1,
                partitions: vec![("t".into(), 2)],
            })
        );
        assert_eq!(s.describe(""), Err(TxnError::InvalidRequest));
        let ids = |f: ListFilter| -> Vec<String> {
            s.list(T0 + 100, &f)
                .into_iter()
                .map(|t| t.transactional_id)
                .collect()
        };
        let all = ListFilter {
            min_duration_ms: -1,
            ..ListFilter::default()
        };
        assert_eq!(ids(all.clone()), ["other", "tx"]);
        assert_eq!(
            ids(ListFilter {
                states: vec![TxnState::Ongoing],
                ..all.clone()
            }),
            ["tx"]
        );
        assert_eq!(
            ids(ListFilter {
                producer_ids: vec![ProducerId::new(6)],
                ..all.clone()
            }),
            ["other"]
        );
        // KIP-994: running longer than 98 ms (started at T0 + 1, now T0 + 100).
        assert_eq!(
            ids(ListFilter {
                min_duration_ms: 98,
                ..all.clone()
            }),
            ["other", "tx"]
        );
        assert_eq!(
            ids(ListFilter {
                min_duration_ms: 99,
                states: vec![TxnState::Ongoing],
                ..all
            }),
            Vec::<String>::new()
        );
        assert_eq!(
            TxnState::from_name("PrepareCommit"),
            Some(TxnState::PrepareCommit)
        );
        assert_eq!(TxnState::from_name("nope"), None);
    }
}
