//! The group coordinator on the coordinator runtime: one shard per `__consumer_offsets`
//! partition ([`GroupShard`], pure, from `vltava-coordinator`), plus what only the broker has —
//! the parked JoinGroup/SyncGroup replies, the metadata image KIP-848 assignments read, and
//! the timers (session expiry and rebalance deadlines, offset expiry).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Weak};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::oneshot;
use vltava_coordinator::classic::{Effects, JoinRequest, JoinResult, Reply, SyncResult};
use vltava_coordinator::consumer::{ConsumerGroupConfig, HeartbeatRequest, HeartbeatResponse};
use vltava_coordinator::group_shard::GroupShard;
use vltava_coordinator::records::{Record, RecordError, TopicIds};
use vltava_coordinator::shard::{CoordinatorResult, CoordinatorShard};
use vltava_coordinator::state::{CommitEntry, CoordinatorState};
use vltava_coordinator::{offsets_partition_for, GroupError};
use vltava_metadata::MetadataImage;
use vltava_types::{ProducerEpoch, ProducerId};

use crate::broker::{Broker, SystemClock};
use crate::config::BrokerConfig;
use crate::coordinator_log::PartitionTableLog;
use crate::coordinator_runtime::{
    AfterDurable, Clock, CoordinatorLog, CoordinatorRuntime, RuntimeConfig, RuntimeError, Timer,
};

pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// How often sessions and rebalance deadlines are checked.
const TICK_INTERVAL_MS: i64 = 100;

/// Where a reply to a parked request comes from.
pub enum Parked<T> {
    Now(T),
    Later(oneshot::Receiver<T>),
}

/// The current metadata image, wherever it is kept.
pub type ImageSource = Arc<dyn Fn() -> Arc<MetadataImage> + Send + Sync>;

/// Topic names and ids from the metadata image, for the KIP-848 records (which store ids).
struct ImageTopics(ImageSource);

impl TopicIds for ImageTopics {
    fn topic_id(&self, name: &str) -> Option<uuid::Uuid> {
        (self.0)().topic(name).map(|t| t.topic_id)
    }

    fn topic_name(&self, id: uuid::Uuid) -> Option<String> {
        (self.0)().topic_by_id(&id).map(|t| t.name.clone())
    }
}

/// A group shard with the replies parked on it.
pub struct GroupShardIo {
    pub shard: GroupShard,
    joins: HashMap<(String, String), oneshot::Sender<JoinResult>>,
    syncs: HashMap<(String, String), oneshot::Sender<SyncResult>>,
}

fn inner(io: &mut GroupShardIo) -> &mut GroupShard {
    &mut io.shard
}

/// Parked replies to send once the operation's records are durable.
#[derive(Default)]
struct Deliveries(Vec<Delivery>);

enum Delivery {
    Join(oneshot::Sender<JoinResult>, JoinResult),
    Sync(oneshot::Sender<SyncResult>, SyncResult),
}

impl Deliveries {
    fn send(self) {
        for d in self.0 {
            match d {
                Delivery::Join(tx, r) => {
                    let _ = tx.send(r);
                }
                Delivery::Sync(tx, r) => {
                    let _ = tx.send(r);
                }
            }
        }
    }
}

impl GroupShardIo {
    /// Takes the parked senders `effects` answers.
    fn take(&mut self, group: &str, effects: Effects, out: &mut Deliveries) {
        for (member, result) in effects.joins {
            if let Some(tx) = self.joins.remove(&(group.to_string(), member)) {
                out.0.push(Delivery::Join(tx, result));
            }
        }
        for (member, result) in effects.syncs {
            if let Some(tx) = self.syncs.remove(&(group.to_string(), member)) {
                out.0.push(Delivery::Sync(tx, result));
            }
        }
    }

    fn park_join(&mut self, group: &str, reply: Reply<JoinResult>) -> Parked<JoinResult> {
        match reply {
            Reply::Now(r) => Parked::Now(r),
            Reply::Wait(id) => {
                let (tx, rx) = oneshot::channel();
                if let Some(old) = self.joins.insert((group.to_string(), id.clone()), tx) {
                    let _ = old.send(JoinResult::error(GroupError::UnknownMemberId, &id));
                }
                Parked::Later(rx)
            }
        }
    }

