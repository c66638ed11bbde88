//! One partition this broker hosts: its log, its role (leader or follower) and leader epoch,
//! its high watermark, the fetch wake-ups and the group-commit flusher.
//!
//! Only the replica manager creates partitions; handlers use these methods and never the log.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicI64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{watch, Notify};
use uuid::Uuid;
use vltava_metadata::TopicIdPartition;
use vltava_record::BatchHeader;
use vltava_record::TransactionResult;
use vltava_storage::producer_state::AbortedTxn;
use vltava_storage::{AppendInfo, Log, LogOffsets, ProducerInfo, ReadResult, StorageError};
use vltava_types::{LeaderEpoch, NodeId, Offset, ProducerEpoch, ProducerId};

use crate::config::TopicSettings;

/// What the flusher has made durable, or that it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Durable {
    pub offset: i64,
    pub failed: bool,
}

/// This broker's role for a partition, from the partition's metadata record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
}

/// Why an append was refused before it reached the log.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error("this broker is not the leader of {0}")]
    NotLeader(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Why an acks=all produce could not be answered with success once appended.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("leadership of the partition moved before the records were replicated")]
    NotLeader,
    #[error(
        "the ISR shrank to {isr} below min.insync.replicas {min} while the records were replicated"
    )]
    NotEnoughReplicasAfterAppend { isr: usize, min: usize },
}

/// What the leader knows of one follower from its fetches (Kafka's replica state).
#[derive(Debug, Clone, Copy)]
struct FollowerState {
    /// The follower's fetch offset: everything below it is fsynced on the follower, which
    /// fsyncs what it fetched before it fetches again. -1 until it fetches in this epoch.
    fetch_offset: i64,
    /// The last time its fetch offset reached the leader's log end (Kafka's
    /// lastCaughtUpTimeMs): the ISR drops it when this is older than
    /// `replica.lag.time.max.ms`.
    last_caught_up_ms: i64,
    /// The leader's log end and the time at its previous fetch.
    last_fetch_leader_end: i64,
    last_fetch_ms: i64,
}

/// A change of the ISR the leader wants the controller to make (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrChange {
    pub leader_epoch: i32,
    pub expected: Vec<NodeId>,
    pub proposed: Vec<NodeId>,
}

/// How far a read may go: consumers stop at the high watermark (read_committed ones at the
/// last stable offset), the broker's own readers (coordinator loading) at the log end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadLimit {
    HighWatermark,
    LastStable,
    LogEnd,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub index: i32,
    pub topic_id: Uuid,
    node_id: NodeId,
    role: AtomicU8,
    leader: AtomicI32,
    leader_epoch: AtomicI32,
    isr: RwLock<Vec<NodeId>>,
    replicas: RwLock<Vec<NodeId>>,
    /// As leader: each follower's position, reset when the leader epoch changes.
    followers: Mutex<HashMap<NodeId, FollowerState>>,
    /// An ISR change sent to the controller and not yet seen in metadata.
    isr_change_pending: AtomicBool,
    /// Everything below is replicated to the whole ISR and visible to consumers.
    high_watermark: AtomicI64,
    log: Arc<Log>,
    /// Log end offset after each append: long-polling fetches wait on it.
    appended: watch::Sender<i64>,
    durable: watch::Sender<Durable>,
    flush_request: Arc<Notify>,
    /// Dropped with the partition, which ends its flusher: an idle partition has no task
    /// that wakes.
    flusher_stop: watch::Sender<()>,
    /// Held while `durable` is set from the log's flushed offset and while a truncation
    /// lowers both, so an fsync that ran alongside a truncation cannot raise `durable` back
    /// above the cut.
    durable_lock: Arc<Mutex<()>>,
    /// The broker's record of flush times, shared by its partitions.
    flush_times: Arc<crate::request_metrics::TimeHistogram>,
    /// Its topic's BrokerTopicMetrics.
    pub stats: crate::topic_metrics::TopicStats,
    /// Bit 0: leader-throttled here, bit 1: follower-throttled (see `leader_throttled`).
    throttled: AtomicU8,
    settings: Mutex<TopicSettings>,
}

