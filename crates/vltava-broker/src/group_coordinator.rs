//! The I/O side of group coordination: parks JoinGroup/SyncGroup requests until the state
//! machine answers them, writes group and offset records to `__consumer_offsets`, replays
//! them at start, and drives time (session expiry, rebalance deadlines, offset expiry).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use vltava_coordinator::classic::{Effects, GroupConfig, JoinResult, Reply, SyncResult};
use vltava_coordinator::consumer::ConsumerGroupConfig;
use vltava_coordinator::records::{Record, TopicIds};
use vltava_coordinator::state::{CoordinatorState, Group};
use vltava_coordinator::{offsets_partition_for, GroupError};
use vltava_metadata::MetadataImage;
use vltava_storage::{accept_all, StorageError};

use crate::broker::{now_ms, Broker};
use crate::config::BrokerConfig;
use crate::partition::Partition;

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

pub struct Inner {
    pub state: CoordinatorState,
    joins: HashMap<(String, String), oneshot::Sender<JoinResult>>,
    syncs: HashMap<(String, String), oneshot::Sender<SyncResult>>,
}

pub struct GroupCoordinator {
    inner: Mutex<Inner>,
    /// `offsets.topic.num.partitions` until the topic exists; then its real partition count,
    /// which fixes where each group lives (a later config change must not move groups).
    pub partitions: std::sync::atomic::AtomicI32,
    pub retention_ms: i64,
    pub metadata_max_bytes: usize,
    pub commit_timeout_ms: u64,
}

/// Where a reply to a parked request comes from.
pub enum Parked<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// Why a write to `__consumer_offsets` failed.
#[derive(Debug, thiserror::Error)]
enum WriteError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A name too long for Kafka's record layout; nothing of the write was appended.
    #[error(transparent)]
    Encode(#[from] vltava_coordinator::records::RecordError),
}

/// Topic names and ids from the metadata image, for the KIP-848 records (which store ids).
struct ImageTopics<'a>(&'a MetadataImage);

impl TopicIds for ImageTopics<'_> {
    fn topic_id(&self, name: &str) -> Option<uuid::Uuid> {
        self.0.topic(name).map(|t| t.topic_id)
    }

    fn topic_name(&self, id: uuid::Uuid) -> Option<String> {
        self.0.topic_by_id(&id).map(|t| t.name.clone())
    }
}

/// Records a `__consumer_offsets` partition may hold beyond twice its live state before it is
/// trimmed.
const TRIM_SLACK_RECORDS: i64 = 1000;

impl GroupCoordinator {
    pub fn new(config: &BrokerConfig) -> Self {
        let i = |k: &str| config.get_i64(k);
        let state = CoordinatorState {
            classic: GroupConfig {
                min_session_timeout_ms: i("group.min.session.timeout.ms") as i32,
                max_session_timeout_ms: i("group.max.session.timeout.ms") as i32,
                initial_rebalance_delay_ms: i("group.initial.rebalance.delay.ms"),
                max_size: i("group.max.size") as usize,
            },
            consumer: ConsumerGroupConfig {
                session_timeout_ms: i("group.consumer.session.timeout.ms"),
                heartbeat_interval_ms: i("group.consumer.heartbeat.interval.ms") as i32,
                max_size: i("group.max.size") as usize,
            },
            ..Default::default()
        };
        Self {
            inner: Mutex::new(Inner {
                state,
                joins: HashMap::new(),
                syncs: HashMap::new(),
            }),
            partitions: (i("offsets.topic.num.partitions") as i32).into(),
            retention_ms: i("offsets.retention.minutes") * 60_000,
            metadata_max_bytes: i("offset.metadata.max.bytes") as usize,
            commit_timeout_ms: i("offsets.commit.timeout.ms") as u64,
        }
    }

    /// Runs `f` on the state machine under the lock.
    pub fn with_state<T>(&self, f: impl FnOnce(&mut CoordinatorState) -> T) -> T {
        f(&mut self.inner.lock().state)
    }

