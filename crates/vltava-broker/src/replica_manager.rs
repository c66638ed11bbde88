//! The partitions this broker hosts, keyed by topic id and partition: any subset of a topic's
//! partitions, each a leader or a follower. Metadata deltas are the only way partitions
//! appear, change role or epoch, change configs or go away.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;
use vltava_metadata::{MetadataDelta, MetadataImage, ResourceType, TopicIdPartition};
use vltava_storage::{checkpoint, Fs, Log, OpenOptions, StorageError};
use vltava_types::{NodeId, Offset};

use crate::config::{topic_settings, BrokerConfig, TopicSettings};
use crate::partition::{Partition, Registration, Role};

pub const RECOVERY_CHECKPOINT: &str = "recovery-point-offset-checkpoint";
pub const LOG_START_CHECKPOINT: &str = "log-start-offset-checkpoint";
/// Kafka's high-watermark checkpoint.
pub const REPLICATION_CHECKPOINT: &str = "replication-offset-checkpoint";
/// Kafka's name: per compacted partition, where its cleaned part ends.
pub const CLEANER_CHECKPOINT: &str = "cleaner-offset-checkpoint";

/// What the previous run left behind, used once per partition as its log is opened.
#[derive(Debug, Default)]
pub struct StartupState {
    pub clean_shutdown: bool,
    pub recovery: checkpoint::Checkpoint,
    pub log_starts: checkpoint::Checkpoint,
    pub clean_offsets: checkpoint::Checkpoint,
}

/// Leadership this broker gained or lost in one delta (coordinators load and unload their
/// shards on these).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadershipChange {
    Became {
        topic: String,
        partition: i32,
        leader_epoch: i32,
    },
    Resigned {
        topic: String,
        partition: i32,
    },
}

pub struct ReplicaManager {
    node_id: NodeId,
    data_dir: PathBuf,
    config: BrokerConfig,
    partitions: RwLock<HashMap<TopicIdPartition, Arc<Partition>>>,
    /// Topic name to id, for requests that name topics.
    names: RwLock<HashMap<String, Uuid>>,
    startup: Mutex<Option<StartupState>>,
    /// Where partition logs live: the real file system, or a simulated one in tests.
    fs: Arc<dyn Fs>,
    /// One writer of the checkpoint files at a time (retention, the cleaner threads and
    /// metadata changes all write them).
    checkpoint_lock: Mutex<()>,
    /// The time of every partition flush that made offsets durable (Kafka's LogFlushStats).
    pub log_flushes: Arc<crate::request_metrics::TimeHistogram>,
    /// BrokerTopicMetrics; each hosted partition counts into its topic's.
    pub topic_metrics: crate::topic_metrics::BrokerTopicMetrics,
}

impl ReplicaManager {
    pub fn new(config: &BrokerConfig, startup: StartupState, fs: Arc<dyn Fs>) -> Self {
        Self {
            node_id: config.node_id,
            data_dir: config.data_dir.clone(),
            config: config.clone(),
            partitions: RwLock::new(HashMap::new()),
            names: RwLock::new(HashMap::new()),
            startup: Mutex::new(Some(startup)),
            fs,
            checkpoint_lock: Mutex::new(()),
            log_flushes: Arc::default(),
            topic_metrics: Default::default(),
        }
    }

    pub fn get_by_id(&self, tp: &TopicIdPartition) -> Option<Arc<Partition>> {
        self.partitions.read().get(tp).cloned()
    }

