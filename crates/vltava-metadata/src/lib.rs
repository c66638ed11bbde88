//! Cluster metadata as a log of records applied to an in-memory image.
//!
//! Every change to topics, partitions or configs is first a [`MetadataRecord`]; the
//! [`MetadataImage`] is nothing but the replay of those records. Today the records live in a
//! local append-only file ([`MetadataLog`]); a Raft quorum will replicate the same records.

pub mod acl;
pub mod config;
mod delta;
mod image;
mod log;
pub mod quota;

pub use delta::{MetadataDelta, TopicIdPartition};
pub use image::{BrokerRegistration, MetadataImage, PartitionImage, TopicImage};
pub use log::MetadataLog;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;
use vltava_types::{LeaderEpoch, NodeId, ProducerId};

/// Kafka's ConfigResource types (as on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ResourceType {
    Topic,
    Broker,
}

impl ResourceType {
    pub fn from_wire(t: i8) -> Option<Self> {
        match t {
            2 => Some(Self::Topic),
            4 => Some(Self::Broker),
            _ => None,
        }
    }

    pub fn wire(self) -> i8 {
        match self {
            Self::Topic => 2,
            Self::Broker => 4,
        }
    }
}

/// One metadata change. Field names follow KRaft's records of the same name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum MetadataRecord {
    TopicRecord {
        name: String,
        topic_id: Uuid,
    },
    PartitionRecord {
        topic_id: Uuid,
        partition_id: i32,
        replicas: Vec<NodeId>,
        isr: Vec<NodeId>,
        leader: NodeId,
        leader_epoch: LeaderEpoch,
        /// Replicas a reassignment is adding (KIP-455); they are also in `replicas`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding_replicas: Vec<NodeId>,
        /// Replicas a reassignment will remove once the added ones are in the ISR; they are
        /// also in `replicas`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing_replicas: Vec<NodeId>,
    },
    /// `value: None` deletes the override.
    ConfigRecord {
        resource_type: ResourceType,
        resource_name: String,
        name: String,
        value: Option<String>,
    },
    RemoveTopicRecord {
        topic_id: Uuid,
    },
    /// A block of producer ids handed to a broker: ids below `next_producer_id` are taken,
    /// so a restart or another broker never reuses one (KRaft's ProducerIdsRecord).
    ProducerIdsRecord {
        broker_id: NodeId,
        broker_epoch: i64,
        next_producer_id: ProducerId,
    },
    /// A SCRAM credential of a user for one mechanism (KRaft's UserScramCredentialRecord).
    /// The password itself is never stored: the client salts it, and the broker keeps the
    /// keys RFC 5802 derives from the salted password.
    UserScramCredentialRecord {
        name: String,
        mechanism: ScramMechanism,
        #[serde(with = "hex_bytes")]
        salt: Vec<u8>,
        #[serde(with = "hex_bytes")]
        stored_key: Vec<u8>,
        #[serde(with = "hex_bytes")]
        server_key: Vec<u8>,
        iterations: i32,
    },
    /// Deletes a user's credential for one mechanism (KRaft's RemoveUserScramCredentialRecord).
    RemoveUserScramCredentialRecord {
        name: String,
        mechanism: ScramMechanism,
    },
    /// An ACL (KRaft's AccessControlEntryRecord), named by an id of its own.
    AccessControlEntryRecord {
        id: Uuid,
        #[serde(flatten)]
        binding: acl::AclBinding,
    },
    /// Deletes the ACL `id` (KRaft's RemoveAccessControlEntryRecord).
    RemoveAccessControlEntryRecord {
        id: Uuid,
    },
    /// Sets (or with `remove`, clears) one quota of a client entity (KRaft's
    /// ClientQuotaRecord).
    ClientQuotaRecord {
        entity: quota::QuotaEntity,
        key: String,
        value: quota::QuotaValue,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        remove: bool,
    },
    /// A broker joined (or rejoined) the cluster: where clients reach it, its rack, and the
    /// epoch that names this registration (KRaft's RegisterBrokerRecord). A new registration
    /// starts fenced.
    RegisterBrokerRecord {
        broker_id: NodeId,
        incarnation_id: Uuid,
        broker_epoch: i64,
        endpoints: Vec<BrokerEndpoint>,
        #[serde(default)]
        rack: Option<String>,
        fenced: bool,
    },
    /// A broker's registration changed: fenced or unfenced, entering controlled shutdown
    /// (KRaft's BrokerRegistrationChangeRecord). Ignored unless `broker_epoch` is the
    /// registration's.
    BrokerRegistrationChangeRecord {
        broker_id: NodeId,
        broker_epoch: i64,
        #[serde(default)]
        fenced: Option<bool>,
        #[serde(default)]
        in_controlled_shutdown: Option<bool>,
    },
}

/// One listener of a registered broker, as clients are told about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BrokerEndpoint {
    pub name: String,
    pub host: String,
    pub port: u16,
    /// Kafka's security protocol id (0 PLAINTEXT, 1 SSL, 2 SASL_PLAINTEXT, 3 SASL_SSL).
    pub security_protocol: i16,
}

pub use vltava_types::ScramMechanism;

/// A stored SCRAM credential, as the image holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScramCredential {
    pub salt: Vec<u8>,
    pub stored_key: Vec<u8>,
    pub server_key: Vec<u8>,
    pub iterations: i32,
}

/// Byte strings in the JSON metadata log, as lowercase hex.
mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push_str(&format!("{b:02x}"));
        }
        s.serialize_str(&out)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd hex length"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| serde::de::Error::custom("bad hex"))
            })
            .collect()
    }
}

#[derive(Debug, Error)]
pub enum MetadataError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metadata record does not encode: {0}")]
    Encode(#[from] serde_json::Error),
    #[error("metadata log {path} failed a write or fsync earlier and accepts no more records")]
    Poisoned { path: std::path::PathBuf },
    #[error("metadata log {path} is corrupt at byte {position}, before {later_records} later records; refusing to drop them")]
    Corrupt {
        path: std::path::PathBuf,
        position: usize,
        later_records: usize,
    },
}

/// Kafka's topic-name rule: 1..=249 chars of `[a-zA-Z0-9._-]`, not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name cannot be \"{name}\""));
    }
    if name.len() > 249 {
        return Err(format!(
            "topic name is {} characters long; the limit is 249",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name {name:?} contains {c:?}; only ASCII alphanumerics, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scram_record_round_trips_through_json() {
        let r = MetadataRecord::UserScramCredentialRecord {
            name: "alice".into(),
            mechanism: ScramMechanism::ScramSha512,
            salt: vec![0, 1, 0xab],
            stored_key: vec![0xff],
            server_key: vec![],
            iterations: 4096,
        };
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"salt\":\"0001ab\""), "{json}");
        assert!(json.contains("SCRAM-SHA-512"), "{json}");
        assert_eq!(serde_json::from_str::<MetadataRecord>(&json).unwrap(), r);
    }

    #[test]
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "ü", "a/b"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
