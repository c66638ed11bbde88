//! What one committed batch of records changed (Kafka's `MetadataDelta` idea).
//!
//! Components that act on metadata (partitions, coordinators, config caches) are told what
//! changed rather than handed two whole images to compare, so their work grows with the
//! change, not with the cluster.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;
use vltava_types::{LeaderEpoch, NodeId};

use crate::{MetadataImage, MetadataRecord, PartitionImage, ResourceType};

/// A topic and one of its partitions, named by the topic's id (names can be reused after a
/// deletion; ids cannot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TopicIdPartition {
    pub topic_id: Uuid,
    pub partition: i32,
}

/// The changes of one committed batch, relative to the image it was applied to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataDelta {
    /// Topics that exist after the batch and did not before, with their names.
    pub created_topics: BTreeMap<Uuid, String>,
    /// Topics that existed before the batch and are gone after it, with their names.
    pub deleted_topics: BTreeMap<Uuid, String>,
    /// Partitions whose registration is new or changed (replicas, ISR, leader, epoch), as
    /// they are after the batch. Partitions of deleted topics are not listed.
    pub changed_partitions: BTreeMap<TopicIdPartition, PartitionImage>,
    /// Resources whose dynamic configs changed.
    pub changed_configs: BTreeSet<(ResourceType, String)>,
    /// Brokers whose registration is new or changed (endpoints, fencing, shutdown).
    pub changed_brokers: BTreeSet<NodeId>,
    /// Whether any client quota was set or removed.
    pub changed_quotas: bool,
}

impl MetadataDelta {
    /// Applies `records` to `base` and returns the new image with what changed.
    pub fn apply(base: &MetadataImage, records: &[MetadataRecord]) -> (MetadataImage, Self) {
        let mut image = base.clone();
        let mut delta = Self::default();
        for record in records {
            delta.note(&image, record);
            image.apply(record);
        }
        delta.settle(base, &image);
        (image, delta)
    }

    /// Everything in `image`, as if it had been built from nothing (a broker's first publish
    /// at start).
    pub fn everything(image: &MetadataImage) -> Self {
        let mut delta = Self::default();
        for t in image.topics.values() {
            delta.created_topics.insert(t.topic_id, t.name.clone());
            for p in t.partitions.values() {
                delta.changed_partitions.insert(
                    TopicIdPartition {
                        topic_id: t.topic_id,
                        partition: p.partition_id,
                    },
                    p.clone(),
                );
            }
        }
        delta.changed_configs = image.configs.keys().cloned().collect();
        delta.changed_brokers = image.brokers.keys().copied().collect();
        delta.changed_quotas = !image.client_quotas.is_empty();
        delta
    }