    /// Rebuilds groups and offsets from `__consumer_offsets`.
    pub fn load(&self, broker: &Broker) {
        let now = now_ms();
        let mut count = 0;
        let image = broker.controller.image();
        let topics = ImageTopics(&image);
        let mut inner = self.inner.lock();
        for p in broker.partitions.topic(OFFSETS_TOPIC) {
            let mut offset = p.log.offsets().log_start_offset;
            loop {
                // Every record written so far is replayed: reads go up to the log end.
                let Ok(r) = p.log.read(offset, i64::MAX, 1 << 20, true) else {
                    break;
                };
                if r.records.is_empty() {
                    break;
                }
                for item in vltava_record::Batches::new(&r.records) {
                    let Ok((h, range)) = item else { break };
                    offset = h.next_offset();
                    let Ok(records) = vltava_record::uncompressed_records(&r.records[range]) else {
                        continue;
                    };
                    for rec in records {
                        let Some(key) = rec.key else { continue };
                        match Record::decode(key, rec.value, &topics) {
                            Ok(decoded) => {
                                for record in &decoded {
                                    inner.state.replay(record, now);
                                    count += 1;
                                }
                            }
                            Err(e) => {
                                tracing::debug!(partition = p.index, error = %e, "skipped a record of __consumer_offsets");
                            }
                        }
                    }
                }
            }
        }
        tracing::info!(
            records = count,
            groups = inner.state.groups.len(),
            "loaded group coordinator state"
        );
    }

    fn partition_for(&self, broker: &Broker, group: &str) -> Option<Arc<Partition>> {
        broker.partitions.get(
            OFFSETS_TOPIC,
            offsets_partition_for(group, self.partitions.load(Ordering::Relaxed)),
        )
    }

    /// Appends records for `group` and applies them; returns what to wait on for durability.
    fn write(
        &self,
        broker: &Broker,
        inner: &mut Inner,
        group: &str,
        records: &[Record],
    ) -> Result<(Arc<Partition>, i64), WriteError> {
        let p = self
            .partition_for(broker, group)
            .ok_or_else(|| StorageError::Poisoned {
                dir: OFFSETS_TOPIC.into(),
            })?;
        let now = now_ms();
        let image = broker.controller.image();
        let topics = ImageTopics(&image);
        let encoded: Vec<(Vec<u8>, Option<Vec<u8>>)> = records
            .iter()
            .map(|r| r.encode(&topics))
            .collect::<Result<_, _>>()?;
        let recs: Vec<vltava_record::RecordSpec<'_>> = encoded
            .iter()
            .map(|(k, v)| (Some(k.as_slice()), v.as_deref(), now))
            .collect();
        let mut batch = vltava_record::build_batch(0, &recs);
        let info = p
            .log
            .append_as_leader(&mut batch, p.leader_epoch, now, accept_all)?;
        p.notify_appended(info.last_offset + 1);
        p.request_flush();
        for r in records {
            // The live group already is what its group records say; replaying them would reset
            // in-flight join, sync and session state. Offsets and tombstones (deletion,
            // expiry) are applied here.
            if matches!(r, Record::Offset { .. }) || r.is_tombstone() {
                inner.state.replay(r, now);
            }
        }
        Ok((p, info.last_offset + 1))
    }

    /// Delivers parked replies and persists the group if it changed.
    fn apply_effects(&self, broker: &Broker, inner: &mut Inner, group: &str, effects: Effects) {
        if effects.persist {
            if let Some(Group::Classic(g)) = inner.state.groups.get(group) {
                let rec = Record::Group {
                    group: group.to_string(),
                    value: Some(g.snapshot()),
                };
                if let Err(e) = self.write(broker, inner, group, &[rec]) {
                    tracing::warn!(group, error = %e, "could not persist group metadata");
                }
            }
        }
        for (member, result) in effects.joins {
            if let Some(tx) = inner.joins.remove(&(group.to_string(), member)) {
                let _ = tx.send(result);
            }
        }
        for (member, result) in effects.syncs {
            if let Some(tx) = inner.syncs.remove(&(group.to_string(), member)) {
                let _ = tx.send(result);
            }
        }
    }

    pub fn join(
        &self,
        broker: &Broker,
        group: &str,
        req: vltava_coordinator::classic::JoinRequest,
    ) -> Parked<JoinResult> {
        let mut inner = self.inner.lock();
        let now = now_ms();
        let member = req.member_id.clone();
        let cfg = inner.state.classic;
        let existed = inner.state.groups.contains_key(group);
        let (reply, effects) = match inner.state.classic_mut(group, now) {
            Ok(g) => g.join(now, &cfg, req),
            Err(e) => return Parked::Now(JoinResult::error(e, &member)),
        };
        if !existed {
            inner.state.discard_if_empty(group);
        }
        let parked = match reply {
            Reply::Now(r) => Parked::Now(r),
            Reply::Wait(id) => {
                let (tx, rx) = oneshot::channel();
                if let Some(old) = inner.joins.insert((group.to_string(), id.clone()), tx) {
                    let _ = old.send(JoinResult::error(GroupError::UnknownMemberId, &id));
                }
                Parked::Later(rx)
            }
        };
        self.apply_effects(broker, &mut inner, group, effects);
        parked
    }

