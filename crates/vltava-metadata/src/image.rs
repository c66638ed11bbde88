//! The in-memory result of replaying metadata records.

use std::collections::{BTreeMap, HashMap};

use uuid::Uuid;
use vltava_types::{LeaderEpoch, NodeId, ProducerId};

use crate::{BrokerEndpoint, MetadataRecord, ResourceType, ScramCredential, ScramMechanism};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImage {
    pub partition_id: i32,
    pub replicas: Vec<NodeId>,
    pub isr: Vec<NodeId>,
    pub leader: NodeId,
    pub leader_epoch: LeaderEpoch,
    /// A reassignment in progress (KIP-455): replicas being added and to be removed, both
    /// also in `replicas`. Empty when none is.
    pub adding_replicas: Vec<NodeId>,
    pub removing_replicas: Vec<NodeId>,
}

impl PartitionImage {
    /// The record that sets this partition to its state here.
    pub fn to_record(&self, topic_id: Uuid) -> MetadataRecord {
        MetadataRecord::PartitionRecord {
            topic_id,
            partition_id: self.partition_id,
            replicas: self.replicas.clone(),
            isr: self.isr.clone(),
            leader: self.leader,
            leader_epoch: self.leader_epoch,
            adding_replicas: self.adding_replicas.clone(),
            removing_replicas: self.removing_replicas.clone(),
        }
    }

    /// Whether a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition has when its reassignment completes (all of them when
    /// none is in progress).
    pub fn target_replicas(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas it had before its reassignment began.
    pub fn original_replicas(&self) -> Vec<NodeId> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub partitions: BTreeMap<i32, PartitionImage>,
}

/// A registered broker (KRaft's BrokerRegistration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub broker_id: NodeId,
    pub incarnation_id: Uuid,
    pub broker_epoch: i64,
    pub endpoints: Vec<BrokerEndpoint>,
    pub rack: Option<String>,
    /// Fenced brokers lead nothing and are left out of Metadata responses.
    pub fenced: bool,
    pub in_controlled_shutdown: bool,
}