    /// What replacing `old` with `new` wholesale changed: for a follower that installs a
    /// snapshot instead of applying the records in between, the one case where the records
    /// themselves are not at hand.
    pub fn replace(old: &MetadataImage, new: &MetadataImage) -> Self {
        let mut delta = Self::everything(new);
        delta
            .created_topics
            .retain(|id, _| old.topic_by_id(id).is_none());
        delta.deleted_topics = old
            .topics
            .values()
            .filter(|t| new.topic_by_id(&t.topic_id).is_none())
            .map(|t| (t.topic_id, t.name.clone()))
            .collect();
        delta.changed_partitions.retain(|tp, p| {
            old.topic_by_id(&tp.topic_id)
                .and_then(|t| t.partitions.get(&tp.partition))
                != Some(p)
        });
        delta.changed_configs = old
            .configs
            .keys()
            .chain(new.configs.keys())
            .filter(|k| old.configs.get(*k) != new.configs.get(*k))
            .cloned()
            .collect();
        delta.changed_brokers = old
            .brokers
            .keys()
            .chain(new.brokers.keys())
            .filter(|k| old.brokers.get(*k) != new.brokers.get(*k))
            .copied()
            .collect();
        delta
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Records what `record` is about to change in `image`.
    fn note(&mut self, image: &MetadataImage, record: &MetadataRecord) {
        match record {
            MetadataRecord::TopicRecord { name, topic_id } => {
                self.created_topics.insert(*topic_id, name.clone());
                self.deleted_topics.remove(topic_id);
            }
            MetadataRecord::PartitionRecord {
                topic_id,
                partition_id,
                ..
            } => {
                // Filled in from the final image by `settle`, so several records for one
                // partition in a batch leave its last state.
                if image.topic_by_id(topic_id).is_some() {
                    self.changed_partitions.insert(
                        TopicIdPartition {
                            topic_id: *topic_id,
                            partition: *partition_id,
                        },
                        PartitionImage {
                            partition_id: *partition_id,
                            replicas: Vec::new(),
                            isr: Vec::new(),
                            leader: NodeId::new(-1),
                            leader_epoch: LeaderEpoch::new(-1),
                            adding_replicas: Vec::new(),
                            removing_replicas: Vec::new(),
                        },
                    );
                }
            }
            MetadataRecord::ConfigRecord {
                resource_type,
                resource_name,
                ..
            } => {
                self.changed_configs
                    .insert((*resource_type, resource_name.clone()));
            }
            MetadataRecord::RemoveTopicRecord { topic_id } => {
                if let Some(name) = image.topic_names.get(topic_id) {
                    self.deleted_topics.insert(*topic_id, name.clone());
                    self.changed_configs
                        .insert((ResourceType::Topic, name.clone()));
                }
            }
            // Read from the image by whoever allocates; no broker reacts to it.
            MetadataRecord::ProducerIdsRecord { .. } => {}
            // Read from the image at each authentication; nothing to publish.
            MetadataRecord::UserScramCredentialRecord { .. }
            | MetadataRecord::RemoveUserScramCredentialRecord { .. } => {}
            // Read from the image at each authorization.
            MetadataRecord::AccessControlEntryRecord { .. }
            | MetadataRecord::RemoveAccessControlEntryRecord { .. } => {}
            MetadataRecord::ClientQuotaRecord { .. } => self.changed_quotas = true,
            MetadataRecord::RegisterBrokerRecord { broker_id, .. }
            | MetadataRecord::BrokerRegistrationChangeRecord { broker_id, .. } => {
                self.changed_brokers.insert(*broker_id);
            }
        }
    }

    /// Drops what cancelled out within the batch and fills partitions from the final image.
    fn settle(&mut self, base: &MetadataImage, image: &MetadataImage) {
        // A topic created and deleted in one batch never existed for anyone outside it.
        self.deleted_topics
            .retain(|id, _| base.topic_by_id(id).is_some());
        self.created_topics
            .retain(|id, _| image.topic_by_id(id).is_some() && base.topic_by_id(id).is_none());
        self.changed_partitions.retain(|tp, p| {
            let Some(now) = image
                .topic_by_id(&tp.topic_id)
                .and_then(|t| t.partitions.get(&tp.partition))
            else {
                return false;
            };
            let before = base
                .topic_by_id(&tp.topic_id)
                .and_then(|t| t.partitions.get(&tp.partition));
            *p = now.clone();
            before != Some(now)
        });
        self.changed_brokers
            .retain(|id| base.brokers.get(id) != image.brokers.get(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str, id: u128) -> MetadataRecord {
        MetadataRecord::TopicRecord {
            name: name.into(),
            topic_id: Uuid::from_u128(id),
        }
    }

    fn partition(id: u128, p: i32, leader: i32, epoch: i32) -> MetadataRecord {
        MetadataRecord::PartitionRecord {
            topic_id: Uuid::from_u128(id),
            partition_id: p,
            replicas: vec![NodeId::new(1), NodeId::new(2)],
            isr: vec![NodeId::new(1), NodeId::new(2)],
            leader: NodeId::new(leader),
            leader_epoch: LeaderEpoch::new(epoch),
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    fn tp(id: u128, partition: i32) -> TopicIdPartition {
        TopicIdPartition {
            topic_id: Uuid::from_u128(id),
            partition,
        }
    }

    #[test]
    fn creation_then_leader_change_then_deletion() {
        let base = MetadataImage::default();
        let (img, d) = MetadataDelta::apply(
            &base,
            &[topic("t", 1), partition(1, 0, 1, 0), partition(1, 1, 2, 0)],
        );
        assert_eq!(d.created_topics[&Uuid::from_u128(1)], "t");
        assert_eq!(d.changed_partitions.len(), 2);
        assert_eq!(d.changed_partitions[&tp(1, 1)].leader, NodeId::new(2));
        assert_eq!(d, MetadataDelta::everything(&img));

        // A new leader for one partition changes only that partition.
        let (img2, d) = MetadataDelta::apply(&img, &[partition(1, 1, 1, 1)]);
        assert!(d.created_topics.is_empty());
        assert_eq!(d.changed_partitions.keys().collect::<Vec<_>>(), [&tp(1, 1)]);
        assert_eq!(
            d.changed_partitions[&tp(1, 1)].leader_epoch,
            LeaderEpoch::new(1)
        );
        // Re-registering a partition unchanged is no change.
        let (_, d) = MetadataDelta::apply(&img2, &[partition(1, 0, 1, 0)]);
        assert!(d.is_empty(), "{d:?}");

        let (img3, d) = MetadataDelta::apply(
            &img2,
            &[MetadataRecord::RemoveTopicRecord {
                topic_id: Uuid::from_u128(1),
            }],
        );
        assert_eq!(d.deleted_topics[&Uuid::from_u128(1)], "t");
        assert!(d.changed_partitions.is_empty());
        assert!(img3.topics.is_empty());
    }

    #[test]
    fn what_cancels_out_within_a_batch_is_not_reported() {
        let (_, d) = MetadataDelta::apply(
            &MetadataImage::default(),
            &[
                topic("t", 1),
                partition(1, 0, 1, 0),
                MetadataRecord::RemoveTopicRecord {
                    topic_id: Uuid::from_u128(1),
                },
            ],
        );
        assert!(d.created_topics.is_empty());
        assert!(d.deleted_topics.is_empty());
        assert!(d.changed_partitions.is_empty());
    }

    #[test]
    fn config_changes_name_their_resource() {
        let (img, _) = MetadataDelta::apply(&MetadataImage::default(), &[topic("t", 1)]);
        let (_, d) = MetadataDelta::apply(
            &img,
            &[MetadataRecord::ConfigRecord {
                resource_type: ResourceType::Broker,
                resource_name: String::new(),
                name: "log.retention.ms".into(),
                value: Some("5".into()),
            }],
        );
        assert_eq!(
            d.changed_configs.iter().collect::<Vec<_>>(),
            [&(ResourceType::Broker, String::new())]
        );
    }
}
