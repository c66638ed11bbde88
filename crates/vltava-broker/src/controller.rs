//! Turns admin operations into metadata records and commits them through the metadata
//! quorum; every node's listener is handed each committed batch as a delta. Validation is
//! pure: it reads an image and returns records or a Kafka error, so it can be tested without
//! a broker.

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
use uuid::Uuid;
use vltava_metadata::config as defs;
use vltava_metadata::{
    validate_topic_name, MetadataDelta, MetadataImage, MetadataRecord, PartitionImage, ResourceType,
};
use vltava_protocol::ErrorCode;
use vltava_quorum::{Listener, Quorum, WriteError};
use vltava_types::{LeaderEpoch, NodeId};

/// A refused operation: Kafka's error code plus a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpError {
    pub code: ErrorCode,
    pub message: String,
}

impl OpError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

/// Told about every committed batch, in commit order (Kafka's metadata publishers).
pub trait MetadataPublisher: Send + Sync {
    /// Applies what `delta` changed; `image` is the state after it. An error means the
    /// records are committed but this broker could not act on all of them.
    fn publish(&self, delta: &MetadataDelta, image: &MetadataImage) -> Result<(), String>;
}

/// How long a metadata change may wait for the quorum.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Controller {
    quorum: Arc<Quorum>,
    node_id: NodeId,
    /// The last batch this node could not act on: the applied index after it, and why.
    publish_failure: Arc<Mutex<Option<(u64, String)>>>,
    /// Keeps the adapter the quorum holds weakly.
    listener: Mutex<Option<Arc<dyn Listener>>>,
}

/// Hands committed batches to the broker's publisher and remembers what it could not apply.
struct PublisherAdapter {
    publisher: Weak<dyn MetadataPublisher>,
    quorum: Weak<Quorum>,
    failure: Arc<Mutex<Option<(u64, String)>>>,
}

impl Listener for PublisherAdapter {
    fn on_commit(&self, delta: &MetadataDelta, image: &MetadataImage) {
        let Some(p) = self.publisher.upgrade() else {
            return;
        };
        if let Err(e) = p.publish(delta, image) {
            tracing::error!(error = %e, "could not act on committed metadata");
            // Called before the applied index moves past this batch.
            let next = self.quorum.upgrade().map_or(0, |q| q.applied() + 1);
            *self.failure.lock() = Some((next, e));
        }
    }
}

impl Controller {
    pub fn new(quorum: Arc<Quorum>, node_id: NodeId) -> Self {
        Self {
            quorum,
            node_id,
            publish_failure: Arc::default(),
            listener: Mutex::new(None),
        }
    }