impl std::fmt::Debug for Partition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.index)
    }
}

/// A partition's registration as this broker applies it.
#[derive(Debug, Clone)]
pub struct Registration {
    pub role: Role,
    pub leader: NodeId,
    pub leader_epoch: i32,
    pub isr: Vec<NodeId>,
    pub replicas: Vec<NodeId>,
}

impl Partition {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        topic: Arc<str>,
        tp: TopicIdPartition,
        node_id: NodeId,
        registration: Registration,
        log: Log,
        settings: TopicSettings,
        flush_times: Arc<crate::request_metrics::TimeHistogram>,
        stats: crate::topic_metrics::TopicStats,
        now_ms: i64,
    ) -> Arc<Self> {
        let offsets = log.offsets();
        let (appended, _) = watch::channel(offsets.log_end_offset.get());
        let (durable, _) = watch::channel(Durable {
            offset: offsets.flushed_offset.get(),
            failed: false,
        });
        let p = Arc::new(Self {
            topic,
            index: tp.partition,
            topic_id: tp.topic_id,
            node_id,
            role: AtomicU8::new(0),
            leader: AtomicI32::new(-1),
            leader_epoch: AtomicI32::new(-1),
            isr: RwLock::new(Vec::new()),
            replicas: RwLock::new(Vec::new()),
            followers: Mutex::new(HashMap::new()),
            isr_change_pending: AtomicBool::new(false),
            high_watermark: AtomicI64::new(offsets.log_start_offset.get()),
            log: Arc::new(log),
            appended,
            durable,
            flush_request: Arc::new(Notify::new()),
            flusher_stop: watch::channel(()).0,
            durable_lock: Arc::new(Mutex::new(())),
            flush_times,
            stats,
            throttled: AtomicU8::new(throttle_bits(&settings, tp.partition, node_id)),
            settings: Mutex::new(settings),
        });
        if let Err(e) = p.apply_registration(registration, now_ms) {
            tracing::error!(partition = ?p, error = %e, "could not record the leader epoch");
        }
        tokio::spawn(Self::flusher(Arc::downgrade(&p)));
        p
    }

    pub fn topic_id_partition(&self) -> TopicIdPartition {
        TopicIdPartition {
            topic_id: self.topic_id,
            partition: self.index,
        }
    }

    /// Takes a new role, epoch and ISR from metadata. A new leader epoch starts at the log
    /// end (Kafka's makeLeader) and forgets what followers had fetched: until each fetches
    /// in this epoch the high watermark stays where it is. ISR members count as caught up
    /// from now, so none is dropped for lag it had under the previous leader.
    pub(crate) fn apply_registration(
        &self,
        r: Registration,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        self.role.store(
            match r.role {
                Role::Leader => 0,
                Role::Follower => 1,
            },
            Ordering::Release,
        );
        self.leader.store(r.leader.get(), Ordering::Release);
        let previous = self.leader_epoch.swap(r.leader_epoch, Ordering::AcqRel);
        let new_epoch = r.leader_epoch != previous;
        {
            let mut followers = self.followers.lock();
            if new_epoch || r.role == Role::Follower {
                followers.clear();
            }
            if r.role == Role::Leader {
                for id in r.replicas.iter().filter(|id| **id != self.node_id) {
                    followers.entry(*id).or_insert(FollowerState {
                        fetch_offset: -1,
                        last_caught_up_ms: if r.isr.contains(id) { now_ms } else { 0 },
                        last_fetch_leader_end: -1,
                        last_fetch_ms: 0,
                    });
                }
                followers.retain(|id, _| r.replicas.contains(id));
            }
        }
        *self.isr.write() = r.isr;
        *self.replicas.write() = r.replicas;
        self.isr_change_pending.store(false, Ordering::Release);
        if r.role == Role::Leader && r.leader_epoch > previous {
            self.log
                .assign_leader_epoch(LeaderEpoch::new(r.leader_epoch))?;
        }
        self.maybe_advance_high_watermark();
        // Waiters (acks=all, long polls) look again: leadership or the ISR changed.
        self.appended.send_modify(|_| ());
        Ok(())
    }

    /// The leader as metadata names it (-1: none).
    pub fn leader(&self) -> NodeId {
        NodeId::new(self.leader.load(Ordering::Acquire))
    }

    pub fn replicas(&self) -> Vec<NodeId> {
        self.replicas.read().clone()
    }

    /// As leader, records a follower's fetch at `fetch_offset` (durable on the follower),
    /// moves the high watermark, and returns an ISR expansion to propose when the follower
    /// is out of the ISR and has caught up to the high watermark within this leader epoch.
    /// A fetch from a replica that is not assigned is ignored.
    pub fn follower_fetched(
        &self,
        replica: NodeId,
        fetch_offset: i64,
        now_ms: i64,
    ) -> Option<IsrChange> {
        if !self.is_leader() {
            return None;
        }
        let leader_end = self.log.offsets().log_end_offset.get();
        {
            let mut followers = self.followers.lock();
            let f = followers.get_mut(&replica)?;
            f.fetch_offset = fetch_offset;
            if fetch_offset >= leader_end {
                f.last_caught_up_ms = now_ms;
            } else if f.last_fetch_leader_end >= 0 && fetch_offset >= f.last_fetch_leader_end {
                f.last_caught_up_ms = f.last_caught_up_ms.max(f.last_fetch_ms);
            }
            f.last_fetch_leader_end = leader_end;
            f.last_fetch_ms = now_ms;
        }
        self.maybe_advance_high_watermark();
        let isr = self.isr();
        if isr.contains(&replica) || self.isr_change_pending.load(Ordering::Acquire) {
            return None;
        }
        let epoch = self.leader_epoch();
        let epoch_start = self
            .log
            .leader_epochs()
            .iter()
            .rev()
            .find(|e| e.epoch == epoch)
            .map_or(0, |e| e.start_offset);
        if fetch_offset < self.high_watermark() || fetch_offset < epoch_start {
            return None;
        }
        let mut proposed = isr.clone();
        proposed.push(replica);
        self.isr_change_pending.store(true, Ordering::Release);
        Some(IsrChange {
            leader_epoch: epoch,
            expected: isr,
            proposed,
        })
    }

    /// As leader, the ISR without the followers that have not caught up for `lag_ms`, when
    /// there are such followers and no change is pending.
    pub fn isr_shrink(&self, now_ms: i64, lag_ms: i64) -> Option<IsrChange> {
        if !self.is_leader() || self.isr_change_pending.load(Ordering::Acquire) {
            return None;
        }
        let isr = self.isr();
        let lagging: Vec<NodeId> = {
            let followers = self.followers.lock();
            isr.iter()
                .copied()
                .filter(|id| *id != self.node_id)
                .filter(|id| {
                    followers
                        .get(id)
                        .is_some_and(|f| now_ms - f.last_caught_up_ms > lag_ms)
                })
                .collect()
        };
        if lagging.is_empty() {
            return None;
        }
        let proposed: Vec<NodeId> = isr
            .iter()
            .copied()
            .filter(|id| !lagging.contains(id))
            .collect();
        self.isr_change_pending.store(true, Ordering::Release);
        Some(IsrChange {
            leader_epoch: self.leader_epoch(),
            expected: isr,
            proposed,
        })
    }

    /// The controller refused or did not answer an ISR change: it may be proposed again.
    pub fn isr_change_failed(&self) {
        self.isr_change_pending.store(false, Ordering::Release);
    }

    /// The latest leader epoch in the log (a follower's last fetched epoch), -1 if none.
    pub fn latest_epoch(&self) -> i32 {
        self.log.leader_epochs().last().map_or(-1, |e| e.epoch)
    }

    pub fn role(&self) -> Role {
        if self.role.load(Ordering::Acquire) == 0 {
            Role::Leader
        } else {
            Role::Follower
        }
    }

    pub fn is_leader(&self) -> bool {
        self.role() == Role::Leader
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch.load(Ordering::Acquire)
    }

    pub fn isr(&self) -> Vec<NodeId> {
        self.isr.read().clone()
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark.load(Ordering::Acquire)
    }

    /// Below this, every transaction is decided and replicated: the high watermark, held
    /// back by the first offset of the oldest open transaction.
    pub fn last_stable_offset(&self) -> i64 {
        let hw = self.high_watermark();
        self.log
            .first_unstable_offset()
            .map_or(hw, |f| f.get().min(hw))
    }

    /// Aborted transactions overlapping `[from, upto)`, for a read_committed fetch.
    pub fn aborted_transactions(&self, from: i64, upto: i64) -> Vec<AbortedTxn> {
        self.log
            .aborted_transactions(Offset::new(from), Offset::new(upto))
    }

    /// The producers this partition knows (DescribeProducers).
    pub fn producers(&self) -> Vec<ProducerInfo> {
        self.log.producers()
    }

    pub(crate) fn remove_expired_producers(&self, now_ms: i64, expiration_ms: i64) -> usize {
        self.log.remove_expired_producers(now_ms, expiration_ms)
    }

    /// Writes a transaction marker as the leader (WriteTxnMarkers).
    pub fn append_txn_marker(
        &self,
        producer_id: i64,
        producer_epoch: i16,
        result: TransactionResult,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if !self.is_leader() {
            return Err(AppendError::NotLeader(format!("{self:?}")));
        }
        let info = self.log.append_txn_marker(
            ProducerId::new(producer_id),
            ProducerEpoch::new(producer_epoch),
            result,
            coordinator_epoch,
            LeaderEpoch::new(self.leader_epoch()),
            now_ms,
        )?;
        self.maybe_advance_high_watermark();
        self.appended.send_replace(info.last_offset.next().get());
        Ok(info)
    }

    /// As leader, the high watermark is the least log end of the ISR: its own, and the
    /// fetch offsets of the followers in it (durable on them). A follower that has not
    /// fetched in this leader epoch holds it where it is. It never moves back.
    fn maybe_advance_high_watermark(&self) {
        if !self.is_leader() {
            return;
        }
        let mut hw = self.log.offsets().log_end_offset.get();
        {
            let isr = self.isr.read();
            let followers = self.followers.lock();
            for id in isr.iter().filter(|id| **id != self.node_id) {
                match followers.get(id) {
                    Some(f) if f.fetch_offset >= 0 => hw = hw.min(f.fetch_offset),
                    _ => return,
                }
            }
        }
        let before = self.high_watermark.fetch_max(hw, Ordering::AcqRel);
        if hw > before {
            self.appended.send_modify(|_| ());
        }
    }

    /// As follower: the leader's high watermark, capped at what this log holds.
    pub fn follower_high_watermark(&self, leader_hw: i64) {
        let end = self.log.offsets().log_end_offset.get();
        self.high_watermark
            .store(leader_hw.min(end), Ordering::Release);
    }

    /// As follower, appends batches fetched from the leader as they are. The caller fsyncs
    /// them (`wait_durable`) before it fetches again, so its next fetch offset is durable.
    pub fn append_as_follower(
        &self,
        batches: &[u8],
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if self.is_leader() {
            return Err(AppendError::NotLeader(format!(
                "{self:?} leads; it does not follow"
            )));
        }
        let info = self
            .log
            .append_as_follower::<AppendError, _>(batches, now_ms, |_| Ok(()))?;
        self.appended.send_replace(info.last_offset.next().get());
        Ok(info)
    }

    /// As follower, drops a divergent tail from `offset` on (the leader's diverging epoch).
    pub fn truncate_to(&self, offset: i64) -> Result<(), StorageError> {
        let guard = self.durable_lock.lock();
        self.log.truncate_to(Offset::new(offset))?;
        let end = self.log.offsets().log_end_offset.get();
        self.high_watermark.fetch_min(end, Ordering::AcqRel);
        // What is appended at these offsets again is not durable until the next fsync; an
        // offset left above the cut would answer waits for it at once.
        self.durable.send_modify(|d| d.offset = d.offset.min(end));
        drop(guard);
        self.appended.send_replace(end);
        Ok(())
    }

    /// As follower whose log ends below the leader's log start: empties the log and starts
    /// it at the leader's log start (`Log::truncate_fully_and_start_at`).
    pub fn truncate_fully_and_start_at(
        &self,
        offset: i64,
        now_ms: i64,
    ) -> Result<(), StorageError> {
        let guard = self.durable_lock.lock();
        self.log
            .truncate_fully_and_start_at(Offset::new(offset), now_ms)?;
        // Nothing is held below the new start, and it is durable as an empty log.
        self.durable
            .send_modify(|d| d.offset = d.offset.max(offset));
        drop(guard);
        self.appended.send_replace(offset);
        Ok(())
    }

    /// Waits until an acks=all append ending at `end_offset` is durable here and below the
    /// high watermark, so fsynced on every ISR member; then checks the ISR still meets
    /// `min.insync.replicas` (else NOT_ENOUGH_REPLICAS_AFTER_APPEND, as Kafka answers).
    /// `durable: false` (a topic with `flush.ms` or `flush.messages`) skips the leader's own
    /// fsync.
    pub async fn wait_acked(&self, end_offset: i64, durable: bool) -> Result<(), AckError> {
        if durable {
            self.wait_durable(end_offset).await?;
        }
        let epoch = self.leader_epoch();
        let mut rx = self.appended.subscribe();
        loop {
            if self.leader_epoch() != epoch || !self.is_leader() {
                return Err(AckError::NotLeader);
            }
            if self.high_watermark() >= end_offset {
                break;
            }
            if rx.changed().await.is_err() {
                return Err(AckError::NotLeader);
            }
        }
        let (isr, min) = (
            self.isr.read().len(),
            self.settings.lock().min_insync_replicas,
        );
        if isr < min {
            return Err(AckError::NotEnoughReplicasAfterAppend { isr, min });
        }
        Ok(())
    }

    pub fn settings(&self) -> TopicSettings {
        self.settings.lock().clone()
    }

    pub(crate) fn set_settings(&self, s: TopicSettings) {
        self.log.set_config(s.log.clone());
        self.throttled.store(
            throttle_bits(&s, self.index, self.node_id),
            Ordering::Release,
        );
        *self.settings.lock() = s;
    }

    /// Whether this broker's replica is in `leader.replication.throttled.replicas`: as
    /// leader, it throttles what it sends to out-of-sync followers.
    pub fn leader_throttled(&self) -> bool {
        self.throttled.load(Ordering::Acquire) & 1 != 0
    }

    /// Whether it is in `follower.replication.throttled.replicas`: out of the ISR, it
    /// throttles its own fetching.
    pub fn follower_throttled(&self) -> bool {
        self.throttled.load(Ordering::Acquire) & 2 != 0
    }

    pub fn offsets(&self) -> LogOffsets {
        self.log.offsets()
    }

    /// How dirty the log is if it is compacted; the cleaner stays below the last stable
    /// offset.
    pub fn cleanable(&self, now_ms: i64) -> Option<vltava_storage::Cleanable> {
        self.log
            .cleanable(now_ms, Offset::new(self.last_stable_offset()))
    }

    /// One cleaning pass, below the last stable offset: every transaction there has ended,
    /// and the log's aborted transactions say which ended in an abort.
    pub fn clean(
        &self,
        now_ms: i64,
        map_entries: usize,
        throttle: &mut dyn vltava_storage::cleaner::Throttle,
    ) -> Result<Option<vltava_storage::CleanStats>, StorageError> {
        let upper_bound = self.last_stable_offset();
        let aborted = self.log.aborted_transactions(
            self.log.offsets().log_start_offset,
            Offset::new(upper_bound),
        );
        let req = vltava_storage::CleanRequest {
            now_ms,
            upper_bound: Offset::new(upper_bound),
            map_entries,
            transactions: vltava_storage::Transactions::Aborted(&aborted),
        };
        self.log.clean(&req, throttle)
    }

    /// Where the cleaned part of the log ends.
    pub fn clean_offset(&self) -> i64 {
        self.log.clean_offset().get()
    }

    pub(crate) fn recovery_point_written(&self, offset: i64) {
        self.log.recovery_point_written(Offset::new(offset));
    }

    /// A compacted log has durable data the recovery checkpoint does not cover yet, which
    /// holds the cleaner back.
    pub fn checkpoint_lags(&self) -> bool {
        self.settings.lock().log.compact
            && self.log.offsets().flushed_offset > self.log.recovery_checkpoint()
    }

    pub fn size_bytes(&self) -> u64 {
        self.log.size_bytes()
    }

    /// Appends a checked produce payload as leader. `validator` sees each batch header as it
    /// will be stored, under the log's lock.
    pub fn append_as_leader<V>(
        &self,
        batches: &mut [u8],
        now_ms: i64,
        validator: V,
    ) -> Result<AppendInfo, AppendError>
    where
        V: FnMut(&BatchHeader) -> Result<(), AppendError>,
    {
        self.append_as_leader_guarded(batches, now_ms, validator, None)
    }

    /// [`Partition::append_as_leader`] for a batch verified with the transaction
    /// coordinator under `guard` (KIP-890), when there is one.
    pub fn append_as_leader_guarded<V>(
        &self,
        batches: &[u8],
        now_ms: i64,
        validator: V,
        guard: Option<vltava_storage::TxnGuard>,
    ) -> Result<AppendInfo, AppendError>
    where
        V: FnMut(&BatchHeader) -> Result<(), AppendError>,
    {
        self.leader_append(|log, epoch| {
            log.append_as_leader_guarded(batches, epoch, now_ms, validator, guard)
        })
    }

    /// An append as the leader: refused unless this broker leads, and once done, the high
    /// watermark moves (if this is the only in-sync replica) and followers are woken.
    fn leader_append(
        &self,
        append: impl FnOnce(&Log, LeaderEpoch) -> Result<AppendInfo, AppendError>,
    ) -> Result<AppendInfo, AppendError> {
        if !self.is_leader() {
            return Err(AppendError::NotLeader(format!("{self:?}")));
        }
        let info = append(&self.log, LeaderEpoch::new(self.leader_epoch()))?;
        if !info.duplicate {
            self.maybe_advance_high_watermark();
            self.appended.send_replace(info.last_offset.next().get());
        }
        Ok(info)
    }

    /// [`Partition::append_as_leader_guarded`] for records checked as they were spliced into
    /// a pipe: `bodies` writes each batch's bytes behind its header.
    pub fn append_streamed_as_leader_guarded<V>(
        &self,
        batches: &[vltava_record::stream::StreamedBatch],
        bodies: &mut dyn vltava_storage::BodySource,
        now_ms: i64,
        validator: V,
        guard: Option<vltava_storage::TxnGuard>,
    ) -> Result<AppendInfo, AppendError>
    where
        V: FnMut(&BatchHeader) -> Result<(), AppendError>,
    {
        self.leader_append(|log, epoch| {
            log.append_streamed_as_leader(batches, bodies, epoch, now_ms, validator, guard)
        })
    }

    /// Whether `producer_id` has a transaction open in this partition (KIP-890: a
    /// transactional batch that opens one is first checked with the coordinator).
    pub fn in_transaction(&self, producer_id: i64, epoch: i16) -> bool {
        self.log
            .in_transaction(ProducerId::new(producer_id), ProducerEpoch::new(epoch))
    }

    /// See [`vltava_storage::Log::start_txn_verification`].
    pub fn start_txn_verification(&self, producer_id: i64) -> vltava_storage::TxnGuard {
        self.log
            .start_txn_verification(ProducerId::new(producer_id))
    }

    pub fn end_txn_verification(&self, guard: vltava_storage::TxnGuard) {
        self.log.end_txn_verification(guard)
    }

    /// Appends a coordinator's own batch as leader (its records, or a TxnOffsetCommit's
    /// transactional batch): producer epochs are checked, sequences are not.
    pub fn append_as_coordinator(
        &self,
        batch: &mut [u8],
        now_ms: i64,
    ) -> Result<AppendInfo, AppendError> {
        if !self.is_leader() {
            return Err(AppendError::NotLeader(format!("{self:?}")));
        }
        let info =
            self.log
                .append_as_coordinator(batch, LeaderEpoch::new(self.leader_epoch()), now_ms)?;
        self.maybe_advance_high_watermark();
        self.appended.send_replace(info.last_offset.next().get());
        Ok(info)
    }

    /// Reads whole batches from `offset`, up to the high watermark or the log end.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        limit: ReadLimit,
    ) -> Result<ReadResult, StorageError> {
        self.log.read(
            Offset::new(offset),
            Offset::new(self.read_limit(limit)),
            max_bytes,
            min_one,
        )
    }

    /// Where the whole batches [`Partition::read`] would return lie, without reading them.
    pub fn read_region(
        &self,
        offset: i64,
        max_bytes: usize,
        min_one: bool,
        limit: ReadLimit,
    ) -> Result<vltava_storage::RegionRead, StorageError> {
        self.log.read_region(
            Offset::new(offset),
            Offset::new(self.read_limit(limit)),
            max_bytes,
            min_one,
        )
    }

    fn read_limit(&self, limit: ReadLimit) -> i64 {
        match limit {
            ReadLimit::HighWatermark => self.high_watermark(),
            ReadLimit::LastStable => self.last_stable_offset(),
            ReadLimit::LogEnd => i64::MAX,
        }
    }

    pub fn offset_for_timestamp(&self, ts: i64) -> Result<Option<(i64, i64)>, StorageError> {
        Ok(self
            .log
            .offset_for_timestamp(ts)?
            .map(|(o, t)| (o.get(), t)))
    }

    pub fn max_timestamp(&self) -> Option<(i64, i64)> {
        self.log.max_timestamp().map(|(o, t)| (o.get(), t))
    }

    /// OffsetForLeaderEpoch from the leader-epoch cache.
    pub fn end_offset_for_epoch(&self, epoch: i32) -> (i32, i64) {
        let (epoch, end) = self.log.end_offset_for_epoch(LeaderEpoch::new(epoch));
        (epoch.get(), end.get())
    }

    /// DeleteRecords: moves the log start offset, then deletes whole segments below it.
    pub fn delete_records_before(&self, offset: i64, now_ms: i64) -> Result<i64, StorageError> {
        let low = self.log.delete_records_before(Offset::new(offset))?;
        if let Err(e) = self.log.enforce_retention(now_ms) {
            tracing::warn!(partition = ?self, error = %e, "segment deletion after DeleteRecords failed");
        }
        Ok(low.get())
    }

    pub(crate) fn enforce_retention(&self, now_ms: i64) -> Result<usize, StorageError> {
        self.log.enforce_retention(now_ms)
    }

    pub(crate) fn close(&self) -> Result<(), StorageError> {
        self.log.close()
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        self.log.dir()
    }

    /// One fsync covers every append that happened before it started: producers waiting for
    /// durability pile up on `durable` while an fsync runs, and the next one covers them all.
    async fn flusher(me: std::sync::Weak<Self>) {
        let Some(p) = me.upgrade() else { return };
        let flush_times = Arc::clone(&p.flush_times);
        let (request, log, durable, durable_lock, mut stop) = (
            Arc::clone(&p.flush_request),
            Arc::clone(&p.log),
            p.durable.clone(),
            Arc::clone(&p.durable_lock),
            p.flusher_stop.subscribe(),
        );
        drop(p);
        loop {
            tokio::select! {
                () = request.notified() => {}
                // Nothing is ever sent: this fires when the partition is dropped.
                _ = stop.changed() => return,
            }
            let (log, durable_now, lock, times) = (
                Arc::clone(&log),
                durable.clone(),
                Arc::clone(&durable_lock),
                Arc::clone(&flush_times),
            );
            let flush = move || {
                let (before, started) = (log.offsets().flushed_offset, Instant::now());
                let after = log.flush()?;
                if after > before {
                    times.record(started.elapsed());
                }
                // The log's own flushed offset, read under the truncations' lock: one that
                // ran during this fsync has lowered it, and it stays lowered.
                let _guard = lock.lock();
                let offset = log.offsets().flushed_offset.get();
                durable_now.send_modify(|d| d.offset = offset);
                Ok::<_, StorageError>(())
            };
            // The fsync starts on this task's thread: see `run_blocking`.
            let flushed = crate::broker::run_blocking(flush).await;
            match flushed {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "flush failed");
                    durable.send_modify(|d| d.failed = true);
                    return;
                }
                Err(e) => {
                    tracing::error!(error = %e, "flush task panicked");
                    durable.send_modify(|d| d.failed = true);
                    return;
                }
            }
        }
    }

    pub fn is_poisoned(&self) -> bool {
        self.log.is_poisoned()
    }

    /// What the ReplicaManager gauges count of this partition, read without copying.
    /// One lock at a time: a struct literal would hold every guard to its end.
    pub fn replica_state(&self) -> crate::replica_metrics::ReplicaState {
        let replicas = self.replicas.read().len();
        let isr = self.isr.read().len();
        let min_insync_replicas = self.settings.lock().min_insync_replicas;
        crate::replica_metrics::ReplicaState {
            leader: self.is_leader(),
            replicas,
            isr,
            min_insync_replicas,
            offline: self.is_poisoned(),
        }
    }

    /// Brings a log poisoned by a failed write or fsync (a full disk, say) back once the disk
    /// works again, at its last durable offset, without a restart. Returns whether it did.
    pub(crate) fn recover(self: &Arc<Self>, now_ms: i64) -> Result<bool, StorageError> {
        if !self.log.is_poisoned() {
            return Ok(false);
        }
        self.log.reopen(now_ms)?;
        let o = self.log.offsets();
        // Nothing above the durable offset survived the reopen, so nothing above it is
        // visible either.
        self.high_watermark
            .fetch_min(o.log_end_offset.get(), Ordering::AcqRel);
        self.maybe_advance_high_watermark();
        self.appended.send_replace(o.log_end_offset.get());
        self.durable.send_replace(Durable {
            offset: o.flushed_offset.get(),
            failed: false,
        });
        // The flusher stopped at the failure.
        tokio::spawn(Self::flusher(Arc::downgrade(self)));
        Ok(true)
    }

    pub fn subscribe_appends(&self) -> watch::Receiver<i64> {
        self.appended.subscribe()
    }

    /// Waits until everything below `end_offset` is on stable storage.
    pub async fn wait_durable(&self, end_offset: i64) -> Result<(), StorageError> {
        let mut rx = self.durable.subscribe();
        if rx.borrow().offset >= end_offset {
            return Ok(());
        }
        self.flush_request.notify_one();
        let ok =
            matches!(rx.wait_for(|d| d.offset >= end_offset || d.failed).await, Ok(d) if !d.failed);
        if ok {
            Ok(())
        } else {
            Err(StorageError::Poisoned {
                dir: self.log.dir().to_path_buf(),
            })
        }
    }

    /// Starts writing what was appended to the disk, for an fsync about to be asked for
    /// ([`vltava_storage::Log::start_writeback`]). Blocking: call it off the async workers.
    pub fn start_writeback(&self) {
        self.log.start_writeback();
    }

    /// Asks for a background flush without waiting (periodic `flush.ms`, `flush.messages`).
    pub fn request_flush(&self) {
        self.flush_request.notify_one();
    }

    /// Offsets appended but not yet known to be durable.
    pub fn unflushed(&self) -> i64 {
        let o = self.log.offsets();
        o.log_end_offset.since(o.flushed_offset)
    }
}

/// The throttle bits of partition `index` on broker `node` under `s`.
fn throttle_bits(s: &TopicSettings, index: i32, node: NodeId) -> u8 {
    u8::from(s.leader_throttled.covers(index, node.get()))
        | (u8::from(s.follower_throttled.covers(index, node.get())) << 1)
}
