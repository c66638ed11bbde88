//! Turns admin operations into metadata records, commits them to the metadata log and
//! publishes each committed batch as a delta. Validation is pure: it reads an image and
//! returns records or a Kafka error, so it can be tested without a broker.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Weak};

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;
use vltava_metadata::config as defs;
use vltava_metadata::{
    validate_topic_name, MetadataDelta, MetadataError, MetadataImage, MetadataLog, MetadataRecord,
    ResourceType,
};
use vltava_protocol::ErrorCode;
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

pub struct Controller {
    log: Mutex<MetadataLog>,
    image: RwLock<Arc<MetadataImage>>,
    node_id: NodeId,
    publisher: RwLock<Option<Weak<dyn MetadataPublisher>>>,
}

impl Controller {
    pub fn open(path: &Path, node_id: NodeId) -> Result<Self, MetadataError> {
        let (log, image) = MetadataLog::open(path)?;
        Ok(Self {
            log: Mutex::new(log),
            image: RwLock::new(Arc::new(image)),
            node_id,
            publisher: RwLock::new(None),
        })
    }

    pub fn set_publisher(&self, publisher: Weak<dyn MetadataPublisher>) {
        *self.publisher.write() = Some(publisher);
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.read())
    }

    pub fn node_id(&self) -> NodeId {
        self.node_id
    }

    /// Proposes a change: `op` reads the current image and returns the records to commit
    /// (or a Kafka error) plus a value for the caller. The future resolves once the records
    /// are durable in the metadata log and published. Proposals are serialised, so an op
    /// sees every earlier commit; the disk work runs off the async workers.
    pub async fn write<T, F>(self: &Arc<Self>, op: F) -> Result<T, OpError>
    where
        T: Send + 'static,
        F: FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), OpError> + Send + 'static,
    {
        let me = Arc::clone(self);
        tokio::task::spawn_blocking(move || me.write_blocking(op))
            .await
            .unwrap_or_else(|e| {
                Err(OpError::new(
                    ErrorCode::UnknownServerError,
                    format!("metadata change failed: {e}"),
                ))
            })
    }

    /// [`Controller::write`] on the calling thread (start-up, tests).
    pub fn write_blocking<T>(
        &self,
        op: impl FnOnce(&MetadataImage) -> Result<(Vec<MetadataRecord>, T), OpError>,
    ) -> Result<T, OpError> {
        let mut log = self.log.lock();
        let old = self.image();
        let (records, out) = op(&old)?;
        if records.is_empty() {
            return Ok(out);
        }
        log.append(&records).map_err(|e| {
            OpError::new(ErrorCode::KafkaStorageError, format!("metadata log: {e}"))
        })?;
        let (next, delta) = MetadataDelta::apply(&old, &records);
        let next = Arc::new(next);
        *self.image.write() = Arc::clone(&next);
        let publisher = self.publisher.read().as_ref().and_then(Weak::upgrade);
        if let Some(p) = publisher {
            p.publish(&delta, &next)
                .map_err(|e| OpError::new(ErrorCode::KafkaStorageError, e))?;
        }
        Ok(out)
    }

    /// Publishes the whole image as one delta, once, at start.
    pub fn publish_all(&self) -> Result<(), String> {
        let image = self.image();
        let publisher = self.publisher.read().as_ref().and_then(Weak::upgrade);
        match publisher {
            Some(p) => p.publish(&MetadataDelta::everything(&image), &image),
            None => Ok(()),
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
    if replication_factor > 1 {
        return Err(OpError::new(
            ErrorCode::InvalidReplicationFactor,
            format!("Unable to replicate the partition {replication_factor} time(s): The target replication factor of {replication_factor} cannot be reached because only 1 broker(s) are registered."),
        ));
    }
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
    records.extend(partition_records(topic_id, 0..num_partitions, node_id));
    Ok((topic_id, records))
}

fn partition_records(
    topic_id: Uuid,
    range: std::ops::Range<i32>,
    node_id: NodeId,
) -> impl Iterator<Item = MetadataRecord> {
    range.map(move |partition_id| MetadataRecord::PartitionRecord {
        topic_id,
        partition_id,
        replicas: vec![node_id],
        isr: vec![node_id],
        leader: node_id,
        leader_epoch: LeaderEpoch::new(0),
    })
}

pub fn create_partitions_records(
    image: &MetadataImage,
    node_id: NodeId,
    name: &str,
    count: i32,
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
    Ok(partition_records(topic.topic_id, current..count, node_id).collect())
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
                &none
            )),
            Some(ErrorCode::InvalidTopicException)
        );
        assert_eq!(
            err(create_topic_records(&img, NodeId::new(1), "t", 0, 1, &none)),
            Some(ErrorCode::InvalidPartitions)
        );
        assert_eq!(
            err(create_topic_records(&img, NodeId::new(1), "t", 1, 3, &none)),
            Some(ErrorCode::InvalidReplicationFactor)
        );
        let bad: BTreeMap<_, _> = [("retention.ms".to_string(), "x".to_string())].into();
        assert_eq!(
            err(create_topic_records(&img, NodeId::new(1), "t", 1, 1, &bad)),
            Some(ErrorCode::InvalidConfig)
        );
        let (_, recs) = create_topic_records(&img, NodeId::new(1), "coll.x", 1, 1, &none).unwrap();
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
                &none
            )),
            Some(ErrorCode::InvalidTopicException)
        );
        let (_, recs) = create_topic_records(&img, NodeId::new(1), "t", 3, 1, &none).unwrap();
        for r in &recs {
            img.apply(r);
        }
        assert_eq!(img.topic("t").unwrap().partitions.len(), 3);
        assert_eq!(
            err(create_topic_records(&img, NodeId::new(1), "t", 1, 1, &none)),
            Some(ErrorCode::TopicAlreadyExists)
        );
        assert_eq!(
            err(create_partitions_records(&img, NodeId::new(1), "t", 2)),
            Some(ErrorCode::InvalidPartitions)
        );
        for r in &create_partitions_records(&img, NodeId::new(1), "t", 5).unwrap() {
            img.apply(r);
        }
        assert_eq!(img.topic("t").unwrap().partitions.len(), 5);
    }
}