    /// Starts handing committed batches to `publisher`, beginning with the whole image.
    pub fn attach(&self, publisher: Weak<dyn MetadataPublisher>) {
        let adapter: Arc<dyn Listener> = Arc::new(PublisherAdapter {
            publisher,
            quorum: Arc::downgrade(&self.quorum),
            failure: Arc::clone(&self.publish_failure),
        });
        self.quorum.attach(Arc::downgrade(&adapter));
        *self.listener.lock() = Some(adapter);
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.quorum.image()
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    pub fn quorum(&self) -> &Arc<Quorum> {
        &self.quorum
    }

    /// The quorum's leader: Kafka's active controller.
    pub fn active_controller(&self) -> Option<NodeId> {
        self.quorum
            .leader()
            .and_then(|l| i32::try_from(l).ok())
            .map(NodeId::new)
    }

    /// Proposes a change: `op` reads the current image and returns the records to commit
    /// (or a Kafka error) plus a value for the caller. Resolves once the records are
    /// committed by the quorum and published on this node. `op` may run more than once, on
    /// newer images, when another change commits first.
    pub async fn write<T, F>(self: &Arc<Self>, op: F) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: Fn(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), OpError> + Send + Sync + 'static,
    {
        let before = self.quorum.applied();
        match self.quorum.write(WRITE_TIMEOUT, op).await {
            Ok(out) => {
                let failure = self.publish_failure.lock().take();
                match failure {
                    Some((at, e)) if at > before => {
                        Err(OpError::new(ErrorCode::KafkaStorageError, e))
                    }
                    _ => Ok(out),
                }
            }
            Err(WriteError::Refused(e)) => Err(e),
            Err(WriteError::Timeout(m)) => Err(OpError::new(ErrorCode::RequestTimedOut, m)),
        }
    }
}

/// Records that create a topic, after Kafka's checks.
pub fn create_topic_records(
    image: &MetadataImage,
    node_id: NodeId,
    name: &str,
    num_partitions: i32,
    replication_factor: i16,
    configs: &BTreeMap<String, String>,
    given: Option<&[Vec<NodeId>]>,
) -> Result<(Uuid, Vec<MetadataRecord>), OpError> {
    validate_topic_name(name).map_err(|m| OpError::new(ErrorCode::InvalidTopicException, m))?;
    if image.topic(name).is_some() {
        return Err(OpError::new(
            ErrorCode::TopicAlreadyExists,
            format!("Topic '{name}' already exists."),
        ));
    }
    // Metric names replace '.' with '_', so Kafka refuses names that differ only there.
    let unified = |n: &str| n.replace('.', "_");
    if let Some(other) = image
        .topics
        .keys()
        .find(|existing| unified(existing) == unified(name))
    {
        return Err(OpError::new(
            ErrorCode::InvalidTopicException,
            format!("Topic '{name}' collides with existing topic: {other}"),
        ));
    }
    if num_partitions <= 0 {
        return Err(OpError::new(
            ErrorCode::InvalidPartitions,
            "Number of partitions must be larger than 0.",
        ));
    }
    if num_partitions > 100_000 {
        return Err(OpError::new(
            ErrorCode::InvalidPartitions,
            "Number of partitions is limited to 100000.",
        ));
    }
    if replication_factor <= 0 {
        return Err(OpError::new(
            ErrorCode::InvalidReplicationFactor,
            "Replication factor must be larger than 0.",
        ));
    }
    let assignments = match given {
        Some(g) => check_assignment(image, node_id, g, None)?,
        None => assign(image, node_id, 0, num_partitions, replication_factor)?,
    };
    for (k, v) in configs {
        defs::validate_topic_config(k, v).map_err(|m| OpError::new(ErrorCode::InvalidConfig, m))?;
    }
    let topic_id = Uuid::new_v4();
    let mut records = vec![MetadataRecord::TopicRecord {
        name: name.to_string(),
        topic_id,
    }];
    for (k, v) in configs {
        records.push(MetadataRecord::ConfigRecord {
            resource_type: ResourceType::Topic,
            resource_name: name.to_string(),
            name: k.clone(),
            value: Some(v.clone()),
        });
    }
    records.extend(partition_records(image, topic_id, 0, assignments));
    Ok((topic_id, records))
}

/// Checks replicas a client assigned, as Kafka does: every partition has the same number
/// (`rf`, when the topic already has one) of distinct replicas, each a registered broker,
/// at least one of them live.
fn check_assignment(
    image: &MetadataImage,
    node_id: NodeId,
    given: &[Vec<NodeId>],
    rf: Option<usize>,
) -> Result<Vec<Vec<NodeId>>, OpError> {
    let bad = |m: String| Err(OpError::new(ErrorCode::InvalidReplicaAssignment, m));
    let registered =
        |b: &NodeId| image.brokers.contains_key(b) || (image.brokers.is_empty() && *b == node_id);
    let mut expected = rf;
    for (i, replicas) in given.iter().enumerate() {
        if replicas.is_empty() {
            return bad("The manual partition assignment includes an empty replica list.".into());
        }
        if let Some(dup) = replicas
            .iter()
            .enumerate()
            .find(|(j, b)| replicas[..*j].contains(b))
        {
            return bad(format!(
                "The manual partition assignment includes the broker {} more than once.",
                dup.1
            ));
        }
        if let Some(b) = replicas.iter().find(|b| !registered(b)) {
            return bad(format!("The manual partition assignment includes broker {b}, but no such broker is registered."));
        }
        match expected {
            Some(n) if n != replicas.len() => {
                return bad(format!("The manual partition assignment includes a partition with {} replica(s), but this is not consistent with previous partitions, which have {n} replica(s).", replicas.len()));
            }
            _ => expected = Some(replicas.len()),
        }
        if image.brokers.values().any(|_| true) && !replicas.iter().any(|b| is_live(image, *b)) {
            return bad(format!("All brokers specified in the manual partition assignment for partition {i} are fenced or in controlled shutdown."));
        }
    }
    Ok(given.to_vec())
}

/// An unfenced broker that is not shutting down.
fn is_live(image: &MetadataImage, id: NodeId) -> bool {
    image
        .brokers
        .get(&id)
        .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
}

/// Replicas for new partitions over the live brokers of `image` (this node alone when none
/// has registered yet), from a random start as Kafka places them.
fn assign(
    image: &MetadataImage,
    node_id: NodeId,
    first_partition: i32,
    count: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<NodeId>>, OpError> {
    let mut brokers: Vec<PlacementBroker> = image
        .live_brokers()
        .map(|b| PlacementBroker {
            id: b.broker_id,
            rack: b.rack.clone(),
        })
        .collect();
    if brokers.is_empty() {
        brokers.push(PlacementBroker {
            id: node_id,
            rack: None,
        });
    }
    let random = Uuid::new_v4().as_u128();
    place_replicas(
        &brokers,
        first_partition,
        count,
        replication_factor,
        (random % 1_000_003) as usize,
        ((random >> 64) % 1_000_003) as usize,
    )
}

/// New partitions: the ISR is the replicas that are live (all of them before any broker has
/// registered), led by the first.
fn partition_records(
    image: &MetadataImage,
    topic_id: Uuid,
    first_partition: i32,
    assignments: Vec<Vec<NodeId>>,
) -> Vec<MetadataRecord> {
    assignments
        .into_iter()
        .zip(first_partition..)
        .map(|(replicas, partition_id)| {
            let live: Vec<NodeId> = replicas
                .iter()
                .copied()
                .filter(|r| is_live(image, *r))
                .collect();
            let isr = if live.is_empty() {
                replicas.clone()
            } else {
                live
            };
            MetadataRecord::PartitionRecord {
                topic_id,
                partition_id,
                leader: isr[0],
                isr,
                replicas,
                leader_epoch: LeaderEpoch::new(0),
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            }
        })
        .collect()
}

pub fn create_partitions_records(
    image: &MetadataImage,
    node_id: NodeId,
    name: &str,
    count: i32,
    given: Option<&[Vec<NodeId>]>,
) -> Result<Vec<MetadataRecord>, OpError> {
    let topic = image.topic(name).ok_or_else(|| {
        OpError::new(
            ErrorCode::UnknownTopicOrPartition,
            format!("Topic '{name}' does not exist."),
        )
    })?;
    let current = topic.partitions.len() as i32;
    if count < current {
        return Err(OpError::new(
            ErrorCode::InvalidPartitions,
            format!("Topic currently has {current} partitions, which is higher than the requested {count}."),
        ));
    }
    if count == current {
        return Err(OpError::new(
            ErrorCode::InvalidPartitions,
            format!("Topic already has {current} partitions."),
        ));
    }
    if count > 100_000 {
        return Err(OpError::new(
            ErrorCode::InvalidPartitions,
            "Number of partitions is limited to 100000.",
        ));
    }
    let rf = topic
        .partitions
        .values()
        .next()
        .map_or(1, |p| p.replicas.len().max(1) as i16);
    let assignments = match given {
        Some(g) if g.len() as i32 != count - current => {
            return Err(OpError::new(
                ErrorCode::InvalidReplicaAssignment,
                format!(
                    "The manual partition assignment has {} partitions; {} were added.",
                    g.len(),
                    count - current
                ),
            ))
        }
        Some(g) => check_assignment(image, node_id, g, Some(rf as usize))?,
        None => assign(image, node_id, current, count - current, rf)?,
    };
    Ok(partition_records(
        image,
        topic.topic_id,
        current,
        assignments,
    ))
}

/// Records that fence the brokers in `fence`, unfence those in `unfence`, and then bring
/// every partition in line with who is live ([`elections`]).
pub fn liveness_records(
    image: &MetadataImage,
    fence: &[NodeId],
    unfence: &[NodeId],
    unclean_default: bool,
) -> Vec<MetadataRecord> {
    let mut records = Vec::new();
    for id in fence {
        if let Some(b) = image.brokers.get(id).filter(|b| !b.fenced) {
            records.push(MetadataRecord::BrokerRegistrationChangeRecord {
                broker_id: *id,
                broker_epoch: b.broker_epoch,
                fenced: Some(true),
                in_controlled_shutdown: None,
            });
        }
    }
    for id in unfence {
        if let Some(b) = image.brokers.get(id).filter(|b| b.fenced) {
            records.push(MetadataRecord::BrokerRegistrationChangeRecord {
                broker_id: *id,
                broker_epoch: b.broker_epoch,
                fenced: Some(false),
                in_controlled_shutdown: None,
            });
        }
    }
    let live: Vec<NodeId> = image
        .brokers
        .values()
        .filter(|b| (!b.fenced || unfence.contains(&b.broker_id)) && !fence.contains(&b.broker_id))
        .map(|b| b.broker_id)
        .collect();
    records.extend(elections(image, &live, unclean_default));
    records
}

/// Records for a broker (re)registering with `registration`: partitions left without a
/// leader while it was away get it back ([`elections`]), and every partition it still
/// leads, having never been fenced, gets the next leader epoch. A restarted leader may have
/// lost records it had not fsynced (acks=1 or unacknowledged); with a new epoch, what it
/// appends from now on cannot be mistaken for the lost records by followers that still
/// hold them, so they find the divergence and truncate (KIP-101).
pub fn registration_records(
    image: &MetadataImage,
    registration: MetadataRecord,
    unclean_default: bool,
) -> Vec<MetadataRecord> {
    let MetadataRecord::RegisterBrokerRecord { broker_id: id, .. } = &registration else {
        return vec![registration];
    };
    let id = *id;
    let mut live: Vec<NodeId> = image.live_brokers().map(|b| b.broker_id).collect();
    live.push(id);
    let mut records = vec![registration];
    records.extend(elections(image, &live, unclean_default));
    let mut after = image.clone();
    for r in &records {
        after.apply(r);
    }
    for t in after.topics.values() {
        for p in t.partitions.values().filter(|p| p.leader == id) {
            let before = image
                .topics
                .get(&t.name)
                .and_then(|bt| bt.partitions.get(&p.partition_id));
            if before.is_some_and(|b| b.leader == id && b.leader_epoch == p.leader_epoch) {
                let mut bumped = p.clone();
                bumped.leader_epoch = LeaderEpoch::new(p.leader_epoch.get() + 1);
                records.push(bumped.to_record(t.topic_id));
            }
        }
    }
    records
}

/// Records for Kafka's controlled shutdown of broker `id`: it is fenced and marked as
/// shutting down (so liveness checks do not unfence it while it still answers), and its
/// partitions get new leaders from their ISRs at once ([`elections`]). Registering again
/// when it restarts clears both.
pub fn controlled_shutdown_records(
    image: &MetadataImage,
    id: NodeId,
    unclean_default: bool,
) -> Vec<MetadataRecord> {
    let Some(b) = image.brokers.get(&id) else {
        return Vec::new();
    };
    let mut records = vec![MetadataRecord::BrokerRegistrationChangeRecord {
        broker_id: id,
        broker_epoch: b.broker_epoch,
        fenced: Some(true),
        in_controlled_shutdown: Some(true),
    }];
    let live: Vec<NodeId> = image
        .live_brokers()
        .map(|b| b.broker_id)
        .filter(|b| *b != id)
        .collect();
    records.extend(elections(image, &live, unclean_default));
    records
}

/// Whether a topic may elect a leader outside its ISR (`unclean.leader.election.enable`:
/// the topic's override, the cluster-wide dynamic default, then the static one).
fn unclean_allowed(image: &MetadataImage, topic: &str, unclean_default: bool) -> bool {
    const KEY: &str = "unclean.leader.election.enable";
    [
        (ResourceType::Topic, topic.to_string()),
        (ResourceType::Broker, String::new()),
    ]
    .iter()
    .find_map(|k| image.configs.get(k).and_then(|c| c.get(KEY)))
    .map_or(unclean_default, |v| v.eq_ignore_ascii_case("true"))
}

/// Brings partitions in line with the brokers in `live`, as Kafka's controller does when
/// brokers are fenced or come back:
/// - replicas that are not live leave the ISR (the last member stays, so the replica that
///   had everything stays known);
/// - a partition whose leader is not live gets the first live member of its ISR, with the
///   next leader epoch;
/// - with no live ISR member it has no leader (-1) until one comes back, or, where unclean
///   election is enabled, the first live replica leads with an ISR of itself (records the
///   ISR never had may be lost; that is what enabling it accepts).
pub fn elections(
    image: &MetadataImage,
    live: &[NodeId],
    unclean_default: bool,
) -> Vec<MetadataRecord> {
    let mut out = Vec::new();
    for t in image.topics.values() {
        for p in t.partitions.values() {
            let live_isr: Vec<NodeId> =
                p.isr.iter().copied().filter(|r| live.contains(r)).collect();
            let (leader, isr) = if live.contains(&p.leader) {
                (p.leader, live_isr)
            } else if let Some(first) = live_isr.first() {
                (*first, live_isr.clone())
            } else if let Some(r) = p
                .replicas
                .iter()
                .find(|r| live.contains(r))
                .filter(|_| unclean_allowed(image, &t.name, unclean_default))
            {
                tracing::warn!(topic = %t.name, partition = p.partition_id, leader = %r, "unclean leader election: the new leader was not in the ISR");
                (*r, vec![*r])
            } else {
                (NodeId::new(-1), p.isr.clone())
            };
            let isr = if isr.is_empty() { p.isr.clone() } else { isr };
            if leader == p.leader && isr == p.isr {
                continue;
            }
            let leader_epoch = if leader == p.leader {
                p.leader_epoch
            } else {
                LeaderEpoch::new(p.leader_epoch.get() + 1)
            };
            out.push(MetadataRecord::PartitionRecord {
                topic_id: t.topic_id,
                partition_id: p.partition_id,
                replicas: p.replicas.clone(),
                isr,
                leader,
                leader_epoch,
                adding_replicas: p.adding_replicas.clone(),
                removing_replicas: p.removing_replicas.clone(),
            });
        }
    }
    out
}

/// ElectLeaders' election types (KIP-460).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElectionType {
    /// Give leadership back to the first assigned replica, if it is live and in the ISR.
    Preferred,
    /// Give a leaderless partition a leader: from the live ISR, or else any live replica.
    Unclean,
}

impl ElectionType {
    /// The request's `election_type`: 0 preferred, 1 unclean.
    pub fn from_wire(v: i8) -> Option<Self> {
        match v {
            0 => Some(Self::Preferred),
            1 => Some(Self::Unclean),
            _ => None,
        }
    }
}

/// One partition's answer to an election.
pub type ElectionOutcome = (String, i32, Result<(), OpError>);

/// Records for ElectLeaders, and each partition's answer. `targets` `None` means every
/// partition, and then partitions that need no election are left out of the answers, as
/// Kafka leaves them out. A new leader takes the next leader epoch and keeps the ISR (an
/// unclean leader from outside it gets an ISR of itself).
pub fn elect_leaders_records(
    image: &MetadataImage,
    kind: ElectionType,
    targets: Option<&[(String, i32)]>,
) -> (Vec<MetadataRecord>, Vec<ElectionOutcome>) {
    let live: Vec<NodeId> = image
        .brokers
        .values()
        .filter(|b| !b.fenced && !b.in_controlled_shutdown)
        .map(|b| b.broker_id)
        .collect();
    let everything = targets.is_none();
    let targets: Vec<(String, i32)> = match targets {
        Some(t) => t.to_vec(),
        None => image
            .topics
            .values()
            .flat_map(|t| t.partitions.keys().map(|p| (t.name.clone(), *p)))
            .collect(),
    };
    let mut records = Vec::new();
    let mut outcomes = Vec::new();
    for (topic, partition) in targets {
        let found = image
            .topic(&topic)
            .and_then(|t| Some((t.topic_id, t.partitions.get(&partition)?)));
        let outcome = match found {
            None => Err(OpError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("{topic}-{partition} does not exist"),
            )),
            Some((topic_id, p)) => elect_one(p, kind, &live).map(|(leader, isr)| {
                records.push(MetadataRecord::PartitionRecord {
                    topic_id,
                    partition_id: partition,
                    replicas: p.replicas.clone(),
                    isr,
                    leader,
                    leader_epoch: LeaderEpoch::new(p.leader_epoch.get() + 1),
                    adding_replicas: p.adding_replicas.clone(),
                    removing_replicas: p.removing_replicas.clone(),
                });
            }),
        };
        let not_needed = matches!(&outcome, Err(e) if e.code == ErrorCode::ElectionNotNeeded);
        if !(everything && not_needed) {
            outcomes.push((topic, partition, outcome));
        }
    }
    (records, outcomes)
}

