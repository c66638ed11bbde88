//! The `_schemas` topic's records in Confluent's key/value JSON layout, so a Confluent
//! registry (or any tool that reads its topic) can read what we write and the reverse.
//!
//! Keys name what a record is about (`{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}`);
//! values hold its latest state, and a null value (tombstone) removes it, which is what lets
//! the topic be compacted without losing state.

use serde::{Deserialize, Serialize};

/// Schema formats the registry understands; Confluent omits `schemaType` for Avro.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "UPPERCASE")]
pub enum SchemaType {
    #[default]
    Avro,
    Json,
    Protobuf,
}

impl SchemaType {
    pub fn is_avro(&self) -> bool {
        *self == SchemaType::Avro
    }

    pub fn parse(text: &str) -> Option<SchemaType> {
        match text.to_ascii_uppercase().as_str() {
            "AVRO" => Some(SchemaType::Avro),
            "JSON" => Some(SchemaType::Json),
            "PROTOBUF" => Some(SchemaType::Protobuf),
            _ => None,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            SchemaType::Avro => "AVRO",
            SchemaType::Json => "JSON",
            SchemaType::Protobuf => "PROTOBUF",
        }
    }
}

/// Compatibility levels, spelled as Confluent spells them on the wire and in the topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CompatibilityLevel {
    None,
    #[default]
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl CompatibilityLevel {
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_ascii_uppercase())).ok()
    }

    /// Whether the new schema must read data written with the old ones.
    pub fn backward(&self) -> bool {
        use CompatibilityLevel::*;
        matches!(self, Backward | BackwardTransitive | Full | FullTransitive)
    }

    /// Whether the old schemas must read data written with the new one.
    pub fn forward(&self) -> bool {
        use CompatibilityLevel::*;
        matches!(self, Forward | ForwardTransitive | Full | FullTransitive)
    }

    /// Whether every earlier version is checked, not only the latest.
    pub fn transitive(&self) -> bool {
        use CompatibilityLevel::*;
        matches!(
            self,
            BackwardTransitive | ForwardTransitive | FullTransitive
        )
    }
}

/// Registry modes: IMPORT accepts writes that carry their own ids (migrations), READONLY
/// refuses writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Mode {
    #[default]
    Readwrite,
    Readonly,
    Import,
}

impl Mode {
    pub fn parse(text: &str) -> Option<Self> {
        serde_json::from_value(serde_json::Value::String(text.to_ascii_uppercase())).ok()
    }
}

/// A schema's reference to another subject's version, under the name the schema uses for
/// it (an Avro full name, a `.proto` import path, a JSON Schema `$ref` URI).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Reference {
    pub name: String,
    pub subject: String,
    pub version: i32,
}

/// A record key. Field order matters only for byte-identical keys: compaction matches keys
/// byte for byte, so we always write them in Confluent's order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "keytype")]
pub enum Key {
    #[serde(rename = "SCHEMA")]
    Schema {
        subject: String,
        version: i32,
        #[serde(default = "one")]
        magic: i32,
    },
    #[serde(rename = "CONFIG")]
    Config {
        #[serde(default)]
        subject: Option<String>,
        #[serde(default)]
        magic: i32,
    },
    #[serde(rename = "MODE")]
    Mode {
        #[serde(default)]
        subject: Option<String>,
        #[serde(default)]
        magic: i32,
    },
    #[serde(rename = "DELETE_SUBJECT")]
    DeleteSubject {
        subject: String,
        #[serde(default)]
        magic: i32,
    },
    #[serde(rename = "CLEAR_SUBJECT")]
    ClearSubject {
        subject: String,
        #[serde(default)]
        magic: i32,
    },
    #[serde(rename = "NOOP")]
    Noop {
        #[serde(default)]
        magic: i32,
    },
}

fn one() -> i32 {
    1
}

impl Key {
    pub fn schema(subject: &str, version: i32) -> Key {
        Key::Schema {
            subject: subject.to_string(),
            version,
            magic: 1,
        }
    }

    pub fn config(subject: Option<&str>) -> Key {
        Key::Config {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }

    pub fn mode(subject: Option<&str>) -> Key {
        Key::Mode {
            subject: subject.map(str::to_string),
            magic: 0,
        }
    }

    pub fn delete_subject(subject: &str) -> Key {
        Key::DeleteSubject {
            subject: subject.to_string(),
            magic: 0,
        }
    }

    pub fn noop() -> Key {
        Key::Noop { magic: 0 }
    }
}

/// The value of a `SCHEMA` record: one version of one subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaValue {
    pub subject: String,
    pub version: i32,
    pub id: i32,
    #[serde(
        rename = "schemaType",
        default,
        skip_serializing_if = "SchemaType::is_avro"
    )]
    pub schema_type: SchemaType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub references: Vec<Reference>,
    pub schema: String,
    #[serde(default)]
    pub deleted: bool,
}

/// The value of a `CONFIG` record.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConfigValue {
    #[serde(
        rename = "compatibilityLevel",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub compatibility_level: Option<CompatibilityLevel>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub normalize: Option<bool>,
}

/// The value of a `MODE` record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeValue {
    pub mode: Mode,
}

/// The value of a `DELETE_SUBJECT` record: every version up to `version` is soft deleted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteSubjectValue {
    pub subject: String,
    pub version: i32,
}

/// A record's value, by the kind of its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Schema(SchemaValue),
    Config(ConfigValue),
    Mode(ModeValue),
    DeleteSubject(DeleteSubjectValue),
}

/// One `_schemas` record; `value: None` is a tombstone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Key,
    pub value: Option<Value>,
}

