//! Records of `__consumer_offsets`: committed offsets and group metadata, as record keys and
//! values (JSON); a `None` value is a tombstone.

use serde::{Deserialize, Serialize};

use crate::classic::GroupSnapshot;
use crate::consumer::ConsumerGroup;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OffsetValue {
    pub offset: i64,
    pub leader_epoch: i32,
    pub metadata: Option<String>,
    pub commit_timestamp_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum Key {
    #[serde(rename = "offset")]
    Offset {
        group: String,
        topic: String,
        partition: i32,
    },
    #[serde(rename = "group")]
    Group { group: String },
    #[serde(rename = "consumer_group")]
    ConsumerGroup { group: String },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    Offset {
        group: String,
        topic: String,
        partition: i32,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupSnapshot>,
    },
    /// A KIP-848 group; deleting one is a `Group` tombstone, as for any group.
    ConsumerGroup {
        group: String,
        value: Option<Box<ConsumerGroup>>,
    },
}

impl Record {
    pub fn group(&self) -> &str {
        match self {
            Record::Offset { group, .. }
            | Record::Group { group, .. }
            | Record::ConsumerGroup { group, .. } => group,
        }
    }

    /// `(key, value)` bytes for a record batch.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        fn json<T: Serialize>(v: &T) -> Vec<u8> {
            serde_json::to_vec(v).expect("plain data serialises")
        }
        match self {
            Record::Offset {
                group,
                topic,
                partition,
                value,
            } => (
                json(&Key::Offset {
                    group: group.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                }),
                value.as_ref().map(json),
            ),
            Record::Group { group, value } => (
                json(&Key::Group {
                    group: group.clone(),
                }),
                value.as_ref().map(json),
            ),
            Record::ConsumerGroup { group, value } => (
                json(&Key::ConsumerGroup {
                    group: group.clone(),
                }),
                value.as_ref().map(json),
            ),
        }
    }

    /// Decodes a stored record; `None` for bytes this version does not understand.
    pub fn decode(key: &[u8], value: Option<&[u8]>) -> Option<Self> {
        match serde_json::from_slice::<Key>(key).ok()? {
            Key::Offset {
                group,
                topic,
                partition,
            } => {
                let value = match value {
                    Some(v) => Some(serde_json::from_slice(v).ok()?),
                    None => None,
                };
                Some(Record::Offset {
                    group,
                    topic,
                    partition,
                    value,
                })
            }
            Key::Group { group } => {
                let value = match value {
                    Some(v) => Some(serde_json::from_slice(v).ok()?),
                    None => None,
                };
                Some(Record::Group { group, value })
            }
            Key::ConsumerGroup { group } => {
                let value = match value {
                    Some(v) => Some(serde_json::from_slice(v).ok()?),
                    None => None,
                };
                Some(Record::ConsumerGroup { group, value })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let r = Record::Offset {
            group: "g".into(),
            topic: "t".into(),
            partition: 3,
            value: Some(OffsetValue {
                offset: 9,
                leader_epoch: -1,
                metadata: None,
                commit_timestamp_ms: 5,
            }),
        };
        let (k, v) = r.encode();
        assert_eq!(Record::decode(&k, v.as_deref()), Some(r));
        let t = Record::Group {
            group: "g".into(),
            value: None,
        };
        let (k, v) = t.encode();
        assert_eq!(Record::decode(&k, v.as_deref()), Some(t));
        assert_eq!(Record::decode(b"\xff", None), None);
        assert_eq!(Record::decode(&k, Some(b"{")), None);
    }
}