    pub fn sync(
        &self,
        broker: &Broker,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> Parked<SyncResult> {
        let mut inner = self.inner.lock();
        let now = now_ms();
        let (reply, effects) = match inner.state.groups.get_mut(group) {
            Some(Group::Classic(g)) => g.sync(now, member_id, generation, instance, assignments),
            _ => return Parked::Now(SyncResult::error(GroupError::UnknownMemberId)),
        };
        let parked = match reply {
            Reply::Now(r) => Parked::Now(r),
            Reply::Wait(id) => {
                let (tx, rx) = oneshot::channel();
                inner.syncs.insert((group.to_string(), id), tx);
                Parked::Later(rx)
            }
        };
        self.apply_effects(broker, &mut inner, group, effects);
        parked
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
    ) -> Result<(), GroupError> {
        let mut inner = self.inner.lock();
        match inner.state.groups.get_mut(group) {
            Some(Group::Classic(g)) => g.heartbeat(now_ms(), member_id, generation, instance),
            Some(Group::Consumer(_)) => Err(GroupError::GroupIdTypeMismatch),
            None => Err(GroupError::UnknownMemberId),
        }
    }

    pub fn leave(
        &self,
        broker: &Broker,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let mut inner = self.inner.lock();
        let (results, effects) = match inner.state.groups.get_mut(group) {
            Some(Group::Classic(g)) => g.leave(now_ms(), members),
            _ => return Err(GroupError::UnknownMemberId),
        };
        self.apply_effects(broker, &mut inner, group, effects);
        Ok(results)
    }

    /// Validates and writes a commit; the caller awaits the returned durability target.
    pub fn commit(
        &self,
        broker: &Broker,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
        entries: &[vltava_coordinator::state::CommitEntry],
    ) -> Result<Option<(Arc<Partition>, i64)>, GroupError> {
        let mut inner = self.inner.lock();
        inner
            .state
            .validate_commit(group, member_id, generation, instance)?;
        if entries.is_empty() {
            return Ok(None);
        }
        let records = CoordinatorState::commit_records(group, entries, now_ms());
        self.write(broker, &mut inner, group, &records)
            .map(Some)
            .map_err(|e| {
                tracing::warn!(group, error = %e, "offset commit write failed");
                GroupError::CoordinatorNotAvailable
            })
    }

    pub fn delete_group(&self, broker: &Broker, group: &str) -> Result<(), GroupError> {
        let mut inner = self.inner.lock();
        let records = inner.state.delete_group(group)?;
        self.write(broker, &mut inner, group, &records)
            .map(|_| ())
            .map_err(|_| GroupError::CoordinatorNotAvailable)
    }

    /// Deletes committed offsets of partitions the group no longer consumes.
    pub fn delete_offsets(
        &self,
        broker: &Broker,
        group: &str,
        partitions: &[(String, i32)],
    ) -> Result<Vec<Result<(), GroupError>>, GroupError> {
        let mut inner = self.inner.lock();
        let subscribed: Vec<String> = match inner.state.groups.get(group) {
            Some(Group::Consumer(g)) => g.subscribed_topics().into_iter().collect(),
            Some(Group::Classic(g)) if !g.members.is_empty() => {
                // A classic group with members consumes whatever it has committed for.
                return Ok(partitions
                    .iter()
                    .map(|(t, p)| {
                        if inner.state.offsets.get(group, t, *p).is_some() {
                            Err(GroupError::GroupSubscribedToTopic)
                        } else {
                            Ok(())
                        }
                    })
                    .collect());
            }
            _ if !inner.state.offsets.has_group(group)
                && !inner.state.groups.contains_key(group) =>
            {
                return Err(GroupError::GroupIdNotFound)
            }
            _ => Vec::new(),
        };
        let mut results = Vec::new();
        let mut records = Vec::new();
        for (t, p) in partitions {
            if subscribed.contains(t) {
                results.push(Err(GroupError::GroupSubscribedToTopic));
            } else {
                results.push(Ok(()));
                records.push(Record::Offset {
                    group: group.to_string(),
                    topic: t.clone(),
                    partition: *p,
                    value: None,
                });
            }
        }
        if !records.is_empty() {
            self.write(broker, &mut inner, group, &records)
                .map_err(|_| GroupError::CoordinatorNotAvailable)?;
        }
        Ok(results)
    }

    /// KIP-848 heartbeat.
    pub fn consumer_heartbeat(
        &self,
        broker: &Broker,
        group: &str,
        req: vltava_coordinator::consumer::HeartbeatRequest,
    ) -> Result<vltava_coordinator::consumer::HeartbeatResponse, GroupError> {
        let image = broker.controller.image();
        let partitions_of = |t: &str| image.topic(t).map(|t| t.partitions.len() as i32);
        let mut inner = self.inner.lock();
        let cfg = inner.state.consumer;
        let existed = inner.state.groups.contains_key(group);
        let g = inner.state.consumer_mut(group, now_ms())?;
        let before = g.durable();
        let result = g.heartbeat(now_ms(), &cfg, req, &partitions_of);
        if !existed {
            inner.state.discard_if_empty(group);
        }
        self.persist_consumer_group(broker, &mut inner, group, Some(before));
        result
    }

    /// Stores what changed in a KIP-848 group since `before` (`None`: all of it), as the
    /// coordinator's records for it. Most heartbeats change nothing durable and write nothing.
    fn persist_consumer_group(
        &self,
        broker: &Broker,
        inner: &mut Inner,
        group: &str,
        before: Option<vltava_coordinator::consumer::ConsumerGroup>,
    ) {
        let Some(Group::Consumer(g)) = inner.state.groups.get(group) else {
            return;
        };
        let now = g.durable();
        if before.as_ref() == Some(&now) {
            return;
        }
        let records = now.records(before.as_ref());
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.write(broker, inner, group, &records) {
            tracing::warn!(group, error = %e, "could not persist consumer group");
        }
    }

    /// Drives time: session expiry, overdue rebalances.
    pub fn tick(&self, broker: &Broker) {
        let now = now_ms();
        let image = broker.controller.image();
        let partitions_of = |t: &str| image.topic(t).map(|t| t.partitions.len() as i32);
        let mut inner = self.inner.lock();
        let ids: Vec<String> = inner.state.groups.keys().cloned().collect();
        let cfg = inner.state.consumer;
        for id in ids {
            let effects = match inner.state.groups.get_mut(&id) {
                Some(Group::Classic(g)) => g.tick(now),
                Some(Group::Consumer(g)) => {
                    let before = g.durable();
                    if g.tick(now, &cfg, &partitions_of) {
                        self.persist_consumer_group(broker, &mut inner, &id, Some(before));
                    }
                    Effects::default()
                }
                None => continue,
            };
            self.apply_effects(broker, &mut inner, &id, effects);
        }
    }

    /// Keeps each `__consumer_offsets` partition from growing without bound: once it holds
    /// many more records than its groups' live state, the live state is written again, made
    /// durable, and the log start moves past everything older (retention then deletes the
    /// old segments). Replay from the log start rebuilds the same state.
    pub fn trim_offsets_log(&self, broker: &Broker) {
        let mut inner = self.inner.lock();
        let n = self.partitions.load(Ordering::Relaxed);
        let mut trimmed = false;
        for p in broker.partitions.topic(OFFSETS_TOPIC) {
            let offs = p.log.offsets();
            let held = offs.log_end_offset - offs.log_start_offset;
            let live = inner
                .state
                .live_records(|g| offsets_partition_for(g, n) == p.index);
            if held <= 2 * live.len() as i64 + TRIM_SLACK_RECORDS {
                continue;
            }
            let first = offs.log_end_offset;
            let written = live.chunks(1000).try_for_each(|chunk| {
                // The records are grouped by group; `write` only needs a group for placement,
                // and every group here lives on `p`.
                self.write(broker, &mut inner, chunk[0].group(), chunk)
                    .map(|_| ())
            });
            let durable = written.and_then(|()| Ok(p.log.flush()?));
            match durable.and_then(|_| Ok(p.log.delete_records_before(first)?)) {
                Ok(start) => {
                    trimmed = true;
                    tracing::info!(
                        partition = p.index,
                        dropped = start - offs.log_start_offset,
                        live = live.len(),
                        "rewrote live group state; older records are no longer needed"
                    )
                }
                Err(e) => tracing::warn!(partition = p.index, error = %e, "could not trim"),
            }
        }
        drop(inner);
        if trimmed {
            broker.persist_log_starts();
        }
    }

    /// Removes offsets past `offsets.retention.minutes`, and empty groups left without any.
    pub fn expire_offsets(&self, broker: &Broker) {
        let mut inner = self.inner.lock();
        let records = inner.state.expire_offsets(now_ms(), self.retention_ms);
        let mut by_group: BTreeMap<String, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_group.entry(r.group().to_string()).or_default().push(r);
        }
        for (group, recs) in by_group {
            tracing::info!(group = %group, records = recs.len(), "expiring committed offsets or an empty group");
            if let Err(e) = self.write(broker, &mut inner, &group, &recs) {
                tracing::warn!(group = %group, error = %e, "offset expiry failed");
            }
        }
    }
}