    /// A hosted partition by topic name.
    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let topic_id = *self.names.read().get(topic)?;
        self.get_by_id(&TopicIdPartition {
            topic_id,
            partition,
        })
    }

    /// The hosted partitions of a topic, in partition order.
    pub fn topic(&self, topic: &str) -> Vec<Arc<Partition>> {
        let Some(id) = self.names.read().get(topic).copied() else {
            return Vec::new();
        };
        let mut out: Vec<_> = self
            .partitions
            .read()
            .values()
            .filter(|p| p.topic_id == id)
            .cloned()
            .collect();
        out.sort_by_key(|p| p.index);
        out
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().values().cloned().collect()
    }

    /// Kafka's ReplicaManager gauges over the partitions hosted now.
    pub fn replica_gauges(&self) -> crate::replica_metrics::ReplicaGauges {
        crate::replica_metrics::ReplicaGauges::of(
            self.partitions.read().values().map(|p| p.replica_state()),
        )
    }

    fn settings(&self, image: &MetadataImage, topic: &str) -> TopicSettings {
        topic_settings(self.config.layers(image, Some(topic)))
    }

    /// Applies one committed delta: opens logs of partitions newly assigned here, applies
    /// role and epoch changes, deletes logs of deleted topics and partitions moved away,
    /// and applies config changes. Returns the leadership this broker gained or lost.
    pub fn apply_delta(
        &self,
        delta: &MetadataDelta,
        image: &MetadataImage,
        now_ms: i64,
    ) -> Result<Vec<LeadershipChange>, StorageError> {
        let mut changes = Vec::new();
        for (id, name) in &delta.deleted_topics {
            let removed: Vec<Arc<Partition>> = {
                let mut parts = self.partitions.write();
                let keys: Vec<_> = parts
                    .keys()
                    .filter(|k| k.topic_id == *id)
                    .copied()
                    .collect();
                keys.iter().filter_map(|k| parts.remove(k)).collect()
            };
            self.names.write().retain(|_, v| v != id);
            for p in removed {
                if p.is_leader() {
                    changes.push(LeadershipChange::Resigned {
                        topic: name.clone(),
                        partition: p.index,
                    });
                }
                remove_dir_later(p);
            }
        }
        for (id, name) in &delta.created_topics {
            self.names.write().insert(name.clone(), *id);
        }
        let mut first_error = None;
        for (tp, reg) in &delta.changed_partitions {
            let Some(topic) = image.topic_by_id(&tp.topic_id) else {
                continue;
            };
            let hosted_here = reg.replicas.contains(&self.node_id);
            let registration = Registration {
                role: if reg.leader == self.node_id {
                    Role::Leader
                } else {
                    Role::Follower
                },
                leader: reg.leader,
                leader_epoch: reg.leader_epoch.get(),
                isr: reg.isr.clone(),
                replicas: reg.replicas.clone(),
            };
            let existing = self.get_by_id(tp);
            match (existing, hosted_here) {
                (Some(p), true) => {
                    let was_leader = p.is_leader();
                    p.apply_registration(registration.clone(), now_ms)?;
                    match (was_leader, p.is_leader()) {
                        (false, true) => changes.push(LeadershipChange::Became {
                            topic: topic.name.clone(),
                            partition: tp.partition,
                            leader_epoch: reg.leader_epoch.get(),
                        }),
                        (true, false) => changes.push(LeadershipChange::Resigned {
                            topic: topic.name.clone(),
                            partition: tp.partition,
                        }),
                        _ => {}
                    }
                }
                (Some(p), false) => {
                    self.partitions.write().remove(tp);
                    if p.is_leader() {
                        changes.push(LeadershipChange::Resigned {
                            topic: topic.name.clone(),
                            partition: tp.partition,
                        });
                    }
                    remove_dir_later(p);
                }
                (None, true) => {
                    match self.open(image, &topic.name, *tp, registration.clone(), now_ms) {
                        Ok(p) => {
                            if p.is_leader() {
                                changes.push(LeadershipChange::Became {
                                    topic: topic.name.clone(),
                                    partition: tp.partition,
                                    leader_epoch: reg.leader_epoch.get(),
                                });
                            }
                            self.partitions.write().insert(*tp, p);
                        }
                        // The others still open; the caller hears of the first failure.
                        Err(e) => {
                            tracing::error!(topic = %topic.name, partition = tp.partition, error = %e, "could not open partition");
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (None, false) => {}
            }
        }
        for (rtype, name) in &delta.changed_configs {
            let targets = match rtype {
                ResourceType::Topic => self.topic(name),
                // A broker-level change can alter any topic's effective settings.
                ResourceType::Broker => self.all(),
            };
            for p in targets {
                let s = self.settings(image, &p.topic);
                if p.settings() != s {
                    p.set_settings(s);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(changes),
        }
    }

    fn open(
        &self,
        image: &MetadataImage,
        topic: &str,
        tp: TopicIdPartition,
        registration: Registration,
        now_ms: i64,
    ) -> Result<Arc<Partition>, StorageError> {
        let key = (topic.to_string(), tp.partition);
        let clean_offset = self
            .startup
            .lock()
            .as_ref()
            .and_then(|s| s.clean_offsets.get(&key).copied());
        let opts = match &*self.startup.lock() {
            Some(s) => OpenOptions {
                clean_shutdown: s.clean_shutdown,
                recovery_point: Offset::new(s.recovery.get(&key).copied().unwrap_or(0)),
                log_start_offset: Offset::new(s.log_starts.get(&key).copied().unwrap_or(0)),
            },
            // Created while running: a new, empty log.
            None => OpenOptions {
                clean_shutdown: false,
                recovery_point: Offset::new(0),
                log_start_offset: Offset::new(0),
            },
        };
        let settings = self.settings(image, topic);
        let dir = self
            .data_dir
            .join(vltava_storage::partition_dir_name(topic, tp.partition));
        let log = Log::open_with(
            Arc::clone(&self.fs),
            &dir,
            settings.log.clone(),
            opts,
            now_ms,
        )?;
        if let Some(offset) = clean_offset {
            log.init_clean_offset(Offset::new(offset), now_ms);
        }
        let topic: Arc<str> = Arc::from(topic);
        let stats = self.topic_metrics.topic(&topic);
        Ok(Partition::new(
            topic,
            tp,
            self.node_id,
            registration,
            log,
            settings,
            Arc::clone(&self.log_flushes),
            stats,
            now_ms,
        ))
    }

    /// Ends the start-up phase: logs opened from now on are new.
    pub fn startup_done(&self) {
        self.startup.lock().take();
    }

    /// The checkpoints Kafka keeps beside the logs: recovery points, log starts, high
    /// watermarks.
    pub fn write_checkpoints(&self) {
        let _writing = self.checkpoint_lock.lock();
        let mut recovery = checkpoint::Checkpoint::new();
        let mut starts = checkpoint::Checkpoint::new();
        let mut hws = BTreeMap::new();
        let mut cleaned = checkpoint::Checkpoint::new();
        let partitions = self.all();
        for p in &partitions {
            let o = p.offsets();
            let key = (p.topic.to_string(), p.index);
            recovery.insert(key.clone(), o.flushed_offset.get());
            starts.insert(key.clone(), o.log_start_offset.get());
            if p.settings().log.compact || p.clean_offset() > 0 {
                cleaned.insert(key.clone(), p.clean_offset());
            }
            hws.insert(key, p.high_watermark());
        }
        for (name, cp) in [
            (RECOVERY_CHECKPOINT, &recovery),
            (LOG_START_CHECKPOINT, &starts),
            (REPLICATION_CHECKPOINT, &hws),
            (CLEANER_CHECKPOINT, &cleaned),
        ] {
            match checkpoint::write(&self.data_dir.join(name), cp) {
                Ok(()) if name == RECOVERY_CHECKPOINT => {
                    for p in &partitions {
                        let key = (p.topic.to_string(), p.index);
                        if let Some(offset) = recovery.get(&key) {
                            p.recovery_point_written(*offset);
                        }
                    }
                }
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "could not write checkpoint"),
            }
        }
    }
}

/// Renames a partition's directory out of the way at once and deletes it in the background,
/// as Kafka's `-delete` suffix does; a crash in between leaves it for the next start to
/// remove.
fn remove_dir_later(p: Arc<Partition>) {
    let dir = p.dir().to_path_buf();
    drop(p);
    let target = dir.with_file_name(format!(
        "{}.{}-delete",
        dir.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        Uuid::new_v4().simple()
    ));
    if std::fs::rename(&dir, &target).is_ok() {
        std::thread::spawn(move || {
            let _ = std::fs::remove_dir_all(&target);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::ReadLimit;
    use vltava_metadata::MetadataRecord;
    use vltava_storage::StdFs;
    use vltava_types::LeaderEpoch;

    fn config(dir: &std::path::Path) -> BrokerConfig {
        BrokerConfig::from_props(
            [("log.dirs".to_string(), dir.display().to_string())]
                .into_iter()
                .collect(),
        )
        .unwrap()
    }

    fn partition(id: Uuid, p: i32, replicas: Vec<i32>, leader: i32, epoch: i32) -> MetadataRecord {
        MetadataRecord::PartitionRecord {
            topic_id: id,
            partition_id: p,
            isr: replicas.iter().copied().map(NodeId::new).collect(),
            replicas: replicas.into_iter().map(NodeId::new).collect(),
            leader: NodeId::new(leader),
            leader_epoch: LeaderEpoch::new(epoch),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    #[tokio::test]
    async fn a_broker_hosts_only_its_own_partitions_and_follows_leadership() {
        let dir = tempfile::tempdir().unwrap();
        let rm = ReplicaManager::new(
            &config(dir.path()),
            StartupState::default(),
            StdFs::shared(),
        );
        let id = Uuid::from_u128(9);
        // Partition 0 here (node 1), partition 1 on node 2 only.
        let (img, delta) = MetadataDelta::apply(
            &MetadataImage::default(),
            &[
                MetadataRecord::TopicRecord {
                    name: "t".into(),
                    topic_id: id,
                },
                partition(id, 0, vec![1], 1, 0),
                partition(id, 1, vec![2], 2, 0),
            ],
        );
        let changes = rm.apply_delta(&delta, &img, 0).unwrap();
        assert_eq!(
            changes,
            [LeadershipChange::Became {
                topic: "t".into(),
                partition: 0,
                leader_epoch: 0
            }]
        );
        assert!(rm.get("t", 0).is_some());
        assert!(rm.get("t", 1).is_none());
        assert!(dir.path().join("t-0").exists());
        assert!(!dir.path().join("t-1").exists());

        // Partition 1 moves here as a follower of node 2, then this broker leads it at a
        // new epoch, which starts at its log end.
        let (img, delta) = MetadataDelta::apply(&img, &[partition(id, 1, vec![2, 1], 2, 1)]);
        assert!(rm.apply_delta(&delta, &img, 0).unwrap().is_empty());
        let p1 = rm.get("t", 1).unwrap();
        assert!(!p1.is_leader());
        let mut batch = vltava_record::build_batch(0, &[(None, Some(b"x".as_slice()), 1)]);
        assert!(matches!(
            p1.append_as_leader(&mut batch, 0, |_| Ok(())),
            Err(crate::partition::AppendError::NotLeader(_))
        ));
        let (img, delta) = MetadataDelta::apply(&img, &[partition(id, 1, vec![1], 1, 2)]);
        let changes = rm.apply_delta(&delta, &img, 0).unwrap();
        assert_eq!(changes.len(), 1);
        let p1 = rm.get("t", 1).unwrap();
        assert!(p1.is_leader());
        assert_eq!(p1.leader_epoch(), 2);
        assert_eq!(p1.end_offset_for_epoch(2), (2, 0));
        p1.append_as_leader(&mut batch, 0, |_| Ok(())).unwrap();
        // The sole in-sync replica's high watermark is its log end.
        assert_eq!(p1.high_watermark(), 1);

        let (img, delta) =
            MetadataDelta::apply(&img, &[MetadataRecord::RemoveTopicRecord { topic_id: id }]);
        let changes = rm.apply_delta(&delta, &img, 0).unwrap();
        assert_eq!(changes.len(), 2);
        assert!(rm.all().is_empty());
        assert!(rm.get("t", 0).is_none());
    }

    fn replicated(id: Uuid, isr: Vec<i32>, leader: i32, epoch: i32) -> MetadataRecord {
        MetadataRecord::PartitionRecord {
            topic_id: id,
            partition_id: 0,
            replicas: vec![NodeId::new(1), NodeId::new(2), NodeId::new(3)],
            isr: isr.into_iter().map(NodeId::new).collect(),
            leader: NodeId::new(leader),
            leader_epoch: LeaderEpoch::new(epoch),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    fn node(dir: &std::path::Path, id: i32) -> ReplicaManager {
        let mut c = config(&dir.join(format!("n{id}")));
        c.node_id = NodeId::new(id);
        ReplicaManager::new(&c, StartupState::default(), StdFs::shared())
    }

    fn n(ids: &[i32]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId::new).collect()
    }

    #[tokio::test]
    async fn the_high_watermark_is_the_least_durable_end_of_the_isr() {
        let dir = tempfile::tempdir().unwrap();
        let rm = node(dir.path(), 1);
        let id = Uuid::from_u128(7);
        let topic = MetadataRecord::TopicRecord {
            name: "r".into(),
            topic_id: id,
        };
        let (img, delta) = MetadataDelta::apply(
            &MetadataImage::default(),
            &[topic, replicated(id, vec![1, 2, 3], 1, 0)],
        );
        rm.apply_delta(&delta, &img, 0).unwrap();
        let p = rm.get("r", 0).unwrap();
        for _ in 0..2 {
            let mut b = vltava_record::build_batch(0, &[(None, Some(b"x".as_slice()), 1)]);
            p.append_as_leader(&mut b, 0, |_| Ok(())).unwrap();
        }
        // Nothing is replicated until every ISR member has fetched in this epoch.
        assert_eq!(p.high_watermark(), 0);
        assert_eq!(p.follower_fetched(NodeId::new(2), 2, 10), None);
        assert_eq!(p.high_watermark(), 0, "follower 3 has not fetched");
        let acked = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.wait_acked(2, true).await }
        });
        assert_eq!(p.follower_fetched(NodeId::new(3), 1, 10), None);
        assert_eq!(p.high_watermark(), 1);
        assert!(!acked.is_finished());
        p.follower_fetched(NodeId::new(3), 2, 20);
        assert_eq!(p.high_watermark(), 2);
        acked.await.unwrap().unwrap();
        // A fetch from an unassigned replica counts for nothing.
        assert_eq!(p.follower_fetched(NodeId::new(9), 0, 30), None);
        assert_eq!(p.high_watermark(), 2);

        // Follower 3 stops fetching: after the lag limit it is proposed out of the ISR,
        // once, until the change is refused or committed.
        let mut b = vltava_record::build_batch(0, &[(None, Some(b"y".as_slice()), 1)]);
        p.append_as_leader(&mut b, 0, |_| Ok(())).unwrap();
        p.follower_fetched(NodeId::new(2), 3, 1_000);
        assert_eq!(p.isr_shrink(1_000, 30_000), None);
        // Follower 3 last caught up at 20, follower 2 at 1000.
        let shrink = p.isr_shrink(31_000, 30_000).unwrap();
        assert_eq!(
            (shrink.expected, shrink.proposed),
            (n(&[1, 2, 3]), n(&[1, 2]))
        );
        assert_eq!(p.isr_shrink(31_000, 30_000), None, "pending");
        p.isr_change_failed();
        assert!(p.isr_shrink(31_000, 30_000).is_some());
        let (img, delta) = MetadataDelta::apply(&img, &[replicated(id, vec![1, 2], 1, 0)]);
        rm.apply_delta(&delta, &img, 40_000).unwrap();
        assert_eq!(
            p.high_watermark(),
            3,
            "the slow follower no longer holds it back"
        );

        // It comes back: below the high watermark it stays out; at it, it is proposed in.
        assert_eq!(p.follower_fetched(NodeId::new(3), 2, 41_000), None);
        let expand = p.follower_fetched(NodeId::new(3), 3, 42_000).unwrap();
        assert_eq!(
            (expand.expected, expand.proposed),
            (n(&[1, 2]), n(&[1, 2, 3]))
        );

        // min.insync.replicas=2 with an ISR of one: an acks=all append already made is
        // answered NOT_ENOUGH_REPLICAS_AFTER_APPEND.
        let (img, delta) = MetadataDelta::apply(
            &img,
            &[
                MetadataRecord::ConfigRecord {
                    resource_type: ResourceType::Topic,
                    resource_name: "r".into(),
                    name: "min.insync.replicas".into(),
                    value: Some("2".into()),
                },
                replicated(id, vec![1], 1, 0),
            ],
        );
        rm.apply_delta(&delta, &img, 50_000).unwrap();
        let mut b = vltava_record::build_batch(0, &[(None, Some(b"z".as_slice()), 1)]);
        p.append_as_leader(&mut b, 0, |_| Ok(())).unwrap();
        assert!(matches!(
            p.wait_acked(4, true).await,
            Err(crate::partition::AckError::NotEnoughReplicasAfterAppend { isr: 1, min: 2 })
        ));
        // Leadership moves away: a waiting acks=all answer fails rather than hangs.
        let mut b = vltava_record::build_batch(0, &[(None, Some(b"w".as_slice()), 1)]);
        let (img, delta) = MetadataDelta::apply(&img, &[replicated(id, vec![1, 2], 1, 0)]);
        rm.apply_delta(&delta, &img, 60_000).unwrap();
        p.append_as_leader(&mut b, 0, |_| Ok(())).unwrap();
        let waiting = tokio::spawn({
            let p = Arc::clone(&p);
            async move { p.wait_acked(5, true).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let (img, delta) = MetadataDelta::apply(&img, &[replicated(id, vec![2], 2, 1)]);
        rm.apply_delta(&delta, &img, 70_000).unwrap();
        assert!(matches!(
            waiting.await.unwrap(),
            Err(crate::partition::AckError::NotLeader)
        ));
    }

    #[tokio::test]
    async fn a_follower_copies_the_leaders_batches_and_truncates_where_they_diverge() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (node(dir.path(), 1), node(dir.path(), 2));
        let id = Uuid::from_u128(8);
        let topic = MetadataRecord::TopicRecord {
            name: "r".into(),
            topic_id: id,
        };
        let (img, delta) = MetadataDelta::apply(
            &MetadataImage::default(),
            &[topic, replicated(id, vec![1, 2], 1, 0)],
        );
        a.apply_delta(&delta, &img, 0).unwrap();
        b.apply_delta(&delta, &img, 0).unwrap();
        let (leader, follower) = (a.get("r", 0).unwrap(), b.get("r", 0).unwrap());
        let append = |p: &Partition, v: &[u8]| {
            let mut batch = vltava_record::build_batch(0, &[(None, Some(v), 1)]);
            p.append_as_leader(&mut batch, 0, |_| Ok(())).unwrap();
        };
        let copy = |from: &Partition, to: &Partition| {
            let at = to.offsets().log_end_offset.get();
            let r = from.read(at, 1 << 20, true, ReadLimit::LogEnd).unwrap();
            if !r.records.is_empty() {
                to.append_as_follower(&r.records, 0).unwrap();
            }
        };
        append(&leader, b"a");
        append(&leader, b"b");
        copy(&leader, &follower);
        assert_eq!(follower.offsets().log_end_offset.get(), 2);
        assert_eq!(follower.latest_epoch(), 0);
        // A follower cannot append as leader, nor a leader as follower.
        assert!(follower
            .append_as_leader(
                &mut vltava_record::build_batch(0, &[(None, Some(b"x".as_slice()), 1)]),
                0,
                |_| Ok(())
            )
            .is_err());
        assert!(leader.append_as_follower(&[], 0).is_err());

        // The leader writes one more in epoch 0 that the follower never gets; then the
        // follower leads epoch 1 and writes two of its own.
        append(&leader, b"lost");
        let (img, delta) = MetadataDelta::apply(&img, &[replicated(id, vec![2], 2, 1)]);
        a.apply_delta(&delta, &img, 0).unwrap();
        b.apply_delta(&delta, &img, 0).unwrap();
        append(&follower, b"c");
        append(&follower, b"d");
        // The old leader, now following, finds where epoch 0 ends on the new leader
        // (what its fetch's diverging epoch would say) and truncates there.
        assert_eq!(leader.latest_epoch(), 0);
        let (epoch, end) = follower.end_offset_for_epoch(leader.latest_epoch());
        assert_eq!((epoch, end), (0, 2));
        leader.truncate_to(end).unwrap();
        copy(&follower, &leader);
        assert_eq!(leader.offsets().log_end_offset.get(), 4);
        let all = |p: &Partition| p.read(0, 1 << 20, true, ReadLimit::LogEnd).unwrap().records;
        assert_eq!(all(&leader), all(&follower));
        assert_eq!(leader.end_offset_for_epoch(1), (1, 4));
    }
}