/// The new leader and ISR for one partition, or why there is none.
fn elect_one(
    p: &vltava_metadata::PartitionImage,
    kind: ElectionType,
    live: &[NodeId],
) -> Result<(NodeId, Vec<NodeId>), OpError> {
    match kind {
        ElectionType::Preferred => {
            let Some(&preferred) = p.replicas.first() else {
                return Err(OpError::new(
                    ErrorCode::PreferredLeaderNotAvailable,
                    "the partition has no replicas",
                ));
            };
            if p.leader == preferred {
                Err(OpError::new(
                    ErrorCode::ElectionNotNeeded,
                    format!("the preferred replica {preferred} already leads"),
                ))
            } else if live.contains(&preferred) && p.isr.contains(&preferred) {
                Ok((preferred, p.isr.clone()))
            } else {
                Err(OpError::new(
                    ErrorCode::PreferredLeaderNotAvailable,
                    format!("the preferred replica {preferred} is not live and in the ISR"),
                ))
            }
        }
        ElectionType::Unclean => {
            if live.contains(&p.leader) {
                return Err(OpError::new(
                    ErrorCode::ElectionNotNeeded,
                    format!("{} leads", p.leader),
                ));
            }
            if let Some(r) = p.isr.iter().find(|r| live.contains(r)) {
                let isr = p.isr.iter().copied().filter(|r| live.contains(r)).collect();
                Ok((*r, isr))
            } else if let Some(r) = p.replicas.iter().find(|r| live.contains(r)) {
                tracing::warn!(partition = p.partition_id, leader = %r, "unclean leader election requested: the new leader was not in the ISR");
                Ok((*r, vec![*r]))
            } else {
                Err(OpError::new(
                    ErrorCode::EligibleLeadersNotAvailable,
                    "no replica is live",
                ))
            }
        }
    }
}