impl BrokerRegistration {
    /// The endpoint of the listener named `listener`.
    pub fn endpoint(&self, listener: &str) -> Option<&BrokerEndpoint> {
        self.endpoints.iter().find(|e| e.name == listener)
    }
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
    /// Registered brokers by id.
    pub brokers: BTreeMap<NodeId, BrokerRegistration>,
    /// ACLs by id.
    pub acls: BTreeMap<Uuid, crate::acl::AclBinding>,
    /// Client quotas by entity and key.
    pub client_quotas:
        BTreeMap<crate::quota::QuotaEntity, BTreeMap<String, crate::quota::QuotaValue>>,
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
                adding_replicas,
                removing_replicas,
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
                            adding_replicas: adding_replicas.clone(),
                            removing_replicas: removing_replicas.clone(),
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
            MetadataRecord::AccessControlEntryRecord { id, binding } => {
                self.acls.insert(*id, binding.clone());
            }
            MetadataRecord::RemoveAccessControlEntryRecord { id } => {
                self.acls.remove(id);
            }
            MetadataRecord::ClientQuotaRecord {
                entity,
                key,
                value,
                remove,
            } => {
                if *remove {
                    if let Some(values) = self.client_quotas.get_mut(entity) {
                        values.remove(key);
                        if values.is_empty() {
                            self.client_quotas.remove(entity);
                        }
                    }
                } else {
                    self.client_quotas
                        .entry(entity.clone())
                        .or_default()
                        .insert(key.clone(), *value);
                }
            }
            MetadataRecord::RegisterBrokerRecord {
                broker_id,
                incarnation_id,
                broker_epoch,
                endpoints,
                rack,
                fenced,
            } => {
                self.brokers.insert(
                    *broker_id,
                    BrokerRegistration {
                        broker_id: *broker_id,
                        incarnation_id: *incarnation_id,
                        broker_epoch: *broker_epoch,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        fenced: *fenced,
                        in_controlled_shutdown: false,
                    },
                );
            }
            MetadataRecord::BrokerRegistrationChangeRecord {
                broker_id,
                broker_epoch,
                fenced,
                in_controlled_shutdown,
            } => {
                if let Some(b) = self
                    .brokers
                    .get_mut(broker_id)
                    .filter(|b| b.broker_epoch == *broker_epoch)
                {
                    if let Some(f) = fenced {
                        b.fenced = *f;
                    }
                    if let Some(s) = in_controlled_shutdown {
                        b.in_controlled_shutdown = *s;
                    }
                }
            }
        }
    }

    /// Records that rebuild this image from nothing: a snapshot of the metadata log.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let mut out = Vec::new();
        if self.next_producer_id.get() > 0 {
            out.push(MetadataRecord::ProducerIdsRecord {
                broker_id: NodeId::new(-1),
                broker_epoch: -1,
                next_producer_id: self.next_producer_id,
            });
        }
        for b in self.brokers.values() {
            out.push(MetadataRecord::RegisterBrokerRecord {
                broker_id: b.broker_id,
                incarnation_id: b.incarnation_id,
                broker_epoch: b.broker_epoch,
                endpoints: b.endpoints.clone(),
                rack: b.rack.clone(),
                fenced: b.fenced,
            });
            if b.in_controlled_shutdown {
                out.push(MetadataRecord::BrokerRegistrationChangeRecord {
                    broker_id: b.broker_id,
                    broker_epoch: b.broker_epoch,
                    fenced: None,
                    in_controlled_shutdown: Some(true),
                });
            }
        }
        for t in self.topics.values() {
            out.push(MetadataRecord::TopicRecord {
                name: t.name.clone(),
                topic_id: t.topic_id,
            });
            for p in t.partitions.values() {
                out.push(p.to_record(t.topic_id));
            }
        }
        for ((resource_type, resource_name), configs) in &self.configs {
            for (name, value) in configs {
                out.push(MetadataRecord::ConfigRecord {
                    resource_type: *resource_type,
                    resource_name: resource_name.clone(),
                    name: name.clone(),
                    value: Some(value.clone()),
                });
            }
        }
        for ((name, mechanism), c) in &self.scram_credentials {
            out.push(MetadataRecord::UserScramCredentialRecord {
                name: name.clone(),
                mechanism: *mechanism,
                salt: c.salt.clone(),
                stored_key: c.stored_key.clone(),
                server_key: c.server_key.clone(),
                iterations: c.iterations,
            });
        }
        for (id, binding) in &self.acls {
            out.push(MetadataRecord::AccessControlEntryRecord {
                id: *id,
                binding: binding.clone(),
            });
        }
        for (entity, values) in &self.client_quotas {
            for (key, value) in values {
                out.push(MetadataRecord::ClientQuotaRecord {
                    entity: entity.clone(),
                    key: key.clone(),
                    value: *value,
                    remove: false,
                });
            }
        }
        out
    }

    /// Brokers that are registered and not fenced: the ones that may lead and be listed.
    pub fn live_brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values().filter(|b| !b.fenced)
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
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
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

    #[test]
    fn snapshot_records_rebuild_the_image() {
        let id = Uuid::from_u128(9);
        let b1 = NodeId::new(1);
        let recs = vec![
            MetadataRecord::RegisterBrokerRecord {
                broker_id: b1,
                incarnation_id: Uuid::from_u128(1),
                broker_epoch: 4,
                endpoints: vec![BrokerEndpoint {
                    name: "PLAINTEXT".into(),
                    host: "h".into(),
                    port: 9092,
                    security_protocol: 0,
                }],
                rack: Some("r1".into()),
                fenced: true,
            },
            MetadataRecord::BrokerRegistrationChangeRecord {
                broker_id: b1,
                broker_epoch: 4,
                fenced: Some(false),
                in_controlled_shutdown: Some(true),
            },
            // A stale epoch changes nothing.
            MetadataRecord::BrokerRegistrationChangeRecord {
                broker_id: b1,
                broker_epoch: 3,
                fenced: Some(true),
                in_controlled_shutdown: None,
            },
            MetadataRecord::TopicRecord {
                name: "t".into(),
                topic_id: id,
            },
            MetadataRecord::PartitionRecord {
                topic_id: id,
                partition_id: 2,
                replicas: vec![b1],
                isr: vec![b1],
                leader: b1,
                leader_epoch: LeaderEpoch::new(5),
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            },
            MetadataRecord::ConfigRecord {
                resource_type: ResourceType::Broker,
                resource_name: String::new(),
                name: "log.retention.ms".into(),
                value: Some("1".into()),
            },
            MetadataRecord::ProducerIdsRecord {
                broker_id: b1,
                broker_epoch: 4,
                next_producer_id: ProducerId::new(2000),
            },
            MetadataRecord::UserScramCredentialRecord {
                name: "u".into(),
                mechanism: ScramMechanism::ScramSha256,
                salt: vec![1],
                stored_key: vec![2],
                server_key: vec![3],
                iterations: 4096,
            },
        ];
        let mut img = MetadataImage::default();
        for r in &recs {
            img.apply(r);
        }
        let b = &img.brokers[&b1];
        assert!(!b.fenced && b.in_controlled_shutdown);
        let mut rebuilt = MetadataImage::default();
        for r in img.to_records() {
            rebuilt.apply(&r);
        }
        assert_eq!(rebuilt, img);
    }
}
