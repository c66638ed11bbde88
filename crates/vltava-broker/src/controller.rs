//! Turns admin operations into metadata records, commits them to the metadata log and
//! publishes the new image. Validation is pure: it reads an image and returns records or a
//! Kafka error, so it can be tested without a broker.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use uuid::Uuid;
use vltava_metadata::config as defs;
use vltava_metadata::{
    validate_topic_name, MetadataError, MetadataImage, MetadataLog, MetadataRecord, ResourceType,
};
use vltava_protocol::ErrorCode;

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

pub struct Controller {
    log: Mutex<MetadataLog>,
    image: RwLock<Arc<MetadataImage>>,
    node_id: i32,
}

impl Controller {
    pub fn open(path: &Path, node_id: i32) -> Result<Self, MetadataError> {
        let (log, image) = MetadataLog::open(path)?;
        Ok(Self {
            log: Mutex::new(log),
            image: RwLock::new(Arc::new(image)),
            node_id,
        })
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        Arc::clone(&self.image.read())
    }

    /// Appends records durably and publishes the new image; returns `(old, new)`.
    pub fn commit(
        &self,
        records: &[MetadataRecord],
    ) -> Result<(Arc<MetadataImage>, Arc<MetadataImage>), OpError> {
        let mut log = self.log.lock();
        let old = self.image();
        let mut next = (*old).clone();
        log.append(records, &mut next).map_err(|e| {
            OpError::new(ErrorCode::KafkaStorageError, format!("metadata log: {e}"))
        })?;
        let next = Arc::new(next);
        *self.image.write() = Arc::clone(&next);
        Ok((old, next))
    }

    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// Serialises read-validate-commit sequences so two creates of one name cannot both pass.
    pub fn with_lock<T>(&self, f: impl FnOnce(&Self) -> T) -> T {
        static OP: Mutex<()> = Mutex::new(());
        let _g = OP.lock();
        f(self)
    }
}

/// Records that create a topic, after Kafka's checks.
pub fn create_topic_records(
    image: &MetadataImage,
    node_id: i32,
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
    node_id: i32,
) -> impl Iterator<Item = MetadataRecord> {
    range.map(move |partition_id| MetadataRecord::PartitionRecord {
        topic_id,
        partition_id,
        replicas: vec![node_id],
        isr: vec![node_id],
        leader: node_id,
        leader_epoch: 0,
    })
}

pub fn create_partitions_records(
    image: &MetadataImage,
    node_id: i32,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_topic_validation() {
        let mut img = MetadataImage::default();
        let none = BTreeMap::new();
        fn err<T>(r: Result<T, OpError>) -> Option<ErrorCode> {
            r.err().map(|e| e.code)
        }
        assert_eq!(
            err(create_topic_records(&img, 1, "bad name", 1, 1, &none)),
            Some(ErrorCode::InvalidTopicException)
        );
        assert_eq!(
            err(create_topic_records(&img, 1, "t", 0, 1, &none)),
            Some(ErrorCode::InvalidPartitions)
        );
        assert_eq!(
            err(create_topic_records(&img, 1, "t", 1, 3, &none)),
            Some(ErrorCode::InvalidReplicationFactor)
        );
        let bad: BTreeMap<_, _> = [("retention.ms".to_string(), "x".to_string())].into();
        assert_eq!(
            err(create_topic_records(&img, 1, "t", 1, 1, &bad)),
            Some(ErrorCode::InvalidConfig)
        );
        let (_, recs) = create_topic_records(&img, 1, "coll.x", 1, 1, &none).unwrap();
        for r in &recs {
            img.apply(r);
        }
        assert_eq!(
            err(create_topic_records(&img, 1, "coll_x", 1, 1, &none)),
            Some(ErrorCode::InvalidTopicException)
        );
        let (_, recs) = create_topic_records(&img, 1, "t", 3, 1, &none).unwrap();
        for r in &recs {
            img.apply(r);
        }
        assert_eq!(img.topic("t").unwrap().partitions.len(), 3);
        assert_eq!(
            err(create_topic_records(&img, 1, "t", 1, 1, &none)),
            Some(ErrorCode::TopicAlreadyExists)
        );
        assert_eq!(
            err(create_partitions_records(&img, 1, "t", 2)),
            Some(ErrorCode::InvalidPartitions)
        );
        for r in &create_partitions_records(&img, 1, "t", 5).unwrap() {
            img.apply(r);
        }
        assert_eq!(img.topic("t").unwrap().partitions.len(), 5);
    }
}
