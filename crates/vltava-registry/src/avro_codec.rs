//! Records as Confluent's serializers frame them — magic byte 0, the schema id as 4
//! big-endian bytes, then the Avro binary datum — to and from JSON text, for tools such as
//! `vltava produce --value-format avro`.

use apache_avro::types::Value as AvroValue;
use apache_avro::Schema;

/// The first byte of every framed record.
pub const MAGIC_BYTE: u8 = 0;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("not an Avro schema: {reason}")]
    Schema { reason: String },
    #[error("not JSON: {reason}")]
    NotJson { reason: String },
    #[error("does not match the schema: {reason}")]
    Mismatch { reason: String },
    #[error("not a schema-registry framed record (magic byte 0 and a 4-byte schema id)")]
    NotFramed,
    #[error("undecodable Avro datum: {reason}")]
    Datum { reason: String },
}

/// An Avro schema with the id the registry gave it.
#[derive(Debug)]
pub struct AvroCodec {
    id: i32,
    schema: Schema,
}

/// Splits a framed record into its schema id and payload.
pub fn unframe(bytes: &[u8]) -> Result<(i32, &[u8]), CodecError> {
    match bytes {
        [MAGIC_BYTE, a, b, c, d, rest @ ..] => Ok((i32::from_be_bytes([*a, *b, *c, *d]), rest)),
        _ => Err(CodecError::NotFramed),
    }
}

impl AvroCodec {
    pub fn parse(id: i32, schema: &str) -> Result<AvroCodec, CodecError> {
        let schema = Schema::parse_str(schema).map_err(|e| CodecError::Schema {
            reason: e.to_string(),
        })?;
        Ok(AvroCodec { id, schema })
    }

    pub fn id(&self) -> i32 {
        self.id
    }

    /// JSON text (a record as a JSON object, unions as plain values) to a framed record.
    pub fn encode_json(&self, text: &[u8]) -> Result<Vec<u8>, CodecError> {
        let json: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| CodecError::NotJson {
                reason: e.to_string(),
            })?;
        let value = AvroValue::try_from(json)
            .and_then(|v| v.resolve(&self.schema))
            .map_err(|e| CodecError::Mismatch {
                reason: e.to_string(),
            })?;
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .map_err(|e| CodecError::Mismatch {
                reason: e.to_string(),
            })?;
        let mut out = Vec::with_capacity(5 + datum.len());
        out.push(MAGIC_BYTE);
        out.extend(self.id.to_be_bytes());
        out.extend(datum);
        Ok(out)
    }

    /// An Avro datum written with this schema, as JSON.
    pub fn decode_json(&self, payload: &[u8]) -> Result<serde_json::Value, CodecError> {
        let mut reader = payload;
        let value = apache_avro::reader::datum::GenericDatumReader::builder(&self.schema)
            .build()
            .and_then(|r| r.read_value(&mut reader))
            .map_err(|e| CodecError::Datum {
                reason: e.to_string(),
            })?;
        serde_json::Value::try_from(value).map_err(|e| CodecError::Datum {
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USER: &str = r#"{"type":"record","name":"User","fields":[{"name":"name","type":"string"},{"name":"visits","type":"long"},{"name":"email","type":["null","string"],"default":null}]}"#;

    #[test]
    fn json_round_trips_through_framed_avro() {
        let codec = AvroCodec::parse(7, USER).unwrap();
        let framed = codec
            .encode_json(br#"{"name":"ann","visits":3,"email":"a@example.com"}"#)
            .unwrap();
        let (id, payload) = unframe(&framed).unwrap();
        assert_eq!(id, 7);
        assert_eq!(&framed[..5], &[0, 0, 0, 0, 7]);
        assert_eq!(
            codec.decode_json(payload).unwrap(),
            serde_json::json!({"name":"ann","visits":3,"email":"a@example.com"})
        );
    }

    #[test]
    fn bad_input_is_an_error() {
        let codec = AvroCodec::parse(1, USER).unwrap();
        assert!(matches!(
            codec.encode_json(b"{"),
            Err(CodecError::NotJson { .. })
        ));
        assert!(matches!(
            codec.encode_json(br#"{"name":5,"visits":1}"#),
            Err(CodecError::Mismatch { .. })
        ));
        assert_eq!(unframe(b"\x01abcd"), Err(CodecError::NotFramed));
        assert_eq!(unframe(b"\x00ab"), Err(CodecError::NotFramed));
        assert!(codec.decode_json(&[0xff, 0xff, 0xff]).is_err());
        assert!(AvroCodec::parse(1, "{").is_err());
    }
}