    fn park_sync(&mut self, group: &str, reply: Reply<SyncResult>) -> Parked<SyncResult> {
        match reply {
            Reply::Now(r) => Parked::Now(r),
            Reply::Wait(id) => {
                let (tx, rx) = oneshot::channel();
                self.syncs.insert((group.to_string(), id), tx);
                Parked::Later(rx)
            }
        }
    }
}

impl CoordinatorShard for GroupShardIo {
    type Record = Record;
    type CodecError = RecordError;

    fn replay(&mut self, record: &Record, now_ms: i64) {
        self.shard.replay(record, now_ms);
    }

    fn encode(&self, record: &Record) -> Result<(Vec<u8>, Option<Vec<u8>>), RecordError> {
        self.shard.encode(record)
    }

    fn decode(&self, key: &[u8], value: Option<&[u8]>) -> Result<Vec<Record>, RecordError> {
        self.shard.decode(key, value)
    }

    fn replay_transactional(&mut self, producer_id: ProducerId, record: &Record, now_ms: i64) {
        self.shard.replay_transactional(producer_id, record, now_ms);
    }

    fn replay_end_txn(&mut self, producer_id: ProducerId, commit: bool, now_ms: i64) {
        self.shard.replay_end_txn(producer_id, commit, now_ms);
    }

    fn has_open_transactions(&self) -> bool {
        self.shard.has_open_transactions()
    }
}

type IoResult<R> = CoordinatorResult<GroupShardIo, R>;

impl From<RuntimeError> for GroupError {
    fn from(e: RuntimeError) -> Self {
        match e {
            RuntimeError::NotCoordinator => GroupError::NotCoordinator,
            RuntimeError::LoadInProgress => GroupError::CoordinatorLoadInProgress,
            RuntimeError::NotAvailable => GroupError::CoordinatorNotAvailable,
        }
    }
}

pub struct GroupCoordinator {
    runtime: CoordinatorRuntime<GroupShardIo>,
    image: ImageSource,
    /// `offsets.topic.num.partitions` until the topic exists; then its real partition count,
    /// which fixes where each group lives (a later config change must not move groups).
    pub partitions: AtomicI32,
    pub metadata_max_bytes: usize,
    pub commit_timeout_ms: u64,
}

impl GroupCoordinator {
    /// The broker's coordinator: `__consumer_offsets` through the partition table, wall-clock
    /// time, the controller's image.
    pub fn new(config: &BrokerConfig, broker: Weak<Broker>) -> Self {
        let log = Arc::new(PartitionTableLog::new(broker.clone(), OFFSETS_TOPIC));
        let image: ImageSource = Arc::new(move || {
            broker
                .upgrade()
                .map(|b| b.controller.image())
                .unwrap_or_default()
        });
        Self::with_parts(config, log, Arc::new(SystemClock), image)
    }