/// Why a record in the topic could not be read. Replay skips such records (a registry must
/// start even if some other tool wrote something odd into its topic).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("record without a key")]
    MissingKey,
    #[error("unreadable key: {0}")]
    Key(serde_json::Error),
    #[error("unreadable value for {keytype} key: {source}")]
    Value {
        keytype: &'static str,
        source: serde_json::Error,
    },
}

impl Record {
    /// Key and value bytes as Confluent writes them.
    pub fn encode(&self) -> (Vec<u8>, Option<Vec<u8>>) {
        let key = serde_json::to_vec(&self.key).expect("keys always serialize");
        let value = self.value.as_ref().map(|v| {
            match v {
                Value::Schema(v) => serde_json::to_vec(v),
                Value::Config(v) => serde_json::to_vec(v),
                Value::Mode(v) => serde_json::to_vec(v),
                Value::DeleteSubject(v) => serde_json::to_vec(v),
            }
            .expect("values always serialize")
        });
        (key, value)
    }

    pub fn decode(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Record, DecodeError> {
        let key: Key = serde_json::from_slice(key.ok_or(DecodeError::MissingKey)?)
            .map_err(DecodeError::Key)?;
        let Some(bytes) = value.filter(|v| !v.is_empty()) else {
            return Ok(Record { key, value: None });
        };
        fn parse<T: serde::de::DeserializeOwned>(
            keytype: &'static str,
            bytes: &[u8],
        ) -> Result<T, DecodeError> {
            serde_json::from_slice(bytes).map_err(|source| DecodeError::Value { keytype, source })
        }
        let value = match &key {
            Key::Schema { .. } => Some(Value::Schema(parse("SCHEMA", bytes)?)),
            Key::Config { .. } => Some(Value::Config(parse("CONFIG", bytes)?)),
            Key::Mode { .. } => Some(Value::Mode(parse("MODE", bytes)?)),
            Key::DeleteSubject { .. } => {
                Some(Value::DeleteSubject(parse("DELETE_SUBJECT", bytes)?))
            }
            Key::ClearSubject { .. } | Key::Noop { .. } => None,
        };
        Ok(Record { key, value })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(key: &str, value: Option<&str>) -> (String, Option<String>) {
        let record = Record::decode(Some(key.as_bytes()), value.map(str::as_bytes)).unwrap();
        let (k, v) = record.encode();
        (
            String::from_utf8(k).unwrap(),
            v.map(|v| String::from_utf8(v).unwrap()),
        )
    }

    #[test]
    fn confluent_layouts_round_trip_byte_for_byte() {
        let cases: &[(&str, Option<&str>)] = &[
            (
                r#"{"keytype":"SCHEMA","subject":"orders-value","version":1,"magic":1}"#,
                Some(
                    r#"{"subject":"orders-value","version":1,"id":1,"schema":"\"string\"","deleted":false}"#,
                ),
            ),
            (
                r#"{"keytype":"SCHEMA","subject":"p","version":2,"magic":1}"#,
                Some(
                    r#"{"subject":"p","version":2,"id":7,"schemaType":"PROTOBUF","references":[{"name":"a.proto","subject":"a","version":1}],"schema":"syntax = \"proto3\";","deleted":true}"#,
                ),
            ),
            (
                r#"{"keytype":"SCHEMA","subject":"s","version":3,"magic":1}"#,
                None,
            ),
            (
                r#"{"keytype":"CONFIG","subject":null,"magic":0}"#,
                Some(r#"{"compatibilityLevel":"FULL_TRANSITIVE"}"#),
            ),
            (r#"{"keytype":"CONFIG","subject":"s","magic":0}"#, None),
            (
                r#"{"keytype":"MODE","subject":"s","magic":0}"#,
                Some(r#"{"mode":"IMPORT"}"#),
            ),
            (
                r#"{"keytype":"DELETE_SUBJECT","subject":"s","magic":0}"#,
                Some(r#"{"subject":"s","version":4}"#),
            ),
            (r#"{"keytype":"NOOP","magic":0}"#, None),
        ];
        for (key, value) in cases {
            let (k, v) = round_trip(key, *value);
            assert_eq!(&k, key);
            assert_eq!(v.as_deref(), *value);
        }
    }

    #[test]
    fn keys_in_other_field_orders_and_unknown_fields_are_read() {
        let r = Record::decode(
            Some(br#"{"subject":"s","version":1,"magic":0,"keytype":"SCHEMA"}"#),
            Some(br#"{"subject":"s","version":1,"id":21,"schema":"\"string\"","metadata":null}"#),
        )
        .unwrap();
        assert_eq!(
            r.key,
            Key::Schema {
                subject: "s".into(),
                version: 1,
                magic: 0
            }
        );
        let Some(Value::Schema(v)) = r.value else {
            panic!("schema value expected")
        };
        assert_eq!(
            (v.id, v.deleted, v.schema_type),
            (21, false, SchemaType::Avro)
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(Record::decode(None, None).is_err());
        assert!(Record::decode(Some(b"not json"), None).is_err());
        assert!(Record::decode(Some(br#"{"keytype":"CONTEXT"}"#), None).is_err());
        assert!(Record::decode(
            Some(br#"{"keytype":"SCHEMA","subject":"s","version":1,"magic":1}"#),
            Some(b"{")
        )
        .is_err());
    }
}

#[cfg(test)]
mod decode_props {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any bytes in the topic decode to a record or an error; replay then skips them.
        #[test]
        fn any_bytes_decode_or_fail_cleanly(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            value in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
        ) {
            if let Ok(r) = Record::decode(key.as_deref(), value.as_deref()) {
                let mut state = crate::state::RegistryState::default();
                state.apply(&r);
            }
        }
    }
}
