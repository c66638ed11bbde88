//! Cluster metadata as a log of records applied to an in-memory image.
//!
//! Every change to topics, partitions or configs is first a [`MetadataRecord`]; the
//! [`MetadataImage`] is nothing but the replay of those records. Today the records live in a
//! local append-only file ([`MetadataLog`]); a Raft quorum will replicate the same records.

pub mod config;
mod delta;
mod image;
mod log;

pub use delta::{MetadataDelta, TopicIdPartition};
pub use image::{MetadataImage, PartitionImage, TopicImage};
pub use log::MetadataLog;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

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
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: i32,
        leader_epoch: i32,
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
        broker_id: i32,
        broker_epoch: i64,
        next_producer_id: i64,
    },
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
    fn topic_names() {
        assert!(validate_topic_name("orders.v1_x-y").is_ok());
        for bad in ["", ".", "..", "a b", "ü", "a/b"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
    }
}
