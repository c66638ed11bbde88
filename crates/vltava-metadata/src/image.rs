//! The in-memory result of replaying metadata records.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;
use vltava_types::{LeaderEpoch, NodeId, ProducerId};

use crate::{MetadataRecord, ResourceType, ScramCredential, ScramMechanism};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub partition_id: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    pub topics: BTreeMap<String, TopicImage>,
    pub topic_names: HashMap<Uuid, String>,
    /// Dynamic config overrides by resource; for brokers `""` is the cluster-wide default.
    pub configs: BTreeMap<(ResourceType, String), BTreeMap<String, String>>,
    /// The first producer id no broker has been given yet.
    pub next_producer_id: ProducerId,
    /// SCRAM credentials by user name and mechanism.
    pub scram_credentials: BTreeMap<(String, ScramMechanism), ScramCredential>,
}

impl MetadataImage {
    /// Applies one record. Records referring to unknown topics are ignored, which keeps replay
    /// total: a log can always be replayed.
    pub fn apply(&mut self, record: &MetadataRecord) {
        match record {
            MetadataRecord::TopicRecord { name, topic_id } => {
                self.topic_names.insert(*topic_id, name.clone());
                self.topics.insert(
                    name.clone(),
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        partitions: BTreeMap::new(),
                    },
                );
            }
            MetadataRecord::PartitionRecord {
                topic_id,
                partition_id,
                replicas,
                isr,
                leader,
                leader_epoch,
            } => {
                if let Some(t) = self
                    .topic_names
                    .get(topic_id)
                    .and_then(|n| self.topics.get_mut(n))
                {
                    t.partitions.insert(
                        *partition_id,
                        PartitionImage {
                            partition_id: *partition_id,
                            replicas: replicas.clone(),
                            isr: isr.clone(),
                            leader: *leader,
                            leader_epoch: *leader_epoch,
                        },
                    );
                }
            }
            MetadataRecord::ConfigRecord {
                resource_type,
                resource_name,
                name,
                value,
            } => {
                let key = (*resource_type, resource_name.clone());
                match value {
                    Some(v) => {
                        self.configs
                            .entry(key)
                            .or_default()
                            .insert(name.clone(), v.clone());
                    }
                    None => {
                        if let Some(m) = self.configs.get_mut(&key) {
                            m.remove(name);
                            if m.is_empty() {
                                self.configs.remove(&key);
                            }
                        }
                    }
                }
            }
            MetadataRecord::RemoveTopicRecord { topic_id } => {
                if let Some(name) = self.topic_names.remove(topic_id) {
                    self.topics.remove(&name);
                    self.configs.remove(&(ResourceType::Topic, name));
                }
            }
            MetadataRecord::ProducerIdsRecord {
                next_producer_id, ..
            } => {
                // Never backwards, whatever the log says.
                self.next_producer_id = self.next_producer_id.max(*next_producer_id);
            }
            MetadataRecord::UserScramCredentialRecord {
                name,
                mechanism,
                salt,
                stored_key,
                server_key,
                iterations,
            } => {
                self.scram_credentials.insert(
                    (name.clone(), *mechanism),
                    ScramCredential {
                        salt: salt.clone(),
                        stored_key: stored_key.clone(),
                        server_key: server_key.clone(),
                        iterations: *iterations,
                    },
                );
            }
            MetadataRecord::RemoveUserScramCredentialRecord { name, mechanism } => {
                self.scram_credentials.remove(&(name.clone(), *mechanism));
            }
        }
    }

    /// A user's SCRAM credential for one mechanism.
    pub fn scram_credential(
        &self,
        name: &str,
        mechanism: ScramMechanism,
    ) -> Option<&ScramCredential> {
        self.scram_credentials.get(&(name.to_string(), mechanism))
    }

    pub fn topic(&self, name: &str) -> Option<&TopicImage> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: &Uuid) -> Option<&TopicImage> {
        self.topic_names.get(id).and_then(|n| self.topics.get(n))
    }

    pub fn topic_configs(&self, name: &str) -> Option<&BTreeMap<String, String>> {
        self.configs.get(&(ResourceType::Topic, name.to_string()))
    }

    pub fn broker_configs(&self, resource_name: &str) -> Option<&BTreeMap<String, String>> {
        self.configs
            .get(&(ResourceType::Broker, resource_name.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replay_builds_and_removes_topics() {
        let id = Uuid::from_u128(7);
        let mut img = MetadataImage::default();
        let recs = [
            MetadataRecord::TopicRecord {
                name: "t".into(),
                topic_id: id,
            },
            MetadataRecord::PartitionRecord {
                topic_id: id,
                partition_id: 0,
                replicas: vec![NodeId::new(1)],
                isr: vec![NodeId::new(1)],
                leader: NodeId::new(1),
                leader_epoch: LeaderEpoch::new(0),
            },
            MetadataRecord::ConfigRecord {
                resource_type: ResourceType::Topic,
                resource_name: "t".into(),
                name: "retention.ms".into(),
                value: Some("5".into()),
            },
        ];
        for r in &recs {
            img.apply(r);
        }
        assert_eq!(img.topic("t").unwrap().partitions.len(), 1);
        assert_eq!(img.topic_configs("t").unwrap()["retention.ms"], "5");
        img.apply(&MetadataRecord::RemoveTopicRecord { topic_id: id });
        assert!(img.topic("t").is_none());
        assert!(img.topic_configs("t").is_none());
        // A partition for an unknown topic is ignored rather than failing replay.
        img.apply(&recs[1]);
        assert!(img.topics.is_empty());
    }
}