/// Records for a partition leader's ISR change (Kafka's AlterPartition), checked against the
/// image: the sender must still lead at `leader_epoch`, the ISR must be the one it saw, the
/// new ISR must hold the leader and only assigned replicas, and a replica joining it must
/// be a live, unfenced broker.
pub fn alter_isr_records(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
    leader: NodeId,
    leader_epoch: i32,
    expected: &[NodeId],
    proposed: &[NodeId],
) -> Result<Vec<MetadataRecord>, OpError> {
    let p = image
        .topic_by_id(&topic_id)
        .and_then(|t| t.partitions.get(&partition))
        .ok_or_else(|| OpError::new(ErrorCode::UnknownTopicOrPartition, "no such partition"))?;
    if p.leader != leader {
        return Err(OpError::new(
            ErrorCode::NotLeaderOrFollower,
            format!("{leader} no longer leads the partition"),
        ));
    }
    if p.leader_epoch.get() != leader_epoch {
        return Err(OpError::new(
            ErrorCode::FencedLeaderEpoch,
            format!(
                "leader epoch {leader_epoch} is not {}",
                p.leader_epoch.get()
            ),
        ));
    }
    if p.isr != expected {
        return Err(OpError::new(
            ErrorCode::InvalidUpdateVersion,
            "the ISR changed since the leader read it",
        ));
    }
    if !proposed.contains(&leader) || proposed.iter().any(|r| !p.replicas.contains(r)) {
        return Err(OpError::new(
            ErrorCode::InvalidRequest,
            format!(
                "ISR {proposed:?} must hold the leader and only replicas of {:?}",
                p.replicas
            ),
        ));
    }
    for r in proposed.iter().filter(|r| !p.isr.contains(r)) {
        if !image
            .brokers
            .get(r)
            .is_some_and(|b| !b.fenced && !b.in_controlled_shutdown)
        {
            return Err(OpError::new(
                ErrorCode::IneligibleReplica,
                format!("replica {r} is fenced or shutting down"),
            ));
        }
    }
    let mut next = p.clone();
    next.isr = proposed.to_vec();
    let next = finish_reassignment(image, next.clone()).unwrap_or(next);
    Ok(vec![next.to_record(topic_id)])
}

/// Partition reassignment (KIP-455) of one partition to `target`, or its cancellation with
/// `None`, as Kafka's controller does it:
/// - the replicas become `target` followed by the original replicas not in it; the new ones
///   are `adding`, the ones left out `removing`, and the ISR and leader stay;
/// - new replicas catch up as followers and join the ISR through AlterPartition; once every
///   target replica is in the ISR, [`finish_reassignment`] drops the removed ones (and hands
///   leadership to a target replica if the leader was one of them);
/// - a new reassignment of a partition already moving starts from its original replicas;
/// - `allow_replication_factor_change` false (KIP-860) refuses a target of another size;
/// - cancelling goes back to the original replicas (in the reassignment's order, as in
///   Kafka), keeping their ISR members.
pub fn reassign_records(
    image: &MetadataImage,
    topic: &str,
    partition: i32,
    target: Option<&[NodeId]>,
    allow_replication_factor_change: bool,
) -> Result<Vec<MetadataRecord>, OpError> {
    let (topic_id, p) = image
        .topic(topic)
        .and_then(|t| Some((t.topic_id, t.partitions.get(&partition)?)))
        .ok_or_else(|| {
            OpError::new(
                ErrorCode::UnknownTopicOrPartition,
                format!("{topic}-{partition} does not exist"),
            )
        })?;
    let original = p.original_replicas();
    let mut next = p.clone();
    match target {
        None => {
            if !p.is_reassigning() {
                return Err(OpError::new(
                    ErrorCode::NoReassignmentInProgress,
                    format!("{topic}-{partition} is not being reassigned"),
                ));
            }
            next.replicas = original;
            next.adding_replicas.clear();
            next.removing_replicas.clear();
        }
        Some(target) => {
            if target.is_empty() {
                return Err(OpError::new(
                    ErrorCode::InvalidReplicaAssignment,
                    "the target replica list is empty",
                ));
            }
            if let Some(dup) = target
                .iter()
                .enumerate()
                .find(|(i, r)| target[..*i].contains(r))
            {
                return Err(OpError::new(
                    ErrorCode::InvalidReplicaAssignment,
                    format!("broker {} appears twice in the target replicas", dup.1),
                ));
            }
            if !allow_replication_factor_change && target.len() != original.len() {
                return Err(OpError::new(
                    ErrorCode::InvalidReplicationFactor,
                    format!(
                        "the target has {} replicas, the partition {}, and replication factor changes are not allowed",
                        target.len(),
                        original.len()
                    ),
                ));
            }
            if let Some(r) = target.iter().find(|r| !image.brokers.contains_key(r)) {
                return Err(OpError::new(
                    ErrorCode::InvalidReplicaAssignment,
                    format!("broker {r} is not registered"),
                ));
            }
            next.replicas = target
                .iter()
                .chain(original.iter().filter(|r| !target.contains(r)))
                .copied()
                .collect();
            next.adding_replicas = target
                .iter()
                .copied()
                .filter(|r| !original.contains(r))
                .collect();
            next.removing_replicas = original
                .iter()
                .copied()
                .filter(|r| !target.contains(r))
                .collect();
        }
    }
    next.isr.retain(|r| next.replicas.contains(r));
    if next.isr.is_empty() {
        return Err(OpError::new(
            ErrorCode::InvalidReplicaAssignment,
            format!(
                "none of the replicas {:?} is in the ISR {:?}: the partition would lose its data",
                next.replicas, p.isr
            ),
        ));
    }
    if !next.replicas.contains(&next.leader) && p.leader.get() >= 0 {
        next.leader = next.isr[0];
        next.leader_epoch = LeaderEpoch::new(p.leader_epoch.get() + 1);
    }
    let next = finish_reassignment(image, next.clone()).unwrap_or(next);
    if next == *p {
        return Ok(Vec::new());
    }
    Ok(vec![next.to_record(topic_id)])
}

/// The partition with its reassignment completed, if every target replica is in the ISR:
/// only the target replicas remain, and a leader that is being removed hands over to the
/// first live target replica in the ISR with the next leader epoch.
fn finish_reassignment(image: &MetadataImage, p: PartitionImage) -> Option<PartitionImage> {
    if !p.is_reassigning() {
        return None;
    }
    let target = p.target_replicas();
    if !target.iter().all(|r| p.isr.contains(r)) {
        return None;
    }
    let mut done = p.clone();
    done.isr.retain(|r| target.contains(r));
    done.replicas = target;
    done.adding_replicas.clear();
    done.removing_replicas.clear();
    if !done.replicas.contains(&done.leader) {
        let leader = done
            .replicas
            .iter()
            .copied()
            .find(|r| done.isr.contains(r) && is_live(image, *r))?;
        done.leader = leader;
        done.leader_epoch = LeaderEpoch::new(p.leader_epoch.get() + 1);
    }
    Some(done)
}

/// A broker replicas may be placed on: its id and rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementBroker {
    pub id: NodeId,
    pub rack: Option<String>,
}