    pub fn with_parts(
        config: &BrokerConfig,
        log: Arc<dyn CoordinatorLog>,
        clock: Arc<dyn Clock>,
        image: ImageSource,
    ) -> Self {
        let i = |k: &str| config.get_i64(k);
        let state = CoordinatorState {
            classic: vltava_coordinator::classic::GroupConfig {
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
        let retention_ms = i("offsets.retention.minutes") * 60_000;
        let check_ms = i("offsets.retention.check.interval.ms").max(1);
        let topics: Arc<dyn TopicIds + Send + Sync> = Arc::new(ImageTopics(Arc::clone(&image)));
        let (classic, consumer) = (state.classic, state.consumer);
        let new_shard = Box::new(move |_partition: i32| GroupShardIo {
            shard: GroupShard::new(
                CoordinatorState {
                    classic,
                    consumer,
                    ..Default::default()
                },
                Arc::clone(&topics),
                retention_ms,
            ),
            joins: HashMap::new(),
            syncs: HashMap::new(),
        });
        let tick_image = Arc::clone(&image);
        let timers = vec![
            Timer {
                name: "group sessions and rebalances",
                interval_ms: TICK_INTERVAL_MS,
                run: Arc::new(move |s: &mut GroupShardIo, now| {
                    let image = tick_image();
                    let partitions_of = |t: &str| image.topic(t).map(|t| t.partitions.len() as i32);
                    let r = s.shard.tick(now, &partitions_of).lift(inner);
                    let mut out = Deliveries::default();
                    let r = r.map(|by_group| {
                        for (group, effects) in by_group {
                            s.take(&group, effects, &mut out);
                        }
                    });
                    r.map(|()| -> AfterDurable { Box::new(move || out.send()) })
                }),
            },
            Timer {
                name: "offset expiry",
                interval_ms: check_ms,
                run: Arc::new(|s: &mut GroupShardIo, now| {
                    let r = s.shard.expire_offsets(now).lift(inner);
                    if !r.records.is_empty() {
                        tracing::info!(
                            records = r.records.len(),
                            "expiring committed offsets or empty groups"
                        );
                    }
                    r.map(|()| -> AfterDurable { Box::new(|| ()) })
                }),
            },
        ];
        let runtime = CoordinatorRuntime::new(
            RuntimeConfig {
                topic: OFFSETS_TOPIC,
                new_shard,
                timers,
            },
            log,
            clock,
        );
        Self {
            runtime,
            image,
            partitions: (i("offsets.topic.num.partitions") as i32).into(),
            metadata_max_bytes: i("offset.metadata.max.bytes") as usize,
            commit_timeout_ms: i("offsets.commit.timeout.ms") as u64,
        }
    }

    /// This broker leads `partition` of `__consumer_offsets` at `epoch`: load its groups. The
    /// future completes when the load is over; nothing needs to wait for it.
    pub fn on_leader(&self, partition: i32, epoch: i32) -> BoxFuture<'static, ()> {
        self.runtime.on_leader(partition, epoch)
    }

    /// This broker no longer leads `partition`: its groups are dropped.
    pub fn on_resigned(&self, partition: i32) {
        self.runtime.on_resigned(partition);
    }

    pub fn partition_for(&self, group: &str) -> i32 {
        offsets_partition_for(group, self.partitions.load(Ordering::Relaxed))
    }

    pub fn now_ms(&self) -> i64 {
        self.runtime.clock().now_ms()
    }

    /// Reads the state of the shard that holds `group`.
    pub fn read<T>(
        &self,
        group: &str,
        f: impl FnOnce(&CoordinatorState) -> T,
    ) -> Result<T, GroupError> {
        Ok(self
            .runtime
            .read(self.partition_for(group), |s| f(&s.shard.state))?)
    }

    /// Reads every loaded shard.
    pub fn read_all<T>(
        &self,
        mut f: impl FnMut(&CoordinatorState) -> T,
    ) -> Result<Vec<T>, GroupError> {
        Ok(self.runtime.read_all(|s| f(&s.shard.state))?)
    }

    /// Runs a group operation on its shard; the reply comes once its records are durable.
    fn write<R: Send + 'static>(
        &self,
        group: &str,
        op: impl FnOnce(&mut GroupShardIo, i64) -> IoResult<R>,
    ) -> BoxFuture<'static, Result<R, GroupError>> {
        self.runtime
            .write(self.partition_for(group), op)
            .map(|r| r.map_err(GroupError::from))
            .boxed()
    }

    pub fn join(&self, group: &str, req: JoinRequest) -> BoxFuture<'static, Parked<JoinResult>> {
        let member = req.member_id.clone();
        let g = group.to_string();
        self.write(group, move |s, now| {
            let r = s.shard.join(now, &g, req).lift(inner);
            let mut out = Deliveries::default();
            r.map(|(reply, effects)| {
                // Parked first: the operation's own effects may answer its own member.
                let parked = s.park_join(&g, reply);
                s.take(&g, effects, &mut out);
                (parked, out)
            })
        })
        .map(move |r| match r {
            Ok((parked, out)) => {
                out.send();
                parked
            }
            Err(e) => Parked::Now(JoinResult::error(e, &member)),
        })
        .boxed()
    }

    pub fn sync(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
        assignments: Vec<(String, Vec<u8>)>,
    ) -> BoxFuture<'static, Parked<SyncResult>> {
        let g = group.to_string();
        self.write(group, move |s, now| {
            let r = s
                .shard
                .sync(now, &g, member_id, generation, instance, assignments)
                .lift(inner);
            let mut out = Deliveries::default();
            r.map(|(reply, effects)| {
                // Parked first: the operation's own effects may answer its own member.
                let parked = s.park_sync(&g, reply);
                s.take(&g, effects, &mut out);
                (parked, out)
            })
        })
        .map(|r| match r {
            Ok((parked, out)) => {
                out.send();
                parked
            }
            Err(e) => Parked::Now(SyncResult::error(e)),
        })
        .boxed()
    }

    pub fn heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
    ) -> BoxFuture<'static, Result<(), GroupError>> {
        self.write(group, |s, now| {
            IoResult::reply(
                s.shard
                    .heartbeat(now, group, member_id, generation, instance),
            )
        })
        .map(|r| r.and_then(|x| x))
        .boxed()
    }

    #[allow(clippy::type_complexity)]
    pub fn leave(
        &self,
        group: &str,
        members: &[(String, Option<String>)],
    ) -> BoxFuture<'static, Result<Vec<Result<(), GroupError>>, GroupError>> {
        self.write(group, |s, now| {
            let r = s.shard.leave(now, group, members).lift(inner);
            let mut out = Deliveries::default();
            r.map(|(results, effects)| {
                s.take(group, effects, &mut out);
                (results, out)
            })
        })
        .map(|r| {
            let (results, out) = r?;
            out.send();
            results
        })
        .boxed()
    }

    /// Validates and writes a commit; the future completes once it is durable.
    pub fn commit(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
        entries: &[CommitEntry],
    ) -> BoxFuture<'static, Result<(), GroupError>> {
        self.write(group, |s, now| {
            s.shard
                .commit(now, group, member_id, generation, instance, entries)
                .lift(inner)
        })
        .map(|r| r.and_then(|x| x))
        .boxed()
    }

    /// TxnOffsetCommit: validated as a commit, written as a transactional batch of the
    /// producer; the offsets count once the producer's commit marker reaches the partition
    /// ([`GroupCoordinator::write_txn_marker`]). Completes once durable.
    #[allow(clippy::too_many_arguments)]
    pub fn txn_commit(
        &self,
        group: &str,
        producer_id: i64,
        producer_epoch: i16,
        member_id: &str,
        generation: i32,
        instance: Option<&str>,
        entries: &[CommitEntry],
    ) -> BoxFuture<'static, Result<(), GroupError>> {
        self.write(group, |s, now| {
            s.shard
                .txn_offset_commit(
                    now,
                    group,
                    ProducerId::new(producer_id),
                    ProducerEpoch::new(producer_epoch),
                    member_id,
                    generation,
                    instance,
                    entries,
                )
                .lift(inner)
        })
        .map(|r| r.and_then(|x| x))
        .boxed()
    }

    /// Writes a transaction marker into `partition` of `__consumer_offsets` through the
    /// runtime (as Kafka's group coordinator does), so the shard applies or drops the
    /// producer's pending offsets. Completes once the marker is durable.
    pub fn write_txn_marker(
        &self,
        partition: i32,
        producer_id: i64,
        producer_epoch: i16,
        coordinator_epoch: i32,
        commit: bool,
    ) -> BoxFuture<'static, Result<(), GroupError>> {
        self.runtime
            .write_txn_marker(
                partition,
                producer_id,
                producer_epoch,
                coordinator_epoch,
                commit,
            )
            .map(|r| r.map_err(GroupError::from))
            .boxed()
    }

    /// Whether an open transaction holds an offset for this partition (KIP-447's
    /// UNSTABLE_OFFSET_COMMIT for OffsetFetch with `require_stable`).
    pub fn has_pending_offset(
        &self,
        group: &str,
        topic: &str,
        partition: i32,
    ) -> Result<bool, GroupError> {
        Ok(self.runtime.read(self.partition_for(group), |s| {
            s.shard.has_pending_offset(group, topic, partition)
        })?)
    }

    pub fn delete_group(&self, group: &str) -> BoxFuture<'static, Result<(), GroupError>> {
        self.write(group, |s, _| s.shard.delete_group(group).lift(inner))
            .map(|r| r.and_then(|x| x))
            .boxed()
    }

    /// Deletes committed offsets of partitions the group no longer consumes.
    pub fn delete_offsets(
        &self,
        group: &str,
        partitions: &[(String, i32)],
    ) -> BoxFuture<'static, Result<Vec<Result<(), GroupError>>, GroupError>> {
        self.write(group, |s, _| {
            s.shard.delete_offsets(group, partitions).lift(inner)
        })
        .map(|r| r.and_then(|x| x))
        .boxed()
    }

    /// KIP-848 heartbeat.
    pub fn consumer_heartbeat(
        &self,
        group: &str,
        req: HeartbeatRequest,
    ) -> BoxFuture<'static, Result<HeartbeatResponse, GroupError>> {
        let image = (self.image)();
        let partitions_of = |t: &str| image.topic(t).map(|t| t.partitions.len() as i32);
        self.write(group, |s, now| {
            s.shard
                .consumer_heartbeat(now, group, req, &partitions_of)
                .lift(inner)
        })
        .map(|r| r.and_then(|x| x))
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use super::*;
    use crate::coordinator_runtime::tests::FakeLog;
    use crate::coordinator_runtime::ManualClock;
    use vltava_types::{LeaderEpoch, Offset};

    fn coordinator(log: &Arc<FakeLog>, clock: &Arc<ManualClock>) -> GroupCoordinator {
        let mut config = BrokerConfig::default();
        config
            .props
            .insert("offsets.topic.num.partitions".into(), "1".into());
        config
            .props
            .insert("group.initial.rebalance.delay.ms".into(), "0".into());
        GroupCoordinator::with_parts(
            &config,
            Arc::clone(log) as Arc<dyn CoordinatorLog>,
            Arc::clone(clock) as Arc<dyn Clock>,
            Arc::new(|| Arc::new(MetadataImage::default())),
        )
    }

    fn join_request(member_id: &str) -> JoinRequest {
        JoinRequest {
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "h".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 10_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), vec![1])],
            require_known_member_id: true,
            supports_skip_assignment: false,
        }
    }

    async fn settle<T>(p: Parked<T>) -> T {
        match p {
            Parked::Now(r) => r,
            Parked::Later(rx) => rx.await.expect("answered"),
        }
    }

    /// Keeps the fake partition's fsync caught up, as the real flusher does.
    fn flusher(log: &Arc<FakeLog>) -> tokio::task::JoinHandle<()> {
        let log = Arc::clone(log);
        tokio::spawn(async move {
            loop {
                log.make_durable(0);
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    }

    #[tokio::test]
    async fn groups_follow_leadership_and_the_clock() {
        let (log, clock) = (Arc::new(FakeLog::default()), ManualClock::new(1_000));
        let groups = coordinator(&log, &clock);
        let flush = flusher(&log);
        assert_eq!(
            groups.heartbeat("g", "m", 1, None).await,
            Err(GroupError::NotCoordinator)
        );
        let gate = log.read_gate.lock();
        let loaded = groups.on_leader(0, 0);
        let j = groups.join("g", join_request("")).now_or_never();
        assert!(
            matches!(j, Some(Parked::Now(r)) if r.error == Some(GroupError::CoordinatorLoadInProgress))
        );
        drop(gate);
        loaded.await;

        // Two-step join; the only member leads generation 1 and syncs.
        let j = settle(groups.join("g", join_request("")).await).await;
        assert_eq!(j.error, Some(GroupError::MemberIdRequired));
        let j = settle(groups.join("g", join_request(&j.member_id)).await).await;
        assert_eq!((j.error, j.generation_id), (None, 1));
        let m = j.member_id.clone();
        let assignment = vec![(m.clone(), vec![7])];
        let s = settle(groups.sync("g", &m, 1, None, assignment).await).await;
        assert_eq!(s.error, None);
        let e = vec![CommitEntry {
            topic: "t".into(),
            partition: 0,
            offset: Offset::new(42),
            leader_epoch: LeaderEpoch::new(-1),
            metadata: None,
        }];
        assert_eq!(groups.commit("g", &m, 1, None, &e).await, Ok(()));

        // A failed append answers NOT_COORDINATOR and changes nothing.
        log.fail_appends.store(true, Ordering::SeqCst);
        let again = vec![CommitEntry {
            offset: Offset::new(43),
            ..e[0].clone()
        }];
        assert_eq!(
            groups.commit("g", &m, 1, None, &again).await,
            Err(GroupError::NotCoordinator)
        );
        assert_eq!(
            groups.leave("g", &[(m.clone(), None)]).await,
            Err(GroupError::NotCoordinator)
        );
        let committed = |groups: &GroupCoordinator| {
            groups.read("g", |s| s.offsets.get("g", "t", 0).map(|v| v.offset))
        };
        let members = |groups: &GroupCoordinator| {
            groups.read("g", |s| match s.groups.get("g") {
                Some(vltava_coordinator::state::Group::Classic(g)) => g.members.len(),
                _ => 0,
            })
        };
        assert_eq!(committed(&groups), Ok(Some(42)));
        assert_eq!(members(&groups), Ok(1), "the leave was undone");
        log.fail_appends.store(false, Ordering::SeqCst);

        // Silence past the session timeout: the timer, on the manual clock, expires the member.
        clock.advance(11_000);
        for _ in 0..200 {
            if members(&groups) == Ok(0) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(members(&groups), Ok(0));

        // Resigned: NOT_COORDINATOR. Led again: the log gives back the same groups.
        groups.on_resigned(0);
        assert_eq!(committed(&groups), Err(GroupError::NotCoordinator));
        groups.on_leader(0, 1).await;
        assert_eq!(committed(&groups), Ok(Some(42)));
        assert_eq!(members(&groups), Ok(0));
        flush.abort();
    }

    #[tokio::test]
    async fn transactional_offsets_count_once_their_marker_is_written() {
        let (log, clock) = (Arc::new(FakeLog::default()), ManualClock::new(1_000));
        let groups = coordinator(&log, &clock);
        let flush = flusher(&log);
        groups.on_leader(0, 0).await;
        let e = |offset| {
            vec![CommitEntry {
                topic: "t".into(),
                partition: 0,
                offset,
                leader_epoch: LeaderEpoch::new(-1),
                metadata: None,
            }]
        };
        let committed = |groups: &GroupCoordinator| {
            groups.read("g", |s| s.offsets.get("g", "t", 0).map(|v| v.offset))
        };
        assert_eq!(
            groups
                .txn_commit("g", 7, 0, "", -1, None, &e(Offset::new(5)))
                .await,
            Ok(())
        );
        assert_eq!(committed(&groups), Ok(None));
        assert_eq!(groups.has_pending_offset("g", "t", 0), Ok(true));
        assert_eq!(groups.write_txn_marker(0, 7, 0, 2, true).await, Ok(()));
        assert_eq!(committed(&groups), Ok(Some(5)));
        assert_eq!(groups.has_pending_offset("g", "t", 0), Ok(false));
        // An aborted transaction's offsets never count, live or after a reload.
        assert_eq!(
            groups
                .txn_commit("g", 8, 0, "", -1, None, &e(Offset::new(9)))
                .await,
            Ok(())
        );
        assert_eq!(groups.write_txn_marker(0, 8, 0, 2, false).await, Ok(()));
        assert_eq!(committed(&groups), Ok(Some(5)));
        groups.on_leader(0, 1).await;
        assert_eq!(committed(&groups), Ok(Some(5)));
        // A member that is not in the group cannot commit transactionally either.
        assert_eq!(
            groups
                .txn_commit("g", 9, 0, "m", 3, None, &e(Offset::new(1)))
                .await,
            Err(GroupError::IllegalGeneration)
        );
        flush.abort();
    }
}