/// Chooses replicas for `partitions` new partitions numbered from `first_partition`, `rf`
/// each, spread as Kafka spreads them: each partition's first replica (its preferred leader)
/// goes round the brokers from `start`, followers follow at a shift that grows every time
/// the round completes, and with racks no rack holds two replicas of a partition until every
/// rack holds one. `start` and `shift` are random in production, fixed in tests.
pub fn place_replicas(
    brokers: &[PlacementBroker],
    first_partition: i32,
    partitions: i32,
    rf: i16,
    start: usize,
    shift: usize,
) -> Result<Vec<Vec<NodeId>>, OpError> {
    let n = brokers.len();
    if rf <= 0 {
        return Err(OpError::new(
            ErrorCode::InvalidReplicationFactor,
            "Replication factor must be larger than 0.",
        ));
    }
    if rf as usize > n {
        return Err(OpError::new(
            ErrorCode::InvalidReplicationFactor,
            format!("Unable to replicate the partition {rf} time(s): The target replication factor of {rf} cannot be reached because only {n} broker(s) are registered."),
        ));
    }
    // Brokers ordered so consecutive ones alternate racks (a1, b1, c1, a2, ...).
    let mut by_rack: BTreeMap<Option<&str>, Vec<NodeId>> = BTreeMap::new();
    let mut sorted = brokers.to_vec();
    sorted.sort_by_key(|b| b.id);
    for b in &sorted {
        by_rack.entry(b.rack.as_deref()).or_default().push(b.id);
    }
    let racks = by_rack.len();
    let rack_of: BTreeMap<NodeId, Option<&str>> =
        sorted.iter().map(|b| (b.id, b.rack.as_deref())).collect();
    let mut ring = Vec::with_capacity(n);
    for i in 0.. {
        let before = ring.len();
        for ids in by_rack.values() {
            if let Some(id) = ids.get(i) {
                ring.push(*id);
            }
        }
        if ring.len() == before {
            break;
        }
    }
    let mut out = Vec::with_capacity(partitions.max(0) as usize);
    for p in first_partition..first_partition + partitions {
        let p = p as usize;
        let shift = shift + p / n;
        let first = (start + p) % n;
        let mut chosen = vec![ring[first]];
        let mut used_racks = vec![rack_of[&ring[first]]];
        let step = 1 + shift % n.max(2).saturating_sub(1).max(1);
        // Walk the ring from the shifted position; a rack already used is skipped while
        // some rack is still unused.
        for pass in 0..2 {
            let mut k = (first + step) % n;
            for _ in 0..n {
                if chosen.len() == rf as usize {
                    break;
                }
                let id = ring[k];
                let rack = rack_of[&id];
                let rack_ok = pass == 1 || used_racks.len() >= racks || !used_racks.contains(&rack);
                if !chosen.contains(&id) && rack_ok {
                    chosen.push(id);
                    if !used_racks.contains(&rack) {
                        used_racks.push(rack);
                    }
                }
                k = (k + 1) % n;
            }
        }
        out.push(chosen);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn brokers(spec: &[(i32, Option<&str>)]) -> Vec<PlacementBroker> {
        spec.iter()
            .map(|(id, rack)| PlacementBroker {
                id: NodeId::new(*id),
                rack: rack.map(str::to_string),
            })
            .collect()
    }

    #[test]
    fn placement_spreads_leaders_and_replicas() {
        let b = brokers(&[(1, None), (2, None), (3, None)]);
        let p = place_replicas(&b, 0, 6, 3, 0, 0).unwrap();
        for r in &p {
            let mut d = r.clone();
            d.sort();
            d.dedup();
            assert_eq!(d.len(), 3, "{p:?}");
        }
        // Preferred leaders go round the brokers.
        let leaders: Vec<i32> = p.iter().map(|r| r[0].get()).collect();
        assert_eq!(leaders, vec![1, 2, 3, 1, 2, 3]);
        assert_eq!(
            place_replicas(&b, 0, 1, 4, 0, 0).unwrap_err().code,
            ErrorCode::InvalidReplicationFactor
        );
        assert_eq!(
            place_replicas(&b, 0, 2, 1, 1, 0).unwrap(),
            vec![vec![NodeId::new(2)], vec![NodeId::new(3)]]
        );
    }

    #[test]
    fn a_fenced_leader_is_replaced_from_the_isr_or_leaves_no_leader() {
        use vltava_metadata::BrokerEndpoint;
        let mut img = MetadataImage::default();
        for id in 1..=2 {
            img.apply(&MetadataRecord::RegisterBrokerRecord {
                broker_id: NodeId::new(id),
                incarnation_id: Uuid::from_u128(id as u128),
                broker_epoch: 1,
                endpoints: Vec::<BrokerEndpoint>::new(),
                rack: None,
                fenced: false,
            });
        }
        let tid = Uuid::from_u128(5);
        img.apply(&MetadataRecord::TopicRecord {
            name: "t".into(),
            topic_id: tid,
        });
        let n = NodeId::new;
        for (p, replicas) in [(0, vec![n(1)]), (1, vec![n(1), n(2)]), (2, vec![n(2)])] {
            img.apply(&MetadataRecord::PartitionRecord {
                topic_id: tid,
                partition_id: p,
                isr: replicas.clone(),
                leader: replicas[0],
                replicas,
                leader_epoch: LeaderEpoch::new(3),
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            });
        }
        for r in liveness_records(&img, &[n(1)], &[], false) {
            img.apply(&r);
        }
        let t = img.topic("t").unwrap();
        assert!(img.brokers[&n(1)].fenced);
        assert_eq!(
            (t.partitions[&0].leader, t.partitions[&0].isr.clone()),
            (n(-1), vec![n(1)])
        );
        assert_eq!(
            (t.partitions[&1].leader, t.partitions[&1].isr.clone()),
            (n(2), vec![n(2)])
        );
        assert_eq!(t.partitions[&1].leader_epoch.get(), 4);
        assert_eq!(t.partitions[&2].leader_epoch.get(), 3, "untouched");
        // Fencing again changes nothing; unfencing brings the lone replica back as leader.
        assert!(liveness_records(&img, &[n(1)], &[], false).is_empty());
        for r in liveness_records(&img, &[], &[n(1)], false) {
            img.apply(&r);
        }
        let t = img.topic("t").unwrap();
        assert!(!img.brokers[&n(1)].fenced);
        assert_eq!(t.partitions[&0].leader, n(1));
        assert_eq!(t.partitions[&0].leader_epoch.get(), 5);
        assert_eq!(t.partitions[&1].leader, n(2), "a live leader stays");
    }

    #[test]
    fn isr_changes_are_checked_against_the_image_and_unclean_election_is_opt_in() {
        use vltava_metadata::BrokerEndpoint;
        let n = NodeId::new;
        let mut img = MetadataImage::default();
        for id in 1..=3 {
            img.apply(&MetadataRecord::RegisterBrokerRecord {
                broker_id: n(id),
                incarnation_id: Uuid::from_u128(id as u128),
                broker_epoch: 1,
                endpoints: Vec::<BrokerEndpoint>::new(),
                rack: None,
                fenced: id == 3,
            });
        }
        let tid = Uuid::from_u128(6);
        img.apply(&MetadataRecord::TopicRecord {
            name: "t".into(),
            topic_id: tid,
        });
        let partition =
            |isr: Vec<NodeId>, leader: NodeId, epoch: i32| MetadataRecord::PartitionRecord {
                topic_id: tid,
                partition_id: 0,
                replicas: vec![n(1), n(2), n(3)],
                isr,
                leader,
                leader_epoch: LeaderEpoch::new(epoch),
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            };
        img.apply(&partition(vec![n(1), n(2)], n(1), 4));
        let code = |r: Result<Vec<MetadataRecord>, OpError>| r.unwrap_err().code;
        let alter =
            |img: &MetadataImage, leader, epoch, expected: &[NodeId], proposed: &[NodeId]| {
                alter_isr_records(img, tid, 0, leader, epoch, expected, proposed)
            };
        let isr12 = [n(1), n(2)];
        assert_eq!(
            code(alter(&img, n(2), 4, &isr12, &[n(2)])),
            ErrorCode::NotLeaderOrFollower
        );
        assert_eq!(
            code(alter(&img, n(1), 3, &isr12, &[n(1)])),
            ErrorCode::FencedLeaderEpoch
        );
        assert_eq!(
            code(alter(&img, n(1), 4, &[n(1)], &[n(1)])),
            ErrorCode::InvalidUpdateVersion
        );
        assert_eq!(
            code(alter(&img, n(1), 4, &isr12, &[n(2)])),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code(alter(&img, n(1), 4, &isr12, &[n(1), n(2), n(3)])),
            ErrorCode::IneligibleReplica,
            "broker 3 is fenced"
        );
        for r in alter(&img, n(1), 4, &isr12, &[n(1)]).unwrap() {
            img.apply(&r);
        }
        let p = &img.topic("t").unwrap().partitions[&0];
        assert_eq!((p.isr.clone(), p.leader_epoch.get()), (vec![n(1)], 4));

        // The leader dies with no other ISR member: no leader, unless unclean election is
        // enabled for the topic, which takes a live replica outside the ISR.
        for r in liveness_records(&img, &[n(1)], &[], false) {
            img.apply(&r);
        }
        let p = &img.topic("t").unwrap().partitions[&0];
        assert_eq!((p.leader, p.isr.clone()), (n(-1), vec![n(1)]));
        img.apply(&MetadataRecord::ConfigRecord {
            resource_type: ResourceType::Topic,
            resource_name: "t".into(),
            name: "unclean.leader.election.enable".into(),
            value: Some("true".into()),
        });
        for r in elections(&img, &[n(2)], false) {
            img.apply(&r);
        }
        let p = &img.topic("t").unwrap().partitions[&0];
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch.get()),
            (n(2), vec![n(2)], 6)
        );
        // A fenced follower leaves the ISR without a new leader epoch.
        img.apply(&partition(vec![n(2), n(1)], n(2), 6));
        for r in elections(&img, &[n(2)], false) {
            img.apply(&r);
        }
        let p = &img.topic("t").unwrap().partitions[&0];
        assert_eq!(
            (p.leader, p.isr.clone(), p.leader_epoch.get()),
            (n(2), vec![n(2)], 6)
        );
    }

    #[test]
    fn placement_covers_racks_first() {
        let b = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("b")),
            (4, Some("b")),
            (5, Some("c")),
            (6, Some("c")),
        ]);
        for start in 0..6 {
            for shift in 0..6 {
                for r in place_replicas(&b, 0, 12, 3, start, shift).unwrap() {
                    let mut racks: Vec<_> = r.iter().map(|id| (id.get() + 1) / 2).collect();
                    racks.sort();
                    racks.dedup();
                    assert_eq!(racks.len(), 3, "{r:?} start {start} shift {shift}");
                }
            }
        }
    }

    #[test]
    fn create_topic_validation() {
        let mut img = MetadataImage::default();
        let none = BTreeMap::new();
        fn err<T>(r: Result<T, OpError>) -> Option<ErrorCode> {
            r.err().map(|e| e.code)
        }
        assert_eq!(
            err(create_topic_records(
                &img,
                NodeId::new(1),
                "bad name",
                1,
                1,
                &none,
                None
            )),
            Some(ErrorCode::InvalidTopicException)
        );
        assert_eq!(
            err(create_topic_records(
                &img,
                NodeId::new(1),
                "t",
                0,
                1,
                &none,
                None
            )),
            Some(ErrorCode::InvalidPartitions)
        );
        assert_eq!(
            err(create_topic_records(
                &img,
                NodeId::new(1),
                "t",
                1,
                3,
                &none,
                None
            )),
            Some(ErrorCode::InvalidReplicationFactor)
        );
        let bad: BTreeMap<_, _> = [("retention.ms".to_string(), "x".to_string())].into();
        assert_eq!(
            err(create_topic_records(
                &img,
                NodeId::new(1),
                "t",
                1,
                1,
                &bad,
                None
            )),
            Some(ErrorCode::InvalidConfig)
        );
        let (_, recs) =
            create_topic_records(&img, NodeId::new(1), "coll.x", 1, 1, &none, None).unwrap();
        for r in &recs {
            img.apply(r);
        }
        assert_eq!(
            err(create_topic_records(
                &img,
                NodeId::new(1),
                "coll_x",
                1,
                1,
                &none,
                None
            )),
            Some(ErrorCode::InvalidTopicException)
        );
        let (_, recs) = create_topic_records(&img, NodeId::new(1), "t", 3, 1, &none, None).unwrap();
        for r in &recs {
            img.apply(r);
        }
        assert_eq!(img.topic("t").unwrap().partitions.len(), 3);
        assert_eq!(
            err(create_topic_records(
                &img,
                NodeId::new(1),
                "t",
                1,
                1,
                &none,
                None
            )),
            Some(ErrorCode::TopicAlreadyExists)
        );
        assert_eq!(
            err(create_partitions_records(
                &img,
                NodeId::new(1),
                "t",
                2,
                None
            )),
            Some(ErrorCode::InvalidPartitions)
        );
        for r in &create_partitions_records(&img, NodeId::new(1), "t", 5, None).unwrap() {
            img.apply(r);
        }
        assert_eq!(img.topic("t").unwrap().partitions.len(), 5);
    }

    /// Brokers 1..=3 and topic `t` with `(replicas, leader, isr)` per partition, epoch 3.
    fn election_image(partitions: &[(Vec<i32>, i32, Vec<i32>)]) -> MetadataImage {
        let mut img = MetadataImage::default();
        for id in 1..=3 {
            img.apply(&MetadataRecord::RegisterBrokerRecord {
                broker_id: NodeId::new(id),
                incarnation_id: Uuid::from_u128(id as u128),
                broker_epoch: 1,
                endpoints: Vec::new(),
                rack: None,
                fenced: false,
            });
        }
        let tid = Uuid::from_u128(9);
        img.apply(&MetadataRecord::TopicRecord {
            name: "t".into(),
            topic_id: tid,
        });
        let ids = |v: &[i32]| v.iter().copied().map(NodeId::new).collect::<Vec<_>>();
        for (i, (replicas, leader, isr)) in partitions.iter().enumerate() {
            img.apply(&MetadataRecord::PartitionRecord {
                topic_id: tid,
                partition_id: i as i32,
                replicas: ids(replicas),
                isr: ids(isr),
                leader: NodeId::new(*leader),
                leader_epoch: LeaderEpoch::new(3),
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            });
        }
        img
    }

    fn codes(outcomes: &[ElectionOutcome]) -> Vec<(i32, Option<ErrorCode>)> {
        outcomes
            .iter()
            .map(|(_, p, r)| (*p, r.as_ref().err().map(|e| e.code)))
            .collect()
    }

    #[test]
    fn a_preferred_election_moves_leadership_to_the_first_replica_only_when_it_is_in_sync() {
        let mut img = election_image(&[
            (vec![1, 2, 3], 2, vec![1, 2, 3]), // 1 is in sync: it leads again
            (vec![1, 2], 1, vec![1, 2]),       // already led by 1
            (vec![3, 2], 2, vec![2]),          // 3 is behind: it may not lead
        ]);
        let t = |p: i32| ("t".to_string(), p);
        let asked = [t(0), t(1), t(2), t(9)];
        let (records, outcomes) =
            elect_leaders_records(&img, ElectionType::Preferred, Some(&asked));
        assert_eq!(
            codes(&outcomes),
            vec![
                (0, None),
                (1, Some(ErrorCode::ElectionNotNeeded)),
                (2, Some(ErrorCode::PreferredLeaderNotAvailable)),
                (9, Some(ErrorCode::UnknownTopicOrPartition)),
            ]
        );
        // Asked for everything, partitions that need nothing are not mentioned.
        let (_, all) = elect_leaders_records(&img, ElectionType::Preferred, None);
        assert_eq!(
            codes(&all),
            vec![(0, None), (2, Some(ErrorCode::PreferredLeaderNotAvailable))]
        );
        for r in &records {
            img.apply(r);
        }
        let p0 = &img.topic("t").unwrap().partitions[&0];
        assert_eq!((p0.leader, p0.leader_epoch.get()), (NodeId::new(1), 4));
        assert_eq!(p0.isr.len(), 3);
        // Done once, there is nothing left to do.
        assert!(elect_leaders_records(&img, ElectionType::Preferred, None)
            .0
            .is_empty());
        // A fenced preferred replica is not elected.
        let mut img = election_image(&[(vec![1, 2], 2, vec![1, 2])]);
        for r in liveness_records(&img, &[NodeId::new(1)], &[], false) {
            img.apply(&r);
        }
        let (records, outcomes) = elect_leaders_records(&img, ElectionType::Preferred, None);
        assert!(records.is_empty());
        assert_eq!(
            codes(&outcomes),
            vec![(0, Some(ErrorCode::PreferredLeaderNotAvailable))]
        );
    }

    #[test]
    fn an_unclean_election_gives_a_leaderless_partition_a_live_replica() {
        let mut img = election_image(&[
            (vec![1, 2], 1, vec![1]), // 1 leads alone; once fenced, only 2 is left
            (vec![2, 3], 2, vec![2, 3]),
        ]);
        for r in liveness_records(&img, &[NodeId::new(1)], &[], false) {
            img.apply(&r);
        }
        assert_eq!(
            img.topic("t").unwrap().partitions[&0].leader,
            NodeId::new(-1)
        );
        let (records, outcomes) = elect_leaders_records(&img, ElectionType::Unclean, None);
        assert_eq!(codes(&outcomes), vec![(0, None)]);
        for r in &records {
            img.apply(r);
        }
        let p0 = &img.topic("t").unwrap().partitions[&0];
        assert_eq!(
            (p0.leader, p0.isr.clone(), p0.leader_epoch.get()),
            (NodeId::new(2), vec![NodeId::new(2)], 5)
        );
        let asked = [("t".to_string(), 1)];
        let (_, outcomes) = elect_leaders_records(&img, ElectionType::Unclean, Some(&asked));
        assert_eq!(
            codes(&outcomes),
            vec![(1, Some(ErrorCode::ElectionNotNeeded))]
        );
    }

    #[test]
    fn a_broker_in_controlled_shutdown_hands_over_its_leaderships() {
        let mut img = election_image(&[
            (vec![1, 2, 3], 1, vec![1, 2, 3]),
            (vec![1], 1, vec![1]),
            (vec![2, 1], 2, vec![2, 1]),
        ]);
        for r in controlled_shutdown_records(&img, NodeId::new(1), false) {
            img.apply(&r);
        }
        let b1 = &img.brokers[&NodeId::new(1)];
        assert!(b1.fenced && b1.in_controlled_shutdown);
        let t = img.topic("t").unwrap();
        let ids = |v: &[i32]| v.iter().copied().map(NodeId::new).collect::<Vec<_>>();
        assert_eq!(
            (t.partitions[&0].leader, t.partitions[&0].isr.clone()),
            (NodeId::new(2), ids(&[2, 3]))
        );
        assert_eq!(t.partitions[&0].leader_epoch.get(), 4);
        // Its only replica: no leader until it is back.
        assert_eq!(t.partitions[&1].leader, NodeId::new(-1));
        assert_eq!(
            (t.partitions[&2].leader, t.partitions[&2].isr.clone()),
            (NodeId::new(2), ids(&[2]))
        );
    }

    #[test]
    fn replicas_assigned_by_hand_are_checked_as_kafka_checks_them() {
        let mut img = election_image(&[(vec![1, 2], 1, vec![1, 2])]);
        let ids = |v: &[&[i32]]| -> Vec<Vec<NodeId>> {
            v.iter()
                .map(|r| r.iter().copied().map(NodeId::new).collect())
                .collect()
        };
        let none = BTreeMap::new();
        let create = |img: &MetadataImage, given: &[&[i32]]| {
            let g = ids(given);
            create_topic_records(img, NodeId::new(1), "m", 1, 1, &none, Some(&g))
                .map(|(_, r)| r)
                .map_err(|e| e.code)
        };
        let bad = Err(ErrorCode::InvalidReplicaAssignment);
        assert_eq!(create(&img, &[&[]]), bad, "empty");
        assert_eq!(create(&img, &[&[1, 1]]), bad, "twice");
        assert_eq!(create(&img, &[&[1, 9]]), bad, "unregistered");
        assert_eq!(create(&img, &[&[1, 2], &[3]]), bad, "uneven");
        let records = create(&img, &[&[3, 1], &[2, 3]]).unwrap();
        for r in &records {
            img.apply(r);
        }
        let m = img.topic("m").unwrap();
        assert_eq!(m.partitions[&0].replicas, ids(&[&[3, 1]])[0]);
        assert_eq!(m.partitions[&1].leader, NodeId::new(2));
        // A fenced replica is assigned but out of the ISR and does not lead.
        for r in liveness_records(&img, &[NodeId::new(3)], &[], false) {
            img.apply(&r);
        }
        let g = ids(&[&[3, 1]]);
        for r in &create_partitions_records(&img, NodeId::new(1), "m", 3, Some(&g)).unwrap() {
            img.apply(r);
        }
        let p2 = &img.topic("m").unwrap().partitions[&2];
        assert_eq!(
            (p2.leader, p2.isr.clone()),
            (NodeId::new(1), vec![NodeId::new(1)])
        );
        let g = ids(&[&[3]]);
        assert_eq!(
            create_partitions_records(&img, NodeId::new(1), "m", 4, Some(&g)).map_err(|e| e.code),
            bad,
            "every replica fenced, and one replica where the topic has two"
        );
        let g = ids(&[&[1, 2], &[2, 1]]);
        assert_eq!(
            create_partitions_records(&img, NodeId::new(1), "m", 4, Some(&g)).map_err(|e| e.code),
            bad,
            "two assignments for one new partition"
        );
    }

    /// A cluster of `brokers` (all live) with topic "t" partition 0 on `replicas`, all in
    /// the ISR, led by the first.
    fn one_partition(brokers: i32, replicas: &[i32]) -> (MetadataImage, Uuid) {
        let mut img = MetadataImage::default();
        for id in 1..=brokers {
            img.apply(&MetadataRecord::RegisterBrokerRecord {
                broker_id: NodeId::new(id),
                incarnation_id: Uuid::from_u128(id as u128),
                broker_epoch: 1,
                endpoints: Vec::new(),
                rack: None,
                fenced: false,
            });
        }
        let tid = Uuid::from_u128(9);
        img.apply(&MetadataRecord::TopicRecord {
            name: "t".into(),
            topic_id: tid,
        });
        let r: Vec<NodeId> = replicas.iter().copied().map(NodeId::new).collect();
        img.apply(&MetadataRecord::PartitionRecord {
            topic_id: tid,
            partition_id: 0,
            replicas: r.clone(),
            isr: r.clone(),
            leader: r[0],
            leader_epoch: LeaderEpoch::new(3),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        });
        (img, tid)
    }

    fn ids(v: &[i32]) -> Vec<NodeId> {
        v.iter().copied().map(NodeId::new).collect()
    }

    fn part(img: &MetadataImage) -> PartitionImage {
        img.topic("t").unwrap().partitions[&0].clone()
    }

    #[test]
    fn a_reassignment_adds_replicas_then_drops_the_old_ones_once_the_new_are_in_sync() {
        let (mut img, tid) = one_partition(5, &[1, 2, 3]);
        for r in reassign_records(&img, "t", 0, Some(&ids(&[4, 5, 1])), true).unwrap() {
            img.apply(&r);
        }
        let p = part(&img);
        assert_eq!(p.replicas, ids(&[4, 5, 1, 2, 3]));
        assert_eq!(p.adding_replicas, ids(&[4, 5]));
        assert_eq!(p.removing_replicas, ids(&[2, 3]));
        assert_eq!((p.leader, p.leader_epoch.get()), (NodeId::new(1), 3));
        assert_eq!(p.isr, ids(&[1, 2, 3]));

        // Listed as in progress; a second reassignment of the same partition starts from the
        // original replicas.
        let again = reassign_records(&img, "t", 0, Some(&ids(&[1, 2, 4])), true).unwrap();
        let mut other = img.clone();
        for r in &again {
            other.apply(r);
        }
        let q = part(&other);
        assert_eq!(q.replicas, ids(&[1, 2, 4, 3]));
        assert_eq!(
            (q.adding_replicas, q.removing_replicas),
            (ids(&[4]), ids(&[3]))
        );

        // One new replica in sync is not enough.
        for r in alter_isr_records(
            &img,
            tid,
            0,
            NodeId::new(1),
            3,
            &ids(&[1, 2, 3]),
            &ids(&[1, 2, 3, 4]),
        )
        .unwrap()
        {
            img.apply(&r);
        }
        assert!(part(&img).is_reassigning());
        // Both are: the old replicas leave, and the leader 1 stays (it is a target).
        for r in alter_isr_records(
            &img,
            tid,
            0,
            NodeId::new(1),
            3,
            &ids(&[1, 2, 3, 4]),
            &ids(&[1, 2, 3, 4, 5]),
        )
        .unwrap()
        {
            img.apply(&r);
        }
        let p = part(&img);
        assert!(!p.is_reassigning());
        assert_eq!(p.replicas, ids(&[4, 5, 1]));
        assert_eq!(p.isr, ids(&[1, 4, 5]));
        assert_eq!((p.leader, p.leader_epoch.get()), (NodeId::new(1), 3));
    }

    #[test]
    fn a_leader_that_is_reassigned_away_hands_over_when_the_move_completes() {
        let (mut img, tid) = one_partition(4, &[1, 2, 3]);
        for r in reassign_records(&img, "t", 0, Some(&ids(&[2, 3, 4])), true).unwrap() {
            img.apply(&r);
        }
        assert_eq!(part(&img).leader, NodeId::new(1));
        for r in alter_isr_records(
            &img,
            tid,
            0,
            NodeId::new(1),
            3,
            &ids(&[1, 2, 3]),
            &ids(&[1, 2, 3, 4]),
        )
        .unwrap()
        {
            img.apply(&r);
        }
        let p = part(&img);
        assert_eq!(p.replicas, ids(&[2, 3, 4]));
        assert_eq!((p.leader, p.leader_epoch.get()), (NodeId::new(2), 4));
        assert_eq!(p.isr, ids(&[2, 3, 4]));
    }

    #[test]
    fn shrinking_or_reordering_completes_at_once_and_cancelling_goes_back() {
        let (img, _) = one_partition(4, &[1, 2, 3]);
        let mut shrunk = img.clone();
        for r in reassign_records(&img, "t", 0, Some(&ids(&[3, 2])), true).unwrap() {
            shrunk.apply(&r);
        }
        let p = part(&shrunk);
        assert!(!p.is_reassigning());
        assert_eq!(p.replicas, ids(&[3, 2]));
        assert_eq!((p.leader, p.leader_epoch.get()), (NodeId::new(3), 4));
        // The same replicas in the same order: nothing to write.
        assert!(reassign_records(&img, "t", 0, Some(&ids(&[1, 2, 3])), true)
            .unwrap()
            .is_empty());

        let mut moving = img.clone();
        for r in reassign_records(&img, "t", 0, Some(&ids(&[4, 2, 3])), true).unwrap() {
            moving.apply(&r);
        }
        assert!(part(&moving).is_reassigning());
        for r in reassign_records(&moving, "t", 0, None, true).unwrap() {
            moving.apply(&r);
        }
        // Back to the original replicas and ISR; like Kafka's, the order is the one the
        // reassignment gave them.
        let p = part(&moving);
        assert!(!p.is_reassigning());
        assert_eq!(p.replicas, ids(&[2, 3, 1]));
        assert_eq!(p.isr, ids(&[1, 2, 3]));
        assert_eq!((p.leader, p.leader_epoch.get()), (NodeId::new(1), 3));

        let code = |r: Result<Vec<MetadataRecord>, OpError>| r.unwrap_err().code;
        assert_eq!(
            code(reassign_records(&img, "t", 0, None, true)),
            ErrorCode::NoReassignmentInProgress
        );
        assert_eq!(
            code(reassign_records(&img, "t", 1, Some(&ids(&[1])), true)),
            ErrorCode::UnknownTopicOrPartition
        );
        assert_eq!(
            code(reassign_records(&img, "t", 0, Some(&ids(&[])), true)),
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            code(reassign_records(&img, "t", 0, Some(&ids(&[1, 1])), true)),
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            code(reassign_records(&img, "t", 0, Some(&ids(&[1, 9])), true)),
            ErrorCode::InvalidReplicaAssignment
        );
        assert_eq!(
            code(reassign_records(&img, "t", 0, Some(&ids(&[1, 2])), false)),
            ErrorCode::InvalidReplicationFactor
        );
        assert!(reassign_records(&img, "t", 0, Some(&ids(&[1, 2, 4])), false).is_ok());
    }

    #[test]
    fn a_leader_registering_again_leads_with_the_next_epoch() {
        let (img, _) = one_partition(3, &[1, 2, 3]);
        let again = |id: i32| MetadataRecord::RegisterBrokerRecord {
            broker_id: NodeId::new(id),
            incarnation_id: Uuid::from_u128(77),
            broker_epoch: 2,
            endpoints: Vec::new(),
            rack: None,
            fenced: false,
        };
        let mut next = img.clone();
        for r in registration_records(&img, again(1), false) {
            next.apply(&r);
        }
        let p = part(&next);
        assert_eq!((p.leader, p.leader_epoch.get()), (NodeId::new(1), 4));
        assert_eq!(p.isr, ids(&[1, 2, 3]));
        // A follower registering again changes nothing of the partition.
        let recs = registration_records(&img, again(2), false);
        assert_eq!(recs.len(), 1, "{recs:?}");
    }
}
